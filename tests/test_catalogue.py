"""Bring-your-own catalogues: loading, path resolution, and a report naming every problem."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_helpers import catalogue as cat
from galaxy_helpers.schema import DECALS_DR5


def _png(path: Path, mode: str = "RGB", size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = (np.arange(size[0] * size[1]).reshape(size[1], size[0]) * 50).astype(np.uint16)
        Image.fromarray(arr).save(path)  # uint16 -> 16-bit PNG
    else:
        Image.new(mode, size, color=128 if mode == "L" else None).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """Catalogue folder with good images in images/ and relative paths."""
    for name in ("a", "b", "c"):
        _png(tmp_path / "images" / f"{name}.png")
    return tmp_path


def _votes(n: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(0)
    return {col: list(rng.integers(0, 5, n)) for col in DECALS_DR5.answer_columns}


def test_csv_with_relative_paths_and_volunteer_spelling_loads(folder):
    votes = _votes(3)
    volunteer = {c.replace("-dr5_", "_"): v for c, v in votes.items()}
    frame = pd.DataFrame({"id_str": [1, 2, 3], "file_loc": [f"images/{n}.png" for n in "abc"]})
    frame = pd.concat([frame, pd.DataFrame(volunteer)], axis=1)
    frame.to_csv(folder / "mine.csv", index=False)
    # random votes break the tree's nesting: the load says so, naming the file, and goes on
    with pytest.warns(UserWarning, match=r"mine\.csv: 3 rows, 0 errors"):
        df = cat.load_catalogue(folder / "mine.csv", schema="decals_dr5")
    assert list(df["id_str"]) == ["1", "2", "3"]
    assert df["file_loc"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()
    assert set(DECALS_DR5.answer_columns) <= set(df.columns)
    assert df[DECALS_DR5.answer_columns[0]].dtype == np.int64
    assert df[DECALS_DR5.answer_columns[0]].tolist() == votes[DECALS_DR5.answer_columns[0]]


def test_parquet_with_labels_and_image_root(folder, tmp_path):
    elsewhere = tmp_path / "tables"
    elsewhere.mkdir()
    frame = pd.DataFrame({"iauname": ["x", "y"], "png": ["a.png", "b.png"], "ring": [1, 0]})
    frame.to_parquet(elsewhere / "mine.parquet")
    df = cat.load_catalogue(
        elsewhere / "mine.parquet",
        label_columns=["ring"],
        image_root=folder / "images",
        id_column="iauname",
        file_column="png",
    )
    assert list(df.columns[:2]) == ["id_str", "file_loc"]
    assert Path(df["file_loc"][0]) == (folder / "images" / "a.png").resolve()


def test_missing_and_duplicate_rows_are_named_with_row_numbers(folder):
    frame = pd.DataFrame(
        {
            "id_str": ["a", "b", "a", None],
            "file_loc": [
                str(folder / "images/a.png"),
                str(folder / "images/gone.png"),
                str(folder / "images/c.png"),
                str(folder / "images/b.png"),
            ],
            "ring": [1, 0, np.nan, 1],
        }
    )
    with pytest.raises(cat.CatalogueError) as info:
        cat.load_catalogue(frame, label_columns=["ring"])
    report = info.value.report
    assert not report.ok
    problems = report.errors.set_index("problem")
    assert problems.loc["duplicate id_str", "row"] == 2
    assert "first seen in row 0" in problems.loc["duplicate id_str", "column"]
    assert problems.loc["image file not found", "row"] == 1
    assert problems.loc["image file not found", "file"].endswith("gone.png")
    assert problems.loc["missing id", "row"] == 3
    assert problems.loc["missing label", "row"] == 2
    text = str(info.value)
    for fragment in ("duplicate id_str", "row 2", "gone.png", "missing label", "drop"):
        assert fragment in text


def test_bad_vote_values_are_each_reported():
    votes = pd.DataFrame(_votes(4))
    column = DECALS_DR5.answer_columns[3]
    votes[column] = votes[column].astype(object)
    votes.loc[0, column] = np.nan
    votes.loc[1, column] = -2
    votes.loc[2, column] = 1.5
    votes.loc[3, column] = "many"
    votes = votes.drop(columns=[DECALS_DR5.answer_columns[-1]])
    frame = pd.concat([pd.DataFrame({"id_str": list("abcd"), "file_loc": [""] * 4}), votes], axis=1)
    report = cat.validate_catalogue(frame, schema="decals_dr5", check_images="none")
    by_problem = report.errors.groupby("problem")["row"].apply(list).to_dict()
    assert by_problem["missing vote count (NaN)"] == [0]
    assert by_problem["negative vote count"] == [1]
    assert by_problem["vote count is not a whole number"] == [2]
    assert by_problem["vote count is not a number"] == [3]
    assert by_problem["missing file_loc"] == [0, 1, 2, 3]
    missing = report.errors[report.errors["problem"].str.startswith("missing vote columns")]
    assert DECALS_DR5.answer_columns[-1] in missing["column"].iloc[0]
    assert set(report.errors.loc[report.errors["row"] < 2, "column"]) >= {column}


def test_odd_images_warn_and_say_they_will_be_converted(tmp_path):
    files = {
        "grey": _png(tmp_path / "grey.png", "L"),
        "rgba": _png(tmp_path / "rgba.png", "RGBA"),
        "deep": _png(tmp_path / "deep.png", "I;16"),
        "wide": _png(tmp_path / "wide.png", "RGB", size=(20, 12)),
        "fine": _png(tmp_path / "fine.png"),
    }
    frame = pd.DataFrame({"id_str": list(files), "file_loc": [str(p) for p in files.values()]})
    with pytest.warns(UserWarning, match="greyscale"):
        df = cat.load_catalogue(frame)
    report = cat.validate_catalogue(df, progress=False)
    assert report.ok and len(report.warnings) == 4
    kinds = dict(zip(report.warnings["id_str"], report.warnings["problem"], strict=True))
    assert kinds["grey"] == "greyscale image"
    assert "RGBA" in kinds["rgba"]
    assert "16-bit" in kinds["deep"]
    assert kinds["wide"] == "non-square image"
    assert "converted" in str(report) or "copied" in str(report)


def test_truncated_and_non_image_files_are_errors(tmp_path):
    good = _png(tmp_path / "good.png", size=(64, 64))
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        good
    )
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    frame = pd.DataFrame(
        {"id_str": ["good", "cut", "text"], "file_loc": [str(good), str(truncated), str(text)]}
    )
    report = cat.validate_catalogue(frame, progress=False)
    errors = dict(zip(report.errors["id_str"], report.errors["problem"], strict=True))
    assert errors == {"cut": "truncated image", "text": "unreadable image"}
    # A header-only check is fast but cannot see the truncation.
    quick = cat.validate_catalogue(frame, check_images="header", progress=False)
    assert set(quick.errors["id_str"]) == {"text"}


def test_missing_columns_suggest_a_rename(tmp_path):
    frame = pd.DataFrame({"iauname": ["a"], "local_png_loc": ["x.png"]})
    report = cat.validate_catalogue(frame, check_images="none")
    text = str(report)
    assert "rename 'iauname' to 'id_str'" in text
    assert "rename 'local_png_loc' to 'file_loc'" in text


def test_fits_images_need_astropy_or_are_read(tmp_path):
    path = tmp_path / "g.fits"
    path.write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    frame = pd.DataFrame({"id_str": ["g"], "file_loc": [str(path)]})
    report = cat.validate_catalogue(frame, progress=False)
    try:
        import astropy  # noqa: F401
    except ImportError:
        assert report.errors["problem"].tolist() == ["FITS image but astropy is not installed"]
    else:
        assert not report.problems.empty


def test_good_catalogue_reports_no_problems(folder):
    frame = pd.DataFrame(
        {
            "id_str": list("abc"),
            "file_loc": [str(folder / f"images/{n}.png") for n in "abc"],
            "ring": [1, 0, 1],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = cat.load_catalogue(frame, label_columns=["ring"])
    report = cat.validate_catalogue(df, label_columns=["ring"])
    assert report.ok and report.problems.empty
    assert "No problems found" in str(report)


def test_open_catalogue_accepts_a_file_or_rejects_unknown_names(folder):
    pd.DataFrame({"id_str": ["a"], "file_loc": ["images/a.png"]}).to_csv(
        folder / "one.csv", index=False
    )
    assert len(cat.open_catalogue(str(folder / "one.csv"))) == 1
    with pytest.raises(ValueError, match="gz_decals_rings"):
        cat.open_catalogue("no_such_dataset")


def test_real_ring_catalogue_validates_cleanly(tmp_path, monkeypatch):
    mirror = Path(os.environ.get("GALAXY_DATA_MIRROR") or "/work/shared/data")
    csv = mirror / "gz_decals_rings" / "data" / "example_ring_catalog_basic.csv"
    if not csv.is_file():
        pytest.skip(f"mirror file {csv} absent: set GALAXY_DATA_MIRROR to the shared data")
    # The upstream file's image paths are relative to the dataset folder, one level up.
    df = cat.load_catalogue(
        csv,
        label_columns=["ring"],
        image_root=csv.parent.parent,
        id_column="iauname",
        file_column="local_png_loc",
        check_images="header",
        progress=False,
    )
    assert len(df) == 470 and df["id_str"].is_unique
