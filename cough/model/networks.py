"""The CNN architectures: the seed article's network and a pooled relative, built by name.

TensorFlow runs with tf_keras (``TF_USE_LEGACY_KERAS=1``, set by
:func:`cough.runtime.set_tensorflow_env`) because Keras 3 cannot train under
MultiWorkerMirroredStrategy (keras-team/keras#20585).
"""

from __future__ import annotations


import numpy as np

from ..errors import CoughError
from ..runtime import set_tensorflow_env

CLASS_NAMES = ["negative", "positive"]


def tensorflow(threads: int | None = None):
    """Import TensorFlow in its environment (:func:`cough.runtime.set_tensorflow_env`, which
    keeps what this process set already), optionally capping its thread pools."""
    set_tensorflow_env()
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process: keep its setting
            pass
    return tf


def _seed(tf, size: int, dropout: float = 0.5):
    """The seed article's model, layer for layer (75,820,898 parameters at 150×150)."""
    layers = tf.keras.layers
    return [
        layers.Conv2D(16, (3, 3), activation="relu", input_shape=(size, size, 3)),
        layers.MaxPooling2D(2, 2),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dropout(dropout),
        layers.Dense(256, activation="relu"),
        layers.Dense(2, activation="softmax"),
    ]


def _pooled(tf, size: int, dropout: float = 0.5):
    """The seed's convolutions with a pool after each and global average pooling before
    the head: ~60k parameters instead of 75.8M, so it trains many times faster."""
    layers = tf.keras.layers
    return [
        layers.Conv2D(16, (3, 3), activation="relu", input_shape=(size, size, 3)),
        layers.MaxPooling2D(2, 2),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D(2, 2),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D(2, 2),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dropout(dropout),
        layers.Dense(64, activation="relu"),
        layers.Dense(2, activation="softmax"),
    ]


ARCHITECTURES = {"seed": _seed, "pooled": _pooled}


def build_model(arch: str = "seed", *, image_size: int = 150, learning_rate: float = 1e-3,
                dropout: float = 0.5):
    """A compiled model: inputs are images scaled by :func:`preprocess`, softmax over
    ``CLASS_NAMES``, Adam, categorical cross-entropy (the seed's training setup).
    ``dropout`` only acts while training (0 makes training deterministic for tests).

    >>> build_model("seed").count_params()   # doctest: +SKIP
    75820898
    """
    if arch not in ARCHITECTURES:
        raise CoughError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    tf = tensorflow()
    model = tf.keras.Sequential(ARCHITECTURES[arch](tf, image_size, dropout), name=f"cough_{arch}")
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 ``(n, S, S, 3)`` → float32 in [0, 1]: the seed's ``rescale=1./255``."""
    return np.asarray(images, dtype=np.float32) * (1.0 / 255.0)


def rescale(tf, images):
    """:func:`preprocess` as TensorFlow ops, the same numbers (in tf.data and traced graphs)."""
    return tf.cast(images, tf.float32) * (1.0 / 255.0)
