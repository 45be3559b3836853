"""Labels, groups (participants) and metadata for recordings.

A labels CSV has ``filename`` (basename or path relative to SOURCE) and ``label``;
``group`` is optional; every other column is carried through as metadata.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pandas as pd

from .errors import CoughError, UsageError

POSITIVE = {"positive", "pos", "1", "true", "yes", "covid", "covid-19"}
NEGATIVE = {"negative", "neg", "0", "false", "no", "healthy"}
#: Parent-folder names that give the label when there is no CSV (Keras flow_from_directory).
FOLDER_LABELS = {"pos": 1, "positive": 1, "neg": 0, "negative": 0}
RESERVED = {"recording_id", "path", "window", "label", "group", "image", "log_mel", "status",
            "error", "duration_s", "sample_rate", "channels", "n_windows", "format", "problem", "open_as"}


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


@dataclass
class LabelIndex:
    """Looks up label, group and metadata for a recording path under SOURCE."""

    source: str
    by_relpath: dict[str, dict] = field(default_factory=dict)
    by_name: dict[str, dict] = field(default_factory=dict)
    metadata_columns: list[str] = field(default_factory=list)
    group_pattern: re.Pattern | None = None

    def lookup(self, path: str) -> dict:
        """``{"label", "group", **metadata}`` for ``path`` (a path under SOURCE)."""
        rel = relpath(path, self.source)
        row = self.by_relpath.get(rel) or self.by_name.get(PurePosixPath(rel).name)
        meta = {c: None for c in self.metadata_columns}
        if row is not None:
            label, group = row["label"], row.get("group")
            meta.update({c: row.get(c) for c in self.metadata_columns})
        else:
            label, group = folder_label(rel), None
        if group is None:
            group = self.group_for(rel)
        return {"label": label, "group": group, **meta}

    def group_for(self, rel: str) -> str:
        stem = PurePosixPath(rel).stem
        if self.group_pattern is not None:
            match = self.group_pattern.search(stem)
            if match:
                return match.group(1) if match.groups() else match.group(0)
        return rel  # one group per file: the safest default for a split


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
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--group-pattern {pattern!r} is not a valid regular expression: {exc}") from None


def load_labels(csv: str | None, source: str, *, group_pattern: str | None = None) -> LabelIndex:
    """Read a labels CSV (or none) into a :class:`LabelIndex` for ``source``.

    Filenames that escape SOURCE (``..`` or absolute paths elsewhere) are refused.
    """
    index = LabelIndex(source=source, group_pattern=compile_group_pattern(group_pattern))
    if csv is None:
        return index
    from .storage import open_input

    try:
        with open_input(csv) as f:
            table = pd.read_csv(f, dtype=str, keep_default_na=False, na_values=[""])
    except CoughError:
        raise
    except Exception as exc:
        raise CoughError(f"cannot read labels CSV {csv}: {exc}") from None
    table.columns = [c.strip() for c in table.columns]
    missing = {"filename", "label"} - set(table.columns)
    if missing:
        raise CoughError(f"labels CSV {csv} lacks column(s) {sorted(missing)}; it needs filename,label[,group,...]")
    index.metadata_columns = [c for c in table.columns if c not in {"filename", "label", "group"} | RESERVED]
    root = PurePosixPath(_strip_scheme(source))
    for line, rec in enumerate(table.to_dict("records"), start=2):
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
        rec["group"] = rec.get("group") if isinstance(rec.get("group"), str) else None
        rel = str(resolved.relative_to(root)) if resolved != root else name
        index.by_relpath[rel] = rec
        index.by_name.setdefault(PurePosixPath(rel).name, rec)
    return index
