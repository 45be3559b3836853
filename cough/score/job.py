"""The score driver: check the inputs, find tonight's work, run the two stages, commit.

Files seen before are not opened; a renamed copy of a scored recording is recognised by its
content hash and not decoded; a run with nothing new writes nothing.
"""

from __future__ import annotations

import logging

from .. import __version__
from ..errors import CoughError, UsageError
from ..tables.pred import CHUNK_COUNTS, COMMIT_EVERY
from ..audio.quality import QualityGate

log = logging.getLogger("cough.score")


def score(source: str, model: str, pred: str, *, labels=None, group_pattern=None, rescore: bool = False,
          gate: QualityGate = QualityGate(), batch_size: int = 32, actors: int | None = None, actor_cpus: float = 0.0,
          actor_threads: int | None = None, prefixes: tuple[str, ...] = (), since: str | None = None,
          commit_every: int = COMMIT_EVERY, address: str | None = None, num_cpus: int | None = None,
          dry_run: bool = False) -> dict:
    """Score SOURCE with MODEL into PRED; returns the run's summary.

    >>> score("data/sample/raw", "out/demo/model", "out/demo/pred")   # doctest: +SKIP
    {'inputs': 60, 'listed': 60, 'new': 60, 'changed': 0, 'seen_before': 0, 'scored': 60, ...}

    ``dry_run``: only :func:`cough.score.plan`.
    """
    import ray

    from ..tables.archive import check_since
    from ..tables.artifacts import RunRecord
    from ..audio.decode import TASK_MEMORY
    from ..tables.labels import load_labels
    from ..tables.ledger import Ledger
    from ..logs import native_stderr_filtered
    from ..model.store import read_model_info
    from ..tables.pred import LOG_DIR, NOTHING_SCORED, RunWriter, claim_pred
    from ..runtime import cpus, init_ray, node_cpus
    from ..tables.schema import pred_schema
    from ..tables.shards import is_out
    from ..tables.storage import Location, new_version
    from .chunks import commit_chunks
    from .night import list_night
    from .plan import plan
    from .stages import Predictor

    if batch_size < 1 or (actors is not None and actors < 1) or actor_cpus < 0 or commit_every < 1:
        raise UsageError("--batch-size, --actors and --commit-every must be at least 1, --actor-cpus at least 0")
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
    index = load_labels(labels, source.uri, group_pattern=group_pattern)  # usage errors before Ray starts
    init_ray(address, num_cpus=num_cpus)
    if cpus() < actor_cpus + 1:
        raise UsageError(f"score needs at least {actor_cpus + 1:g} CPUs (a featurizing task and inference "
                         f"actors of {actor_cpus:g}); Ray has {cpus()}: lower --actor-cpus")
    actors = actors or max(1, cpus() // 4)
    threads = actor_threads or inference_threads(node_cpus(), actors=actors, actor_cpus=actor_cpus)

    with output.writing(LOG_DIR):
        table = target.table()
        read_version = table.version() if table is not None else None
        night = list_night(source, info, target, index=index, rescore=rescore,
                           prefixes=tuple(prefixes), since=since, batch_size=batch_size)
        # What this model version scored (32 bytes per recording) is built by a Ray task and
        # stays in the object store: the driver never holds it.
        scored = ray.put(NOTHING_SCORED) if rescore or not night.unseen else \
            ray.remote(_scored_keys).options(num_cpus=1).remote(target, info.version)
        run_id = new_version()
        log.info("run %s: %d listed in %s, %d not seen before by model %s (%d changed)%s",
                 run_id, night.listed, source.uri, night.unseen, info.version, night.changed,
                 "; --rescore replaces this model version's rows" if rescore else "")
        if labels and night.listed > night.unseen:
            log.info("--labels label only the recordings this run scores; the %d seen before keep their rows "
                     "(give the labels to `cough report --labels`, or --rescore)", night.listed - night.unseen)
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
                                       "threads": threads,
                                       "metadata_columns": night.metadata_columns})
            record = RunRecord(model_version=info.version, featurizer_version=info.featurizer_version,
                               source=source.uri, model=model.uri, rescore=rescore,
                               labels=Location.of(labels).uri if labels else None, prefixes=list(prefixes),
                               since=since, quality_gate=gate.to_dict(), metadata_columns=night.metadata_columns,
                               cough_version=__version__, **night.counts())
            writer = RunWriter(target, run_id, pred_schema(night.metadata_columns), read_version=read_version)
            ledger = Ledger(target) if not is_out(source) else None
            try:
                with native_stderr_filtered():  # Ray's C++ notice, in this process, as the actors start
                    commit_chunks(predictions, writer, ledger, summary, record, model_version=info.version,
                                  rescore=rescore, commit_every=commit_every)
            except BaseException as exc:
                clean = job_error(exc)
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


def inference_threads(node_cpus: list[int], *, actors: int, actor_cpus: float) -> int:
    """TensorFlow threads per inference actor when ``--actor-threads`` is not given: the
    cluster's CPUs shared among the ``actors`` (at most one node's worth, at least the CPUs
    each reserves). With the default ``--actor-cpus 0`` the featurizing tasks reserve every
    CPU and the actors' threads share them through the OS scheduler, so whichever stage is
    the slower one gets the cores the other leaves idle (a cheap network: featurizing on
    every core; an expensive one: inference on every core while stage 1 waits on
    backpressure). Measured on 2 CPUs in docs/benchmarks.md.

    >>> inference_threads([2], actors=1, actor_cpus=0.0)
    2
    >>> inference_threads([16, 16, 16, 16], actors=16, actor_cpus=0.0)
    4
    >>> inference_threads([16, 16], actors=1, actor_cpus=0.0)
    16
    >>> inference_threads([8], actors=8, actor_cpus=2.0)   # at least what each reserves
    2
    """
    share = min(sum(node_cpus) // actors, max(node_cpus))
    return max(1, int(actor_cpus), share)


def _scored_keys(pred, model_version: str):
    from ..tables.pred import scored_keys

    return scored_keys(pred.table(), model_version)


def job_error(exc: BaseException) -> BaseException:
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
