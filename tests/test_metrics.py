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
    assert by_group.auc == pytest.approx(by_row.auc)
    assert width(by_group.auc_ci) > 1.5 * width(by_row.auc_ci)
    # resampling participants gives about the interval of the 60 independent people
    assert width(by_group.auc_ci) == pytest.approx(width(people.auc_ci), rel=0.35)
    assert width(by_group.accuracy_ci) > 1.5 * width(by_row.accuracy_ci)


# ------------------------------------------------------------------ point estimates


def _width(ci):
    return ci[1] - ci[0]


def test_auc_is_sklearns_roc_auc_plain_and_weighted():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = scores_for(y, rng, 1.0)
    w = rng.integers(0, 4, 80).astype(float)
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert M.auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w))
    assert M.auc(y, s, w) != pytest.approx(M.auc(y, s))  # the weights count
    assert M.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0 and M.auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0


def test_auc_is_nan_with_one_class_even_when_weights_leave_only_one():
    assert np.isnan(M.auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert np.isnan(M.auc([0, 1, 1], [0.1, 0.5, 0.9], sample_weight=[0, 2, 1]))  # the negative drawn 0 times
    assert M.auc([0, 1, 1], [0.1, 0.5, 0.9], sample_weight=[1, 2, 0]) == 1.0


def test_confusion_and_rates_on_a_hand_made_case():
    y = [0, 0, 0, 0, 1, 1, 1]
    predicted = [0, 0, 1, 0, 1, 1, 0]
    cm = M.confusion(y, predicted)
    assert cm.tolist() == [[3, 1], [1, 2]]  # [[tn, fp], [fn, tp]]
    r = M.rates(cm)
    assert r == pytest.approx({"sensitivity": 2 / 3, "specificity": 3 / 4, "ppv": 2 / 3, "npv": 3 / 4,
                               "accuracy": 5 / 7})
    weighted = M.confusion(y, predicted, sample_weight=[2, 1, 1, 1, 1, 1, 3])
    assert weighted.tolist() == [[4, 1], [3, 2]]
    assert list(M.RATES) == list(r)
    assert M.CONFUSION_CELLS == tuple(c for row in M.CONFUSION_LAYOUT["cells"] for c in row)


def test_rates_are_nan_with_a_reason_where_their_denominator_is_empty():
    cm = np.array([[5, 0], [0, 0]])  # only negatives, all called negative
    r = M.rates(cm)
    assert np.isnan(r["sensitivity"]) and np.isnan(r["ppv"])
    assert (r["specificity"], r["npv"], r["accuracy"]) == (1.0, 1.0, 1.0)
    why = M.rate_reasons(cm, 0.35)
    assert set(why) == {"sensitivity", "ppv"}
    assert why["sensitivity"] == "no positive recording among the labelled ones"
    assert why["ppv"] == "the model called no recording positive at threshold 0.35"
    assert set(M.rate_reasons(np.zeros((2, 2)), 0.5)) == set(M.RATES)


def test_finite():
    assert M.finite(1) == 1.0 and isinstance(M.finite(np.float32(0.25)), float) and M.finite(np.int64(3)) == 3.0
    assert M.finite(float("inf")) is None and M.finite(-np.inf) is None and M.finite(np.nan) is None
    assert M.finite(None) is None and M.finite(0.0) == 0.0


def test_binary_metrics_on_a_hand_made_case_and_with_one_class():
    m = M.binary_metrics([0, 0, 1, 1, 1], [0.1, 0.6, 0.7, 0.4, 0.9], threshold=0.5)
    assert (m["n"], m["positives"], m["threshold"]) == (5, 3, 0.5)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == 0.5 and m["accuracy"] == 0.6
    assert m["auc"] == pytest.approx(5 / 6)
    one = M.binary_metrics([1, 1], [0.2, 0.9], threshold=0.5)
    assert one["auc"] is None and one["specificity"] is None and one["sensitivity"] == 0.5


# ------------------------------------------------------------------ choose_threshold


@pytest.mark.parametrize("labels, scores, expected", [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.6),     # best point at 0.8, next lower score 0.4
    ([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], 0.45),     # separable: midway between the classes
    ([0, 1, 0, 1], [0.2, 0.4, 0.6, 0.8], 0.7),      # J ties at 0.8 and 0.4: the higher one wins
])
def test_choose_threshold_maximises_youdens_j_midway_to_the_next_lower_score(labels, scores, expected):
    assert M.choose_threshold(labels, scores) == pytest.approx(expected)


def test_choose_threshold_reaches_the_best_j_and_no_validation_score_sits_on_it():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(scores_for(y, rng, 2.0), 3)  # rounded: ties among scores
    t = M.choose_threshold(y, s)

    def j(threshold):
        called = s >= threshold
        return called[y == 1].mean() - called[y == 0].mean()

    assert j(t) == pytest.approx(max(j(c) for c in np.unique(s)))
    assert not np.any(s == t)
    assert t == M.choose_threshold(list(y), list(s))  # deterministic


def test_choose_threshold_needs_both_classes():
    from cough.errors import CoughError

    with pytest.raises(CoughError, match="needs both classes") as err:
        M.choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])
    assert err.value.exit_code == 1


# ------------------------------------------------------------------ intervals


def test_wilson_matches_scipys_for_whole_counts_and_keeps_width_at_the_extremes():
    from scipy.stats import binomtest

    for k, n in [(7, 20), (0, 12), (26, 26), (50, 100)]:
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert M.wilson(k, n) == pytest.approx([ci.low, ci.high])
    low, high = M.wilson(26, 26)
    assert high == 1.0 and low == pytest.approx(0.871, abs=1e-3)
    assert M.wilson(0, 0) is None
    assert _width(M.wilson(7, 20, level=0.99)) > _width(M.wilson(7, 20))


def test_clustered_wilson_at_100_percent_uses_the_rows_per_participant():
    hits, groups = np.ones(30, bool), np.repeat(np.arange(10), 3)
    # every participant's rows agree: 30 rows hold only 10 participants' worth of evidence
    assert M.clustered_wilson(hits, groups, np.ones(N_BOOT)) == pytest.approx(M.wilson(10, 10))
    # one row per participant: the plain Wilson interval
    assert M.clustered_wilson(hits, np.arange(30), np.ones(N_BOOT)) == pytest.approx(M.wilson(30, 30))
    assert M.clustered_wilson([], [], []) is None


def _clustered_rate(rng, n_groups, per=3):
    groups = np.repeat(np.arange(n_groups), per)
    person = rng.random(n_groups) < 0.7
    hits = np.repeat(person, per) ^ (rng.random(n_groups * per) < 0.1)
    draws = M.bootstrap_draws(lambda w: {"rate": np.average(hits, weights=w)}, groups, n_boot=N_BOOT)
    return hits, groups, draws["rate"]


def test_clustered_wilson_contains_the_rate_is_wider_than_rows_suggest_and_narrows_with_participants():
    rng = np.random.default_rng(1)
    hits, groups, boot = _clustered_rate(rng, 20)
    few = M.clustered_wilson(hits, groups, boot)
    assert few[0] < hits.mean() < few[1]
    assert _width(few) > _width(M.wilson(hits.sum(), len(hits)))  # 60 rows of 20 people are not 60 people
    hits, groups, boot = _clustered_rate(rng, 200)
    many = M.clustered_wilson(hits, groups, boot)
    assert many[0] < hits.mean() < many[1]
    assert _width(many) < 0.6 * _width(few)


def test_bootstrap_weights_draw_whole_groups_reproducibly():
    groups = ["a", "a", "b", "c", "c", "c"]
    draws = list(M.bootstrap_weights(groups, n_boot=50, seed=7))
    assert len(draws) == 50
    for w in draws:
        assert w[0] == w[1] and w[3] == w[4] == w[5]  # a participant's rows are drawn together
        assert w[0] + w[2] + w[3] == 3  # three participants drawn with replacement
    again = list(M.bootstrap_weights(groups, n_boot=50, seed=7))
    assert all(np.array_equal(a, b) for a, b in zip(draws, again))
    assert not all(np.array_equal(a, b) for a, b in zip(draws, M.bootstrap_weights(groups, n_boot=50, seed=8)))


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_participants():
    rng = np.random.default_rng(2)
    widths = []
    for n in (40, 400):
        y = np.tile([0, 1], n // 2)
        s = scores_for(y, rng, 1.5)
        point = M.auc(y, s)
        ci, why = M.bootstrap_ci(lambda w, y=y, s=s: {"auc": M.auc(y, s, w)}, np.arange(n), n_boot=100)
        assert why == {} and ci["auc"][0] < point < ci["auc"][1]
        widths.append(_width(ci["auc"]))
    assert widths[1] < 0.5 * widths[0]


def test_percentile_intervals_need_enough_valid_resamples():
    values = np.linspace(0, 1, 200)
    half = values.copy()
    half[::2] = np.nan
    mostly = values.copy()
    mostly[:10] = np.nan  # 95% valid
    intervals, reasons = M.percentile_intervals({"half": half, "mostly": mostly, "all": values})
    assert intervals["half"] is None
    assert reasons["half"].startswith("defined in only 50% of 200 bootstrap resamples")
    assert set(reasons) == {"half"}
    assert intervals["all"] == pytest.approx([0.025, 0.975])
    assert intervals["mostly"] == pytest.approx(list(np.percentile(mostly[10:], [2.5, 97.5])))
    narrow, _ = M.percentile_intervals({"all": values}, level=0.5)
    assert narrow["all"] == pytest.approx([0.25, 0.75])


def test_auc_with_ci_says_why_when_it_cannot():
    rng = np.random.default_rng(5)
    y = np.tile([0, 1], 30)
    out = M.auc_with_ci(y, scores_for(y, rng, 2.0), np.arange(60), n_boot=N_BOOT)
    assert (out["n"], out["n_groups"], out["n_positive"], out["prevalence"]) == (60, 60, 30, 0.5)
    assert out["auc_ci"][0] < out["auc"] < out["auc_ci"][1] and "reason" not in out
    one = M.auc_with_ci([1, 1, 1], [0.2, 0.3, 0.4], ["a", "b", "c"], n_boot=N_BOOT)
    assert (one["auc"], one["auc_ci"], one["reason"]) == (None, None, "all 3 labelled recordings are positive")
    assert M.auc_with_ci([], [], [], n_boot=N_BOOT)["reason"] == "no labelled recording"
    # two participants, one of each class: most resamples hold one class only
    few = M.auc_with_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], ["a", "a", "b", "b"], n_boot=N_BOOT)
    assert few["auc"] == 1.0 and few["auc_ci"] is None and few["reason"].startswith("AUC interval: defined in only")


# ------------------------------------------------------------------ evaluate


def test_evaluate_with_no_labelled_rows_gives_none_with_reasons():
    m = M.evaluate([], [], [], n_boot=N_BOOT)
    assert m.n == 0 and m.auc is None and m.sensitivity_ci is None and m.confusion_matrix is None
    assert m.not_computable["auc"] == "no labelled recording was scored"


def test_evaluate_with_one_class_says_ranking_needs_both():
    m = M.evaluate([1, 1, 1, 1], [0.2, 0.6, 0.7, 0.9], ["a", "b", "c", "d"], n_boot=N_BOOT)
    assert m.auc is None and m.pr_auc is None and m.calibration is None
    assert m.not_computable["auc"] == "every labelled recording is positive: ranking needs both classes"
    assert m.sensitivity == 0.75 and m.specificity is None
    assert m.sensitivity_ci[0] < 0.75 < m.sensitivity_ci[1]
    assert m.confusion == {"true_negative": 0, "false_positive": 0, "false_negative": 1, "true_positive": 3}


def test_evaluate_compares_a_baseline_on_the_same_resamples():
    rng = np.random.default_rng(6)
    y = np.tile([0, 1], 30)
    model = scores_for(y, rng, 4.0)
    chance = rng.random(len(y))
    m = M.evaluate(y, model, np.arange(len(y)), baselines={"metadata": chance, "unfitted": None}, n_boot=100)
    base = m.baselines["metadata"]
    assert set(m.baselines) == {"metadata"}
    assert base["auc"] == pytest.approx(M.auc(y, chance))
    assert base["model_minus_baseline"] == pytest.approx(m.auc - base["auc"])
    low, high = base["model_minus_baseline_ci"]
    assert 0 < low < base["model_minus_baseline"] < high  # a clearly better model: the difference excludes 0


# ------------------------------------------------------------------ shortcuts and drift


def test_stratified_auc_sees_through_a_channel_shortcut():
    # positives recorded mostly on the 48 kHz channel; a "model" that only knows the channel
    y = np.array([1] * 10 + [0] * 30 + [1] * 30 + [0] * 10)
    channel = ["8000"] * 40 + ["48000"] * 40
    channel_only = np.array([0.2] * 40 + [0.8] * 40)
    assert M.auc(y, channel_only) == pytest.approx(0.75)  # looks useful ...
    r = M.stratified_auc(y, channel_only, channel, range(80), by="sample_rate", n_boot=100)
    assert r["auc"] == pytest.approx(0.5)  # ... ranks nothing among recordings made the same way
    assert r["by"] == "sample_rate" and r["n_pairs"] == 10 * 30 + 30 * 10
    assert [(lv["level"], lv["n_positive"], lv["n_negative"]) for lv in r["levels"]] == \
        [("8000", 10, 30), ("48000", 30, 10)]
    assert r["auc_ci"][0] <= 0.5 <= r["auc_ci"][1]
    # a model that ranks within each channel keeps its AUC
    within = channel_only + np.where(y == 1, 0.1, 0.0)
    assert M.stratified_auc(y, within, channel, range(80), by="sample_rate", n_boot=100)["auc"] == 1.0


def test_stratified_auc_levels_with_one_class_add_nothing_and_say_why():
    y = [0, 1, 0, 1, 1, 1]
    strata = ["a", "a", "a", "a", "b", "b"]
    r = M.stratified_auc(y, [0.1, 0.9, 0.2, 0.8, 0.1, 0.1], strata, range(6), by="site", n_boot=N_BOOT)
    assert r["auc"] == 1.0  # level b's low scores are never compared with a's negatives
    b = r["levels"][1]
    assert (b["n_pairs"], b["auc"], b["reason"]) == (0, None, "only positive recordings: no pair to rank")
    confounded = M.stratified_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], ["x", "x", "y", "y"], range(4), by="site",
                                  n_boot=N_BOOT)
    assert confounded["auc"] is None and "confounded with site completely" in confounded["reason"]


def test_as_levels_keeps_few_values_bins_many_and_names_missing():
    import pandas as pd

    assert M.as_levels(pd.Series(["mp3", None, "ogg"])).tolist() == ["mp3", "(missing)", "ogg"]
    assert M.as_levels(pd.Series([1.5, 2.0, 1.5])).tolist() == ["1.5", "2", "1.5"]
    many = M.as_levels(pd.Series(np.linspace(0, 60, 100)))
    assert many.nunique() == 4 and all(isinstance(v, str) for v in many)


def test_grouped_out_of_fold_finds_a_metadata_shortcut_and_says_when_it_cannot_run():
    import pandas as pd

    X = pd.DataFrame({"sample_rate": [8000, 48000] * 20})
    s, why = M.grouped_out_of_fold(X, [1, 0] * 20, np.repeat(np.arange(20), 2))
    assert why is None and len(s) == 40 and np.isfinite(s).all()
    assert M.auc([1, 0] * 20, s) > 0.9
    none, why = M.grouped_out_of_fold(X, [1, 0] * 20, ["p", "q"] * 20)
    assert none is None
    assert why == ("grouped cross-validation needs at least 2 participants of each class "
                   "(have 1 positive, 1 negative)")


def test_predicts_label_needs_a_high_auc_and_an_interval_above_chance():
    assert M.predicts_label({"auc": 0.7, "auc_ci": [0.55, 0.85]})
    assert not M.predicts_label({"auc": 0.7, "auc_ci": [0.45, 0.9]})
    assert not M.predicts_label({"auc": M.SHORTCUT_AUC - 0.01, "auc_ci": [0.52, 0.66]})
    assert M.predicts_label({"auc": M.SHORTCUT_AUC, "auc_ci": [0.51, 0.7]})
    assert not M.predicts_label({"auc": 0.9, "auc_ci": None}) and not M.predicts_label({"auc": None})


def test_psi_is_zero_for_the_same_scores_symmetric_and_flags_a_shift():
    from scipy.special import rel_entr

    rng = np.random.default_rng(9)
    a, b = rng.beta(2, 5, 500), rng.beta(5, 2, 500)
    assert M.psi(a, a) == 0.0
    assert M.psi(a, b) == pytest.approx(M.psi(b, a))
    assert M.psi(a, b) > M.PSI_WARN
    assert M.psi(a, rng.beta(2, 5, 500)) < 0.1  # the same distribution, resampled: stable
    edges = np.linspace(0, 1, 11)
    r = np.maximum(np.histogram(a, edges)[0] / 500, 1e-4)
    c = np.maximum(np.histogram(b, edges)[0] / 500, 1e-4)
    assert M.psi(a, b) == pytest.approx(float(np.sum(rel_entr(c, r) + rel_entr(r, c))))
    assert M.psi([-0.5, 1.5], [0.0, 1.0]) == 0.0  # out-of-range scores count in the end bins
