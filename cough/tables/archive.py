"""A raw archive listed into rows (entry, label, participant, metadata): by Ray tasks into a
Dataset for the jobs, so the driver never holds it, or in this process for a dry run; one
row builder for both.

The driver only learns SOURCE's top-level folder names: one task lists SOURCE's top level
(its files go straight into a block in the object store), and tasks list the folders below
it, several folders each, recursively (cough/tables/listing.py's walk, with all its guarantees).
Each task attaches label, participant and metadata (:class:`cough.tables.labels.LabelIndex`) and
returns one Arrow block, so the listing of 10⁶ files costs the driver a few object
references. A date-partitioned archive is cheaper still: ``prefixes`` lists only the named
folders, ``since`` only the top-level folders named by a date on or after it.

>>> ds = listing_dataset("data/sample/raw", load_labels(None, "data/sample/raw"))  # doctest: +SKIP
>>> ds.count()                                                                        # doctest: +SKIP
60
>>> from cough.tables.labels import load_labels
>>> listing_table("data/sample/raw", load_labels(None, "data/sample/raw")).num_rows
60
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pyarrow as pa

from ..errors import UsageError
from .labels import LabelIndex
from .listing import Entry, list_folder

#: A top-level folder named by a date: ``2026-11-24``, ``2026-11-24T02``, ``20261124``, ``date=2026-11-24``.
DATE_NAME = re.compile(r"^(?:[a-z_]+=)?(\d{4})-?(\d{2})-?(\d{2})")


def listing_schema(metadata_columns: list[str]) -> pa.Schema:
    """One row per entry: :class:`cough.tables.listing.Entry`'s fields, then label, participant, metadata."""
    return pa.schema([pa.field("path", pa.string()), pa.field("problem", pa.string()),
                      pa.field("open_as", pa.binary()), pa.field("file_size", pa.int64()),
                      pa.field("file_mtime_ns", pa.int64()), pa.field("label", pa.int8()),
                      pa.field("participant", pa.string()), *(pa.field(c, pa.string()) for c in metadata_columns)])


def check_since(since: str | None) -> str | None:
    """``since`` as ``YYYY-MM-DD``; a UsageError when it is not a date."""
    if since is None:
        return None
    match = DATE_NAME.fullmatch(since)
    if not match:
        raise UsageError(f"--since {since!r} is not a date: give YYYY-MM-DD")
    return "-".join(match.groups())


def dated_on_or_after(name: str, since: str) -> bool:
    """Whether a top-level folder ``name`` is named by a date on or after ``since`` (YYYY-MM-DD).

    >>> dated_on_or_after("2026-11-24", "2026-11-24"), dated_on_or_after("20261123", "2026-11-24")
    (True, False)
    >>> dated_on_or_after("date=2026-12-01", "2026-11-24"), dated_on_or_after("misc", "2026-11-24")
    (True, False)
    """
    match = DATE_NAME.match(name)
    return match is not None and "-".join(match.groups()) >= since


def _rows(entries: list[Entry], index: LabelIndex) -> pa.Table:
    """The listing's rows of ``entries``, sorted by path (the same rows in the same order,
    whichever task lists them)."""
    schema = listing_schema(index.metadata_columns)
    rows = [{**e.to_dict(), **index.lookup(e.path)} for e in sorted(entries, key=lambda e: e.path)]
    return pa.Table.from_pylist(rows, schema=schema)


def _list_top(source: str, index: LabelIndex, include_files: bool) -> tuple[pa.Table, list[str]]:
    entries, folders = list_folder(source, recursive=False)
    return _rows(entries if include_files else [], index), folders


def _list_folders(source: str, folders: list[str], index: LabelIndex) -> pa.Table:
    entries = [e for folder in folders for e in list_folder(source, folder)[0]]
    return _rows(entries, index)


def _folders(source: str, prefixes: tuple[str, ...], since: str | None, names: list[str]) -> list[str]:
    """The folders below SOURCE's top level to list: the ``prefixes``, else ``names`` (SOURCE's
    top-level folders) named by a date on or after ``since``, else all of ``names``."""
    base = source.rstrip("/")
    if prefixes:
        return [f"{base}/{p.strip('/')}" for p in prefixes]
    if since is not None:
        return [f for f in names if dated_on_or_after(PurePosixPath(f).name, since)]
    return names


def listing_table(source: str, index: LabelIndex, *, prefixes: tuple[str, ...] = (),
                  since: str | None = None) -> pa.Table:
    """SOURCE's entries (:func:`listing_schema` rows) listed in this process, for a dry run:
    the rows :func:`listing_dataset` gives, in one table, without Ray."""
    files = pa.Table.from_pylist([], schema=listing_schema(index.metadata_columns))
    names: list[str] = []
    if not prefixes:
        files, names = _list_top(source, index, since is None)
    folders = _folders(source, prefixes, since, names)
    return pa.concat_tables([files, _list_folders(source, folders, index)]) if folders else files


def listing_dataset(source: str, index: LabelIndex, *, prefixes: tuple[str, ...] = (), since: str | None = None,
                    tasks: int | None = None):
    """SOURCE's entries (:func:`listing_schema` rows) as a Ray Dataset, listed in Ray tasks.

    ``prefixes``: folders under SOURCE (relative, e.g. ``2026/11/24``) to list instead of
    all of it. ``since`` (YYYY-MM-DD): only SOURCE's top-level folders named by a date on or
    after it (files directly in SOURCE and undated folders are left out). ``tasks``: most
    listing tasks for the folders (default: 4 per CPU). Call after Ray is up.
    """
    import ray

    from ..runtime import cpus

    index_ref = ray.put(index)
    top = ray.remote(_list_top).options(num_cpus=1, num_returns=2)
    below = ray.remote(_list_folders).options(num_cpus=1)
    blocks: list = []
    names: list[str] = []
    if not prefixes:
        listed = top.remote(source, index_ref, since is None)  # two object refs: num_returns=2
        blocks, names = [listed[0]], ray.get(listed[1])  # type: ignore[index]
    folders = _folders(source, prefixes, since, names)
    parts = max(1, min(len(folders), tasks or 4 * cpus()))
    blocks += [below.remote(source, folders[i::parts], index_ref) for i in range(parts) if folders[i::parts]]
    if not blocks:
        return ray.data.from_arrow(listing_schema(index.metadata_columns).empty_table())
    return ray.data.from_arrow_refs(blocks)


def in_batches(ds, rows: int, batch_size: int):
    """``(dataset, batch_size)``: ``ds`` (``rows`` rows) repartitioned into blocks of at most
    ``batch_size`` rows, fewer for small archives so that every CPU still gets about 4
    batches. Call after Ray is up.

    >>> in_batches(ds, 60, 64)   # doctest: +SKIP
    (MaterializedDataset(num_blocks=8, num_rows=60, ...), 8)

    (on 2 CPUs: 8 blocks of 8 rows)
    """
    from ..runtime import cpus

    batch = max(1, min(batch_size, -(-rows // (4 * cpus()))))
    return (ds.repartition(max(1, -(-rows // batch))).materialize() if rows else ds), batch
