"""report.html: one self-contained page (plots inline), plain words first, numbers with
their uncertainty. Its style sheet and guide are page.css and how_to_read.html beside it."""

from __future__ import annotations

import base64
import html
from importlib.resources import files

from . import text as T
from .plots import safe_name


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


#: The page's style sheet and its guide to the numbers, kept as files beside this module.
CSS = (files(__package__) / "page.css").read_text().rstrip("\n")
HOW_TO_READ = (files(__package__) / "how_to_read.html").read_text().rstrip("\n")
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
                   f"AUC <b>{T.num(lb['auc'])}</b> (95% CI {T.ci(lb['auc_ci'])}); the model reaches {T.num(m['auc'])} "
                   f"({T.ci(m['auc_ci'])}). Model minus this baseline: {T.num(lb['model_minus_baseline'])} (95% CI "
                   f"{T.ci(lb['model_minus_baseline_ci'])}, paired over the same participant resamples).</p>")
        out.append(_table(["", "sees", "AUC", "95% CI", "model minus it", "95% CI"], [
            ["model", "the recordings", T.num(m["auc"]), T.ci(m["auc_ci"]), "", ""],
            *[[title, ", ".join(b["features"]), T.num(b["auc"]), T.ci(b["auc_ci"]), T.num(b.get("model_minus_baseline")),
               T.ci(b.get("model_minus_baseline_ci"))]
              for title, b in (("shortcut baseline", base), ("label-metadata baseline", lb)) if b.get("auc") is not None]]))
    else:
        out.append(f"<p>Not computable: {html.escape(lb.get('reason', ''))}.</p>")
    out.append(_table(["label column", "in the baseline", "empty: negatives", "empty: positives"], [
        [c, "yes" if c in lb["features"] else f"no: {lb['left_out'][c]}",
         *(T.pct(lb["missing"][c][k]) if c in lb["missing"] else "" for k in ("negative", "positive"))]
        for c in lb["candidates"]]))
    out.append(f"<p class='note'>The label columns are the labels CSV's besides filename, label and participant; "
               f"{html.escape(lb['rule'])}. A value left empty counts as a value of its own. "
               f"Method: {html.escape(lb['method'])}.</p>")
    return "".join(out)


#: Small files above which the report suggests `cough maintain`.
SMALL_FILES_ADVICE = 100


def _tables_html(tables: dict) -> str:
    """PRED's and its ledger's health (cough.tables.maintain.health), and when to maintain them."""
    rows = [[name, h["version"], h["files"], h["small_files"], f"{h['bytes'] / 1e6:.1f} MB", h["rows"]]
            for name, h in (("PRED", tables.get("table")), ("file ledger", tables.get("ledger"))) if h]
    if not rows:
        return ""
    small = sum(r[3] for r in rows)
    advice = (f"<p>{small} small files: <code>cough maintain</code> (or <code>cough nightly --maintain</code>) "
              "compacts them, safely while a score runs.</p>" if small > SMALL_FILES_ADVICE else "")
    return ("<h3>The tables</h3>" + _table(["table", "version", "files", "small files", "size", "rows"], rows)
            + advice)


def _problems_html(problems: dict) -> str:
    """The rejected and failed files, first ones by path, and how to list them all."""
    if not problems["n_rejected"] and not problems["n_errors"]:
        return ""
    parts = ["<h3 id='problems'>Rejected and failed files</h3>"]
    for key, what in (("rejected", "rejected"), ("errors", "could not be processed")):
        shown = problems[key]
        if shown:
            parts.append(f"<p>{problems[f'n_{key}']} {what}"
                         f"{f' (the first {len(shown)} by path)' if len(shown) < problems[f'n_{key}'] else ''}:</p>")
            parts.append(_table(["file", "reason"], [[p["path"], p["reason"]] for p in shown]))
    parts.append(f"<p class='note'>Every one of them, with its reason: <code>{html.escape(problems['query'])}"
                 "</code></p>")
    return "\n".join(parts)


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
                     f"were scored; {T.pct(m['prevalence'])} of them are positive. The model's AUC is "
                     f"<b>{T.num(m['auc'])}</b> (95% CI {T.ci(m['auc_ci'])}). At its threshold of {m['threshold']:g} "
                     f"it finds {T.pct(m['sensitivity'])} of the positive recordings and clears "
                     f"{T.pct(m['specificity'])} of the negative ones.</p>")
        st = m["stratified_auc"]
        if st["auc"] is not None:
            parts.append(f"<p class='big'>Compared only with recordings made the same way (the same "
                         f"{html.escape(st['by'])}), its AUC is <b>{T.num(st['auc'])}</b> (95% CI {T.ci(st['auc_ci'])})"
                         f": the confound-matched AUC, which a model that recognises the recording channel instead "
                         f"of the cough cannot inflate.</p>")
        else:
            parts.append(f"<p>No confound-matched AUC: {html.escape(st.get('reason', 'not computable'))}.</p>")
    else:
        parts.append("<p class='big'>No scored recording has a true label, so this report cannot say how accurate "
                     "the model is. It describes what was scored (see <a href='#operations'>Operations</a>).</p>")
    if m.get("cross_validation", {}).get("folds"):
        cv = m["cross_validation"]
        parts.append(f"<p>Cross-validation, fold by fold (each fold's participants scored by a model that never saw "
                     f"them); the AUC above pools every fold's out-of-fold scores: <b>{T.num(cv['pooled_auc'])}</b>."
                     "</p>")
        parts.append(_table(["fold", "participants", "recordings", "positive", "AUC"],
                            [[f["fold"], f["participants"], f["recordings"], f["positive"],
                              T.num(f["auc"]) if f["auc"] is not None else f.get("reason", "")] for f in cv["folds"]]))
    if m["warnings"]:
        parts.append("<div class='warn'><b>Read this first</b><ul>" +
                     "".join(f"<li>{html.escape(w)}</li>" for w in m["warnings"]) + "</ul></div>")
    parts.append(HOW_TO_READ)

    if m["n"]:
        parts.append("<h2>How well does the score separate positives from negatives?</h2>")
        parts.append(_table(["measure", "recordings", "95% CI", "participants", "95% CI"], [
            ["AUC", T.num(m["auc"]), T.ci(m["auc_ci"]), T.num(g["auc"]), T.ci(g["auc_ci"])],
            [f"AUC within {m['stratified_auc']['by']} (confound-matched)", T.num(m["stratified_auc"]["auc"]),
             T.ci(m["stratified_auc"]["auc_ci"]), "", ""],
            ["PR AUC (average precision)", T.num(m["pr_auc"]), "", T.num(g["pr_auc"]), ""],
            ["share positive (prevalence)", T.pct(m["prevalence"]), "", T.pct(g["prevalence"]), ""],
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
            [name, T.pct(m[key]), T.ci(m[f"{key}_ci"], pct=True), T.pct(g[key]), T.ci(g[f"{key}_ci"], pct=True)]
            for name, key in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("PPV", "ppv"),
                              ("NPV", "npv"), ("accuracy", "accuracy"))]))
        parts.append(_img(plots, "confusion_matrix.png", "Confusion matrix: rows are the truth, columns the model's call.")
                     + _img(plots, "score_by_class.png", "Score histograms of truly negative and truly positive "
                            "recordings; good separation means little overlap."))
        parts.append("<h2>Can the scores be read as probabilities?</h2><p>Not unless this section shows they are "
                     "calibrated: this report calls them scores.</p>")
        parts.append(f"<p>Brier score {T.num(m['brier'], 3)} (participants {T.num(g['brier'], 3)}). In the plot, points "
                     "on the diagonal mean that, among recordings scored about x, a share x is truly positive.</p>")
        parts.append(_img(plots, "calibration.png", "Calibration curve (10 equal-width score bins)."))

        parts.append("<h2>Shortcut check: a model that never hears the cough</h2>")
        if base.get("auc") is not None:
            parts.append(f"<p>Seeing only {html.escape(', '.join(base['features']))}, a baseline reaches AUC "
                         f"<b>{T.num(base['auc'])}</b> (95% CI {T.ci(base['auc_ci'])}); the model reaches "
                         f"{T.num(m['auc'])} ({T.ci(m['auc_ci'])}). Model minus baseline: "
                         f"{T.num(base['model_minus_baseline'])} (95% CI {T.ci(base['model_minus_baseline_ci'])}, "
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
                    [k, v["n"], v["n_groups"], T.pct(v["prevalence"]), T.num(v["auc"]), T.ci(v["auc_ci"]),
                     v.get("reason", "")] for k, v in result["levels"].items()]))
                parts.append(f"<p>{html.escape(column)} alone: AUC {T.num(alone['auc'])} (95% CI {T.ci(alone['auc_ci'])})"
                             f"{html.escape(' — ' + alone['reason']) if alone.get('reason') else ''}.</p>")
                parts.append(_img(plots, f"subgroups_{safe_name(column)}.png", f"AUC within each {column} group."))

    parts.append("<h2 id='operations'>Operations</h2>")
    parts.append(f"<p>PRED holds {ops['files']} files for this model version ({ops['recordings']} distinct "
                 f"recordings: files with the same bytes count once): {ops['ok']} files scored, "
                 f"{ops['errors']} could not be processed, {ops['rejected']} rejected (no cough detected, or by the "
                 "quality gate); every count below is of files. "
                 f"The latest run ({html.escape(str(ops['latest_run']))}) "
                 f"scored {ops['scored']}, failed on {ops['errored']} (error rate {T.pct(ops['error_rate'])}) and "
                 f"skipped {ops['skipped']} already scored in earlier runs.</p>")
    if ops.get("night"):
        night = ops["night"]
        parts.append(f"<p>Its listing of SOURCE found {night['listed']} files: {night['new']} new, "
                     f"{night['changed']} changed since they were scored, {night['seen_before']} seen before "
                     f"(not opened); {night['duplicates']} new files held recordings already scored under "
                     f"another name. It read {night['bytes_read'] / 1e6:.1f} MB and committed "
                     f"{night['commits']} chunk(s).</p>")
    if ops["runs"]:
        parts.append(_table(["run", "started", "scored", "errors"],
                            [[r["run_id"], r["started"], r["scored"], r["errored"]] for r in ops["runs"]]))
    for key, title in (("error_reasons", "Why recordings failed in the latest run"),
                       ("error_reasons_all_runs", "Why recordings failed in every run"),
                       ("rejection_reasons", "Why recordings were rejected in the latest run")):
        if ops[key] and (key != "error_reasons_all_runs" or len(ops["runs"]) > 1):
            parts.append(f"<h3>{title}</h3>" + _table(
                ["reason", "recordings"], [[e["reason"], e["count"]] for e in ops[key]]))
    parts.append(_problems_html(ops["problems"]))
    parts.append(_tables_html(ops.get("tables") or {}))
    d = ops["drift"]
    parts.append("<h3>Score drift</h3>")
    if d["psi"] is not None:
        parts.append(f"<p>Population stability index of the latest run's scores against the previous run's: "
                     f"<b>{T.num(d['psi'], 3)}</b> (below 0.1: stable; 0.1–0.2: a moderate shift; above "
                     f"{d['warn_above']:g}: the recordings or the model's behaviour changed, worth a look).</p>")
    else:
        parts.append(f"<p>Not computable: {html.escape(d.get('reason', ''))}.</p>")
    parts.append(_img(plots, "score_distribution.png", "Distribution of the model's scores."))
    if "gallery.png" in plots:
        parts.append("<h2>A look at some recordings</h2><p>The recordings with the highest and the lowest score, "
                     "and others drawn at random: the spectrogram (when the file can still be read), the coughs "
                     "the detector found (shaded), and each window's score across the seconds it covers (the "
                     "dotted line is the threshold). A score comes from the windows, so windows of speech or "
                     "line noise pull it, and a cough the detector missed is not shaded.</p>")
        parts.append(_img(plots, "gallery.png", "Spectrogram strips of sampled recordings with the detected coughs "
                                                "and the window scores along time."))
    if m["not_computable"]:
        parts.append("<h2>What could not be computed, and why</h2>" + _table(
            ["value", "reason"], sorted(m["not_computable"].items())))
    parts.append(f"<p class='note'>Labels: {html.escape(meta['labels'])}. 95% intervals: AUC, "
                 f"{html.escape(m['ci_method']['auc'])}, {meta['n_boot']} resamples, seed {meta['seed']}; rates "
                 f"(sensitivity, specificity, PPV, NPV, accuracy), {html.escape(m['ci_method']['rates'])} "
                 f"cough {html.escape(meta['cough_version'])}.</p>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
