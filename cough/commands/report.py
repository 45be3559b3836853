"""``cough report``'s command line: its flags (:data:`HELP`, :data:`EXAMPLE`,
:func:`add_arguments`) and :func:`run`, which calls :func:`cough.report.write_report` with them.
cough/cli.py builds the parser from them; ``python -m jobs.report`` runs the same."""

from __future__ import annotations

import logging

from ..flags import integer, number

HELP = "evaluate predictions against true labels and write an HTML report, metrics.json and plots"
EXAMPLE = "cough report out/demo/pred --out out/demo/report --by site"


def add_arguments(p) -> None:
    p.add_argument("pred", metavar="PRED", help="output of `cough score` (a Delta Lake table)")
    p.add_argument("--out", required=True,
                   help="report folder (report.html, metrics.json, *.png): new, empty, or an earlier `cough report` "
                        "output, which this run replaces; anything else is refused")
    p.add_argument("--labels", help="CSV with filename,label[,participant,...]; wins over PRED's labels")
    p.add_argument("--by", nargs="+", default=[], metavar="COLUMN",
                   help="columns to break the metrics down by (e.g. source sample_rate)")
    p.add_argument("--threshold", type=number(at_least=0, at_most=1),
                   help="decision threshold on the score (default: the threshold in the model.json of the MODEL "
                        "that PRED's run records name, else 0.5)")
    p.add_argument("--model-version", help="which model's predictions (default: the latest)")
    p.add_argument("--include-training", action="store_true",
                   help="also evaluate recordings of participants the model was trained or tuned on (optimistic)")
    p.add_argument("--n-boot", type=integer(at_least=1), default=1000, help="bootstrap resamples for the 95%% CIs (default 1000)")
    p.add_argument("--seed", type=integer(at_least=0), default=0, help="seed of the bootstrap and cross-validation (default 0)")


def run(args) -> dict:
    from ..tables.artifacts import Metrics
    from ..report import write_report
    from ..tables.storage import Location

    m = Metrics.from_dict(write_report(args.pred, args.out, labels=args.labels, by=args.by, threshold=args.threshold,
                                       model_version=args.model_version, include_training=args.include_training,
                                       n_boot=args.n_boot, seed=args.seed))
    ops = m.operations
    if ops["scored"] and not m.n_labelled_scored and not args.labels:
        logging.getLogger("cough.report").warning(
            "no scored recording in PRED has a true label, so this report evaluates nothing (operations only): "
            "give the labels here, --labels CSV (filename,label[,participant,...]); a `cough score --labels` "
            "labels only the recordings that run scores")
    return {"report": Location.of(args.out).uri, "n": m.n, "n_groups": m.n_groups, "excluded_training": m.excluded_training,
            "auc": m.auc, "auc_ci": m.auc_ci, "baseline_auc": m.shortcut_baseline["auc"], "threshold": m.threshold,
            "scored": ops["scored"], "errored": ops["errored"], "skipped": ops["skipped"],
            "error_rate": ops["error_rate"], "psi": ops["drift"]["psi"], "warnings": len(m.warnings)}
