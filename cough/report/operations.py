"""The operational view of PRED: runs, what the latest scored, errored and skipped, error
reasons, and score drift between runs."""

from __future__ import annotations


import pandas as pd

from ..evaluation import metrics as M
from .read import current_rows, read_predictions


#: Error reasons listed in the operational section.
TOP_ERRORS = 10
#: The night's counts a run record carries (cough.score's summary; the file ledger's).
NIGHT_COUNTS = ("listed", "new", "changed", "seen_before", "duplicates", "bytes_read")


def run_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run, oldest first: run_id, started (first scored_at), scored, errored."""
    if frame.empty or "run_id" not in frame:
        return pd.DataFrame(columns=["run_id", "started", "scored", "errored"])
    runs = frame.assign(_ok=frame["status"] == "ok", _err=frame["status"] == "error",
                        _at=frame["scored_at"] if "scored_at" in frame else pd.NaT)
    table = (runs.groupby("run_id", dropna=False)
             .agg(started=("_at", "min"), scored=("_ok", "sum"), errored=("_err", "sum"))
             .reset_index().sort_values(["started", "run_id"], kind="stable"))
    return table.reset_index(drop=True)


def error_rate(pred, *, run_id: str | None = None) -> float | None:
    """Share of the recordings of one run (default: the latest) that ended as ``error`` rows;
    None when that run holds no row. ``pred`` is a PRED path or a frame of it.

    For the nightly wrapper: ``error_rate("out/pred") > 0.05`` means more than 5% failed.
    """
    frame = pred if isinstance(pred, pd.DataFrame) else read_predictions(pred)
    runs = run_table(frame)
    if frame.empty:
        return None
    if "run_id" in frame:
        run_id = run_id if run_id is not None else runs["run_id"].iloc[-1]
        frame = frame[frame["run_id"] == run_id]
    if frame.empty:
        return None
    return float((frame["status"] == "error").mean())


def latest_per_file(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per file (path): its latest row, by ``scored_at``."""
    if frame.empty or "path" not in frame:
        return frame
    ordered = frame.sort_values("scored_at", kind="stable") if "scored_at" in frame else frame
    return ordered.drop_duplicates("path", keep="last").sort_index()


def operations(frame: pd.DataFrame, records=()) -> dict:
    """The nightly view: per-run counts, what the latest run scored, errored and skipped,
    the commonest error reasons, the score distribution, and drift (PSI) against the run
    before it.

    Counts are of files (paths) unless named ``recordings``: ``files`` = ``ok`` + ``errors``
    + ``rejected``, each file's latest row (the same bytes under two names are two files, as
    score's summary counts them); ``recordings`` is the distinct contents among them (one
    ``recording_id``, or the path of a file that could not be read)."""
    runs = run_table(frame)
    current = current_rows(frame)
    files = latest_per_file(frame)
    out: dict = {"runs": [{"run_id": None if pd.isna(r.run_id) else str(r.run_id),
                           "started": None if pd.isna(r.started) else str(r.started),
                           "scored": int(r.scored), "errored": int(r.errored)} for r in runs.itertuples()],
                 "files": int(len(files)), "recordings": int(len(current))}
    for status, key in (("ok", "ok"), ("error", "errors"), ("rejected", "rejected")):
        out[key] = int((files["status"] == status).sum()) if len(files) else 0
    latest = runs["run_id"].iloc[-1] if len(runs) else None
    in_latest = (frame["run_id"] == latest) if latest is not None else pd.Series(True, index=frame.index)
    last = frame[in_latest.fillna(False)] if latest is not None else frame
    out["latest_run"] = None if latest is None or pd.isna(latest) else str(latest)
    out["scored"] = int((last["status"] == "ok").sum())
    out["errored"] = int((last["status"] == "error").sum())
    out["rejected_latest"] = int((last["status"] == "rejected").sum())
    record = next((r for r in records if r.run_id == out["latest_run"]), None)
    if record is not None and record.skipped is not None:  # what the run itself counted
        out["skipped"] = int(record.skipped)
    else:  # recordings of this model version that the latest run left as they were
        out["skipped"] = int(len(current) - current.index.isin(last.index).sum()) if latest is not None else 0
    if record is not None and record.listed is not None:  # what the night's listing found (file ledger)
        out["night"] = {**{k: int(getattr(record, k) or 0) for k in NIGHT_COUNTS}, "commits": int(record.chunk or 1)}
    out["error_rate"] = error_rate(frame, run_id=latest) if len(frame) else None
    out["error_reasons"] = error_reasons(last)
    out["error_reasons_all_runs"] = error_reasons(frame)
    out["rejection_reasons"] = error_reasons(last, status="rejected")
    scores = current.loc[current["status"] == "ok", "score"].dropna().astype(float) if len(current) else pd.Series()
    out["score_quantiles"] = ({f"q{int(q * 100):02d}": float(scores.quantile(q)) for q in (0, .05, .25, .5, .75, .95, 1)}
                              if len(scores) else None)
    out["drift"] = drift(frame, runs)
    return out


def error_reasons(frame: pd.DataFrame, *, top: int = TOP_ERRORS, status: str = "error") -> list[dict]:
    """The ``top`` commonest reasons of ``frame``'s rows of ``status`` (error, or rejected by
    the quality gate), with counts."""
    if frame.empty or "error" not in frame:
        return []
    errors = frame.loc[frame["status"] == status, "error"]
    reasons = errors.fillna("(no reason given)").astype(str).value_counts().head(top)
    return [{"reason": k, "count": int(v)} for k, v in reasons.items()]


def drift(frame: pd.DataFrame, runs: pd.DataFrame) -> dict:
    """PSI of the latest run's scores against the previous run's, or a reason why not."""
    out: dict = {"psi": None, "warn_above": M.PSI_WARN, "current_run": None, "reference_run": None}
    if len(runs) < 2:
        out["reason"] = "PRED holds a single run: there is no previous run to compare with"
        return out
    ok = frame[frame["status"] == "ok"]
    ref_id, cur_id = runs["run_id"].iloc[-2], runs["run_id"].iloc[-1]
    ref = ok.loc[ok["run_id"] == ref_id, "score"].dropna().to_numpy(float)
    cur = ok.loc[ok["run_id"] == cur_id, "score"].dropna().to_numpy(float)
    out.update(current_run=str(cur_id), reference_run=str(ref_id), n_current=int(len(cur)), n_reference=int(len(ref)))
    if min(len(ref), len(cur)) < M.PSI_MIN_SCORES:
        out["reason"] = (f"too few scores to compare ({len(cur)} in the latest run, {len(ref)} in the previous one; "
                         f"{M.PSI_MIN_SCORES} each needed)")
        return out
    out["psi"] = M.psi(ref, cur)
    return out
