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
import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa

from ..errors import UsageError
from .labels import LabelIndex, relpath

log = logging.getLogger("cough")
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


@dataclass
class ListingCounts:
    """What a listing counted besides its rows: files ``excluded`` by the :class:`Selection`;
    of the others, labelled ``by_path`` (a labels CSV row naming the path relative to SOURCE),
    ``by_name`` (a row naming the file name), ``by_folder`` (a pos/neg folder), or
    ``unlabelled``; ``grouped``: labelled files whose participant --group-pattern gave;
    ``participants``: the labelled files' participants (None past :data:`MAX_PARTICIPANTS`:
    many); ``name_hits``: for each CSV file name that matched, how many files it matched (more
    than one is refused: :func:`cough.tables.labels.ambiguous_names`)."""

    excluded: int = 0
    by_path: int = 0
    by_name: int = 0
    by_folder: int = 0
    unlabelled: int = 0
    grouped: int = 0
    participants: set | None = field(default_factory=set)
    name_hits: dict = field(default_factory=dict)

    def add(self, other: "ListingCounts") -> "ListingCounts":
        for f in ("excluded", "by_path", "by_name", "by_folder", "unlabelled", "grouped"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        for name, n in other.name_hits.items():
            self.name_hits[name] = self.name_hits.get(name, 0) + n
        self.participants = _union(self.participants, other.participants)
        return self

    def warnings(self, group_pattern: str | None) -> list[str]:
        """What a person must hear about --group-pattern: it matched no labelled file, or it
        gives fewer participants than a tenth of the labelled files (the pattern likely
        captures a recording type, not a person)."""
        if not group_pattern or not self.labelled:
            return []
        if not self.grouped:
            return [f"--group-pattern {group_pattern!r} matched none of the {self.labelled} labelled files: each is "
                    "its own participant"]
        n = len(self.participants) if self.participants is not None else None
        if n is not None and n < self.labelled / 10:
            return [f"--group-pattern {group_pattern!r} gives {n} participant(s) for {self.labelled} labelled files "
                    f"({self.labelled / n:.0f} each): does it capture the person, not the kind of recording?"]
        return []

    @property
    def labelled(self) -> int:
        return self.by_path + self.by_name + self.by_folder

    def to_dict(self) -> dict:
        """The counts a summary shows (``name_hits`` is the jobs' check, not a count)."""
        return {"labelled": self.labelled, "labelled_by_path": self.by_path, "labelled_by_name": self.by_name,
                "labelled_by_folder": self.by_folder, "unlabelled": self.unlabelled,
                "participants": len(self.participants) if self.participants is not None else None}


#: Participants a listing counts one by one; past this many, "many" (their number no warning needs).
MAX_PARTICIPANTS = 100_000


def _union(a: set | None, b: set | None) -> set | None:
    if a is None or b is None or len(a) + len(b) > MAX_PARTICIPANTS and len(a | b) > MAX_PARTICIPANTS:
        return None
    return a | b


def _rows(entries: list[Entry], index: LabelIndex, selection: Selection) -> tuple[pa.Table, ListingCounts]:
    """``(the listing's rows of the entries that selection keeps, sorted by path (the same
    rows in the same order, whichever task lists them), their counts)``."""
    schema = listing_schema(index.metadata_columns)
    kept = sorted((e for e in entries if selection.keeps(relpath(e.path, index.source))), key=lambda e: e.path)
    counts = ListingCounts(excluded=len(entries) - len(kept))
    rows = []
    for entry in kept:
        match = index.resolve(entry.path)
        rows.append({**entry.to_dict(), **match.info})
        field_name = {"path": "by_path", "name": "by_name", "folder": "by_folder"}.get(match.label_from or "",
                                                                                     "unlabelled")
        setattr(counts, field_name, getattr(counts, field_name) + 1)
        if match.label_from is not None:
            counts.grouped += match.grouped
            if counts.participants is not None:
                counts.participants.add(match.info["participant"])
        if match.label_from == "name":
            name = PurePosixPath(entry.path).name
            counts.name_hits[name] = counts.name_hits.get(name, 0) + 1
    if counts.participants is not None and len(counts.participants) > MAX_PARTICIPANTS:
        counts.participants = None
    return pa.Table.from_pylist(rows, schema=schema), counts


def _list_top(source: str, index: LabelIndex, selection: Selection,
              include_files: bool) -> tuple[pa.Table, list[str], ListingCounts]:
    entries, folders = list_folder(source, recursive=False)
    rows, counts = _rows(entries if include_files else [], index, selection)
    return rows, folders, counts


def _list_folders(source: str, folders: list[str], index: LabelIndex,
                  selection: Selection) -> tuple[pa.Table, ListingCounts]:
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
    this process, or a Ray Dataset whose blocks stay in the object store) and its counts."""

    rows: Any
    counts: ListingCounts

    @property
    def excluded(self) -> int:
        return self.counts.excluded

    def check(self, labels: str | None, group_pattern: str | None) -> list[str]:
        """The labels' and participants' checks on what the listing found: a UsageError for file
        names that several files share (:func:`cough.tables.labels.ambiguous_names`); the
        warnings about --group-pattern (:meth:`ListingCounts.warnings`), logged and returned for
        the job's summary."""
        from .labels import ambiguous_names

        ambiguous_names(self.counts.name_hits, labels)
        warnings = self.counts.warnings(group_pattern)
        for warning in warnings:
            log.warning("%s", warning)
        return warnings


def listing_table(source: str, index: LabelIndex, *, selection: Selection = EVERY_FILE,
                  prefixes: tuple[str, ...] = (), since: str | None = None) -> Listing:
    """SOURCE's entries listed in this process, for a dry run: the rows :func:`listing_dataset`
    gives, in one table (:attr:`Listing.rows`), without Ray."""
    files, counts = pa.Table.from_pylist([], schema=listing_schema(index.metadata_columns)), ListingCounts()
    names: list[str] = []
    if not prefixes:
        files, names, counts = _list_top(source, index, selection, since is None)
    folders = _folders(source, prefixes, since, names)
    if not folders:
        return Listing(files, counts)
    below, more = _list_folders(source, folders, index, selection)
    return Listing(pa.concat_tables([files, below]), counts.add(more))


def listing_dataset(source: str, index: LabelIndex, *, selection: Selection = EVERY_FILE,
                    prefixes: tuple[str, ...] = (), since: str | None = None, tasks: int | None = None) -> Listing:
    """SOURCE's entries as a Ray Dataset (:attr:`Listing.rows`), listed in Ray tasks; the
    driver holds object references and the listing's counts.

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
            part = below.remote(source, folders[i::parts], index_ref, selection_ref)  # rows, counts
            blocks.append(part[0])  # type: ignore[index]
            counts.append(part[1])  # type: ignore[index]
    total = ListingCounts()
    for c in ray.get(counts):
        total.add(c)
    if not blocks:
        return Listing(ray.data.from_arrow(listing_schema(index.metadata_columns).empty_table()), total)
    return Listing(ray.data.from_arrow_refs(blocks), total)


#: Most blocks :func:`in_batches` cuts a job's work into. The driver keeps every block's
#: reference and metadata, ~45 KB each: 10⁶ files to featurize in blocks of 64 rows (15,625
#: blocks) held 630 MB more than 10⁵ files did, and a first score night of 10⁶ files 1.2 GB
#: more. Past this many, a block holds several batches, which ``map_batches`` cuts apart inside
#: the task (docs/benchmarks.md, issue 23).
MAX_BLOCKS = 1000


def in_batches(ds, rows: int, batch_size: int):
    """``(dataset, batch_size)``: ``ds`` (``rows`` rows) repartitioned into blocks of one batch
    of at most ``batch_size`` rows, fewer rows for small archives so that every CPU still gets
    about 4 batches; past :data:`MAX_BLOCKS` batches (or 4 per CPU, if more), into that many
    blocks of as many batches each as it takes, which ``map_batches(batch_size=...)`` cuts
    apart inside the task (the last one a row short or so: blocks are even). Call after Ray is
    up.

    >>> in_batches(ds, 60, 64)   # doctest: +SKIP
    (MaterializedDataset(num_blocks=8, num_rows=60, ...), 8)
    >>> in_batches(ds, 10**6, 64)[0].num_blocks()   # doctest: +SKIP
    977

    (on 2 CPUs: 8 blocks of 8 rows; then 977 blocks of 1,023 or 1,024 rows, 16 batches each)
    """
    from ..runtime import cpus

    batch = max(1, min(batch_size, -(-rows // (4 * cpus()))))
    batches = -(-rows // batch)
    per_block = -(-batches // max(MAX_BLOCKS, 4 * cpus()))
    return (ds.repartition(max(1, -(-batches // per_block))).materialize() if rows else ds), batch
