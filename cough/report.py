"""Evaluation and operational reports on PRED (the output of ``cough score``).

:func:`write_report` reads PRED (the Delta table of ``cough score``, only the columns it
needs), takes TRUE labels from PRED or a labels CSV, computes the metrics of
:mod:`cough.metrics`, draws the plots and writes REPORT/: one PNG per plot, ``report.html``
(self-contained), then ``metrics.json``, the commit (docs/storage.md). Predictions are never used as labels. See docs/report.md.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import os
import warnings
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from . import metrics as M
from .artifacts import Metrics, ModelMeta
from .baselines import baseline as fit_baseline
from .baselines import label_metadata_baseline, label_metadata_columns, missing_gaps
from .errors import CoughError, UsageError

log = logging.getLogger("cough.report")

#: What the shortcut baseline may see: how a recording was made, never what it sounds like.
METADATA_FEATURES = ("sample_rate", "channels", "duration_s", "format")
#: PRED columns the report reads when present (window_scores and the like are skipped).
PRED_COLUMNS = ("recording_id", "path", "status", "error", "score", "predicted", "threshold", "model_version",
                "featurizer_version", "run_id", "scored_at", "label", "participant", *METADATA_FEATURES)
#: Default decision threshold when neither --threshold nor PRED gives one.
DEFAULT_THRESHOLD = 0.5
#: Error reasons listed in the operational section.
TOP_ERRORS = 10
#: Most levels shown per --by column; smaller levels are pooled as OTHER_LEVELS.
MAX_SUBGROUPS = 20
OTHER_LEVELS = "(other levels)"
KIND = "report"
#: Written last: the commit point of REPORT.
METRICS_FILE = Metrics.FILE
#: Fewer participants than this: the report says its intervals are rough.
FEW_GROUPS = 30
#: The confounder the stratified AUC matches on when --by names none: the recording channel,
#: the strongest shortcut in crowdsourced archives (8 kHz call centres vs 48 kHz apps).
STRATIFY_DEFAULT = "sample_rate"


# ---------------------------------------------------------------------------- reading

def read_predictions(pred, *, columns=()) -> pd.DataFrame:
    """PRED (a Delta table) as a DataFrame of the report's columns (plus ``columns``), all runs.

    >>> frame = read_predictions("out/demo/pred", columns=["site"])   # doctest: +SKIP
    """
    from .pred import open_pred

    target = open_pred(pred)
    table = target.table()
    if table is None:  # no run has committed yet
        return pd.DataFrame({"status": pd.Series(dtype="string"), "score": pd.Series(dtype=float)})
    try:
        data = table.to_pyarrow_dataset()
    except Exception as exc:
        raise CoughError(f"cannot read PRED {target.loc.uri}: {exc}") from None
    names = set(data.schema.names)
    missing = {"status", "score"} - names
    if missing:
        raise CoughError(f"PRED {target.loc.uri} lacks column(s) {sorted(missing)}: is it the output of `cough score`?")
    wanted = [c for c in dict.fromkeys([*PRED_COLUMNS, *label_metadata_columns(names), *columns]) if c in names]
    frame = data.to_table(columns=wanted).to_pandas()
    for col in ("label", "predicted"):
        if col in frame:
            frame[col] = frame[col].astype("Int8")
    for col in ("run_id", "model_version", "status", "participant"):
        if col in frame:
            frame[col] = frame[col].astype("string")
    return frame


def attach_labels(frame: pd.DataFrame, csv: str) -> tuple[pd.DataFrame, dict]:
    """Labels (and participant, metadata columns) from a labels CSV, matched to PRED rows by file name.

    A CSV ``filename`` is a basename or a relative path; a PRED row takes the CSV row whose
    filename is the longest trailing part of its ``path``. Where a CSV row matches, its
    values win over PRED's; elsewhere PRED's stay. Returns the frame and match counts.
    """
    from .labels import load_labels

    source = os.path.dirname(csv.rstrip("/")) or "."
    index = load_labels(csv, source)
    frame = frame.copy()
    columns = ["label", "participant", *index.metadata_columns]
    found = {c: [] for c in columns}
    matched = 0
    for path in frame.get("path", pd.Series([None] * len(frame), dtype=object)):
        rec = _match(index, path)
        matched += rec is not None
        for c in columns:
            found[c].append(None if rec is None else rec.get(c))
    for c in columns:
        values = pd.Series(found[c], index=frame.index, dtype=object)
        if c == "label":
            values = values.astype("Int8")
        if c in frame:
            frame[c] = values.where(values.notna(), frame[c])
        else:
            frame[c] = values
    if "participant" in frame:
        frame["participant"] = frame["participant"].astype("string")
    return frame, {"csv": csv, "rows_matched": int(matched), "rows": int(len(frame)),
                   "metadata_columns": index.metadata_columns}


def _match(index, path) -> dict | None:
    if not isinstance(path, str):
        return None
    parts = PurePosixPath(path.split("://", 1)[-1]).parts
    for k in range(len(parts), 0, -1):
        rec = index.by_relpath.get("/".join(parts[-k:]))
        if rec is not None:
            return rec
    return index.by_name.get(parts[-1]) if parts else None


def select_model_version(frame: pd.DataFrame, version: str | None = None) -> tuple[pd.DataFrame, str | None, list]:
    """Rows of one model version: ``version``, else the one that scored most recently."""
    if "model_version" not in frame or frame.empty:
        return frame, None, []
    versions = frame["model_version"].dropna().unique().tolist()
    if version is not None:
        if version not in versions:
            raise UsageError(f"--model-version {version} is not in PRED; it holds {sorted(versions) or 'none'}")
        chosen = version
    elif not versions:
        return frame, None, []
    else:
        order = frame.dropna(subset=["model_version"])
        chosen = (order.sort_values("scored_at")["model_version"].iloc[-1]
                  if "scored_at" in order else sorted(versions)[-1])
    notes = []
    if len(versions) > 1:
        notes.append(f"PRED holds predictions of {len(versions)} model versions; this report covers "
                     f"{chosen} only (choose another with --model-version).")
    keep = frame["model_version"].isna() | (frame["model_version"] == chosen)
    return frame[keep], str(chosen), notes


def current_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per recording: its latest prediction (by ``scored_at``). A recording is its
    ``recording_id``, or its path when the file could not be read."""
    if frame.empty:
        return frame
    key = frame["recording_id"].astype(object) if "recording_id" in frame else pd.Series(np.nan, index=frame.index)
    if "path" in frame:
        key = key.where(key.notna(), "path:" + frame["path"].astype(str))
    ordered = frame.assign(_key=key)
    if "scored_at" in ordered:
        ordered = ordered.sort_values("scored_at", kind="stable")
    return ordered.drop_duplicates("_key", keep="last").drop(columns="_key").sort_index()


def run_records(pred, version: str | None) -> list[dict]:
    """The run records in PRED's Delta log (each commit's ``cough.run``) of ``version``'s
    runs, oldest first."""
    from .pred import committed_runs, open_pred

    try:
        records = committed_runs(open_pred(pred))
    except Exception as exc:  # unreadable housekeeping must not stop an evaluation
        log.warning("cannot read the run records of %s: %s", pred, exc)
        return []
    return [r for r in records if version is None or r.get("model_version") == version]


def model_meta(records) -> tuple[str, ModelMeta] | None:
    """``(MODEL, its model.json)`` of the MODEL that the latest of ``records`` names, when it
    is readable and of the version that run used (the report never loads the model itself)."""
    from .model import read_model_meta

    for record in reversed(list(records)):
        if not record.get("model"):
            continue
        try:
            meta = read_model_meta(record["model"])
        except CoughError as exc:  # moved, or not a model this cough can trust: its threshold is not used
            log.warning("%s", exc)
            continue
        if str(meta.version) == str(record.get("model_version")):
            return record["model"], meta
    return None


def resolve_threshold(frame: pd.DataFrame, flag: float | None,
                      model: tuple[str, ModelMeta] | None = None) -> tuple[float, str, list]:
    """``(threshold, where it came from, warnings)``: --threshold; else a ``threshold`` column
    of PRED; else the model's (``model``: its folder and model.json); else :data:`DEFAULT_THRESHOLD`."""
    if flag is not None:
        if not 0.0 <= flag <= 1.0:
            raise UsageError(f"--threshold {flag} is not between 0 and 1")
        return float(flag), "--threshold", []
    if "threshold" in frame:
        values = frame["threshold"].dropna().unique()
        if len(values) > 1:
            raise CoughError(f"PRED rows carry {len(values)} different thresholds ({sorted(values)[:5]}); "
                             "choose one with --threshold")
        if len(values) == 1:
            return float(values[0]), "PRED's threshold column", []
    if model is not None and model[1].threshold is not None:
        return float(model[1].threshold), f"the model ({model[0]}/{ModelMeta.FILE})", []
    return DEFAULT_THRESHOLD, "default", [
        f"The decision threshold is the default {DEFAULT_THRESHOLD:g}: neither PRED nor the model it names gives "
        "one. Give the model's threshold with --threshold if it differs."]


# ---------------------------------------------------------------------------- operations

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


def operations(frame: pd.DataFrame, records=()) -> dict:
    """The nightly view: per-run counts, what the latest run scored, errored and skipped,
    the commonest error reasons, the score distribution, and drift (PSI) against the run
    before it."""
    runs = run_table(frame)
    current = current_rows(frame)
    out: dict = {"runs": [{"run_id": None if pd.isna(r.run_id) else str(r.run_id),
                           "started": None if pd.isna(r.started) else str(r.started),
                           "scored": int(r.scored), "errored": int(r.errored)} for r in runs.itertuples()],
                 "recordings": int(len(current))}
    for status, key in (("ok", "ok"), ("error", "errors"), ("rejected", "rejected")):
        out[key] = int((current["status"] == status).sum()) if len(current) else 0
    latest = runs["run_id"].iloc[-1] if len(runs) else None
    in_latest = (frame["run_id"] == latest) if latest is not None else pd.Series(True, index=frame.index)
    last = frame[in_latest.fillna(False)] if latest is not None else frame
    out["latest_run"] = None if latest is None or pd.isna(latest) else str(latest)
    out["scored"] = int((last["status"] == "ok").sum())
    out["errored"] = int((last["status"] == "error").sum())
    out["rejected_latest"] = int((last["status"] == "rejected").sum())
    record = next((r for r in records if r.get("run_id") == out["latest_run"]), None)
    if record is not None and "skipped" in record:  # what the run itself counted
        out["skipped"] = int(record["skipped"])
    else:  # recordings of this model version that the latest run left as they were
        out["skipped"] = int(len(current) - current.index.isin(last.index).sum()) if latest is not None else 0
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
    out = {"psi": None, "warn_above": M.PSI_WARN, "current_run": None, "reference_run": None}
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


# ---------------------------------------------------------------------------- evaluation

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
    out = {"levels": {}}
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
    """The confound-matched AUC (:func:`cough.metrics.stratified_auc`) within the levels of
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
        warnings.append(f"{_count(n_conflicting, 'recording')} {'appears' if n_conflicting == 1 else 'appear'} "
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
    not_computable.update(m.pop("not_computable"))
    compared = m.pop("baselines", {})
    for name, result in (("shortcut_baseline", baseline), ("label_metadata_baseline", label_base)):
        if result is not None:
            result.update(compared.get(name, {}))
            if "reason" in result:
                not_computable[name] = result["reason"]
    metrics = {**m, "n_labelled_scored": n_labelled, "excluded_conflicting_labels": n_conflicting,
               "excluded_training": n_trusted - len(rows),
               "shortcut_baseline": baseline, "label_metadata_baseline": label_base}

    metrics["stratified_auc"] = stratified(rows, by[0] if by else STRATIFY_DEFAULT, n_boot=n_boot, seed=seed)

    # Participant-level view.
    people, mixed = participant_rows(rows)
    g = M.evaluate(people["label"].to_numpy(int), people["score"].to_numpy(float), people["participant"].to_numpy(object),
                   threshold=threshold, n_boot=n_boot, seed=seed)
    not_computable.update({f"group_level.{k}": v for k, v in g.pop("not_computable").items()})
    g["rule"] = ("one score per participant: the mean of the scores of its recordings; its label is that of its "
                 "recordings; participants whose recordings carry both labels are left out")
    g["mixed_label_groups"] = mixed
    metrics["group_level"] = g
    if mixed:
        warnings.append(f"{_count(mixed, 'participant')} {'has' if mixed == 1 else 'have'} recordings with both "
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
        out.append(f"The model's AUC ({_num(auc)}, 95% CI {_ci(ci)}) cannot be told apart from 0.5, a coin toss: "
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
        out.append(f"Compared only with recordings of the same {strat['by']}, the model's AUC is {_num(strat['auc'])} "
                   f"(95% CI {_ci(strat['auc_ci'])}): its skill cannot be told apart from chance once the recording "
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
                       f"hears the cough reaches AUC {_num(base['auc'])} (95% CI {_ci(base['auc_ci'])}). {meaning}")
        if base.get("auc") is not None and auc is not None:
            diff_ci = base.get("model_minus_baseline_ci")
            if diff_ci is None or diff_ci[0] <= 0:
                out.append(f"The model (AUC {_num(auc)}) does not beat {name} (AUC {_num(base['auc'])}) "
                           f"beyond the uncertainty: the difference is {_num(base['model_minus_baseline'])}"
                           + (f" (95% CI {_ci(diff_ci)})" if diff_ci else "") +
                           f". Its apparent skill may come from {source} rather than from the disease.")
    for column, shares in missing_gaps(metrics.get("label_metadata_baseline") or {}).items():
        out.append(f"'{column}' is empty for {_pct(shares['negative'])} of the negative and "
                   f"{_pct(shares['positive'])} of the positive recordings: whether it was filled in tells the "
                   "label, so the label-metadata baseline may be learning how the labels were collected.")
    for column, result in metrics["by_subgroup"].items():
        alone = result["variable_alone"]
        if M.predicts_label(alone):
            out.append(f"'{column}' alone predicts the label (AUC {_num(alone['auc'])}, 95% CI {_ci(alone['auc_ci'])}): "
                       f"positives are more common in some {column} groups than in others, so a model can look "
                       f"accurate by recognising the {column}. Compare the AUC within each {column} group below.")
    return out


# ---------------------------------------------------------------------------- plots

def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    with warnings.catch_warnings():  # long level names: bbox_inches="tight" still keeps every label
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def draw_plots(metrics: dict, arrays: dict, ops: dict, frame: pd.DataFrame) -> dict[str, bytes]:
    """Every plot the data allows, as PNG bytes by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    # Legible on a phone: a figure is shown at most ~400 px wide there, so fonts are sized
    # against the figure's width (about 1/30 of it), and legends are not shrunk below it.
    sns.set_theme(style="whitegrid", context="notebook", rc={"font.size": 13, "axes.titlesize": 14,
                                                            "axes.labelsize": 13, "legend.fontsize": 12,
                                                            "legend.title_fontsize": 12,
                                                            "xtick.labelsize": 12, "ytick.labelsize": 12})
    plt.rcParams["text.parse_math"] = False  # labels from metadata are text: "$5-$10" is not mathtext
    rows, people = arrays["rows"], arrays["people"]
    y, score = rows["label"].to_numpy(int), rows["score"].to_numpy(float)
    both = len(np.unique(y)) == 2
    plots = {}
    if both:
        fig, ax = plt.subplots(figsize=(5, 4.6))
        RocCurveDisplay.from_predictions(y, score, ax=ax, name="model, recordings", plot_chance_level=True)
        if len(np.unique(people["label"])) == 2:
            RocCurveDisplay.from_predictions(people["label"].to_numpy(int), people["score"], ax=ax,
                                             name="model, participants")
        if arrays["baseline"] is not None:
            RocCurveDisplay.from_predictions(y, arrays["baseline"], ax=ax, name="metadata-only baseline",
                                             curve_kwargs={"linestyle": "--", "color": "grey"})
        if arrays["label_baseline"] is not None:
            RocCurveDisplay.from_predictions(y, arrays["label_baseline"], ax=ax, name="label-metadata baseline",
                                             curve_kwargs={"linestyle": ":", "color": "black"})
        ax.legend(loc="lower right")
        ax.set_title("ROC curve")
        plots["roc.png"] = _png(fig)

        fig, ax = plt.subplots(figsize=(5, 4.6))
        PrecisionRecallDisplay.from_predictions(y, score, ax=ax, name="model", plot_chance_level=True)
        ax.set_title("Precision–recall curve")
        plots["precision_recall.png"] = _png(fig)

        fig, ax = plt.subplots(figsize=(5, 4.6))
        CalibrationDisplay.from_predictions(y, score, n_bins=10, ax=ax, name="model")
        ax.set_title("Calibration: score vs observed share")
        ax.set_xlabel("mean score in the bin")
        ax.set_ylabel("share truly positive")
        plots["calibration.png"] = _png(fig)
    if len(rows):
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ConfusionMatrixDisplay(np.array(metrics["confusion_matrix"]), display_labels=["negative", "positive"]).plot(
            ax=ax, colorbar=False, values_format="d")
        ax.set_xlabel("model says")
        ax.set_ylabel("true label")
        ax.grid(False)
        ax.set_title(f"At threshold {metrics['threshold']:g}")
        plots["confusion_matrix.png"] = _png(fig)

        fig, ax = plt.subplots(figsize=(5, 3.8))
        data = pd.DataFrame({"score": score, "true label": np.where(y == 1, "positive", "negative")})
        sns.histplot(data, x="score", hue="true label", hue_order=["negative", "positive"], bins=20,
                     binrange=(0, 1), stat="density", common_norm=False, element="step", ax=ax)
        ax.axvline(metrics["threshold"], color="black", linestyle="--", label="threshold")
        ax.set_title("Scores by true label")
        ax.set_xlabel("score (not a calibrated probability)")
        plots["score_by_class.png"] = _png(fig)
    for column, result in metrics["by_subgroup"].items():
        levels = [(k, v) for k, v in result["levels"].items()]
        fig, ax = plt.subplots(figsize=(5, 0.5 * len(levels) + 1.6))
        for i, (_, v) in enumerate(levels):
            if v["auc"] is not None:
                lo, hi = v["auc_ci"] if v["auc_ci"] else (v["auc"], v["auc"])
                ax.errorbar(v["auc"], i, xerr=[[v["auc"] - lo], [hi - v["auc"]]], fmt="o", color="C0", capsize=4)
            else:
                ax.text(0.5, i, "not computable", ha="center", va="center", color="grey")
        ax.set_yticks(range(len(levels)), [f"{k} (n={v['n']})" for k, v in levels])
        ax.set_ylim(-0.7, len(levels) - 0.3)
        ax.axvline(0.5, color="black", linestyle=":")
        if metrics["auc"] is not None:
            ax.axvline(metrics["auc"], color="C1", linestyle="--", label="all recordings")
            ax.legend(loc="lower left")
        ax.set_xlim(0, 1)
        ax.set_xlabel("AUC with 95% CI")
        ax.set_title(f"AUC within each {column} group")
        plots[f"subgroups_{_safe(column)}.png"] = _png(fig)
    ok = arrays["current"]
    ok = ok[ok["status"] == "ok"] if len(ok) else ok
    if len(ok):
        fig, ax = plt.subplots(figsize=(5, 3.8))
        drift = ops["drift"]
        if drift.get("reference_run"):
            scored = frame[frame["status"] == "ok"]
            for run, label in ((drift["reference_run"], "previous run"), (drift["current_run"], "latest run")):
                sns.histplot(scored.loc[scored["run_id"] == run, "score"].astype(float), bins=10, binrange=(0, 1),
                             stat="density", element="step", fill=False, ax=ax, label=f"{label} ({run})")
            ax.legend()
            ax.set_title("Scores: latest run vs the previous")
        else:
            sns.histplot(ok["score"].astype(float), bins=20, binrange=(0, 1), ax=ax)
            ax.set_title("Scores of every scored recording")
        ax.set_xlabel("score (not a calibrated probability)")
        plots["score_distribution.png"] = _png(fig)
    return plots


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))


# ---------------------------------------------------------------------------- html

def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _num(x, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _ci(ci, pct: bool = False) -> str:
    if not ci:
        return "not computable"
    f = _pct if pct else _num
    return f"{f(ci[0])} to {f(ci[1])}"


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{_nowrap(c)}>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _nowrap(cell) -> str:
    """Short cells (numbers, intervals) stay on one line; a long table scrolls instead."""
    return " class='n'" if len(str(cell)) <= 24 else ""


def _img(plots: dict, name: str, alt: str) -> str:
    if name not in plots:
        return ""
    data = base64.b64encode(plots[name]).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222;line-height:1.5;overflow-wrap:anywhere}h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:.8rem 0}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;overflow-wrap:normal}th{background:#f4f4f4}
.n{white-space:nowrap}
.warn{background:#fff4d6;border-left:5px solid #e0a800;padding:.6rem 1rem;margin:1rem 0}.note{color:#555;font-size:.92rem}
.banner{background:#eef3fb;border-left:5px solid #3a6ec2;padding:.6rem 1rem;margin:1rem 0}
.use{background:#fdecec;border-left:5px solid #c23a3a;padding:.6rem 1rem;margin:1rem 0}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:.9rem}
.big{font-size:1.15rem}@media (max-width:30rem){body{margin:1rem auto;padding:0 .6rem}h1{font-size:1.35rem}
.big{font-size:1.05rem}}"""
#: What the score is for, and what it must not be used for (the report's intended-use box).
INTENDED_USE = ("A research screening signal, not a diagnosis. The score ranks recordings by how much they resemble "
                "the positive recordings of the training data; it does not say whether a person has COVID-19. It has "
                "not been validated clinically and must not be used to decide anyone's testing, treatment or "
                "isolation.")


def _provenance_html(prov: dict) -> str:
    synthetic = {"yes": "<b>Synthetic data</b>: made by <code>cough synth</code>, not recordings of people. These "
                        "numbers say whether the pipeline works, nothing about coughs.",
                 "partly": "<b>Partly synthetic data</b>: some recordings were made by <code>cough synth</code>.",
                 "no": "Not recognised as synthetic."}[prov["synthetic"]]
    sources = ", ".join(html.escape(str(s)) for s in prov["sources"]) or "not recorded"
    return (f"<div class='banner'><b>Data</b>: {sources}. {synthetic} "
            f"<span class='note'>({html.escape(prov['evidence'])})</span><br><b>Labels</b>: "
            f"{html.escape(prov['labels'])}.</div>")


def _intended_use_html(confounds: list[str]) -> str:
    text = f"<div class='use'><b>Intended use</b>: {html.escape(INTENDED_USE)}"
    if confounds:
        text += (f"<br><b>Confound warning</b>: {html.escape(confounds[0])}"
                 + (f" ({len(confounds) - 1} more under 'Read this first'.)" if len(confounds) > 1 else ""))
    return text + "</div>"


def _label_metadata_html(m: dict) -> str:
    """The label-metadata baseline beside the model and the shortcut baseline; '' without one."""
    lb, base = m.get("label_metadata_baseline"), m["shortcut_baseline"]
    if lb is None:
        return ""
    out = ["<h2>The labels' own metadata: does the sound add anything?</h2>"]
    if lb.get("auc") is not None:
        out.append(f"<p>Seeing only the labels' columns {html.escape(', '.join(lb['features']))}, a baseline reaches "
                   f"AUC <b>{_num(lb['auc'])}</b> (95% CI {_ci(lb['auc_ci'])}); the model reaches {_num(m['auc'])} "
                   f"({_ci(m['auc_ci'])}). Model minus this baseline: {_num(lb['model_minus_baseline'])} (95% CI "
                   f"{_ci(lb['model_minus_baseline_ci'])}, paired over the same participant resamples).</p>")
        out.append(_table(["", "sees", "AUC", "95% CI", "model minus it", "95% CI"], [
            ["model", "the recordings", _num(m["auc"]), _ci(m["auc_ci"]), "", ""],
            *[[title, ", ".join(b["features"]), _num(b["auc"]), _ci(b["auc_ci"]), _num(b.get("model_minus_baseline")),
               _ci(b.get("model_minus_baseline_ci"))]
              for title, b in (("shortcut baseline", base), ("label-metadata baseline", lb)) if b.get("auc") is not None]]))
    else:
        out.append(f"<p>Not computable: {html.escape(lb.get('reason', ''))}.</p>")
    out.append(_table(["label column", "in the baseline", "empty: negatives", "empty: positives"], [
        [c, "yes" if c in lb["features"] else f"no: {lb['left_out'][c]}",
         *(_pct(lb["missing"][c][k]) if c in lb["missing"] else "" for k in ("negative", "positive"))]
        for c in lb["candidates"]]))
    out.append(f"<p class='note'>The label columns are the labels CSV's besides filename, label and participant; "
               f"{html.escape(lb['rule'])}. A value left empty counts as a value of its own. "
               f"Method: {html.escape(lb['method'])}.</p>")
    return "".join(out)


def render_html(metrics: dict, plots: dict) -> str:
    """The report a person reads: plain words first, numbers with their uncertainty, every plot inline."""
    m, ops, meta = metrics, metrics["operations"], metrics["run"]
    g, base = m["group_level"], m["shortcut_baseline"]
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>Cough model report</title>"
             f"<style>{CSS}</style></head><body><h1>Cough model report</h1>",
             f"<p class='note'>Predictions: {html.escape(str(meta['pred']))} · model version "
             f"{html.escape(str(meta['model_version']))} · written {html.escape(meta['generated_at'])}</p>",
             _provenance_html(m["provenance"]), _intended_use_html(m["confounds"])]
    parts.append("<h2>In short</h2>")
    if m["excluded_training"]:
        parts.append(f"<p>{m['excluded_training']} of the {m['n_labelled_scored']} labelled recordings come from "
                     "participants the model was trained or tuned on; they are left out, because a model is always "
                     "better on data it has seen.</p>")
    if m["n"]:
        parts.append(f"<p class='big'>{m['n']} recordings from {m['n_groups']} participants have a true label and "
                     f"were scored; {_pct(m['prevalence'])} of them are positive. The model's AUC is "
                     f"<b>{_num(m['auc'])}</b> (95% CI {_ci(m['auc_ci'])}). At its threshold of {m['threshold']:g} "
                     f"it finds {_pct(m['sensitivity'])} of the positive recordings and clears "
                     f"{_pct(m['specificity'])} of the negative ones.</p>")
        st = m["stratified_auc"]
        if st["auc"] is not None:
            parts.append(f"<p class='big'>Compared only with recordings made the same way (the same "
                         f"{html.escape(st['by'])}), its AUC is <b>{_num(st['auc'])}</b> (95% CI {_ci(st['auc_ci'])})"
                         f": the confound-matched AUC, which a model that recognises the recording channel instead "
                         f"of the cough cannot inflate.</p>")
        else:
            parts.append(f"<p>No confound-matched AUC: {html.escape(st.get('reason', 'not computable'))}.</p>")
    else:
        parts.append("<p class='big'>No scored recording has a true label, so this report cannot say how accurate "
                     "the model is. It describes what was scored (see <a href='#operations'>Operations</a>).</p>")
    if m["warnings"]:
        parts.append("<div class='warn'><b>Read this first</b><ul>" +
                     "".join(f"<li>{html.escape(w)}</li>" for w in m["warnings"]) + "</ul></div>")
    parts.append("""<details><summary>How to read this report</summary><ul>
<li><b>True labels only.</b> Every number compares the model's score with the label recorded for the participant
(a test result), never with the model's own predictions.</li>
<li><b>AUC</b> (area under the ROC curve): the chance that a randomly chosen positive recording gets a higher score
than a randomly chosen negative one. 0.5 is a coin toss, 1.0 is a perfect ranking.</li>
<li><b>95% CI</b> (confidence interval): the range the value would likely take with other participants from the same
population. For the AUC it comes from 1000s of resamples of the <i>participants</i> (all recordings of a person are
drawn together), because one person's coughs resemble each other and are not independent evidence. For rates it is a
Wilson interval on as many independent observations as the recordings are worth (fewer than the recordings when a
person's recordings agree), so that 26 of 26 reads "87% to 100%", not "100% to 100%". A wide interval means too little
data to be sure; an AUC interval that includes 0.5 means no evidence of skill.</li>
<li><b>Sensitivity</b>: of the truly positive recordings, the share the model calls positive.
<b>Specificity</b>: of the truly negative ones, the share it calls negative.
<b>PPV</b> (positive predictive value): of the recordings it calls positive, the share truly positive.
<b>NPV</b>: of those it calls negative, the share truly negative. PPV and NPV depend on how common positives are
in this data. <b>Accuracy</b>: the share called correctly.</li>
<li><b>Brier score</b>: the mean squared gap between score and outcome; 0 is perfect, 0.25 is what a constant score of
0.5 gets.</li>
<li><b>Shortcut check</b>: a second model that never hears the cough, only how the recording was made (sample rate,
channels, duration, file format). If it does about as well, the main model may be recognising recording conditions
(which differ between collection sites, and so between positives and negatives) instead of the disease.</li>
<li><b>Label-metadata baseline</b> (when the labels carry columns besides filename, label and participant, such as
symptoms or site): a model that sees only those columns. An audio model is worth its recordings where it beats it.</li>
<li><b>Confound-matched AUC</b>: the AUC computed within each level of a recording condition (the sample rate, or the
first <code>--by</code> column) and pooled, weighted by each level's number of positive–negative pairs: the chance that a
positive outranks a negative recorded the same way. A model that only recognises the channel scores 0.5 here.</li>
</ul></details>""")

    if m["n"]:
        parts.append("<h2>How well does the score separate positives from negatives?</h2>")
        parts.append(_table(["measure", "recordings", "95% CI", "participants", "95% CI"], [
            ["AUC", _num(m["auc"]), _ci(m["auc_ci"]), _num(g["auc"]), _ci(g["auc_ci"])],
            [f"AUC within {m['stratified_auc']['by']} (confound-matched)", _num(m["stratified_auc"]["auc"]),
             _ci(m["stratified_auc"]["auc_ci"]), "", ""],
            ["PR AUC (average precision)", _num(m["pr_auc"]), "", _num(g["pr_auc"]), ""],
            ["share positive (prevalence)", _pct(m["prevalence"]), "", _pct(g["prevalence"]), ""],
            ["n", m["n"], "", g["n"], ""]]))
        parts.append(f"<p class='note'>Participant view: {html.escape(g['rule'])}. PR AUC is to be compared with the "
                     f"share of positives, which is what random scores get.</p>")
        parts.append(_img(plots, "roc.png", "ROC curve: the further above the diagonal, the better the ranking.")
                     + _img(plots, "precision_recall.png", "Precision–recall curve; the dashed line is chance."))

        cm = m["confusion_matrix"]
        parts.append(f"<h2>Decisions at threshold {m['threshold']:g}</h2>")
        parts.append(f"<p>A recording is called positive when its score is at least {m['threshold']:g} "
                     f"(threshold from {html.escape(meta['threshold_source'])}).</p>")
        parts.append(_table(["", "model says negative", "model says positive"], [
            ["truly negative", cm[0][0], cm[0][1]], ["truly positive", cm[1][0], cm[1][1]]]))
        parts.append(_table(["rate", "recordings", "95% CI", "participants", "95% CI"], [
            [name, _pct(m[key]), _ci(m[f"{key}_ci"], pct=True), _pct(g[key]), _ci(g[f"{key}_ci"], pct=True)]
            for name, key in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("PPV", "ppv"),
                              ("NPV", "npv"), ("accuracy", "accuracy"))]))
        parts.append(_img(plots, "confusion_matrix.png", "Confusion matrix: rows are the truth, columns the model's call.")
                     + _img(plots, "score_by_class.png", "Score histograms of truly negative and truly positive "
                            "recordings; good separation means little overlap."))
        parts.append("<h2>Can the scores be read as probabilities?</h2><p>Not unless this section shows they are "
                     "calibrated: this report calls them scores.</p>")
        parts.append(f"<p>Brier score {_num(m['brier'], 3)} (participants {_num(g['brier'], 3)}). In the plot, points "
                     "on the diagonal mean that, among recordings scored about x, a share x is truly positive.</p>")
        parts.append(_img(plots, "calibration.png", "Calibration curve (10 equal-width score bins)."))

        parts.append("<h2>Shortcut check: a model that never hears the cough</h2>")
        if base.get("auc") is not None:
            parts.append(f"<p>Seeing only {html.escape(', '.join(base['features']))}, a baseline reaches AUC "
                         f"<b>{_num(base['auc'])}</b> (95% CI {_ci(base['auc_ci'])}); the model reaches "
                         f"{_num(m['auc'])} ({_ci(m['auc_ci'])}). Model minus baseline: "
                         f"{_num(base['model_minus_baseline'])} (95% CI {_ci(base['model_minus_baseline_ci'])}, "
                         "paired over the same participant resamples). If this difference is not clearly above 0, "
                         "the model has not shown that it hears more than the recording conditions.</p>"
                         f"<p class='note'>Method: {html.escape(base['method'])}.</p>")
        else:
            parts.append(f"<p>Not computable: {html.escape(base.get('reason', ''))}.</p>")
        parts.append(_label_metadata_html(m))

        if m["by_subgroup"]:
            parts.append("<h2>Subgroups</h2><p>The AUC within each group tells whether the model still separates "
                         "positives from negatives when the group is held fixed. 'Variable alone' is the AUC of a "
                         "model that sees only that variable: above 0.5 means the share of positives differs "
                         "between groups, a possible shortcut.</p>")
            for column, result in m["by_subgroup"].items():
                alone = result["variable_alone"]
                parts.append(f"<h3>{html.escape(column)}</h3>")
                parts.append(_table(["level", "recordings", "participants", "share positive", "AUC", "95% CI", "note"], [
                    [k, v["n"], v["n_groups"], _pct(v["prevalence"]), _num(v["auc"]), _ci(v["auc_ci"]),
                     v.get("reason", "")] for k, v in result["levels"].items()]))
                parts.append(f"<p>{html.escape(column)} alone: AUC {_num(alone['auc'])} (95% CI {_ci(alone['auc_ci'])})"
                             f"{html.escape(' — ' + alone['reason']) if alone.get('reason') else ''}.</p>")
                parts.append(_img(plots, f"subgroups_{_safe(column)}.png", f"AUC within each {column} group."))

    parts.append("<h2 id='operations'>Operations</h2>")
    parts.append(f"<p>PRED holds {ops['recordings']} recordings for this model version: {ops['ok']} scored, "
                 f"{ops['errors']} could not be processed, {ops['rejected']} rejected by the quality gate. "
                 f"The latest run ({html.escape(str(ops['latest_run']))}) "
                 f"scored {ops['scored']}, failed on {ops['errored']} (error rate {_pct(ops['error_rate'])}) and "
                 f"skipped {ops['skipped']} already scored in earlier runs.</p>")
    if ops["runs"]:
        parts.append(_table(["run", "started", "scored", "errors"],
                            [[r["run_id"], r["started"], r["scored"], r["errored"]] for r in ops["runs"]]))
    for key, title in (("error_reasons", "Why recordings failed in the latest run"),
                       ("error_reasons_all_runs", "Why recordings failed in every run"),
                       ("rejection_reasons", "Why the quality gate rejected recordings in the latest run")):
        if ops[key] and (key != "error_reasons_all_runs" or len(ops["runs"]) > 1):
            parts.append(f"<h3>{title}</h3>" + _table(
                ["reason", "recordings"], [[e["reason"], e["count"]] for e in ops[key]]))
    d = ops["drift"]
    parts.append("<h3>Score drift</h3>")
    if d["psi"] is not None:
        parts.append(f"<p>Population stability index of the latest run's scores against the previous run's: "
                     f"<b>{_num(d['psi'], 3)}</b> (below 0.1: stable; 0.1–0.2: a moderate shift; above "
                     f"{d['warn_above']:g}: the recordings or the model's behaviour changed, worth a look).</p>")
    else:
        parts.append(f"<p>Not computable: {html.escape(d.get('reason', ''))}.</p>")
    parts.append(_img(plots, "score_distribution.png", "Distribution of the model's scores."))
    if m["not_computable"]:
        parts.append("<h2>What could not be computed, and why</h2>" + _table(
            ["value", "reason"], sorted(m["not_computable"].items())))
    parts.append(f"<p class='note'>Labels: {html.escape(meta['labels'])}. 95% intervals: AUC, "
                 f"{html.escape(m['ci_method']['auc'])}, {meta['n_boot']} resamples, seed {meta['seed']}; rates "
                 f"(sensitivity, specificity, PPV, NPV, accuracy), {html.escape(m['ci_method']['rates'])} "
                 f"cough {html.escape(meta['cough_version'])}.</p>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


# ---------------------------------------------------------------------------- driver

def write_report(pred: str, out: str, *, labels: str | None = None, by=(), threshold: float | None = None,
                 model_version: str | None = None, include_training: bool = False, n_boot: int = 1000,
                 seed: int = 0) -> dict:
    """Read PRED, compute every metric, and write REPORT (PNGs, report.html, then metrics.json,
    the commit). REPORT must be new, empty, or an earlier report, which this one replaces.
    Returns the metrics.

    Recordings of participants in the model's ``train`` and ``val`` splits (its model.json,
    found through PRED's run records) are left out unless ``include_training``.

    >>> m = write_report("out/demo/pred", "out/demo/report", by=["site"])   # doctest: +SKIP
    >>> m["auc"], m["auc_ci"], m["warnings"]                                # doctest: +SKIP
    """
    from . import __version__
    from .provenance import describe
    from .schema import JSON_SCHEMA_VERSION
    from .storage import Location, claim

    if n_boot < 100:
        raise UsageError(f"--n-boot {n_boot} is too few for a 95% interval; use at least 100")
    output = claim(out, KIND, inputs={"PRED": pred})
    previous_plots = _previous_plots(output)
    by = list(dict.fromkeys(by))
    frame = read_predictions(pred, columns=by)
    if labels:
        frame, label_info = attach_labels(frame, labels)
        labels_text = f"from {labels} ({label_info['rows_matched']} of {label_info['rows']} PRED rows matched)"
    else:
        labels_text = "from PRED's label column" if "label" in frame else "none (PRED has no label column)"
        label_info = None
    missing = [c for c in by if c not in frame]
    if missing:
        available = sorted(c for c in frame.columns if c not in ("score", "predicted", "threshold", "scored_at"))
        raise UsageError(f"--by {', '.join(missing)}: no such column in PRED or the labels CSV; "
                         f"available: {', '.join(available)}")
    frame, version, notes = select_model_version(frame, model_version)
    records = run_records(pred, version)
    model = model_meta(records)
    t, t_source, t_notes = resolve_threshold(frame, threshold, model)
    warnings = notes + t_notes
    seen = model[1].training_groups() if model else None
    out_of_fold = [r for r in records if r.get("out_of_fold")]
    if out_of_fold:  # every participant was scored by a fold model that never saw it
        seen = set()
        warnings.append(f"These are the out-of-fold predictions of {out_of_fold[-1].get('cv_folds')}-fold "
                        "cross-validation: every participant was scored by a model that never saw them. They "
                        "estimate how a model trained this way does on new participants; the final MODEL was "
                        "trained on all of them.")
    if label_info is not None and label_info["rows_matched"] == 0 and len(frame):
        warnings.append(f"No PRED row matched a filename in {labels}: check that its filename column holds the "
                        "recordings' file names.")
    ops = operations(frame, records)
    metrics, arrays = build_metrics(frame, by=by, threshold=t, seen_groups=None if include_training else seen,
                                    n_boot=n_boot, seed=seed)
    if metrics["n_labelled_scored"]:
        if seen is None:
            warnings.append("Which participants the model was trained on is unknown (PRED's run records name no "
                            "readable MODEL of this version with its splits), so their recordings cannot be left out: "
                            "if PRED includes them, these metrics are optimistic.")
        elif include_training:
            n_seen = int(arrays["rows"]["participant"].isin(seen).sum())
            if n_seen:
                warnings.append(f"{n_seen} of the evaluated recordings come from participants the model was trained "
                                "or tuned on (--include-training): the metrics are optimistic.")
    rows, current = arrays["rows"], arrays["current"]
    if "predicted" in rows and len(rows):
        differ = int((rows["predicted"].astype(int) != (rows["score"] >= t).astype(int)).sum())
        if differ:
            warnings.append(f"PRED's predicted column disagrees with score ≥ {t:g} on {differ} recordings; this "
                            "report uses score ≥ threshold (is the threshold right?).")
    if len(current) and "label" in current:
        lost = int(((current["status"] != "ok") & current["label"].notna()).sum())
        if lost:
            warnings.append(f"{_count(lost, 'labelled recording')} could not be scored and "
                            f"{'is' if lost == 1 else 'are'} not in the metrics; if failures are more common in one "
                            "class, the metrics are biased.")
    if ops["drift"]["psi"] is not None and ops["drift"]["psi"] > M.PSI_WARN:
        warnings.append(f"The scores of the latest run drifted from the previous run's (PSI {ops['drift']['psi']:.2f} "
                        f"> {M.PSI_WARN:g}): the incoming recordings, or how they are processed, have changed.")
    metrics["warnings"] = warnings + metrics["warnings"]
    metrics["ci_method"] = M.CI_METHOD
    metrics["provenance"] = describe(sorted({str(r["source"]) for r in records if r.get("source")}),
                                     frame["participant"].unique() if "participant" in frame else [],
                                     _label_source(labels_text, label_info, records))
    metrics["threshold_source"] = t_source
    metrics["operations"] = ops
    metrics["run"] = {"pred": Location.of(pred).uri, "model_version": version, "model": model[0] if model else None,
                      "include_training": include_training, "labels": labels_text, "by": by, "n_boot": n_boot,
                      "seed": seed, "threshold_source": t_source, "cough_version": __version__,
                      "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    metrics = clean(metrics)
    plots = draw_plots(metrics, arrays, ops, frame)
    page = render_html(metrics, plots)
    with output.writing(METRICS_FILE) as loc:
        for name, data in plots.items():
            loc.join(name).write_bytes(data)
        loc.join("report.html").write_bytes(page.encode())
        record = Metrics.from_dict({**metrics, "schema_version": JSON_SCHEMA_VERSION, "kind": KIND,
                                    "confusion_matrix_layout": M.CONFUSION_LAYOUT, "plots": sorted(plots)})
        loc.join(METRICS_FILE).write_json(record.to_dict())  # the commit point
    for name in set(previous_plots) - set(plots):  # plots of the report this one replaced
        loc.join(name).delete()
    return metrics


def _label_source(text: str, label_info: dict | None, records) -> str:
    """Where the evaluated labels came from, as far as PRED's run records tell."""
    attached = sorted({str(r["labels"]) for r in records if r.get("labels")})
    if label_info is not None or not attached:
        return text
    return f"{text}, attached by cough score from {', '.join(attached)}"


def _previous_plots(output) -> list[str]:
    """The PNGs an earlier report in ``output`` wrote (its metrics.json lists them)."""
    if output.state != "ours":
        return []
    try:
        plots = Metrics.read(output.loc.join(METRICS_FILE), where=METRICS_FILE).plots
    except CoughError:
        return []
    return [str(p) for p in plots if str(p).endswith(".png") and "/" not in str(p)]


def clean(obj):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (never a NaN presented as a number)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = M.finite(obj)
        return None if value is None else round(value, 12)  # 0.9999999999999999 -> 1.0
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj
