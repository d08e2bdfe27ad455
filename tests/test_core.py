"""core.source_key: the code a cached result was made by, part of the caches' keys."""

import pytest

from galaxy_helpers import core


def _package(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_source_files_follow_imports_lazy_ones_and_subpackages_included(tmp_path):
    root = tmp_path / "galaxy_helpers"
    _package(
        root,
        {
            "__init__.py": "",
            "a.py": "import numpy\nfrom . import b\n\ndef f():\n    from .sub.c import g\n",
            "b.py": "from .core import x\n",
            "core.py": "x = 1\n",
            "sub/__init__.py": "",
            "sub/c.py": "import galaxy_helpers.d\n\ndef g(): ...\n",
            "d.py": "",
            "unrelated.py": "from . import a\n",
        },
    )
    files = core.source_files("galaxy_helpers.a", root=root)
    assert set(files) == {
        "galaxy_helpers",
        "galaxy_helpers.a",
        "galaxy_helpers.b",
        "galaxy_helpers.core",
        "galaxy_helpers.sub",
        "galaxy_helpers.sub.c",
        "galaxy_helpers.d",
    }
    assert files["galaxy_helpers.sub.c"] == root / "sub" / "c.py"
    assert set(core.source_files("galaxy_helpers.core", root=root)) == {
        "galaxy_helpers",
        "galaxy_helpers.core",
    }


def test_a_label_budget_run_depends_on_the_trainers_it_calls():
    """The bug this guards against: label-budget runs cached before the optimiser changed (in
    training.make_adamw, called by finetuned.train_full) were read back after it."""
    files = core.source_files("galaxy_helpers.label_budget")
    assert {"galaxy_helpers.finetuned", "galaxy_helpers.training"} <= set(files)
    assert "galaxy_helpers.notebooks" not in files  # the course runner makes no numbers
    key = core.source_key("galaxy_helpers.label_budget")
    assert len(key) == 12 and key != core.source_key("galaxy_helpers.core")


def test_modules_outside_the_package_are_not_followed(tmp_path):
    root = tmp_path / "galaxy_helpers"
    _package(root, {"__init__.py": "", "a.py": "import numpy\nimport other.thing\n"})
    assert set(core.source_files("numpy", "other", root=root)) == set()
    assert set(core.source_files("galaxy_helpers.a", root=root)) == {
        "galaxy_helpers",
        "galaxy_helpers.a",
    }
    with pytest.raises(ValueError, match="not a galaxy_helpers module|none of"):
        core.source_key("numpy")


def test_worker_count_follows_the_environment(monkeypatch):
    monkeypatch.delenv(core.JOBS_ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert core.n_jobs() == 1  # the thread budget torch is given
    monkeypatch.setenv(core.JOBS_ENV, "3")
    assert core.n_jobs() == 3
    monkeypatch.setenv(core.JOBS_ENV, "0")
    assert core.n_jobs() == 1
    monkeypatch.setenv(core.JOBS_ENV, "two")
    with pytest.raises(ValueError, match="GALAXY_HELPERS_JOBS='two' is not a whole number"):
        core.n_jobs()
    monkeypatch.delenv(core.JOBS_ENV)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert core.n_jobs() >= 1


def test_parallel_map_keeps_task_order_in_workers_and_here():
    tasks = [(i, 7) for i in range(6)]
    expected = [divmod(i, 7) for i in range(6)]
    assert core.parallel_map(divmod, tasks, jobs=2) == expected
    assert core.parallel_map(divmod, tasks, jobs=1) == expected
    assert core.parallel_map(divmod, [], jobs=2) == []
