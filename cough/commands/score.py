"""``cough score``'s command line: its flags (:data:`HELP`, :data:`EXAMPLE`,
:func:`add_arguments`) and :func:`run`, which calls :func:`cough.score.score` with them.
cough/cli.py builds the parser from them; ``python -m jobs.score`` runs the same."""

from __future__ import annotations

from ..flags import integer, number
from .featurize import add_cough_arguments, add_error_rate_argument, add_selection_arguments, selection
from ..tables.pred import COMMIT_EVERY
from ..audio.quality import NO_GATE, QualityGate
from ..runtime import add_ray_arguments
from ..score import score
from ..score.settings import ScoreSettings

HELP = "score recordings with a MODEL into PRED (a Delta Lake table), incrementally and crash-safe"
EXAMPLE = ("cough score data/sample/raw --model out/demo/model --out out/demo/pred "
           "--labels data/sample/labels.csv")


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
    p.add_argument("--actor-cpus", type=number(at_least=0), default=0.0,
                   help="CPUs reserved per inference actor (default 0: its threads share the CPUs that "
                        "featurizing tasks reserve)")
    p.add_argument("--actor-threads", type=integer(at_least=1, at_most=1024),
                   help="TensorFlow threads per inference actor (default: the cluster's CPUs shared among the "
                        "actors, at most one node's)")
    add_cough_arguments(p, default="default: the one MODEL's training data was featurized with")
    add_night_arguments(p)
    add_error_rate_argument(p, default=None, what="the files this run scores")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be read, skipped (already scored) and written, and stop "
                        "(no Ray, nothing written; reads the files the ledger has not seen, to hash them)")
    add_ray_arguments(p)


def add_night_arguments(p) -> None:
    """What a night lists and how often it commits (score and nightly alike)."""
    add_selection_arguments(p)
    p.add_argument("--prefix", action="append", default=[], metavar="FOLDER",
                   help="list only this folder under SOURCE (e.g. 2026/11/24; repeatable): a date-partitioned "
                        "archive's cheap path")
    p.add_argument("--since", metavar="YYYY-MM-DD",
                   help="list only SOURCE's top-level folders named by a date on or after this one")
    p.add_argument("--commit-every", type=integer(at_least=1), default=COMMIT_EVERY,
                   help=f"recordings per commit to PRED and its file ledger; a driver lost mid-run redoes at "
                        f"most one chunk (default {COMMIT_EVERY})")


def settings(args) -> ScoreSettings:
    """The :class:`ScoreSettings` that parsed flags ask for (nightly's flags are a subset)."""
    gate = NO_GATE if getattr(args, "no_quality_gate", False) else QualityGate(
        min_snr_db=getattr(args, "min_snr_db", QualityGate().min_snr_db),
        max_clipped_fraction=getattr(args, "max_clipped_fraction", QualityGate().max_clipped_fraction))
    optional = {name: getattr(args, name) for name in ("rescore", "batch_size", "actors", "actor_cpus", "actor_threads")
                if hasattr(args, name)}
    return ScoreSettings(labels=args.labels, group_pattern=args.group_pattern, gate=gate, prefixes=tuple(args.prefix),
                         since=args.since, selection=selection(args), commit_every=args.commit_every,
                         min_cough_probability=getattr(args, "min_cough_probability", None), address=args.address,
                         num_cpus=args.num_cpus, shared_paths=tuple(args.shared_path), **optional)


def run(args) -> dict:
    import dataclasses

    chosen = dataclasses.replace(settings(args), max_error_rate=args.max_error_rate)
    return score(args.source, args.model, args.out, chosen, dry_run=args.dry_run).to_dict()
