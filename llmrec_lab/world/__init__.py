"""The synthetic worlds: items, users and their logs, generated with the truth kept.

The bottom layer of the library, beside :mod:`llmrec_lab.datasets`: it imports nothing above it.
:mod:`.schemas` holds each world's vocabulary, :mod:`.behaviour` the users' true rules (utility,
choice, rating, boredom, satisfaction, churn), :mod:`.generate` draws a world and saves or loads
it, and :mod:`.images` renders its item pictures. A world is built with
``make_world(name, profile, seed)``.
"""
from llmrec_lab.world.generate import World, WorldConfig, make_world

__all__ = ["World", "WorldConfig", "make_world"]
