"""data.py: verified downloads through a real local HTTP server, the mirror, safe archives.

Downloads go through pooch and requests against ``http.server`` on 127.0.0.1 (the real code
path); the real mirror (``GALAXY_DATA_MIRROR`` or /work/shared/data) is used where real files are
needed, and those tests are skipped with a reason when it is absent.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pooch
import pytest
from _data_fixtures import Server, isolated, no_network, write_manifest  # noqa: F401

from galaxy_helpers import data, manifests

MIRROR = Path(os.environ.get(data.MIRROR_ENV) or "/work/shared/data")


def _needs_mirror(name: str) -> Path:
    folder = MIRROR / name
    if not folder.is_dir():
        pytest.skip(f"mirror folder {folder} absent: set {data.MIRROR_ENV} to the shared data")
    return MIRROR


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def _manifest(tmp_path, name, files, base_url, catalogue="", **extra) -> Path:
    extra = {p: "".join(f'{k} = "{v}"\n' for k, v in kv.items()) for p, kv in extra.items()}
    return write_manifest(tmp_path, files, base_url, name, catalogue or _RING_CATALOGUE, extra)


_RING_CATALOGUE = """
[catalogue]
file = "cat.csv"
id_str = "id"
file_loc = "loc"
labels = ["ring"]
[catalogue.tags]
tag_ring = "ring == 1"

"""


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part") or ".part" in p.name]


CAT = b"id,loc,ring\na,img/a.txt,1\nb,img/b.txt,0\n"
FILES = {"cat.csv": CAT, "img/a.txt": b"galaxy a", "img/b.txt": b"galaxy b" * 100}


def test_fetch_downloads_verifies_and_then_uses_the_cache(tmp_path, server):
    server.files.update(FILES)
    manifest = data.load_manifest(_manifest(tmp_path, "toy", FILES, server.url))
    folder = data.fetch(manifest, progress=False)
    assert folder == tmp_path / "cache" / "data" / "toy"
    for path, body in FILES.items():
        assert (folder / path).read_bytes() == body
    assert sorted(server.requests) == sorted(FILES)
    assert data.dataset_available(manifest.path)
    server.clear()
    data.fetch(manifest, progress=False)
    assert server.requests == []  # verified copies are reused, nothing downloaded again
    assert _leftovers(folder) == []


def test_load_dataset_builds_the_catalogue_contract(tmp_path, server, monkeypatch):
    server.files.update(FILES)
    path = _manifest(tmp_path, "toy", FILES, server.url)
    monkeypatch.setenv(data.MANIFESTS_ENV, str(path.parent))
    df = data.load_dataset("toy", progress=False)
    assert list(df["id_str"]) == ["a", "b"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["file_loc"])
    assert list(df["ring"]) == [1, 0]
    assert df["tag_ring"].dtype == bool and list(df["tag_ring"]) == [True, False]


def test_download_retries_server_errors_with_backoff(tmp_path, server):
    server.files.update(FILES)
    server.fail_first["img/b.txt"] = 2
    manifest = data.load_manifest(_manifest(tmp_path, "toy", FILES, server.url))
    folder = data.fetch(manifest, progress=False, retries=3)
    assert (folder / "img/b.txt").read_bytes() == FILES["img/b.txt"]
    assert server.requests.count("img/b.txt") == 3


def test_missing_url_fails_without_retry_and_says_how_to_provide_the_file(tmp_path, server):
    server.files.update({k: v for k, v in FILES.items() if k != "img/b.txt"})
    manifest = data.load_manifest(_manifest(tmp_path, "toy", FILES, server.url))
    with pytest.raises(data.DataUnavailableError) as info:
        data.fetch(manifest, progress=False, retries=3)
    message = str(info.value)
    assert "img/b.txt" in message and f"{server.url}img/b.txt" in message
    assert data.MIRROR_ENV in message and str(tmp_path / "cache" / "data" / "toy") in message
    assert server.requests.count("img/b.txt") == 1  # a 404 is not retried
    folder = tmp_path / "cache" / "data" / "toy"
    assert not (folder / "img/b.txt").exists() and _leftovers(folder) == []
    assert not data.dataset_available(manifest.path)


def test_corrupted_download_is_rejected_and_nothing_is_left(tmp_path, server):
    manifest = data.load_manifest(_manifest(tmp_path, "toy", FILES, server.url))
    server.files.update(FILES)
    server.files["img/a.txt"] = b"galaxy A"  # same size, different bytes
    with pytest.raises(data.ChecksumError, match=r"img/a.txt: sha256 .* does not match"):
        data.fetch(manifest, progress=False, retries=2)
    folder = tmp_path / "cache" / "data" / "toy"
    assert not (folder / "img/a.txt").exists()
    assert _leftovers(folder) == []
    assert server.requests.count("img/a.txt") == 2  # a bad download is tried again


def test_truncated_download_is_rejected_by_size(tmp_path, server):
    manifest = data.load_manifest(_manifest(tmp_path, "toy", FILES, server.url))
    server.files.update(FILES)
    server.files["img/b.txt"] = FILES["img/b.txt"][:-10]
    with pytest.raises(data.ChecksumError, match="truncated"):
        data.fetch(manifest, progress=False, retries=1)
    assert _leftovers(tmp_path / "cache") == []


def test_offline_without_mirror_names_file_url_and_remedy(tmp_path):
    manifest = data.load_manifest(_manifest(tmp_path, "toy", FILES, "https://example.invalid/"))
    with pytest.raises(data.DataUnavailableError) as info:
        data.fetch(manifest, progress=False, offline=True)
    message = str(info.value)
    assert "cat.csv" in message and "https://example.invalid/cat.csv" in message
    assert data.MIRROR_ENV in message and "download" in message


def test_mirror_is_used_instead_of_the_network(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    for path, body in FILES.items():
        (mirror / "toy" / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / "toy" / path).write_bytes(body)
    manifest = data.load_manifest(_manifest(tmp_path, "toy", FILES, "https://example.invalid/"))

    no_network(monkeypatch, "the network was used although a mirror was set")
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    assert data.dataset_available(manifest.path)
    logger = pooch.get_logger()
    level = logger.level
    folder = data.fetch(manifest, progress=False)
    assert (folder / "img/b.txt").read_bytes() == FILES["img/b.txt"]
    assert logger.level == level  # pooch is quiet during a fetch only


def test_corrupted_mirror_file_is_rejected_and_nothing_is_cached(tmp_path):
    mirror = tmp_path / "mirror"
    for path, body in FILES.items():
        (mirror / "toy" / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / "toy" / path).write_bytes(body)
    (mirror / "toy" / "img/a.txt").write_bytes(b"galaxy X")
    manifest = data.load_manifest(_manifest(tmp_path, "toy", FILES, "https://example.invalid/"))
    with pytest.raises(data.ChecksumError) as info:
        data.fetch(manifest, mirror=mirror, progress=False, offline=True)
    assert str(mirror / "toy" / "img/a.txt") in str(info.value)
    folder = tmp_path / "cache" / "data" / "toy"
    assert not (folder / "img/a.txt").exists() and _leftovers(folder) == []


def test_a_cached_file_corrupted_later_is_fetched_again(tmp_path, server):
    server.files.update(FILES)
    manifest = data.load_manifest(_manifest(tmp_path, "toy", FILES, server.url))
    folder = data.fetch(manifest, progress=False)
    (folder / "img/a.txt").write_bytes(b"galaxy Z")
    server.clear()
    data.fetch(manifest, progress=False)
    assert server.requests == ["img/a.txt"]
    assert (folder / "img/a.txt").read_bytes() == FILES["img/a.txt"]


# --- archives -------------------------------------------------------------------------------
def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buffer.getvalue()


def test_archive_is_extracted_by_fetch(tmp_path, server):
    archive = _tar({"J073/a.jpg": b"a", "J074/b.jpg": b"b"})
    files = {"cat.csv": CAT, "images.tar.gz": archive}
    server.files.update(files)
    path = _manifest(
        tmp_path, "toy", files, server.url, **{"images.tar.gz": {"extract_to": "images"}}
    )
    folder = data.fetch(data.load_manifest(path), progress=False)
    assert (folder / "images" / "J073" / "a.jpg").read_bytes() == b"a"
    assert _leftovers(folder) == []


@pytest.mark.parametrize(
    "members, links",
    [
        ({"ok.txt": b"x", "../escape.txt": b"evil"}, None),
        ({"/tmp/absolute.txt": b"evil"}, None),
        ({"ok.txt": b"x"}, {"link": "/etc/passwd"}),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_archive_escaping_its_folder_is_refused(tmp_path, members, links):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(_tar(members, links))
    target = tmp_path / "out" / "images"
    with pytest.raises(data.UnsafeArchiveError, match="refusing"):
        data.safe_extract(archive, target)
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no half-unpacked temporary folder
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "escape.txt").exists()


def test_zip_escaping_its_folder_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", b"x")
        zf.writestr("../../escape.txt", b"evil")
    with pytest.raises(data.UnsafeArchiveError, match=r"\.\./\.\./escape\.txt"):
        data.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escape.txt").exists()


def test_fetch_with_an_escaping_archive_leaves_no_extraction(tmp_path, server):
    files = {"cat.csv": CAT, "images.tar.gz": _tar({"../../escape.txt": b"evil"})}
    server.files.update(files)
    path = _manifest(
        tmp_path, "toy", files, server.url, **{"images.tar.gz": {"extract_to": "images"}}
    )
    with pytest.raises(data.UnsafeArchiveError):
        data.fetch(data.load_manifest(path), progress=False)
    folder = tmp_path / "cache" / "data" / "toy"
    assert not (folder / "images").exists() and _leftovers(folder) == []
    assert not (tmp_path / "cache" / "escape.txt").exists()


# --- the real datasets, through the mirror -----------------------------------------------
def test_rings_load_from_the_mirror_with_checksums(tmp_path):
    mirror = _needs_mirror("gz_decals_rings")
    rings = data.load_dataset("gz_decals_rings", mirror=mirror, progress=False, offline=True)
    manifest = data.load_manifest("gz_decals_rings")
    assert len(rings) == manifest.catalogue["expected_rows"]
    assert rings["id_str"].is_unique
    assert rings["ring"].isin([0, 1]).all()
    assert (rings["tag_ring"] == (rings["ring"] == 1)).all()
    assert rings["ring"].sum() == len(rings) - rings["ring"].sum()  # balanced: 235 / 235
    assert all(Path(p).is_file() and Path(p).is_absolute() for p in rings["file_loc"])
    assert all(Path(p).stem == i for p, i in zip(rings["file_loc"], rings["id_str"], strict=True))


def test_examples_load_from_the_mirror_with_tags_and_answers(tmp_path):
    mirror = _needs_mirror("gz_decals_examples")
    examples = data.load_dataset("gz_decals_examples", mirror=mirror, progress=False)
    assert len(examples) == 172 and examples["id_str"].is_unique
    assert all(Path(p).is_file() for p in examples["file_loc"])
    for tag in (
        "tag_ring",
        "tag_dust-lane",
        "tag_overlapping",
        "tag_lens",
        "tag_irregular",
        "tag_merger",
        "tag_tidal",
        "tag_artifact",
    ):
        assert examples[tag].dtype == bool and examples[tag].any(), tag
    rings = examples[examples["tag_ring"]]
    assert rings["answers"].str.contains("odd-features_ring").all()
    assert examples["example_odd-features_ring"].equals(examples["tag_ring"])
    answers_per_row = examples.filter(like="example_").sum(axis=1)
    assert (answers_per_row == examples["answers"].str.count(";") + 1).all()
    smooth = examples["example_smooth-or-featured_smooth"]
    assert examples.loc[smooth, "dr5_answers"].str.contains("smooth-or-featured-dr5_smooth").all()


def test_examples_label_table_is_rebuilt_byte_for_byte_without_the_mirror_copy(tmp_path):
    mirror = _needs_mirror("gz_decals_examples")
    # A mirror holding only the upstream images: the label table must be built from names.
    partial = tmp_path / "partial"
    (partial / "gz_decals_examples").mkdir(parents=True)
    (partial / "gz_decals_examples" / "public").symlink_to(mirror / "gz_decals_examples" / "public")
    folder = data.fetch("gz_decals_examples", mirror=partial, progress=False, offline=True)
    built = (folder / "examples_labels.csv").read_bytes()
    assert built == (mirror / "gz_decals_examples" / "examples_labels.csv").read_bytes()


def test_dataset_available_never_touches_the_network(tmp_path, monkeypatch):
    no_network(monkeypatch, "dataset_available used the network")
    assert not data.dataset_available("gz_decals_rings", cache_dir=tmp_path / "empty")
    assert not data.dataset_available("gz_decals_dr5", cache_dir=tmp_path / "empty")
    assert not data.dataset_available("no_such_dataset")
    if (MIRROR / "gz_decals_rings").is_dir():
        assert data.dataset_available("gz_decals_rings", cache_dir=tmp_path / "e", mirror=MIRROR)


def test_model_manifest_is_not_fetched_as_a_dataset():
    with pytest.raises(data.ManifestError, match="pretrained"):
        data.fetch("zoobot_encoders", progress=False)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(data.ManifestError, match="gz_decals_rings"):
        data.load_manifest("gz_decals_ringz")


def test_dr5_style_dataset_parquet_votes_archive_and_splits(tmp_path, server):
    """The code path of gz_decals_dr5 (train/test parquet + image archive), in miniature."""
    import pandas as pd

    from galaxy_helpers.schema import DECALS_DR5

    def table(ids):
        frame = pd.DataFrame({"id_str": ids, "subfolder": ["J073"] * len(ids)})
        frame["filename"] = [f"{i}.jpg" for i in ids]
        for column in DECALS_DR5.answer_columns:  # volunteer spelling, renamed on load
            frame[column.replace("-dr5_", "_")] = 1
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        return buffer.getvalue()

    files = {
        "train.parquet": table(["g1", "g2"]),
        "test.parquet": table(["g3"]),
        "images.tar.gz": _tar({f"J073/g{i}.jpg": b"jpg" for i in (1, 2, 3)}),
    }
    server.files.update(files)
    catalogue = """
[catalogue]
file = ["train.parquet", "test.parquet"]
format = "parquet"
split_from_file = ["train", "test"]
id_str = "id_str"
file_loc = "join:images/{subfolder}/{filename}"
schema = "decals_dr5"

"""
    extra = {"images.tar.gz": {"extract_to": "images", "spot_check": "images/J073/g1.jpg"}}
    path = _manifest(tmp_path, "mini_dr5", files, server.url, catalogue, **extra)
    problems = data.validate_manifest(path)
    assert all("https://" in p for p in problems), problems  # the local server is plain http
    manifest = data.load_manifest(path)
    folder = data.fetch(manifest, progress=False)
    df = manifests.build_catalogue(manifest, folder)
    assert list(df["split"]) == ["train", "train", "test"]
    assert all(Path(p).read_bytes() == b"jpg" for p in df["file_loc"])
    assert set(DECALS_DR5.answer_columns) <= set(df.columns)


def test_archive_without_the_expected_layout_is_reported(tmp_path, server):
    files = {"cat.csv": CAT, "images.tar.gz": _tar({"other/x.jpg": b"x"})}
    server.files.update(files)
    extra = {"images.tar.gz": {"extract_to": "images", "spot_check": "images/J073/g1.jpg"}}
    path = _manifest(tmp_path, "toy", files, server.url, **extra)
    with pytest.raises(data.DataError, match="J073/g1.jpg"):
        data.fetch(data.load_manifest(path), progress=False)
    assert not (tmp_path / "cache" / "data" / "toy" / "images").exists()
