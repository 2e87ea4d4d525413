"""What the winner gets wrong: the counts checked against scikit-learn's confusion matrix, the
recomputed test accuracy against the one the trial recorded, and the section in a browser."""

import html
import json
import re
import subprocess

import numpy as np
import pytest
import torch

import archscale
from archscale.analysis.mistakes import Mistakes
from archscale.cli import main
from tests.analysis.test_report import chromium_args


def _mistakes(labels, predicted, confidence, classes=("a", "b", "c")) -> Mistakes:
    n = len(labels)
    return Mistakes("t", list(classes), np.array(labels), np.array(predicted), np.array(confidence, dtype=float),
                    torch.zeros(n, 1, 4, 4, dtype=torch.uint8))


def test_confusion_and_per_class_agree_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    predicted = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 3, 200))
    m = _mistakes(labels, predicted, rng.random(200))
    assert (m.confusion() == metrics.confusion_matrix(labels, predicted, labels=[0, 1, 2])).all()
    recall = metrics.recall_score(labels, predicted, average=None, labels=[0, 1, 2])
    per_class = {name: acc for name, _, _, acc in m.per_class()}
    assert per_class == pytest.approx(dict(zip("abc", recall)))
    assert [r[3] for r in m.per_class()] == sorted(r[3] for r in m.per_class())  # worst first
    assert m.accuracy == pytest.approx(metrics.accuracy_score(labels, predicted))


def test_most_confident_wrong_first_and_a_class_without_test_images_left_out():
    m = _mistakes([0, 0, 1, 1, 0], [1, 0, 0, 1, 1], [0.6, 0.99, 0.9, 0.8, 0.7])
    assert list(m.most_confident_wrong()) == [2, 4, 0]  # wrong ones only, by confidence
    assert [r[0] for r in m.per_class()] == ["a", "b"]  # "c" has no test image
    assert m.per_class()[0] == ("a", 3, 1, pytest.approx(1 / 3))


@pytest.mark.slow
def test_the_winner_recomputed_gets_the_test_accuracy_it_recorded(finished_run):
    run = archscale.load_run(finished_run)
    winner = str(run.best["trial_id"])
    m = run.mistakes(winner)
    assert len(m.labels) == 1000 and m.classes == [str(i) for i in range(10)]  # mnist-5k's held-out test split
    assert m.accuracy == pytest.approx(m.recorded_accuracy, abs=1e-9)
    assert sum(r[1] for r in m.per_class()) == 1000


@pytest.mark.slow
def test_the_report_shows_the_winners_mistakes_in_headless_chromium(finished_run, chromium, tmp_path):
    path = tmp_path / "report.html"
    assert main(["report", str(finished_run), "--out", str(path)]) == 0
    page = path.read_text()
    winner = str(archscale.load_run(finished_run).best["trial_id"])
    assert f"What the winner gets wrong (trial {winner})" in page
    probe = """<script>window.addEventListener('load', () => {
      const h = document.getElementById('mistakes'); const found = {tables: [], images: []};
      for (let e = h.nextElementSibling; e && e.tagName !== 'H2'; e = e.nextElementSibling) {
        if (e.tagName === 'TABLE') found.tables.push([...e.querySelectorAll('tbody tr')].map(r => r.cells[0].textContent));
        if (e.tagName === 'IMG') found.images.push([e.complete, e.naturalWidth, e.naturalHeight]);
      }
      const p = document.createElement('pre'); p.id = 'probe'; p.textContent = JSON.stringify(found);
      document.body.appendChild(p); });</script>"""
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    proc = subprocess.run([*chromium_args(chromium, tmp_path), "--virtual-time-budget=10000", "--dump-dom",
                           probed.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, proc.stderr[-2000:]
    seen = json.loads(html.unescape(match.group(1)))
    assert sorted(seen["tables"][0]) == [str(i) for i in range(10)]  # a row per class
    assert len(seen["images"]) == 2 and all(ok and w > 200 and h > 100 for ok, w, h in seen["images"])
