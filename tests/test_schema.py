import numpy as np
import pandas as pd
import pytest

from galaxy_helpers import schema as S
from galaxy_helpers.schema import DECALS_DR5, GZ2


def test_decals_dr5_shape_matches_the_published_tree():
    assert DECALS_DR5.n_questions == 10
    assert DECALS_DR5.n_answers == 34
    assert DECALS_DR5.answer_columns[0] == "smooth-or-featured-dr5_smooth"
    assert [q.name for q in DECALS_DR5.children("disk-edge-on-dr5", "no")] == [
        "has-spiral-arms-dr5",
        "bar-dr5",
        "bulge-size-dr5",
    ]
    assert [q.name for q in DECALS_DR5.children("smooth-or-featured-dr5", "artifact")] == []
    assert [q.name for q in DECALS_DR5.children("has-spiral-arms-dr5", "yes")] == [
        "spiral-winding-dr5",
        "spiral-arm-count-dr5",
    ]


def test_gz2_tree():
    assert GZ2.n_questions == 10
    assert GZ2.question("bulge-shape").answers == ("round", "boxy", "no-bulge")
    assert S.get_schema("gz2") is GZ2


def test_answer_slices_cover_columns_in_order():
    cols = DECALS_DR5.answer_columns
    for q, (a, b) in zip(DECALS_DR5.questions, DECALS_DR5.answer_slices, strict=True):
        assert cols[a:b] == q.columns


def test_unknown_question_suggests_a_close_name():
    with pytest.raises(KeyError, match="Did you mean.*bar-dr5"):
        DECALS_DR5.question("bar-dr6")
    with pytest.raises(ValueError, match="no answer"):
        DECALS_DR5.children("bar-dr5", "maybe")


def test_both_column_spellings_are_accepted():
    bare = [c.replace("-dr5", "") for c in DECALS_DR5.answer_columns]
    df = pd.DataFrame(np.arange(2 * 34).reshape(2, 34), columns=bare)
    np.testing.assert_array_equal(S.vote_counts(df), df.to_numpy())
    assert list(S.canonical_columns(df).columns) == DECALS_DR5.answer_columns


def test_fractions_are_zero_not_nan_for_unasked_questions():
    counts = np.zeros((1, 34), int)
    counts[0, 0] = 7  # everyone said smooth; nobody saw the disk questions
    frac = S.vote_fractions(counts)
    assert not np.isnan(frac).any()
    assert frac[0, 0] == 1.0 and frac[0, 3:].sum() == 0
    asked = S.was_asked(counts)
    assert asked[0].tolist() == [True] + [False] * 9


@pytest.mark.parametrize(
    "bad,match",
    [(np.nan, "NaN"), (-1, "negative"), (1.5, "whole numbers")],
)
def test_bad_counts_name_row_and_column(bad, match):
    df = pd.DataFrame(np.ones((3, 34)), columns=DECALS_DR5.answer_columns)
    df.insert(0, "id_str", ["a", "b", "c"])
    df.loc[1, "bar-dr5_weak"] = bad
    with pytest.raises(ValueError, match=match) as err:
        S.vote_counts(df)
    assert "bar-dr5_weak" in str(err.value) and "id_str b" in str(err.value)


def test_missing_columns_are_named():
    df = pd.DataFrame(np.ones((2, 33)), columns=DECALS_DR5.answer_columns[:-1])
    with pytest.raises(ValueError, match="merging-dr5_merger"):
        S.vote_counts(df)


def test_confident_answer():
    counts = np.zeros((3, 34), int)
    counts[0, :3] = [9, 1, 0]  # 90% smooth, 10 votes
    counts[1, :3] = [6, 4, 0]  # not confident
    counts[2, :3] = [3, 0, 0]  # too few votes
    got = S.confident_answer(counts, DECALS_DR5, "smooth-or-featured", min_votes=10)
    assert got.tolist() == ["smooth", "", ""]


def test_schema_validates_its_own_structure():
    with pytest.raises(ValueError, match="must come earlier"):
        S.Schema("bad", (S.Question("b", ("x",), (("a", "y"),)), S.Question("a", ("y",))))
