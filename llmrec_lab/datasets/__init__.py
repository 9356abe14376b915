"""Real datasets: MovieLens 100k and 1M, fetched by verified, atomic downloads
(:mod:`.download`) and parsed strictly (:mod:`.movielens`).

The bottom layer of the library, beside :mod:`llmrec_lab.world`: it imports nothing above it but
the shared plumbing (:mod:`llmrec_lab.io`) and the split protocols (:mod:`llmrec_lab.splits`).
"""
