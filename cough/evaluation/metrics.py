"""Evaluation statistics that cannot flatter a model: true labels only, participant-level
bootstrap confidence intervals, a metadata-only shortcut baseline, and score drift.

Every function takes plain arrays and returns plain numbers; an undefined value is
``None`` with a reason (never NaN), so that ``metrics.json`` and the report can say
*why* something could not be computed. scikit-learn computes every curve and metric;
this module only decides what to compute on which rows and how to resample them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from ..errors import CoughError

#: Confidence level of every interval.
LEVEL = 0.95
#: A bootstrap interval is reported only when the statistic is defined in at least this
#: share of the resamples (an AUC is undefined in a resample that holds one class only).
MIN_VALID_RESAMPLES = 0.9
#: Population stability index above which the score distribution is said to have drifted
#: (the customary reading: < 0.1 stable, 0.1–0.2 moderate shift, > 0.2 significant shift).
PSI_WARN = 0.2
#: Scores needed in each of the two runs compared before a PSI is computed.
PSI_MIN_SCORES = 20
#: A variable (or the metadata baseline) "predicts the label" when its out-of-fold AUC is at
#: least this and the lower end of its 95% CI is above 0.5.
SHORTCUT_AUC = 0.6

RATES = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
#: ``confusion_matrix`` is ``[[tn, fp], [fn, tp]]``: rows the true label, columns the
#: model's call, each in the order negative, positive (sklearn's, labels=[0, 1]).
CONFUSION_LAYOUT = {"rows": "true label", "columns": "predicted label (score >= threshold)",
                    "order": ["negative", "positive"],
                    "cells": [["true_negative", "false_positive"], ["false_negative", "true_positive"]]}
CONFUSION_CELLS = ("true_negative", "false_positive", "false_negative", "true_positive")


def finite(value) -> float | None:
    """``float(value)``, or None for NaN/inf/None: what JSON and the report show.

    >>> finite(0.5), finite(float("nan")), finite(None)
    (0.5, None, None)
    """
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def bootstrap_weights(groups, *, n_boot: int = 1000, seed: int = 0) -> Iterator[np.ndarray]:
    """Row weights of ``n_boot`` bootstrap resamples that draw whole groups with replacement.

    A group drawn k times gives each of its rows weight k, which equals copying its rows k
    times; sklearn metrics take these as ``sample_weight``. With one row per group this is
    the ordinary row bootstrap.

    >>> w = next(bootstrap_weights(["a", "a", "b"], n_boot=1))
    >>> bool(w[0] == w[1])   # rows of one participant are drawn together
    True
    """
    codes, uniques = pd.factorize(np.asarray(groups, dtype=object), use_na_sentinel=False)
    n_groups = len(uniques)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        yield counts[codes].astype(float)


def bootstrap_draws(statistic: Callable[[np.ndarray], dict], groups, *, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Every value ``statistic(sample_weight)`` returns, over ``n_boot`` group resamples
    (NaN where undefined): ``{name: array of shape (n_boot,)}``."""
    import sklearn

    draws: dict[str, list[float]] = {}
    # The inputs were validated once; skip sklearn's per-call checks in this hot loop.
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        for weights in bootstrap_weights(groups, n_boot=n_boot, seed=seed):
            for name, value in statistic(weights).items():
                draws.setdefault(name, []).append(np.nan if value is None else float(value))
    return {name: np.asarray(values) for name, values in draws.items()}


def percentile_intervals(draws: dict[str, np.ndarray], *, level: float = LEVEL) -> tuple[dict, dict]:
    """``(intervals, reasons)`` from :func:`bootstrap_draws`: ``intervals[name]`` is the
    percentile interval ``[low, high]`` or None, and ``reasons[name]`` says why it is None."""
    intervals: dict[str, list[float] | None] = {}
    reasons: dict[str, str] = {}
    tail = 100 * (1 - level) / 2
    for name, values in draws.items():
        ok = np.isfinite(values)
        if ok.mean() < MIN_VALID_RESAMPLES:
            intervals[name] = None
            reasons[name] = (f"defined in only {ok.mean():.0%} of {len(values)} bootstrap resamples of the "
                             f"participants (too few participants of one class)")
        else:
            low, high = np.percentile(values[ok], [tail, 100 - tail])
            intervals[name] = [float(low), float(high)]
    return intervals, reasons


def bootstrap_ci(statistic: Callable[[np.ndarray], dict], groups, *, n_boot: int = 1000, seed: int = 0,
                 level: float = LEVEL) -> tuple[dict, dict]:
    """Percentile intervals of every value ``statistic(sample_weight)`` returns, over group resamples.

    Returns ``(intervals, reasons)``: ``intervals[name]`` is ``[low, high]`` or None, and
    ``reasons[name]`` says why it is None.

    >>> y, s = np.array([0, 1] * 20), np.linspace(0, 1, 40)
    >>> ci, why = bootstrap_ci(lambda w: {"auc": auc(y, s, w)}, np.arange(40), n_boot=200)
    >>> ci["auc"][0] < auc(y, s) < ci["auc"][1]
    True
    """
    return percentile_intervals(bootstrap_draws(statistic, groups, n_boot=n_boot, seed=seed), level=level)


def wilson(successes: float, n: float, *, level: float = LEVEL) -> list[float] | None:
    """Wilson score interval ``[low, high]`` of the proportion ``successes / n`` (None when
    ``n`` is 0). ``n`` may be an effective sample size (not whole). Unlike a percentile
    bootstrap, it keeps its width at 0% and 100%: 26 of 26 gives about 87% to 100%.
    (scipy's ``binomtest(...).proportion_ci(method="wilson")`` takes whole counts only.)

    >>> [round(x, 3) for x in wilson(26, 26)]
    [0.871, 1.0]
    """
    from scipy.stats import norm

    if n <= 0:
        return None
    z = float(norm.ppf(0.5 + level / 2))
    p, z2 = successes / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return [max(0.0, center - half), min(1.0, center + half)]


def clustered_wilson(hits, groups, boot_values, *, level: float = LEVEL) -> list[float] | None:
    """Wilson interval of the share of ``hits`` (bool per row of a rate's denominator) when
    rows come in clusters (``groups``: recordings of one participant resemble each other).

    The effective sample size is n / design effect. The design effect is the variance of the
    rate over participant resamples (``boot_values``) over the binomial variance p(1-p)/n,
    at least 1; at 0% or 100%, where both are 0, it is the mean number of rows per
    participant (as if each participant's rows all agreed). With one row per participant
    this is the plain Wilson interval.
    """
    hits = np.asarray(hits, dtype=bool)
    n = len(hits)
    if n == 0:
        return None
    p = hits.mean()
    per_group = n / len(pd.unique(np.asarray(groups, dtype=object)))
    boot = np.asarray(boot_values, dtype=float)
    boot = boot[np.isfinite(boot)]
    if 0 < p < 1 and len(boot) > 1:
        deff = max(1.0, float(np.var(boot, ddof=1)) / (p * (1 - p) / n))
    else:
        deff = per_group
    n_eff = n / deff
    return wilson(p * n_eff, n_eff, level=level)


#: How every interval in metrics.json and the report is computed (stated in both).
CI_METHOD = {
    "auc": "percentile bootstrap over participants (all recordings of a person drawn together)",
    "rates": ("Wilson score interval on the effective sample size: n divided by the design effect (the variance "
              "of the rate over participant resamples over the binomial variance, at least 1; at 0% or 100% the "
              "mean number of recordings per participant). Keeps its width at 0% and 100%."),
}


def auc(y, score, sample_weight=None) -> float:
    """ROC AUC (sklearn), NaN when the (weighted) rows hold one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    present = y if sample_weight is None else y[np.asarray(sample_weight) > 0]
    if len(np.unique(present)) < 2:
        return np.nan
    return float(roc_auc_score(y, score, sample_weight=sample_weight))


def confusion(y, predicted, sample_weight=None) -> np.ndarray:
    """``[[tn, fp], [fn, tp]]`` (sklearn's confusion_matrix with labels 0, 1)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y, predicted, labels=[0, 1], sample_weight=sample_weight)


def rates(cm: np.ndarray) -> dict:
    """Sensitivity, specificity, PPV, NPV and accuracy from ``[[tn, fp], [fn, tp]]``; NaN
    where the denominator is empty (as sklearn's recall/precision with ``zero_division=nan``).

    >>> rates(np.array([[8, 2], [1, 4]]))["sensitivity"]
    0.8
    """
    (tn, fp), (fn, tp) = np.asarray(cm, dtype=float)

    def ratio(a, b):
        return float(a / b) if b > 0 else np.nan

    return {"sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn),
            "accuracy": ratio(tp + tn, tp + tn + fp + fn)}


def rate_reasons(cm: np.ndarray, threshold: float) -> dict:
    """Why each rate of :func:`rates` is undefined, for the rates that are."""
    (tn, fp), (fn, tp) = np.asarray(cm)
    why = {}
    if tp + fn == 0:
        why["sensitivity"] = "no positive recording among the labelled ones"
    if tn + fp == 0:
        why["specificity"] = "no negative recording among the labelled ones"
    if tp + fp == 0:
        why["ppv"] = f"the model called no recording positive at threshold {threshold:g}"
    if tn + fn == 0:
        why["npv"] = f"the model called no recording negative at threshold {threshold:g}"
    if tn + fp + fn + tp == 0:
        why["accuracy"] = "no labelled recording"
    return why


@dataclass
class Evaluation:
    """What :func:`evaluate` measured on one set of scores: each value None when it cannot be
    computed, with the reason in ``not_computable``; intervals are ``[low, high]``.
    ``confusion_matrix`` is laid out as :data:`CONFUSION_LAYOUT` says; ``baselines``: ``{name:
    {auc, auc_ci, model_minus_baseline, model_minus_baseline_ci}}``, the comparison models.
    :meth:`metrics` is the part metrics.json shows as it is (docs/report.md)."""

    n: int
    n_groups: int
    threshold: float
    prevalence: float | None = None
    confusion_matrix: list[list[int]] | None = None
    confusion: dict[str, int] | None = None
    auc: float | None = None
    pr_auc: float | None = None
    brier: float | None = None
    calibration: dict | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    ppv: float | None = None
    npv: float | None = None
    accuracy: float | None = None
    auc_ci: list[float] | None = None
    sensitivity_ci: list[float] | None = None
    specificity_ci: list[float] | None = None
    ppv_ci: list[float] | None = None
    npv_ci: list[float] | None = None
    accuracy_ci: list[float] | None = None
    baselines: dict[str, dict] = field(default_factory=dict)
    not_computable: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict:
        """The measured values (every field but ``baselines`` and ``not_computable``), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("baselines", "not_computable")}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Evaluation":
        return cls(**d)


def evaluate(y, score, groups, *, threshold: float = 0.5, baselines: dict | None = None, n_boot: int = 1000,
             seed: int = 0) -> Evaluation:
    """Every headline metric of a model's scores against TRUE labels ``y`` (0/1), with
    95% intervals from a bootstrap over ``groups`` (participants).

    ``baselines``: ``{name: out-of-fold scores}`` of comparison models on the same rows
    (None for one that could not be fitted); fills :attr:`Evaluation.baselines` ``[name]`` =
    ``{auc, auc_ci, model_minus_baseline, model_minus_baseline_ci}``, the difference paired
    over the same participant resamples.

    >>> m = evaluate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], ["a", "b", "c", "d"], n_boot=50)
    >>> m.confusion_matrix, m.sensitivity, m.auc
    ([[1, 1], [1, 1]], 0.5, 0.75)
    >>> Evaluation.from_dict(m.to_dict()) == m
    True
    """
    y = np.asarray(y, dtype=int)
    score = np.asarray(score, dtype=float)
    baselines = {name: np.asarray(s, dtype=float) for name, s in (baselines or {}).items() if s is not None}
    predicted = (score >= threshold).astype(int)
    groups = np.asarray(groups, dtype=object)
    out = Evaluation(n=int(len(y)), n_groups=int(len(pd.unique(groups))), threshold=float(threshold))
    why = out.not_computable
    if len(y) == 0:
        reason = "no labelled recording was scored"
        out.not_computable = {k: reason for k in ("auc", "pr_auc", "brier", "confusion_matrix", *RATES, "calibration")}
        return out
    # scikit-learn (~1 s to import) only past this point: an unlabelled night's report needs none
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import average_precision_score, brier_score_loss

    both = len(np.unique(y)) == 2
    out.prevalence = float(y.mean())
    cm = confusion(y, predicted)
    out.confusion_matrix = cm.astype(int).tolist()
    out.confusion = dict(zip(CONFUSION_CELLS, (int(v) for v in cm.ravel())))
    point = rates(cm)
    why.update(rate_reasons(cm, threshold))
    out.auc = finite(auc(y, score))
    out.pr_auc = finite(average_precision_score(y, score)) if both else None
    if not both:
        only = "positive" if y[0] == 1 else "negative"
        for key in ("auc", "pr_auc"):
            why[key] = f"every labelled recording is {only}: ranking needs both classes"
    out.brier = float(brier_score_loss(y, score, labels=[0, 1]))
    if both:
        frac_pos, mean_pred = calibration_curve(y, score, n_bins=10, strategy="uniform")
        out.calibration = {"mean_predicted": mean_pred.tolist(), "fraction_positive": frac_pos.tolist(),
                           "n_bins": 10, "strategy": "uniform"}
    else:
        why["calibration"] = "every labelled recording has the same label"
    for name in RATES:
        setattr(out, name, finite(point[name]))

    def statistic(w):
        values = rates(confusion(y, predicted, w))
        values["auc"] = auc(y, score, w)
        for name, base in baselines.items():
            values[f"{name}.auc"] = auc(y, base, w)
            values[f"{name}.difference"] = values["auc"] - values[f"{name}.auc"]
        return values

    draws = bootstrap_draws(statistic, groups, n_boot=n_boot, seed=seed)
    intervals, ci_why = percentile_intervals(draws)
    out.auc_ci = intervals.get("auc") if out.auc is not None else None
    if out.auc is not None and out.auc_ci is None:
        why["auc_ci"] = ci_why.get("auc", "not computable")
    for name, (rows, hits) in _rate_rows(y, predicted).items():
        setattr(out, f"{name}_ci", clustered_wilson(hits[rows], groups[rows], draws[name])
                if getattr(out, name) is not None else None)
    for name, base in baselines.items():
        base_auc = finite(auc(y, base))
        diff = None if out.auc is None or base_auc is None else out.auc - base_auc
        out.baselines[name] = {
            "auc": base_auc, "auc_ci": intervals.get(f"{name}.auc") if base_auc is not None else None,
            "model_minus_baseline": diff,
            "model_minus_baseline_ci": intervals.get(f"{name}.difference") if diff is not None else None}
    return out


def choose_threshold(labels, scores) -> float:
    """The decision threshold that maximises Youden's J = sensitivity + specificity − 1 on
    the validation recordings (scikit-learn's ROC curve; ties go to the higher threshold).
    A recording is called positive when its score is ≥ the threshold.

    Every threshold between the best ROC point's score and the next lower validation score
    gives the same J; we take the midpoint, so that no validation recording sits on the
    threshold, where a rounding difference (another TensorFlow kernel, another machine)
    would flip its call.

    >>> round(choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 6)
    0.6
    """
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        raise CoughError("the validation split needs both classes to choose a threshold")
    fpr, tpr, thresholds = roc_curve(labels, np.asarray(scores, dtype=float), drop_intermediate=False)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    best = np.flatnonzero(j >= j.max() - 1e-9)[0]  # thresholds decrease: the first tie is the highest
    below = thresholds[best + 1] if best + 1 < len(thresholds) else 0.0  # the next lower score
    return float((thresholds[best] + below) / 2)


def binary_metrics(labels, scores, threshold: float) -> dict:
    """AUC (scikit-learn), accuracy, sensitivity and specificity at ``threshold``, against the
    true labels. Values that cannot be computed (one class only) are None.

    >>> binary_metrics([0, 1, 1], [0.2, 0.7, 0.4], threshold=0.5)["sensitivity"]
    0.5
    """
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    cm = confusion(labels, (scores >= threshold).astype(int)).astype(int)
    point = rates(cm)
    return {
        "n": int(len(labels)), "positives": int(labels.sum()), "auc": finite(auc(labels, scores)),
        **{name: finite(point[name]) for name in ("accuracy", "sensitivity", "specificity")},
        "confusion_matrix": cm.tolist(), "threshold": float(threshold),
    }


def _rate_rows(y: np.ndarray, predicted: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For each of :data:`RATES`, ``(rows of its denominator, hit per row)``."""
    pos, called = y == 1, predicted == 1
    return {"sensitivity": (pos, called), "specificity": (~pos, ~called), "ppv": (called, pos),
            "npv": (~called, ~pos), "accuracy": (np.ones(len(y), bool), pos == called)}


def auc_with_ci(y, score, groups, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """``{"n", "n_groups", "n_positive", "prevalence", "auc", "auc_ci"}`` and a ``reason``
    when the AUC or its interval cannot be computed."""
    y = np.asarray(y, dtype=int)
    out: dict = {"n": int(len(y)), "n_groups": int(len(pd.unique(np.asarray(groups, dtype=object)))),
           "n_positive": int(y.sum()), "prevalence": float(y.mean()) if len(y) else None,
           "auc": None, "auc_ci": None}
    if len(np.unique(y)) < 2:
        out["reason"] = ("no labelled recording" if len(y) == 0 else
                         f"all {len(y)} labelled recordings are {'positive' if y[0] else 'negative'}")
        return out
    out["auc"] = finite(auc(y, score))
    ci, why = bootstrap_ci(lambda w: {"auc": auc(y, score, w)}, groups, n_boot=n_boot, seed=seed)
    out["auc_ci"] = ci["auc"]
    if ci["auc"] is None:
        out["reason"] = f"AUC interval: {why['auc']}"
    return out


def stratified_auc(y, score, strata, groups, *, by: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """The AUC within each level of a confounder, pooled: how well the model ranks a positive
    above a negative **recorded the same way** (same channel, same site, ...), so that a
    model that only learned the channel scores 0.5 here however high its raw AUC.

    Each level's AUC is weighted by its number of (positive, negative) pairs, which makes
    the pooled value the probability that a random positive outranks a random negative of
    the same level (ties count half). Levels with one class only hold no pair and add
    nothing; they are listed with a reason. The interval is a bootstrap over ``groups``
    (participants). Returns ``{"by", "auc", "auc_ci", "levels", "n_pairs"}`` and a
    ``reason`` when the AUC or its interval cannot be computed.

    >>> y = [0, 1, 0, 1] * 10
    >>> channel = ["8000", "8000", "48000", "48000"] * 10
    >>> shortcut = [0.1, 0.2, 0.8, 0.9] * 10       # ranks by channel, barely by cough
    >>> r = stratified_auc(y, shortcut, channel, range(40), by="sample_rate", n_boot=50)
    >>> r["auc"], [lv["auc"] for lv in r["levels"]]
    (1.0, [1.0, 1.0])
    >>> channel_only = [0.2, 0.2, 0.8, 0.8] * 10   # knows the channel, not the cough
    >>> stratified_auc(y, channel_only, channel, range(40), by="sample_rate", n_boot=50)["auc"]
    0.5
    """
    y = np.asarray(y, dtype=int)
    score = np.asarray(score, dtype=float)
    strata = np.asarray(strata, dtype=object)
    names = list(pd.unique(strata))
    masks = [strata == name for name in names]

    def pooled(w=None) -> float:
        w = np.ones(len(y)) if w is None else w
        total = weight = 0.0
        for m in masks:
            pairs = w[m][y[m] == 1].sum() * w[m][y[m] == 0].sum()
            if pairs > 0:
                total += pairs * auc(y[m], score[m], w[m])
                weight += pairs
        return total / weight if weight else np.nan

    levels: list[dict] = []
    for name, m in zip(names, masks):
        n_pos, n_neg = int(y[m].sum()), int((y[m] == 0).sum())
        level = {"level": str(name), "n": int(m.sum()), "n_positive": n_pos, "n_negative": n_neg,
                 "n_pairs": n_pos * n_neg,
                 "auc": finite(auc(y[m], score[m])) if n_pos and n_neg else None}
        if not (n_pos and n_neg):
            level["reason"] = f"only {'positive' if n_pos else 'negative'} recordings: no pair to rank"
        levels.append(level)
    out: dict = {"by": by, "auc": finite(pooled()), "auc_ci": None, "levels": levels,
           "n_pairs": int(sum(lv["n_pairs"] for lv in levels))}
    if out["auc"] is None:
        out["reason"] = (f"no level of {by} holds both classes: the label is confounded with {by} "
                         f"completely, and no within-level comparison is possible")
        return out
    ci, why = bootstrap_ci(lambda w: {"auc": pooled(w)}, groups, n_boot=n_boot, seed=seed)
    out["auc_ci"] = ci["auc"]
    if ci["auc"] is None:
        out["reason"] = f"interval: {why['auc']}"
    return out


def as_levels(values: pd.Series, *, max_levels: int = 10, bins: int = 4) -> pd.Series:
    """A column as category levels (strings): text as is, numbers with at most
    ``max_levels`` distinct values as is, other numbers cut into ``bins`` quantile bins;
    missing values are the level ``"(missing)"``.

    >>> as_levels(pd.Series([8000, 48000, None])).tolist()
    ['8000', '48000', '(missing)']
    """
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > max_levels:
        values = pd.qcut(values.astype(float), bins, duplicates="drop").astype(object)
    out = values.astype(object).where(values.notna(), "(missing)")
    return out.map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))


def grouped_out_of_fold(features: pd.DataFrame, y, groups, *, n_splits: int = 5,
                        seed: int = 0) -> tuple[np.ndarray | None, str | None]:
    """Out-of-fold P(positive) of a classifier that sees only ``features``.

    Each column becomes levels (:func:`as_levels`), one-hot encoded, into a logistic
    regression: per level, in effect, the share of positives seen in training. Folds come
    from StratifiedGroupKFold: a participant's recordings are never split between
    training and prediction. Returns ``(scores, None)`` or ``(None, reason)``.

    >>> X = pd.DataFrame({"sample_rate": [8000, 48000] * 20})
    >>> s, _ = grouped_out_of_fold(X, [1, 0] * 20, range(40))
    >>> bool(auc([1, 0] * 20, s) > 0.9)
    True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    y = np.asarray(y, dtype=int)
    groups = np.asarray(groups, dtype=object)
    per_class = [len(pd.unique(groups[y == c])) for c in (0, 1)]
    k = min(n_splits, *per_class)
    if k < 2:
        return None, (f"grouped cross-validation needs at least 2 participants of each class "
                      f"(have {per_class[1]} positive, {per_class[0]} negative)")
    X = pd.DataFrame({col: as_levels(features[col]) for col in features.columns})
    scores = np.full(len(y), np.nan)
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in folds.split(X, y, groups):
        if len(np.unique(y[train])) < 2:
            return None, "a cross-validation fold's training part holds one class only"
        model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=1000))
        model.fit(X.iloc[train], y[train])
        scores[test] = model.predict_proba(X.iloc[test])[:, 1]
    return scores, None


def predicts_label(result: dict) -> bool:
    """True when an out-of-fold AUC result shows that its inputs alone predict the label
    (AUC ≥ :data:`SHORTCUT_AUC` and the 95% CI above 0.5)."""
    return (result.get("auc") is not None and result["auc"] >= SHORTCUT_AUC
            and result.get("auc_ci") is not None and result["auc_ci"][0] > 0.5)


def psi(reference, current, *, bins: int = 10) -> float:
    """Population stability index of ``current`` scores against ``reference`` scores, over
    ``bins`` equal-width bins of [0, 1]; empty bins count as 0.0001 of their run.

    PSI = Σ (c − r)·ln(c / r), the symmetrised Kullback–Leibler divergence (scipy rel_entr).

    >>> psi([0.1, 0.2, 0.8, 0.9] * 10, [0.1, 0.2, 0.8, 0.9] * 10)
    0.0
    """
    from scipy.special import rel_entr

    edges = np.linspace(0.0, 1.0, bins + 1)
    r = np.histogram(np.clip(reference, 0, 1), bins=edges)[0].astype(float)
    c = np.histogram(np.clip(current, 0, 1), bins=edges)[0].astype(float)
    r = np.maximum(r / r.sum(), 1e-4)
    c = np.maximum(c / c.sum(), 1e-4)
    return float(np.sum(rel_entr(c, r) + rel_entr(r, c)))
