"""The README's course timing is the course runner's own summary of a run, never typed by hand."""

from _bench_results import REPO, latest_result


def test_the_readme_quotes_the_latest_course_run_summary_verbatim():
    run = latest_result("course_run_*.md")
    text = run.read_text()
    assert text.startswith("| notebook | status | runtime (s) | headline numbers |")
    assert "### Where the time goes" in text and "Total wall time" in text
    readme = (REPO / "README.md").read_text()
    assert text in readme, f"README.md does not quote {run.name} verbatim"
    assert run.name in readme
