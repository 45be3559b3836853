"""The seed CNN and its relatives, their inference pass, and the MODEL format (weights and
model.json) shared by train and score. Imports TensorFlow lazily, :mod:`cough.tables` and
:mod:`cough.audio`; never Ray or a job.
"""
