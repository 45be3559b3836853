"""score: predict every recording under SOURCE with MODEL into PRED, incrementally.

Driver: check MODEL, list SOURCE (a raw archive or an OUT of ``cough featurize``), take
PRED's lock, finish or discard what a crashed run left, then stream two Ray Data stages
(featurize with tasks, predict with an actor pool) into one new PRED partition that is
committed atomically. Recordings this model version already scored are skipped by
content hash; a run with nothing new writes nothing. See docs/score.md.
"""

from __future__ import annotations

import logging

from cough import __version__
from cough.errors import CoughError, UsageError
from cough.flags import integer, number
from cough.quality import NO_GATE, QualityGate
from cough.runtime import add_ray_arguments

HELP = "score recordings with a MODEL into PRED (Parquet), incrementally and crash-safe"
EXAMPLE = ("cough score data/sample/raw --model out/demo/model --out out/demo/pred "
           "--labels data/sample/labels.csv")
log = logging.getLogger("cough.score")


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="directory of recordings (searched recursively), URI, or an OUT of `cough featurize`")
    p.add_argument("--model", required=True, help="MODEL directory written by `cough train`")
    p.add_argument("--out", required=True, help="PRED directory (Parquet); created or extended")
    p.add_argument("--labels", help="CSV with filename,label[,group,...] (raw SOURCE only)")
    p.add_argument("--group-pattern", help="regex on the file stem; its first group is the participant")
    p.add_argument("--rescore", action="store_true",
                   help="score everything again and replace this model version's earlier predictions")
    gate = QualityGate()
    p.add_argument("--min-snr-db", type=number(), default=gate.min_snr_db,
                   help=f"quality gate: recordings whose cough events stand less than this above the background "
                        f"are rejected, not scored (default {gate.min_snr_db:g})")
    p.add_argument("--max-clipped-fraction", type=number(at_least=0, at_most=1), default=gate.max_clipped_fraction,
                   help=f"quality gate: share of clipped samples above which a recording is rejected "
                        f"(default {gate.max_clipped_fraction:g})")
    p.add_argument("--no-quality-gate", action="store_true",
                   help="score every decodable recording (quality values are still recorded)")
    p.add_argument("--batch-size", type=integer(at_least=1), default=32, help="recordings per featurizing task (default 32)")
    p.add_argument("--actors", type=integer(at_least=1),
                   help="most inference actors (default: one per 4 CPUs of the cluster, at least 1)")
    p.add_argument("--actor-cpus", type=number(above=0), default=1.0, help="CPUs reserved per inference actor (default 1)")
    p.add_argument("--actor-threads", type=integer(at_least=1, at_most=1024),
                   help="TensorFlow threads per inference actor (default: its reserved CPUs, at least 1)")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be read, skipped (already scored) and written, and stop "
                        "(no Ray, nothing written; reads every file to hash it)")
    add_ray_arguments(p)


def is_featurize_out(source: str) -> bool:
    from cough.storage import exists, is_dir, join

    return exists(join(source, "manifest.json")) and is_dir(join(source, "images"))


def plan(source: str, pred: str, info, *, labels=None, group_pattern=None, rescore: bool = False) -> dict:
    """What scoring ``source`` into ``pred`` with the model ``info`` would do: the files are
    hashed (as a run does) to count those this model version already scored."""
    import pyarrow.parquet as pq

    from cough.audio import RECORDING_BUDGET
    from cough.errors import RecordingError
    from cough.listing import Entry
    from cough.recording import recording_id
    from cough.score import NOTHING_SCORED, scored_keys
    from cough.storage import exists, join, resolve

    if is_featurize_out(source):
        fs, root = resolve(join(source, "recordings"))
        rows = pq.read_table(root, filesystem=fs, columns=["recording_id", "path"]).to_pylist()
        ids, paths = [r["recording_id"] for r in rows], [r["path"] for r in rows]
    else:
        from jobs.featurize import recordings_frame

        entries = recordings_frame(source, labels, group_pattern)[0].to_dict("records")
        paths, ids = [e["path"] for e in entries], []
        for entry in entries:  # read and hashed as a run does (cough.score.prepare_recordings)
            try:
                ids.append(recording_id(Entry.from_dict(entry).read(max_bytes=RECORDING_BUDGET)))
            except RecordingError:
                ids.append(None)
    scored = NOTHING_SCORED if rescore or not exists(pred) else scored_keys(pred, info.version)
    known = scored.has_ids([i or "" for i in ids])
    skip = sum(bool(k) if i else p in scored.unreadable for i, p, k in zip(ids, paths, known))
    return {"dry_run": True, "would_read": len(paths), "would_skip": int(skip), "would_score": len(paths) - int(skip),
            "model_version": info.version, "would_write": pred, "pred_exists": exists(pred)}


def _inputs(source: str, labels, group_pattern, model_info):
    """``(ray dataset of inputs, stage-1 function, its kwargs, n_inputs, metadata_columns)``."""
    import ray

    from cough.score import prepare_recordings, prepare_shards
    from cough.storage import join, read_json, resolve

    if is_featurize_out(source):
        manifest = read_json(join(source, "manifest.json"))
        if manifest.get("featurizer_version") != model_info.featurizer_version:
            raise CoughError(f"SOURCE {source} was featurized with featurizer version "
                             f"{manifest.get('featurizer_version')}, MODEL {model_info.model_dir} expects "
                             f"{model_info.featurizer_version}: score the raw archive instead, or re-featurize")
        import pyarrow.fs as pafs

        fs, root = resolve(source)
        shards = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{root}/recordings"))
                        if i.base_name.endswith(".parquet") and not i.base_name.startswith((".", "_")))
        ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(1, len(shards)))
        columns = manifest.get("metadata_columns", [])
        return ds, prepare_shards, {"features": source}, int(manifest["inputs"]), columns, 1

    from jobs.featurize import recordings_frame

    frame, columns = recordings_frame(source, labels, group_pattern)
    if frame.empty:
        raise CoughError(f"SOURCE {source} holds no recordings")
    return frame, prepare_recordings, {"params": model_info.params}, len(frame), columns, None


def score(source: str, model: str, pred: str, *, labels=None, group_pattern=None, rescore: bool = False,
          gate: QualityGate = QualityGate(), batch_size: int = 32, actors: int | None = None, actor_cpus: float = 1.0, actor_threads: int | None = None,
          rows_per_file: int = 50_000, address: str | None = None, num_cpus: int | None = None,
          dry_run: bool = False) -> dict:
    """Score SOURCE with MODEL into PRED; returns the run's counts.

    >>> score("data/sample/raw", "out/demo/model", "out/demo/pred")   # doctest: +SKIP
    {'inputs': 60, 'scored': 60, 'ok': 60, 'errors': 0, 'skipped': 0, ...}

    ``dry_run``: only :func:`plan`.
    """
    import pyarrow as pa
    import ray

    from cough.audio import TASK_MEMORY
    from cough.runtime import archive_dataset, cpus, init_ray
    from cough.score import (NOTHING_SCORED, Predictor, RunWriter, committed_runs, new_run_id,
                             pred_lock, pred_schema, read_model_info, recover, scored_keys)
    from cough.storage import exists

    if batch_size < 1 or (actors is not None and actors < 1) or actor_cpus <= 0:
        raise UsageError("--batch-size and --actors must be at least 1, --actor-cpus above 0")
    info = read_model_info(model)
    if not exists(source):
        raise CoughError(f"SOURCE {source} does not exist")
    if (labels or group_pattern) and is_featurize_out(source):
        raise UsageError("SOURCE is a featurize OUT whose labels and groups were attached when it was "
                         "made; drop --labels/--group-pattern")
    if dry_run:
        return plan(source, pred, info, labels=labels, group_pattern=group_pattern, rescore=rescore)
    ds, prepare, prepare_kwargs, n_inputs, metadata_columns, stage1_batch = _inputs(
        source, labels, group_pattern, info)
    init_ray(address, num_cpus=num_cpus)
    if stage1_batch is None:  # a raw archive: spread small ones over every CPU too
        ds, stage1_batch = archive_dataset(ds, batch_size)
    if cpus() < actor_cpus + 1:
        raise UsageError(f"score needs at least {actor_cpus + 1:g} CPUs (a featurizing task and an inference "
                         f"actor of {actor_cpus:g}); Ray has {cpus()}: lower --actor-cpus")
    actors = actors or max(1, cpus() // 4)

    with pred_lock(pred):
        recover(pred)
        scored = NOTHING_SCORED if rescore else scored_keys(pred, info.version)
        run_id = new_run_id()
        log.info("run %s: %d inputs from %s, model %s (%d recordings already scored)",
                 run_id, n_inputs, source, info.version, len(scored.ids))
        # The memory reservation sizes decoding (long recordings) and, being a remote
        # argument the actors lack, keeps Ray from fusing the two stages into one.
        stage1 = ds.map_batches(prepare, batch_size=stage1_batch, batch_format="pyarrow", num_cpus=1,
                                memory=TASK_MEMORY, fn_kwargs={**prepare_kwargs, "scored": ray.put(scored), "gate": gate,
                                                               "metadata_columns": metadata_columns})
        predictions = stage1.map_batches(
            Predictor, batch_size=None, batch_format="pyarrow", num_cpus=actor_cpus,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
            fn_constructor_kwargs={"model_dir": model, "run_id": run_id, "threads": actor_threads or max(1, int(actor_cpus)),
                                   "metadata_columns": metadata_columns})
        writer = RunWriter(pred, run_id, pred_schema(metadata_columns), rows_per_file=rows_per_file)
        counts = {"inputs": 0, "scored": 0, "ok": 0, "errors": 0, "rejected": 0, "skipped": 0}
        seen: set[int] = set()  # guards against a retried batch delivering a path twice
        try:
            for batch in predictions.iter_batches(batch_size=None, batch_format="pyarrow"):
                keep = [i for i, p in enumerate(batch.column("path").to_pylist()) if hash(p) not in seen]
                batch = batch.take(keep)
                seen.update(hash(p) for p in batch.column("path").to_pylist())
                status = batch.column("status").to_pylist()
                counts["inputs"] += len(status)
                counts["skipped"] += status.count("skipped")
                counts["ok"] += status.count("ok")
                counts["errors"] += status.count("error")
                counts["rejected"] += status.count("rejected")
                writer.add(batch.filter(pa.array([s != "skipped" for s in status])))
            counts["scored"] = counts["ok"] + counts["errors"] + counts["rejected"]
            if counts["inputs"] != n_inputs:
                raise CoughError(f"lost recordings: {n_inputs} listed, {counts['inputs']} came back")
        except BaseException as exc:
            writer.abort()
            clean = _job_error(exc)
            if clean is exc:
                raise
            raise clean from None
        supersedes = [r["run_id"] for r in committed_runs(pred) if r["model_version"] == info.version] \
            if rescore else []
        committed = writer.commit({"model_version": info.version, "featurizer_version": info.featurizer_version,
                                   "source": source, "model": model, "labels": labels, "rescore": rescore,
                                   "quality_gate": gate.to_dict(),
                                   "metadata_columns": metadata_columns, "cough_version": __version__,
                                   **counts}, supersedes)
    if counts["errors"]:
        log.warning("%d of %d scored recordings are errors; their reasons are in %s (status == 'error')",
                    counts["errors"], counts["scored"], pred)
    return {**counts, "run_id": run_id if committed else None, "pred": pred, "model_version": info.version}


def _job_error(exc: BaseException) -> BaseException:
    """A CoughError raised inside a Ray worker (e.g. a model that fails to load in the
    inference actors) as the plain one-line CoughError; anything else unchanged."""
    from ray.exceptions import RayError

    seen = exc
    while seen is not None:
        if isinstance(seen, CoughError) and not isinstance(seen, RayError):
            return CoughError(str(seen))
        seen = getattr(seen, "cause", None) or seen.__cause__
    # ActorDiedError keeps only the text of its creation task's error (traceback included)
    marker = f"{CoughError.__module__}.{CoughError.__name__}: "
    if isinstance(exc, RayError) and marker in str(exc):
        return CoughError(str(exc).rsplit(marker, 1)[1].splitlines()[0])
    return exc


def run(args) -> dict:
    return score(args.source, args.model, args.out, labels=args.labels, group_pattern=args.group_pattern,
                 rescore=args.rescore, batch_size=args.batch_size,
                 gate=NO_GATE if args.no_quality_gate else QualityGate(min_snr_db=args.min_snr_db,
                                                                     max_clipped_fraction=args.max_clipped_fraction), actors=args.actors,
                 actor_cpus=args.actor_cpus, actor_threads=args.actor_threads, address=args.address,
                 num_cpus=args.num_cpus, dry_run=args.dry_run)


if __name__ == "__main__":
    from cough.cli import run_module

    run_module("score")
