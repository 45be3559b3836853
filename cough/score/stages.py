"""The two Ray Data stages of the score job (cough/score/job.py maps them over tonight's rows):

1. :func:`prepare_recordings` (raw archive) or :func:`prepare_shards` (an OUT of
   ``cough featurize``): Ray tasks that hash each file, skip what this model version has
   already scored, and featurize the rest with :func:`cough.audio.recording.process`, the one
   featurizing code path. Output: one row per recording with its window images.
2. :class:`Predictor`: a Ray actor that loads the model once and predicts batches of
   windows, then aggregates them per recording (:func:`cough.model.inference.aggregate_windows`).

PRED, the Delta table the driver commits each run's rows to, is cough/tables/pred.py's concern.
See docs/score.md.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..audio.features import FeaturizerParams
from ..tables.scored import Scored, ScoredBuckets
from ..audio.quality import NO_GATE, QualityGate
from ..tables.schema import INFO_COLUMNS, current_names, pred_schema, prepared_schema
from ..tables.storage import Location

log = logging.getLogger("cough.score")


# ------------------------------------------------------------------------- stage 1

def _skipped(row: dict, rid: str | None) -> dict:
    """A row for a file whose content this model version scored already (under another path,
    or in an earlier run): read and hashed, not decoded, not written to PRED."""
    return {"recording_id": rid, "path": row["path"], "status": "skipped", "n_windows": 0,
            "file_size": row.get("file_size"), "file_mtime_ns": row.get("file_mtime_ns")}


def _gated(row: dict, gate: QualityGate) -> dict:
    """``row`` as a ``rejected`` row when the gate refuses its recording (its windows are
    dropped: the model never sees it); unchanged otherwise."""
    reason = gate.reason(row) if row["status"] == "ok" else None
    if reason is None:
        return row
    return {**row, "status": "rejected", "error": reason, "images": None, "n_windows": 0,
            "window_start_s": None, "window_end_s": None}


def _events(events) -> list[dict]:
    """A recording's cough events ``(n, 3)`` (start_s, end_s, cough_probability) as PRED's ``events`` entries."""
    return [{"start_s": float(a), "end_s": float(b), "cough_probability": float(p)} for a, b, p in events]


def prepare_recordings(batch: pa.Table, *, params: FeaturizerParams, min_cough_probability: float,
                       scored: Scored | ScoredBuckets,
                       metadata_columns: list[str], gate: QualityGate = NO_GATE) -> pa.Table:
    """Ray Data ``map_batches`` function over a raw archive (the listing's columns): hash each
    file, mark what ``scored`` holds as ``skipped`` without decoding it, featurize the rest
    exactly as ``cough featurize`` does (a recording without a cough, by the same rule and
    ``min_cough_probability``, is ``rejected``), and reject what ``gate`` refuses."""
    from ..audio.decode import RECORDING_BUDGET
    from ..errors import RecordingError
    from ..tables.listing import Entry
    from ..audio.recording import process, recording_id

    info_cols = [*INFO_COLUMNS, *metadata_columns]
    records = batch.to_pylist()
    datas, ids, entries = [], [], []
    for rec in records:
        entry = Entry.from_dict(rec)
        try:
            data = entry.read(max_bytes=RECORDING_BUDGET)
        except RecordingError as exc:  # read once: its row says why (a store's failure was retried already)
            data, entry = None, Entry(entry.path, str(exc), None, entry.file_size, entry.file_mtime_ns)
        datas.append(data)
        entries.append(entry)
        ids.append(recording_id(data) if data is not None else None)
    known = scored.has(ids, [rec["path"] for rec in records])
    rows = []
    for rec, entry, data, rid, seen in zip(records, entries, datas, ids, known):
        if seen:
            rows.append(_skipped(rec, rid))
            continue
        done = process(entry, {c: rec.get(c) for c in info_cols}, params=params,
                       min_cough_probability=min_cough_probability, data=data)
        w = done.windows
        rows.append(_gated({**done.row, "images": None if w is None else w.images,
                            "window_start_s": None if w is None else w.start_s.tolist(),
                            "window_end_s": None if w is None else w.end_s.tolist(), "events": _events(done.events),
                            "file_size": rec.get("file_size"), "file_mtime_ns": rec.get("file_mtime_ns")}, gate))
    return _prepared(rows, metadata_columns)


def _prepared(rows: list[dict], metadata_columns: list[str]) -> pa.Table:
    """Stage 1's table from rows whose ``images`` are arrays (or None): the recordings
    columns, and every row's images packed into one buffer (cough.score.windowpack)."""
    from .windowpack import pack

    schema = prepared_schema(metadata_columns)
    images = pack([r.pop("images", None) for r in rows])
    plain = pa.Table.from_pylist(rows, schema=schema.remove(schema.get_field_index("images")))
    return plain.append_column(schema.field("images"), images).select(schema.names)


def prepare_shards(batch: pa.Table, *, recordings: Location, images: Location, events: Location | None,
                   scored: Scored | ScoredBuckets,
                   metadata_columns: list[str], gate: QualityGate = NO_GATE) -> pa.Table:
    """Ray Data ``map_batches`` function over an OUT of ``cough featurize`` (column ``shard``;
    ``recordings``, ``images`` and ``events``: the OUT's table folders, ``events`` None in an
    OUT made before the detector): read each shard's recordings and the images and cough
    events of those not yet scored (no decoding), and reject what ``gate`` refuses."""
    from ..tables.storage import retry

    out = [prepared_schema(metadata_columns).empty_table()]
    for shard in batch.column("shard").to_pylist():
        read = functools.partial(_prepare_shard, shard, recordings=recordings, images=images, events=events,
                                 scored=scored, metadata_columns=metadata_columns, gate=gate)
        out.append(retry(read, what=f"read the shard {shard} of {recordings.uri}", where=recordings))
    return pa.concat_tables(out)


def _prepare_shard(shard: str, *, recordings: Location, images: Location, events: Location | None,
                   scored: Scored | ScoredBuckets,
                   metadata_columns: list[str], gate: QualityGate) -> pa.Table:
    """:func:`prepare_shards` of one shard."""
    recs = current_names(pq.read_table(recordings.join(shard).path, filesystem=recordings.fs)).to_pylist()
    skip = scored.has([r["recording_id"] for r in recs], [r["path"] for r in recs])
    todo = [r for r, s in zip(recs, skip) if not s]
    windows: dict[str, list] = {}
    times: dict[str, list] = {}
    found: dict[str, list] = {}
    wanted = sorted({r["path"] for r in todo if r["status"] == "ok"})
    if wanted:
        from ..tables.schema import stored_names, to_numpy

        stored = pq.read_schema(images.join(shard).path, filesystem=images.fs).names
        columns = stored_names(["path", "window_index", "image"], stored) + \
            [c for c in ("start_s", "end_s") if c in stored]  # window times: OUTs made since the detector
        imgs = pq.read_table(images.join(shard).path, filesystem=images.fs, filters=[("path", "in", wanted)],
                             columns=columns)
        imgs = current_names(imgs).sort_by([("path", "ascending"), ("window_index", "ascending")])
        arrays = to_numpy(imgs["image"])
        spans = zip(*(imgs[c].to_pylist() for c in ("start_s", "end_s"))) if "start_s" in imgs.column_names \
            else ((None, None) for _ in range(imgs.num_rows))
        for i, (path, span) in enumerate(zip(imgs["path"].to_pylist(), spans)):
            windows.setdefault(path, []).append(arrays[i])
            times.setdefault(path, []).append(span)
    if events is not None and todo:
        for e in pq.read_table(events.join(shard).path, filesystem=events.fs,
                               filters=[("path", "in", sorted({r["path"] for r in todo}))]).to_pylist():
            found.setdefault(e["path"], []).append((e["start_s"], e["end_s"], e["cough_probability"]))
    rows = [_skipped(r, r["recording_id"]) for r, s in zip(recs, skip) if s]
    for r in todo:
        stack = windows.get(r["path"])
        starts, ends = zip(*times[r["path"]]) if r["path"] in times else (None, None)
        rows.append(_gated({**r, "images": np.stack(stack) if stack else None,
                            "window_start_s": list(starts) if starts else None,
                            "window_end_s": list(ends) if ends else None,
                            "events": _events(found.get(r["path"], []))}, gate))
    return _prepared(rows, metadata_columns)


# ------------------------------------------------------------------------- stage 2

class Predictor:
    """Ray Data actor: loads MODEL once, predicts every window of a batch of recordings in
    chunks, and turns stage 1's rows into PRED rows.

    >>> ds.map_batches(Predictor, fn_constructor_kwargs={"model_dir": "out/model",  # doctest: +SKIP
    ...     "run_id": "r1", "metadata_columns": []}, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2))
    """

    def __init__(self, model_dir: str, *, run_id: str, metadata_columns: list[str], threads: int = 1):
        from ..model.networks import tensorflow
        from ..model.store import load_model, read_model_info
        from ..runtime import set_tensorflow_env

        # oneDNN kernels double TensorFlow's CPU inference speed. Takes effect when TF is not
        # loaded yet in this process, as in a fresh actor.
        set_tensorflow_env(onednn=True)
        tensorflow(threads)
        self.info = read_model_info(model_dir)
        self.model, _ = load_model(model_dir)
        self.run_id = run_id
        self.schema = pred_schema(metadata_columns)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ..model.inference import aggregate_windows, predict_windows
        from .windowpack import unpack

        rows = batch.drop_columns(["images"]).to_pylist()
        images, counts = unpack(batch.column("images"), self.info.params.image_size)
        probs = predict_windows(self.model, images)
        now = dt.datetime.now(dt.timezone.utc)
        common = {"model_version": self.info.version, "featurizer_version": self.info.featurizer_version,
                  "run_id": self.run_id, "scored_at": now}
        start = 0
        for row, count in zip(rows, counts):
            if row["status"] != "ok":
                continue
            window_scores = probs[start:start + count].astype(np.float32)
            start += count
            score = aggregate_windows(window_scores)
            starts, ends = row["window_start_s"] or [None] * count, row["window_end_s"] or [None] * count
            row.update(score=score, predicted=int(score >= self.info.threshold),
                       window_scores=window_scores.tolist(), n_windows=int(count),
                       windows=[{"start_s": a, "end_s": b, "score": float(p)}
                                for a, b, p in zip(starts, ends, window_scores)])
        for r in rows:
            r.update(common)
        return pa.Table.from_pylist(rows, schema=self.schema)
