"""score: predict every recording under SOURCE with MODEL into PRED, incrementally.

Driver: check MODEL and PRED (a Delta table this job owns); list SOURCE in Ray tasks
(cough/archive.py) and keep, by a distributed anti-join against PRED's file ledger
(cough/ledger.py), only the file versions this model version has not seen; stream them
through two Ray Data stages (read, hash and featurize with tasks, predict with an actor
pool) and commit the rows every ``--commit-every`` recordings, to PRED (cough/pred.py) and
then the ledger. Files seen before are not opened; a renamed copy of a scored recording is
recognised by its content hash and not decoded; a run with nothing new writes nothing.
An OUT of ``cough featurize`` as SOURCE is read whole (no ledger). See docs/score.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cough import __version__
from cough.errors import CoughError, UsageError
from cough.flags import integer, number
from cough.pred import CHUNK_COUNTS, COMMIT_EVERY
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
    p.add_argument("--prefix", action="append", default=[], metavar="FOLDER",
                   help="list only this folder under SOURCE (e.g. 2026/11/24; repeatable): a date-partitioned "
                        "archive's cheap path")
    p.add_argument("--since", metavar="YYYY-MM-DD",
                   help="list only SOURCE's top-level folders named by a date on or after this one")
    p.add_argument("--commit-every", type=integer(at_least=1), default=COMMIT_EVERY,
                   help=f"recordings per commit to PRED and its file ledger; a driver lost mid-run redoes at "
                        f"most one chunk (default {COMMIT_EVERY})")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be read, skipped (already scored) and written, and stop "
                        "(no Ray, nothing written; reads every file to hash it)")
    add_ray_arguments(p)


def plan(source, target, info, *, labels=None, group_pattern=None, rescore: bool = False) -> dict:
    """What scoring ``source`` into PRED ``target`` (a :class:`cough.pred.Pred`) with the model
    ``info`` would do, without Ray: the listing and the ledger are compared on this machine,
    and the files the ledger has not seen are hashed (as a run does) to count those whose
    content this model version already scored."""
    import pyarrow.parquet as pq

    from cough.audio import RECORDING_BUDGET
    from cough.errors import RecordingError
    from cough.ledger import FILE_KEY, Ledger
    from cough.listing import Entry
    from cough.pred import NOTHING_SCORED, scored_keys
    from cough.recording import recording_id
    from cough.shards import is_out, read_out

    seen = 0
    if is_out(source):
        recordings = read_out(source, what="SOURCE").recordings
        rows = pq.read_table(recordings.path, filesystem=recordings.fs, columns=["recording_id", "path"]).to_pylist()
        ids, paths = [r["recording_id"] for r in rows], [r["path"] for r in rows]
    else:
        from cough.featurize import recordings_frame

        entries = recordings_frame(source.uri, labels, group_pattern)[0].to_dict("records")
        ledger = None if rescore else Ledger(target).table()
        if ledger is not None:
            known = set(map(tuple, ledger.to_pyarrow_table(columns=list(FILE_KEY), filters=[
                ("model_version", "=", info.version)]).to_pandas().itertuples(index=False)))
            versions = (Entry.from_dict(e) for e in entries)
            fresh = [e for e, v in zip(entries, versions) if (v.path, v.file_size, v.file_mtime_ns) not in known]
            seen, entries = len(entries) - len(fresh), fresh
        paths, ids = [e["path"] for e in entries], []
        for entry in entries:  # read and hashed as a run does (cough.score.prepare_recordings)
            try:
                ids.append(recording_id(Entry.from_dict(entry).read(max_bytes=RECORDING_BUDGET)))
            except RecordingError:
                ids.append(None)
    table = target.table()
    scored = NOTHING_SCORED if rescore else scored_keys(table, info.version)
    known_ids = scored.has_ids([i or "" for i in ids])
    skip = sum(bool(k) if i else p in scored.unreadable for i, p, k in zip(ids, paths, known_ids))
    return {"dry_run": True, "would_list": len(paths) + seen, "seen_before": seen, "would_read": len(paths),
            "would_skip": int(skip) + seen, "would_score": len(paths) - int(skip),
            "model_version": info.version, "would_write": target.loc.uri, "pred_exists": table is not None}


@dataclass
class Night:
    """What one run found in SOURCE before scoring: the datasets and counts of the listing
    (raw archives go through the file ledger; a featurize OUT is read whole)."""

    todo: object                # Ray Dataset: the rows stage 1 reads
    prepare: object             # stage 1's function (cough.score.prepare_recordings or prepare_shards)
    prepare_kwargs: dict
    batch_size: int
    metadata_columns: list
    listed: int
    unseen: int                 # rows in ``todo``
    changed: int

    def counts(self) -> dict:
        return {"inputs": self.listed, "listed": self.listed, "new": self.unseen - self.changed,
                "changed": self.changed, "seen_before": self.listed - self.unseen}


def _night(source, info, pred, *, labels, group_pattern, rescore, prefixes, since, batch_size) -> Night:
    """List SOURCE in Ray tasks and keep what the ledger has not seen for this model version
    (everything with ``rescore``); a featurize OUT's shards as they are. Call after Ray is up."""
    import ray

    from cough.archive import listing_dataset
    from cough.labels import load_labels
    from cough.ledger import Ledger, unseen
    from cough.runtime import cpus
    from cough.score import prepare_recordings, prepare_shards
    from cough.shards import is_out, read_out, shard_names

    if is_out(source):
        out = read_out(source, what="SOURCE")
        manifest = out.manifest
        if manifest.get("featurizer_version") != info.featurizer_version:
            raise CoughError(f"SOURCE {source.uri} was featurized with featurizer version "
                             f"{manifest.get('featurizer_version')}, MODEL {info.model_dir} expects "
                             f"{info.featurizer_version}: score the raw archive instead, or re-featurize")
        shards = shard_names(out.recordings)
        ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(1, len(shards)))
        n = int(manifest["inputs"])
        return Night(ds, prepare_shards, {"recordings": out.recordings, "images": out.images}, 1,
                     manifest.get("metadata_columns", []), n, n, 0)

    index = load_labels(labels, source.uri, group_pattern=group_pattern)
    listing = listing_dataset(source.uri, index, prefixes=prefixes, since=since).materialize()
    listed = listing.count()
    if listed == 0 and not (prefixes or since):
        raise CoughError(f"SOURCE {source.uri} holds no recordings")
    todo, changed = (listing, 0) if rescore else unseen(listing, Ledger(pred), info.version)
    n = todo.count()
    # Small nights still spread over every CPU: about 4 batches each.
    batch = max(1, min(batch_size, -(-n // (4 * cpus()))))
    todo = todo.repartition(max(1, -(-n // batch))).materialize() if n else todo
    return Night(todo, prepare_recordings, {"params": info.params}, batch, index.metadata_columns, listed, n, changed)


def score(source: str, model: str, pred: str, *, labels=None, group_pattern=None, rescore: bool = False,
          gate: QualityGate = QualityGate(), batch_size: int = 32, actors: int | None = None, actor_cpus: float = 1.0,
          actor_threads: int | None = None, prefixes: tuple[str, ...] = (), since: str | None = None,
          commit_every: int = COMMIT_EVERY, address: str | None = None, num_cpus: int | None = None,
          dry_run: bool = False) -> dict:
    """Score SOURCE with MODEL into PRED; returns the run's summary (see :data:`SUMMARY`).

    >>> score("data/sample/raw", "out/demo/model", "out/demo/pred")   # doctest: +SKIP
    {'inputs': 60, 'listed': 60, 'new': 60, 'changed': 0, 'seen_before': 0, 'scored': 60, ...}

    ``dry_run``: only :func:`plan`.
    """
    import ray

    from cough.archive import check_since
    from cough.audio import TASK_MEMORY
    from cough.ledger import Ledger
    from cough.pred import LOG_DIR, NOTHING_SCORED, RunWriter, claim_pred
    from cough.runtime import cpus, init_ray
    from cough.score import Predictor, pred_schema, read_model_info
    from cough.shards import is_out
    from cough.storage import Location, new_version

    if batch_size < 1 or (actors is not None and actors < 1) or actor_cpus <= 0 or commit_every < 1:
        raise UsageError("--batch-size, --actors and --commit-every must be at least 1, --actor-cpus above 0")
    since = check_since(since)
    source, model = Location.of(source), Location.of(model)
    info = read_model_info(model)
    target, output = claim_pred(pred, inputs={"SOURCE": source, "MODEL": model})
    if not source.exists():
        raise CoughError(f"SOURCE {source.uri} does not exist")
    if (labels or group_pattern or prefixes or since) and is_out(source):
        raise UsageError("SOURCE is a featurize OUT whose labels and groups were attached when it was "
                         "made; drop --labels/--group-pattern/--prefix/--since")
    for prefix in prefixes:
        if not source.join(prefix.strip("/")).exists():
            raise UsageError(f"--prefix {prefix}: {source.join(prefix.strip('/')).uri} does not exist")
    if dry_run:
        return plan(source, target, info, labels=labels, group_pattern=group_pattern, rescore=rescore)
    init_ray(address, num_cpus=num_cpus)
    if cpus() < actor_cpus + 1:
        raise UsageError(f"score needs at least {actor_cpus + 1:g} CPUs (a featurizing task and an inference "
                         f"actor of {actor_cpus:g}); Ray has {cpus()}: lower --actor-cpus")
    actors = actors or max(1, cpus() // 4)

    with output.writing(LOG_DIR):
        table = target.table()
        read_version = table.version() if table is not None else None
        night = _night(source, info, target, labels=labels, group_pattern=group_pattern, rescore=rescore,
                       prefixes=tuple(prefixes), since=since, batch_size=batch_size)
        # What this model version scored (32 bytes per recording) is built by a Ray task and
        # stays in the object store: the driver never holds it.
        scored = ray.put(NOTHING_SCORED) if rescore or not night.unseen else \
            ray.remote(_scored_keys).options(num_cpus=1).remote(target, info.version)
        run_id = new_version()
        log.info("run %s: %d listed in %s, %d not seen before by model %s (%d changed)%s",
                 run_id, night.listed, source.uri, night.unseen, info.version, night.changed,
                 "; --rescore replaces this model version's rows" if rescore else "")
        summary = {**night.counts(), **dict.fromkeys(CHUNK_COUNTS, 0), "commits": 0}
        if night.unseen:
            # The memory reservation sizes decoding (long recordings) and, being a remote
            # argument the actors lack, keeps Ray from fusing the two stages into one.
            stage1 = night.todo.map_batches(
                night.prepare, batch_size=night.batch_size, batch_format="pyarrow", num_cpus=1, memory=TASK_MEMORY,
                fn_kwargs={**night.prepare_kwargs, "scored": scored, "gate": gate,
                           "metadata_columns": night.metadata_columns})
            predictions = stage1.map_batches(
                Predictor, batch_size=None, batch_format="pyarrow", num_cpus=actor_cpus,
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                fn_constructor_kwargs={"model_dir": model.uri, "run_id": run_id,
                                       "threads": actor_threads or max(1, int(actor_cpus)),
                                       "metadata_columns": night.metadata_columns})
            record = {"model_version": info.version, "featurizer_version": info.featurizer_version,
                      "source": source.uri, "model": model.uri, "rescore": rescore,
                      "labels": Location.of(labels).uri if labels else None, "prefixes": list(prefixes),
                      "since": since, "quality_gate": gate.to_dict(), "metadata_columns": night.metadata_columns,
                      "cough_version": __version__, **night.counts()}
            writer = RunWriter(target, run_id, pred_schema(night.metadata_columns), read_version=read_version)
            ledger = Ledger(target) if not is_out(source) else None
            try:
                _stream(predictions, writer, ledger, summary, record, model_version=info.version,
                        rescore=rescore, commit_every=commit_every)
            except BaseException as exc:
                clean = _job_error(exc)
                if clean is exc:
                    raise
                raise clean from None
            finally:
                writer.close()
            came_back = summary["scored"] + summary["duplicates"]
            if came_back != night.unseen:
                raise CoughError(f"lost recordings: {night.unseen} to read, {came_back} came back")
    summary["skipped"] = summary["seen_before"] + summary["duplicates"]
    if summary["errors"]:
        log.warning("%d of %d scored recordings are errors; their reasons are in %s (status == 'error')",
                    summary["errors"], summary["scored"], target.loc.uri)
    return {**summary, "run_id": run_id if summary["commits"] else None, "pred": target.loc.uri,
            "model_version": info.version}


def _scored_keys(pred, model_version: str):
    from cough.pred import scored_keys

    return scored_keys(pred.table(), model_version)


def _stream(predictions, writer, ledger, summary: dict, record: dict, *, model_version: str, rescore: bool,
            commit_every: int) -> None:
    """Collect the scored rows and commit them chunk by chunk: each chunk to PRED first, then
    to the ledger (cough/ledger.py says why in this order). Updates ``summary``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cough.ledger import ledger_rows

    chunk = dict.fromkeys(CHUNK_COUNTS, 0)
    files: list = []  # the chunk's ledger rows
    chunks = [0]  # chunks handed to the ledger (one may hold only duplicates: nothing for PRED)
    seen: set[int] = set()  # guards against a retried batch delivering a path twice

    def commit():
        added = writer.commit({**record, **chunk}, model_version=model_version, rescore=rescore)
        if added < chunk["scored"]:  # a concurrent run committed some of them first
            chunk["duplicates"] += chunk["scored"] - added
            chunk["scored"] = added
        if ledger is not None and files:
            chunks[0] += 1
            ledger.record(pa.concat_tables(files), run_id=writer.run_id, chunk=chunks[0])
        summary["commits"] = writer.chunk
        for key in CHUNK_COUNTS:
            summary[key] += chunk[key]
            chunk[key] = 0
        files.clear()

    for batch in predictions.iter_batches(batch_size=None, batch_format="pyarrow"):
        keep = [i for i, p in enumerate(batch.column("path").to_pylist()) if hash(p) not in seen]
        batch = batch.take(keep)
        seen.update(hash(p) for p in batch.column("path").to_pylist())
        status = batch.column("status").to_pylist()
        chunk["ok"] += status.count("ok")
        chunk["errors"] += status.count("error")
        chunk["rejected"] += status.count("rejected")
        chunk["duplicates"] += status.count("skipped")
        chunk["scored"] = chunk["ok"] + chunk["errors"] + chunk["rejected"]
        # bytes of the files that were read (those that have a content hash)
        read = batch.filter(pc.is_valid(batch.column("recording_id")))
        chunk["bytes_read"] += int(pc.sum(pc.max_element_wise(read.column("file_size"), 0)).as_py() or 0)
        writer.add(batch.filter(pa.array([s != "skipped" for s in status])))
        files.append(ledger_rows(batch, model_version))
        if chunk["scored"] + chunk["duplicates"] >= commit_every:
            commit()
    commit()


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
                 actor_cpus=args.actor_cpus, actor_threads=args.actor_threads, prefixes=tuple(args.prefix),
                 since=args.since, commit_every=args.commit_every, address=args.address,
                 num_cpus=args.num_cpus, dry_run=args.dry_run)


if __name__ == "__main__":
    from cough.cli import run_module

    run_module("score")
