"""cough.evaluation.metrics on its own: the statistics every report and training run rests on."""

from __future__ import annotations

import numpy as np
import pytest

from cough.evaluation import metrics as M

from .helpers import N_BOOT, scores_for


def test_group_bootstrap_is_wider_than_row_bootstrap_when_participants_repeat():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 60)
    scores = scores_for(labels, rng, 1.5)
    # every participant gives 5 identical-looking recordings: 300 rows but only 60 independent people
    y, s, g = np.repeat(labels, 5), np.repeat(scores, 5), np.repeat(np.arange(60), 5)
    by_group = M.evaluate(y, s, g, n_boot=N_BOOT)
    by_row = M.evaluate(y, s, np.arange(len(y)), n_boot=N_BOOT)
    people = M.evaluate(labels, scores, np.arange(60), n_boot=N_BOOT)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert by_group["auc"] == pytest.approx(by_row["auc"])
    assert width(by_group["auc_ci"]) > 1.5 * width(by_row["auc_ci"])
    # resampling participants gives about the interval of the 60 independent people
    assert width(by_group["auc_ci"]) == pytest.approx(width(people["auc_ci"]), rel=0.35)
    assert width(by_group["accuracy_ci"]) > 1.5 * width(by_row["accuracy_ci"])
