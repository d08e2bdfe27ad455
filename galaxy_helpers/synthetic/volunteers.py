"""Step 3 of the synthetic sky: volunteers walk the decision tree, each from a noisy perception.

Faint and small galaxies drift towards "smooth"; rare features sway answers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from ..schema import DECALS_DR5, Schema, get_schema
from .truth import BULGES, REF, TAGS, SkyConfig, check_int, config_with, galaxy_uniforms

_MAX_VOLUNTEERS = 45
_NEEDED = "type roundness bulge bar arms winding edge_bulge merging magnitude radius_px axis_ratio"


def _visibility(truth: pd.DataFrame) -> np.ndarray:
    """0-1: how clearly volunteers can see detail (bright, large galaxies -> 1)."""
    mag = truth["truth_magnitude"].to_numpy(float)
    size = truth["truth_image_size"].to_numpy(float) if "truth_image_size" in truth else 64.0
    r_ref = truth["truth_radius_px"].to_numpy(float) * REF / size
    v = special.expit((17.3 - mag) / 0.55) * special.expit((r_ref - 3.2) / 0.9)
    if "tag_diffuse" in truth:
        v = np.where(truth["tag_diffuse"].to_numpy(bool), 0.6 * v, v)
    return v


def _ordinal(position, n_answers, sigma):
    """Logits of an ordered answer scale centred on ``position`` (fractional index)."""
    k = np.arange(n_answers)[None, :]
    return -((k - np.asarray(position)[:, None]) ** 2) / (2 * np.asarray(sigma)[:, None] ** 2)


def _question_logits(truth: pd.DataFrame) -> dict:
    """Mean perception logits per question (bare names), each ``(N, n_answers)``."""
    n = len(truth)
    gt = truth["truth_type"].to_numpy(str)
    smooth, featured, edge = gt == "smooth", gt == "featured", gt == "edge-on"
    star, artifact = gt == "star", gt == "artifact"
    no = np.zeros(n, bool)
    tag = {t: truth[f"tag_{t}"].to_numpy(bool) if f"tag_{t}" in truth else no for t in TAGS}
    v = _visibility(truth)
    c = truth["truth_contrast"].to_numpy(float) if "truth_contrast" in truth else np.full(n, 0.6)
    q = truth["truth_axis_ratio"].to_numpy(float)
    arms = truth["truth_arms"].to_numpy(int)
    names = ("bar", "bulge", "merging", "edge_bulge", "winding")
    bar, bulge, merging, edge_bulge, wind = (truth[f"truth_{k}"].to_numpy(str) for k in names)
    # How strongly each rare feature sways answers: volunteers react only to what they can see,
    # so faint rings, arcs, lanes and tails sway less (a bright, high-contrast ring the most).
    sw = {t: tag[t].astype(float) for t in TAGS}
    sw["ring"] = tag["ring"] * np.clip(v * (0.5 + c), 0.0, 1.4)
    for t in ("lens", "dust-lane"):
        sw[t] = tag[t] * v
    for t in ("tidal", "irregular"):
        sw[t] = tag[t] * (0.3 + 0.7 * v)
    out = {}

    # smooth-or-featured: faint featured galaxies drift towards smooth.
    f = np.full(n, -2.2)
    f = np.where(smooth & (q < 0.45), -1.4, f)
    feat = 0.2 + 3.2 * v * (0.4 + 0.6 * c)
    feat += np.where(bar == "strong", 0.6, 0.0) + np.where(arms > 0, 0.4, 0.0)
    feat += np.select([bulge == "dominant", bulge == "large", bulge == "none"], [-1.2, -0.4, 0.2])
    f = np.where(featured, feat, f)
    f = np.where(edge, 0.6 + 2.8 * v * (1.0 - q), f)
    f -= 1.2 * (1.0 - v) * (smooth | featured | edge)
    f += 1.8 * sw["ring"] + 1.6 * sw["irregular"] + 1.0 * sw["dust-lane"] + 1.0 * sw["lens"]
    f += 0.9 * sw["tidal"] + 0.7 * sw["merger"] + 0.3 * sw["overlapping"] - 0.4 * sw["diffuse"]
    art = np.full(n, -4.0) + 1.4 * sw["overlapping"] + 0.4 * sw["lens"] + 1.2 * sw["diffuse"]
    sm = np.zeros(n)
    art = np.where(artifact, 3.5, art)
    f = np.where(artifact, -2.0, f)
    art = np.where(star, 1.2, art)
    sm = np.where(star, 0.6, sm)
    f = np.where(star, -3.0, f)
    out["smooth-or-featured"] = np.stack([sm, f, art], 1)

    # disk-edge-on: thin disks (and cigar-shaped ellipticals) look edge-on; dust lanes help.
    e = np.where(edge, 1.4 + 5.0 * (0.3 - q) + 0.8 * v, -3.0 + 4.0 * np.clip(0.62 - q, 0, None))
    e = np.where(smooth, -1.6 + 4.0 * np.clip(0.5 - q, 0, None), e)
    e += 1.6 * sw["dust-lane"] - 0.6 * sw["irregular"] - 0.4 * sw["ring"]
    out["disk-edge-on"] = np.stack([e, np.zeros(n)], 1)

    # has-spiral-arms: rings, tails and arcs look like arms.
    s = np.where(arms > 0, 0.2 + 3.2 * v * (0.45 + 0.55 * c), -2.2)
    s = np.where(arms == 1, s - 0.6, s)
    s = np.where(smooth, -2.0, s)
    s = np.where(edge, -1.0, s)
    s -= 1.0 * (1.0 - v)
    s += 1.4 * sw["ring"] + 0.9 * sw["tidal"] + 0.7 * sw["lens"] + 0.3 * sw["irregular"]
    s += 0.3 * sw["merger"]
    out["has-spiral-arms"] = np.stack([s, np.zeros(n)], 1)

    # bar: rings come with (or suggest) bars.
    b = np.zeros((n, 3))
    strong, weak = bar == "strong", bar == "weak"
    b[:, 0] = np.where(strong, 0.6 + 2.2 * v * c, np.where(weak, -0.6, -2.6))
    b[:, 1] = np.where(strong, 0.9, np.where(weak, 0.3 + 1.3 * v, -1.3))
    b[:, :2] -= 1.3 * (1.0 - v)[:, None]
    b[:, 0] += 0.5 * sw["ring"]
    b[:, 1] += 1.0 * sw["ring"] + 0.3 * sw["lens"]
    out["bar"] = b

    # bulge-size: ordinal; faint disks show only their centres (bulges look bigger).
    k = np.select([bulge == x for x in BULGES], [0, 1, 2, 3, 4], 2.0).astype(float)
    k = np.where(smooth, 0.3, k)
    k = np.where(edge, np.where(np.isin(edge_bulge, ["boxy", "rounded"]), 1.8, 3.6), k)
    k = np.where(tag["irregular"] | tag["diffuse"], 3.8, k) - 0.8 * (1.0 - v)
    out["bulge-size"] = _ordinal(k, 5, 0.55 + 0.6 * (1.0 - v))

    # how-rounded: from the apparent axis ratio.
    t = np.clip((0.92 - q) / 0.3, -0.4, 2.4)
    out["how-rounded"] = _ordinal(t, 3, 0.45 + 0.35 * (1.0 - v))

    # edge-on-bulge.
    eb = np.zeros((n, 3))
    boxy = edge_bulge == "boxy"
    eb[:, 0] = np.where(boxy, 0.4 + 1.6 * v, -1.2)
    eb[:, 1] = np.where(edge_bulge == "none", 0.4 + 1.8 * v, np.where(boxy, -0.6, -0.4))
    eb[:, 2] = np.where(edge_bulge == "rounded", 1.6, np.where(boxy, 0.3, 0.0))
    eb[:, 2] = np.where(smooth, 1.5, eb[:, 2])
    out["edge-on-bulge"] = eb

    # spiral-winding: ordinal; a ring reads as tightly wound.
    w = np.select([wind == "tight", wind == "medium", wind == "loose"], [0.0, 1.0, 2.0], 0.8)
    w = w - 0.6 * sw["ring"]
    out["spiral-winding"] = _ordinal(w, 3, 0.6 + 0.5 * (1.0 - v) + 0.4 * (arms == 0))

    # spiral-arm-count: ordinal over 1..more-than-4 plus "cant-tell"; volunteers favour 2.
    a = np.clip(arms - 1, 0, 4).astype(float)
    a = np.where(arms == 0, 1.0, a)
    sig = 0.5 + 0.8 * (1.0 - v) + 0.3 * (arms >= 3) + 0.6 * (arms == 0)
    ac = np.zeros((n, 6))
    ac[:, :5] = _ordinal(a, 5, sig)
    ac[:, 1] += 0.3
    ac[:, 5] = -2.0 + 2.6 * (1.0 - v) + 1.5 * (arms == 0) + 0.5 * (arms >= 5) + 0.5 * sw["ring"]
    out["spiral-arm-count"] = ac

    # merging: tidal features, companions and overlapping objects all look like interaction.
    mg = np.zeros((n, 4))
    base = {
        "none": [2.6, 0.0, -1.6, -2.8],
        "minor-disturbance": [0.9, 0.6 + 1.2 * 1.0, -0.6, -2.0],
        "major-disturbance": [-0.6, 0.9, 2.2, 0.3],
        "merger": [-1.2, 0.0, 1.0, 3.0],
    }
    for name, vals in base.items():
        mg[merging == name] = vals
    dist = np.isin(merging, ["minor-disturbance", "major-disturbance", "merger"])
    mg[:, 0] += np.where(dist, 1.5 * (1.0 - v), 0.0)  # faint disturbances go unnoticed
    mg[:, 2] += 1.4 * sw["tidal"]
    mg[:, 1] += 0.5 * sw["tidal"] + 1.2 * sw["irregular"] + 0.8 * sw["lens"] + 0.3 * sw["ring"]
    mg[:, 3] += 1.6 * sw["overlapping"]
    mg[:, 2] += 0.6 * sw["irregular"] + 0.4 * sw["overlapping"]
    mg[:, 0] -= 0.5 * sw["overlapping"]
    out["merging"] = mg
    return out


def _check_truth(truth: pd.DataFrame, what: str):
    if not isinstance(truth, pd.DataFrame):
        raise ValueError(
            f"{what} needs the truth DataFrame from draw_truth(); got {type(truth).__name__}."
        )
    if missing := [f"truth_{c}" for c in _NEEDED.split() if f"truth_{c}" not in truth.columns]:
        raise ValueError(f"{what}: the truth table is missing columns {missing}; use draw_truth().")


def answer_probabilities(
    truth: pd.DataFrame, schema: Schema | str = DECALS_DR5, noise: np.ndarray | None = None
) -> np.ndarray:
    """Probability that the mean volunteer gives each answer, if asked.

    Parameters
    ----------
    truth : the table from :func:`draw_truth`.
    schema : the decision tree (its questions must be DECaLS DR5's).
    noise : optional standard normals ``(N, n_answers)``, scaled by how hard each galaxy is.

    Returns
    -------
    float array ``(N, n_answers)``; each question's block sums to 1.
    """
    schema = get_schema(schema)
    _check_truth(truth, "answer_probabilities")
    logits = _question_logits(truth)
    bare = [q.name.removesuffix(schema.suffix) for q in schema.questions]
    unknown = [q.name for q, name in zip(schema.questions, bare, strict=True) if name not in logits]
    if unknown:
        raise ValueError(
            f"simulated volunteers know the Galaxy Zoo DECaLS questions; schema {schema.name!r} "
            f"has question(s) {unknown} they cannot answer. Use schema.DECALS_DR5."
        )
    v = _visibility(truth)
    out = np.zeros((len(truth), schema.n_answers))
    for (a, b), q, name in zip(schema.answer_slices, schema.questions, bare, strict=True):
        lg = logits[name]
        if lg.shape[1] != b - a:
            raise ValueError(
                f"schema {schema.name!r} question {q.name!r} has {b - a} answers; the simulated "
                f"volunteers answer it with {lg.shape[1]}."
            )
        if noise is not None:
            lg = lg + noise[:, a:b] * (0.35 + 0.55 * (1.0 - v))[:, None]
        lg = lg - lg.max(axis=1, keepdims=True)
        p = np.exp(lg)
        p /= p.sum(axis=1, keepdims=True)
        out[:, a:b] = 0.95 * p + 0.05 / (b - a)  # a few careless clicks
    return out


def _volunteer_numbers(u: np.ndarray, deep_fraction: float) -> np.ndarray:
    """Volunteers per galaxy from two uniforms each: mostly 5-10, ``deep_fraction`` 30-45."""
    deep = u[:, 0] < deep_fraction
    shallow = np.clip(np.round(7.5 + 1.9 * special.ndtri(u[:, 1].clip(1e-6, 1 - 1e-6))), 3, 14)
    many = 30 + np.floor(u[:, 1] * 16)
    return np.where(deep, many, shallow).astype(int)


def simulate_votes(
    truth: pd.DataFrame,
    schema: Schema | str = DECALS_DR5,
    seed: int | np.random.Generator = 1,
    config: SkyConfig | None = None,
) -> np.ndarray:
    """Simulated volunteers walk the decision tree: unasked questions get exactly 0 votes.

    Parameters
    ----------
    truth : the table from :func:`draw_truth` (index = galaxy number).
    schema : the decision tree (DECaLS DR5).
    seed : int (galaxy ``i`` uses the stream ``[seed, i, 2]``, so results do not depend on which
        other galaxies are in the table) or a numpy Generator.
    config : ``deep_fraction`` and ``perception_noise`` come from here (``SkyConfig()`` if None).

    Returns
    -------
    int64 array ``(N, n_answers)`` in ``schema.answer_columns`` order.
    """
    schema = get_schema(schema)
    config = config_with(config, {})
    _check_truth(truth, "simulate_votes")
    n = len(truth)
    n_u = 2 + schema.n_answers + _MAX_VOLUNTEERS * schema.n_questions
    generator = isinstance(seed, np.random.Generator)
    if not generator:
        check_int(seed, "seed (an integer, or a numpy Generator)", 0)
    idx = truth.index.to_numpy()
    if not np.issubdtype(idx.dtype, np.integer):
        idx = np.arange(n)
    counts = np.zeros((n, schema.n_answers), dtype=np.int64)
    block = 4000  # bounds memory (about 16 MB of uniforms per block); results do not depend on it
    for start in range(0, n, block):
        stop = min(n, start + block)
        if generator:
            u = seed.random((stop - start, n_u))
        else:
            u = galaxy_uniforms(idx[start:stop], seed, 2, n_u)
        counts[start:stop] = _walk_tree(truth.iloc[start:stop], schema, u, config)
    return counts


def _walk_tree(truth: pd.DataFrame, schema: Schema, u: np.ndarray, config: SkyConfig):
    """Votes of one block of galaxies from their uniforms ``u``."""
    n, nq = len(truth), schema.n_questions
    n_vol = _volunteer_numbers(u[:, :2], config.deep_fraction)
    noise = special.ndtri(u[:, 2 : 2 + schema.n_answers].clip(1e-9, 1 - 1e-9))
    probs = answer_probabilities(truth, schema, noise * config.perception_noise)
    clicks = u[:, 2 + schema.n_answers :].reshape(n, _MAX_VOLUNTEERS, nq)
    active = np.arange(_MAX_VOLUNTEERS)[None, :] < n_vol[:, None]
    counts = np.zeros((n, schema.n_answers), dtype=np.int64)
    chosen: dict[str, np.ndarray] = {}
    for qi, ((a, b), q) in enumerate(zip(schema.answer_slices, schema.questions, strict=True)):
        asked = active
        if q.requires:
            asked = np.zeros_like(active)
            for parent, answer in q.requires:
                k = schema.question(parent).answers.index(answer)
                asked |= chosen[schema.question(parent).name] == k
        cdf = np.cumsum(probs[:, a:b], axis=1)[:, :-1]
        pick = (clicks[:, :, qi][:, :, None] > cdf[:, None, :]).sum(axis=2)
        pick = np.where(asked, pick, -1)
        chosen[q.name] = pick
        for j in range(b - a):
            counts[:, a + j] = (pick == j).sum(axis=1)
    return counts
