"""Scoring recordings with a MODEL and keeping PRED, the predictions table, exactly-once.

The ``score`` job maps two stages over the archive (see jobs/score.py):

1. :func:`prepare_recordings` (raw archive) or :func:`prepare_shards` (an OUT of
   ``cough featurize``): Ray tasks that hash each file, skip what this model version has
   already scored, and featurize the rest with :func:`cough.recording.process`, the one
   featurizing code path. Output: one row per recording with its window images.
2. :class:`Predictor`: a Ray actor that loads the model once and predicts batches of
   windows, then aggregates them per recording (:func:`cough.model.aggregate_windows`).

PRED on disk::

    PRED/run-<run_id>/part-00000.parquet   committed predictions, one folder per run
    PRED/_runs/<run_id>.json               the commit record of each run
    PRED/_lock                             held while a run is going (pid, host, time)
    PRED/.staging-<run_id>/                a run being written (invisible to readers)

``pyarrow.parquet.read_table(PRED)`` reads every committed prediction: pyarrow skips
names starting with ``_`` or ``.``. A run writes its part files into its staging
folder; it commits by writing its record, then renaming the folder into place. A run
that died before its record is discarded by the next run; one that died after it is
completed by the next run (:func:`recover`). See docs/score.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import CoughError
from .features import FeaturizerParams
from .quality import NO_GATE, QUALITY_COLUMNS, QualityGate
from .schema import RECORDING_FIELDS, recordings_schema
from .storage import join, read_json, resolve, write_json

log = logging.getLogger("cough.score")

LOCK_FILE = "_lock"
RUNS_DIR = "_runs"
RUN_PREFIX = "run-"
STAGING_PREFIX = ".staging-"
#: Columns of stage 1's rows besides metadata; ``images`` holds the windows' uint8 bytes.
INFO_COLUMNS = ("label", "group")


# ---------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class ModelInfo:
    """What scoring needs to know about a MODEL, read from its ``model.json``."""

    model_dir: str
    version: str
    params: FeaturizerParams
    threshold: float

    @property
    def featurizer_version(self) -> str:
        return self.params.version


def read_model_info(model_dir: str) -> ModelInfo:
    """Check a MODEL without loading TensorFlow; a :class:`CoughError` says what is wrong.

    >>> info = read_model_info("out/demo/model")   # doctest: +SKIP
    >>> info.threshold, info.featurizer_version    # doctest: +SKIP
    (0.5, '3f1c...')
    """
    from .model import CLASS_NAMES, META_FILE, WEIGHTS_FILE, read_meta
    from .storage import open_input

    meta = read_meta(model_dir)
    try:
        params = FeaturizerParams.from_dict(meta["featurizer"])
        info = ModelInfo(model_dir=model_dir, version=str(meta["version"]), params=params,
                         threshold=float(meta["threshold"]))
        if "arch" not in meta:  # read_meta checked it when present; the actors rebuild the network by it
            raise KeyError("arch")
        recorded = meta["featurizer_version"]
        if list(meta["class_names"]) != CLASS_NAMES:
            raise ValueError(f"class_names {meta['class_names']} are not {CLASS_NAMES}")
    except Exception as exc:
        raise CoughError(f"MODEL {model_dir}: {META_FILE} is unreadable or incomplete "
                         f"({type(exc).__name__}: {exc})") from None
    if recorded != params.version:
        raise CoughError(f"MODEL {model_dir} was made for featurizer version {recorded}, but its parameters "
                         f"give {params.version} with this cough: retrain the model with this version")
    weights = join(model_dir, WEIGHTS_FILE)
    try:
        with open_input(weights) as f:
            magic = f.read(8)
    except (OSError, CoughError):
        raise CoughError(f"MODEL {model_dir} has no readable {WEIGHTS_FILE}") from None
    if magic != b"\x89HDF\r\n\x1a\n":
        raise CoughError(f"MODEL {model_dir}: {WEIGHTS_FILE} is not an HDF5 weights file (corrupt?)")
    return info


# ------------------------------------------------------------------------- the tables

def prepared_schema(metadata_columns: list[str]) -> pa.Schema:
    """Stage 1's rows: a ``recordings`` row and its window images (``n_windows`` × S×S×3 uint8 bytes)."""
    return recordings_schema(metadata_columns).append(pa.field("images", pa.large_binary()))


def pred_schema(metadata_columns: list[str]) -> pa.Schema:
    """PRED's rows, one per input file: the ``recordings`` columns (so reports can check
    sample rate, channels, duration and format for shortcuts) plus the scores.
    ``predicted`` and ``label``: 1 positive, 0 negative."""
    recording = {f.name: f for f in RECORDING_FIELDS}
    return pa.schema([
        *(recording[c] for c in ("recording_id", "path", "status", "error")),
        pa.field("score", pa.float64()),
        pa.field("predicted", pa.int8()),
        recording["n_windows"],
        pa.field("window_scores", pa.list_(pa.float32())),
        pa.field("model_version", pa.string()),
        pa.field("featurizer_version", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        *(recording[c] for c in ("label", "group", "duration_s", "sample_rate", "channels", "format",
                                 *QUALITY_COLUMNS)),
        *[pa.field(c, pa.string()) for c in metadata_columns],
    ])


# ----------------------------------------------------------- what was already scored

@dataclass(frozen=True)
class Scored:
    """Keys this model version already scored: sorted ``recording_id`` bytes, plus the paths
    of files that could not even be read (they have no ``recording_id``)."""

    ids: np.ndarray
    unreadable: frozenset

    def has_ids(self, ids: list[str]) -> np.ndarray:
        keys = np.array([i.encode() for i in ids], dtype="S32")
        if len(self.ids) == 0 or len(keys) == 0:
            return np.zeros(len(keys), bool)
        pos = np.minimum(np.searchsorted(self.ids, keys), len(self.ids) - 1)
        return self.ids[pos] == keys


NOTHING_SCORED = Scored(np.zeros(0, "S32"), frozenset())


def _scored(scored) -> Scored:
    """``scored`` itself, or the :class:`Scored` behind a Ray object reference (shared by
    every task on a node instead of being copied into each)."""
    if isinstance(scored, Scored):
        return scored
    import ray

    return ray.get(scored)


def scored_keys(pred: str, model_version: str) -> Scored:
    """What ``model_version`` has scored in PRED's committed runs (streams the two columns)."""
    import pyarrow.dataset as pads

    fs, root = resolve(pred)
    runs = [r["run_id"] for r in committed_runs(pred) if r["model_version"] == model_version]
    files = [i.path for r in runs
             for i in fs.get_file_info(pafs.FileSelector(f"{root}/{RUN_PREFIX}{r}", allow_not_found=True))
             if i.base_name.endswith(".parquet") and not i.base_name.startswith((".", "_"))]
    if not files:
        return NOTHING_SCORED
    data = pads.dataset(files, filesystem=fs, format="parquet")
    ids, unreadable = [], set()
    for batch in data.to_batches(columns=["recording_id", "path"]):
        rid = batch.column("recording_id")
        ok = rid.is_valid()
        ids.append(np.array(rid.filter(ok).to_pylist(), dtype="S32"))
        unreadable.update(batch.column("path").filter(pc.invert(ok)).to_pylist())
    return Scored(np.unique(np.concatenate(ids)), frozenset(unreadable))


# ------------------------------------------------------------------------- stage 1

def _skipped(path: str, rid: str | None) -> dict:
    return {"recording_id": rid, "path": path, "status": "skipped", "n_windows": 0}


def _gated(row: dict, gate: QualityGate) -> dict:
    """``row`` as a ``rejected`` row when the gate refuses its recording (its windows are
    dropped: the model never sees it); unchanged otherwise."""
    reason = gate.reason(row) if row["status"] == "ok" else None
    if reason is None:
        return row
    return {**row, "status": "rejected", "error": reason, "images": None, "n_windows": 0}


def prepare_recordings(batch: pa.Table, *, params: FeaturizerParams, scored,
                       metadata_columns: list[str], gate: QualityGate = NO_GATE) -> pa.Table:
    """Ray Data ``map_batches`` function over a raw archive (columns path, problem, open_as,
    label, group, metadata): hash each file, mark what ``scored`` holds as ``skipped`` without decoding
    it, featurize the rest exactly as ``cough featurize`` does, and reject what ``gate``
    refuses."""
    from .audio import RECORDING_BUDGET
    from .errors import RecordingError
    from .listing import Entry
    from .recording import process, recording_id

    info_cols = [*INFO_COLUMNS, *metadata_columns]
    scored = _scored(scored)
    records = batch.to_pylist()
    datas, ids = [], []
    for rec in records:
        try:
            data = Entry.from_dict(rec).read(max_bytes=RECORDING_BUDGET)
        except RecordingError:
            data = None
        datas.append(data)
        ids.append(recording_id(data) if data is not None else None)
    known = scored.has_ids([i or "" for i in ids])
    rows = []
    for rec, data, rid, seen in zip(records, datas, ids, known):
        if (rid is not None and seen) or (rid is None and rec["path"] in scored.unreadable):
            rows.append(_skipped(rec["path"], rid))
            continue
        done = process(Entry.from_dict(rec), {c: rec.get(c) for c in info_cols}, params=params, data=data)
        rows.append(_gated({**done.row, "images": done.images if done.row["status"] == "ok" else None}, gate))
    return _prepared(rows, metadata_columns)


def _prepared(rows: list[dict], metadata_columns: list[str]) -> pa.Table:
    """Stage 1's table from rows whose ``images`` are arrays (or None): the recordings
    columns, and every row's images packed into one buffer (cough.windowpack)."""
    from .windowpack import pack

    schema = prepared_schema(metadata_columns)
    images = pack([r.pop("images", None) for r in rows])
    plain = pa.Table.from_pylist(rows, schema=schema.remove(schema.get_field_index("images")))
    return plain.append_column(schema.field("images"), images).select(schema.names)


def prepare_shards(batch: pa.Table, *, features: str, scored,
                   metadata_columns: list[str], gate: QualityGate = NO_GATE) -> pa.Table:
    """Ray Data ``map_batches`` function over an OUT of ``cough featurize`` (column ``shard``):
    read each shard's recordings and the images of those not yet scored (no decoding), and
    reject what ``gate`` refuses."""
    scored = _scored(scored)
    fs, root = resolve(features)
    out = []
    for shard in batch.column("shard").to_pylist():
        recs = pq.read_table(f"{root}/recordings/{shard}", filesystem=fs).to_pylist()
        known = scored.has_ids([r["recording_id"] or "" for r in recs])
        skip = [(r["recording_id"] is not None and seen)
                or (r["recording_id"] is None and r["path"] in scored.unreadable) for r, seen in zip(recs, known)]
        todo = [r for r, s in zip(recs, skip) if not s]
        windows: dict[str, list] = {}
        wanted = sorted({r["path"] for r in todo if r["status"] == "ok"})
        if wanted:
            from .schema import to_numpy

            imgs = pq.read_table(f"{root}/images/{shard}", filesystem=fs,
                                 columns=["path", "window", "image"], filters=[("path", "in", wanted)])
            imgs = imgs.sort_by([("path", "ascending"), ("window", "ascending")])
            arrays = to_numpy(imgs["image"])
            for i, path in enumerate(imgs["path"].to_pylist()):
                windows.setdefault(path, []).append(arrays[i])
        rows = [_skipped(r["path"], r["recording_id"]) for r, s in zip(recs, skip) if s]
        for r in todo:
            images = windows.get(r["path"])
            rows.append(_gated({**r, "images": np.stack(images) if images else None}, gate))
        out.append(_prepared(rows, metadata_columns))
    return pa.concat_tables(out) if out else prepared_schema(metadata_columns).empty_table()


# ------------------------------------------------------------------------- stage 2

class Predictor:
    """Ray Data actor: loads MODEL once, predicts every window of a batch of recordings in
    chunks, and turns stage 1's rows into PRED rows.

    >>> ds.map_batches(Predictor, fn_constructor_kwargs={"model_dir": "out/model",  # doctest: +SKIP
    ...     "run_id": "r1", "metadata_columns": []}, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2))
    """

    def __init__(self, model_dir: str, *, run_id: str, metadata_columns: list[str], threads: int = 1):
        from .model import load_model, tensorflow

        # oneDNN kernels double TensorFlow's CPU inference speed; the workers' default turns
        # them off (bit-reproducible training). Takes effect when TF is not loaded yet in this
        # process, as in a fresh actor.
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
        tensorflow(threads)
        self.info = read_model_info(model_dir)
        self.model, _ = load_model(model_dir)
        self.run_id = run_id
        self.schema = pred_schema(metadata_columns)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .model import aggregate_windows, predict_windows
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
            row.update(score=score, predicted=int(score >= self.info.threshold),
                       window_scores=window_scores.tolist(), n_windows=int(count))
        for r in rows:
            r.update(common)
        return pa.Table.from_pylist(rows, schema=self.schema)


# ------------------------------------------------------------------- PRED on disk

def _local(fs) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def pred_lock(pred: str) -> Iterator[None]:
    """Hold ``PRED/_lock`` for the block: a second run on PRED is refused with a clear
    message. A lock left by a killed run on this host (its pid is gone) is taken over.

    On local filesystems the lock is created with O_EXCL (atomic); on object stores it
    is a best-effort check-then-write (see docs/score.md).
    """
    fs, root = resolve(pred)
    created = fs.get_file_info(root).type == pafs.FileType.NotFound
    try:
        fs.create_dir(root, recursive=True)
    except OSError as exc:
        raise CoughError(f"cannot write PRED {pred}: {exc.strerror or exc}") from None
    lock = f"{root}/{LOCK_FILE}"
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    for attempt in range(2):
        if _try_create(fs, lock, json.dumps(holder).encode()):
            break
        other = _read_lock(fs, lock)
        stale = other.get("host") == holder["host"] and isinstance(other.get("pid"), int) \
            and not _alive(other["pid"])
        if not stale or attempt:
            raise CoughError(
                f"PRED {pred} is in use by another `cough score` (pid {other.get('pid')} on "
                f"{other.get('host')} since {other.get('started_at')}); wait for it to finish, "
                f"or delete {join(pred, LOCK_FILE)} if that run is gone")
        log.warning("taking over a stale lock on %s left by pid %s", pred, other.get("pid"))
        fs.delete_file(lock)
    try:
        yield
    finally:
        fs.delete_file(lock)
        if created and not fs.get_file_info(pafs.FileSelector(root)):
            fs.delete_dir(root)


def _try_create(fs, path: str, content: bytes) -> bool:
    if _local(fs):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        return True
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        return False
    with fs.open_output_stream(path) as f:
        f.write(content)
    return True


def _read_lock(fs, path: str) -> dict:
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except Exception:  # being written, or garbage: treat as held by an unknown run
        return {}


def new_run_id() -> str:
    """Sortable and unique: ``20260101T020000Z-1a2b3c``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def committed_runs(pred: str) -> list[dict]:
    """Commit records of PRED, oldest first."""
    fs, root = resolve(pred)
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/{RUNS_DIR}", allow_not_found=True))
    records = [read_json(join(pred, RUNS_DIR, i.base_name)) for i in infos
               if i.base_name.endswith(".json") and i.type == pafs.FileType.File]
    return sorted(records, key=lambda r: r["run_id"])


def recover(pred: str) -> dict:
    """Bring PRED to a committed state after a crash; call it holding the lock.

    A staging folder with a commit record is renamed into place (the run had committed);
    one without is deleted (the run died before committing: its recordings were not
    scored). Runs that a committed ``--rescore`` run supersedes are deleted.
    """
    fs, root = resolve(pred)
    runs = {r["run_id"]: r for r in committed_runs(pred)}
    done = {"completed": 0, "discarded": 0, "superseded": 0}
    for entry in fs.get_file_info(pafs.FileSelector(root)):
        if entry.type == pafs.FileType.Directory and entry.base_name.startswith(STAGING_PREFIX):
            run_id = entry.base_name[len(STAGING_PREFIX):]
            if run_id in runs:
                fs.move(entry.path, f"{root}/{RUN_PREFIX}{run_id}")
                done["completed"] += 1
            else:
                fs.delete_dir(entry.path)
                done["discarded"] += 1
    for record in runs.values():
        for old in record.get("supersedes", []):
            if old in runs or fs.get_file_info(f"{root}/{RUN_PREFIX}{old}").type != pafs.FileType.NotFound:
                _drop_run(fs, root, old)
                done["superseded"] += 1
    if any(done.values()):
        log.info("recovered PRED %s: %s", pred, done)
    return done


def _drop_run(fs, root: str, run_id: str) -> None:
    part = f"{root}/{RUN_PREFIX}{run_id}"
    if fs.get_file_info(part).type != pafs.FileType.NotFound:
        fs.delete_dir(part)
    record = f"{root}/{RUNS_DIR}/{run_id}.json"
    if fs.get_file_info(record).type != pafs.FileType.NotFound:
        fs.delete_file(record)


class RunWriter:
    """Writes one run's rows as Parquet part files in its hidden staging folder, then
    commits them (:meth:`commit`). The folder is made on the first row: a run with
    nothing to write touches nothing."""

    def __init__(self, pred: str, run_id: str, schema: pa.Schema, *, rows_per_file: int = 50_000):
        self.fs, root = resolve(pred)
        self.pred, self.run_id, self.schema, self.rows_per_file = pred, run_id, schema, rows_per_file
        self.staging = f"{root}/{STAGING_PREFIX}{run_id}"
        self.root = root
        self.pending: list[pa.Table] = []
        self.buffered = self.rows = self.parts = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if not self.pending and self.parts == 0:
            self.fs.create_dir(self.staging, recursive=True)
        self.pending.append(table.select(self.schema.names).cast(self.schema))
        self.buffered += table.num_rows
        if self.buffered >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        name = f"part-{self.parts:05d}.parquet"
        tmp = f"{self.staging}/.{name}.tmp"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, f"{self.staging}/{name}")
        self.rows += table.num_rows
        self.parts += 1
        self.pending, self.buffered = [], 0

    def commit(self, record: dict, supersedes: list[str] = ()) -> bool:
        """Write the commit record, move the staging folder into place, drop superseded runs.
        Returns False (and writes nothing) when the run produced no rows."""
        self.flush()
        if self.parts == 0:
            return False
        record = {**record, "run_id": self.run_id, "rows": self.rows, "parts": self.parts,
                  "supersedes": list(supersedes),
                  "committed_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        self.fs.create_dir(f"{self.root}/{RUNS_DIR}", recursive=True)
        write_json(join(self.pred, RUNS_DIR, f"{self.run_id}.json"), record)  # the commit point
        self.fs.move(self.staging, f"{self.root}/{RUN_PREFIX}{self.run_id}")
        for old in supersedes:
            _drop_run(self.fs, self.root, old)
        return True

    def abort(self) -> None:
        self.pending = []
        if self.fs.get_file_info(self.staging).type != pafs.FileType.NotFound:
            self.fs.delete_dir(self.staging)
