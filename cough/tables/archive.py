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
>>> listing_table("data/sample/raw", load_labels(None, "data/sample/raw")).rows.num_rows
60
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa

from ..errors import UsageError
from .labels import LabelIndex, relpath
from .listing import Entry, list_folder

#: A top-level folder named by a date: ``2026-11-24``, ``2026-11-24T02``, ``20261124``, ``date=2026-11-24``.
DATE_NAME = re.compile(r"^(?:[a-z_]+=)?(\d{4})-?(\d{2})-?(\d{2})")


@dataclass(frozen=True)
class Selection:
    """Which files under SOURCE a job reads (``--include``, ``--exclude``): glob patterns on
    the path relative to SOURCE. A pattern with a ``/`` matches the whole relative path (``*``
    and ``?`` within one folder name, ``**`` across any number of folders); one without matches
    the file's name in any folder. A file is read when it matches an ``include`` (any file, when
    there is none) and no ``exclude``; the others are counted as ``excluded``.

    >>> s = Selection(include=("*/cough-*.wav",), exclude=("**/practice/*",))
    >>> s.keeps("p01/cough-1.wav"), s.keeps("p01/counting.wav"), s.keeps("p01/practice/cough-1.wav")
    (True, False, False)
    >>> Selection(exclude=("*.txt",)).keeps("a/b/notes.txt")
    False
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        for pattern in (*self.include, *self.exclude):
            if not pattern.strip("/") or pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
                raise UsageError(f"--include/--exclude {pattern!r}: give a glob pattern on paths relative to SOURCE "
                                 "(e.g. '*/cough-*.wav')")
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def keeps(self, rel: str) -> bool:
        """Whether the file at ``rel`` (relative to SOURCE) is read."""
        return ((not self.include or any(_matches(p, rel) for p in self.include))
                and not any(_matches(p, rel) for p in self.exclude))


EVERY_FILE = Selection()


def _matches(pattern: str, rel: str) -> bool:
    if "/" not in pattern:
        return fnmatch.fnmatchcase(PurePosixPath(rel).name, pattern)
    return _match_parts(PurePosixPath(pattern).parts, PurePosixPath(rel).parts)


def _match_parts(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match_parts(pattern[1:], parts[1:])


def listing_schema(metadata_columns: list[str]) -> pa.Schema:
    """One row per entry: :class:`cough.tables.listing.Entry`'s fields, then label, participant,
    the annotated cough span (:data:`cough.tables.labels.SPAN_COLUMNS`), metadata."""
    return pa.schema([pa.field("path", pa.string()), pa.field("problem", pa.string()),
                      pa.field("open_as", pa.binary()), pa.field("file_size", pa.int64()),
                      pa.field("file_mtime_ns", pa.int64()), pa.field("label", pa.int8()),
                      pa.field("participant", pa.string()), pa.field("cough_start_s", pa.float64()),
                      pa.field("cough_end_s", pa.float64()), *(pa.field(c, pa.string()) for c in metadata_columns)])


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


def _rows(entries: list[Entry], index: LabelIndex, selection: Selection) -> tuple[pa.Table, int]:
    """``(the listing's rows of the ``entries`` that ``selection`` keeps, sorted by path (the
    same rows in the same order, whichever task lists them), how many it left out)``."""
    schema = listing_schema(index.metadata_columns)
    kept = [e for e in entries if selection.keeps(relpath(e.path, index.source))]
    rows = [{**e.to_dict(), **index.lookup(e.path)} for e in sorted(kept, key=lambda e: e.path)]
    return pa.Table.from_pylist(rows, schema=schema), len(entries) - len(kept)


def _list_top(source: str, index: LabelIndex, selection: Selection,
              include_files: bool) -> tuple[pa.Table, list[str], int]:
    entries, folders = list_folder(source, recursive=False)
    rows, excluded = _rows(entries if include_files else [], index, selection)
    return rows, folders, excluded


def _list_folders(source: str, folders: list[str], index: LabelIndex, selection: Selection) -> tuple[pa.Table, int]:
    entries = [e for folder in folders for e in list_folder(source, folder)[0]]
    return _rows(entries, index, selection)


def _folders(source: str, prefixes: tuple[str, ...], since: str | None, names: list[str]) -> list[str]:
    """The folders below SOURCE's top level to list: the ``prefixes``, else ``names`` (SOURCE's
    top-level folders) named by a date on or after ``since``, else all of ``names``."""
    base = source.rstrip("/")
    if prefixes:
        return [f"{base}/{p.strip('/')}" for p in prefixes]
    if since is not None:
        return [f for f in names if dated_on_or_after(PurePosixPath(f).name, since)]
    return names


@dataclass(frozen=True)
class Listing:
    """What a listing of SOURCE found: its rows (:func:`listing_schema`; a pyarrow Table in
    this process, or a Ray Dataset whose blocks stay in the object store) and how many files
    the :class:`Selection` left out."""

    rows: Any
    excluded: int


def listing_table(source: str, index: LabelIndex, *, selection: Selection = EVERY_FILE,
                  prefixes: tuple[str, ...] = (), since: str | None = None) -> Listing:
    """SOURCE's entries listed in this process, for a dry run: the rows :func:`listing_dataset`
    gives, in one table (:attr:`Listing.rows`), without Ray."""
    files, excluded = pa.Table.from_pylist([], schema=listing_schema(index.metadata_columns)), 0
    names: list[str] = []
    if not prefixes:
        files, names, excluded = _list_top(source, index, selection, since is None)
    folders = _folders(source, prefixes, since, names)
    if not folders:
        return Listing(files, excluded)
    below, more = _list_folders(source, folders, index, selection)
    return Listing(pa.concat_tables([files, below]), excluded + more)


def listing_dataset(source: str, index: LabelIndex, *, selection: Selection = EVERY_FILE,
                    prefixes: tuple[str, ...] = (), since: str | None = None, tasks: int | None = None) -> Listing:
    """SOURCE's entries as a Ray Dataset (:attr:`Listing.rows`), listed in Ray tasks; the
    driver holds object references and the count of files ``selection`` left out.

    ``prefixes``: folders under SOURCE (relative, e.g. ``2026/11/24``) to list instead of
    all of it. ``since`` (YYYY-MM-DD): only SOURCE's top-level folders named by a date on or
    after it (files directly in SOURCE and undated folders are left out). ``tasks``: most
    listing tasks for the folders (default: 4 per CPU). Call after Ray is up.
    """
    import ray

    from ..runtime import cpus

    index_ref, selection_ref = ray.put(index), ray.put(selection)
    top = ray.remote(_list_top).options(num_cpus=1, num_returns=3)
    below = ray.remote(_list_folders).options(num_cpus=1, num_returns=2)
    blocks: list = []
    counts: list = []
    names: list[str] = []
    if not prefixes:
        listed = top.remote(source, index_ref, selection_ref, since is None)  # three object refs: num_returns=3
        blocks, names, counts = [listed[0]], ray.get(listed[1]), [listed[2]]  # type: ignore[index]
    folders = _folders(source, prefixes, since, names)
    parts = max(1, min(len(folders), tasks or 4 * cpus()))
    for i in range(parts):
        if folders[i::parts]:
            part = below.remote(source, folders[i::parts], index_ref, selection_ref)  # rows, excluded
            blocks.append(part[0])  # type: ignore[index]
            counts.append(part[1])  # type: ignore[index]
    excluded = sum(ray.get(counts))
    if not blocks:
        return Listing(ray.data.from_arrow(listing_schema(index.metadata_columns).empty_table()), excluded)
    return Listing(ray.data.from_arrow_refs(blocks), excluded)


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
