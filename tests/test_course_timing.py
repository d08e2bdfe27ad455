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


def _recorded_runtimes(text: str) -> dict[str, dict[str, float]]:
    """``{stem: {"runtime_s": s}}`` from a course-run summary's first table."""
    rows = {}
    for line in text.split("### Where the time goes")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0][:2].isdigit():
            rows[cells[0]] = {"runtime_s": float(cells[2])}
    return rows


def test_every_quoted_runtime_is_the_recorded_course_runs():
    """One runtime per notebook: each header (and any document) quotes, as a metric marker, the
    seconds of the course run whose summary the README quotes, the run that made the outputs."""
    from galaxy_helpers import notebooks, quotes

    recorded = _recorded_runtimes(latest_result("course_run_*.md").read_text())
    folder = REPO / "notebooks"
    texts = {
        f"{p.name} cell {i + 1}": c.source
        for p in notebooks.numbered_notebooks(folder)
        for i, c in enumerate(notebooks.read_notebook(p).cells)
        if c.cell_type == "markdown"
    }
    texts |= {d: (REPO / d).read_text() for d in notebooks.QUOTING_DOCS if (REPO / d).exists()}
    problems, quoted = [], set()
    for where, text in texts.items():
        for match in quotes.QUOTE.finditer(text):
            if quotes.is_timing(match["expr"]):
                quoted.add(match["expr"].split(":")[0].strip())
                problems += quotes.problems(match[0], recorded, f"{where} ")
    assert problems == []
    assert quoted == {stem[:2] for stem in recorded}, "every notebook quotes its runtime once"


def test_a_typed_over_runtime_is_caught():
    from galaxy_helpers import quotes

    recorded = {"02_train": {"runtime_s": 73.1}}
    assert quotes.problems("73 s<!-- m:02:runtime_s -->", recorded) == []
    assert quotes.problems("80 s<!-- m:02:runtime_s -->", recorded)
    assert quotes.problems("80 s<!-- m:02:runtime_s -->", recorded, timings=False) == []
