"""The report job: read PRED, evaluate, draw, and write REPORT (PNGs, report.html, then
metrics.json, the commit; docs/storage.md)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from ..evaluation import metrics as M
from ..tables.artifacts import Metrics
from ..errors import CoughError, UsageError
from . import text as T
from .evaluate import build_metrics, fold_aucs
from .gallery import draw_gallery, gallery_rows, pick, problem_files, problems_query
from .operations import latest_per_file, operations
from .page import render_html
from .plots import draw_plots
from .read import (attach_labels, current_rows, read_predictions, resolve_threshold, run_records, scoring_model,
                   select_model_version)


KIND = "report"
#: Written last: the commit point of REPORT.
METRICS_FILE = Metrics.FILE


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
    from .. import __version__
    from ..tables.maintain import table_health
    from ..tables.provenance import describe
    from ..tables.schema import JSON_SCHEMA_VERSION
    from ..tables.storage import Location, claim

    if n_boot < 100:
        raise UsageError(f"--n-boot {n_boot} is too few for a 95% interval; use at least 100")
    output = claim(out, KIND, inputs={"PRED": pred})
    previous_plots = _previous_plots(output)
    by = list(dict.fromkeys(by))
    frame = read_predictions(pred, columns=by)
    if labels:
        frame, label_info = attach_labels(frame, labels)
        labels_text = (f"from {labels} ({label_info['rows_matched']} of {label_info['rows']} PRED rows matched: "
                       f"{label_info['rows_matched_by_path']} by path, {label_info['rows_matched_by_name']} by file name)")
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
    model = scoring_model(records)
    t, t_source, t_notes = resolve_threshold(frame, threshold, model)
    warnings = notes + t_notes
    seen = model.seen_groups
    if model.out_of_fold:  # every participant was scored by a fold model that never saw it
        warnings.append(f"These are the out-of-fold predictions of {model.cv_folds}-fold "
                        "cross-validation: every participant was scored by a model that never saw them. They "
                        "estimate how a model trained this way does on new participants; the final MODEL was "
                        "trained on all of them.")
    if label_info is not None and label_info["rows_matched"] == 0 and len(frame):
        warnings.append(f"No PRED row matched a filename in {labels}: check that its filename column holds the "
                        "recordings' file names.")
    ops = operations(frame, records)
    ops["problems"] = {**problem_files(latest_per_file(frame)), "query": problems_query(Location.of(pred).uri)}
    ops["tables"] = table_health(pred)
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
            warnings.append(f"{T.count(lost, 'labelled recording')} could not be scored and "
                            f"{'is' if lost == 1 else 'are'} not in the metrics; if failures are more common in one "
                            "class, the metrics are biased.")
    if ops["drift"]["psi"] is not None and ops["drift"]["psi"] > M.PSI_WARN:
        warnings.append(f"The scores of the latest run drifted from the previous run's (PSI {ops['drift']['psi']:.2f} "
                        f"> {M.PSI_WARN:g}): the incoming recordings, or how they are processed, have changed.")
    if model.out_of_fold:
        metrics["cross_validation"] = {"folds": fold_aucs(arrays["rows"], model.meta.cv if model.meta else None),
                                       "pooled_auc": metrics["auc"]}
    metrics["warnings"] = warnings + metrics["warnings"]
    metrics["ci_method"] = M.CI_METHOD
    metrics["provenance"] = describe(sorted({str(r.source) for r in records if r.source}),
                                     frame["participant"].unique() if "participant" in frame else [],
                                     _label_source(labels_text, label_info, records))
    metrics["threshold_source"] = t_source
    metrics["operations"] = ops
    metrics["run"] = {"pred": Location.of(pred).uri, "model_version": version, "model": model.model_dir,
                      "include_training": include_training, "labels": labels_text, "by": by, "n_boot": n_boot,
                      "seed": seed, "threshold_source": t_source, "cough_version": __version__,
                      "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    metrics = clean(metrics)
    plots = draw_plots(metrics, arrays, ops, frame)
    strips = draw_gallery(gallery_rows(pred, pick(current_rows(frame), seed=seed), version), t)
    if strips is not None:
        plots["gallery.png"] = strips
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
    attached = sorted({str(r.labels) for r in records if r.labels})
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
