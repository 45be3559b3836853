"""What a score run is asked to do (:class:`ScoreSettings`) and what it did
(:class:`NightCounts`, :class:`ChunkCounts`, :class:`ScoreSummary`; :class:`ScorePlan` for
``--dry-run``). ``to_dict`` gives the job's JSON summary, keys in the order a person reads them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..audio.quality import QualityGate
from ..errors import UsageError
from ..tables.archive import EVERY_FILE, Selection, check_since
from ..tables.pred import COMMIT_EVERY


@dataclass(frozen=True)
class ScoreSettings:
    """How to score: the flags of ``cough score`` (cough/commands/score.py says what each
    means). Checked on construction: a bad value is a UsageError naming its flag.
    ``min_cough_probability`` None: the one MODEL was trained with (its model.json), so that
    train and score reject by the same rule.

    >>> ScoreSettings(since="20261124").since
    '2026-11-24'
    >>> ScoreSettings(batch_size=0)
    Traceback (most recent call last):
    ...
    cough.errors.UsageError: --batch-size, --actors and --commit-every must be at least 1, --actor-cpus at least 0
    """

    labels: str | None = None
    group_pattern: str | None = None
    rescore: bool = False
    gate: QualityGate = QualityGate()
    batch_size: int = 32
    actors: int | None = None
    actor_cpus: float = 0.0
    actor_threads: int | None = None
    prefixes: tuple[str, ...] = ()
    since: str | None = None
    selection: Selection = EVERY_FILE
    min_cough_probability: float | None = None
    commit_every: int = COMMIT_EVERY
    #: exit 1 (after committing) when more than this share of the files scored are errors; None: no limit
    max_error_rate: float | None = None
    address: str | None = None
    num_cpus: int | None = None
    #: local folders every node of the cluster sees at the same path (--shared-path)
    shared_paths: tuple[str, ...] = ()

    def __post_init__(self):
        if (self.batch_size < 1 or (self.actors is not None and self.actors < 1) or self.actor_cpus < 0
                or self.commit_every < 1):
            raise UsageError("--batch-size, --actors and --commit-every must be at least 1, --actor-cpus at least 0")
        if self.min_cough_probability is not None and not 0 <= self.min_cough_probability <= 1:
            raise UsageError("--min-cough-probability must lie between 0 and 1")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise UsageError("--max-error-rate must lie between 0 and 1")
        object.__setattr__(self, "prefixes", tuple(self.prefixes))
        object.__setattr__(self, "shared_paths", tuple(self.shared_paths))
        object.__setattr__(self, "since", check_since(self.since))


@dataclass(frozen=True)
class NightCounts:
    """What the listing found: ``inputs`` files under SOURCE, of which ``excluded`` were left
    out by --include/--exclude and ``listed`` are this job's: ``new`` and ``changed`` (a known
    path with another size or time) are read tonight, ``seen_before`` are not opened (the
    ledger holds their version for this model)."""

    listed: int
    new: int
    changed: int
    seen_before: int
    excluded: int = 0

    @property
    def unseen(self) -> int:
        return self.new + self.changed

    def to_dict(self) -> dict:
        return {"inputs": self.listed + self.excluded, "listed": self.listed, "new": self.new, "changed": self.changed,
                "seen_before": self.seen_before, "excluded": self.excluded}


@dataclass
class ChunkCounts:
    """What came back from the files read tonight, counted as they are committed
    (:data:`cough.tables.artifacts.RunRecord.CHUNK_COUNTS`): ``scored`` = ``ok`` + ``errors``
    + ``rejected`` rows added to PRED; ``duplicates``: files whose content was scored already
    (under another path, or by a concurrent run first); ``bytes_read``: of the files read;
    ``unread``: of ``errors``, the transient ones (the store kept failing to give the file:
    the ledger does not record it, the next run reads it again)."""

    scored: int = 0
    ok: int = 0
    errors: int = 0
    rejected: int = 0
    duplicates: int = 0
    bytes_read: int = 0
    unread: int = 0

    def add(self, other: "ChunkCounts") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ScoreSummary:
    """A score run's summary: the listing's counts, what came back, the commits made. Counts
    are of files (paths): ``inputs`` = ``ok`` + ``errors`` + ``rejected`` + ``skipped`` +
    ``excluded``, with ``skipped`` = ``seen_before`` + ``duplicates``; ``recordings`` is the
    distinct contents among the scored files. ``run_id`` is None when nothing was committed."""

    night: NightCounts
    counts: ChunkCounts = field(default_factory=ChunkCounts)
    #: the distinct recordings (contents) among the files scored (counts are of files)
    recordings: int = 0
    commits: int = 0
    run_id: str | None = None
    pred: str = ""
    model_version: str = ""
    labels: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.night.seen_before + self.counts.duplicates

    def to_dict(self) -> dict:
        return {**self.night.to_dict(), **self.counts.to_dict(), "recordings": self.recordings,
                "commits": self.commits, "skipped": self.skipped,
                **self.labels, "warnings": self.warnings, "run_id": self.run_id, "pred": self.pred,
                "model_version": self.model_version}


@dataclass(frozen=True)
class ScorePlan:
    """``cough score --dry-run``: what a run would list, skip, read and score, and where it would write."""

    would_list: int
    excluded: int
    seen_before: int
    would_read: int
    would_skip: int
    would_score: int
    model_version: str
    would_write: str
    pred_exists: bool
    labels: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        return {"dry_run": True, **{k: v for k, v in out.items() if k != "labels"}, **self.labels}
