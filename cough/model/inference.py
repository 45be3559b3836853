"""The inference pass: window images in, P(positive) out, and one recording's score from its windows."""

from __future__ import annotations

import weakref

import numpy as np

from .networks import rescale, tensorflow


def predict_windows(model, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """P(positive) for each image of a uint8 ``(n, S, S, 3)`` batch (inference mode, no
    collective ops, so it is safe inside a Ray Train worker too).

    >>> predict_windows(model, images)                 # doctest: +SKIP
    array([0.12, 0.91], dtype=float32)
    """
    if len(images) == 0:
        return np.zeros(0, dtype=np.float32)
    forward = _forward(model)
    out = [forward(images[i:i + batch_size]).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


_FORWARDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _forward(model):
    """``model``'s inference pass as one TensorFlow graph, traced once per model: uint8
    windows in (scaled as :func:`preprocess` does), P(positive) out. In a graph TensorFlow
    fuses each convolution with its bias and activation, which op-by-op eager calls cannot:
    1.5-1.7x less CPU per window for ``pooled``, 1.16-1.22x for ``seed`` (two measurements,
    docs/benchmarks.md)."""
    forward = _FORWARDS.get(model)
    if forward is None:
        tf = tensorflow()
        size = model.input_shape[1]
        # A weak reference, as tf.function keeps to the variables it captures: the cache must
        # not keep a dropped model (300 MB of weights for the seed network) alive.
        of = weakref.ref(model)

        # autograph=False: straight-line code has nothing to convert, and a conversion leaves
        # a generated source file in /tmp of every worker killed before its exit handlers run.
        @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)], autograph=False)
        def forward(images):
            traced = of()  # alive: the cache drops this entry with the model
            assert traced is not None
            return traced(rescale(tf, images), training=False)[:, 1]

        _FORWARDS[model] = forward
    return forward


def aggregate_windows(scores) -> float:
    """One recording's score from its windows' P(positive): the mean.

    The mean, not the max: a recording is cut into fixed 2 s windows, some of which hold
    only padding or breath; the max would let one noisy window decide and would rise with
    the number of windows (long recordings would look more positive). Training picks the
    decision threshold on recording scores made by this same rule; scoring must use it too.

    >>> aggregate_windows([0.2, 0.4, 0.9])
    0.5
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("aggregate_windows needs at least one finite window score")
    return float(scores.mean())
