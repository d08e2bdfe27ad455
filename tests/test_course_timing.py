"""The README's course timing is the course runner's own summary of a run, never typed by hand."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_quotes_the_latest_course_run_summary_verbatim():
    runs = sorted((REPO / "benchmarks" / "results").glob("course_run_*.md"))
    assert runs, "no benchmarks/results/course_run_*.md (copy a run's summary.md there)"
    text = runs[-1].read_text()
    assert text.startswith("| notebook | status | runtime (s) | headline numbers |")
    assert "### Where the time goes" in text and "Total wall time" in text
    readme = (REPO / "README.md").read_text()
    assert text in readme, f"README.md does not quote {runs[-1].name} verbatim"
    assert runs[-1].name in readme
