"""The evaluation: the metrics of :mod:`cough.evaluation.metrics` on the labelled, scored recordings
the model never saw, at recording and participant level, with the baselines, subgroups
and the warnings a reader needs."""

from __future__ import annotations


import numpy as np
import pandas as pd

from ..evaluation import metrics as M
from ..evaluation.baselines import baseline as fit_baseline
from ..evaluation.baselines import label_metadata_baseline, missing_gaps
from . import text as T
from ..tables.schema import METADATA_FEATURES
from .read import current_rows


#: Most levels shown per --by column; smaller levels are pooled as OTHER_LEVELS.
MAX_SUBGROUPS = 20
OTHER_LEVELS = "(other levels)"
#: Fewer participants than this: the report says its intervals are rough.
FEW_GROUPS = 30
#: The confounder the stratified AUC matches on when --by names none: the recording channel,
#: the strongest shortcut in crowdsourced archives (8 kHz call centres vs 48 kHz apps).
STRATIFY_DEFAULT = "sample_rate"


def labelled_rows(current: pd.DataFrame) -> pd.DataFrame:
    """Recordings that were scored and carry a TRUE label, with a ``participant`` for each."""
    if current.empty or "label" not in current:
        return current.iloc[0:0].assign(label=pd.Series(dtype="Int8"), participant=pd.Series(dtype="string"))
    rows = current[(current["status"] == "ok") & current["score"].notna() & current["label"].notna()].copy()
    # no participant known: the recording is its own participant
    key = next((c for c in ("recording_id", "path") if c in rows), None)
    fallback = rows[key] if key else pd.Series(rows.index.astype(str), index=rows.index)
    participant = rows["participant"] if "participant" in rows else pd.Series(pd.NA, index=rows.index, dtype="string")
    rows["participant"] = participant.astype(object).where(participant.notna(), fallback.astype(object)).astype(str)
    return rows


def duplicate_copies(frame: pd.DataFrame, seen_groups: set | None) -> tuple[set, set]:
    """``(seen, conflicting)`` recording ids among files that share their bytes.

    ``seen``: a copy of the recording sits in a participant the model trained or tuned on
    (a copy under another name has another default participant, so the participant alone misses it).
    ``conflicting``: the copies carry contradicting labels.
    """
    if "recording_id" not in frame or frame.empty:
        return set(), set()
    ids = frame[frame["recording_id"].notna()]
    seen = (set(ids.loc[ids["participant"].isin(seen_groups), "recording_id"])
            if seen_groups and "participant" in ids else set())
    if "label" not in ids:
        return seen, set()
    labels = ids[ids["label"].notna()].groupby("recording_id")["label"].nunique()
    return seen, set(labels.index[labels > 1])


def participant_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per participant: the mean of its recordings' scores and its label.
    Participants whose recordings carry both labels are left out; their number is returned."""
    if rows.empty:
        return pd.DataFrame({"participant": [], "score": [], "label": [], "n_recordings": []}), 0
    per = rows.groupby("participant").agg(score=("score", "mean"), label=("label", "max"),
                                    lowest=("label", "min"), n_recordings=("score", "size")).reset_index()
    mixed = per["label"] != per["lowest"]
    return per.loc[~mixed, ["participant", "score", "label", "n_recordings"]], int(mixed.sum())


def by_subgroup(rows: pd.DataFrame, column: str, *, n_boot: int, seed: int) -> dict:
    """Per level of ``column``: n, participants, prevalence and AUC with CI (or why not);
    and how well the variable ALONE predicts the label (out-of-fold AUC with CI)."""
    levels = M.as_levels(rows[column]) if len(rows) else pd.Series(dtype=object)
    counts = levels.value_counts()
    if len(counts) > MAX_SUBGROUPS:  # the largest levels, the rest together
        levels = levels.where(levels.isin(counts.index[:MAX_SUBGROUPS - 1]), OTHER_LEVELS)
    y = rows["label"].to_numpy(int)
    out: dict = {"levels": {}}
    for level in sorted(levels.unique(), key=str):
        mask = (levels == level).to_numpy()
        out["levels"][str(level)] = M.auc_with_ci(y[mask], rows["score"].to_numpy(float)[mask],
                                                  rows["participant"].to_numpy(object)[mask], n_boot=n_boot, seed=seed)
    out["variable_alone"] = variable_alone(levels.to_frame(column), rows, n_boot=n_boot, seed=seed)
    return out


def variable_alone(features: pd.DataFrame, rows: pd.DataFrame, *, n_boot: int, seed: int) -> dict:
    """Out-of-fold AUC (with CI) of a classifier that sees only ``features``."""
    y, groups = rows["label"].to_numpy(int), rows["participant"].to_numpy(object)
    if len(np.unique(y)) < 2:
        return {"auc": None, "auc_ci": None,
                "reason": "the labelled recordings hold one class only" if len(y) else "no labelled recording"}
    scores, reason = M.grouped_out_of_fold(features, y, groups, seed=seed)
    if scores is None:
        return {"auc": None, "auc_ci": None, "reason": reason}
    result = M.auc_with_ci(y, scores, groups, n_boot=n_boot, seed=seed)
    return {"auc": result["auc"], "auc_ci": result["auc_ci"], **({"reason": result["reason"]} if "reason" in result else {}),
            "_scores": scores}


def stratified(rows: pd.DataFrame, column: str, *, n_boot: int, seed: int) -> dict:
    """The confound-matched AUC (:func:`cough.evaluation.metrics.stratified_auc`) within the levels of
    ``column``, or why it cannot be computed."""
    if column not in rows or not rows[column].notna().any():
        return {"by": column, "auc": None, "auc_ci": None, "levels": [],
                "reason": f"PRED has no {column} values for the evaluated recordings"}
    if rows["label"].nunique() < 2:
        return {"by": column, "auc": None, "auc_ci": None, "levels": [],
                "reason": "the evaluated recordings hold one class only"}
    return M.stratified_auc(rows["label"].to_numpy(int), rows["score"].to_numpy(float),
                            M.as_levels(rows[column]).to_numpy(object), rows["participant"].to_numpy(object),
                            by=column, n_boot=n_boot, seed=seed)


def build_metrics(frame: pd.DataFrame, *, by=(), threshold: float, seen_groups: set | None = None,
                  n_boot: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """``(metrics, arrays)``: the metrics.json content (without run details) and the arrays
    the plots need. ``frame`` holds one model version's rows, every run; recordings of
    ``seen_groups`` (participants the model was trained or tuned on) are left out."""
    current = current_rows(frame)
    rows = labelled = labelled_rows(current)
    seen, conflicting = duplicate_copies(frame, seen_groups)
    n_labelled = len(rows)
    warnings: list[str] = []
    if conflicting:
        rows = rows[~rows["recording_id"].isin(conflicting)]
    n_conflicting = n_labelled - len(rows)
    if n_conflicting:
        warnings.append(f"{T.count(n_conflicting, 'recording')} {'appears' if n_conflicting == 1 else 'appear'} "
                        "under several file names with contradicting labels (the same bytes, labelled positive "
                        "once and negative once); left out, since neither label can be trusted.")
    n_trusted = len(rows)
    if seen_groups and len(rows):
        rows = rows[~rows["participant"].isin(seen_groups) & ~rows["recording_id"].isin(seen)]
    not_computable: dict[str, str] = {}
    y, score, groups = rows["label"].to_numpy(int), rows["score"].to_numpy(float), rows["participant"].to_numpy(object)

    # Shortcut baseline: recording metadata only, grouped cross-validation.
    present = [c for c in METADATA_FEATURES if c in rows and rows[c].notna().any()]
    baseline, base_scores = fit_baseline(rows[present], rows, seed=seed, none_reason=(
        f"PRED has none of the recording metadata columns ({', '.join(METADATA_FEATURES)}): the baseline cannot be "
        "computed"))
    # Label-metadata baseline (symptoms, site, ... from the labels CSV), when there are such columns.
    label_base, label_scores = label_metadata_baseline(labelled, rows, seed=seed)
    if not present and len(rows):
        warnings.append("The shortcut check could not run: PRED has no recording metadata "
                        f"({', '.join(METADATA_FEATURES)}), so nothing here shows whether the model hears the disease "
                        "or just recognises how recordings were made.")
    if present and len(present) < len(METADATA_FEATURES):
        warnings.append(f"PRED lacks {', '.join(c for c in METADATA_FEATURES if c not in present)}: the shortcut "
                        f"baseline sees only {', '.join(present)}.")

    m = M.evaluate(y, score, groups, threshold=threshold, n_boot=n_boot, seed=seed,
                   baselines={"shortcut_baseline": base_scores, "label_metadata_baseline": label_scores})
    not_computable.update(m.not_computable)
    for name, result in (("shortcut_baseline", baseline), ("label_metadata_baseline", label_base)):
        if result is not None:
            result.update(m.baselines.get(name, {}))
            if "reason" in result:
                not_computable[name] = result["reason"]
    metrics = {**m.metrics(), "n_labelled_scored": n_labelled, "excluded_conflicting_labels": n_conflicting,
               "excluded_training": n_trusted - len(rows),
               "shortcut_baseline": baseline, "label_metadata_baseline": label_base}

    metrics["stratified_auc"] = stratified(rows, by[0] if by else STRATIFY_DEFAULT, n_boot=n_boot, seed=seed)

    # Participant-level view.
    people, mixed = participant_rows(rows)
    g = M.evaluate(people["label"].to_numpy(int), people["score"].to_numpy(float), people["participant"].to_numpy(object),
                   threshold=threshold, n_boot=n_boot, seed=seed)
    not_computable.update({f"group_level.{k}": v for k, v in g.not_computable.items()})
    metrics["group_level"] = {
        **g.metrics(), "rule": ("one score per participant: the mean of the scores of its recordings; its label is "
                                "that of its recordings; participants whose recordings carry both labels are left out"),
        "mixed_label_groups": mixed}
    if mixed:
        warnings.append(f"{T.count(mixed, 'participant')} {'has' if mixed == 1 else 'have'} recordings with both "
                        "labels; left out of the participant-level view (the recording-level view keeps them).")

    # Subgroups.
    metrics["by_subgroup"] = {}
    alone_scores = {}
    for column in by:
        result = by_subgroup(rows, column, n_boot=n_boot, seed=seed)
        scores = result["variable_alone"].pop("_scores", None)
        if scores is not None:
            alone_scores[column] = scores
        metrics["by_subgroup"][column] = result

    warnings += shortcut_warnings(metrics)
    metrics["confounds"] = confound_warnings(metrics)
    metrics["warnings"] = warnings
    metrics["not_computable"] = not_computable
    arrays = {"rows": rows, "people": people, "baseline": base_scores, "label_baseline": label_scores,
              "alone": alone_scores, "current": current}
    return metrics, arrays


def shortcut_warnings(metrics: dict) -> list[str]:
    """Plain-language warnings about chance-level models and shortcuts."""
    out = []
    auc, ci = metrics.get("auc"), metrics.get("auc_ci")
    if auc is not None and ci is not None and ci[0] <= 0.5 <= ci[1]:
        out.append(f"The model's AUC ({T.num(auc)}, 95% CI {T.ci(ci)}) cannot be told apart from 0.5, a coin toss: "
                   "on this data there is no evidence that it separates positive from negative recordings.")
    if metrics["n_groups"] and metrics["n_groups"] < FEW_GROUPS and auc is not None:
        out.append(f"Only {metrics['n_groups']} participants: every interval in this report is rough.")
    return out + confound_warnings(metrics)


def confound_warnings(metrics: dict) -> list[str]:
    """The warnings that the model's skill may come from how recordings were made (the
    recording channel, a site) rather than from the cough."""
    out = []
    auc, ci = metrics.get("auc"), metrics.get("auc_ci")
    strat = metrics.get("stratified_auc") or {}
    if (ci is not None and ci[0] > 0.5 and strat.get("auc_ci") is not None and strat["auc_ci"][0] <= 0.5):
        out.append(f"Compared only with recordings of the same {strat['by']}, the model's AUC is {T.num(strat['auc'])} "
                   f"(95% CI {T.ci(strat['auc_ci'])}): its skill cannot be told apart from chance once the recording "
                   f"condition is matched.")
    for key, what, name, meaning, source in (
            ("shortcut_baseline", "Recording metadata", "the metadata-only baseline", "The model can score well by "
             "recognising how a recording was made instead of how the cough sounds.", "recording conditions"),
            ("label_metadata_baseline", "The labels' own metadata", "the label-metadata baseline", "A cough model "
             "is worth its recordings only where it beats what these columns already say.",
             "what the labels' metadata already say")):
        base = metrics.get(key) or {}
        if base.get("auc") is not None and M.predicts_label(base):
            out.append(f"{what} alone ({', '.join(base['features'])}) predicts the label: a model that never "
                       f"hears the cough reaches AUC {T.num(base['auc'])} (95% CI {T.ci(base['auc_ci'])}). {meaning}")
        if base.get("auc") is not None and auc is not None:
            diff_ci = base.get("model_minus_baseline_ci")
            if diff_ci is None or diff_ci[0] <= 0:
                out.append(f"The model (AUC {T.num(auc)}) does not beat {name} (AUC {T.num(base['auc'])}) "
                           f"beyond the uncertainty: the difference is {T.num(base['model_minus_baseline'])}"
                           + (f" (95% CI {T.ci(diff_ci)})" if diff_ci else "") +
                           f". Its apparent skill may come from {source} rather than from the disease.")
    for column, shares in missing_gaps(metrics.get("label_metadata_baseline") or {}).items():
        out.append(f"'{column}' is empty for {T.pct(shares['negative'])} of the negative and "
                   f"{T.pct(shares['positive'])} of the positive recordings: whether it was filled in tells the "
                   "label, so the label-metadata baseline may be learning how the labels were collected.")
    for column, result in metrics["by_subgroup"].items():
        alone = result["variable_alone"]
        if M.predicts_label(alone):
            out.append(f"'{column}' alone predicts the label (AUC {T.num(alone['auc'])}, 95% CI {T.ci(alone['auc_ci'])}): "
                       f"positives are more common in some {column} groups than in others, so a model can look "
                       f"accurate by recognising the {column}. Compare the AUC within each {column} group below.")
    return out


def fold_aucs(rows: pd.DataFrame, cv: dict | None) -> list[dict]:
    """Cross-validation's folds as this report's rows show them: for each fold of model.json's
    ``cv`` (its test participants), the recordings, participants, positives and the AUC of the
    out-of-fold scores, or why there is none (a fold of one class, as every fold of leave one
    participant out). The pooled out-of-fold AUC is the report's own."""
    if not cv or not cv.get("folds") or rows.empty:
        return []
    out = []
    for fold in cv["folds"]:
        part = rows[rows["participant"].isin(set(map(str, fold.get("test_groups", []))))]
        y = part["label"].to_numpy(int)
        entry = {"fold": fold.get("fold"), "participants": int(part["participant"].nunique()),
                 "recordings": int(len(part)), "positive": int(y.sum()), "auc": None}
        if len(np.unique(y)) == 2:
            entry["auc"] = M.finite(M.auc(y, part["score"].to_numpy(float)))
        else:
            entry["reason"] = "one class only" if len(part) else "no recording in this report"
        out.append(entry)
    return out
