"""The featurize job: every recording under SOURCE into OUT's Parquet shards.

>>> from cough.featurize import featurize   # the public entry point
"""

from .job import featurize
from .settings import FeaturizeSettings

__all__ = ["FeaturizeSettings", "featurize"]
