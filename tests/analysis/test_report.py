"""The report takes its objectives and searched choices from the validated spec, so a searched
training field (``train.lr``) is a choice like an architecture parameter."""

import re

from archscale.cli import main


def section(page: str, heading: str) -> str:
    start = page.index(f"<h2>{heading}")
    end = page.find("<h2>", start + 1)
    return page[start:end if end > 0 else None]


def test_a_searched_training_field_is_among_the_reports_choices(write_run, capsys):
    run_dir = write_run()
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    every = section(page, "All trials")
    assert '<th class="">train.lr</th>' in every and '<th class="">c1_width</th>' in every
    choices = section(page, "Effect of each searched choice")
    assert re.search(r"<p>Searched choices: [^<]*\btrain\.lr\b", choices), choices[:300]
