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


# ---------------------------------------------------------------- by hash bucket

#: Recordings per bucket the bucketed set aims at (50,000 ids: 1.6 MB).
BUCKET_SIZE = 50_000
#: Fewest and most buckets.
MIN_BUCKETS, MAX_BUCKETS = 16, 4096


def bucket_count(rows: int) -> int:
    """Buckets for a set of about ``rows`` recordings: about :data:`BUCKET_SIZE` each.

    >>> bucket_count(10_000), bucket_count(1_000_000), bucket_count(100_000_000)
    (16, 20, 2000)
    """
    return int(min(MAX_BUCKETS, max(MIN_BUCKETS, -(-rows // BUCKET_SIZE))))


#: The value of each ASCII hex digit (lower case, as recording ids are written).
_HEX = np.zeros(256, np.uint32)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint32)


def _hash_buckets(keys: np.ndarray, buckets: int) -> np.ndarray:
    """Buckets of content hashes given as ``S32`` bytes (hex): their first 8 digits, mod ``buckets``."""
    digits = _HEX[keys.view(np.uint8).reshape(len(keys), -1)[:, :8]]
    return (digits @ (np.uint32(16) ** np.arange(7, -1, -1, dtype=np.uint32)).astype(np.uint64)) % buckets


def _path_bucket(path: str, buckets: int) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=4).digest(), "little") % buckets


def id_buckets(ids: list[str | None], paths: list[str], buckets: int) -> np.ndarray:
    """The bucket of each row: of its content hash (``recording_id``, hex: uniform already),
    or, for a file that could not be read, of its path.

    >>> id_buckets(["0000000a" + "0" * 24, None], ["/x.wav", "/broken.wav"], 16).tolist()
    [10, 1]
    """
    keys = np.array([(i or "").encode() for i in ids], dtype="S32")
    out = _hash_buckets(keys, buckets).astype(np.int64) if len(keys) else np.zeros(0, np.int64)
    for k, (i, p) in enumerate(zip(ids, paths)):
        if not i:
            out[k] = _path_bucket(p, buckets)
    return out


def _split(fs, files: list[str], model_version: str, buckets: int) -> list:
    """One group of PRED's data files: what ``model_version`` scored there, one
    :class:`Scored` per bucket, then the group's transient-error paths (a Ray task with
    ``num_returns=buckets + 1``). Batch by batch, 32 bytes per recording: the group's ids,
    never Python objects per row."""
    import pyarrow.dataset as pads

    from .listing import UNREAD
    from .storage import retry

    def read() -> list:
        data = pads.dataset(files, filesystem=fs, format="parquet")
        ids: list[list[np.ndarray]] = [[] for _ in range(buckets)]
        unreadable: list[set] = [set() for _ in range(buckets)]
        pending: set[str] = set()
        for batch in data.to_batches(columns=["recording_id", "path", "error"],
                                     filter=pads.field("model_version") == model_version):
            rid = batch.column("recording_id")
            valid = rid.is_valid()
            keys = np.array(rid.filter(valid).to_numpy(zero_copy_only=False), dtype="S32")
            of = _hash_buckets(keys, buckets)
            order = np.argsort(of, kind="stable")
            cuts = np.searchsorted(of[order], np.arange(buckets + 1))
            for b in range(buckets):
                if cuts[b + 1] > cuts[b]:
                    ids[b].append(keys[order[cuts[b]:cuts[b + 1]]])
            unread = pc.fill_null(pc.starts_with(batch.column("error"), UNREAD), False)
            pending.update(batch.column("path").filter(unread).to_pylist())
            for path in batch.column("path").filter(pc.and_(pc.invert(valid), pc.invert(unread))).to_pylist():
                unreadable[_path_bucket(path, buckets)].add(path)
        return [*(Scored(np.unique(np.concatenate([np.zeros(0, "S32"), *parts])), frozenset(lost))
                  for parts, lost in zip(ids, unreadable)), frozenset(pending)]

    return retry(read, what=f"read PRED's data files ({files[0]}, ...)")


def _merge(*parts: Scored) -> Scored:
    """One bucket's :class:`Scored` from every group's part of it (a Ray task)."""
    return Scored(np.unique(np.concatenate([np.zeros(0, "S32"), *(p.ids for p in parts)])),
                  frozenset().union(*(p.unreadable for p in parts)))


@dataclass(frozen=True)
class ScoredBuckets:
    """What a model version scored, split by hash bucket (:func:`id_buckets`) into Ray
    objects, one per bucket, so that no process holds the whole set: a featurizing task
    fetches the buckets of the files in its batch, and only those. The same rule as
    :meth:`Scored.has`; ``pending``: the paths whose rows are transient errors (few; on the
    driver, for the run's commits to replace)."""

    refs: tuple
    pending: frozenset = frozenset()

    def has(self, ids: list[str | None], paths: list[str]) -> np.ndarray:
        import ray

        of = id_buckets(ids, paths, len(self.refs))
        needed = sorted(set(of.tolist()))
        parts = dict(zip(needed, ray.get([self.refs[b] for b in needed])))
        out = np.zeros(len(ids), bool)
        for b in needed:
            rows = np.flatnonzero(of == b)
            out[rows] = parts[b].has([ids[r] for r in rows], [paths[r] for r in rows])
        return out


def scored_buckets(pred, model_version: str, *, groups: int) -> ScoredBuckets:
    """:class:`ScoredBuckets` of what ``model_version`` has scored in PRED (a
    :class:`cough.tables.pred.Pred`), built by Ray tasks: ``groups`` of PRED's data files split
    their rows by bucket, one task per bucket merges the parts. The driver holds object
    references only. Call after Ray is up."""
    import ray

    table = pred.table()
    files = [pred.loc.join(*path.split("/")).path for path in
             (table.get_add_actions(flatten=True).column("path").to_pylist() if table is not None else [])]
    rows = sum((table.get_add_actions(flatten=True).column("num_records").to_pylist() or [0])) if files else 0
    buckets = bucket_count(int(rows or 0))
    if not files:
        empty = ray.put(NOTHING_SCORED)
        return ScoredBuckets(tuple([empty] * buckets))
    split = ray.remote(_split).options(num_cpus=1, num_returns=buckets + 1)
    merge = ray.remote(_merge).options(num_cpus=1)
    groups = min(4 * groups, len(files))  # several per CPU: each holds its share of the ids only
    parts: list = [split.remote(pred.loc.fs, files[g::groups], model_version, buckets)  # buckets + 1 refs each
                   for g in range(groups)]
    pending = frozenset().union(*ray.get([p[buckets] for p in parts]))
    return ScoredBuckets(tuple(merge.remote(*(p[b] for p in parts)) for b in range(buckets)), pending)
