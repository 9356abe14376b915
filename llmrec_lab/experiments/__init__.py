"""The course's experiments: what the chapters, the command line and ``bench/`` run.

Each module holds one chapter's experiment: it splits the data, fits the models and returns
their predictions on the same test ratings, so that a verdict is a paired interval
(:mod:`llmrec_lab.stats`). It sits above the models and the data and nothing below imports it.
"""
