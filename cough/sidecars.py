"""The labels job: a labels CSV built from what archives ship beside their recordings.

Crowdsourced archives keep labels and participants in sidecar files: a ``metadata.json`` in
each participant's folder, or COUGHVID's ``<id>.json`` beside each recording. ``cough
labels`` reads them (JSON objects, or CSV files of one row), maps one field to the label,
takes the participant from a field or from the folder, keeps every other field as metadata,
and writes the CSV that the other jobs take as ``--labels`` (file names as paths relative to
SOURCE, so they match by path: docs/featurize.md).

>>> labels_csv("archive/raw", "archive/labels.csv", LabelsSettings(sidecar="{stem}.json",
...            label_field="status", positive=("covid",), negative=("healthy",))).to_dict()   # doctest: +SKIP
{'files': 120, 'labelled': 112, 'positive': 40, 'negative': 72, 'unlabelled': 8, ...}
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .errors import CoughError, UsageError
from .tables.archive import EVERY_FILE, Selection
from .tables.labels import INPUT_COLUMNS, parse_label, relpath, reserved_columns

log = logging.getLogger("cough.labels")

#: A field whose name clashes with a column cough writes is kept under this prefix.
RENAMED_PREFIX = "sidecar_"
#: Unmapped label values a summary names (the commonest first).
SHOWN_VALUES = 10


@dataclass(frozen=True)
class LabelsSettings:
    """How to read the sidecars: the flags of ``cough labels``.

    ``sidecar``: a file name, looked up in each recording's folder and then the folders above
    it up to SOURCE (``metadata.json``: one per participant folder), or a pattern with
    ``{stem}`` or ``{name}`` (``{stem}.json``: one beside each recording). ``label_field``: the
    field holding the label; ``positive``/``negative``: its values meaning each class (case
    and spaces ignored; both empty: the usual spellings, positive/negative, 1/0, true/false).
    ``participant_field``: the field naming the participant (default: the folder the
    recording is in).

    >>> LabelsSettings(sidecar="meta.json", label_field="status", positive=("x",), negative=("x",))
    Traceback (most recent call last):
    ...
    cough.errors.UsageError: --positive and --negative share the value(s) 'x'
    """

    sidecar: str
    label_field: str
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    participant_field: str | None = None
    selection: Selection = EVERY_FILE

    def __post_init__(self):
        if not self.sidecar.strip() or self.sidecar.startswith("/") or ".." in PurePosixPath(self.sidecar).parts:
            raise UsageError(f"--sidecar {self.sidecar!r}: give a file name (metadata.json) or a pattern beside each "
                             "recording ({stem}.json)")
        if "/" in self.sidecar:
            raise UsageError(f"--sidecar {self.sidecar!r}: a name in the recording's folder, without '/'")
        positive, negative = ({v.strip().lower() for v in values} for values in (self.positive, self.negative))
        if positive & negative:
            raise UsageError(f"--positive and --negative share the value(s) {', '.join(map(repr, sorted(positive & negative)))}")
        if bool(positive) != bool(negative):
            raise UsageError("give both --positive and --negative, or neither (the usual spellings: "
                             "positive/negative, 1/0, true/false)")

    @property
    def per_file(self) -> bool:
        return "{stem}" in self.sidecar or "{name}" in self.sidecar

    def label(self, value) -> int | None:
        """1, 0, or None (not a label this mapping knows) for a sidecar's label value."""
        if value is None:
            return None
        if not self.positive:
            try:
                return parse_label(value)
            except ValueError:
                return None
        text = str(value).strip().lower()
        return 1 if text in {v.strip().lower() for v in self.positive} else \
            0 if text in {v.strip().lower() for v in self.negative} else None


@dataclass
class LabelsSummary:
    """What ``cough labels`` wrote: ``files`` recordings under SOURCE (besides ``excluded``), of
    which ``positive`` and ``negative`` are labelled, and the unlabelled ones by reason: no
    sidecar, a sidecar that cannot be read, no label field, a value no mapping names
    (``unmapped_values``: the commonest, with counts)."""

    files: int = 0
    excluded: int = 0
    positive: int = 0
    negative: int = 0
    no_sidecar: int = 0
    unreadable_sidecar: int = 0
    no_label_field: int = 0
    unmapped: int = 0
    unmapped_values: dict = field(default_factory=dict)
    participants: int = 0
    metadata_columns: list = field(default_factory=list)
    renamed_columns: dict = field(default_factory=dict)
    out: str = ""

    @property
    def labelled(self) -> int:
        return self.positive + self.negative

    def to_dict(self) -> dict:
        return {"files": self.files, "excluded": self.excluded, "labelled": self.labelled, "positive": self.positive,
                "negative": self.negative, "unlabelled": self.files - self.labelled, "no_sidecar": self.no_sidecar,
                "unreadable_sidecar": self.unreadable_sidecar, "no_label_field": self.no_label_field,
                "unmapped": self.unmapped, "unmapped_values": self.unmapped_values,
                "participants": self.participants, "metadata_columns": self.metadata_columns,
                "renamed_columns": self.renamed_columns, "out": self.out}


def read_sidecar(loc) -> dict:
    """A sidecar's fields: a JSON object, or a CSV of a header and one row; a CoughError saying
    why otherwise."""
    text = loc.read_bytes().decode("utf-8-sig")
    if loc.name.lower().endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        if len(rows) != 1:
            raise CoughError(f"{loc.uri} holds {len(rows)} rows; a sidecar CSV holds one")
        return rows[0]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CoughError(f"{loc.uri} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise CoughError(f"{loc.uri} holds a JSON {type(data).__name__}, not an object")
    return data


def _text(value) -> str | None:
    """A field's value as CSV text: scalars as they are, lists and objects as JSON."""
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def labels_csv(source: str, out: str, settings: LabelsSettings) -> LabelsSummary:
    """Write the labels CSV of the recordings under ``source`` to ``out`` (a new file) from
    their sidecars as ``settings`` say; returns what it mapped and what it left unlabelled."""
    from .tables.archive import listing_table
    from .tables.labels import load_labels
    from .tables.storage import Location

    source_loc, out_loc = Location.of(source), Location.of(out)
    if not source_loc.exists():
        raise CoughError(f"SOURCE {source_loc.uri} does not exist")
    if out_loc.exists():
        raise UsageError(f"--out {out_loc.uri} exists; cough labels writes a new file (give another path, or delete "
                         "it if it is an earlier output)")
    listing = listing_table(source_loc.uri, load_labels(None, source_loc.uri), selection=settings.selection)
    paths = listing.rows.column("path").to_pylist()
    summary = LabelsSummary(files=len(paths), excluded=listing.excluded, out=out_loc.uri)
    cache: dict[str, dict | Exception | None] = {}
    unmapped: Counter = Counter()
    rows = []
    for path in paths:
        rel = relpath(path, source_loc.uri)
        fields = _sidecar_fields(source_loc, rel, settings, cache)
        row = {"filename": rel, "label": None, "participant": None}
        if fields is None:
            summary.no_sidecar += 1
        elif isinstance(fields, Exception):
            summary.unreadable_sidecar += 1
        elif settings.label_field not in fields:
            summary.no_label_field += 1
        else:
            label = settings.label(fields[settings.label_field])
            if label is None:
                summary.unmapped += 1
                unmapped[str(fields[settings.label_field])] += 1
            else:
                row["label"] = "positive" if label else "negative"
                setattr(summary, "positive" if label else "negative", getattr(summary, "positive" if label else "negative") + 1)
        fields = fields if isinstance(fields, dict) else {}
        participant = fields.get(settings.participant_field) if settings.participant_field else None
        row["participant"] = _text(participant) if participant not in (None, "") else \
            (str(PurePosixPath(rel).parent) if "/" in rel else rel)
        row.update({k: _text(v) for k, v in fields.items() if k not in (settings.label_field, settings.participant_field)})
        rows.append(row)
    names = sorted({k for r in rows for k in r} - {"filename", "label", "participant"})
    reserved = reserved_columns() | set(INPUT_COLUMNS)
    summary.renamed_columns = {n: RENAMED_PREFIX + n for n in names if n in reserved}
    summary.metadata_columns = [summary.renamed_columns.get(n, n) for n in names]
    summary.unmapped_values = dict(unmapped.most_common(SHOWN_VALUES))
    summary.participants = len({r["participant"] for r in rows if r["label"] is not None})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["filename", "label", "participant", *summary.metadata_columns], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({summary.renamed_columns.get(k, k): v for k, v in r.items()})
    out_loc.write_bytes(buffer.getvalue().encode())  # one write: a local rename, or a single PUT
    for n, renamed in summary.renamed_columns.items():
        log.warning("sidecar field %r is a column name cough uses: written as %r", n, renamed)
    log.info("%d of %d recordings labelled (%d positive, %d negative); unlabelled: %d without a sidecar, %d with an "
             "unreadable one, %d without %r, %d with a value no mapping names%s", summary.labelled, summary.files,
             summary.positive, summary.negative, summary.no_sidecar, summary.unreadable_sidecar, summary.no_label_field,
             settings.label_field, summary.unmapped,
             f" ({', '.join(f'{v!r} {n}' for v, n in summary.unmapped_values.items())})" if unmapped else "")
    return summary


def _sidecar_fields(source, rel: str, settings: LabelsSettings, cache: dict):
    """The fields of the sidecar of the recording at ``rel``: a dict, None when it has none,
    or the error that made it unreadable (each sidecar is read once)."""
    parts = PurePosixPath(rel)
    if settings.per_file:
        candidates = [str(parts.parent / settings.sidecar.format(stem=parts.stem, name=parts.name))]
    else:  # the nearest in the recording's folder or the folders above it, up to SOURCE
        folders = [parts.parent, *parts.parent.parents]
        candidates = [str(PurePosixPath(f) / settings.sidecar) for f in folders]
    for candidate in candidates:
        candidate = candidate.removeprefix("./")
        if candidate not in cache:
            loc = source.join(*candidate.split("/"))
            try:
                cache[candidate] = read_sidecar(loc) if loc.is_file() else None
            except (CoughError, OSError, UnicodeDecodeError) as exc:
                log.warning("sidecar %s cannot be read: %s", loc.uri, exc)
                cache[candidate] = exc
        if cache[candidate] is not None:
            return cache[candidate]
    return None
