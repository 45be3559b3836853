"""Baselines that never hear the cough, beside which the report shows the model.

Two of them, with one core (:func:`baseline`): out-of-fold scores of a logistic regression
on one-hot levels, participants never split between training and prediction
(:func:`cough.evaluation.metrics.grouped_out_of_fold`); the report then compares each with the
model over the same participant resamples (:func:`cough.evaluation.metrics.evaluate`).

- the **shortcut baseline** sees how a recording was made (sample rate, channels,
  duration, format): can the channel alone tell the label?
- the **label-metadata baseline** sees the labels CSV's own extra columns (symptoms, site,
  age, ...), which ``cough featurize``/``cough score`` carry into PRED as text columns:
  does the audio model add anything to what a questionnaire already says?

Which label-metadata columns that baseline may see (:func:`usable_columns`; the rule is in
docs/report.md): every column of PRED, or of the labels CSV given to ``cough report``, that
cough does not write itself, except

- a column with **one value** (missing counts as a value): there is nothing to learn;
- an **identifier**: a text column in which more than half of the labelled recordings have a
  value of their own (a path, an id, free text), so it can only memorise rows (a column
  whose every value reads as a number, such as age, is cut into quartiles instead);
- a **restatement of the label**: every value of it (missing included) occurs with one label
  only, over all labelled recordings (a diagnosis or test-result column, a deterministic
  function of the label).

Whether a column was filled in counts as a value: a symptom field filled in only for
positives predicts the label through its missing values, and the report says so
(:func:`missing_by_class`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import metrics as M

#: How both baselines are fitted, as metrics.json and the report state it.
METHOD = ("logistic regression on one-hot levels (numbers with many values in quartiles), out-of-fold predictions "
          "from StratifiedGroupKFold (up to 5 folds, participants never split)")
#: The rule by which label-metadata columns are left out, as the report states it.
RULE = ("left out: a column with one value only; an identifier (a text column in which more than half of the "
        "labelled recordings have a value of their own); a restatement of the label (every value occurs with one "
        "label only)")
#: A used column whose share of missing values differs by at least this between the classes
#: predicts the label by whether it was filled in; the report says so.
MISSING_GAP = 0.5


def label_metadata_columns(names) -> list[str]:
    """The names among ``names`` (PRED's or a report frame's columns) that came from a labels
    CSV's extra columns: every name cough does not write or read itself.

    >>> label_metadata_columns(["path", "score", "sample_rate", "label", "participant", "site", "group"])
    ['site']
    """
    from ..tables.labels import INPUT_COLUMNS, reserved_columns
    from ..tables.schema import RENAMED

    ours = reserved_columns() | set(INPUT_COLUMNS) | set(RENAMED)  # RENAMED: 0.1's names of ours
    return [n for n in names if n not in ours]


def as_values(column: pd.Series) -> pd.Series:
    """A text column as numbers when every value it has reads as one (ages, counts), so that
    :func:`cough.evaluation.metrics.as_levels` cuts it into quartiles; else as it is.

    >>> as_values(pd.Series(["34", "61", None])).tolist(), as_values(pd.Series(["yes", "2"])).tolist()
    ([34.0, 61.0, nan], ['yes', '2'])
    """
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers.astype(float) if numbers.notna().sum() == column.notna().sum() else column


def usable_columns(labelled: pd.DataFrame, candidates) -> tuple[list[str], dict[str, str]]:
    """``(used, left_out)``: which of the label-metadata ``candidates`` the baseline sees, and
    why each other one is left out (the module's rule), judged over ``labelled``: every
    labelled, scored recording (``label`` 0/1), before any is set aside as seen in training.

    >>> rows = pd.DataFrame({"label": [0, 0, 1, 1], "cough": ["no", "yes", "yes", "yes"],
    ...                      "diagnosis": ["healthy", "healthy", "covid", "covid"],
    ...                      "file": ["a", "b", "c", "d"], "country": ["uk"] * 4})
    >>> used, left_out = usable_columns(rows, ["cough", "diagnosis", "file", "country"])
    >>> used, sorted(left_out)
    (['cough'], ['country', 'diagnosis', 'file'])
    """
    used, left_out = [], {}
    n = len(labelled)
    for column in candidates:
        values = labelled[column].astype(object).where(labelled[column].notna(), None).fillna("(missing)")
        distinct = values.nunique()
        if distinct < 2:
            left_out[column] = "one value only: nothing to learn"
        elif not pd.api.types.is_numeric_dtype(as_values(labelled[column])) and labelled[column].nunique() > n / 2:
            left_out[column] = (f"an identifier: {labelled[column].nunique()} distinct values in {n} labelled "
                                "recordings")
        elif (labelled.groupby(values.to_numpy())["label"].nunique() == 1).all():
            left_out[column] = "a restatement of the label: every value of it occurs with one label only"
        else:
            used.append(column)
    return used, left_out


def missing_by_class(labelled: pd.DataFrame, columns) -> dict[str, dict[str, float | None]]:
    """Per column, the share of negative and of positive recordings with no value in it.

    >>> missing_by_class(pd.DataFrame({"label": [0, 0, 1, 1], "fever": [None, None, "yes", None]}), ["fever"])
    {'fever': {'negative': 1.0, 'positive': 0.5}}
    """
    out: dict[str, dict[str, float | None]] = {}
    for column in columns:
        empty = labelled[column].isna()
        out[column] = {name: float(empty[labelled["label"] == value].mean()) if (labelled["label"] == value).any()
                       else None for name, value in (("negative", 0), ("positive", 1))}
    return out


def baseline(features: pd.DataFrame, rows: pd.DataFrame, *, seed: int = 0,
             none_reason: str) -> tuple[dict, np.ndarray | None]:
    """``(result, scores)``: a baseline that sees only ``features`` (one row per row of
    ``rows``, which holds ``label`` and ``participant``), as out-of-fold scores, or None and
    ``result["reason"]``. Its AUC, and the model's lead over it, come from
    :func:`cough.evaluation.metrics.evaluate` (``baselines=``), paired with the model's."""
    result = {"features": list(features.columns), "auc": None, "auc_ci": None, "method": METHOD}
    y = rows["label"].to_numpy(int)
    scores = None
    if features.columns.empty:
        result["reason"] = none_reason
    elif len(np.unique(y)) < 2:
        result["reason"] = "it needs scored recordings of both classes"
    else:
        scores, reason = M.grouped_out_of_fold(features, y, rows["participant"].to_numpy(object), seed=seed)
        if scores is None:
            result["reason"] = reason
    return result, scores


def label_metadata_baseline(labelled: pd.DataFrame, rows: pd.DataFrame, *,
                            seed: int = 0) -> tuple[dict | None, np.ndarray | None]:
    """``(result, scores)`` of the label-metadata baseline on the evaluated ``rows``, with
    the columns :func:`usable_columns` allows over ``labelled``; ``(None, None)`` when the
    frames carry no label-metadata column at all."""
    candidates = label_metadata_columns(rows.columns)
    if not candidates:
        return None, None
    used, left_out = usable_columns(labelled, candidates)
    features = pd.DataFrame({c: as_values(rows[c]) for c in used}, index=rows.index)
    result, scores = baseline(features, rows, seed=seed,
                              none_reason="every label-metadata column is left out by the rule")
    result.update(candidates=candidates, left_out=left_out, rule=RULE, missing=missing_by_class(rows, used))
    return result, scores


def missing_gaps(result: dict) -> dict[str, dict[str, float]]:
    """The used columns whose share of missing values differs between the classes by at
    least :data:`MISSING_GAP`: they tell the label by whether they were filled in."""
    return {c: shares for c, shares in result.get("missing", {}).items()
            if None not in shares.values() and abs(shares["negative"] - shares["positive"]) >= MISSING_GAP}
