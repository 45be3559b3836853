"""Can the images alone tell how a recording was made? A small linear probe.

If a logistic regression on the images' spectral profile predicts the recording channel
(``source``, ``sample_rate``), a CNN trained on the same images can learn the channel
instead of the cough. The probe measures that leak; a common band (``--bandwidth-hz``)
should bring it towards 0.5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import metrics as M


def image_profile(images: np.ndarray) -> np.ndarray:
    """Each image's mean colour per image row (frequency band), averaged over time.

    ``images``: ``(n, S, S, 3)`` uint8 → ``(n, 3 S)`` float in [0, 1]: the long-term
    spectrum as the CNN sees it, where a narrow channel shows as a dark top band.

    >>> image_profile(np.zeros((2, 150, 150, 3), np.uint8)).shape
    (2, 450)
    """
    return images.mean(axis=2, dtype=np.float32).reshape(len(images), -1) / 255.0


def probe_auc(features: np.ndarray, target, groups, *, n_splits: int = 5, seed: int = 0,
              n_boot: int = 1000) -> dict:
    """Out-of-fold AUC (with a participant bootstrap CI) of a logistic regression that
    predicts a two-level ``target`` from ``features`` ``(n, d)``; folds never split a
    participant (``groups``). Returns ``auc_with_ci``'s dict plus ``positive_level``, or
    ``{"auc": None, "reason": ...}``.

    >>> rng = np.random.default_rng(0)
    >>> target = np.repeat(["8000", "48000"], 20)
    >>> X = rng.normal(size=(40, 5)); X[:20, 0] += 3          # the channel leaks into feature 0
    >>> probe_auc(X, target, np.arange(40), n_boot=100)["auc"] > 0.9
    True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    target = pd.Series(np.asarray(target, dtype=object)).astype(str).to_numpy()
    levels = sorted(set(target))
    if len(levels) != 2:
        return {"auc": None, "auc_ci": None, "reason": f"the probe needs a target with 2 levels, not {len(levels)}"}
    y = (target == levels[1]).astype(int)
    groups = np.asarray(groups, dtype=object)
    per_class = [len(pd.unique(groups[y == c])) for c in (0, 1)]
    k = min(n_splits, *per_class)
    if k < 2:
        return {"auc": None, "auc_ci": None, "reason": "fewer than 2 participants of a level"}
    scores = np.full(len(y), np.nan)
    for train, test in StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(features, y, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        model.fit(features[train], y[train])
        scores[test] = model.predict_proba(features[test])[:, 1]
    return {**M.auc_with_ci(y, scores, groups, n_boot=n_boot, seed=seed), "positive_level": levels[1]}
