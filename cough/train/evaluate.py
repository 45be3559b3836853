"""Training's numbers outside the network: class weights, and the metrics of each split from
window predictions (per recording by the scoring rule, then AUC and the threshold that
model.json records)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation.metrics import auc, binary_metrics, choose_threshold, finite
from ..model.inference import aggregate_windows, predict_windows


def class_weights(labels) -> dict[int, float]:
    """'balanced' weights (scikit-learn): n / (2 · n_class), so each class carries half the loss.

    >>> class_weights([0, 0, 0, 1])
    {0: 0.6666666666666666, 1: 2.0}
    """
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels, dtype=int)
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(weights[0]), 1: float(weights[1])}


def recording_scores(windows: pd.DataFrame) -> pd.DataFrame:
    """Window rows (recording_id, label, prob) → one row per recording, scored by
    :func:`cough.model.inference.aggregate_windows` (the rule scoring uses too)."""
    return (windows.groupby("recording_id", sort=True)
            .agg(label=("label", "first"), score=("prob", aggregate_windows), windows=("prob", "size"))
            .reset_index())


def evaluate_splits(predictions: pd.DataFrame) -> tuple[float, dict]:
    """Window predictions of the final model (split, recording_id, label, prob) → the
    threshold chosen on the validation recordings, and metrics per split at that threshold."""
    scores = {name: recording_scores(part) for name, part in predictions.groupby("split")}
    threshold = choose_threshold(scores["val"]["label"], scores["val"]["score"])
    return threshold, {name: binary_metrics(s["label"], s["score"], threshold) for name, s in scores.items()}


def evaluate_shard(model, shard, class_weight: dict, *, batch_size: int = 64) -> pd.DataFrame:
    """Window predictions over a whole (unsplit) shard: recording_id, window_index, label, prob, loss
    (class-weighted cross-entropy, the quantity training minimises)."""
    parts = []
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        prob = predict_windows(model, batch["image"], batch_size=batch_size)
        label = batch["label"].astype(int)
        p_true = np.clip(np.where(label == 1, prob, 1 - prob), 1e-7, 1.0)
        weight = np.where(label == 1, class_weight[1], class_weight[0])
        parts.append(pd.DataFrame({"recording_id": batch["recording_id"].astype(str),
                                   "window_index": batch["window_index"].astype(int), "label": label,
                                   "prob": prob, "loss": -np.log(p_true) * weight}))
    if not parts:
        return pd.DataFrame(columns=["recording_id", "window_index", "label", "prob", "loss"])
    return pd.concat(parts, ignore_index=True)


def recording_auc(windows: pd.DataFrame) -> float | None:
    """AUC over recordings (:func:`recording_scores`) of window predictions; None when undefined."""
    recs = recording_scores(windows)
    return finite(auc(recs["label"], recs["score"]))
