"""A synthetic Galaxy Zoo sky: galaxies whose morphology we know, and volunteers who vote on them.

The built-in data of the course. Three steps, each public so a notebook can show one at a time:

1. :func:`draw_truth` draws the true morphology of each galaxy from a population like Galaxy Zoo
   DECaLS (smooth, featured face-on disks, edge-on disks, artifacts, stars; bulges, bars, spiral
   arms, merging states) plus rare features that are *not* questions of the decision tree, tagged
   like Galaxy Zoo Talk: ``ring``, ``lens``, ``dust-lane``, ``overlapping``, ``diffuse``,
   ``irregular``, ``tidal``, ``merger``, ``artifact``.
2. :func:`render_galaxy` draws one galaxy as a DECaLS-like g/r/z colour composite (Sersic and
   exponential profiles, bars, log-spiral arms with star-forming knots, rings, tidal tails, PSF
   blur, sky noise, faint background sources, asinh stretch).
3. :func:`simulate_votes` lets simulated volunteers walk the decision tree, each answering from a
   noisy perception of the truth; faint and small galaxies are harder (they drift towards
   "smooth"), and the rare features sway answers (a ring makes a disk look featured and barred).

:func:`make_sky` runs all three, writes the images and a catalogue that follows the course's
catalogue contract (see DEVELOPERS.md), and caches the result keyed by the configuration.
Galaxy ``i`` depends only on ``(seed, i)``, so a small sky is a prefix of a bigger one.

Examples
--------
>>> from galaxy_helpers import synthetic
>>> catalogue = synthetic.make_sky(n_galaxies=500)          # doctest: +SKIP
>>> catalogue.filter(like="tag_").sum()                       # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, special

from .schema import DECALS_DR5, Schema, get_schema

__all__ = [
    "TAGS",
    "TYPES",
    "DEFAULT_TAG_RATES",
    "SkyConfig",
    "make_sky",
    "draw_truth",
    "render_galaxy",
    "answer_probabilities",
    "simulate_votes",
    "volunteer_numbers",
    "truth_matches_answer",
    "montage_by_answer",
    "montage_by_tag",
    "sky_dir",
]

# Bump when the generator changes what it draws, so old caches are not reused.
GENERATOR_VERSION = 4

TAGS = (
    "ring",
    "lens",
    "dust-lane",
    "overlapping",
    "diffuse",
    "irregular",
    "tidal",
    "merger",
    "artifact",
)
TYPES = ("smooth", "featured", "edge-on", "artifact", "star")

# Approximate share of *all* galaxies carrying each tag (Galaxy Zoo Talk tags are rare: 0.5-5%).
DEFAULT_TAG_RATES = {
    "ring": 0.035,
    "lens": 0.01,
    "dust-lane": 0.02,
    "overlapping": 0.03,
    "diffuse": 0.025,
    "irregular": 0.02,
    "tidal": 0.035,
    "merger": 0.025,
    "artifact": 0.03,
}

_BULGES = ("dominant", "large", "moderate", "small", "none")
_BARS = ("strong", "weak", "no")
_WINDINGS = ("tight", "medium", "loose")
_ROUNDNESS = ("round", "in-between", "cigar-shaped")
_EDGE_BULGES = ("boxy", "none", "rounded")
_MERGING = ("none", "minor-disturbance", "major-disturbance", "merger")
_MAX_VOLUNTEERS = 45
_REF = 64.0  # geometry is defined on a 64-pixel reference grid and scaled to any size
_N_UNIFORMS = 40  # uniform numbers drawn per galaxy for its truth (fixed: keeps prefixes stable)

# Display colours (R, G, B) = (z, r, g) weights of each stellar population.
_COL_OLD = np.array([1.12, 1.0, 0.80], np.float32)  # bulges, bars, ellipticals
_COL_DISK = np.array([0.96, 1.0, 1.04], np.float32)
_COL_YOUNG = np.array([0.78, 0.95, 1.32], np.float32)  # arms, knots, rings, lensed arcs
_COL_RING = np.array([0.94, 1.0, 1.08], np.float32)

_TRUTH_STR = (
    "truth_type",
    "truth_roundness",
    "truth_bulge",
    "truth_bar",
    "truth_winding",
    "truth_edge_bulge",
    "truth_merging",
)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class SkyConfig:
    """What sky to generate. Defaults are the quick CPU profile (5,000 galaxies at 64 px).

    Parameters
    ----------
    n_galaxies : number of galaxies.
    image_size : image side in pixels (>= 16); geometry scales with it, so a 224-px sky shows
        the same galaxies in more detail.
    seed : galaxy ``i`` is drawn from ``numpy.random.default_rng([seed, i, step])``.
    smooth_fraction, edge_on_fraction, star_fraction : share of smooth galaxies, edge-on disks
        and stars; face-on featured disks are the rest after artifacts (``tag_rates["artifact"]``).
    tag_rates : approximate share of all galaxies with each rare tag (keys from :data:`TAGS`;
        missing keys take :data:`DEFAULT_TAG_RATES`).
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
        for name in ("n_galaxies", "image_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(
                    f"SkyConfig.{name} must be an integer; got {value!r} ({type(value).__name__})."
                )
        if self.n_galaxies < 1:
            raise ValueError(f"SkyConfig.n_galaxies must be at least 1; got {self.n_galaxies}.")
        if self.image_size < 16:
            raise ValueError(
                f"SkyConfig.image_size must be at least 16 pixels; got {self.image_size}. "
                "Use 64 (quick profile) or 224 (paper-like)."
            )
        if self.image_size > 1024:
            raise ValueError(f"SkyConfig.image_size must be at most 1024; got {self.image_size}.")
        if self.seed < 0:
            raise ValueError(f"SkyConfig.seed must be >= 0; got {self.seed}.")
        if not isinstance(self.tag_rates, dict):
            raise ValueError(f"SkyConfig.tag_rates must be a dict; got {self.tag_rates!r}.")
        unknown = sorted(set(self.tag_rates) - set(TAGS))
        if unknown:
            raise ValueError(
                f"Unknown tag(s) {unknown} in SkyConfig.tag_rates; known tags: {TAGS}."
            )
        for tag, rate in self.tag_rates.items():
            if not 0.0 <= float(rate) <= 0.2:
                raise ValueError(
                    f"SkyConfig.tag_rates[{tag!r}] = {rate} is outside [0, 0.2]; rare features "
                    "are rare (Galaxy Zoo Talk tags cover 0.5-5% of galaxies)."
                )
        for name in ("smooth_fraction", "edge_on_fraction", "star_fraction", "deep_fraction"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SkyConfig.{name} must be in [0, 1]; got {value}.")
        rest = 1.0 - self._type_fractions()["featured"]
        if rest > 0.95:
            raise ValueError(
                "SkyConfig: smooth + edge-on + star + artifact fractions add up to "
                f"{rest:.2f}; leave at least 5% for featured face-on disks."
            )
        if not 0.0 <= float(self.perception_noise) <= 5.0:
            raise ValueError(
                f"SkyConfig.perception_noise must be in [0, 5]; got {self.perception_noise}."
            )
        return self

    def rates(self) -> dict:
        """Tag rates with defaults filled in."""
        return {**DEFAULT_TAG_RATES, **{k: float(v) for k, v in self.tag_rates.items()}}

    def _type_fractions(self) -> dict:
        art = self.rates()["artifact"]
        fr = {
            "smooth": float(self.smooth_fraction),
            "edge-on": float(self.edge_on_fraction),
            "star": float(self.star_fraction),
            "artifact": art,
        }
        fr["featured"] = 1.0 - sum(fr.values())
        return fr

    def key(self) -> str:
        """Short hash of everything that changes the sky (used as the cache folder name)."""
        d = asdict(self)
        for name in ("n_galaxies", "image_size", "seed"):  # numpy ints hash like ints
            d[name] = int(d[name])
        d["tag_rates"] = self.rates()
        d["generator_version"] = GENERATOR_VERSION
        d["generator_source"] = _generator_fingerprint()
        blob = json.dumps(d, sort_keys=True, default=float).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _generator_fingerprint() -> str:
    """Hash of the code that draws, renders and votes (everything above the montages).

    Part of the cache key, so an edited generator never reuses images made by an older one.
    """
    text = Path(__file__).read_text(encoding="utf-8")
    head = text.split("# Montages\n")[0]
    return hashlib.sha256(head.encode()).hexdigest()[:12]


def _config_with(config: SkyConfig | None, overrides: dict) -> SkyConfig:
    if config is None:
        config = SkyConfig()
    elif not isinstance(config, SkyConfig):
        raise ValueError(f"config must be a SkyConfig or None; got {type(config).__name__}.")
    names = {f.name for f in fields(SkyConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"Unknown SkyConfig field(s) {unknown}; fields are {sorted(names)}.")
    if "tag_rates" in overrides and overrides["tag_rates"] is not None:
        overrides = {**overrides, "tag_rates": {**config.tag_rates, **overrides["tag_rates"]}}
    return replace(config, **overrides).validate()


# ---------------------------------------------------------------------------------------------
# Step 1: the truth
# ---------------------------------------------------------------------------------------------
def _galaxy_uniforms(indices: np.ndarray, seed: int, step: int, n: int) -> np.ndarray:
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
    config : population knobs (tag rates, type fractions, image size); ``SkyConfig()`` if None.
        Its ``n_galaxies`` and ``seed`` are ignored in favour of the arguments.

    Returns
    -------
    DataFrame with one row per galaxy (index ``0..n-1``): the ``truth_*`` columns of the
    catalogue contract plus ``truth_contrast`` (0-1, how prominent arms, bars and rings are),
    ``truth_image_size`` and one bool ``tag_<name>`` column per tag in :data:`TAGS`.
    """
    config = _config_with(config, {})
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (number of galaxies) must be an integer >= 1; got {n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}.")
    u = _galaxy_uniforms(np.arange(n), seed, 0, _N_UNIFORMS)
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
    merger = merging == "merger"
    artifact = gtype == "artifact"

    # Morphology of smooth galaxies.
    roundness = np.where(smooth, _pick(u[:, 1], _ROUNDNESS, [0.40, 0.45, 0.15]), "")

    # Face-on disks: bulge, bar, arms, winding. Rings favour bars and S0-like (armless) disks.
    bulge = _pick(u[:, 2], _BULGES, [0.03, 0.15, 0.40, 0.30, 0.12])
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
    radius_frac = np.where(smooth, radius_frac * 0.85, radius_frac)
    radius_frac = np.where(edge, radius_frac * 1.2, radius_frac)
    radius_frac = np.where(diffuse, radius_frac * 1.7, radius_frac)
    # Talk tags mark features volunteers could see: tagged rings, lenses and lanes sit in
    # somewhat larger, brighter galaxies.
    seen = ring | lens | dust
    radius_frac = np.where(seen, radius_frac * 1.2, radius_frac)
    radius_frac = np.where(dust, radius_frac * 1.25, radius_frac)
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

    truth = pd.DataFrame(
        {
            "truth_type": gtype.astype(str),
            "truth_roundness": roundness.astype(str),
            "truth_bulge": bulge.astype(str),
            "truth_bar": bar.astype(str),
            "truth_arms": arms,
            "truth_winding": winding.astype(str),
            "truth_edge_bulge": edge_bulge.astype(str),
            "truth_merging": merging.astype(str),
            "truth_magnitude": mag.round(3),
            "truth_radius_px": (radius_frac * config.image_size).round(3),
            "truth_axis_ratio": q.round(3),
            "truth_angle_deg": (180.0 * u[:, 11]).round(2),
            "truth_contrast": contrast.round(3),
            "truth_image_size": np.full(n, config.image_size, dtype=int),
        }
    )
    tags = {
        "ring": ring,
        "lens": lens,
        "dust-lane": dust,
        "overlapping": overlapping,
        "diffuse": diffuse,
        "irregular": irregular,
        "tidal": tidal,
        "merger": merger,
        "artifact": artifact,
    }
    for tag in TAGS:
        truth[f"tag_{tag}"] = np.asarray(tags[tag], dtype=bool)
    truth["split"] = split.astype(str)
    return truth


# ---------------------------------------------------------------------------------------------
# Step 2: the images
# ---------------------------------------------------------------------------------------------
def _sersic_b(n):
    return 2.0 * n - 1.0 / 3.0 + 0.009876 / n


class _Canvas:
    """Surface brightness in (R, G, B) = (z, r, g) on a grid measured in reference pixels."""

    def __init__(self, size: int):
        self.size = size
        self.scale = _REF / size  # reference pixels per image pixel
        self.centre = (size - 1) / 2.0
        ax = (np.arange(size, dtype=np.float32) - self.centre) * self.scale
        self.x, self.y = np.meshgrid(ax, -ax)  # y up
        self.pix_area = self.scale**2
        self._img = np.zeros((size, size, 3), np.float32)
        self._maps: dict = {}  # one 2-D map per colour, folded into the image when needed

    def blank(self) -> _Canvas:
        """An empty canvas on the same grid."""
        other = _Canvas.__new__(_Canvas)
        other.__dict__.update(self.__dict__)
        other._img = np.zeros_like(self._img)
        other._maps = {}
        return other

    @property
    def img(self) -> np.ndarray:
        for colour, layer in self._maps.values():
            self._img += layer[..., None] * colour
        self._maps = {}
        return self._img

    @img.setter
    def img(self, value: np.ndarray):
        self._maps = {}
        self._img = value

    def _layer(self, colour):
        colour = np.asarray(colour, np.float32)
        key = colour.tobytes()
        if key not in self._maps:
            self._maps[key] = (colour, np.zeros_like(self.x))
        return self._maps[key][1]

    def add(self, profile: np.ndarray, flux: float, colour: np.ndarray):
        """Add ``profile`` normalised to total ``flux`` (reference-pixel units)."""
        total = float(profile.sum()) * self.pix_area
        if total <= 0 or flux <= 0:
            return
        layer = self._layer(colour)
        layer += profile * np.float32(flux / total)

    def add_sb(self, profile: np.ndarray, colour: np.ndarray):
        """Add a profile that is already a surface brightness."""
        layer = self._layer(colour)
        layer += profile

    def window(self, x0: float, y0: float, radius: float):
        """Slices of the pixels within ``radius`` (reference px) of a point; None if outside."""
        col, row = self.centre + x0 / self.scale, self.centre - y0 / self.scale
        r = radius / self.scale
        c0, c1 = max(0, int(col - r)), min(self.size, int(col + r) + 2)
        r0, r1 = max(0, int(row - r)), min(self.size, int(row + r) + 2)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def add_local(self, x0, y0, radius, fn, colour, flux=None):
        """Add ``fn(dx, dy)`` evaluated only near (x0, y0); normalised to ``flux`` if given."""
        win = self.window(x0, y0, radius)
        if win is None:
            return
        dx, dy = self.x[win] - x0, self.y[win] - y0
        prof = fn(dx, dy)
        if flux is not None:
            total = float(prof.sum()) * self.pix_area
            if total <= 0:
                return
            prof = prof * np.float32(flux / total)
        # Small stamps go straight into the colour image (a full-size layer would cost more).
        self._img[win] += prof[..., None] * np.asarray(colour, np.float32)


def _frame(cv: _Canvas, x0, y0, angle_deg):
    """Coordinates along (xr) and across (yr) a major axis at ``angle_deg`` through (x0, y0)."""
    t = np.deg2rad(angle_deg)
    dx, dy = cv.x - x0, cv.y - y0
    return dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)


def _sersic(xr, yr, re, n, q, boxy=2.0):
    soft = 0.25
    r = (np.abs(xr) ** boxy + np.abs(yr / q) ** boxy) ** (1.0 / boxy)
    r = np.sqrt(r * r + soft * soft)
    return np.exp(-_sersic_b(n) * ((r / re) ** (1.0 / n) - 1.0))


def _blobs(cv: _Canvas, xs, ys, sigmas, weights):
    """Sum of round Gaussians (knots, tails, arcs); weights are total fluxes."""
    xs, ys = np.asarray(xs, np.float32), np.asarray(ys, np.float32)
    sig = np.asarray(sigmas, np.float32)
    w = np.asarray(weights, np.float32)
    out = np.zeros_like(cv.x)
    for start in range(0, len(xs), 32):  # chunks bound the memory at large sizes
        sl = slice(start, start + 32)
        d2 = (cv.x[None] - xs[sl, None, None]) ** 2 + (cv.y[None] - ys[sl, None, None]) ** 2
        g = np.exp(-d2 / (2 * sig[sl, None, None] ** 2))
        out += np.tensordot(w[sl] / (2 * np.pi * sig[sl] ** 2), g, axes=1)
    return out


def _psf_star(cv: _Canvas, x0, y0, flux, sigma, colour):
    """A point source as seen through the PSF: Gaussian core plus Moffat-like wings."""
    alpha = 2.5 * sigma
    norm_w = 0.15 * flux * 1.5 / (np.pi * alpha**2)
    # Evaluate only where the wings exceed 5% of the sky noise.
    reach = alpha * np.sqrt(max(0.0, (norm_w / 0.05) ** 0.4 - 1.0))
    radius = max(5.0 * sigma, reach)

    def fn(dx, dy):
        r2 = dx * dx + dy * dy
        core = np.exp(-r2 / (2 * sigma**2)) * (0.85 * flux / (2 * np.pi * sigma**2))
        return core + norm_w * (1 + r2 / alpha**2) ** -2.5

    cv.add_local(x0, y0, radius, fn, colour)


def _disk_plane(xr, yr, q):
    yd = yr / q
    return np.sqrt(xr * xr + yd * yd + 0.04), np.arctan2(yd, xr), yd


def _to_sky(cv_x0, cv_y0, angle_deg, q, xd, yd):
    """Disk-plane coordinates -> sky reference coordinates."""
    t = np.deg2rad(angle_deg)
    xr, yr = xd, yd * q
    return cv_x0 + xr * np.cos(t) - yr * np.sin(t), cv_y0 + xr * np.sin(t) + yr * np.cos(t)


def _lopsided(xr, yr, re, eps, psi):
    """Shift outer isophotes sideways (a disturbed galaxy): offset grows with radius squared."""
    r2 = xr * xr + yr * yr
    k = eps * r2 / (2.0 * re)
    return xr - k * np.cos(psi), yr - k * np.sin(psi)


def _flux(mag):
    return 1500.0 * 10 ** (-0.4 * (mag - 17.0))


def _render_disk(
    cv,
    rng,
    x0,
    y0,
    re,
    q,
    angle,
    flux,
    bulge,
    bar,
    arms,
    winding,
    contrast,
    ring=False,
    irregular=False,
    diffuse=False,
    disturb=(0.0, 0.0),
):
    """A face-on (or inclined) disk galaxy; returns the disk scale length (reference px)."""
    xr, yr = _frame(cv, x0, y0, angle)
    if disturb[0] > 0:
        xr, yr = _lopsided(xr, yr, re, *disturb)
    h = re / 1.678
    r, theta, yd = _disk_plane(xr, yr, q)
    bt = {"dominant": 0.65, "large": 0.42, "moderate": 0.25, "small": 0.10, "none": 0.0}[bulge]
    f_bulge = flux * bt
    f_disk = flux - f_bulge
    if f_bulge > 0:
        re_b = h * (0.22 + 0.55 * bt)
        n_b = 1.5 + 2.5 * bt
        q_b = 0.5 * (1 + q) * rng.uniform(0.85, 1.0)
        cv.add(_sersic(xr, yr, re_b, n_b, min(q_b, 1.0)), f_bulge, _COL_OLD)

    bar_len = 0.0
    if bar in ("strong", "weak"):
        strong = bar == "strong"
        bar_len = h * (rng.uniform(0.9, 1.6) if strong else rng.uniform(0.6, 1.0))
        bar_len = max(bar_len, 1.2)
        beta = rng.uniform(0, np.pi)
        xb = r * np.cos(theta - beta)
        yb = r * np.sin(theta - beta)
        m2 = (xb / bar_len) ** 2 + (yb / (bar_len * rng.uniform(0.22, 0.32))) ** 2
        ferrers = np.clip(1.0 - m2, 0.0, None) ** 1.5
        f_bar = f_disk * ((0.12 + 0.12 * contrast) if strong else (0.04 + 0.05 * contrast))
        cv.add(ferrers, f_bar, 0.5 * (_COL_OLD + _COL_DISK))
        f_disk -= f_bar

    disk_colour = _COL_DISK if not (irregular or diffuse) else 0.5 * (_COL_DISK + _COL_YOUNG)
    f_arms = 0.0
    if arms > 0:
        f_arms = f_disk * (0.2 + 0.35 * contrast)
    f_smooth_disk = f_disk - f_arms
    n_disk = rng.uniform(0.6, 0.9) if diffuse else 1.0
    if irregular:  # patchy, lopsided light
        psi = rng.uniform(0, 2 * np.pi)
        xr2, yr2 = _lopsided(xr, yr, re, rng.uniform(0.15, 0.35), psi)
        cv.add(_sersic(xr2, yr2, re, n_disk, q), 0.55 * f_smooth_disk, disk_colour)
        n_knots = int(rng.integers(10, 26))
        rk = h * rng.gamma(2.0, 0.6, n_knots)
        tk = rng.uniform(0, 2 * np.pi, n_knots)
        xs, ys = _to_sky(x0, y0, angle, q, rk * np.cos(tk), rk * np.sin(tk))
        xs = xs + 0.4 * h * np.cos(psi)
        ys = ys + 0.4 * h * np.sin(psi)
        w = rng.dirichlet(np.full(n_knots, 0.7)) * 0.45 * f_smooth_disk
        sig = rng.uniform(0.4, 1.0, n_knots) * max(0.5, h / 4)
        cv.add_sb(_blobs(cv, xs, ys, sig, w), _COL_YOUNG)
        return h
    cv.add(_sersic(xr, yr, re, n_disk, q), f_smooth_disk, disk_colour)
    if diffuse:
        n_knots = int(rng.integers(0, 5))
        if n_knots:
            rk = h * rng.gamma(2.0, 0.6, n_knots)
            tk = rng.uniform(0, 2 * np.pi, n_knots)
            xs, ys = _to_sky(x0, y0, angle, q, rk * np.cos(tk), rk * np.sin(tk))
            w = rng.uniform(0.01, 0.03, n_knots) * flux
            cv.add_sb(_blobs(cv, xs, ys, np.full(n_knots, 0.7), w), _COL_YOUNG)

    if arms > 0:
        m = arms if arms <= 4 else int(rng.integers(5, 7))
        pitch = np.deg2rad(
            {
                "tight": rng.uniform(9, 15),
                "medium": rng.uniform(17, 25),
                "loose": rng.uniform(28, 40),
            }[winding]
        )
        phi0 = rng.uniform(0, 2 * np.pi)
        sharp = rng.uniform(3.0, 6.0) * (1.0 if m <= 2 else 0.8)
        r_in = max(bar_len, 0.6 * h, 1.0)
        phase = m * theta - (m / np.tan(pitch)) * np.log(r / r_in) - phi0
        pattern = ((1.0 + np.cos(phase)) / 2.0) ** sharp
        # Arms differ a little from each other and fade in past the bulge or bar.
        pattern = pattern * (1.0 + 0.35 * np.cos(theta - rng.uniform(0, 2 * np.pi)))
        envelope = np.exp(-r / (1.15 * h)) * (1.0 - np.exp(-((r / r_in) ** 3)))
        cv.add(pattern * envelope, 0.8 * f_arms, 0.5 * (_COL_DISK + _COL_YOUNG))
        # Star-forming knots along the arm ridges.
        n_knots = int(rng.integers(4, 8 + int(10 * contrast)))
        rk = r_in + h * rng.gamma(2.0, 0.75, n_knots)
        k_arm = rng.integers(0, m, n_knots)
        tk = (phi0 + 2 * np.pi * k_arm + (m / np.tan(pitch)) * np.log(rk / r_in)) / m
        xs, ys = _to_sky(x0, y0, angle, q, rk * np.cos(tk), rk * np.sin(tk))
        w = rng.dirichlet(np.ones(n_knots)) * 0.2 * f_arms
        cv.add_sb(_blobs(cv, xs, ys, rng.uniform(0.45, 0.8, n_knots), w), _COL_YOUNG)

    if ring:
        if bar_len > 0 and rng.random() < 0.7:
            radius = max(bar_len * rng.uniform(1.05, 1.3), 1.1 * h)  # inner ring round the bar
        else:
            radius = h * rng.uniform(1.7, 2.8)  # outer ring
        radius = max(radius, 2.5)
        width = max(0.5, radius * rng.uniform(0.07, 0.12))
        disk_sb_at_r = f_smooth_disk / (2 * np.pi * h * h * q) * np.exp(-radius / h)
        # Brighter than the disk around it, but at low contrast only by a factor of ~2.
        peak = disk_sb_at_r * (1.0 + 3.0 * contrast)
        ring_p = np.exp(-((r - radius) ** 2) / (2 * width**2))
        ring_p *= 1.0 + 0.35 * np.cos(theta - rng.uniform(0, 2 * np.pi))
        cv.add_sb(peak * ring_p, _COL_RING)
    return h


def _render_smooth(cv, rng, x0, y0, re, q, angle, flux, disturb=(0.0, 0.0)):
    xr, yr = _frame(cv, x0, y0, angle)
    if disturb[0] > 0:
        xr, yr = _lopsided(xr, yr, re, *disturb)
    n = rng.uniform(2.5, 5.0)
    cv.add(_sersic(xr, yr, re, n, q), flux, _COL_OLD)


def _render_edge_on(cv, rng, x0, y0, re, q, angle, flux, edge_bulge, dust, disturb=(0.0, 0.0)):
    xr, yr = _frame(cv, x0, y0, angle)
    if disturb[0] > 0:
        xr, yr = _lopsided(xr, yr, re, *disturb)
    h = re / 1.678
    z0 = max(0.35, q * re * (0.9 if dust else 0.55))
    f_b = {"boxy": 0.28, "rounded": 0.25, "none": 0.0}[edge_bulge] * flux
    if dust and f_b > 0:  # Sombrero-like: the lane shows against a big bulge
        f_b = rng.uniform(0.35, 0.5) * flux
    disk = np.exp(-np.sqrt(xr * xr + 0.3) / h) / np.cosh(yr / z0) ** 2
    sub = cv.blank()
    sub.add(disk, flux - f_b, _COL_DISK)
    if f_b > 0:
        if dust:  # a big, soft bulge for the lane to cross
            bul = _sersic(xr, yr, re * 0.5, 1.5, 0.7, boxy=3.0 if edge_bulge == "boxy" else 2.0)
        elif edge_bulge == "boxy":
            bul = _sersic(xr, yr, re * 0.35, 1.5, 0.6, boxy=3.5)
        else:
            bul = _sersic(xr, yr, re * 0.3, 2.5, 0.78)
        sub.add(bul, f_b, _COL_OLD)
    if dust:
        tau = rng.uniform(0.88, 0.99)
        # The lane crosses the near side of the bulge, wide enough to survive the seeing.
        off, wid = 0.17 * re * rng.choice([-1.0, 1.0]), max(1.0, 0.1 * re)
        lane = np.exp(-(((yr - off) / wid) ** 2) / 2) * np.exp(-np.abs(xr) / (4 * h))
        atten = 1.0 - tau * lane[..., None] * np.array([0.75, 0.88, 1.0], np.float32)
        sub.img = sub.img * atten
    cv.img = cv.img + sub.img


def _tails(cv, rng, x0, y0, re, flux, n_tails=None, colour=_COL_DISK):
    """Faint curved tidal tails or plumes leaving the galaxy."""
    n_tails = n_tails or int(rng.integers(1, 3))
    psi0 = rng.uniform(0, 2 * np.pi)
    sign = rng.choice([-1.0, 1.0])
    for k in range(n_tails):
        psi = psi0 + np.pi * k + rng.normal(0, 0.3)
        t = np.linspace(0.0, 1.0, 28)
        length = rng.uniform(2.5, 4.5)
        rr = re * (0.9 + length * t)
        th = psi + sign * rng.uniform(0.7, 1.6) * t
        xs, ys = x0 + rr * np.cos(th), y0 + rr * np.sin(th)
        sig = (0.6 + 1.2 * t) * max(0.6, re / 5)
        w = flux * rng.uniform(0.07, 0.14) / len(t) * (1.0 - 0.5 * t)
        cv.add_sb(_blobs(cv, xs, ys, sig, w), colour)


def _shells(cv, rng, x0, y0, re, flux):
    """Concentric partial shells (a smooth galaxy that swallowed a companion)."""
    psi = rng.uniform(0, 2 * np.pi)
    for k in range(int(rng.integers(2, 4))):
        rad = re * (1.6 + 1.1 * k) * rng.uniform(0.9, 1.1)
        th = psi + (np.pi if k % 2 else 0) + np.linspace(-0.9, 0.9, 24)
        xs, ys = x0 + rad * np.cos(th), y0 + rad * np.sin(th)
        w = np.full(len(th), flux * 0.025 / len(th))
        cv.add_sb(_blobs(cv, xs, ys, np.full(len(th), max(0.6, re / 6)), w), _COL_OLD)


def _artifact(cv, rng, flux, psf):
    """Satellite trail, bright-star ghost, or a bad-data stripe (the 'artifact' answer)."""
    kind = rng.choice(["trail", "ghost", "stripe", "star-spikes"])
    if rng.random() < 0.5:  # sometimes a faint galaxy hides behind the artifact
        xr, yr = _frame(cv, rng.normal(0, 2), rng.normal(0, 2), rng.uniform(0, 180))
        cv.add(_sersic(xr, yr, rng.uniform(2, 5), 2.0, rng.uniform(0.5, 1)), flux * 0.3, _COL_DISK)
    if kind == "trail":
        xr, yr = _frame(cv, rng.normal(0, 6), rng.normal(0, 6), rng.uniform(0, 180))
        width = rng.uniform(0.4, 1.2)
        col = np.array(
            rng.choice([[1.0, 1.0, 1.0], [1.4, 0.3, 0.2], [0.2, 1.3, 0.3], [0.3, 0.4, 1.5]])
        )
        cv.add_sb(rng.uniform(60, 300) * np.exp(-(yr**2) / (2 * width**2)), col.astype(np.float32))
    elif kind == "ghost":
        # A large, off-centre reflection of a bright star outside (or at the edge of) the field.
        psi = rng.uniform(0, 2 * np.pi)
        cx, cy = rng.uniform(8, 22) * np.cos(psi), rng.uniform(8, 22) * np.sin(psi)
        rad = rng.uniform(18, 34)
        d = np.sqrt((cv.x - cx) ** 2 + (cv.y - cy) ** 2)
        halo = np.exp(-((d - rad) ** 2) / (2 * (rad * 0.2) ** 2)) + 0.7 * (d < rad)
        cv.add_sb(rng.uniform(1.5, 5) * halo, np.array([0.8, 1.05, 1.1], np.float32))
        sx, sy = cx + 30 * np.cos(psi), cy + 30 * np.sin(psi)
        _psf_star(cv, sx, sy, flux * 40, psf * 1.5, _COL_DISK)
    elif kind == "stripe":
        band = int(rng.integers(0, 3))
        xr, _ = _frame(cv, rng.uniform(-20, 20), 0.0, rng.choice([0.0, 90.0]))
        width = rng.uniform(3, 12)
        mask = (np.abs(xr) < width).astype(np.float32)
        col = np.zeros(3, np.float32)
        col[band] = 1.0
        cv.add_sb(rng.uniform(100, 400) * mask, col)
    else:  # a saturated star with diffraction spikes and a bleed trail
        x0, y0 = rng.normal(0, 3, 2)
        _psf_star(cv, x0, y0, flux * rng.uniform(20, 60), psf * 1.3, _COL_DISK)
        xr, yr = _frame(cv, x0, y0, rng.uniform(0, 90))
        spikes = np.exp(-np.abs(yr) / 0.35) * np.exp(-np.abs(xr) / 14) + np.exp(
            -np.abs(xr) / 0.35
        ) * np.exp(-np.abs(yr) / 14)
        cv.add_sb(rng.uniform(150, 450) * spikes, np.array([1.0, 1.0, 1.0], np.float32))


def _background(cv, rng, psf):
    """Faint stars and distant galaxies sprinkled over the field."""
    n = int(rng.poisson(3.5))
    half = _REF / 2
    for _ in range(n):
        x0, y0 = rng.uniform(-half, half, 2)
        mag = 22.0 - 3.5 * rng.random() ** 1.5
        col = np.array([rng.uniform(0.7, 1.4), 1.0, rng.uniform(0.6, 1.3)], np.float32)
        if rng.random() < 0.45:
            _psf_star(cv, x0, y0, _flux(mag), psf, col)
        else:
            re, n_s, q = rng.uniform(0.6, 2.0), rng.uniform(1, 3), rng.uniform(0.3, 1)
            t = np.deg2rad(rng.uniform(0, 180))
            ct, st = np.cos(t), np.sin(t)

            def fn(dx, dy, re=re, n_s=n_s, q=q, ct=ct, st=st):
                return _sersic(dx * ct + dy * st, -dx * st + dy * ct, re, n_s, q)

            cv.add_local(x0, y0, 7 * re, fn, col, flux=_flux(mag))


def _stretch(img: np.ndarray) -> np.ndarray:
    """Lupton-style asinh stretch of the colour image (keeps colours of bright cores)."""
    soft, top = 1.5, 800.0
    intensity = np.maximum(img.mean(axis=2), 1e-6)
    factor = np.arcsinh(intensity / soft) / (np.arcsinh(top / soft) * intensity)
    rgb = np.maximum(img * factor[..., None], 0.0)
    peak = np.maximum(rgb.max(axis=2, keepdims=True), 1.0)  # saturate to white, keeping hue
    return (rgb * (255.0 / peak) + 0.5).astype(np.uint8)


def _row_value(row, key, default=None):
    try:
        value = row[key]
    except (KeyError, IndexError):
        if default is None:
            raise ValueError(
                f"render_galaxy: the truth row has no {key!r}; pass a row of draw_truth()."
            ) from None
        return default
    return value


def render_galaxy(
    truth_row, size: int = 64, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Render one galaxy as a DECaLS-like g/r/z colour composite.

    Parameters
    ----------
    truth_row : a row of :func:`draw_truth` (pandas Series or dict).
    size : image side in pixels (>= 16). Geometry scales with it: the field of view is fixed.
    rng : numpy Generator or int seed for everything not in the truth (arm phases, knots, PSF,
        noise, background sources).

    Returns
    -------
    uint8 array ``(size, size, 3)``.
    """
    _check_size(size)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    gtype = str(_row_value(truth_row, "truth_type"))
    if gtype not in TYPES:
        raise ValueError(f"render_galaxy: unknown truth_type {gtype!r}; expected one of {TYPES}.")
    tags = {t: bool(_row_value(truth_row, f"tag_{t}", False)) for t in TAGS}
    ref_size = float(_row_value(truth_row, "truth_image_size", size))
    re = float(_row_value(truth_row, "truth_radius_px")) * _REF / ref_size
    q = float(_row_value(truth_row, "truth_axis_ratio"))
    angle = float(_row_value(truth_row, "truth_angle_deg"))
    mag = float(_row_value(truth_row, "truth_magnitude"))
    contrast = float(_row_value(truth_row, "truth_contrast", 0.6))
    merging = str(_row_value(truth_row, "truth_merging", "none"))

    cv = _Canvas(size)
    psf = rng.uniform(0.75, 1.1)  # Gaussian sigma of the seeing, reference pixels
    x0, y0 = rng.normal(0, 1.2, 2)
    flux = _flux(mag)
    disturb = (0.0, 0.0)
    if merging == "minor-disturbance":
        disturb = (rng.uniform(0.06, 0.14), rng.uniform(0, 2 * np.pi))
    elif merging in ("major-disturbance",):
        disturb = (rng.uniform(0.18, 0.32), rng.uniform(0, 2 * np.pi))

    point_sources = []  # painted after the blur, already PSF-shaped
    if gtype == "star":
        point_sources.append(
            (x0, y0, flux, rng.choice([[1.15, 1.0, 0.8], [0.9, 1.0, 1.2], [1, 1, 1]]))
        )
    elif gtype == "artifact":
        _artifact(cv, rng, flux, psf)
    else:
        main_flux = flux
        if merging == "merger":  # two galaxies; the catalogue magnitude is the pair
            ratio = rng.uniform(0.3, 1.0)
            main_flux = flux / (1 + ratio)
            sep = re * rng.uniform(0.9, 2.0)
            psi = rng.uniform(0, 2 * np.pi)
            x2, y2 = x0 + sep * np.cos(psi) * 0.6, y0 + sep * np.sin(psi) * 0.6
            x0, y0 = x0 - sep * np.cos(psi) * 0.4, y0 - sep * np.sin(psi) * 0.4
            re2 = re * rng.uniform(0.5, 0.9)
            if rng.random() < 0.5:
                _render_smooth(
                    cv,
                    rng,
                    x2,
                    y2,
                    re2,
                    rng.uniform(0.5, 1),
                    rng.uniform(0, 180),
                    ratio * main_flux,
                    (rng.uniform(0.1, 0.3), rng.uniform(0, 6.3)),
                )
            else:
                _render_disk(
                    cv,
                    rng,
                    x2,
                    y2,
                    re2,
                    rng.uniform(0.4, 1),
                    rng.uniform(0, 180),
                    ratio * main_flux,
                    "moderate",
                    "no",
                    2,
                    "loose",
                    0.4,
                    disturb=(rng.uniform(0.1, 0.3), rng.uniform(0, 6.3)),
                )
            xm, ym = (x0 + x2) / 2, (y0 + y2) / 2  # a shared, disturbed envelope
            xr, yr = _frame(cv, xm, ym, np.degrees(psi))
            cv.add(_sersic(xr, yr, sep * 1.2, 1.0, 0.6), 0.15 * flux, _COL_DISK)
            disturb = (rng.uniform(0.1, 0.25), rng.uniform(0, 2 * np.pi))
        if gtype == "smooth":
            _render_smooth(cv, rng, x0, y0, re, q, angle, main_flux, disturb)
            if tags["ring"]:  # ringed lenticular: faint ring around a smooth body
                xr, yr = _frame(cv, x0, y0, angle)
                r, theta, _ = _disk_plane(xr, yr, q)
                radius = re * rng.uniform(1.4, 2.4)
                width = max(0.5, 0.1 * radius)
                peak = main_flux / (2 * np.pi * re * re) * 0.12 * (0.5 + contrast)
                prof = np.exp(-((r - radius) ** 2) / (2 * width**2))
                cv.add_sb(peak * prof * (1 + 0.3 * np.cos(theta - rng.uniform(0, 6.3))), _COL_RING)
            if tags["dust-lane"]:
                xr, yr = _frame(cv, x0, y0, angle + rng.uniform(-30, 30))
                lane = np.exp(-((yr / max(0.5, 0.12 * re)) ** 2) / 2) * np.exp(
                    -np.abs(xr) / (2 * re)
                )
                cv.img *= 1 - rng.uniform(0.5, 0.8) * lane[..., None] * np.array([0.75, 0.88, 1.0])
            if tags["diffuse"]:
                pass  # diffuse smooth galaxies are just large and faint (set in the truth)
        elif gtype == "featured":
            _render_disk(
                cv,
                rng,
                x0,
                y0,
                re,
                q,
                angle,
                main_flux,
                str(_row_value(truth_row, "truth_bulge")) or "moderate",
                str(_row_value(truth_row, "truth_bar")) or "no",
                int(_row_value(truth_row, "truth_arms")),
                str(_row_value(truth_row, "truth_winding")) or "medium",
                contrast,
                ring=tags["ring"],
                irregular=tags["irregular"],
                diffuse=tags["diffuse"],
                disturb=disturb,
            )
        else:  # edge-on
            _render_edge_on(
                cv,
                rng,
                x0,
                y0,
                re,
                q,
                angle,
                main_flux,
                str(_row_value(truth_row, "truth_edge_bulge")) or "none",
                tags["dust-lane"],
                disturb,
            )
        if tags["lens"]:
            radius = re * rng.uniform(1.4, 2.4)
            th0 = rng.uniform(0, 2 * np.pi)
            span = rng.uniform(0.5, 1.1)
            th = th0 + np.linspace(-span, span, 24)
            w = np.full(24, flux * rng.uniform(0.05, 0.11) / 24)
            cv.add_sb(
                _blobs(
                    cv, x0 + radius * np.cos(th), y0 + radius * np.sin(th), np.full(24, 0.55), w
                ),
                _COL_YOUNG,
            )
            if rng.random() < 0.6:  # counter-image
                ang = th0 + np.pi
                r2 = radius * rng.uniform(0.6, 0.9)
                point_sources.append(
                    (x0 + r2 * np.cos(ang), y0 + r2 * np.sin(ang), flux * 0.02, _COL_YOUNG)
                )
        if tags["tidal"]:
            if gtype == "smooth" and rng.random() < 0.5:
                _shells(cv, rng, x0, y0, re, main_flux)
            else:
                _tails(cv, rng, x0, y0, re, main_flux)
        if tags["overlapping"]:
            sep = re * rng.uniform(0.5, 1.6)
            psi = rng.uniform(0, 2 * np.pi)
            xo, yo = x0 + sep * np.cos(psi), y0 + sep * np.sin(psi)
            if rng.random() < 0.6:  # foreground star
                col = rng.choice([[1.15, 1.0, 0.8], [0.9, 1.0, 1.2], [1.0, 1.0, 1.0]])
                point_sources.append((xo, yo, flux * rng.uniform(0.3, 2.5), col))
            else:  # an unrelated galaxy in front or behind
                xr, yr = _frame(cv, xo, yo, rng.uniform(0, 180))
                prof = _sersic(
                    xr, yr, re * rng.uniform(0.3, 0.7), rng.uniform(1, 4), rng.uniform(0.3, 1)
                )
                col = _COL_OLD if rng.random() < 0.5 else 0.5 * (_COL_DISK + _COL_YOUNG)
                cv.add(prof, flux * rng.uniform(0.2, 0.7), col)

    _background(cv, rng, psf)
    sigma_px = psf / cv.scale
    cv.img = ndimage.gaussian_filter(cv.img, sigma=(sigma_px, sigma_px, 0), mode="constant")
    for xs, ys, fl, col in point_sources:
        _psf_star(cv, xs, ys, fl, psf, np.asarray(col, np.float32))
    # Sky noise: smaller pixels are noisier, but less than photon statistics alone would make
    # them, so a 224-px image looks like a DECaLS cutout rather than snow.
    sky_sigma = cv.scale**-0.5
    # Partly shared between bands, so the background looks grey-grainy like a DECaLS cutout.
    noise = rng.standard_normal(cv.img.shape, dtype=np.float32)
    noise = 0.6 * noise[..., :1] + 0.8 * noise
    shot = np.sqrt(np.clip(cv.img, 0, None) * 0.02 / cv.scale**2)
    cv.img += noise * (0.6 * sky_sigma + shot) + 0.6  # 0.6: a faint sky pedestal
    return _stretch(cv.img)


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"image size must be an integer number of pixels; got {size!r}.")
    if not 16 <= size <= 1024:
        raise ValueError(f"image size must be between 16 and 1024 pixels; got {size}.")


# ---------------------------------------------------------------------------------------------
# Step 3: the volunteers
# ---------------------------------------------------------------------------------------------
def _bare(name: str) -> str:
    for suffix in ("-dr5", "-gz2", "-dr12", "-dr8"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _visibility(truth: pd.DataFrame) -> np.ndarray:
    """0-1: how clearly volunteers can see detail (bright, large galaxies -> 1)."""
    mag = truth["truth_magnitude"].to_numpy(float)
    size = truth["truth_image_size"].to_numpy(float) if "truth_image_size" in truth else 64.0
    r_ref = truth["truth_radius_px"].to_numpy(float) * _REF / size
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
    tag = {
        t: truth[f"tag_{t}"].to_numpy(bool) if f"tag_{t}" in truth else np.zeros(n, bool)
        for t in TAGS
    }
    v = _visibility(truth)
    c = truth["truth_contrast"].to_numpy(float) if "truth_contrast" in truth else np.full(n, 0.6)
    q = truth["truth_axis_ratio"].to_numpy(float)
    arms = truth["truth_arms"].to_numpy(int)
    bar = truth["truth_bar"].to_numpy(str)
    bulge = truth["truth_bulge"].to_numpy(str)
    merging = truth["truth_merging"].to_numpy(str)
    # How strongly each rare feature sways answers: volunteers react only to what they can see,
    # so faint rings, arcs, lanes and tails sway less (a bright, high-contrast ring the most).
    sway = {t: tag[t].astype(float) for t in TAGS}
    sway["ring"] = tag["ring"] * np.clip(v * (0.5 + c), 0.0, 1.4)
    for t in ("lens", "dust-lane"):
        sway[t] = tag[t] * v
    for t in ("tidal", "irregular"):
        sway[t] = tag[t] * (0.3 + 0.7 * v)
    out = {}

    # smooth-or-featured: faint featured galaxies drift towards smooth.
    f = np.full(n, -2.2)
    f = np.where(smooth & (q < 0.45), -1.4, f)
    feat = 0.2 + 3.2 * v * (0.4 + 0.6 * c)
    feat += np.where(bar == "strong", 0.6, 0.0) + np.where(arms > 0, 0.4, 0.0)
    feat += np.select(
        [bulge == "dominant", bulge == "large", bulge == "none"], [-1.2, -0.4, 0.2], 0.0
    )
    f = np.where(featured, feat, f)
    f = np.where(edge, 0.6 + 2.8 * v * (1.0 - q), f)
    f -= 1.2 * (1.0 - v) * (smooth | featured | edge)
    f += 1.8 * sway["ring"] + 1.6 * sway["irregular"] + 1.0 * sway["dust-lane"] + 1.0 * sway["lens"]
    f += (
        0.9 * sway["tidal"]
        + 0.7 * sway["merger"]
        + 0.3 * sway["overlapping"]
        - 0.4 * sway["diffuse"]
    )
    art = np.full(n, -4.0) + 1.4 * sway["overlapping"] + 0.4 * sway["lens"] + 1.2 * sway["diffuse"]
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
    e += 1.6 * sway["dust-lane"] - 0.6 * sway["irregular"] - 0.4 * sway["ring"]
    out["disk-edge-on"] = np.stack([e, np.zeros(n)], 1)

    # has-spiral-arms: rings, tails and arcs look like arms.
    s = np.where(arms > 0, 0.2 + 3.2 * v * (0.45 + 0.55 * c), -2.2)
    s = np.where(arms == 1, s - 0.6, s)
    s = np.where(smooth, -2.0, s)
    s = np.where(edge, -1.0, s)
    s -= 1.0 * (1.0 - v)
    s += 1.4 * sway["ring"] + 0.9 * sway["tidal"] + 0.7 * sway["lens"] + 0.3 * sway["irregular"]
    s += 0.3 * sway["merger"]
    out["has-spiral-arms"] = np.stack([s, np.zeros(n)], 1)

    # bar: rings come with (or suggest) bars.
    b = np.zeros((n, 3))
    strong, weak = bar == "strong", bar == "weak"
    b[:, 0] = np.where(strong, 0.6 + 2.2 * v * c, np.where(weak, -0.6, -2.6))
    b[:, 1] = np.where(strong, 0.9, np.where(weak, 0.3 + 1.3 * v, -1.3))
    b[:, :2] -= 1.3 * (1.0 - v)[:, None]
    b[:, 0] += 0.5 * sway["ring"]
    b[:, 1] += 1.0 * sway["ring"] + 0.3 * sway["lens"]
    out["bar"] = b

    # bulge-size: ordinal; faint disks show only their centres (bulges look bigger).
    k = np.select([bulge == x for x in _BULGES], [0, 1, 2, 3, 4], 2.0).astype(float)
    edge_bulge = truth["truth_edge_bulge"].to_numpy(str)
    k = np.where(smooth, 0.3, k)
    k = np.where(
        edge, np.select([edge_bulge == "boxy", edge_bulge == "rounded"], [1.8, 1.8], 3.6), k
    )
    k = np.where(tag["irregular"] | tag["diffuse"], 3.8, k) - 0.8 * (1.0 - v)
    out["bulge-size"] = _ordinal(k, 5, 0.55 + 0.6 * (1.0 - v))

    # how-rounded: from the apparent axis ratio.
    t = np.clip((0.92 - q) / 0.3, -0.4, 2.4)
    out["how-rounded"] = _ordinal(t, 3, 0.45 + 0.35 * (1.0 - v))

    # edge-on-bulge.
    eb = np.zeros((n, 3))
    eb[:, 0] = np.where(edge_bulge == "boxy", 0.4 + 1.6 * v, -1.2)
    eb[:, 1] = np.where(
        edge_bulge == "none", 0.4 + 1.8 * v, np.where(edge_bulge == "boxy", -0.6, -0.4)
    )
    eb[:, 2] = np.where(edge_bulge == "rounded", 1.6, np.where(edge_bulge == "boxy", 0.3, 0.0))
    eb[:, 2] = np.where(smooth, 1.5, eb[:, 2])
    out["edge-on-bulge"] = eb

    # spiral-winding: ordinal; a ring reads as tightly wound.
    wind = truth["truth_winding"].to_numpy(str)
    w = np.select([wind == "tight", wind == "medium", wind == "loose"], [0.0, 1.0, 2.0], 0.8)
    w = w - 0.6 * sway["ring"]
    out["spiral-winding"] = _ordinal(w, 3, 0.6 + 0.5 * (1.0 - v) + 0.4 * (arms == 0))

    # spiral-arm-count: ordinal over 1..more-than-4 plus "cant-tell"; volunteers favour 2.
    a = np.clip(arms - 1, 0, 4).astype(float)
    a = np.where(arms == 0, 1.0, a)
    sig = 0.5 + 0.8 * (1.0 - v) + 0.3 * (arms >= 3) + 0.6 * (arms == 0)
    ac = np.zeros((n, 6))
    ac[:, :5] = _ordinal(a, 5, sig)
    ac[:, 1] += 0.3
    ac[:, 5] = -2.0 + 2.6 * (1.0 - v) + 1.5 * (arms == 0) + 0.5 * (arms >= 5) + 0.5 * sway["ring"]
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
        sel = merging == name
        mg[sel] = vals
    dist = np.isin(merging, ["minor-disturbance", "major-disturbance", "merger"])
    mg[:, 0] += np.where(dist, 1.5 * (1.0 - v), 0.0)  # faint disturbances go unnoticed
    mg[:, 2] += 1.4 * sway["tidal"]
    mg[:, 1] += (
        0.5 * sway["tidal"] + 1.2 * sway["irregular"] + 0.8 * sway["lens"] + 0.3 * sway["ring"]
    )
    mg[:, 3] += 1.6 * sway["overlapping"]
    mg[:, 2] += 0.6 * sway["irregular"] + 0.4 * sway["overlapping"]
    mg[:, 0] -= 0.5 * sway["overlapping"]
    out["merging"] = mg
    return out


def _check_truth(truth: pd.DataFrame, what: str):
    if not isinstance(truth, pd.DataFrame):
        raise ValueError(
            f"{what} needs the truth DataFrame from draw_truth(); got {type(truth).__name__}."
        )
    need = [
        "truth_type",
        "truth_roundness",
        "truth_bulge",
        "truth_bar",
        "truth_arms",
        "truth_winding",
        "truth_edge_bulge",
        "truth_merging",
        "truth_magnitude",
        "truth_radius_px",
        "truth_axis_ratio",
    ]
    missing = [c for c in need if c not in truth.columns]
    if missing:
        raise ValueError(f"{what}: the truth table is missing columns {missing}; use draw_truth().")


def answer_probabilities(
    truth: pd.DataFrame, schema: Schema | str = DECALS_DR5, noise: np.ndarray | None = None
) -> np.ndarray:
    """Probability that a volunteer gives each answer, if asked, ``(N, n_answers)``.

    Each question's block sums to 1. This is the *mean* volunteer; :func:`simulate_votes` adds
    per-galaxy perception noise (``noise``: standard normals ``(N, n_answers)`` scaled by how
    hard the galaxy is) and samples individual volunteers.
    """
    schema = get_schema(schema)
    _check_truth(truth, "answer_probabilities")
    logits = _question_logits(truth)
    unknown = [q.name for q in schema.questions if _bare(q.name) not in logits]
    if unknown:
        raise ValueError(
            f"simulated volunteers know the Galaxy Zoo DECaLS questions; schema {schema.name!r} "
            f"has question(s) {unknown} they cannot answer. Use schema.DECALS_DR5."
        )
    n = len(truth)
    v = _visibility(truth)
    out = np.zeros((n, schema.n_answers))
    for (a, b), q in zip(schema.answer_slices, schema.questions, strict=True):
        lg = logits[_bare(q.name)]
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


def volunteer_numbers(u: np.ndarray, deep_fraction: float = 0.3) -> np.ndarray:
    """Volunteers per galaxy from two uniforms per galaxy ``(N, 2)``: mostly 5-10, some 30-45."""
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
    """Simulated Galaxy Zoo volunteers walk the decision tree for each galaxy.

    Every volunteer answers the first question, then only the questions their own answers
    lead to (``Question.requires``), so unasked questions get exactly 0 votes.

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
    config = _config_with(config, {})
    _check_truth(truth, "simulate_votes")
    n, nq = len(truth), schema.n_questions
    n_u = 2 + schema.n_answers + _MAX_VOLUNTEERS * nq
    if not isinstance(seed, np.random.Generator):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0 or a numpy Generator; got {seed!r}.")
    idx = truth.index.to_numpy()
    if not np.issubdtype(idx.dtype, np.integer):
        idx = np.arange(n)
    counts = np.zeros((n, schema.n_answers), dtype=np.int64)
    block = 4000  # bounds memory (about 16 MB of uniforms per block); results do not depend on it
    for start in range(0, n, block):
        stop = min(n, start + block)
        if isinstance(seed, np.random.Generator):
            u = seed.random((stop - start, n_u))
        else:
            u = _galaxy_uniforms(idx[start:stop], seed, 2, n_u)
        counts[start:stop] = _walk_tree(truth.iloc[start:stop], schema, u, config)
    return counts


def _walk_tree(truth: pd.DataFrame, schema: Schema, u: np.ndarray, config: SkyConfig):
    """Votes of one block of galaxies from their uniforms ``u`` (see :func:`simulate_votes`)."""
    n, nq = len(truth), schema.n_questions
    n_vol = volunteer_numbers(u[:, :2], config.deep_fraction)
    noise = special.ndtri(u[:, 2 : 2 + schema.n_answers].clip(1e-9, 1 - 1e-9))
    probs = answer_probabilities(truth, schema, noise * config.perception_noise)
    clicks = u[:, 2 + schema.n_answers :].reshape(n, _MAX_VOLUNTEERS, nq)
    active = np.arange(_MAX_VOLUNTEERS)[None, :] < n_vol[:, None]
    counts = np.zeros((n, schema.n_answers), dtype=np.int64)
    chosen: dict[str, np.ndarray] = {}
    for qi, ((a, b), q) in enumerate(zip(schema.answer_slices, schema.questions, strict=True)):
        if q.requires:
            asked = np.zeros_like(active)
            for parent, answer in q.requires:
                k = schema.question(parent).answers.index(answer)
                asked |= chosen[schema.question(parent).name] == k
        else:
            asked = active
        cdf = np.cumsum(probs[:, a:b], axis=1)[:, :-1]
        pick = (clicks[:, :, qi][:, :, None] > cdf[:, None, :]).sum(axis=2)
        pick = np.where(asked, pick, -1)
        chosen[q.name] = pick
        for j in range(b - a):
            counts[:, a + j] = (pick == j).sum(axis=1)
    return counts


# ---------------------------------------------------------------------------------------------
# The whole sky, cached
# ---------------------------------------------------------------------------------------------
def _cache_root(cache_dir) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    try:
        from .course import cache_dir as course_cache_dir
    except ImportError:  # pragma: no cover - course.py is part of the package
        env = os.environ.get("GALAXY_HELPERS_CACHE", "").strip()
        return Path(env).expanduser() if env else Path.home() / ".cache" / "galaxy_helpers"
    return course_cache_dir()


def sky_dir(config: SkyConfig | None = None, *, cache_dir=None, **overrides) -> Path:
    """Folder where :func:`make_sky` keeps (or will keep) the sky for this configuration."""
    config = _config_with(config, overrides)
    return _cache_root(cache_dir) / "synthetic" / config.key()


def _render_chunk(args):
    """Worker: render galaxies ``indices`` and write their PNGs (top level, so it pickles)."""
    records, seed, size, folder = args
    from PIL import Image
    from threadpoolctl import threadpool_limits

    # One BLAS thread per worker: the matrix products of a 224-px galaxy are too small to gain
    # from threads, and N workers x N BLAS threads each oversubscribe the cores (measured: 29.6
    # ms per galaxy per worker with 2 workers on 2 cores, 19.5 ms with one thread each; 8x
    # slower than expected with 15 workers on a 16-core GPU machine).
    with threadpool_limits(limits=1, user_api="blas"):
        for rec in records:
            rng = np.random.default_rng([int(seed), int(rec["_index"]), 1])
            img = render_galaxy(rec, size, rng)
            Image.fromarray(img).save(Path(folder) / f"{rec['id_str']}.png", compress_level=1)
    return len(records)


def _default_workers(n: int) -> int:
    if n < 1500:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def make_sky(
    config: SkyConfig | None = None,
    *,
    cache_dir=None,
    progress: bool = True,
    workers: int | None = None,
    **overrides,
) -> pd.DataFrame:
    """Generate (or load from cache) a synthetic Galaxy Zoo catalogue with images on disk.

    Parameters
    ----------
    config : a :class:`SkyConfig` (default ``SkyConfig()``: 5,000 galaxies, 64 px, seed 1).
    cache_dir : root folder of caches (default ``course.cache_dir()``); the sky lives in
        ``<cache_dir>/synthetic/<config hash>/`` with ``images/``, ``catalogue.parquet`` and
        ``config.json``, written atomically.
    progress : show a progress bar while rendering.
    workers : processes used for rendering (default: 2 for big skies, else 1). Does not change
        the result.
    **overrides : SkyConfig fields, e.g. ``make_sky(n_galaxies=500, image_size=224)``.

    Returns
    -------
    DataFrame following the catalogue contract: ``id_str``, ``file_loc`` (absolute PNG path),
    one vote-count column per DECaLS DR5 answer, ``tag_*`` bools, ``truth_*`` columns and
    ``split`` (train/val/test, about 80/10/10).
    """
    config = _config_with(config, overrides)
    final = sky_dir(config, cache_dir=cache_dir)
    cat_path = final / "catalogue.parquet"
    if cat_path.exists() and (final / "config.json").exists():
        return _load_cached(final)

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like any folder
    try:
        catalogue = _build(config, final, tmp, progress, workers)
        catalogue.to_parquet(tmp / "catalogue.parquet", index=False)
        meta = {
            "config": asdict(config),
            "generator_version": GENERATOR_VERSION,
            "generator_source": _generator_fingerprint(),
            "key": config.key(),
            "created_unix": int(time.time()),
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        try:
            os.replace(tmp, final)
        except OSError:
            if not cat_path.exists():  # a half cache from an old crash: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _load_cached(final)


def _load_cached(folder: Path) -> pd.DataFrame:
    catalogue = pd.read_parquet(folder / "catalogue.parquet")
    # Rebuild paths from the ids so a moved cache folder still works.
    catalogue["file_loc"] = [str(folder / "images" / f"{i}.png") for i in catalogue["id_str"]]
    return catalogue


def _build(config: SkyConfig, final: Path, tmp: Path, progress: bool, workers) -> pd.DataFrame:
    n, size, seed = config.n_galaxies, config.image_size, config.seed
    truth = draw_truth(n, seed, config)
    counts = simulate_votes(truth, DECALS_DR5, seed, config)
    ids = [f"synth-{seed}-{i:06d}" for i in range(n)]
    (tmp / "images").mkdir()

    records = truth.to_dict("records")
    for i, rec in enumerate(records):
        rec["_index"] = i
        rec["id_str"] = ids[i]
    chunk = 200
    jobs = [(records[s : s + chunk], seed, size, str(tmp / "images")) for s in range(0, n, chunk)]
    workers = _default_workers(n) if workers is None else int(workers)
    bar = _progress(n, progress, f"Rendering {n} synthetic galaxies")
    try:
        if workers <= 1:
            for job in jobs:
                bar.update(_render_chunk(job))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            methods = mp.get_all_start_methods()
            ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for done in pool.map(_render_chunk, jobs):
                    bar.update(done)
    finally:
        bar.close()

    cat = pd.DataFrame(
        {"id_str": ids, "file_loc": [str(final / "images" / f"{i}.png") for i in ids]}
    )
    votes = pd.DataFrame(counts, columns=DECALS_DR5.answer_columns)
    tags = truth[[f"tag_{t}" for t in TAGS]]
    truth_cols = truth[[c for c in truth.columns if c.startswith("truth_")]]
    return pd.concat([cat, votes, tags, truth_cols, truth[["split"]]], axis=1)


def _progress(total, enabled, desc):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        enabled = False
    if not enabled:

        class _Null:
            def update(self, k=1):
                pass

            def close(self):
                pass

        return _Null()
    return tqdm(total=total, desc=desc, unit="img")


# ---------------------------------------------------------------------------------------------
# Montages
# ---------------------------------------------------------------------------------------------
def truth_matches_answer(catalogue: pd.DataFrame, question: str, answer: str) -> np.ndarray:
    """Bool mask of galaxies whose *true* morphology is ``answer`` to ``question``.

    Parameters
    ----------
    catalogue : a synthetic catalogue (needs the ``truth_*`` columns).
    question, answer : e.g. ``"bar-dr5"``, ``"strong"`` (either spelling of the question).
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
    name = _bare(q.name)
    if name == "smooth-or-featured":
        return {
            "smooth": t == "smooth",
            "featured-or-disk": featured | (t == "edge-on"),
            "artifact": (t == "artifact") | (t == "star"),
        }[answer]
    if name == "disk-edge-on":
        return t == "edge-on" if answer == "yes" else featured
    if name == "has-spiral-arms":
        return featured & ((arms > 0) if answer == "yes" else (arms == 0))
    if name == "spiral-arm-count":
        if answer == "cant-tell":
            return featured & (arms > 0) & (catalogue["truth_magnitude"].to_numpy(float) > 17.3)
        k = 5 if answer == "more-than-4" else int(answer)
        return featured & (arms == k)
    if name == "merging":
        return (catalogue["truth_merging"].to_numpy(str) == answer) & np.isin(
            t, ["smooth", "featured", "edge-on"]
        )
    column = {
        "bar": "truth_bar",
        "bulge-size": "truth_bulge",
        "how-rounded": "truth_roundness",
        "edge-on-bulge": "truth_edge_bulge",
        "spiral-winding": "truth_winding",
    }[name]
    return catalogue[column].to_numpy(str) == answer


def _choose(mask: np.ndarray, k: int, rng: np.random.Generator, score: np.ndarray | None = None):
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return idx
    if score is not None:  # clearest examples: highest score among a random shortlist
        short = rng.permutation(idx)[: max(k * 4, k)]
        return short[np.argsort(-score[short], kind="stable")[:k]]
    return rng.permutation(idx)[:k]


def _galaxy_image(catalogue: pd.DataFrame, row: int, render_size: int | None):
    """File path of a catalogue galaxy, or the same galaxy re-rendered at ``render_size``."""
    if render_size is not None:
        parts = str(catalogue["id_str"].iloc[row]).split("-")
        if len(parts) == 3 and parts[0] == "synth" and parts[1].isdigit() and parts[2].isdigit():
            rng = np.random.default_rng([int(parts[1]), int(parts[2]), 1])
            return render_galaxy(catalogue.iloc[row], render_size, rng)
    return catalogue["file_loc"].iloc[row]


def montage_by_answer(
    catalogue: pd.DataFrame,
    per_answer: int = 6,
    seed: int = 0,
    answers_per_row: int = 2,
    render_size: int | None = None,
):
    """Figure: ``per_answer`` galaxies whose truth is each answer of the DECaLS DR5 tree.

    Examples are drawn at random from a short list of galaxies whose true morphology is the
    answer, preferring those the volunteers also saw clearly (highest vote fraction).

    Parameters
    ----------
    catalogue : a synthetic catalogue (needs ``truth_*`` columns and vote counts).
    per_answer : galaxies per answer.
    seed : which examples are drawn.
    answers_per_row : answers side by side in one row of the figure.
    render_size : re-render the chosen galaxies at this size (same galaxy, more pixels)
        instead of showing the catalogue's image files.

    Returns
    -------
    matplotlib Figure (titles: question, answer, and the volunteers' fraction for it).
    """
    from .plotting import galaxy_grid
    from .schema import canonical_columns, vote_fractions

    catalogue = canonical_columns(catalogue, DECALS_DR5)
    if per_answer < 1:
        raise ValueError(f"per_answer must be >= 1; got {per_answer}.")
    if render_size is not None:
        _check_size(render_size)
    rng = np.random.default_rng(seed)
    fractions = vote_fractions(catalogue, DECALS_DR5)
    images, titles = [], []
    for q in DECALS_DR5.questions:
        for ans in q.answers:
            col = DECALS_DR5.answer_columns.index(f"{q.name}_{ans}")
            mask = truth_matches_answer(catalogue, q.name, ans)
            pick = _choose(mask, per_answer, rng, fractions[:, col])
            for j in range(per_answer):
                if j < len(pick):
                    images.append(_galaxy_image(catalogue, pick[j], render_size))
                    frac = f"{fractions[pick[j], col]:.2f}"
                    titles.append(f"{_short(q.name)}: {ans} {frac}" if j == 0 else frac)
                else:
                    images.append(np.zeros((8, 8, 3), np.uint8))
                    titles.append("(none)")
    fig = galaxy_grid(
        images,
        titles=titles,
        ncols=per_answer * answers_per_row,
        size=1.1,
        ax_titles_fontsize=6,
        suptitle="Synthetic galaxies by true answer (title: answer, volunteers' vote fraction)",
    )
    return _room_for_suptitle(fig)


def _room_for_suptitle(fig):
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


def _short(question: str) -> str:
    return {
        "smooth-or-featured-dr5": "smooth/feat",
        "disk-edge-on-dr5": "edge-on",
        "has-spiral-arms-dr5": "spiral",
        "bar-dr5": "bar",
        "bulge-size-dr5": "bulge",
        "how-rounded-dr5": "rounded",
        "edge-on-bulge-dr5": "edge bulge",
        "spiral-winding-dr5": "winding",
        "spiral-arm-count-dr5": "arms",
        "merging-dr5": "merging",
    }.get(question, _bare(question))


def montage_by_tag(
    catalogue: pd.DataFrame,
    per_tag: int = 6,
    tags: Sequence[str] | None = None,
    seed: int = 0,
    render_size: int | None = None,
):
    """Figure: ``per_tag`` random galaxies carrying each rare-feature tag, one row per tag.

    Parameters
    ----------
    catalogue : a catalogue with ``tag_<name>`` columns.
    per_tag : galaxies per tag.
    tags : which tags (default: all of :data:`TAGS`); unknown names raise ValueError.
    seed : which examples are drawn.
    render_size : re-render the chosen galaxies at this size instead of reading their files.

    Returns
    -------
    matplotlib Figure.
    """
    from .plotting import galaxy_grid

    tags = list(TAGS if tags is None else tags)
    unknown = [t for t in tags if t not in TAGS]
    if unknown:
        raise ValueError(f"Unknown tag(s) {unknown}; known tags: {TAGS}.")
    missing = [f"tag_{t}" for t in tags if f"tag_{t}" not in catalogue.columns]
    if missing:
        raise ValueError(f"Catalogue has no column(s) {missing}; use a synthetic catalogue.")
    if per_tag < 1:
        raise ValueError(f"per_tag must be >= 1; got {per_tag}.")
    if render_size is not None:
        _check_size(render_size)
    rng = np.random.default_rng(seed)
    images, titles = [], []
    for tag in tags:
        pick = _choose(catalogue[f"tag_{tag}"].to_numpy(bool), per_tag, rng)
        for j in range(per_tag):
            if j < len(pick):
                images.append(_galaxy_image(catalogue, pick[j], render_size))
                titles.append(tag if j == 0 else "")
            else:
                images.append(np.zeros((8, 8, 3), np.uint8))
                titles.append("(none)")
    fig = galaxy_grid(
        images,
        titles=titles,
        ncols=per_tag,
        size=1.3,
        ax_titles_fontsize=8,
        suptitle="Synthetic galaxies by rare-feature tag",
    )
    return _room_for_suptitle(fig)


# ---------------------------------------------------------------------------------------------
# Command line: python -m galaxy_helpers.synthetic montage
# ---------------------------------------------------------------------------------------------
def _save_small_png(fig, path: Path, dpi: int = 80) -> None:
    """Save a figure as a palette PNG (a few hundred kB instead of megabytes, for the README)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(
            path, optimize=True
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m galaxy_helpers.synthetic", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    mon = sub.add_parser("montage", help="render the per-answer and per-tag montages")
    mon.add_argument("--n-galaxies", type=int, default=5000)
    mon.add_argument("--image-size", type=int, default=64)
    mon.add_argument("--seed", type=int, default=1)
    mon.add_argument("--out", default="docs/images", help="folder for synthetic_*.png")
    mon.add_argument("--per", type=int, default=6)
    mon.add_argument(
        "--render-size", type=int, default=128, help="re-render the chosen galaxies at this size"
    )
    gen = sub.add_parser("make", help="generate (or find in the cache) a sky; print its folder")
    gen.add_argument("--n-galaxies", type=int, default=5000)
    gen.add_argument("--image-size", type=int, default=64)
    gen.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    cfg = SkyConfig(n_galaxies=args.n_galaxies, image_size=args.image_size, seed=args.seed)
    t0 = time.perf_counter()
    catalogue = make_sky(cfg)
    print(
        f"sky with {len(catalogue)} galaxies ready in {time.perf_counter() - t0:.1f} s: {sky_dir(cfg)}"
    )
    if args.command == "montage":
        import matplotlib

        matplotlib.use("Agg")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rs = args.render_size or None
        for name, fig in (
            ("synthetic_answers.png", montage_by_answer(catalogue, args.per, render_size=rs)),
            ("synthetic_tags.png", montage_by_tag(catalogue, args.per, render_size=rs)),
        ):
            _save_small_png(fig, out / name)
            print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
