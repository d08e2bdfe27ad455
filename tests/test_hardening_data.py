"""data.py under hostile manifests and faults: nothing outside the cache or the mirror is ever
read, written or deleted; downloads resume; the cache can be re-hashed on demand."""

from __future__ import annotations

import dataclasses

import pytest
from _data_fixtures import TOY_CATALOGUE, isolated, write_manifest  # noqa: F401

from galaxy_helpers import data


def _toml(tmp_path, name, files, base_url="https://example.org/", catalogue=None, extra=""):
    extra = dict.fromkeys(files, extra)
    return write_manifest(tmp_path, files, base_url, name, catalogue or TOY_CATALOGUE, extra)


CAT = b"id,loc\n00042,img/a.txt\n7,img/b.txt\n"
FILES = {"cat.csv": CAT, "img/a.txt": b"galaxy a", "img/b.txt": b"galaxy b"}


# ---------------------------------------------------------------- manifest paths
@pytest.mark.parametrize("bad", ["../outside.txt", "img/../../outside.txt", "/etc/hostname"])
def test_manifest_path_leaving_the_dataset_folder_is_refused_by_load_dataset(tmp_path, bad):
    path = _toml(tmp_path, "toy", {**FILES, bad: b"x"})
    with pytest.raises(data.ManifestError, match=r"toy.toml.*must be relative.*Fix the manifest"):
        data.load_dataset(path, offline=True, progress=False)
    assert not (tmp_path / "cache" / "data" / "outside.txt").exists()


def test_manifest_in_a_manifests_folder_with_dotdot_is_refused(tmp_path, monkeypatch):
    path = _toml(tmp_path, "toy", {"../../stolen.txt": b"x"})
    monkeypatch.setenv(data.MANIFESTS_ENV, str(path.parent))
    with pytest.raises(data.ManifestError, match="'../../stolen.txt' must be relative"):
        data.load_dataset("toy", offline=True, progress=False)
    assert data.validate_manifest("toy")  # the validator reports it too


def test_fetch_never_deletes_a_file_outside_the_cache_as_a_stale_copy(tmp_path):
    victim = tmp_path / "cache" / "data" / "precious.txt"
    victim.parent.mkdir(parents=True)
    victim.write_text("my thesis")
    good = data.load_manifest(_toml(tmp_path, "toy", FILES))
    # a hand-made Manifest (not through load_manifest) is checked by fetch as well
    evil = dataclasses.replace(good, files=(data.FileEntry("../precious.txt", sha256="0" * 64),))
    with pytest.raises(data.ManifestError, match="must be relative"):
        data.fetch(evil, offline=True, progress=False)
    assert victim.read_text() == "my thesis"


def test_manifest_name_that_would_move_the_cache_folder_is_refused(tmp_path):
    good = data.load_manifest(_toml(tmp_path, "toy", FILES))
    with pytest.raises(data.ManifestError, match=r"name '\.\.'"):
        data.fetch(dataclasses.replace(good, name=".."), offline=True, progress=False)


def test_extract_to_and_spot_check_outside_are_refused(tmp_path):
    path = _toml(tmp_path, "toy", {"a.tar": b"x"}, extra='extract_to = "../unpacked"\n')
    with pytest.raises(data.ManifestError, match="extract_to"):
        data.load_manifest(path)
    path = _toml(tmp_path, "toy", {"a.tar": b"x"}, extra='spot_check = "/etc/passwd"\n')
    with pytest.raises(data.ManifestError, match="spot_check"):
        data.load_manifest(path)


def test_catalogue_file_outside_the_dataset_is_refused(tmp_path):
    catalogue = '[catalogue]\nfile = "../../other/cat.csv"\nid_str = "id"\nfile_loc = "loc"\n'
    with pytest.raises(data.ManifestError, match=r"\[catalogue\] file"):
        data.load_manifest(_toml(tmp_path, "toy", FILES, catalogue=catalogue))


def test_catalogue_row_pointing_outside_the_dataset_is_refused_naming_the_row(tmp_path):
    files = {**FILES, "cat.csv": b"id,loc\na,img/a.txt\nb,../../../../etc/passwd\n"}
    mirror = tmp_path / "mirror" / "toy"
    for rel, body in files.items():
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_bytes(body)
    path = _toml(tmp_path, "toy", files)
    with pytest.raises(data.ManifestError, match="file_loc, row 1: ../../../../etc/passwd"):
        data.load_dataset(path, mirror=tmp_path / "mirror", offline=True, progress=False)


def test_inside_all_resolves_like_inside_with_links_and_refuses_naming_the_row(tmp_path):
    from galaxy_helpers.manifests import inside, inside_all

    root, elsewhere = tmp_path / "dataset", tmp_path / "bigger_disk"
    (root / "img").mkdir(parents=True)
    (elsewhere / "pics").mkdir(parents=True)
    (root / "img" / "a.jpg").write_bytes(b"a")
    (elsewhere / "b.jpg").write_bytes(b"b")
    (root / "img" / "b.jpg").symlink_to(elsewhere / "b.jpg")  # a file linked elsewhere
    (root / "linked").symlink_to(elsewhere / "pics")  # a folder linked elsewhere
    rows = ["img/a.jpg", "img/b.jpg", "linked/c.jpg", "img/./missing.jpg"]
    assert inside_all(root, rows, "cat row {k}") == [str(inside(root, r, "x")) for r in rows]
    assert inside_all(root, rows, "x")[1] == str((elsewhere / "b.jpg").resolve())
    with pytest.raises(data.ManifestError, match=r"cat row 2: \.\./bigger_disk/b\.jpg"):
        inside_all(root, ["img/a.jpg", "img/b.jpg", "../bigger_disk/b.jpg"], "cat row {k}")
    with pytest.raises(data.ManifestError, match="outside"):
        inside(root, "img/../../dataset2/x", "x")  # a sibling sharing the root's prefix
