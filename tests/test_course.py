"""Tests for galaxy_helpers.course (cache folder, metrics files) and the course runner of
galaxy_helpers.notebooks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest

from galaxy_helpers import course, notebooks, tooling


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "cache"
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(target))
    assert course.cache_dir() == target
    assert target.is_dir()


def test_cache_dir_default_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("GALAXY_HELPERS_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert course.cache_dir() == tmp_path / ".cache" / "galaxy_helpers"
    assert (tmp_path / ".cache" / "galaxy_helpers").is_dir()


def test_device_is_cpu_without_accelerator(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert course.device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert course.device() == "cuda"


def test_json_safe_converts_numpy_and_non_finite():
    value = {
        "a": np.int64(3),
        "b": np.float32(0.5),
        "c": np.array([[1, 2]]),
        "d": np.bool_(True),
        "e": float("nan"),
        "f": (1, Path("/x")),
        4: {"g": np.float64(np.inf)},
    }
    out = course.json_safe(value)
    assert out == {
        "a": 3,
        "b": 0.5,
        "c": [[1, 2]],
        "d": True,
        "e": None,
        "f": [1, "/x"],
        "4": {"g": None},
    }
    json.dumps(out, allow_nan=False)
    assert type(out["a"]) is int and type(out["d"]) is bool


def test_json_safe_rejects_unknown_objects():
    with pytest.raises(TypeError, match="object"):
        course.json_safe({"x": object()})


def test_write_metrics_adds_runtime_and_is_valid_json(tmp_path, capsys):
    run = course.start_notebook("01_demo", output_dir=tmp_path / "out")
    run.started -= 2.0  # pretend the notebook took two seconds
    path = run.write_metrics({"n_galaxies": np.int64(2000), "headline": {"galaxies": 2000}})
    assert path == (tmp_path / "out" / "metrics" / "01_demo.json").resolve()
    data = json.loads(path.read_text())
    assert data["n_galaxies"] == 2000
    assert data["headline"] == {"galaxies": 2000}
    assert 2.0 <= data["runtime_s"] < 60
    printed = capsys.readouterr().out
    # where the file went and its headline, not the whole file
    assert "01_demo.json" in printed and "galaxies: 2000" in printed
    assert "n_galaxies" not in printed and "runtime_s" not in printed
    # no temporary files are left behind by the atomic write
    assert sorted(p.name for p in path.parent.iterdir()) == ["01_demo.json"]


def test_write_metrics_rejects_bad_input(tmp_path):
    run = course.start_notebook("01_demo", output_dir=tmp_path)
    with pytest.raises(TypeError, match="dict"):
        run.write_metrics([1, 2])
    with pytest.raises(ValueError, match="headline"):
        run.write_metrics({"headline": 3})
    with pytest.raises(ValueError, match="file stem"):
        course.start_notebook("../evil name", output_dir=tmp_path)


def test_output_folder_from_the_environment_wins(tmp_path, monkeypatch):
    """nbval runs a notebook with its own defaults; the environment says where it writes."""
    monkeypatch.setenv(course.OUTPUT_ENV, str(tmp_path / "session"))
    run = course.start_notebook("01_demo", output_dir="../course_output")
    assert (
        run.write_metrics({"n": 1}, show=False) == tmp_path / "session" / "metrics" / "01_demo.json"
    )
    assert course.load_metrics(tmp_path / "session") == {
        "01_demo": json.loads(run.metrics_path.read_text())
    }
    assert course.OUTPUT_ENV == notebooks.OUTPUT_ENV


def _write_notebook(path: Path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell('output_dir = "../course_output"\nseed = 0')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, str(path))


def test_discover_notebooks_filters_by_number_and_stem(tmp_path):
    for name in ["01_a.ipynb", "02_b.ipynb", "10_c.ipynb", "notes.ipynb", "1_bad.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in tooling.numbered_notebooks(tmp_path)] == [
        "01_a.ipynb",
        "02_b.ipynb",
        "10_c.ipynb",
    ]
    assert [p.name for p in tooling.numbered_notebooks(tmp_path, only=["2", "10_c"])] == [
        "02_b.ipynb",
        "10_c.ipynb",
    ]
    with pytest.raises(ValueError, match="07"):
        tooling.numbered_notebooks(tmp_path, only=["07"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tooling.numbered_notebooks(tmp_path / "missing")


def test_parameter_names_reads_the_parameters_cell(tmp_path):
    path = tmp_path / "01_a.ipynb"
    _write_notebook(path, ["x = 1"])
    assert notebooks._parameter_names(path) == {"output_dir", "seed"}


def test_summary_markdown_lists_headlines():
    ok = notebooks.NotebookResult(
        "01_a", Path("x"), 1.0, {"runtime_s": 3.5, "headline": {"acc": 0.91}}
    )
    bad = notebooks.NotebookResult("02_b", Path("y"), 2.0, None, "boom")
    text = notebooks.summary_markdown([ok, bad], total_s=5.5)
    assert "| 01_a | ok | 3.5 | acc: 0.91 |" in text
    assert "| 02_b | FAILED |" in text
    assert "Total wall time" in text


@pytest.mark.slow
def test_run_course_executes_in_order_and_names_failing_cell(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _write_notebook(
        nbdir / "01_ok.ipynb",
        [
            "from galaxy_helpers import course\n"
            "run = course.start_notebook('01_ok', output_dir=output_dir)",
            "import os\nrun.write_metrics({'cwd': os.getcwd(), 'seed': seed, "
            "'headline': {'answer': 42}})",
        ],
    )
    _write_notebook(nbdir / "02_broken.ipynb", ["x = 1", "raise ValueError('galaxy went missing')"])
    out = tmp_path / "out"
    before = os.environ.get(course.OUTPUT_ENV)
    with pytest.raises(notebooks.CourseRunError) as info:
        notebooks.run_course(
            out, notebooks_dir=nbdir, keep_going=True, parameters={"seed": 7}, verbose=False
        )
    message = str(info.value)
    assert "02_broken.ipynb" in message and "cell 3 (In [" in message
    assert "raise ValueError" in message  # the failing cell's source is quoted
    assert "galaxy went missing" in message

    metrics = course.load_metrics(out)
    assert metrics["01_ok"]["cwd"] == str(nbdir)  # notebooks run from their folder
    assert metrics["01_ok"]["seed"] == 7  # parameters declared by the notebook are injected
    with pytest.raises(ValueError, match=r"\['sede'\] are not defined.*output_dir, seed"):
        notebooks.run_course(out, notebooks_dir=nbdir, parameters={"sede": 7}, verbose=False)
    assert (out / "executed" / "01_ok.ipynb").exists()
    summary = (out / "summary.md").read_text()
    assert "answer: 42" in summary and "FAILED" in summary
    record = json.loads((out / notebooks.RUN_RECORD).read_text())
    assert record["finished"] and not record["ok"]
    assert list(record["errors"]) == ["02_broken"]

    assert os.environ.get(course.OUTPUT_ENV) == before  # the kernels' variable is not left set

    # without keep_going the runner stops at the first failure; --only selects notebooks
    run = ["run", "--output", str(out), "--notebooks", str(nbdir), "--only"]
    assert notebooks.main([*run, "01"]) == 0
    assert notebooks.main([*run, "02"]) == 1


def test_each_kernel_after_the_first_starts_while_the_notebook_before_it_runs(tmp_path):
    """The runner starts notebook n+1's kernel (libraries imported silently) during notebook n:
    the notebook sees its own folder, the output variable, counts from In [1], and no kernel is
    left running afterwards, also when a notebook fails before the one whose kernel is ready."""
    psutil = pytest.importorskip("psutil")
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    probe = (
        "import os, sys\n"
        "from galaxy_helpers import course\n"
        "run = course.start_notebook('{name}', output_dir=output_dir)\n"
        "run.write_metrics({{'pid': os.getpid(), 'cwd': os.getcwd(), 'warm': 'torch' in "
        "sys.modules, 'count': get_ipython().execution_count, 'env': os.environ.get("
        "course.OUTPUT_ENV)}})"
    )
    for name in ("01_first", "02_second", "04_never_runs"):
        _write_notebook(nbdir / f"{name}.ipynb", [probe.format(name=name)])
    _write_notebook(nbdir / "03_fails.ipynb", ["raise RuntimeError('no galaxies today')"])
    out = tmp_path / "out"
    with pytest.raises(notebooks.CourseRunError, match="no galaxies today"):
        notebooks.run_course(out, notebooks_dir=nbdir, verbose=False)
    metrics = course.load_metrics(out)
    assert list(metrics) == ["01_first", "02_second"]
    assert [m["warm"] for m in metrics.values()] == [False, True]  # the first kernel is cold
    assert metrics["01_first"]["pid"] != metrics["02_second"]["pid"]
    for m in metrics.values():
        assert m["cwd"] == str(nbdir) and m["env"] == str(out.resolve())
    # the silent imports leave no trace in the execution counts: the same as in a cold kernel
    assert metrics["01_first"]["count"] == metrics["02_second"]["count"]
    counts = {}
    for name in metrics:
        executed = nbformat.read(str(out / "executed" / f"{name}.ipynb"), as_version=4)
        counts[name] = [c.execution_count for c in executed.cells if c.cell_type == "code"]
    assert counts["01_first"] == counts["02_second"] and counts["01_first"][0] == 1
    failed = nbformat.read(str(out / "executed" / "03_fails.ipynb"), as_version=4)
    assert "no galaxies today" in json.dumps(failed.cells[-1].outputs)
    kernels = [
        p for p in psutil.Process().children(recursive=True) if "kernel" in " ".join(p.cmdline())
    ]
    assert kernels == []  # 04's kernel, started while 03 ran, was shut down too


def test_course_metrics_fixture_fails_with_the_notebook_cell_error():
    from conftest import CourseMetrics

    metrics = CourseMetrics(
        Path("out"),
        {"01_a": {"runtime_s": 1.0}},
        {"02_b": "notebook 02_b.ipynb failed in cell 3 (In [2]): ValueError: boom"},
    )
    assert metrics["01_a"]["runtime_s"] == 1.0
    assert list(metrics) == ["01_a"] and len(metrics) == 1
    with pytest.raises(pytest.fail.Exception, match=r"cell 3 \(In \[2\]\): ValueError: boom"):
        metrics["02_b"]
    with pytest.raises(pytest.fail.Exception, match="no metrics file for notebook 03_c"):
        metrics["03_c"]


def test_paths_are_shown_relative_to_the_notebook_inside_the_project(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    run = course.start_notebook("05_demo", output_dir="../course_output")
    labels = run.output_dir / "labels" / "05_labels.jsonl"
    assert run.shown(labels) == str(Path("..") / "course_output" / "labels" / "05_labels.jsonl")
    elsewhere = tmp_path.parent / "elsewhere.jsonl"
    assert run.shown(elsewhere) == str(elsewhere.resolve())


def test_check_environment_reports_every_need_and_says_what_to_do():
    table = course.check_environment()
    assert {"Python", "torch", "course checkpoint", "cache folder"} <= set(table.index)
    assert table["ok"].all(), table[~table["ok"]]
    assert any(i.startswith("dataset ") for i in table.index)
    strict = course.check_environment(min_free_gb=1e9)  # no disk has an exabyte free
    assert not strict.loc["cache folder", "ok"]
    assert "GALAXY_HELPERS_CACHE" in strict.loc["cache folder", "what to do"]


def test_check_environment_names_a_damaged_course_checkpoint(tmp_path, monkeypatch):
    import shutil

    from galaxy_helpers import recipes

    real = recipes.course_checkpoint_path()
    copy = tmp_path / real.name
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(real.with_suffix(suffix), copy.with_suffix(suffix))
    with open(copy.with_suffix(".safetensors"), "r+b") as f:  # one byte of the weights changed
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(recipes, "course_checkpoint_path", lambda: copy)
    row = course.check_environment().loc["course checkpoint"]
    assert not row["ok"] and "sha256 differs" in row["found"]
    assert "make env" in row["what to do"]
