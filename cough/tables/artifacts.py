"""The JSON cough writes, as typed records: featurize's ``manifest.json``
(:class:`Manifest`), a REPORT's ``metrics.json`` (:class:`Metrics`, its top-level fields)
and the run record each PRED commit carries (:class:`RunRecord`); a MODEL's ``model.json``
is :class:`cough.model.meta.ModelMeta`, built on :class:`Record` here.

Each is a dataclass with ``to_dict`` (what is written) and a validating ``from_dict``
(what is read) that names the bad field and says what to do. Keys a record does not
type (from an older or newer cough) are kept in ``extra`` and written back unchanged, so
``from_dict(d).to_dict() == d`` for every file cough wrote. The tables' schemas are in
cough/tables/schema.py.

>>> m = Manifest.from_dict({"images": 3, "featurizer": {"image_size": 150}, "featurizer_version": "f1"})
>>> m.images, m.image_size, m.tables["images"]   # a cough 0.1 manifest: its tables were OUT's folders
(3, 150, 'images')
>>> Manifest.from_dict({"images": -1, "featurizer": {"image_size": 150}, "featurizer_version": "f1"})
Traceback (most recent call last):
...
cough.errors.CoughError: manifest.json: 'images' must be a whole number >= 0, not -1; featurize again
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from ..errors import CoughError, StoreError
from .schema import JSON_SCHEMA_VERSION, check_schema_version


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _probability(v) -> bool:
    return _number(v) and 0 <= v <= 1


#: name -> (test, what a good value is).
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "count": (_count, "a whole number >= 0"),
    "number": (_number, "a finite number"),
    "probability": (_probability, "a number between 0 and 1"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


def spec(check: str, *, required: bool = False, nullable: bool = False, default=None, factory=None,
         meaning: str = ""):
    """A record's field: ``check`` names its type in :data:`CHECKS`; ``required`` fields must
    be in the file; ``nullable`` ones may be null there and are written even when None
    (the others are left out when None); ``meaning`` is said beside its name in messages."""
    meta = {"check": check, "required": required, "nullable": nullable, "meaning": meaning}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(kw_only=True)
class Record:
    """Base of the JSON records: ``from_dict`` checks each field, ``to_dict`` writes it back."""

    #: The file's name, in messages.
    FILE: ClassVar[str] = ""
    #: What to do about a bad file, ending every message.
    ADVICE: ClassVar[str] = ""
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def _fields(cls):
        return [f for f in dataclasses.fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls, data, *, where: str | None = None):
        """The record in ``data`` (a parsed JSON file), or a CoughError naming the first bad
        field; ``where`` (default :attr:`FILE`) starts the message."""
        where = where or cls.FILE
        if not isinstance(data, dict):
            raise CoughError(f"{where} holds a JSON {type(data).__name__}, not an object; {cls.ADVICE}")
        check_schema_version(data, where)
        values = {}
        for f in cls._fields():
            if f.name not in data:
                if f.metadata["required"]:
                    raise CoughError(f"{where} lacks {f.name!r}; {cls.ADVICE}")
                continue
            value = data[f.name]
            test, good = CHECKS[f.metadata["check"]]
            if not (value is None and f.metadata["nullable"]) and not test(value):
                good += " or null" if f.metadata["nullable"] else ""
                if f.metadata["meaning"]:  # said as cough 0.1 said it: "model.json has the decision threshold 5"
                    raise CoughError(f"{where} has {f.metadata['meaning']} {value!r}; it must be {good}; {cls.ADVICE}")
                raise CoughError(f"{where}: {f.name!r} must be {good}, not {value!r}; {cls.ADVICE}")
            values[f.name] = value
        known = {f.name for f in cls._fields()}
        record = cls(**values, extra={k: v for k, v in data.items() if k not in known})
        record.check(where)
        return record

    def check(self, where: str) -> None:
        """What one field's type cannot say (a subclass's rules across fields)."""

    def to_dict(self) -> dict:
        """The JSON object to write: the fields in order (None ones only when nullable), then ``extra``."""
        out = {f.name: getattr(self, f.name) for f in self._fields()
               if getattr(self, f.name) is not None or f.metadata["nullable"]}
        return {**out, **self.extra}

    @classmethod
    def read(cls, loc, *, where: str):
        """The record in the JSON file at ``loc`` (a :class:`cough.tables.storage.Location`)."""
        try:
            data = loc.read_json()
        except StoreError:  # the store kept failing: not a bad file
            raise
        except Exception as exc:
            raise CoughError(f"{where} is unreadable or incomplete ({type(exc).__name__}: {exc}); "
                             f"{cls.ADVICE}") from None
        return cls.from_dict(data, where=where)


@dataclass(kw_only=True)
class Manifest(Record):
    """``OUT/manifest.json``, the commit of a featurize OUT (cough/tables/shards.py): counts
    (``inputs`` = ``ok`` + ``errors`` + ``rejected`` + ``excluded``), where the tables are, and
    how they were made (the featurizer, the files selected, the cough detector and its threshold)."""

    FILE: ClassVar[str] = "manifest.json"
    ADVICE: ClassVar[str] = "featurize again"
    #: The tables a cough 0.1 OUT had: folders named as the tables.
    TABLES_0_1: ClassVar[dict] = {"images": "images", "recordings": "recordings"}

    schema_version: int | None = spec("count", default=JSON_SCHEMA_VERSION)
    inputs: int | None = spec("count")
    ok: int | None = spec("count")
    errors: int | None = spec("count")
    #: Of ``errors``, files the store kept failing to give (featurize again to have them).
    unread: int | None = spec("count")
    rejected: int | None = spec("count")
    excluded: int | None = spec("count")
    images: int = spec("count", required=True)
    coughs: int | None = spec("count")
    dropped_windows: int | None = spec("count")
    kind: str | None = spec("str")
    version: str | None = spec("str")
    tables: dict = spec("dict", factory=lambda: dict(Manifest.TABLES_0_1))
    source: str | None = spec("str")
    labels: str | None = spec("str", nullable=True)
    group_pattern: str | None = spec("str", nullable=True)
    include: list | None = spec("list")
    exclude: list | None = spec("list")
    min_cough_probability: float | None = spec("probability")
    detector: str | None = spec("str")
    featurizer: dict = spec("dict", required=True)
    featurizer_version: str = spec("str", required=True)
    metadata_columns: list = spec("list", factory=list)
    cough_version: str | None = spec("str")
    created_at: str | None = spec("str")

    def check(self, where: str) -> None:
        if not _count(self.featurizer.get("image_size")):
            raise CoughError(f"{where}: 'featurizer.image_size' must be a whole number of pixels, not "
                             f"{self.featurizer.get('image_size')!r}; {self.ADVICE}")
        missing = sorted(set(self.TABLES_0_1) - set(self.tables))
        if missing:
            raise CoughError(f"{where}: 'tables' lacks {', '.join(missing)}; {self.ADVICE}")

    @property
    def image_size(self) -> int:
        return int(self.featurizer["image_size"])


@dataclass(kw_only=True)
class Metrics(Record):
    """``REPORT/metrics.json``, the commit of a REPORT (cough/report/): the headline
    metrics at the top level (each None when not computable, with the reason in
    ``not_computable``), the sections as objects. docs/report.md says what each means."""

    FILE: ClassVar[str] = "metrics.json"
    ADVICE: ClassVar[str] = "rerun `cough report`"

    schema_version: int | None = spec("count")
    kind: str | None = spec("str")
    n: int = spec("count", required=True)
    n_groups: int = spec("count", required=True)
    threshold: float = spec("probability", required=True)
    prevalence: float | None = spec("number", nullable=True)
    auc: float | None = spec("number", nullable=True)
    auc_ci: list | None = spec("list", nullable=True)
    pr_auc: float | None = spec("number", nullable=True)
    brier: float | None = spec("number", nullable=True)
    confusion_matrix: list | None = spec("list", nullable=True)
    confusion: dict | None = spec("dict", nullable=True)
    sensitivity: float | None = spec("number", nullable=True)
    specificity: float | None = spec("number", nullable=True)
    ppv: float | None = spec("number", nullable=True)
    npv: float | None = spec("number", nullable=True)
    accuracy: float | None = spec("number", nullable=True)
    sensitivity_ci: list | None = spec("list", nullable=True)
    specificity_ci: list | None = spec("list", nullable=True)
    ppv_ci: list | None = spec("list", nullable=True)
    npv_ci: list | None = spec("list", nullable=True)
    accuracy_ci: list | None = spec("list", nullable=True)
    calibration: dict | None = spec("dict", nullable=True)
    n_labelled_scored: int | None = spec("count")
    excluded_conflicting_labels: int | None = spec("count")
    excluded_training: int | None = spec("count")
    shortcut_baseline: dict | None = spec("dict")
    label_metadata_baseline: dict | None = spec("dict", nullable=True)
    stratified_auc: dict | None = spec("dict")
    group_level: dict | None = spec("dict")
    by_subgroup: dict | None = spec("dict")
    confounds: list | None = spec("list")
    warnings: list = spec("list", factory=list)
    not_computable: dict = spec("dict", factory=dict)
    ci_method: dict | None = spec("dict")
    provenance: dict | None = spec("dict")
    threshold_source: str | None = spec("str")
    operations: dict | None = spec("dict")
    run: dict | None = spec("dict")
    confusion_matrix_layout: dict | None = spec("dict")
    plots: list = spec("list", factory=list)


@dataclass(kw_only=True)
class RunRecord(Record):
    """What one commit to PRED says of its run, in the Delta commit's metadata under
    ``cough.run`` (cough/tables/pred.py ``RunWriter``): the model, where SOURCE, MODEL and labels
    were (absolute URIs), the flags, what the night's listing found and the chunk's
    :attr:`CHUNK_COUNTS`. A run committed in chunks has one record per chunk;
    :meth:`after` sums them (cough/tables/pred.py ``committed_runs``). Every field is optional:
    cough 0.1's records (converted PREDs) and ``cough train --cv``'s hold only some.

    >>> first = RunRecord(run_id="r1", listed=9, seen_before=1, scored=5, ok=5, chunk=1)
    >>> run = RunRecord(run_id="r1", listed=9, seen_before=1, scored=3, ok=2, errors=1, duplicates=1, chunk=2)
    >>> run = run.after(first)
    >>> run.scored, run.ok, run.errors, run.skipped, run.chunk
    (8, 7, 1, 2, 2)
    """

    FILE: ClassVar[str] = "PRED's run record (cough.run)"
    ADVICE: ClassVar[str] = "was PRED written by `cough score`?"
    #: Counts of one chunk, summed over a run's chunks.
    CHUNK_COUNTS: ClassVar[tuple] = ("scored", "ok", "errors", "rejected", "duplicates", "bytes_read", "unread")

    model_version: str | None = spec("str")
    featurizer_version: str | None = spec("str")
    source: str | None = spec("str")
    model: str | None = spec("str")
    rescore: bool | None = spec("bool")
    labels: str | None = spec("str", nullable=True)
    prefixes: list | None = spec("list")
    since: str | None = spec("str", nullable=True)
    include: list | None = spec("list")
    exclude: list | None = spec("list")
    min_cough_probability: float | None = spec("probability")
    quality_gate: dict | None = spec("dict")
    metadata_columns: list | None = spec("list")
    cough_version: str | None = spec("str")
    #: ``cough train --cv``'s out-of-fold predictions, of ``cv_folds`` folds.
    out_of_fold: bool | None = spec("bool")
    cv_folds: int | None = spec("count")
    # what the listing found (the file ledger's counts)
    inputs: int | None = spec("count")
    listed: int | None = spec("count")
    excluded: int | None = spec("count")
    new: int | None = spec("count")
    changed: int | None = spec("count")
    seen_before: int | None = spec("count")
    # the chunk's counts (CHUNK_COUNTS)
    scored: int | None = spec("count")
    ok: int | None = spec("count")
    errors: int | None = spec("count")
    rejected: int | None = spec("count")
    duplicates: int | None = spec("count")
    bytes_read: int | None = spec("count")
    #: Of ``errors``, transient ones: files the store kept failing to give (read again next run).
    unread: int | None = spec("count")
    #: Not read (the ledger knew them) or not decoded (content known).
    skipped: int | None = spec("count")
    run_id: str | None = spec("str")
    #: The chunk's number, from 1.
    chunk: int | None = spec("count")

    def after(self, earlier: "RunRecord | None") -> "RunRecord":
        """This chunk's record with the :attr:`CHUNK_COUNTS` of the run's ``earlier`` chunks
        (their merged record) added, and ``skipped`` derived when the listing was counted."""
        run = self
        if earlier is not None:
            sums: dict[str, Any] = {k: (getattr(earlier, k) or 0) + (getattr(run, k) or 0) for k in self.CHUNK_COUNTS}
            run = dataclasses.replace(run, **sums)
        if run.seen_before is not None:
            run = dataclasses.replace(run, skipped=run.seen_before + (run.duplicates or 0))
        return run
