"""Grouped K-fold cross-validation for small clinical sets.

The seed's own data are 121 segments from 16 patients: a 70/15/15 split by participant
leaves about two patients in test, and any AUC from it is noise. Cross-validation scores
every participant once, with a model that never saw them (out of fold); the report then
evaluates all of them with participant-bootstrap intervals.

Folds come from scikit-learn's StratifiedGroupKFold: a participant's recordings are
never split between folds, and each fold holds both classes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import CoughError

#: The run id prefix of out-of-fold predictions in PRED (the report recognises them).
OOF_RUN_PREFIX = "cv-"


#: ``--cv loo``: leave one participant out.
LEAVE_ONE_OUT = "loo"


def grouped_folds(recs: pd.DataFrame, *, k: int | str, seed: int = 0) -> list[list[str]]:
    """The test participants of each fold: every participant in exactly one. With ``k`` a
    number, stratified by label in people (a participant's majority label): each class's
    participants are shuffled with ``seed`` and dealt round-robin, the second class going on
    where the first stopped, so every fold holds both classes and folds differ in size by at
    most one participant, however uneven the recordings per participant. With ``k`` "loo",
    one fold per participant. ``recs``: one row per recording with ``participant`` and
    ``label`` (0/1).

    >>> recs = pd.DataFrame({"participant": [f"p{i}" for i in range(12)], "label": [0, 1] * 6})
    >>> folds = grouped_folds(recs, k=3)
    >>> sorted(g for f in folds for g in f) == sorted(recs["participant"]), [len(f) for f in folds]
    (True, [4, 4, 4])
    >>> [len(f) for f in grouped_folds(recs, k="loo")] == [1] * 12
    True
    """
    from .splits import participant_labels

    people = participant_labels(recs)
    if k == LEAVE_ONE_OUT:
        return [[str(p)] for p in people.index]
    assert isinstance(k, int)
    per_class = people.value_counts().reindex([0, 1], fill_value=0)
    if per_class.min() < k:
        raise CoughError(f"--cv {k} needs at least {k} participants of each class to put both classes in every "
                         f"fold; SHARDS has {int(per_class[1])} positive and {int(per_class[0])} negative: "
                         f"use a smaller K, or --cv {LEAVE_ONE_OUT}")
    rng = np.random.RandomState(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    dealt = 0
    for label in (0, 1):
        members = [str(p) for p in people.index[people == label]]
        rng.shuffle(members)
        for member in members:
            folds[dealt % k].append(member)
            dealt += 1
    return [sorted(f) for f in folds]


def oof_table(scores: pd.DataFrame, windows: pd.DataFrame, recordings: pa.Table, *, schema: pa.Schema,
              threshold: float, model_version: str, featurizer_version: str, run_id: str) -> pa.Table:
    """Out-of-fold predictions as PRED rows, and the OUT's ``rejected`` recordings (no cough:
    never trained on, never scored) as ``rejected`` rows with their reason, as ``cough score``
    writes them, so that a report counts them alike.

    ``scores``: one row per recording (recording_id, label, score) from
    :func:`cough.train.evaluate.recording_scores`; ``windows``: the window rows (recording_id, prob,
    and ``window_index`` order when present); ``recordings``: the featurize OUT's ``recordings``
    table (path, status, participant, duration_s, sample_rate, ..., metadata)."""
    listed = recordings.to_pylist()  # Arrow's nulls as None (pandas would make an integer column's NaN)
    by_id: dict = {}
    for rec in listed:
        by_id.setdefault(rec["recording_id"], rec)
    window_scores = windows.groupby("recording_id")["prob"].apply(lambda p: p.astype(np.float32).tolist())
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for rec in scores.itertuples(index=False):
        info = by_id[rec.recording_id]
        rows.append({**{c: info.get(c) for c in schema.names if c in info},
                     "recording_id": rec.recording_id, "status": "ok", "error": None,
                     "score": float(rec.score), "predicted": int(rec.score >= threshold),
                     "label": int(rec.label), "n_windows": len(window_scores[rec.recording_id]),
                     "window_scores": window_scores[rec.recording_id], "model_version": model_version,
                     "featurizer_version": featurizer_version, "run_id": run_id, "scored_at": now})
    for rec in listed:
        if rec["status"] == "rejected":
            rows.append({**{c: rec.get(c) for c in schema.names if c in rec}, "n_windows": 0,
                         "model_version": model_version, "featurizer_version": featurizer_version,
                         "run_id": run_id, "scored_at": now})
    return pa.Table.from_pylist(rows, schema=schema)
