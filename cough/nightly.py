"""The nightly job: score what arrived, report that night next to PRED, raise the alarm.

:func:`nightly` runs :func:`cough.score.score` on SOURCE (the file ledger keeps it to what
arrived since the last run), writes that night's operational report in
``PRED/_reports/<run_id>/`` (ignored by Delta readers) and raises a CoughError (exit 1)
when the night's error rate passes ``max_error_rate``. cough/commands/nightly.py parses the flags.
"""

from __future__ import annotations

import logging

from .errors import CoughError, UsageError
from .tables.pred import COMMIT_EVERY

REPORTS_DIR = "_reports"
log = logging.getLogger("cough.nightly")


def nightly(source: str, model: str, pred: str, *, labels=None, group_pattern=None,
            max_error_rate: float = 0.05, prefixes: tuple[str, ...] = (), since: str | None = None,
            commit_every: int = COMMIT_EVERY, address=None, num_cpus=None) -> dict:
    """Score, report, and judge one night. Raises CoughError when the error rate is too high
    (after the report is written, so the reason is there to read)."""
    from .report import error_rate, write_report
    from .score import score
    from .tables.storage import Location

    if not 0 <= max_error_rate <= 1:
        raise UsageError("--max-error-rate must lie between 0 and 1")
    scored = score(source, model, pred, labels=labels, group_pattern=group_pattern, prefixes=prefixes, since=since,
                   commit_every=commit_every, address=address, num_cpus=num_cpus)
    summary = {**scored, "report": None, "error_rate": None}
    if scored["run_id"] is None:
        log.info("nothing new in %s since the last run: no report tonight", source)
        return summary
    report = Location.of(scored["pred"]).join(REPORTS_DIR, scored["run_id"]).uri
    write_report(scored["pred"], report)
    rate = error_rate(scored["pred"], run_id=scored["run_id"])
    summary.update(report=report, error_rate=rate)
    if rate is not None and rate > max_error_rate:
        alarm = CoughError(f"{rate:.1%} of tonight's {scored['scored']} recordings failed, over the "
                           f"{max_error_rate:.1%} limit; reasons in {report}/report.html")
        alarm.summary = summary  # what --json prints beside the error
        raise alarm
    return summary
