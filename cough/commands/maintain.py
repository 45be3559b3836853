"""``cough maintain``'s command line: its flags (:data:`HELP`, :data:`EXAMPLE`,
:func:`add_arguments`) and :func:`run`, which calls :func:`cough.tables.maintain.maintain` with them.
cough/cli.py builds the parser from them; ``python -m jobs.maintain`` runs the same."""

from __future__ import annotations

from ..flags import integer
from ..tables.maintain import DEFAULT_RETENTION_HOURS, MaintainSettings, maintain

HELP = ("keep PRED and its file ledger in shape: compact small files, checkpoint, vacuum files no version within "
        "the retention needs, and say their health (safe while a score runs)")
EXAMPLE = "cough maintain out/nightly/pred"


def add_arguments(p) -> None:
    p.add_argument("pred", metavar="PRED", help="the --out of `cough score` (a Delta table)")
    p.add_argument("--retention-hours", type=integer(at_least=DEFAULT_RETENTION_HOURS),
                   default=DEFAULT_RETENTION_HOURS,
                   help=f"vacuum only files older than this that no version within it needs (default "
                        f"{DEFAULT_RETENTION_HOURS}, Delta's; lower is refused)")
    p.add_argument("--no-compact", action="store_true", help="do not compact small files")
    p.add_argument("--no-vacuum", action="store_true", help="do not delete unneeded files")


def settings(args) -> MaintainSettings:
    return MaintainSettings(compact=not args.no_compact, vacuum=not args.no_vacuum,
                            retention_hours=args.retention_hours)


def run(args) -> dict:
    return maintain(args.pred, settings(args))
