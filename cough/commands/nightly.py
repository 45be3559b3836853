"""``cough nightly``'s command line: its flags (:data:`HELP`, :data:`EXAMPLE`,
:func:`add_arguments`) and :func:`run`, which calls :func:`cough.nightly.nightly` with them.
cough/cli.py builds the parser from them; ``python -m jobs.nightly`` runs the same."""

from __future__ import annotations

from ..nightly import NightSettings, nightly
from ..tables.maintain import MaintainSettings
from ..runtime import add_ray_arguments
from .featurize import add_cough_arguments, add_error_rate_argument
from .score import add_night_arguments
from .score import settings as score_settings

HELP = "score tonight's new recordings, write the operational report next to PRED, fail on many errors"
EXAMPLE = ("cough nightly data/sample/raw --model out/demo/model --pred out/nightly/pred "
           "--max-error-rate 0.05")


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE", help="the archive new recordings arrive in")
    p.add_argument("--model", required=True, help="MODEL directory written by `cough train`")
    p.add_argument("--pred", required=True, help="PRED (a Delta Lake table), extended run after run")
    p.add_argument("--labels", help="CSV with filename,label[,participant,...] when labels are known")
    p.add_argument("--group-pattern", help="regex on the file stem; its first group is the participant")
    add_error_rate_argument(p, default=0.05, what="tonight's recordings")
    p.add_argument("--maintain", action="store_true",
                   help="after the night, compact, checkpoint and vacuum PRED and its ledger (as `cough maintain`, "
                        "its defaults), before the night's report, which shows their health")
    add_cough_arguments(p, default="default: the one MODEL's training data was featurized with")
    add_night_arguments(p)
    add_ray_arguments(p)


def run(args) -> dict:
    night = NightSettings(score=score_settings(args), max_error_rate=args.max_error_rate,
                          maintain=MaintainSettings() if args.maintain else None)
    return nightly(args.source, args.model, args.pred, night).to_dict()
