"""nightly: the incremental scoring run a scheduler starts every night.

Scores what arrived in SOURCE since the last run (``cough score``), writes that night's
operational report next to the predictions (``PRED/_reports/<run_id>/``, ignored by
Delta readers), and exits 1 when the night's error rate passes ``--max-error-rate``,
so the scheduler raises the alarm. Recipe (cron, on a machine that can reach the head):

    0 2 * * *  cd /opt/cough && RAY_AUTH_MODE=token .venv/bin/ray job submit \\
        --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m jobs.nightly s3://bucket/incoming --model s3://bucket/models/current \\
        --pred s3://bucket/pred --json >> /var/log/cough-nightly.log 2>&1

``ray job submit`` waits for the job and exits non-zero when it fails. Parses the flags and
calls :func:`cough.nightly.nightly`.
"""

from __future__ import annotations

from cough.flags import integer, number
from cough.nightly import nightly
from cough.pred import COMMIT_EVERY
from cough.runtime import add_ray_arguments

HELP = "score tonight's new recordings, write the operational report next to PRED, fail on many errors"
EXAMPLE = ("cough nightly data/sample/raw --model out/demo/model --pred out/nightly/pred "
           "--max-error-rate 0.05")


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE", help="the archive new recordings arrive in")
    p.add_argument("--model", required=True, help="MODEL directory written by `cough train`")
    p.add_argument("--pred", required=True, help="PRED (a Delta Lake table), extended run after run")
    p.add_argument("--labels", help="CSV with filename,label[,participant,...] when labels are known")
    p.add_argument("--group-pattern", help="regex on the file stem; its first group is the participant")
    p.add_argument("--max-error-rate", type=number(at_least=0, at_most=1), default=0.05,
                   help="exit 1 when more than this share of tonight's recordings fail (default 0.05)")
    p.add_argument("--prefix", action="append", default=[], metavar="FOLDER",
                   help="list only this folder under SOURCE (e.g. 2026/11/24; repeatable)")
    p.add_argument("--since", metavar="YYYY-MM-DD",
                   help="list only SOURCE's top-level folders named by a date on or after this one")
    p.add_argument("--commit-every", type=integer(at_least=1), default=COMMIT_EVERY,
                   help=f"recordings per commit to PRED and its file ledger (default {COMMIT_EVERY})")
    add_ray_arguments(p)


def run(args) -> dict:
    return nightly(args.source, args.model, args.pred, labels=args.labels, group_pattern=args.group_pattern,
                   max_error_rate=args.max_error_rate, prefixes=tuple(args.prefix), since=args.since,
                   commit_every=args.commit_every, address=args.address, num_cpus=args.num_cpus)


if __name__ == "__main__":
    from cough.cli import run_module

    run_module("nightly")
