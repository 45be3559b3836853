"""The MODEL directory format shared by train and score.

MODEL/ holds ``weights-<version>.h5`` (weights only: loading runs no code from the file,
no pickles, no Lambda layers) and ``model.json`` (:class:`cough.model.meta.ModelMeta`),
written last: it names the weights file and is the commit (see docs/storage.md); the
architecture is rebuilt from code by its name (:mod:`cough.model.networks`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..audio.features import FeaturizerParams
from ..errors import CoughError, StoreError
from .meta import ModelMeta
from .networks import CLASS_NAMES, build_model

#: The weights file of a model.json that names none (cough 0.1's MODELs).
WEIGHTS_FILE = "weights.h5"
META_FILE = ModelMeta.FILE
KIND = "train"


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
    #: The cough detector's threshold its training data was featurized with (None: a model
    #: made before the detector).
    min_cough_probability: float | None = None

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
    from ..tables.storage import Location, cause_of, retry

    model_dir = Location.of(model_dir).uri
    meta = _complete_meta(model_dir, SCORING_FIELDS)
    if meta.class_names != CLASS_NAMES:
        raise CoughError(f"MODEL {model_dir}: {META_FILE} is unreadable or incomplete (class_names "
                         f"{meta.class_names} are not {CLASS_NAMES}); {ModelMeta.ADVICE}")
    assert meta.featurizer is not None  # _complete_meta checked SCORING_FIELDS
    params = FeaturizerParams.from_dict(meta.featurizer)  # valid: ModelMeta checked them
    if meta.featurizer_version != params.version:
        raise CoughError(f"MODEL {model_dir} was made for featurizer version {meta.featurizer_version}, but its "
                         f"parameters give {params.version} with this cough: retrain the model with this version")
    weights = weights_location(model_dir, meta)

    def signature() -> bytes:
        with weights.open_input() as f:
            return f.read(8)

    try:
        magic = retry(signature, what=f"read {weights.uri}", where=weights)
    except StoreError as exc:  # the store kept failing: said as such, the job stops (exit 1)
        raise StoreError(f"MODEL {model_dir} has no readable {weights.name}: {exc}") from None
    except (OSError, CoughError) as exc:
        raise CoughError(f"MODEL {model_dir} has no readable {weights.name}: {cause_of(exc)}") from None
    if magic != b"\x89HDF\r\n\x1a\n":
        raise CoughError(f"MODEL {model_dir}: {weights.name} is not an HDF5 weights file (corrupt?)")
    assert meta.version is not None and meta.threshold is not None  # _complete_meta checked SCORING_FIELDS
    return ModelInfo(model_dir=model_dir, version=meta.version, params=params, threshold=float(meta.threshold),
                     min_cough_probability=meta.min_cough_probability)


def load_model(model_dir: str):
    """``(keras_model, meta)`` from a MODEL directory; a clear CoughError when it is unusable."""
    import tempfile

    record = _complete_meta(model_dir, ("arch", "featurizer"))
    assert record.arch is not None and record.featurizer is not None  # _complete_meta checked them
    model = build_model(record.arch, image_size=FeaturizerParams.from_dict(record.featurizer).image_size)
    weights = weights_location(model_dir, record)
    meta = record.to_dict()
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
