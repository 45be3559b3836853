"""The nightly job: score what arrived, report that night next to PRED, raise the alarm.

:func:`nightly` runs :func:`cough.score.score` on SOURCE (the file ledger keeps it to what
arrived since the last run), writes that night's operational report in
``PRED/_reports/<run_id>/`` (ignored by Delta readers) and raises a CoughError (exit 1)
when the night's error rate passes ``max_error_rate``. cough/commands/nightly.py parses the flags.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass, field

from .errors import CoughError, UsageError
from .score.settings import ScoreSettings, ScoreSummary
from .tables.maintain import MaintainSettings

REPORTS_DIR = "_reports"
log = logging.getLogger("cough.nightly")


@dataclass(frozen=True)
class NightSettings:
    """How to run a night: what to score (:class:`cough.score.settings.ScoreSettings`) and
    the error rate above which the night fails (exit 1)."""

    score: ScoreSettings = field(default_factory=ScoreSettings)
    max_error_rate: float = 0.05
    #: compact, checkpoint and vacuum PRED after the night (cough.tables.maintain); None: not
    maintain: MaintainSettings | None = None

    def __post_init__(self):
        if not 0 <= self.max_error_rate <= 1:
            raise UsageError("--max-error-rate must lie between 0 and 1")


@dataclass
class NightSummary:
    """The night's score summary, where its report went, and its error rate (both None when
    nothing new arrived)."""

    score: ScoreSummary
    report: str | None = None
    error_rate: float | None = None
    maintained: dict | None = None

    def to_dict(self) -> dict:
        return {**self.score.to_dict(), "report": self.report, "error_rate": self.error_rate,
                "maintained": self.maintained}


def nightly(source: str, model: str, pred: str, settings: NightSettings | None = None) -> NightSummary:
    """Score, report, and judge one night. Raises CoughError when the error rate is too high
    (after the report is written, so the reason is there to read; the error carries the
    night's summary)."""
    from .report import error_rate, write_report
    from .score import score
    from .tables.maintain import maintain
    from .tables.storage import Location

    settings = settings or NightSettings()
    scored = score(source, model, pred, settings.score)
    summary = NightSummary(scored)
    if scored.run_id is None:
        log.info("nothing new in %s since the last run: no report tonight", source)
        return summary
    if settings.maintain is not None:  # before the report, which then shows the tables' health after it
        summary.maintained = maintain(scored.pred, settings.maintain)
    report = Location.of(scored.pred).join(REPORTS_DIR, scored.run_id).uri
    write_report(scored.pred, report)
    rate = error_rate(scored.pred, run_id=scored.run_id)
    summary.report, summary.error_rate = report, rate
    if rate is not None and rate > settings.max_error_rate:
        raise CoughError(f"{rate:.1%} of tonight's {scored.counts.scored} recordings failed, over the "
                         f"{settings.max_error_rate:.1%} limit; reasons in {report}/report.html",
                         summary=summary.to_dict())
    return summary
