"""The CNN architectures and the MODEL directory format shared by train and score.

MODEL/ holds ``weights-<version>.h5`` (weights only: loading runs no code from the file,
no pickles, no Lambda layers) and ``model.json``, written last: it names the weights file
and is the commit (see docs/storage.md); the architecture is rebuilt from code by its name. TensorFlow runs with tf_keras (``TF_USE_LEGACY_KERAS=1``) because Keras 3
cannot train under MultiWorkerMirroredStrategy (keras-team/keras#20585).
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from dataclasses import dataclass

import numpy as np

from ..tables.artifacts import ModelMeta
from ..errors import CoughError
from ..audio.features import FeaturizerParams

CLASS_NAMES = ["negative", "positive"]
#: The weights file of a model.json that names none (cough 0.1's MODELs).
WEIGHTS_FILE = "weights.h5"
META_FILE = ModelMeta.FILE
KIND = "train"


def tensorflow(threads: int | None = None):
    """Import TensorFlow with legacy Keras, optionally capping its thread pools."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
            return of()(rescale(tf, images), training=False)[:, 1]

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


def write_model(model_dir, weights_h5: bytes, meta: ModelMeta) -> str:
    """Write MODEL (a location, or the :class:`cough.tables.storage.Output` that ``claim`` gave):
    ``weights-<version>.h5``, then ``model.json`` naming it (the commit), then delete the
    weights of the model it replaced. Returns the version: a content hash of the weights
    and the metadata, recorded in model.json as ``version``."""
    import hashlib
    import json

    from ..tables.schema import JSON_SCHEMA_VERSION
    from ..tables.storage import Output, claim, remove_stale

    output = model_dir if isinstance(model_dir, Output) else claim(model_dir, KIND)
    meta = dataclasses.replace(meta, format="tf_keras HDF5 weights only; the architecture is rebuilt from code by "
                                            "its name")
    blob = json.dumps(meta.to_dict(), sort_keys=True, default=str).encode()
    version = hashlib.sha256(weights_h5 + blob).hexdigest()[:16]
    weights = f"weights-{version}.h5"
    meta = dataclasses.replace(meta, version=version, weights=weights, kind=KIND, schema_version=JSON_SCHEMA_VERSION)
    with output.writing(META_FILE) as loc:
        loc.join(weights).write_bytes(weights_h5)
        loc.join(META_FILE).write_json(meta.to_dict())  # the commit point
    remove_stale(loc, {weights}, prefix="weights")
    return version


def weights_location(model_dir, meta: ModelMeta):
    """The weights file that ``meta`` (MODEL's model.json) names."""
    from ..tables.storage import Location

    return Location.of(model_dir).join(meta.weights or WEIGHTS_FILE)


def read_model_meta(model_dir) -> ModelMeta:
    """MODEL's ``model.json``, checked without TensorFlow (:class:`cough.tables.artifacts.ModelMeta`:
    the architecture it names is one this cough builds, its threshold a number in [0, 1],
    its featurizer parameters valid, each when present). A clear CoughError says what is
    wrong, so jobs refuse a bad model before Ray starts."""
    from ..tables.storage import Location

    loc = Location.of(model_dir)
    meta_loc = loc.join(META_FILE)
    if not loc.exists():
        raise CoughError(f"MODEL {loc.uri} does not exist; pass the --out folder of `cough train`")
    if not meta_loc.exists():
        raise CoughError(f"MODEL {loc.uri} has no {META_FILE}: is it a finished `cough train` output?")
    return ModelMeta.read(meta_loc, where=f"MODEL {loc.uri}: {META_FILE}")


@dataclass(frozen=True)
class ModelInfo:
    """What scoring needs to know about a MODEL, read from its ``model.json``."""

    model_dir: str
    version: str
    params: FeaturizerParams
    threshold: float

    @property
    def featurizer_version(self) -> str:
        return self.params.version


#: The model.json fields scoring needs (the actors rebuild the network by ``arch``).
SCORING_FIELDS = ("arch", "featurizer", "featurizer_version", "version", "threshold", "class_names")


def _complete_meta(model_dir, fields) -> ModelMeta:
    """MODEL's model.json (:func:`read_model_meta`), or a CoughError naming which of ``fields``
    it lacks."""
    meta = read_model_meta(model_dir)
    missing = [name for name in fields if getattr(meta, name) is None]
    if missing:
        raise CoughError(f"MODEL {model_dir}: {META_FILE} is unreadable or incomplete (it lacks "
                         f"{', '.join(map(repr, missing))}); {ModelMeta.ADVICE}")
    return meta


def read_model_info(model_dir) -> ModelInfo:
    """Check a MODEL for scoring without loading TensorFlow (:func:`read_model_meta`, then the
    fields scoring needs, the featurizer version, the weights file's signature); a
    :class:`CoughError` says what is wrong.

    >>> info = read_model_info("out/demo/model")   # doctest: +SKIP
    >>> info.threshold, info.featurizer_version    # doctest: +SKIP
    (0.5, '3f1c...')
    """
    from ..tables.storage import Location

    model_dir = Location.of(model_dir).uri
    meta = _complete_meta(model_dir, SCORING_FIELDS)
    if meta.class_names != CLASS_NAMES:
        raise CoughError(f"MODEL {model_dir}: {META_FILE} is unreadable or incomplete (class_names "
                         f"{meta.class_names} are not {CLASS_NAMES}); {ModelMeta.ADVICE}")
    params = FeaturizerParams.from_dict(meta.featurizer)  # valid: ModelMeta checked them
    if meta.featurizer_version != params.version:
        raise CoughError(f"MODEL {model_dir} was made for featurizer version {meta.featurizer_version}, but its "
                         f"parameters give {params.version} with this cough: retrain the model with this version")
    weights = weights_location(model_dir, meta)
    try:
        with weights.open_input() as f:
            magic = f.read(8)
    except (OSError, CoughError):
        raise CoughError(f"MODEL {model_dir} has no readable {weights.name}") from None
    if magic != b"\x89HDF\r\n\x1a\n":
        raise CoughError(f"MODEL {model_dir}: {weights.name} is not an HDF5 weights file (corrupt?)")
    return ModelInfo(model_dir=model_dir, version=meta.version, params=params, threshold=float(meta.threshold))


def load_model(model_dir: str):
    """``(keras_model, meta)`` from a MODEL directory; a clear CoughError when it is unusable."""
    import tempfile

    meta = _complete_meta(model_dir, ("arch", "featurizer"))
    model = build_model(meta.arch, image_size=FeaturizerParams.from_dict(meta.featurizer).image_size)
    weights = weights_location(model_dir, meta)
    meta = meta.to_dict()
    with tempfile.TemporaryDirectory(prefix="cough-model-") as tmp:
        local = weights.path
        if not weights.local:  # h5py needs a local file
            local = os.path.join(tmp, weights.name)
            with open(local, "wb") as dst:
                dst.write(weights.read_bytes())
        try:
            model.load_weights(local)
        except Exception as exc:
            raise CoughError(f"MODEL {model_dir}: cannot load {weights.name} ({type(exc).__name__}: {exc})") from None
    return model, meta
