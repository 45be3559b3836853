"""What a featurize run is asked to do (:class:`FeaturizeSettings`) and what it did
(:class:`FeaturizeSummary`; :class:`FeaturizePlan` for ``--dry-run``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..audio.detector import RECORDING_THRESHOLD
from ..audio.features import DEFAULT_PARAMS, FeaturizerParams
from ..errors import UsageError
from ..tables.archive import EVERY_FILE, Selection


@dataclass(frozen=True)
class FeaturizeSettings:
    """How to featurize: the flags of ``cough featurize`` (cough/commands/featurize.py says
    what each means). ``min_cough_probability``: recordings the cough detector gives less
    are ``rejected`` rows, without windows (cough.audio.recording.no_cough).

    >>> FeaturizeSettings(batch_size=0)
    Traceback (most recent call last):
    ...
    cough.errors.UsageError: --batch-size must be at least 1
    """

    labels: str | None = None
    group_pattern: str | None = None
    params: FeaturizerParams = DEFAULT_PARAMS
    selection: Selection = EVERY_FILE
    min_cough_probability: float = RECORDING_THRESHOLD
    batch_size: int = 64
    #: exit 1 (after committing) when more than this share of the files read are errors; None: no limit
    max_error_rate: float | None = None
    address: str | None = None
    num_cpus: int | None = None
    #: local folders every node of the cluster sees at the same path (--shared-path)
    shared_paths: tuple[str, ...] = ()

    def __post_init__(self):
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if not 0 <= self.min_cough_probability <= 1:
            raise UsageError("--min-cough-probability must lie between 0 and 1")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise UsageError("--max-error-rate must lie between 0 and 1")
        object.__setattr__(self, "shared_paths", tuple(self.shared_paths))


@dataclass
class FeaturizeSummary:
    """What a featurize run wrote: ``inputs`` files under SOURCE = ``ok`` (windows written) +
    ``errors`` (unreadable) + ``rejected`` (no cough) + ``excluded`` (left out by
    --include/--exclude); ``images`` windows, ``coughs`` the detector found, ``dropped_windows``
    of audio no window shows; ``unread``, of the errors, files the store kept failing to give
    (featurize again to have them)."""

    inputs: int = 0
    ok: int = 0
    errors: int = 0
    rejected: int = 0
    excluded: int = 0
    images: int = 0
    coughs: int = 0
    dropped_windows: int = 0
    unread: int = 0
    labels: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    out: str = ""
    featurizer_version: str = ""

    def to_dict(self) -> dict:
        """The job's JSON: the counts, then how the files were labelled (:meth:`ListingCounts.to_dict`)."""
        out = dataclasses.asdict(self)
        return {**{k: v for k, v in out.items() if k not in ("labels", "warnings", "out", "featurizer_version")},
                **self.labels, "warnings": self.warnings, "out": self.out, "featurizer_version": self.featurizer_version}


@dataclass(frozen=True)
class FeaturizePlan:
    """``cough featurize --dry-run``: what a run would read and write."""

    would_read: int
    excluded: int
    formats: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    would_write: str = ""
    would_replace: bool = False

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        return {"dry_run": True, **{k: v for k, v in out.items() if k != "labels"}, **self.labels}
