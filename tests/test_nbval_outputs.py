"""Stored outputs stay true: nbval-style comparison of the committed notebooks with this session's run.

The notebooks are committed with the outputs of a quick-profile run. Cells whose output is
deterministic (schema tables, dataset sizes, seeded summaries) carry the comment
``# NBVAL_CHECK_OUTPUT``. Instead of executing every notebook a second time with
``pytest --nbval-lax notebooks/`` (the suite has a 15-minute budget), these tests compare the
checked cells of each committed notebook with the executed copy that the session's course run
(the ``course_output`` fixture of tests/conftest.py) already produced, using nbval's rules:
streams coalesced, images / metadata / execution counts / widget model ids skipped, and the
replacements of tests/nbval_sanitize.cfg applied to both sides.

The same markers work with nbval itself, for anyone who prefers it::

    pytest --nbval-lax notebooks/ --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:randomly

When a test here fails, either the code changed on purpose (run ``make notebooks`` and commit
the regenerated notebooks) or a helper changed a result it should not have.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from galaxy_helpers import notebooks as nbt

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
COMMITTED = nbt.numbered_notebooks(NOTEBOOKS) if NOTEBOOKS.is_dir() else []
REGENERATE = "make notebooks (or: python -m galaxy_helpers.notebooks regenerate)"


# -------------------------------------------------------------------- the committed notebooks


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_notebook_marks_deterministic_cells_to_check(path):
    checked = [c for c in nbt.read_notebook(path).cells if nbt.is_checked_cell(c)]
    assert checked, (
        f"{path.name} has no cell marked '# {nbt.CHECK_MARKER}'; mark at least one cell whose "
        "output is deterministic (a schema table, a dataset size, a seeded summary)"
    )
    missing = [c.source.splitlines()[0] for c in checked if not c.get("outputs")]
    assert not missing, (
        f"{path.name}: checked cells without stored outputs: {missing}; {REGENERATE}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_stored_outputs_match_this_sessions_run(path, course_metrics):
    if path.stem in course_metrics.errors:
        pytest.fail(
            f"{path.name} failed in the course run:\n{course_metrics.errors[path.stem]}", False
        )
    executed = Path(course_metrics.output_dir) / "executed" / path.name
    assert executed.exists(), f"the course run wrote no executed copy of {path.name} ({executed})"
    report = nbt.compare_checked_outputs(
        nbt.read_notebook(path), nbt.read_notebook(executed), nbt.read_sanitize_patterns(SANITIZE)
    )
    if report:
        details = "\n\n".join(
            f"{cell}:\n" + "\n".join(problems) for cell, problems in report.items()
        )
        pytest.fail(
            f"{path.name}: stored outputs no longer match what the code produces "
            f"(executed copy: {executed}).\n\n{details}\n\nIf the change is intended: {REGENERATE}, "
            "then commit the notebook.",
            False,
        )


# -------------------------------------------------------------------- the comparison rules


def _nb(*cells):
    nb = new_notebook(cells=list(cells))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i}"
    return nb


def _cell(source, *outputs):
    return new_code_cell(source, outputs=list(outputs))


def _stdout(text):
    return new_output("stream", name="stdout", text=text)


def test_only_marked_cells_are_compared():
    stored = _nb(
        _cell("# NBVAL_CHECK_OUTPUT\nprint(n)", _stdout("10\n")),
        _cell("print(t)", _stdout("1.2 s\n")),
    )
    fresh = _nb(
        _cell("# NBVAL_CHECK_OUTPUT\nprint(n)", _stdout("10\n")),
        _cell("print(t)", _stdout("3.4 s\n")),
    )
    assert nbt.compare_checked_outputs(stored, fresh) == {}
    fresh.cells[0].outputs = [_stdout("11\n")]
    report = nbt.compare_checked_outputs(stored, fresh)
    assert list(report) == ["cell 0 (code, '# NBVAL_CHECK_OUTPUT')"]
    (message,) = report["cell 0 (code, '# NBVAL_CHECK_OUTPUT')"]
    assert message.startswith("stdout differs")
    assert "\n-10\n+11" in message


def test_tag_marks_a_cell_too():
    cell = _cell("x", _stdout("1\n"))
    cell.metadata["tags"] = [nbt.CHECK_TAG]
    assert nbt.is_checked_cell(cell)
    assert not nbt.is_checked_cell(_cell("x  # NBVAL_CHECK_OUTPUT is not a marker mid-line"))


def test_tables_compare_text_and_html_and_skip_images_and_widget_ids():
    def table(html, png, model):
        return new_output(
            "execute_result",
            data={
                "text/plain": "   a\n0  1",
                "text/html": html,
                "image/png": png,
                nbt.WIDGET_MIME: {"model_id": model},
            },
            execution_count=3,
        )

    stored = _nb(_cell("# NBVAL_CHECK_OUTPUT\ndf", table("<td>1</td>", "AAAA", "m1")))
    fresh = _nb(_cell("# NBVAL_CHECK_OUTPUT\ndf", table("<td>1</td>", "BBBB", "m2")))
    fresh.cells[0].outputs[0]["execution_count"] = 7
    assert nbt.compare_checked_outputs(stored, fresh) == {}
    fresh.cells[0].outputs[0]["data"]["text/html"] = "<td>2</td>"
    (problems,) = nbt.compare_checked_outputs(stored, fresh).values()
    assert problems[0].startswith("text/html differs")


def test_streams_are_coalesced_and_progress_bars_ignored():
    stored = _nb(_cell("# NBVAL_CHECK_OUTPUT\nf()", _stdout("a\nb\n")))
    fresh = _nb(
        _cell(
            "# NBVAL_CHECK_OUTPUT\nf()",
            _stdout("a\n"),
            new_output(
                "stream", name="stderr", text="100%|##########| 5/5 [00:00<00:00, 99.0it/s]\n"
            ),
            _stdout("b\n"),
        )
    )
    assert nbt.compare_checked_outputs(stored, fresh) == {}


def test_missing_and_extra_outputs_are_reported():
    stored = _nb(_cell("# NBVAL_CHECK_OUTPUT\nf()", _stdout("a\n")))
    fresh = _nb(_cell("# NBVAL_CHECK_OUTPUT\nf()"))
    assert (
        "missing from the new run"
        in nbt.compare_checked_outputs(stored, fresh)["cell 0 (code, '# NBVAL_CHECK_OUTPUT')"][0]
    )
    fresh.cells[0].outputs = [
        _stdout("a\n"),
        new_output("stream", name="stderr", text="Warning!\n"),
    ]
    assert (
        "new output fields"
        in nbt.compare_checked_outputs(stored, fresh)["cell 0 (code, '# NBVAL_CHECK_OUTPUT')"][0]
    )


def test_cells_matched_by_id_despite_papermills_injected_cell():
    stored = _nb(_cell("seed = 0"), _cell("# NBVAL_CHECK_OUTPUT\nprint(seed)", _stdout("0\n")))
    fresh = _nb(_cell("seed = 0"), _cell("# NBVAL_CHECK_OUTPUT\nprint(seed)", _stdout("0\n")))
    injected = new_code_cell("output_dir = '/tmp/x'", metadata={"tags": ["injected-parameters"]})
    injected["id"] = "papermill-injected"
    fresh.cells.insert(1, injected)
    assert nbt.compare_checked_outputs(stored, fresh) == {}
    fresh.cells[2].source = "# NBVAL_CHECK_OUTPUT\nprint(seed + 1)"
    (problems,) = nbt.compare_checked_outputs(stored, fresh).values()
    assert "no cell with this source" in problems[0]


def test_shipped_sanitize_rules_hide_paths_addresses_and_runtimes():
    patterns = nbt.read_sanitize_patterns(SANITIZE)
    assert len(patterns) == 3
    stored = _nb(
        _cell(
            "# NBVAL_CHECK_OUTPUT\nx",
            _stdout(
                "wrote ../course_output/metrics/01_a.json {'n': 3, 'runtime_s': 12.5} <Obj at 0x7f3a2b1c0d90>\n"
            ),
        )
    )
    fresh = _nb(
        _cell(
            "# NBVAL_CHECK_OUTPUT\nx",
            _stdout(
                "wrote /tmp/pytest-of-root/pytest-3/course_output0/metrics/01_a.json {'n': 3, 'runtime_s': 9.01} "
                "<Obj at 0x55d0c0ffee00>\n"
            ),
        )
    )
    assert nbt.compare_checked_outputs(stored, fresh, patterns) == {}
    fresh.cells[0].outputs = [
        _stdout(fresh.cells[0].outputs[0]["text"].replace("'n': 3", "'n': 4"))
    ]
    assert nbt.compare_checked_outputs(stored, fresh, patterns) != {}


def test_bad_sanitize_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("regex: ([unclosed\nreplace: x\n")
    with pytest.raises(nbt.NotebookCheckError, match="bad.cfg"):
        nbt.read_sanitize_patterns(bad)
