"""Step 1 of the synthetic sky: what each galaxy truly is, and the sky's configuration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from ..core import content_key
from ..schema import DECALS_DR5

# Bump when the generator changes what it draws, so old caches are not reused.
GENERATOR_VERSION = 4

TAGS = tuple("ring lens dust-lane overlapping diffuse irregular tidal merger artifact".split())
TYPES = ("smooth", "featured", "edge-on", "artifact", "star")

# Approximate share of *all* galaxies carrying each tag (Galaxy Zoo Talk tags are rare: 0.5-5%).
_RATES = (0.035, 0.01, 0.02, 0.03, 0.025, 0.02, 0.035, 0.025, 0.03)
DEFAULT_TAG_RATES = dict(zip(TAGS, _RATES, strict=True))

BULGES = ("dominant", "large", "moderate", "small", "none")
_BARS = ("strong", "weak", "no")
_WINDINGS = ("tight", "medium", "loose")
_ROUNDNESS = ("round", "in-between", "cigar-shaped")
_EDGE_BULGES = ("boxy", "none", "rounded")
_MERGING = ("none", "minor-disturbance", "major-disturbance", "merger")
REF = 64.0  # geometry is defined on a 64-pixel reference grid and scaled to any size
_N_UNIFORMS = 40  # uniform numbers drawn per galaxy for its truth (fixed: keeps prefixes stable)
# The modules whose code decides what a sky looks like (hashed into its cache key).
_GENERATOR_FILES = ("truth.py", "render.py", "volunteers.py")


@dataclass
class SkyConfig:
    """What sky to generate. Defaults are the quick CPU profile (5,000 galaxies at 64 px).

    Parameters
    ----------
    n_galaxies : number of galaxies.
    image_size : image side in pixels (16 to 1024); a bigger image shows the same galaxies.
    seed : galaxy ``i`` is drawn from ``numpy.random.default_rng([seed, i, step])``.
    smooth_fraction, edge_on_fraction, star_fraction : shares of those types; face-on featured
        disks are the rest after artifacts (``tag_rates["artifact"]``).
    tag_rates : approximate share of all galaxies with each tag (default :data:`DEFAULT_TAG_RATES`).
    deep_fraction : share of galaxies seen by 30-45 volunteers (the rest get about 5-10).
    perception_noise : scales how noisily volunteers perceive each galaxy (1 = realistic).
    """

    n_galaxies: int = 5000
    image_size: int = 64
    seed: int = 1
    smooth_fraction: float = 0.41
    edge_on_fraction: float = 0.15
    star_fraction: float = 0.015
    tag_rates: dict = field(default_factory=lambda: dict(DEFAULT_TAG_RATES))
    deep_fraction: float = 0.3
    perception_noise: float = 1.0

    def validate(self) -> SkyConfig:
        """Check every field; raise ValueError naming the bad one. Returns self."""
        check_int(self.n_galaxies, "SkyConfig.n_galaxies", 1)
        check_size(self.image_size, "SkyConfig.image_size")
        check_int(self.seed, "SkyConfig.seed", 0)
        if not isinstance(self.tag_rates, dict):
            raise ValueError(f"SkyConfig.tag_rates must be a dict; got {self.tag_rates!r}.")
        if unknown := sorted(set(self.tag_rates) - set(TAGS)):
            raise ValueError(f"Unknown tag(s) {unknown} in SkyConfig.tag_rates; known: {TAGS}.")
        for tag, rate in self.tag_rates.items():
            if not 0.0 <= float(rate) <= 0.2:
                raise ValueError(
                    f"SkyConfig.tag_rates[{tag!r}] = {rate} is outside [0, 0.2]; rare features "
                    "are rare (Galaxy Zoo Talk tags cover 0.5-5% of galaxies)."
                )
        highs = dict.fromkeys(("smooth_fraction", "edge_on_fraction", "star_fraction"), 1)
        for name, high in (highs | {"deep_fraction": 1, "perception_noise": 5}).items():
            value = float(getattr(self, name))
            if not 0.0 <= value <= high:
                raise ValueError(f"SkyConfig.{name} must be in [0, {high}]; got {value}.")
        rest = 1.0 - self._type_fractions()["featured"]
        if rest > 0.95:
            raise ValueError(
                "SkyConfig: smooth + edge-on + star + artifact fractions add up to "
                f"{rest:.2f}; leave at least 5% for featured face-on disks."
            )
        return self

    def rates(self) -> dict:
        """Tag rates with defaults filled in."""
        return {**DEFAULT_TAG_RATES, **{k: float(v) for k, v in self.tag_rates.items()}}

    def _type_fractions(self) -> dict:
        fr = {"smooth": float(self.smooth_fraction), "edge-on": float(self.edge_on_fraction)}
        fr |= {"star": float(self.star_fraction), "artifact": self.rates()["artifact"]}
        fr["featured"] = 1.0 - sum(fr.values())
        return fr

    def key(self) -> str:
        """Hash of all that changes the sky, the generator's source included (its cache name)."""
        d = {**asdict(self), "tag_rates": self.rates(), "generator_version": GENERATOR_VERSION}
        return content_key({**d, "generator_source": generator_source()})


def generator_source() -> str:
    """Short hash of the generator modules' code, so an edited generator never reuses a cache."""
    here = Path(__file__).parent
    return content_key(*[(here / n).read_bytes() for n in _GENERATOR_FILES], length=12)


def check_int(value, what: str, low: int, high: int | None = None, hint: str = "") -> None:
    """Raise ValueError unless ``value`` is an integer in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer; got {value!r} ({type(value).__name__}).")
    if value < low or (high is not None and value > high):
        span = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{what} must be {span}; got {value}.{hint}")


def check_size(size, what: str = "image size") -> None:
    """Raise ValueError unless ``size`` is an integer number of pixels in [16, 1024]."""
    check_int(size, what, 16, 1024, " Use 64 (quick profile) or 224 (paper-like).")


def config_with(config: SkyConfig | None, overrides: dict) -> SkyConfig:
    """``config`` (default ``SkyConfig()``) with ``overrides`` applied, validated."""
    if config is None:
        config = SkyConfig()
    elif not isinstance(config, SkyConfig):
        raise ValueError(f"config must be a SkyConfig or None; got {type(config).__name__}.")
    names = {f.name for f in fields(SkyConfig)}
    if unknown := sorted(set(overrides) - names):
        raise ValueError(f"Unknown SkyConfig field(s) {unknown}; fields are {sorted(names)}.")
    if "tag_rates" in overrides and overrides["tag_rates"] is not None:
        overrides = {**overrides, "tag_rates": {**config.tag_rates, **overrides["tag_rates"]}}
    return replace(config, **overrides).validate()


def galaxy_uniforms(indices: np.ndarray, seed: int, step: int, n: int) -> np.ndarray:
    """``n`` uniforms per galaxy from its own stream ``[seed, i, step]`` (prefix-stable)."""
    out = np.empty((len(indices), n))
    for row, i in enumerate(indices):
        out[row] = np.random.default_rng([int(seed), int(i), step]).random(n)
    return out


def _pick(u: np.ndarray, labels: Sequence, probs: Sequence[float]):
    """Inverse-CDF choice: ``labels[k]`` where ``u`` falls in the k-th bin of ``probs``."""
    cdf = np.cumsum(np.asarray(probs, float))
    cdf = cdf / cdf[-1]
    k = np.searchsorted(cdf, u, side="right").clip(0, len(labels) - 1)
    return np.asarray(labels, dtype=object)[k]


def draw_truth(n: int, seed: int = 1, config: SkyConfig | None = None) -> pd.DataFrame:
    """Draw the true morphology and rare-feature tags of ``n`` galaxies.

    Parameters
    ----------
    n : number of galaxies (galaxy ``i`` depends only on ``seed`` and ``i``).
    seed : random seed.
    config : population knobs (``SkyConfig()`` if None; its ``n_galaxies`` and ``seed`` unused).

    Returns
    -------
    DataFrame, one row per galaxy: the contract's ``truth_*`` columns, ``truth_contrast`` (0-1,
    how prominent arms, bars and rings are), ``truth_image_size``, ``tag_*`` and ``split``.
    """
    config = config_with(config, {})
    check_int(n, "n (number of galaxies)", 1)
    check_int(seed, "seed", 0)
    u = galaxy_uniforms(np.arange(n), seed, 0, _N_UNIFORMS)
    rates = config.rates()
    tf = config._type_fractions()

    gtype = _pick(u[:, 0], list(tf), list(tf.values()))
    smooth, featured, edge = gtype == "smooth", gtype == "featured", gtype == "edge-on"
    galaxy = smooth | featured | edge
    fr_gal = tf["smooth"] + tf["featured"] + tf["edge-on"]

    def p(rate, share):  # conditional probability giving overall ``rate``
        return min(1.0, rate / max(share, 1e-9))

    # Rare features. Irregular and diffuse galaxies exclude rings and lenses.
    irregular = featured & (u[:, 14] < p(rates["irregular"], tf["featured"]))
    diffuse = (smooth | featured) & ~irregular
    diffuse &= u[:, 15] < p(rates["diffuse"], tf["smooth"] + tf["featured"])
    plain = ~(irregular | diffuse)
    ring = plain & (
        (featured & (u[:, 16] < p(0.88 * rates["ring"], tf["featured"])))
        | (smooth & (u[:, 16] < p(0.12 * rates["ring"], tf["smooth"])))
    )
    lens = plain & (
        (smooth & (u[:, 17] < p(0.8 * rates["lens"], tf["smooth"])))
        | (featured & (u[:, 17] < p(0.2 * rates["lens"], tf["featured"])))
    )
    dust = (edge & (u[:, 18] < p(0.85 * rates["dust-lane"], tf["edge-on"]))) | (
        smooth & (u[:, 18] < p(0.15 * rates["dust-lane"], tf["smooth"]))
    )
    overlapping = galaxy & (u[:, 19] < p(rates["overlapping"], fr_gal))

    # Merging state: mergers and major disturbances are set by the merger and tidal rates.
    p_merger = p(rates["merger"], fr_gal)
    p_minor = 0.08
    # Tidal features: every major disturbance, 40% of mergers, 6% of minor disturbances; the
    # major-disturbance share is set so that the tidal tag reaches its rate.
    p_major = max(0.0, rates["tidal"] / fr_gal - 0.4 * p_merger - 0.06 * p_minor)
    merging = _pick(
        u[:, 7], _MERGING, [max(0.0, 1 - p_merger - p_major - p_minor), p_minor, p_major, p_merger]
    )
    merging = np.where(galaxy, merging, "none")
    tidal = galaxy & (
        (merging == "major-disturbance")
        | ((merging == "merger") & (u[:, 20] < 0.4))
        | ((merging == "minor-disturbance") & (u[:, 20] < 0.06))
    )
    artifact = gtype == "artifact"
    roundness = np.where(smooth, _pick(u[:, 1], _ROUNDNESS, [0.40, 0.45, 0.15]), "")

    # Face-on disks: bulge, bar, arms, winding. Rings favour bars and S0-like (armless) disks.
    bulge = _pick(u[:, 2], BULGES, [0.03, 0.15, 0.40, 0.30, 0.12])
    bulge = np.where(irregular | diffuse, _pick(u[:, 2], ("small", "none"), [0.3, 0.7]), bulge)
    bar = np.where(
        ring, _pick(u[:, 3], _BARS, [0.35, 0.30, 0.35]), _pick(u[:, 3], _BARS, [0.15, 0.20, 0.65])
    )
    bar = np.where(irregular | diffuse, "no", bar)
    arm_probs = [0.15, 0.05, 0.45, 0.15, 0.08, 0.12]  # 0, 1, 2, 3, 4, more than 4
    arms = np.searchsorted(np.cumsum(arm_probs), u[:, 4] * sum(arm_probs), side="right")
    ring_arms = np.searchsorted(np.cumsum([0.45, 0.03, 0.35, 0.07, 0.04, 0.06]), u[:, 4])
    arms = np.where(ring, ring_arms, arms).clip(0, 5)
    arms = np.where(irregular, 0, arms)
    winding = np.where(arms > 0, _pick(u[:, 5], _WINDINGS, [0.30, 0.45, 0.25]), "")
    bulge = np.where(featured, bulge, "")
    bar = np.where(featured, bar, "")
    arms = np.where(featured, arms, 0).astype(int)
    winding = np.where(featured, winding, "")
    edge_bulge = np.where(edge, _pick(u[:, 6], _EDGE_BULGES, [0.12, 0.38, 0.50]), "")
    edge_bulge = np.where(edge & dust, _pick(u[:, 6], _EDGE_BULGES, [0.2, 0.15, 0.65]), edge_bulge)

    # Brightness and size. Galaxy counts rise towards the faint limit (r < 17.8).
    a, m0, m1 = 0.35 * np.log(10), 13.5, 17.8
    mag = np.log(np.exp(a * m0) + u[:, 8] * (np.exp(a * m1) - np.exp(a * m0))) / a
    mag = np.where(diffuse, np.minimum(mag + 0.5, 18.2), mag)
    mag = np.where(gtype == "star", 13.0 + 4.5 * u[:, 8], mag)
    log_r = np.log(0.11) - 0.09 * (mag - 16.0) + 0.25 * special.ndtri(u[:, 9].clip(1e-6, 1 - 1e-6))
    radius_frac = np.exp(log_r)
    # Talk tags mark features volunteers could see: tagged rings, lenses and lanes sit in
    # somewhat larger, brighter galaxies.
    seen = ring | lens | dust
    for mask, factor in ((smooth, 0.85), (edge, 1.2), (diffuse, 1.7), (seen, 1.2), (dust, 1.25)):
        radius_frac = np.where(mask, radius_frac * factor, radius_frac)
    mag = np.where(seen, np.maximum(mag - 0.3, m0), mag)
    radius_frac = radius_frac.clip(0.035, 0.26)
    radius_frac = np.where(gtype == "star", 0.02, radius_frac)

    q = np.ones(n)
    rq = {"round": (0.78, 1.0), "in-between": (0.48, 0.78), "cigar-shaped": (0.24, 0.48)}
    for name, (lo, hi) in rq.items():
        sel = roundness == name
        q[sel] = lo + (hi - lo) * u[sel, 10]
    q = np.where(featured, 0.42 + 0.58 * u[:, 10], q)
    q = np.where(edge, 0.10 + 0.16 * u[:, 10], q)
    q = np.where(edge & dust, 0.22 + 0.16 * u[:, 10], q)  # lanes show best slightly off edge-on
    q = np.where(artifact, 0.2 + 0.8 * u[:, 10], q)
    q = np.where(gtype == "star", 1.0, q)
    contrast = 0.25 + 0.75 * u[:, 12]
    split = _pick(u[:, 13], ("train", "val", "test"), [0.8, 0.1, 0.1])

    columns = {"type": gtype, "roundness": roundness, "bulge": bulge, "bar": bar}
    columns = {k: v.astype(str) for k, v in columns.items()}
    columns |= {"arms": arms, "winding": winding.astype(str)}
    columns |= {"edge_bulge": edge_bulge.astype(str), "merging": merging.astype(str)}
    columns |= {"magnitude": mag.round(3), "radius_px": (radius_frac * config.image_size).round(3)}
    columns |= {"axis_ratio": q.round(3), "angle_deg": (180.0 * u[:, 11]).round(2)}
    columns |= {"contrast": contrast.round(3)}
    columns["image_size"] = np.full(n, config.image_size, dtype=int)
    truth = pd.DataFrame({f"truth_{k}": v for k, v in columns.items()})
    tags = (ring, lens, dust, overlapping, diffuse, irregular, tidal, merging == "merger", artifact)
    for tag, mask in zip(TAGS, tags, strict=True):
        truth[f"tag_{tag}"] = np.asarray(mask, dtype=bool)
    truth["split"] = split.astype(str)
    return truth


def truth_matches_answer(catalogue: pd.DataFrame, question: str, answer: str) -> np.ndarray:
    """Bool mask of galaxies whose *true* morphology is ``answer`` to ``question``.

    Parameters
    ----------
    catalogue : a synthetic catalogue (``truth_*`` columns).
    question, answer : e.g. ``"bar-dr5"``, ``"strong"`` (either spelling of the question).

    Returns
    -------
    bool array, one value per row.
    """
    q = DECALS_DR5.question(question)
    if answer not in q.answers:
        raise ValueError(
            f"Question {q.name!r} has no answer {answer!r}; answers: {list(q.answers)}."
        )
    if "truth_type" not in catalogue.columns:
        raise ValueError("truth_matches_answer needs a synthetic catalogue with truth_* columns.")
    t = catalogue["truth_type"].to_numpy(str)
    featured = t == "featured"
    arms = catalogue["truth_arms"].to_numpy(int)
    name = q.name.removesuffix(DECALS_DR5.suffix)
    if name == "smooth-or-featured":
        kinds = {"smooth": ["smooth"], "featured-or-disk": ["featured", "edge-on"]}
        return np.isin(t, kinds.get(answer, ["artifact", "star"]))
    if name == "disk-edge-on":
        return t == "edge-on" if answer == "yes" else featured
    if name == "has-spiral-arms":
        return featured & ((arms > 0) if answer == "yes" else (arms == 0))
    if name == "spiral-arm-count":
        if answer == "cant-tell":
            return featured & (arms > 0) & (catalogue["truth_magnitude"].to_numpy(float) > 17.3)
        return featured & (arms == (5 if answer == "more-than-4" else int(answer)))
    if name == "merging":
        galaxy = np.isin(t, ["smooth", "featured", "edge-on"])
        return (catalogue["truth_merging"].to_numpy(str) == answer) & galaxy
    column = {"bar": "bar", "bulge-size": "bulge", "how-rounded": "roundness"}
    column |= {"edge-on-bulge": "edge_bulge", "spiral-winding": "winding"}
    return catalogue[f"truth_{column[name]}"].to_numpy(str) == answer
