"""A look at a few recordings: where the detector found the coughs and what the model said
along time, and the files that were rejected or failed, with their reasons.

The recordings are sampled from PRED's scored rows (the highest and lowest scores, then
others at random with a fixed seed). Each gets a strip: its log-mel spectrogram when its file
can still be read (as the featurizer computes it, at 22050 Hz), the detected coughs shaded,
and each window's score drawn across the time it covers. A file that moved or cannot be read
still gets the events and window scores, on an empty strip.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger("cough.report")

#: Recordings in the gallery.
GALLERY_SIZE = 6
#: Rejected and failed files listed in the report (all of them: the query it shows).
LISTED_PROBLEMS = 20


def pick(current: pd.DataFrame, *, size: int = GALLERY_SIZE, seed: int = 0) -> list[str]:
    """``recording_id``s of up to ``size`` scored recordings: the highest and the lowest
    score, then others drawn at random (``seed``), so the strips show both ends and the middle.

    >>> frame = pd.DataFrame({"recording_id": list("abcde"), "status": "ok", "score": [.1, .9, .5, .3, .7]})
    >>> pick(frame, size=3)
    ['b', 'a', 'd']
    """
    ok = current[(current["status"] == "ok") & current["score"].notna()] if len(current) else current
    if ok.empty:
        return []
    ranked = ok.sort_values(["score", "recording_id"], ascending=[False, True])
    ends = list(dict.fromkeys([ranked["recording_id"].iloc[0], ranked["recording_id"].iloc[-1]]))
    rest = ranked[~ranked["recording_id"].isin(ends)]["recording_id"].tolist()
    rng = np.random.default_rng(seed)
    drawn = [rest[i] for i in sorted(rng.choice(len(rest), size=min(len(rest), size - len(ends)), replace=False))]
    return (ends + drawn)[:size]


def gallery_rows(pred, recording_ids: list[str], model_version: str | None) -> pd.DataFrame:
    """PRED's rows of ``recording_ids`` with their windows and events (list columns the rest of
    the report does not read), latest first per recording."""
    import pyarrow.dataset as pads

    from ..tables.pred import open_pred
    from ..tables.storage import retry

    table = open_pred(pred).table()
    if table is None or not recording_ids:
        return pd.DataFrame()
    data = table.to_pyarrow_dataset()
    wanted = [c for c in ("recording_id", "path", "score", "duration_s", "windows", "events", "label",
                          "model_version", "scored_at") if c in data.schema.names]
    where = pads.field("recording_id").isin(recording_ids)
    if model_version is not None and "model_version" in data.schema.names:
        where &= pads.field("model_version") == model_version
    frame = retry(lambda: data.to_table(columns=wanted, filter=where), what=f"read PRED {pred}").to_pandas()
    if "scored_at" in frame:
        frame = frame.sort_values("scored_at", ascending=False)
    order = {rid: i for i, rid in enumerate(recording_ids)}
    frame = frame.drop_duplicates("recording_id").assign(_order=frame["recording_id"].map(order))
    return frame.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def log_mel_strip(path: str) -> np.ndarray | None:
    """The recording at ``path`` as the featurizer's log-mel ``(mels, frames)`` dB, or None when
    it cannot be read any more (moved, deleted, no access)."""
    from ..audio.decode import decode
    from ..audio.features import DEFAULT_PARAMS, log_mel, mono, to_rate
    from ..errors import CoughError, RecordingError
    from ..tables.listing import Entry

    try:
        audio = decode(Entry(path).read(max_bytes=64 << 20))
    except (RecordingError, CoughError, OSError) as exc:
        log.debug("gallery: %s is not drawn from its audio (%s)", path, exc)
        return None
    return log_mel(to_rate(mono(audio), audio.sample_rate, params=DEFAULT_PARAMS), params=DEFAULT_PARAMS)


def draw_gallery(rows: pd.DataFrame, threshold: float) -> bytes | None:
    """One PNG of a strip per recording of ``rows`` (:func:`gallery_rows`); None without rows."""
    import matplotlib.pyplot as plt

    from ..audio.features import DEFAULT_PARAMS
    from .plots import _png

    if rows.empty:
        return None
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.9 * len(rows)), squeeze=False)
    per_s = DEFAULT_PARAMS.sample_rate / DEFAULT_PARAMS.hop_length
    for ax, row in zip(axes[:, 0], rows.to_dict("records")):
        db = log_mel_strip(str(row["path"]))
        ends = [e["end_s"] or 0 for e in (*_entries(row.get("events")), *_entries(row.get("windows")))]
        duration = max(float(row.get("duration_s") or 0), db.shape[1] / per_s if db is not None else 0, *ends) or 1.0
        if db is not None:
            ax.imshow(db, origin="lower", aspect="auto", cmap=DEFAULT_PARAMS.colormap,
                      extent=(0, db.shape[1] / per_s, 0, 1))
        for event in _entries(row.get("events")):
            ax.axvspan(event["start_s"], event["end_s"], color="white", alpha=0.35, lw=0)
            ax.axvline(event["start_s"], color="white", lw=1)
        scores = ax.twinx()
        for w in _entries(row.get("windows")):
            if w["start_s"] is not None:
                scores.hlines(w["score"], w["start_s"], w["end_s"], color="C1", lw=2.5)
        scores.axhline(threshold, color="C1", ls=":", lw=1)
        scores.set_ylim(0, 1)
        ax.grid(False)
        scores.grid(False)
        scores.set_ylabel("score", color="C1")
        ax.set_xlim(0, duration)
        ax.set_yticks([])
        name = str(row["path"]).rsplit("/", 1)[-1]
        known = pd.notna(row.get("label"))
        label = ("positive" if int(row["label"]) == 1 else "negative") if known else "no label"
        ax.set_title(f"{name[:50]} — score {row['score']:.2f}, {label}", fontsize=11, loc="left")
    axes[-1, 0].set_xlabel("seconds (shaded: coughs the detector found; orange: each window's score)")
    return _png(fig)


def _entries(value) -> list:
    """A list column's value in a pandas row (a list, an array, or missing) as a list."""
    return list(value) if isinstance(value, (list, np.ndarray)) else []


def problem_files(current: pd.DataFrame, *, top: int = LISTED_PROBLEMS) -> dict:
    """The rejected and failed files (first ``top`` of each, by path) with their reasons, how
    many there are, and the one line that lists all of them from PRED."""
    if current.empty or "status" not in current:
        return {"rejected": [], "errors": [], "n_rejected": 0, "n_errors": 0}
    out: dict = {}
    for status, key in (("rejected", "rejected"), ("error", "errors")):
        rows = current[current["status"] == status].sort_values("path")
        out[key] = [{"path": str(r.path), "reason": str(r.error)} for r in rows.head(top).itertuples()]
        out[f"n_{key}"] = int(len(rows))
    return out


def problems_query(pred: str) -> str:
    """The one line that lists every rejected or failed file of PRED with its reason."""
    return ("python -c \"import deltalake; f = deltalake.DeltaTable('" + pred + "').to_pandas(columns=['path', "
            "'status', 'error']); print(f[f.status.isin(['rejected', 'error'])].to_string())\"")
