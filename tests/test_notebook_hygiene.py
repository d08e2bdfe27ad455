"""Notebook hygiene: the committed notebooks carry no volatile metadata, current navigation and
the workshop layout; and the tools that keep them so (galaxy_helpers.tooling, and the runner and
command line of galaxy_helpers.notebooks) work."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from galaxy_helpers import notebooks
from galaxy_helpers import tooling as nbt

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
COMMITTED = nbt.numbered_notebooks(NOTEBOOKS) if NOTEBOOKS.is_dir() else []

HEADER = """# 07. Try the tools

**Learning goals**
- Strip notebooks.
- Write navigation.
- Check the structure.

**Prerequisites:** notebook 01.

**Runtime:** 5 s<!-- m:07:runtime_s --> on a laptop CPU (quick profile); about 5 s on a GPU.

**Data used:** none.

**Last verified:** 2026-01-01 with Python 3.11.9, numpy 2.1.0
"""


def _good_notebook(stem: str = "07_try_the_tools") -> nbformat.NotebookNode:
    """A notebook that keeps every contract; tests break one thing at a time."""
    header = HEADER.replace("m:07:", f"m:{stem[:2]}:")
    cells = [
        new_markdown_cell(header, metadata={"tags": ["header"]}),
        new_markdown_cell("## 1. Set up"),
        new_code_cell(
            'output_dir = "../course_output"\nseed = 0', metadata={"tags": ["parameters"]}
        ),
        new_code_cell(f'run = course.start_notebook("{stem}", output_dir=output_dir)'),
        new_markdown_cell("## 2. Count\n\n### Exercise\nCount to three."),
        new_markdown_cell("<details><summary>Solution</summary>\n\n1, 2, 3\n</details>"),
        new_code_cell(
            "# NBVAL_CHECK_OUTPUT\nprint(1 + 1)", outputs=[new_output("stream", text="2\n")]
        ),
        new_markdown_cell("## Key points\n- Counting works."),
        new_code_cell("run.write_metrics({'n': 3})"),
    ]
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(nbt.CANONICAL_KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.9"}
    return nb


def _volatile_notebook() -> nbformat.NotebookNode:
    """A notebook as papermill + JupyterLab leave it."""
    nb = _good_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["papermill"] = {"duration": 3.2, "start_time": "2026-01-01T00:00:00"}
    nb.metadata["kernelspec"] = {
        "display_name": "venv",
        "language": "python",
        "name": "venv-kernel",
    }
    cell = nb.cells[6]
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:01"}
    cell.metadata["papermill"] = {"duration": 0.1, "status": "completed"}
    cell.metadata["tags"] = []
    cell.outputs.append(
        new_output("stream", name="stderr", text="100%|##########| 10/10 [00:01<00:00, 9.1it/s]\n")
    )
    cell.outputs.append(
        new_output(
            "display_data",
            data={
                nbt.WIDGET_MIME: {"model_id": "3f2a", "version_major": 2, "version_minor": 0},
                "text/plain": "  0%|          | 0/10 [00:00<?, ?it/s]",
            },
        )
    )
    return nb


def _write(tmp_path: Path, name: str, nb) -> Path:
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


# -------------------------------------------------------------------- the committed notebooks


def test_course_has_numbered_notebooks():
    assert COMMITTED, f"no numbered notebooks (NN_name.ipynb) in {NOTEBOOKS}"


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_notebook_has_no_volatile_metadata(path):
    problems = nbt.volatile_items(nbt.read_notebook(path))
    assert not problems, (
        f"{path.name} carries volatile metadata (run `python -m galaxy_helpers.notebooks strip`):\n"
        + "\n".join(problems)
    )


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_notebook_keeps_the_workshop_layout(path):
    problems = nbt.structure_problems(nbt.read_notebook(path), path)
    assert not problems, f"{path.name} breaks the layout of DEVELOPERS.md:\n" + "\n".join(problems)


def test_committed_navigation_is_current():
    report = nbt.check_notebooks(notebook_dir=NOTEBOOKS, checks=("nav",))
    assert not report, f"{report}\nRun `python -m galaxy_helpers.notebooks nav`."


def test_committed_notebooks_are_valid_nbformat():
    for path in COMMITTED:
        nbformat.validate(nbt.read_notebook(path))


# -------------------------------------------------------------------- strip


def test_strip_removes_volatile_metadata_and_keeps_outputs():
    nb = _volatile_notebook()
    found = "\n".join(nbt.volatile_items(nb))
    for item in (
        "metadata.widgets",
        "metadata.papermill",
        "kernelspec",
        "language_info.version",
        "metadata.execution",
        "metadata.tags",
        "progress-bar",
        nbt.WIDGET_MIME,
    ):
        assert item in found, item
    clean = nbt.strip_notebook(nb)
    assert nbt.volatile_items(clean) == []
    assert "widgets" not in clean.metadata and "papermill" not in clean.metadata
    assert clean.metadata.kernelspec == nbt.CANONICAL_KERNELSPEC
    assert clean.cells[6].outputs == [new_output("stream", text="2\n")]
    assert clean.cells[2].metadata["tags"] == ["parameters"]
    # the original is not modified
    assert "widgets" in nb.metadata


def test_strip_keeps_real_stderr_and_widget_fallback_text():
    nb = _good_notebook()
    nb.cells[6].outputs = [
        new_output(
            "stream",
            name="stderr",
            text="warning: faint galaxy\n 50%|#####     | 1/2 [00:00<00:00]\n",
        ),
        new_output(
            "display_data",
            data={
                nbt.WIDGET_MIME: {"model_id": "x"},
                "text/plain": "VBox(children=(Label(value='0 labels'),))",
            },
        ),
    ]
    clean = nbt.strip_notebook(nb)
    assert clean.cells[6].outputs[0]["text"] == "warning: faint galaxy\n"
    assert clean.cells[6].outputs[1]["data"] == {
        "text/plain": "VBox(children=(Label(value='0 labels'),))"
    }


def test_strip_is_idempotent_byte_for_byte(tmp_path):
    path = _write(tmp_path, "07_try_the_tools.ipynb", _volatile_notebook())
    assert notebooks.main(["strip", str(path)]) == 0
    first = path.read_bytes()
    assert notebooks.main(["strip", str(path)]) == 0
    assert path.read_bytes() == first
    assert notebooks.main(["strip", "--check", str(path)]) == 0


def test_strip_check_fails_naming_file_and_cell(tmp_path, capsys):
    path = _write(tmp_path, "07_try_the_tools.ipynb", _volatile_notebook())
    before = path.read_bytes()
    assert notebooks.main(["--notebook-dir", str(tmp_path), "strip", "--check"]) == 1
    out = capsys.readouterr().out
    assert str(path) in out and "cell 6" in out and "metadata.widgets" in out
    assert path.read_bytes() == before, "--check must not write"


def test_strip_removes_papermill_error_marker_cells():
    nb = _good_notebook()
    marker = new_markdown_cell(
        "An Exception was encountered", metadata={"tags": ["papermill-error-cell-tag"]}
    )
    nb.cells.insert(0, marker)
    assert any("error-marker" in p for p in nbt.volatile_items(nb))
    assert len(nbt.strip_notebook(nb).cells) == len(nb.cells) - 1


# -------------------------------------------------------------------- nav


def _course(tmp_path: Path, stems=("01_first", "02_second", "03_third")) -> list[Path]:
    paths = []
    for stem in stems:
        nb = _good_notebook(stem)
        header = HEADER.replace("07. Try the tools", f"{stem[:2]}. Title of {stem}")
        nb.cells[0].source = header.replace("m:07:", f"m:{stem[:2]}:")
        paths.append(_write(tmp_path, f"{stem}.ipynb", nb))
    return paths


def test_nav_writes_previous_contents_next_top_and_bottom(tmp_path):
    paths = _course(tmp_path)
    assert notebooks.main(["--notebook-dir", str(tmp_path), "nav", "--check"]) == 1
    assert notebooks.main(["--notebook-dir", str(tmp_path), "nav"]) == 0
    middle = nbt.read_notebook(paths[1])
    nav = [i for i, c in enumerate(middle.cells) if "navigation" in c.metadata.get("tags", [])]
    assert nav == [1, len(middle.cells) - 1], "after the header and at the very end"
    text = middle.cells[1].source
    assert "[&larr; 01. Title of 01_first](01_first.ipynb)" in text
    assert "[Course map](../README.md#course-map)" in text
    assert "[03. Title of 03_third &rarr;](03_third.ipynb)" in text
    first = nbt.read_notebook(paths[0]).cells[1].source
    assert "&larr;" not in first and "02_second.ipynb" in first
    assert "&rarr;" not in nbt.read_notebook(paths[2]).cells[1].source
    assert notebooks.main(["--notebook-dir", str(tmp_path), "nav", "--check"]) == 0
    # the navigation cells do not break the layout (write_metrics is still the last code cell)
    assert nbt.structure_problems(middle, paths[1]) == []


def test_nav_is_idempotent_and_follows_renames(tmp_path):
    paths = _course(tmp_path)
    nbt.write_navigation(tmp_path)
    snapshot = [p.read_bytes() for p in paths]
    assert nbt.write_navigation(tmp_path) == []
    assert [p.read_bytes() for p in paths] == snapshot
    # a new notebook at the end makes the last one's links stale
    _course(tmp_path, stems=("04_fourth",))
    report = nbt.check_notebooks(notebook_dir=tmp_path, checks=("nav",))
    assert str(paths[2]) in report and "out of date" in str(report)
    assert str(paths[1]) not in report


def test_nav_keeps_old_nbformat_valid(tmp_path):
    nb = _good_notebook("01_old")
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    path = _write(tmp_path, "01_old.ipynb", nb)
    nbt.write_navigation(tmp_path)
    written = nbt.read_notebook(path)
    assert written.nbformat_minor == 4 and all("id" not in c for c in written.cells)
    nbformat.validate(written)


def test_nav_check_catches_moved_or_edited_cells(tmp_path):
    paths = _course(tmp_path, stems=("01_first", "02_second"))
    nbt.write_navigation(tmp_path)
    nb = nbt.read_notebook(paths[0])
    nb.cells[-1].source += " edited by hand"
    nb.cells.insert(1, nb.cells.pop(3))
    nbformat.write(nb, paths[0])
    problems = nbt.check_notebooks(notebook_dir=tmp_path, checks=("nav",))[str(paths[0])]
    assert any("expected cell 1" in p for p in problems)
    assert any("out of date" in p for p in problems)


# -------------------------------------------------------------------- check-structure


def test_good_notebook_passes_structure():
    assert nbt.structure_problems(_good_notebook(), "07_try_the_tools.ipynb") == []


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda nb: nb.cells[0].metadata.pop("tags"), "no header cell"),
        (
            lambda nb: setattr(
                nb.cells[0], "source", HEADER.replace("- Check the structure.\n", "")
            ),
            "2 bullets",
        ),
        (lambda nb: setattr(nb.cells[0], "source", HEADER.replace("GPU", "TPU")), "CPU and a GPU"),
        (
            lambda nb: setattr(nb.cells[0], "source", HEADER.replace("2026-01-01", "last year")),
            "YYYY-MM-DD",
        ),
        (
            lambda nb: setattr(nb.cells[0], "source", HEADER.replace("Prerequisites", "Needs")),
            "Prerequisites",
        ),
        (
            lambda nb: setattr(nb.cells[0], "source", HEADER.replace("Data used", "Inputs")),
            "Data used",
        ),
        (
            lambda nb: nb.cells[6].metadata.setdefault("tags", ["parameters"]),
            "2 code cells tagged 'parameters'",
        ),
        (lambda nb: nb.cells[2].metadata.pop("tags"), "0 code cells tagged 'parameters'"),
        (lambda nb: setattr(nb.cells[2], "source", 'output_dir = "x"'), "does not set 'seed'"),
        (
            lambda nb: setattr(nb.cells[2], "source", nb.cells[2].source + '\nq = "a == 1"'),
            "line 3 ('q = \"a == 1\"') has more than one '='",
        ),
        (
            lambda nb: setattr(nb.cells[3], "source", 'run = course.start_notebook("01_other")'),
            "start_notebook",
        ),
        (
            lambda nb: setattr(nb.cells[4], "source", "## 3. Count\n\n### Exercise"),
            "should be '## 2.'",
        ),
        (lambda nb: setattr(nb.cells[5], "source", "Solution: 1, 2, 3"), "folded solution"),
        (lambda nb: setattr(nb.cells[4], "source", "## 2. Count"), "no exercise"),
        (
            lambda nb: (
                setattr(nb.cells[4], "source", "## 2. Count"),
                setattr(nb.cells[0], "source", HEADER.replace("Strip notebooks.", "Do exercises.")),
            ),
            "no exercise",
        ),
        (lambda nb: setattr(nb.cells[7], "source", "## Summary"), "Key points"),
        (lambda nb: nb.cells.append(new_code_cell("print('after')")), "write_metrics"),
    ],
)
def test_structure_names_each_broken_contract(breakage, message):
    nb = _good_notebook()
    breakage(nb)
    problems = nbt.structure_problems(nb, "07_try_the_tools.ipynb")
    assert any(message in p for p in problems), problems


def test_check_structure_cli_exit_codes(tmp_path, capsys):
    good = _write(tmp_path, "07_try_the_tools.ipynb", _good_notebook())
    assert notebooks.main(["check-structure", str(good)]) == 0
    bad_nb = _good_notebook("08_bad")
    bad_nb.cells = bad_nb.cells[:-1]
    bad = _write(tmp_path, "08_bad.ipynb", bad_nb)
    assert notebooks.main(["check-structure", str(bad)]) == 1
    assert "08_bad.ipynb" in capsys.readouterr().out


def test_unreadable_notebook_gets_a_clear_error(tmp_path, capsys):
    path = tmp_path / "09_broken.ipynb"
    path.write_text("{not json")
    with pytest.raises(nbt.NotebookCheckError, match="09_broken.ipynb"):
        nbt.read_notebook(path)
    assert notebooks.main(["check-structure", str(path)]) == 2
    assert "09_broken.ipynb" in capsys.readouterr().err


# -------------------------------------------------------------------- stamp and regenerate


def test_stamp_header_updates_the_last_verified_line_only():
    nb = nbt.stamp_header(_good_notebook(), today=dt.date(2027, 3, 4))
    header = nb.cells[0].source
    line = next(line for line in header.splitlines() if "Last verified" in line)
    assert line.startswith("**Last verified:** 2027-03-04 with Python ")
    assert " s " not in line  # the runtime is quoted once, in the runtime paragraph
    assert nbt.header_problems(header) == []
    assert header.replace(line, "") == HEADER.rstrip("\n").replace(HEADER.splitlines()[-1], "")


def test_a_typed_runtime_is_a_header_problem():
    typed = HEADER.replace("5 s<!-- m:07:runtime_s -->", "about 5 s")
    assert any("metric marker" in p for p in nbt.header_problems(typed))


def test_header_paragraphs_may_wrap_and_stamp_replaces_the_whole_verified_paragraph():
    wrapped = HEADER.replace(
        "5 s<!-- m:07:runtime_s --> on a laptop CPU (quick profile); about 5 s on a GPU.",
        "5 s<!-- m:07:runtime_s --> on a laptop CPU (quick profile),\nabout 5 s on a GPU machine.",
    ).replace(
        "**Last verified:** 2026-01-01 with Python 3.11.9, numpy 2.1.0",
        "**Last verified:** 2026-01-01 with numpy and torch (stamped by\n`regenerate`)\n\n**Next:** more",
    )
    problems = nbt.header_problems(wrapped)
    assert problems == [
        "the 'Last verified' line names no package versions (e.g. 'torch 2.4.1'); "
        "`python -m galaxy_helpers.notebooks regenerate` writes them"
    ]
    nb = _good_notebook()
    nb.cells[0].source = wrapped
    stamped = nbt.stamp_header(nb, today=dt.date(2027, 1, 2)).cells[0].source
    assert nbt.header_problems(stamped) == []
    assert "`regenerate`)" not in stamped and stamped.endswith("\n\n**Next:** more")


@pytest.mark.slow
def test_regenerate_executes_strips_and_navigates(tmp_path):
    """Runs two tiny notebooks through papermill (a few seconds: kernel start-up)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    paths = _course(folder, stems=("01_first", "02_second"))
    for path in paths:
        nb = nbt.read_notebook(path)
        nb.cells[3].source = "from galaxy_helpers import course\n" + nb.cells[3].source
        nb.cells[6].outputs = []
        nbformat.write(nb, path)
    labels = tmp_path / "course_output" / "labels"
    labels.mkdir(parents=True)
    (labels / "05_old.jsonl").write_text("{}\n")
    with pytest.raises(notebooks.CourseRunError, match="labels of an earlier run"):
        notebooks.regenerate(folder, only=["02"])
    (labels / "05_old.jsonl").unlink()
    runtimes = notebooks.regenerate(folder, only=["02"])
    assert list(runtimes) == ["02_second"] and runtimes["02_second"] > 0
    regenerated = nbt.read_notebook(paths[1])
    assert regenerated.cells[7].outputs[0]["text"] == "2\n"  # cell 6 moved down by the nav cell
    assert nbt.volatile_items(regenerated) == []
    injected = [c for c in regenerated.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert not injected, "nothing is injected: the committed parameters stay the notebook's own"
    metrics = json.loads((tmp_path / "course_output" / "metrics" / "02_second.json").read_text())
    assert metrics["n"] == 3  # written by course.start_notebook beside notebooks/
    assert str(dt.datetime.now(dt.UTC).date()) in regenerated.cells[0].source
    assert not nbt.check_notebooks(notebook_dir=folder, checks=("nav",))
    assert nbt.read_notebook(paths[0]).cells[7].outputs == []  # not run with --only 02


def test_with_solutions_puts_each_solution_after_its_exercise_and_skips_long_ones():
    sol = "**Exercise 1 (x).** Do it.\n\n<details><summary>Solution</summary>\n\n```python\nprint(2)\n```\n\nText.\n</details>"
    long = "## 3. Longer exercises: retrain\n\n" + sol.replace("print(2)", "print(3)")
    nb = new_notebook(cells=[new_markdown_cell(sol), new_code_cell("1"), new_markdown_cell(long)])
    out = notebooks.with_solutions(nb)
    assert [c.cell_type for c in out.cells] == ["markdown", "code", "code", "markdown"]
    assert out.cells[1].source == "print(2)" and "solution" in out.cells[1].metadata["tags"]
    assert out.cells[1].metadata["exercise"].startswith("Exercise 1 (x)")
    assert [c.source for c in notebooks.with_solutions(nb, include_long=True).cells][
        -1
    ] == "print(3)"
    assert len(nb.cells) == 3  # the original is untouched


@pytest.mark.slow
def test_check_solutions_names_the_exercise_whose_solution_fails(tmp_path):
    """One tiny notebook through papermill: a working and a failing solution."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (path,) = _course(folder, stems=("01_first",))
    nb = nbt.read_notebook(path)
    nb.cells[3].source = "from galaxy_helpers import course\n" + nb.cells[3].source
    fold = "\n\n<details><summary>Solution</summary>\n\n```python\n{}\n```\n</details>"
    nb.cells.insert(4, new_markdown_cell("**Exercise 1 (fine).** x" + fold.format("y = 2")))
    nb.cells.insert(5, new_markdown_cell("**Exercise 2 (broken).** x" + fold.format("1 / 0")))
    nbformat.write(nb, path)
    failed = notebooks.check_solutions(tmp_path / "out", notebook_dir=folder)
    assert list(failed) == ["01_first"]
    assert [f.split(":")[0] for f in failed["01_first"]] == ["Exercise 2 (broken). [1]"]
    assert "ZeroDivisionError" in failed["01_first"][0]


def test_notebook_02_defaults_are_the_recipes_quick_profile():
    """The "quick" checkpoint (recipes.QUICK_PROFILE) is the model notebook 02 trains by default:
    notebooks 03-06 load it as checkpoint="quick", so the two must not drift apart."""
    import ast

    from galaxy_helpers import recipes, training

    nb = nbformat.read(NOTEBOOKS / "02_train_on_votes.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    values = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign)
    }
    notebook_names = {"image_size": "input_size"}  # TrainConfig field -> notebook parameter
    defaults = training.TrainConfig()
    for field in (
        "image_size",
        "framing_crop",
        "epochs",
        "init_head_from_data",
        "amp",
        "batch_size",
        "lr",
        "architecture",
        "augment",
    ):
        value = values[notebook_names.get(field, field)]
        expected = recipes.QUICK_PROFILE.get(field, getattr(defaults, field))
        assert value == expected, (field, value, expected)
