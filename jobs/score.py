"""score: predict every recording under SOURCE with MODEL into PRED, incrementally.

Driver: check MODEL and PRED (a Delta table this job owns), list SOURCE (a raw archive or
an OUT of ``cough featurize``), read what this model version already scored, then stream
two Ray Data stages (featurize with tasks, predict with an actor pool) and commit the run's
rows to PRED in one Delta commit (cough/pred.py). Recordings this model version already
scored are skipped by content hash; a run with nothing new writes nothing. See docs/score.md.
"""

from __future__ import annotations

import logging

from cough import __version__
from cough.errors import CoughError, UsageError
from cough.flags import integer, number
from cough.quality import NO_GATE, QualityGate
from cough.runtime import add_ray_arguments

HELP = "score recordings with a MODEL into PRED (a Delta Lake table), incrementally and crash-safe"
EXAMPLE = ("cough score data/sample/raw --model out/demo/model --out out/demo/pred "
           "--labels data/sample/labels.csv")
log = logging.getLogger("cough.score")


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="directory of recordings (searched recursively), URI, or an OUT of `cough featurize`")
    p.add_argument("--model", required=True, help="MODEL directory written by `cough train`")
    p.add_argument("--out", required=True,
                   help="PRED, a Delta Lake table: created when absent or empty, extended when it is an earlier "
                        "`cough score` output; anything else is refused")
    p.add_argument("--labels", help="CSV with filename,label[,participant,...] (raw SOURCE only)")
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


def plan(source, target, info, *, labels=None, group_pattern=None, rescore: bool = False) -> dict:
    """What scoring ``source`` into PRED ``target`` (a :class:`cough.pred.Pred`) with the model
    ``info`` would do: the files are hashed (as a run does) to count those this model version
    already scored."""
    import pyarrow.parquet as pq

    from cough.audio import RECORDING_BUDGET
    from cough.errors import RecordingError
    from cough.listing import Entry
    from cough.pred import NOTHING_SCORED, scored_keys
    from cough.recording import recording_id
    from cough.shards import is_out, read_out

    if is_out(source):
        recordings = read_out(source, what="SOURCE").recordings
        rows = pq.read_table(recordings.path, filesystem=recordings.fs, columns=["recording_id", "path"]).to_pylist()
        ids, paths = [r["recording_id"] for r in rows], [r["path"] for r in rows]
    else:
        from jobs.featurize import recordings_frame

        entries = recordings_frame(source.uri, labels, group_pattern)[0].to_dict("records")
        paths, ids = [e["path"] for e in entries], []
        for entry in entries:  # read and hashed as a run does (cough.score.prepare_recordings)
            try:
                ids.append(recording_id(Entry.from_dict(entry).read(max_bytes=RECORDING_BUDGET)))
            except RecordingError:
                ids.append(None)
    table = target.table()
    scored = NOTHING_SCORED if rescore else scored_keys(table, info.version)
    known = scored.has_ids([i or "" for i in ids])
    skip = sum(bool(k) if i else p in scored.unreadable for i, p, k in zip(ids, paths, known))
    return {"dry_run": True, "would_read": len(paths), "would_skip": int(skip), "would_score": len(paths) - int(skip),
            "model_version": info.version, "would_write": target.loc.uri, "pred_exists": table is not None}


def _inputs(source, labels, group_pattern, model_info):
    """``(ray dataset of inputs, stage-1 function, its kwargs, n_inputs, metadata_columns)``."""
    import ray

    from cough.score import prepare_recordings, prepare_shards
    from cough.shards import is_out, read_out, shard_names

    if is_out(source):
        out = read_out(source, what="SOURCE")
        manifest = out.manifest
        if manifest.get("featurizer_version") != model_info.featurizer_version:
            raise CoughError(f"SOURCE {source.uri} was featurized with featurizer version "
                             f"{manifest.get('featurizer_version')}, MODEL {model_info.model_dir} expects "
                             f"{model_info.featurizer_version}: score the raw archive instead, or re-featurize")
        shards = shard_names(out.recordings)
        ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(1, len(shards)))
        columns = manifest.get("metadata_columns", [])
        kwargs = {"recordings": out.recordings, "images": out.images}
        return ds, prepare_shards, kwargs, int(manifest["inputs"]), columns, 1

    from jobs.featurize import recordings_frame

    frame, columns = recordings_frame(source.uri, labels, group_pattern)
    if frame.empty:
        raise CoughError(f"SOURCE {source.uri} holds no recordings")
    return frame, prepare_recordings, {"params": model_info.params}, len(frame), columns, None


def score(source: str, model: str, pred: str, *, labels=None, group_pattern=None, rescore: bool = False,
          gate: QualityGate = QualityGate(), batch_size: int = 32, actors: int | None = None, actor_cpus: float = 1.0,
          actor_threads: int | None = None, address: str | None = None, num_cpus: int | None = None,
          dry_run: bool = False) -> dict:
    """Score SOURCE with MODEL into PRED; returns the run's counts.

    >>> score("data/sample/raw", "out/demo/model", "out/demo/pred")   # doctest: +SKIP
    {'inputs': 60, 'scored': 60, 'ok': 60, 'errors': 0, 'skipped': 0, ...}

    ``dry_run``: only :func:`plan`.
    """
    import pyarrow as pa
    import ray

    from cough.audio import TASK_MEMORY
    from cough.pred import LOG_DIR, NOTHING_SCORED, RunWriter, claim_pred, scored_keys
    from cough.runtime import archive_dataset, cpus, init_ray
    from cough.score import Predictor, pred_schema, read_model_info
    from cough.shards import is_out
    from cough.storage import Location, new_version

    if batch_size < 1 or (actors is not None and actors < 1) or actor_cpus <= 0:
        raise UsageError("--batch-size and --actors must be at least 1, --actor-cpus above 0")
    source, model = Location.of(source), Location.of(model)
    info = read_model_info(model)
    target, output = claim_pred(pred, inputs={"SOURCE": source, "MODEL": model})
    if not source.exists():
        raise CoughError(f"SOURCE {source.uri} does not exist")
    if (labels or group_pattern) and is_out(source):
        raise UsageError("SOURCE is a featurize OUT whose labels and groups were attached when it was "
                         "made; drop --labels/--group-pattern")
    if dry_run:
        return plan(source, target, info, labels=labels, group_pattern=group_pattern, rescore=rescore)
    ds, prepare, prepare_kwargs, n_inputs, metadata_columns, stage1_batch = _inputs(
        source, labels, group_pattern, info)
    init_ray(address, num_cpus=num_cpus)
    if stage1_batch is None:  # a raw archive: spread small ones over every CPU too
        ds, stage1_batch = archive_dataset(ds, batch_size)
    if cpus() < actor_cpus + 1:
        raise UsageError(f"score needs at least {actor_cpus + 1:g} CPUs (a featurizing task and an inference "
                         f"actor of {actor_cpus:g}); Ray has {cpus()}: lower --actor-cpus")
    actors = actors or max(1, cpus() // 4)

    with output.writing(LOG_DIR):
        table = target.table()
        read_version = table.version() if table is not None else None
        scored = NOTHING_SCORED if rescore else scored_keys(table, info.version)
        run_id = new_version()
        log.info("run %s: %d inputs from %s, model %s (%d recordings already scored)%s",
                 run_id, n_inputs, source.uri, info.version, len(scored.ids),
                 "; --rescore replaces this model version's rows" if rescore else "")
        # The memory reservation sizes decoding (long recordings) and, being a remote
        # argument the actors lack, keeps Ray from fusing the two stages into one.
        stage1 = ds.map_batches(prepare, batch_size=stage1_batch, batch_format="pyarrow", num_cpus=1,
                                memory=TASK_MEMORY, fn_kwargs={**prepare_kwargs, "scored": ray.put(scored), "gate": gate,
                                                               "metadata_columns": metadata_columns})
        predictions = stage1.map_batches(
            Predictor, batch_size=None, batch_format="pyarrow", num_cpus=actor_cpus,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
            fn_constructor_kwargs={"model_dir": model.uri, "run_id": run_id,
                                   "threads": actor_threads or max(1, int(actor_cpus)),
                                   "metadata_columns": metadata_columns})
        writer = RunWriter(target, run_id, pred_schema(metadata_columns), read_version=read_version)
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
            committed = writer.commit({"model_version": info.version, "featurizer_version": info.featurizer_version,
                                       "source": source.uri, "model": model.uri, "rescore": rescore,
                                       "labels": Location.of(labels).uri if labels else None,
                                       "quality_gate": gate.to_dict(),
                                       "metadata_columns": metadata_columns, "cough_version": __version__,
                                       **counts}, model_version=info.version, rescore=rescore)
        except BaseException as exc:
            clean = _job_error(exc)
            if clean is exc:
                raise
            raise clean from None
        finally:
            writer.close()
    if committed < counts["scored"]:  # a concurrent run committed some of them first
        counts["skipped"] += counts["scored"] - committed
        counts["scored"] = committed
    if counts["errors"]:
        log.warning("%d of %d scored recordings are errors; their reasons are in %s (status == 'error')",
                    counts["errors"], counts["inputs"], target.loc.uri)
    return {**counts, "run_id": run_id if committed else None, "pred": target.loc.uri,
            "model_version": info.version}


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
