"""Statistics shared by train and report: metrics with participant-level uncertainty,
baselines that never hear the cough, the channel-leak probe.

Imports numpy, pandas, scikit-learn and :mod:`cough.tables` (which label columns a baseline may
see); never Ray or TensorFlow.
"""
