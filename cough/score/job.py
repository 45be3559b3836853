"""The score driver: check the inputs, find tonight's work, run the two stages, commit.

Files seen before are not opened; a renamed copy of a scored recording is recognised by its
content hash and not decoded; a run with nothing new writes nothing.
"""

from __future__ import annotations

import logging
from typing import Literal, overload

from .. import __version__
from ..audio.detector import RECORDING_THRESHOLD
from ..errors import CoughError, UsageError, job_error
from ..tables.archive import EVERY_FILE
from .settings import ScorePlan, ScoreSettings, ScoreSummary

log = logging.getLogger("cough.score")


@overload
def score(source: str, model: str, pred: str, settings: ScoreSettings | None = None, *,
          dry_run: Literal[False] = False) -> ScoreSummary: ...


@overload
def score(source: str, model: str, pred: str, settings: ScoreSettings | None = None, *,
          dry_run: Literal[True]) -> ScorePlan: ...


def score(source: str, model: str, pred: str, settings: ScoreSettings | None = None, *,
          dry_run: bool = False) -> ScoreSummary | ScorePlan:
    """Score SOURCE with MODEL into PRED as ``settings`` say; returns the run's summary
    (:meth:`ScoreSummary.to_dict` is the job's JSON), or with ``dry_run`` only the plan
    (:func:`cough.score.plan`).

    >>> score("data/sample/raw", "out/demo/model", "out/demo/pred").to_dict()   # doctest: +SKIP
    {'inputs': 60, 'listed': 60, 'new': 60, 'changed': 0, 'seen_before': 0, 'scored': 60, ...}
    """
    from ..model.store import read_model_info
    from ..runtime import cpus, init_ray, node_cpus
    from ..tables.labels import load_labels
    from ..tables.listing import UNREAD
    from ..tables.pred import claim_pred
    from ..tables.shards import is_out
    from ..tables.storage import Location
    from .plan import plan

    s = settings or ScoreSettings()
    source_loc, model_loc = Location.of(source), Location.of(model)
    info = read_model_info(model_loc)
    target, output = claim_pred(pred, inputs={"SOURCE": source_loc, "MODEL": model_loc})
    if not source_loc.exists():
        raise CoughError(f"SOURCE {source_loc.uri} does not exist")
    if (s.labels or s.group_pattern or s.prefixes or s.since or s.selection != EVERY_FILE
            or s.min_cough_probability is not None) and is_out(source_loc):
        raise UsageError("SOURCE is a featurize OUT whose labels, groups, files and coughs were chosen when it was "
                         "made; drop --labels/--group-pattern/--prefix/--since/--include/--exclude/"
                         "--min-cough-probability")
    for prefix in s.prefixes:
        if not source_loc.join(prefix.strip("/")).exists():
            raise UsageError(f"--prefix {prefix}: {source_loc.join(prefix.strip('/')).uri} does not exist")
    if dry_run:
        return plan(source_loc, target, info, labels=s.labels, group_pattern=s.group_pattern, rescore=s.rescore,
                    selection=s.selection)
    index = load_labels(s.labels, source_loc.uri, group_pattern=s.group_pattern)  # usage errors before Ray starts
    # MODEL is loaded by the inference actors, PRED read by the ledger's and the scored set's tasks; the
    # labels CSV only here (load_labels above), so it may be local anywhere
    init_ray(s.address, num_cpus=s.num_cpus, paths={"SOURCE": source_loc.uri, "--model": model_loc.uri,
                                                   "--out": target.loc.uri}, shared_paths=s.shared_paths)
    if cpus() < s.actor_cpus + 1:
        raise UsageError(f"score needs at least {s.actor_cpus + 1:g} CPUs (a featurizing task and inference "
                         f"actors of {s.actor_cpus:g}); Ray has {cpus()}: lower --actor-cpus")
    actors = s.actors or max(1, cpus() // 4)
    threads = s.actor_threads or inference_threads(node_cpus(), actors=actors, actor_cpus=s.actor_cpus)

    try:
        summary, run_id, failed = _run(s, source_loc, model_loc, info, target, output, index, actors, threads)
    except BaseException as exc:  # an error out of a Ray task or actor: its cause, in one line
        clean = job_error(exc)
        if clean is exc:
            raise
        raise clean from None
    summary.run_id = run_id if summary.commits else None
    c = summary.counts
    if s.max_error_rate is not None and c.errors > s.max_error_rate * c.scored:
        raise CoughError(f"{c.errors / c.scored:.1%} of the {c.scored} files scored failed, over --max-error-rate "
                         f"{s.max_error_rate:g} (committed all the same; e.g. {failed}); their reasons are in "
                         f"{target.loc.uri} (status == 'error')", summary=summary.to_dict())
    if c.errors:
        log.warning("%d of %d scored recordings are errors; their reasons are in %s (status == 'error')",
                    c.errors, c.scored, target.loc.uri)
    if c.unread:
        log.warning("%d files could not be read: the store kept failing (error rows starting %r); the next run "
                    "reads them again", c.unread, UNREAD.rstrip(": "))
    return summary


def _run(s: ScoreSettings, source_loc, model_loc, info, target, output, index, actors: int, threads: int):
    """The run itself, PRED claimed and Ray up: list tonight's work, run the two stages, commit
    (:func:`score`); returns ``(summary, run_id, one error row's "path: reason" or None)``."""
    import ray

    from ..audio.decode import TASK_MEMORY
    from ..logs import native_stderr_filtered
    from ..tables.artifacts import RunRecord
    from ..tables.ledger import Ledger
    from ..tables.pred import LOG_DIR, RunWriter
    from ..tables.schema import pred_schema
    from ..runtime import cpus
    from ..tables.scored import NOTHING_SCORED, scored_buckets
    from ..tables.shards import is_out
    from ..tables.storage import Location, new_version
    from .chunks import commit_chunks
    from .night import list_night
    from .stages import Predictor

    with output.writing(LOG_DIR):
        table = target.table()
        read_version = table.version() if table is not None else None
        night = list_night(source_loc, info, target, index=index, rescore=s.rescore, prefixes=s.prefixes,
                           since=s.since, batch_size=s.batch_size, selection=s.selection,
                           min_cough_probability=cough_threshold(s, info), labels=s.labels,
                           group_pattern=s.group_pattern)
        # What this model version scored (32 bytes per recording), split by hash bucket into
        # Ray objects by Ray tasks: no process holds it whole, a featurizing task fetches the
        # buckets of its batch's files (cough.tables.scored.ScoredBuckets). The driver holds
        # only the paths whose rows are transient errors (few), which this run's commits
        # replace when it reads them again.
        scored = NOTHING_SCORED if s.rescore or not night.counts.unseen else \
            scored_buckets(target, info.version, groups=cpus())
        pending = scored.pending
        if pending:
            log.info("%d files whose reading the store failed before are read again", len(pending))
        run_id = new_version()
        log.info("run %s: %d listed in %s, %d not seen before by model %s (%d changed)%s",
                 run_id, night.counts.listed, source_loc.uri, night.counts.unseen, info.version,
                 night.counts.changed, "; --rescore replaces this model version's rows" if s.rescore else "")
        if s.labels and night.counts.seen_before:
            log.info("--labels label only the recordings this run scores; the %d seen before keep their rows "
                     "(give the labels to `cough report --labels`, or --rescore)", night.counts.seen_before)
        summary = ScoreSummary(night.counts, pred=target.loc.uri, model_version=info.version, labels=night.labels,
                               warnings=night.warnings)
        failed: str | None = None  # one error row's path and reason
        if night.counts.unseen:
            # The memory reservation sizes decoding (long recordings) and, being a remote
            # argument the actors lack, keeps Ray from fusing the two stages into one.
            stage1 = night.todo.map_batches(
                night.prepare, batch_size=night.batch_size, batch_format="pyarrow", num_cpus=1, memory=TASK_MEMORY,
                fn_kwargs={**night.prepare_kwargs, "scored": scored, "gate": s.gate,
                           "metadata_columns": night.metadata_columns})
            predictions = stage1.map_batches(
                Predictor, batch_size=None, batch_format="pyarrow", num_cpus=s.actor_cpus,
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                fn_constructor_kwargs={"model_dir": model_loc.uri, "run_id": run_id,
                                       "threads": threads,
                                       "metadata_columns": night.metadata_columns})
            record = RunRecord(model_version=info.version, featurizer_version=info.featurizer_version,
                               source=source_loc.uri, model=model_loc.uri, rescore=s.rescore,
                               labels=Location.of(s.labels).uri if s.labels else None, prefixes=list(s.prefixes),
                               since=s.since, include=list(s.selection.include), exclude=list(s.selection.exclude),
                               min_cough_probability=cough_threshold(s, info),
                               quality_gate=s.gate.to_dict(), metadata_columns=night.metadata_columns,
                               cough_version=__version__, **night.counts.to_dict())
            writer = RunWriter(target, run_id, pred_schema(night.metadata_columns), read_version=read_version,
                               pending=pending)
            ledger = Ledger(target) if not is_out(source_loc) else None
            try:
                with native_stderr_filtered():  # Ray's C++ notice, in this process, as the actors start
                    summary.counts, summary.commits, summary.recordings, failed = commit_chunks(
                        predictions, writer, ledger, record, model_version=info.version, rescore=s.rescore,
                        commit_every=s.commit_every)
            finally:
                writer.close()
            came_back = summary.counts.scored + summary.counts.duplicates
            if came_back != night.counts.unseen:
                raise CoughError(f"lost recordings: {night.counts.unseen} to read, {came_back} came back")
            c = summary.counts
            if c.errors and not c.ok + c.rejected + c.duplicates:  # whatever the cause: not one file read
                raise CoughError(f"every one of the {c.errors} files to score under SOURCE {source_loc.uri} failed "
                                 f"(e.g. {failed}); nothing was committed, so the next run reads them again",
                                 summary=summary.to_dict())
    return summary, run_id, failed


def cough_threshold(settings: ScoreSettings, info) -> float:
    """The detector's threshold for "holds a cough" (cough.audio.recording.no_cough): the
    flag, else the one MODEL's training data was featurized with (its model.json), else
    the detector's default."""
    if settings.min_cough_probability is not None:
        return settings.min_cough_probability
    return info.min_cough_probability if info.min_cough_probability is not None else RECORDING_THRESHOLD


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


