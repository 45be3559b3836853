"""The data model and where it lives: locations and commits, SOURCE's listing, labels, the
tables' schemas, the JSON artifacts, featurize's OUT, PRED and its file ledger.

May import :mod:`cough.audio` (the featurizer's parameters and columns), :mod:`cough.runtime`
(the listing's Ray tasks) and the top-level helpers; never TensorFlow, the jobs, the model
or the report.
"""
