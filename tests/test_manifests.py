"""Every manifest in data_manifests/ against the manifest schema, and against the mirror."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

import pytest

from galaxy_helpers import data
from galaxy_helpers.schema import DECALS_DR5

MIRROR = Path(os.environ.get(data.MIRROR_ENV) or "/work/shared/data")
NAMES = data.list_manifests()


def test_the_required_manifests_exist():
    for name in ("gz_decals_rings", "gz_decals_examples", "gz_decals_dr5", "zoobot_encoders"):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_manifest_is_valid(name):
    problems = data.validate_manifest(name)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("name", data.list_manifests(kind="dataset"))
def test_catalogue_mapping_columns_are_sensible(name):
    catalogue = data.load_manifest(name).catalogue
    for tag in catalogue.get("tags", {}):
        assert re.fullmatch(r"tag_[a-z\-]+", tag), tag


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


GOOD = """
name = "{name}"
kind = "dataset"
title = "t"
description = "d"
licence = "CC BY 4.0"
citation = ["someone 2022"]
credit = "c"
homepage = "https://example.org"
base_url = "https://example.org/x/"
[catalogue]
file = "a.csv"
id_str = "id"
file_loc = "loc"
[[files]]
path = "a.csv"
url = "https://example.org/x/a.csv"
size = 3
sha256 = "{sha}"
"""


def test_validator_accepts_a_minimal_manifest(tmp_path):
    path = _write(tmp_path, "tiny", GOOD.format(name="tiny", sha="a" * 64))
    assert data.validate_manifest(path) == []


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda t: t.replace('licence = "CC BY 4.0"\n', ""), "missing required key 'licence'"),
        (lambda t: t.replace("a" * 64, "A" * 64), "sha256 must be lowercase hex"),
        (lambda t: t.replace("a" * 64, "abc"), "sha256 must be lowercase hex"),
        (lambda t: t.replace('sha256 = "' + "a" * 64 + '"', ""), "needs a sha256 or md5"),
        (lambda t: t.replace("https://example.org/x/a.csv", "ftp://x/a.csv"), "https://"),
        (lambda t: t.replace("https://example.org/x/a.csv", "https://o.org/a.csv"), "base_url"),
        (lambda t: t.replace('path = "a.csv"', 'path = "../a.csv"'), "no '..'"),
        (lambda t: t.replace("size = 3", "size = -3"), "positive integer"),
        (lambda t: t + t[t.index("[[files]]") :], "duplicate path 'a.csv'"),
        (lambda t: t.replace('file = "a.csv"', 'file = "b.csv"'), "not one of the files"),
        (lambda t: t.replace('citation = ["someone 2022"]', "citation = []"), "citation"),
    ],
)
def test_validator_names_each_problem(tmp_path, change, problem):
    path = _write(tmp_path, "tiny", change(GOOD.format(name="tiny", sha="a" * 64)))
    problems = data.validate_manifest(path)
    assert any(problem in p for p in problems), problems
    assert all("tiny.toml" in p for p in problems)


def test_validator_reports_a_name_that_differs_from_the_file(tmp_path):
    path = _write(tmp_path, "tiny", GOOD.format(name="other", sha="a" * 64))
    (problem,) = data.validate_manifest(path)
    assert "differs from the file name" in problem


def test_zoobot_manifest_lists_hub_encoders():
    models = data.load_manifest("zoobot_encoders").raw["models"]
    ids = [m["hub_id"] for m in models]
    assert "hf_hub:mwalmsley/zoobot-encoder-convnext_nano" in ids
    assert len(ids) == len(set(ids))
    for model in models:
        assert model["url"].endswith(model["hub_id"].removeprefix("hf_hub:"))
        assert model["architecture"] in model["hub_id"]


def test_examples_site_tree_decodes_every_file_name():
    manifest = data.load_manifest("gz_decals_examples")
    tree = manifest.catalogue["site_tree"]
    for entry in manifest.files:
        match = re.fullmatch(
            r"decals-(\d+)_([ax])-(\d+)_(\d+)\.jpg", PurePosixPath(entry.path).name
        )
        assert match, entry.path
        question, _, answer, _ = match.groups()
        assert tree[question][int(answer) + 1], entry.path


def test_examples_dr5_mapping_uses_real_schema_columns_and_site_answers():
    catalogue = data.load_manifest("gz_decals_examples").catalogue
    site_answers = {
        f"{names[0]}_{a}" for names in catalogue["site_tree"].values() for a in names[1:] if a
    }
    for site, dr5 in catalogue["dr5_answers"].items():
        assert site in site_answers, site
        assert dr5 in DECALS_DR5.answer_columns, dr5
    for tag, answers in catalogue["tags"].items():
        assert set(answers) <= site_answers, tag


@pytest.mark.parametrize("name", ["gz_decals_rings", "gz_decals_examples"])
def test_generated_file_lists_match_the_mirror(name):
    folder = MIRROR / name
    if not (folder / "SHA256SUMS").is_file():
        pytest.skip(f"mirror folder {folder} absent (set {data.MIRROR_ENV} to the shared data)")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "generate", Path(data.manifest_dir()) / "generate.py"
    )
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    listed = dict(generate.read_sha256sums(folder / "SHA256SUMS"))
    manifest = data.load_manifest(name)
    assert {e.path: e.sha256 for e in manifest.files} == listed
    for entry in manifest.files[:20]:
        assert entry.size == (folder / entry.path).stat().st_size


def test_a_parsed_manifest_is_kept_and_a_changed_or_damaged_one_parsed_again(tmp_path, monkeypatch):
    from galaxy_helpers import core, manifests

    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path, "tiny", GOOD.format(name="tiny", sha="a" * 64))
    first = data.load_manifest(path)
    (kept,) = core.cache_dir("manifests").glob("*.json")
    parses = []
    real_loads = manifests.tomllib.loads
    monkeypatch.setattr(manifests.tomllib, "loads", lambda t: parses.append(1) or real_loads(t))
    assert data.load_manifest(path) == first and parses == []  # read back, not parsed
    kept.write_text("{not json")
    assert data.load_manifest(path) == first and parses == [1]  # a damaged copy: parsed
    path.write_text(path.read_text().replace("someone 2022", "someone else 2023"))
    assert data.load_manifest(path).raw["citation"] == ["someone else 2023"]
    assert parses == [1, 1]  # an edited file has another key
    bad = _write(tmp_path, "broken", "name = [")
    with pytest.raises(data.ManifestError, match="broken.toml: not valid TOML"):
        data.load_manifest(bad)
