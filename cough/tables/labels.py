"""Labels, participants and metadata for recordings.

A labels CSV has ``filename`` (basename or path relative to SOURCE) and ``label``;
``participant`` is optional (``group``, cough 0.1's name for it, is read as it); every other column is carried through as metadata, except that a
column named like one of our tables' own (:func:`reserved_columns`) is refused.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pandas as pd

from ..errors import CoughError, UsageError

log = logging.getLogger("cough.labels")

POSITIVE = {"positive", "pos", "1", "true", "yes", "covid", "covid-19"}
NEGATIVE = {"negative", "neg", "0", "false", "no", "healthy"}
#: Parent-folder names that give the label when there is no CSV (Keras flow_from_directory).
FOLDER_LABELS = {"pos": 1, "positive": 1, "neg": 0, "negative": 0}
#: The columns a labels CSV gives a meaning; every other one is metadata. ``cough_start_s``
#: and ``cough_end_s``: an annotated cough span in seconds (windows are cut inside it).
INPUT_COLUMNS = ("filename", "label", "participant", "cough_start_s", "cough_end_s")
#: The annotated span's columns: numbers of seconds, or empty.
SPAN_COLUMNS = ("cough_start_s", "cough_end_s")


def reserved_columns() -> frozenset[str]:
    """Column names that our tables (recordings, images, PRED, score's stage 1) or PRED's
    readers (the report) give a meaning, besides :data:`INPUT_COLUMNS`: a metadata column
    with one of these names would clash with ours, so a labels CSV may not use them.

    >>> {"score", "threshold", "run_id", "window_scores", "n_windows"} <= reserved_columns()
    True
    >>> "site" in reserved_columns() or "label" in reserved_columns()
    False
    """
    from .listing import ENTRY_COLUMNS
    from .schema import PRED_COLUMNS, events_schema, images_schema, pred_schema, prepared_schema, recordings_schema

    names = {*recordings_schema([]).names, *images_schema([]).names, *prepared_schema([]).names,
             *pred_schema([]).names, *events_schema().names, *ENTRY_COLUMNS, *PRED_COLUMNS}
    return frozenset(names - set(INPUT_COLUMNS))


def parse_label(value) -> int | None:
    """1 for positive, 0 for negative, None for missing; anything else is an error.

    >>> parse_label("Positive"), parse_label(0), parse_label(None)
    (1, 0, None)
    """
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text.endswith(".0"):
        text = text[:-2]
    if text in POSITIVE:
        return 1
    if text in NEGATIVE:
        return 0
    raise ValueError(f"label {value!r} is not one of positive/negative, pos/neg, 1/0, true/false")


@dataclass(frozen=True)
class Match:
    """What a labels CSV (or the folder names) says of one file: ``info`` (label, participant,
    the annotated span, metadata), where its label came from (``label_from``: ``"path"``, a CSV
    row naming its path relative to SOURCE; ``"name"``, a row naming its file name; ``"folder"``,
    a pos/neg folder; None: no label), and whether --group-pattern gave its participant."""

    info: dict
    label_from: str | None
    grouped: bool


@dataclass
class LabelIndex:
    """Looks up label, participant and metadata for a recording path under SOURCE.

    The matching rule (docs/featurize.md): a CSV whose ``filename`` column holds any path (a
    ``/``) matches files by their path relative to SOURCE only; a CSV of bare file names matches
    each file by its name, which must then be unique in SOURCE (the jobs refuse a name that
    several files share: :func:`ambiguous_names`). The participant comes from the CSV's
    ``participant`` column, else from --group-pattern (:meth:`group_for`), else it is the file.
    """

    source: str
    by_relpath: dict[str, dict] = field(default_factory=dict)
    metadata_columns: list[str] = field(default_factory=list)
    group_pattern: re.Pattern | None = None
    #: the CSV names files by path: no match by file name
    paths_only: bool = False

    def resolve(self, path: str) -> Match:
        """The :class:`Match` of ``path`` (a path under SOURCE)."""
        rel = relpath(path, self.source)
        name = PurePosixPath(rel).name
        row, how = self.by_relpath.get(rel), "path"  # how: where the label came from
        label_from: str | None
        if row is not None and "/" not in rel and not self.paths_only:
            how = "name"  # a bare name that happens to sit at SOURCE's top level
        elif row is None and not self.paths_only:
            row, how = self.by_relpath.get(name), "name"
        meta = {c: None for c in (*SPAN_COLUMNS, *self.metadata_columns)}
        if row is not None:
            label, group = row["label"], row.get("participant")
            meta.update({c: row.get(c) for c in (*SPAN_COLUMNS, *self.metadata_columns)})
        else:
            label, group, how = folder_label(rel), None, "folder"
        label_from = how if label is not None else None
        grouped = False
        if group is None:
            group, grouped = self.group_for(rel)
        return Match({"label": label, "participant": group, **meta}, label_from, grouped)

    def lookup(self, path: str) -> dict:
        """``{"label", "participant", "cough_start_s", "cough_end_s", **metadata}`` for
        ``path`` (a path under SOURCE): :meth:`resolve`'s ``info``."""
        return self.resolve(path).info

    def group_for(self, rel: str) -> tuple[str, bool]:
        """``(participant, whether --group-pattern matched)`` of the file at ``rel``: the
        pattern's capture group, searched in the path relative to SOURCE when the pattern holds
        a ``/`` (``'^([^/]+)/'``: a folder per participant), else in the file's stem (``'^(.+)-\\d+$'``:
        ``X-0.mp3`` and ``X-1.mp3`` are X's); without a match, one participant per file."""
        if self.group_pattern is not None:
            on_path = "/" in self.group_pattern.pattern
            match = self.group_pattern.search(rel if on_path else PurePosixPath(rel).stem)
            if match:
                return match.group(1), True
        return rel, False  # one group per file: the safest default for a split


def relpath(path: str, source: str) -> str:
    path, source = _strip_scheme(path), _strip_scheme(source)
    if path == source:
        return PurePosixPath(path).name
    return str(PurePosixPath(path).relative_to(PurePosixPath(source)))


def _strip_scheme(uri: str) -> str:
    return uri.split("://", 1)[1] if "://" in uri else os.path.abspath(uri)


def folder_label(rel: str) -> int | None:
    for part in reversed(PurePosixPath(rel).parts[:-1]):
        if part.lower() in FOLDER_LABELS:
            return FOLDER_LABELS[part.lower()]
    return None


def compile_group_pattern(pattern: str | None) -> re.Pattern | None:
    """--group-pattern compiled; a UsageError unless it is a regular expression with exactly
    one capture group (the participant).

    >>> compile_group_pattern(r"^([^/]+)/").groups
    1
    """
    if not pattern:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--group-pattern {pattern!r} is not a valid regular expression: {exc}") from None
    if compiled.groups != 1:
        raise UsageError(f"--group-pattern {pattern!r} has {compiled.groups} capture groups; it needs exactly one, "
                         r"the participant: e.g. '^([^/]+)/' for a folder per participant, '^(.+)-\d+$' for "
                         "X-0.mp3 and X-1.mp3")
    return compiled


def load_labels(csv: str | None, source: str, *, group_pattern: str | None = None) -> LabelIndex:
    """Read a labels CSV (or none) into a :class:`LabelIndex` for ``source`` (its matching
    rule there).

    Filenames that escape SOURCE (``..`` or absolute paths elsewhere) are refused; so are
    (exit 2) a column name that appears twice once trimmed or is one of
    :func:`reserved_columns`, and two rows for one file that disagree. Identical repeated rows are used once, with one warning.
    """
    index = LabelIndex(source=source, group_pattern=compile_group_pattern(group_pattern))
    if csv is None:
        return index
    import io

    from .storage import Location

    try:
        loc = Location.of(csv)
        try:
            data = loc.read_bytes()  # on a store: read whole, through cough's retries
        except CoughError:
            if not loc.exists():
                raise FileNotFoundError(csv) from None
            raise
        # no header row: pandas would rename a repeated column silently
        raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""], header=None)
    except CoughError:
        raise
    except FileNotFoundError:
        raise CoughError(f"labels CSV {csv} does not exist") from None
    except Exception as exc:
        raise CoughError(f"cannot read labels CSV {csv}: {exc}") from None
    header = [f"Unnamed: {i}" if pd.isna(c) else str(c).strip() for i, c in enumerate(raw.iloc[0])]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise UsageError(f"labels CSV {csv}: column(s) {', '.join(map(repr, repeated))} appear more than once "
                         "(names are trimmed of spaces), so which one holds the values is ambiguous; keep one")
    if "group" in header and "participant" in header:
        raise UsageError(f"labels CSV {csv} has both 'participant' and 'group' (the name cough 0.1 used for it); "
                         "keep one")
    header = ["participant" if c == "group" else c for c in header]  # cough 0.1's name for it
    table = raw.iloc[1:].set_axis(header, axis=1)
    missing = {"filename", "label"} - set(table.columns)
    if missing:
        raise CoughError(f"labels CSV {csv} lacks column(s) {sorted(missing)}; it needs filename,label[,participant,...]")
    clash = [c for c in table.columns if c in reserved_columns()]
    if clash:
        raise UsageError(f"labels CSV {csv}: column(s) {', '.join(map(repr, clash))} would clash with the column(s) "
                         "of that name in the tables cough writes (recordings, images, PRED); rename them")
    index.metadata_columns = [c for c in table.columns if c not in INPUT_COLUMNS]
    root = PurePosixPath(_strip_scheme(source))
    first_line: dict = {}
    repeats: list = []
    for line, rec in enumerate(table.to_dict("records"), start=2):
        rec = {k: None if isinstance(v, float) and v != v else v for k, v in rec.items()}  # an empty cell: None, not NaN
        name = str(rec["filename"]).strip()
        candidate = PurePosixPath(name) if name.startswith("/") else root / name
        resolved = PurePosixPath(os.path.normpath(str(candidate)))
        if root != resolved and root not in resolved.parents:
            raise CoughError(f"labels CSV {csv} line {line}: filename {name!r} points outside SOURCE; "
                             "give paths relative to SOURCE")
        try:
            rec["label"] = parse_label(rec["label"])
        except ValueError as exc:
            raise CoughError(f"labels CSV {csv} line {line}: {exc}") from None
        rec["participant"] = rec.get("participant") if isinstance(rec.get("participant"), str) else None
        for column in SPAN_COLUMNS:
            rec[column] = _seconds(rec.get(column), csv=csv, line=line, column=column)
        rel = str(resolved.relative_to(root)) if resolved != root else name
        if rel in index.by_relpath:
            _same_row(csv, rel, index.by_relpath[rel], rec, first_line[rel], line)
            repeats.append((rel, first_line[rel], line))
            continue
        first_line[rel] = line
        index.by_relpath[rel] = rec
        index.paths_only |= "/" in rel
    if repeats:
        rel, first, again = repeats[0]
        log.warning("labels CSV %s: %d row(s) repeat an earlier row for the same file (first: %r on lines %d and "
                    "%d); each file's row is used once", csv, len(repeats), rel, first, again)
    return index


def _seconds(value, *, csv: str, line: int, column: str) -> float | None:
    """A span column's cell as seconds (None when empty); anything but a finite number >= 0
    is an error naming the cell."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds < float("inf"):
        raise CoughError(f"labels CSV {csv} line {line}: {column} {value!r} is not a number of seconds >= 0")
    return seconds


def _differ(a: dict, b: dict) -> list[str]:
    """Columns (besides ``filename``) where two rows of a labels CSV disagree."""
    return [c for c in a if c != "filename" and not (pd.isna(a[c]) and pd.isna(b[c])) and a[c] != b[c]]


def _same_row(csv: str, rel: str, first: dict, again: dict, first_line: int, line: int) -> None:
    """Two rows for one file must agree; which one would win is not for us to guess."""
    differ = _differ(first, again)
    if not differ:
        return
    shown = {1: "positive", 0: "negative", None: "no label"}
    column = "label" if "label" in differ else differ[0]
    say = (lambda row: shown[row["label"]]) if column == "label" else (lambda row: repr(row[column]))
    raise UsageError(f"labels CSV {csv}: {rel!r} has {column} {say(first)} on line {first_line} and {say(again)} "
                     f"on line {line}; keep one row per file")


def ambiguous_names(name_hits: dict[str, int], csv: str | None) -> None:
    """A UsageError when a labels CSV of bare file names (``name_hits``: CSV name -> files of
    SOURCE it matched) names files that several folders hold: which file a row means is then a
    guess, and a wrong guess labels another person's recording."""
    shared = sorted((name, n) for name, n in name_hits.items() if n > 1)
    if shared:
        name, n = shared[0]
        raise UsageError(f"labels CSV {csv} names files by their file name, and {len(shared)} of those names belong to "
                         f"several files of SOURCE (e.g. {name!r}, {n} files): give their paths relative to SOURCE "
                         "in its filename column (a CSV with paths matches by path only)")
