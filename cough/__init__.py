"""cough: batch processing of crowdsourced cough recordings on Ray.

Importing the library starts nothing: Ray and TensorFlow load only inside the jobs.
"""

__version__ = "0.1.0"
