"""``archscale report``: one self-contained HTML page, checked as text and in a real browser."""

import base64
import html
import json
import re
import subprocess

import pytest

import archscale
from archscale.analysis.records import read_trials
from archscale.cli import main

pytestmark = pytest.mark.slow  # they read the session's finished run (one tiny search)

HEADINGS = ("Spec", "Pareto front", "Hypervolume over trials", "Learning curves of the front",
            "Effect of each searched choice on accuracy", "How the training-free proxies rank this run", "All trials")


@pytest.fixture(scope="module")
def report(finished_run, tmp_path_factory):
    """The finished run's report, written outside the run directory."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(finished_run), "--out", str(path)]) == 0
    return path


def front_ids_in_page(page: str) -> list[str]:
    """Trial ids in the first column of the table under the "Pareto front" heading."""
    section = page[page.index("<h2>Pareto front"):]
    table = section[section.index("<table"):section.index("</table>")]
    body = table[table.index("<tbody>"):]
    return [html.unescape(cell) for cell in re.findall(r"<tr><td[^>]*>([^<]*)</td>", body)]


def test_report_is_one_self_contained_page(report, finished_run, brute_force_front):
    page = report.read_text()
    for heading in HEADINGS:
        assert f"<h2>{heading}" in page, heading
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)  # nothing loaded from elsewhere
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 5  # front, hypervolume, learning curves, importances, choices
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    trials = read_trials(finished_run)
    expected = brute_force_front(trials, archscale.load_run(finished_run).spec.search.objective_pairs())
    assert sorted(front_ids_in_page(page)) == sorted(expected)
    done = trials[trials["status"] == "completed"]
    assert done["val_accuracy"].nunique() >= 2  # the fixture's trials differ, so importances exist
    assert f"Parameter importances for val_accuracy (Optuna: fANOVA over {len(done)} completed trials)" in page
    for trial_id in trials["trial_id"]:  # "All trials" lists every trial, infeasible ones too
        assert f">{trial_id}<" in page
    assert "No proxy was recorded. <code>search.proxies:" in page  # the fixture records none


# Appended to a copy of the report: after the page loaded, the browser writes what it rendered
# into <pre id="probe"> (images decoded, the front table's first column, its laid-out height).
PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const heading = [...document.querySelectorAll('h2')].find(h => h.textContent.startsWith('Pareto front'));
  let table = heading.nextElementSibling;
  while (table && table.tagName !== 'TABLE') table = table.nextElementSibling;
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    images: images.length,
    decoded: images.filter(i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100).length,
    front: [...table.querySelectorAll('tbody tr')].map(r => r.cells[0].textContent),
    table_height: table.getBoundingClientRect().height,
  });
  document.body.appendChild(probe);
});
</script>"""


def chromium_args(chromium, tmp_path):
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]


def test_report_shows_the_front_table_and_its_images_in_headless_chromium(report, finished_run, chromium, tmp_path,
                                                                           brute_force_front):
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    proc = subprocess.run([*chromium_args(chromium, tmp_path), "--virtual-time-budget=10000", "--dump-dom",
                           probed.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, proc.stderr[-2000:]
    seen = json.loads(html.unescape(match.group(1)))
    assert seen["images"] >= 5 and seen["decoded"] == seen["images"]  # every inlined PNG decoded
    expected = brute_force_front(read_trials(finished_run), archscale.load_run(finished_run).spec.search.objective_pairs())
    assert sorted(seen["front"]) == sorted(expected) and seen["table_height"] > 20 * len(expected)


def test_report_screenshot_in_headless_chromium_shows_the_plots(report, chromium, tmp_path):
    import matplotlib.image

    shot = tmp_path / "report.png"
    proc = subprocess.run([*chromium_args(chromium, tmp_path), "--hide-scrollbars", "--window-size=1200,2400",
                           f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert pixels.shape[:2] == (2400, 1200)
    assert (pixels.min(axis=2) < 0.9).mean() > 0.03  # not a blank page
    # The inlined plots were decoded and drawn: matplotlib's red (front) and blue (curves,
    # bars) appear, which the page's text and tables (black and grey) never use.
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    blue = (pixels[..., 2] > 0.55) & (pixels[..., 0] < 0.3)
    assert red.sum() > 200 and blue.sum() > 200


def _section(page: str, heading: str) -> str:
    start = page.index(f"<h2>{heading}")
    end = page.find("<h2>", start + 1)
    return page[start:end if end > 0 else None]


def test_a_searched_training_field_is_among_the_reports_choices(write_run, capsys):
    run_dir = write_run()
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    every = _section(page, "All trials")
    assert '<th class="">train.lr</th>' in every and '<th class="">c1_width</th>' in every
    choices = _section(page, "Effect of each searched choice")
    assert re.search(r"<p>Searched choices: [^<]*\btrain\.lr\b", choices), choices[:300]
