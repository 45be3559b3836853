"""Keeping PRED and its file ledger in shape: compaction, a checkpoint, vacuum, and their health.

Every ``cough score`` chunk commit adds data files to PRED and up to 16 (one per bucket) to
the ledger; nights of a few files each leave thousands of small files that every reader
lists and opens. ``cough maintain PRED`` (and ``cough nightly --maintain``), for PRED and
then the ledger:

1. **compacts** small files into larger ones (delta-rs ``optimize.compact``: the same rows,
   rewritten; readers of an older version still find its files, which vacuum keeps for the
   retention period);
2. writes a **checkpoint** (the log's state in one Parquet file, so readers do not replay
   every commit);
3. **vacuums** files no version within the retention needs (default 168 hours, Delta's own
   default; a shorter one is refused, as delta-rs refuses it).

It never breaks a ``cough score`` that runs at the same time: compaction commits as any
writer does (optimistically; a score's commit that meets it reloads PRED and commits again,
cough.tables.delta.commit), and vacuum deletes only files older than the retention that no
version within it references, while a running score's files are minutes old (its chunk's
rows wait on the driver's disk until their commit, which writes and references them at once).
A checkpoint lets Delta drop commits older than ``delta.logRetentionDuration`` (30 days by
default) when it next cleans its log; their rows stay, their run records (cough.run, in
each commit's metadata) go with them: docs/score.md.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from ..errors import UsageError
from . import delta
from .storage import Location

log = logging.getLogger("cough.maintain")

#: Delta's default retention for files no version needs (``delta.deletedFileRetentionDuration``).
DEFAULT_RETENTION_HOURS = 168
#: A data file smaller than this counts as small (compaction's target is 100 MiB).
SMALL_FILE_BYTES = 16 << 20


@dataclass(frozen=True)
class MaintainSettings:
    """What ``cough maintain`` does: compact, checkpoint and vacuum (each can be left out);
    ``retention_hours``: how old an unneeded file must be before vacuum deletes it."""

    compact: bool = True
    checkpoint: bool = True
    vacuum: bool = True
    retention_hours: int = DEFAULT_RETENTION_HOURS

    def __post_init__(self):
        if self.retention_hours < DEFAULT_RETENTION_HOURS:
            raise UsageError(f"--retention-hours {self.retention_hours} is below Delta's {DEFAULT_RETENTION_HOURS}: a "
                             "reader of an older version, or a table copy in progress, could lose its files")


@dataclass(frozen=True)
class Health:
    """One Delta table's state: its ``version``, live data ``files``, how many are ``small``
    (under :data:`SMALL_FILE_BYTES`), their ``bytes``, and its ``rows``."""

    version: int
    files: int
    small_files: int
    bytes: int
    rows: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def health(table) -> Health:
    """:class:`Health` of a DeltaTable, from its add actions (no data file is opened)."""
    import pyarrow as pa

    actions = pa.table(table.get_add_actions(flatten=True))
    sizes = actions.column("size_bytes").to_pylist() if actions.num_rows else []
    rows = actions.column("num_records").to_pylist() if actions.num_rows and "num_records" in actions.column_names \
        else []
    return Health(version=table.version(), files=len(sizes), small_files=sum(s < SMALL_FILE_BYTES for s in sizes),
                  bytes=int(sum(sizes)), rows=int(sum(r or 0 for r in rows)))


@dataclass
class Maintained:
    """What maintenance did to one table: its health before and after, the files compaction
    removed and added, whether it checkpointed, and the files vacuum deleted."""

    before: Health
    after: Health
    compacted: dict = field(default_factory=dict)
    checkpoint: bool = False
    vacuumed: int = 0

    def to_dict(self) -> dict:
        return {"before": self.before.to_dict(), "after": self.after.to_dict(), "compacted": self.compacted,
                "checkpoint": self.checkpoint, "vacuumed": self.vacuumed}


def maintain_table(loc: Location, settings: MaintainSettings, *, what: str) -> Maintained | None:
    """Compact, checkpoint and vacuum the Delta table at ``loc`` as ``settings`` say; None when
    it has no commit yet."""
    table = delta.open_table(loc, what=what)
    if table is None:
        return None
    done = Maintained(before=health(table), after=health(table))
    if settings.compact:
        metrics = table.optimize.compact()
        done.compacted = {"files_removed": int(metrics.get("numFilesRemoved", 0)),
                          "files_added": int(metrics.get("numFilesAdded", 0))}
    if settings.checkpoint:
        table.create_checkpoint()
        done.checkpoint = True
    if settings.vacuum:
        done.vacuumed = len(table.vacuum(retention_hours=settings.retention_hours, dry_run=False,
                                         enforce_retention_duration=True))
    done.after = health(delta.open_table(loc, what=what))
    log.info("%s %s: %d files (%d small) -> %d (%d small), version %d -> %d, %d unneeded files vacuumed", what,
             loc.uri, done.before.files, done.before.small_files, done.after.files, done.after.small_files,
             done.before.version, done.after.version, done.vacuumed)
    return done


def maintain(pred: str, settings: MaintainSettings | None = None) -> dict:
    """Keep PRED and its file ledger (module docstring); returns what was done to each.

    >>> maintain("out/demo/pred")["pred"]["after"]["small_files"]   # doctest: +SKIP
    1
    """
    from .ledger import LEDGER_DIR
    from .pred import open_pred

    settings = settings or MaintainSettings()
    target = open_pred(pred)
    out: dict = {"pred": target.loc.uri}
    for key, loc, what in (("table", target.loc, "PRED"), ("ledger", target.loc.join(LEDGER_DIR), "the file ledger")):
        done = maintain_table(loc, settings, what=what)
        out[key] = done.to_dict() if done is not None else None
    return out


def table_health(pred: str) -> dict:
    """PRED's and its ledger's :class:`Health` (None for a table without a commit), for a report."""
    from .ledger import LEDGER_DIR
    from .pred import open_pred

    target = open_pred(pred)
    out = {}
    for key, loc, what in (("table", target.loc, "PRED"), ("ledger", target.loc.join(LEDGER_DIR), "the file ledger")):
        table = delta.open_table(loc, what=what)
        out[key] = health(table).to_dict() if table is not None else None
    return out
