"""The train job: fit the CNN on a featurize OUT with Ray Train, by participant splits or
cross-validation, and commit MODEL.

>>> from cough.train import TrainSettings, train   # the public entry point
"""

from .job import DEFAULT_ARCH, TrainSettings, cross_validate, train

__all__ = ["DEFAULT_ARCH", "TrainSettings", "cross_validate", "train"]
