"""Stage ``decontaminate``: drop or cut documents that share word n-grams with benchmark items.

Beam-free cores: ``ngrams`` (normalisation, hashing, eval files, per-document matching, the cut)
and ``join`` (records for the keyed join, the drop/cut decision, the manifest tally).
"""
