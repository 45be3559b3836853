"""What a model version has scored already: the content-dedupe set of ``cough score``.

A file whose content (``recording_id``) the model version scored, under any path, is not
decoded again; a file that could not even be read is recognised by its path, unless its row
is a transient error (the store kept failing: cough.tables.listing.UNREAD), which the next run
reads again and whose row that run's commit replaces (:attr:`Scored.pending`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Scored:
    """Keys this model version already scored: sorted ``recording_id`` bytes, plus the paths
    of files that could not even be read (they have no ``recording_id``); ``pending``, the
    paths whose row is a transient error (not scored: read again, and the row replaced)."""

    ids: np.ndarray
    unreadable: frozenset
    pending: frozenset = frozenset()

    def has(self, ids: list[str | None], paths: list[str]) -> np.ndarray:
        """The rule for "already scored", everywhere: a file whose content hash (``ids``) this
        model version scored, under any path; a file that could not be read (its id None)
        whose path it already recorded as unreadable.

        >>> scored = Scored(np.array([b"a" * 32], dtype="S32"), frozenset({"/x/broken.mp3"}))
        >>> scored.has(["a" * 32, "b" * 32, None, None], ["/y/copy.mp3", "/y/new.mp3", "/x/broken.mp3", "/x/other.mp3"])
        array([ True, False,  True, False])
        """
        keys = np.array([(i or "").encode() for i in ids], dtype="S32")
        if len(self.ids) and len(keys):
            pos = np.minimum(np.searchsorted(self.ids, keys), len(self.ids) - 1)
            known = self.ids[pos] == keys
        else:
            known = np.zeros(len(keys), bool)
        return np.array([k if i is not None else p in self.unreadable for i, k, p in zip(ids, known, paths)],
                        dtype=bool)

    def has_rows(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Which rows of a batch with ``recording_id`` and ``path`` columns this set holds (:meth:`has`)."""
        return self.has(batch.column("recording_id").to_pylist(), batch.column("path").to_pylist())


NOTHING_SCORED = Scored(np.zeros(0, "S32"), frozenset())


def scored_keys(table, model_version: str) -> Scored:
    """What ``model_version`` has scored in PRED (a DeltaTable, or None before the first
    commit); streams two columns of that version's rows."""
    import pyarrow.dataset as pads

    from .listing import UNREAD
    from .storage import retry

    if table is None:
        return NOTHING_SCORED

    def read() -> Scored:
        data = table.to_pyarrow_dataset()
        ids, unreadable, pending = [np.zeros(0, "S32")], set(), set()
        for batch in data.to_batches(columns=["recording_id", "path", "error"],
                                     filter=pads.field("model_version") == model_version):
            rid = batch.column("recording_id")
            ok = rid.is_valid()
            ids.append(np.array(rid.filter(ok).to_pylist(), dtype="S32"))
            unread = pc.fill_null(pc.starts_with(batch.column("error"), UNREAD), False)
            pending.update(batch.column("path").filter(unread).to_pylist())
            unreadable.update(batch.column("path").filter(pc.and_(pc.invert(ok), pc.invert(unread))).to_pylist())
        return Scored(np.unique(np.concatenate(ids)), frozenset(unreadable), frozenset(pending))

    return retry(read, what=f"read PRED {table.table_uri}")
