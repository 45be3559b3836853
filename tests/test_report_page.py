"""The report as a page a person reads: where the data came from, what the score is for,
intervals that keep their width at 0% and 100%, and a layout that works in a real
browser (Debian's chromium, headless) at 1280 and 420 px."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from cough.evaluation import metrics as M

from .helpers import clustered, report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
#: Put into a copy of the report: once the page has loaded, sends its viewport width, page
#: width, the elements wider than the viewport (outside the tables' own scrolling boxes) and
#: the images that did not load to the page that frames it (:data:`FRAME`).
PROBE = """<script>window.addEventListener('load', () => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => !e.parentElement.closest('.scroll'))
    .filter(e => { const r = e.getBoundingClientRect(); return r.right > width + 1 || r.left < -1; })
    .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''));
  const images = [...document.images];
  parent.postMessage(JSON.stringify({width, page: document.documentElement.scrollWidth, wide,
    images: images.length, broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).length}), '*');
});</script>"""
#: The report in a frame of the width under test (a desktop browser window cannot be made
#: narrower than 500 px; a frame can, as a phone's viewport is); writes what the probe
#: sends into an attribute that --dump-dom prints.
FRAME = """<!doctype html><html><body style="margin:0">
<iframe src="probe.html" style="border:0;width:{width}px;height:900px"></iframe>
<script>addEventListener('message', e => document.body.setAttribute('data-probe', e.data));</script></body></html>"""


def test_rate_intervals_keep_their_width_at_100_percent():
    people = [f"p{i}" for i in range(46)]
    m = M.evaluate([1] * 26 + [0] * 20, [0.9] * 26 + [0.1] * 20, people, n_boot=200)
    assert m.sensitivity == 1.0 and 0.85 < m.sensitivity_ci[0] < 0.9 and m.sensitivity_ci[1] == 1.0
    # the same 26 people with two recordings each that agree are worth 26 observations, not 52
    twice = M.evaluate([1] * 52 + [0] * 40, [0.9] * 52 + [0.1] * 40, [p for p in people for _ in (0, 1)], n_boot=200)
    assert twice.sensitivity_ci[0] == pytest.approx(m.sensitivity_ci[0], abs=1e-9)
    assert M.wilson(52, 52)[0] > twice.sensitivity_ci[0] + 0.03
    frame = clustered(np.random.default_rng(3), 60, 3)  # within 0% and 100%: about the bootstrap's width
    y, score, groups = frame["label"].to_numpy(), frame["score"].to_numpy(), frame["participant"].to_numpy()
    m = M.evaluate(y, score, groups, n_boot=400)
    boot, _ = M.bootstrap_ci(lambda w: M.rates(M.confusion(y, (score >= 0.5).astype(int), w)), groups, n_boot=400)
    for rate in ("sensitivity", "accuracy"):
        width, boot_width = np.diff(getattr(m, f"{rate}_ci"))[0], np.diff(boot[rate])[0]
        assert 0.8 * boot_width < width < 1.25 * boot_width, rate


def _frame(ids, rng, separation=2.0):
    labels = rng.integers(0, 2, len(ids))
    return pd.DataFrame({"participant": ids, "label": labels,
                         "score": 1 / (1 + np.exp(-(separation * (labels - 0.5) + rng.normal(size=len(ids)))))})


def test_the_report_says_where_the_data_come_from_and_what_the_score_is_for(tmp_path):
    rng = np.random.default_rng(5)
    archive = tmp_path / "archive"
    (archive / "raw").mkdir(parents=True)
    (archive / "synth.json").write_text(json.dumps({"synthetic": True, "generator": "cough synth", "seed": 3}))
    m, out = report(tmp_path / "a", _frame([f"g{i}" for i in range(60)], rng),
                    record_extra={"source": str(archive / "raw"), "labels": str(archive / "labels.csv")})
    page = (out / "report.html").read_text()
    assert m["provenance"]["synthetic"] == "yes" and "synth.json" in m["provenance"]["evidence"]
    assert "Synthetic data" in page and str(archive / "raw") in page and str(archive / "labels.csv") in page
    assert "name='viewport'" in page and "not a diagnosis" in page and "Intended use" in page
    assert "probability of positive" not in page and "Wilson" in page
    written = json.loads((out / "metrics.json").read_text())
    assert written["schema_version"] == 1 and written["confusion_matrix_layout"]["rows"] == "true label"
    (tn, fp), (fn, tp) = written["confusion_matrix"]
    assert written["confusion"] == {"true_negative": tn, "false_positive": fp, "false_negative": fn,
                                    "true_positive": tp}
    m, out = report(tmp_path / "b", _frame([f"s7p{i:05d}" for i in range(60)], rng))  # cough synth's ids
    assert m["provenance"]["synthetic"] == "yes" and "participant ids" in m["provenance"]["evidence"]
    frame = _frame([f"person{i}" for i in range(80)], rng, separation=0.0)
    frame["site"] = np.where(frame["label"] == 1, "clinic", "app")  # where recorded gives the label away
    m, out = report(tmp_path / "c", frame, meta_columns=["site"], by=["site"])
    page = (out / "report.html").read_text()
    assert m["provenance"]["synthetic"] == "no" and "Synthetic data" not in page
    assert m["confounds"] and "Confound warning" in page


def chromium() -> str:
    """Debian's chromium, installed with apt-get when absent (as root); skips when impossible."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "apt-get install chromium")
    for step in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "chromium"]):
        subprocess.run(step, capture_output=True, timeout=1200, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip("chromium is not installed and `apt-get install chromium` failed")


def probe(browser: str, report_dir, width: int, profile) -> dict:
    page = report_dir / f"frame-{width}.html"
    page.write_text(FRAME.format(width=width))
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width + 40},1000",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert found, dom.stderr[-3000:]
    return json.loads(html.unescape(found.group(1)))


def test_the_report_fits_a_phone_and_a_laptop_in_a_real_browser(tmp_path):
    browser = chromium()
    rng = np.random.default_rng(8)
    frame = clustered(rng, 120, 2, separation=1.5)
    frame["site"] = rng.choice(["app", "clinic", "a-very-long-call-centre-name-without-spaces"], len(frame))
    frame = frame.assign(duration_s=rng.uniform(0.5, 9, len(frame)), sample_rate=rng.choice([16000, 48000], len(frame)),
                         channels=1, format=rng.choice(["mp3", "ogg"], len(frame)))
    frame["run_id"] = np.where(np.arange(len(frame)) < 120, "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb")
    _, out = report(tmp_path, frame, meta_columns=["site"], by=["site"], recording_metadata=True)
    (out / "probe.html").write_text((out / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    n_plots = len(list(out.glob("*.png")))
    for width in (1280, 420):
        seen = probe(browser, out, width, tmp_path / f"profile-{width}")
        assert seen["width"] <= width and seen["page"] <= seen["width"], seen
        assert seen["wide"] == [], seen
        assert seen["images"] == n_plots >= 6 and seen["broken"] == 0, seen
