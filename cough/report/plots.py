"""The report's plots, as PNG bytes by file name (matplotlib, seaborn, scikit-learn's displays)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd


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
    if len(rows):  # scikit-learn (~1 s to import) only where labelled rows are drawn
        from sklearn.calibration import CalibrationDisplay
        from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay
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
        plots[f"subgroups_{safe_name(column)}.png"] = _png(fig)
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


def safe_name(name: str) -> str:
    """A column's name as it goes into a plot's file name."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))
