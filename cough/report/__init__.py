"""Evaluation and operational reports on PRED (the output of ``cough score``).

:func:`write_report` reads PRED (the Delta table of ``cough score``, only the columns it
needs), takes TRUE labels from PRED or a labels CSV, computes the metrics of
:mod:`cough.evaluation.metrics`, draws the plots and writes REPORT/: one PNG per plot, ``report.html``
(self-contained), then ``metrics.json``, the commit (docs/storage.md). Predictions are never
used as labels. See docs/report.md.

One module per step: :mod:`.read` (PRED, labels, run records, threshold),
:mod:`.operations` (runs, errors, drift), :mod:`.evaluate` (metrics, baselines, warnings),
:mod:`.plots`, :mod:`.page` (report.html), :mod:`.write` (the driver).
"""

from .operations import error_rate
from .read import read_predictions
from .write import write_report

__all__ = ["error_rate", "read_predictions", "write_report"]
