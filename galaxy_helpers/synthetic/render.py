"""Step 2 of the synthetic sky: one galaxy as a DECaLS-like g/r/z colour composite.

Positions and sizes are in reference pixels (a 64-pixel grid): every image size, same galaxy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .truth import REF, TAGS, TYPES, check_size

# Display colours (R, G, B) = (z, r, g) weights of each stellar population.
_COL_OLD = np.array([1.12, 1.0, 0.80], np.float32)  # bulges, bars, ellipticals
_COL_DISK = np.array([0.96, 1.0, 1.04], np.float32)
_COL_YOUNG = np.array([0.78, 0.95, 1.32], np.float32)  # arms, knots, rings, lensed arcs
_COL_RING = np.array([0.94, 1.0, 1.08], np.float32)
_STAR_COLOURS = [[1.15, 1.0, 0.8], [0.9, 1.0, 1.2], [1.0, 1.0, 1.0]]
_BULGE_TO_TOTAL = {"dominant": 0.65, "large": 0.42, "moderate": 0.25, "small": 0.10, "none": 0.0}


class _Canvas:
    """Surface brightness in (R, G, B) = (z, r, g) on a grid measured in reference pixels."""

    def __init__(self, size: int):
        self.size = size
        self.scale = REF / size  # reference pixels per image pixel
        self.centre = (size - 1) / 2.0
        ax = (np.arange(size, dtype=np.float32) - self.centre) * self.scale
        self.x, self.y = np.meshgrid(ax, -ax)  # y up
        self.pix_area = self.scale**2
        self._img = np.zeros((size, size, 3), np.float32)
        self._maps: dict = {}  # one 2-D map per colour, folded into the image when needed

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

    def add(self, profile: np.ndarray, flux: float, colour: np.ndarray):
        """Add ``profile`` normalised to total ``flux`` (reference-pixel units)."""
        total = float(profile.sum()) * self.pix_area
        if total <= 0 or flux <= 0:
            return
        self.add_sb(profile * np.float32(flux / total), colour)

    def add_sb(self, profile: np.ndarray, colour: np.ndarray):
        """Add a profile that is already a surface brightness."""
        colour = np.asarray(colour, np.float32)
        key = colour.tobytes()
        if key not in self._maps:
            self._maps[key] = [colour, np.zeros_like(self.x)]
        self._maps[key][1] += profile

    def add_local(self, x0, y0, radius, fn, colour, flux=None):
        """Add ``fn(dx, dy)`` evaluated only near (x0, y0); normalised to ``flux`` if given."""
        col, row = self.centre + x0 / self.scale, self.centre - y0 / self.scale
        r = radius / self.scale
        c0, c1 = max(0, int(col - r)), min(self.size, int(col + r) + 2)
        r0, r1 = max(0, int(row - r)), min(self.size, int(row + r) + 2)
        if c0 >= c1 or r0 >= r1:
            return
        win = slice(r0, r1), slice(c0, c1)
        prof = fn(self.x[win] - x0, self.y[win] - y0)
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


def _galaxy_frame(cv: _Canvas, pos, disturb):
    """The frame of a galaxy at ``pos = (x0, y0, re, q, angle)``, made lopsided if disturbed."""
    x0, y0, re, _, angle = pos
    xr, yr = _frame(cv, x0, y0, angle)
    if disturb[0] > 0:
        xr, yr = _lopsided(xr, yr, re, *disturb)
    return xr, yr


def _sersic(xr, yr, re, n, q, boxy=2.0):
    r = (np.abs(xr) ** boxy + np.abs(yr / q) ** boxy) ** (1.0 / boxy)
    r = np.sqrt(r * r + 0.25 * 0.25)  # softened centre
    b = 2.0 * n - 1.0 / 3.0 + 0.009876 / n
    return np.exp(-b * ((r / re) ** (1.0 / n) - 1.0))


def _blobs(cv: _Canvas, xs, ys, sigmas, weights):
    """Sum of round Gaussians (knots, tails, arcs); weights are total fluxes."""
    xs, ys = np.asarray(xs, np.float32), np.asarray(ys, np.float32)
    sig, w = np.asarray(sigmas, np.float32), np.asarray(weights, np.float32)
    out = np.zeros_like(cv.x)
    for start in range(0, len(xs), 32):  # chunks bound the memory at large sizes
        sl = slice(start, start + 32)
        d2 = (cv.x[None] - xs[sl, None, None]) ** 2 + (cv.y[None] - ys[sl, None, None]) ** 2
        g = np.exp(-d2 / (2 * sig[sl, None, None] ** 2))
        out += np.tensordot(w[sl] / (2 * np.pi * sig[sl] ** 2), g, axes=1)
    return out


def _arc(cv: _Canvas, x0, y0, radius, theta, sigmas, weights, colour):
    """Blobs along the arc of polar points ``(radius, theta)`` around (x0, y0)."""
    xs, ys = x0 + radius * np.cos(theta), y0 + radius * np.sin(theta)
    cv.add_sb(_blobs(cv, xs, ys, sigmas, weights), colour)


def _psf_star(cv: _Canvas, x0, y0, flux, sigma, colour):
    """A point source as seen through the PSF: Gaussian core plus Moffat-like wings."""
    alpha = 2.5 * sigma
    norm_w = 0.15 * flux * 1.5 / (np.pi * alpha**2)
    # Evaluate only where the wings exceed 5% of the sky noise.
    reach = alpha * np.sqrt(max(0.0, (norm_w / 0.05) ** 0.4 - 1.0))

    def fn(dx, dy):
        r2 = dx * dx + dy * dy
        core = np.exp(-r2 / (2 * sigma**2)) * (0.85 * flux / (2 * np.pi * sigma**2))
        return core + norm_w * (1 + r2 / alpha**2) ** -2.5

    cv.add_local(x0, y0, max(5.0 * sigma, reach), fn, colour)


def _disk_plane(xr, yr, q):
    """Radius and angle in the plane of a disk seen at axis ratio ``q``."""
    yd = yr / q
    return np.sqrt(xr * xr + yd * yd + 0.04), np.arctan2(yd, xr)


def _to_sky(pos, rk, tk):
    """Polar coordinates ``(rk, tk)`` in the disk plane of ``pos`` -> sky reference coordinates."""
    x0, y0, _, q, angle = pos
    t = np.deg2rad(angle)
    xr, yr = rk * np.cos(tk), rk * np.sin(tk) * q
    return x0 + xr * np.cos(t) - yr * np.sin(t), y0 + xr * np.sin(t) + yr * np.cos(t)


def _scatter(rng, pos, h, n):
    """Sky positions of ``n`` knots scattered over a disk of scale length ``h``."""
    rk = h * rng.gamma(2.0, 0.6, n)
    return _to_sky(pos, rk, rng.uniform(0, 2 * np.pi, n))


def _lopsided(xr, yr, re, eps, psi):
    """Shift outer isophotes sideways (a disturbed galaxy): offset grows with radius squared."""
    k = eps * (xr * xr + yr * yr) / (2.0 * re)
    return xr - k * np.cos(psi), yr - k * np.sin(psi)


def _flux(mag):
    return 1500.0 * 10 ** (-0.4 * (mag - 17.0))


def _render_disk(cv, rng, pos, flux, shape, contrast, tags=None, disturb=(0.0, 0.0)):
    """A face-on (or inclined) disk; ``shape = (bulge, bar, arms, winding)`` of the truth."""
    _, _, re, q, _ = pos
    bulge, bar, arms, winding = shape
    tags = tags or {}
    ring, irregular, diffuse = (tags.get(t, False) for t in ("ring", "irregular", "diffuse"))
    xr, yr = _galaxy_frame(cv, pos, disturb)
    h = re / 1.678
    r, theta = _disk_plane(xr, yr, q)
    bt = _BULGE_TO_TOTAL[bulge]
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
        xb, yb = r * np.cos(theta - beta), r * np.sin(theta - beta)
        m2 = (xb / bar_len) ** 2 + (yb / (bar_len * rng.uniform(0.22, 0.32))) ** 2
        ferrers = np.clip(1.0 - m2, 0.0, None) ** 1.5
        f_bar = f_disk * ((0.12 + 0.12 * contrast) if strong else (0.04 + 0.05 * contrast))
        cv.add(ferrers, f_bar, 0.5 * (_COL_OLD + _COL_DISK))
        f_disk -= f_bar

    disk_colour = _COL_DISK if not (irregular or diffuse) else 0.5 * (_COL_DISK + _COL_YOUNG)
    f_arms = f_disk * (0.2 + 0.35 * contrast) if arms > 0 else 0.0
    f_smooth_disk = f_disk - f_arms
    n_disk = rng.uniform(0.6, 0.9) if diffuse else 1.0
    if irregular:  # patchy, lopsided light
        psi = rng.uniform(0, 2 * np.pi)
        xr2, yr2 = _lopsided(xr, yr, re, rng.uniform(0.15, 0.35), psi)
        cv.add(_sersic(xr2, yr2, re, n_disk, q), 0.55 * f_smooth_disk, disk_colour)
        n_knots = int(rng.integers(10, 26))
        xs, ys = _scatter(rng, pos, h, n_knots)
        xs, ys = xs + 0.4 * h * np.cos(psi), ys + 0.4 * h * np.sin(psi)
        w = rng.dirichlet(np.full(n_knots, 0.7)) * 0.45 * f_smooth_disk
        sig = rng.uniform(0.4, 1.0, n_knots) * max(0.5, h / 4)
        cv.add_sb(_blobs(cv, xs, ys, sig, w), _COL_YOUNG)
        return
    cv.add(_sersic(xr, yr, re, n_disk, q), f_smooth_disk, disk_colour)
    if diffuse:
        n_knots = int(rng.integers(0, 5))
        if n_knots:
            xs, ys = _scatter(rng, pos, h, n_knots)
            w = rng.uniform(0.01, 0.03, n_knots) * flux
            cv.add_sb(_blobs(cv, xs, ys, np.full(n_knots, 0.7), w), _COL_YOUNG)

    if arms > 0:
        m = arms if arms <= 4 else int(rng.integers(5, 7))
        # All three are drawn whatever the winding, which keeps the random stream of a galaxy.
        pitch = (rng.uniform(9, 15), rng.uniform(17, 25), rng.uniform(28, 40))
        pitch = np.deg2rad(pitch[("tight", "medium", "loose").index(winding)])
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
        xs, ys = _to_sky(pos, rk, tk)
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


def _render_smooth(cv, rng, pos, flux, disturb=(0.0, 0.0)):
    xr, yr = _galaxy_frame(cv, pos, disturb)
    cv.add(_sersic(xr, yr, pos[2], rng.uniform(2.5, 5.0), pos[3]), flux, _COL_OLD)


def _smooth_extras(cv, rng, pos, flux, contrast, tags):
    """The faint ring of a ringed lenticular and the dust lane of a smooth galaxy."""
    x0, y0, re, q, angle = pos
    if tags["ring"]:
        xr, yr = _frame(cv, x0, y0, angle)
        r, theta = _disk_plane(xr, yr, q)
        radius = re * rng.uniform(1.4, 2.4)
        width = max(0.5, 0.1 * radius)
        peak = flux / (2 * np.pi * re * re) * 0.12 * (0.5 + contrast)
        prof = np.exp(-((r - radius) ** 2) / (2 * width**2))
        cv.add_sb(peak * prof * (1 + 0.3 * np.cos(theta - rng.uniform(0, 6.3))), _COL_RING)
    if tags["dust-lane"]:
        xr, yr = _frame(cv, x0, y0, angle + rng.uniform(-30, 30))
        lane = np.exp(-((yr / max(0.5, 0.12 * re)) ** 2) / 2) * np.exp(-np.abs(xr) / (2 * re))
        cv.img *= 1 - rng.uniform(0.5, 0.8) * lane[..., None] * np.array([0.75, 0.88, 1.0])


def _render_edge_on(cv, rng, pos, flux, edge_bulge, dust, disturb=(0.0, 0.0)):
    _, _, re, q, _ = pos
    xr, yr = _galaxy_frame(cv, pos, disturb)
    h = re / 1.678
    z0 = max(0.35, q * re * (0.9 if dust else 0.55))
    f_b = {"boxy": 0.28, "rounded": 0.25, "none": 0.0}[edge_bulge] * flux
    if dust and f_b > 0:  # Sombrero-like: the lane shows against a big bulge
        f_b = rng.uniform(0.35, 0.5) * flux
    disk = np.exp(-np.sqrt(xr * xr + 0.3) / h) / np.cosh(yr / z0) ** 2
    sub = _Canvas(cv.size)
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


def _merger_companion(cv, rng, pos, flux):
    """Draw the companion of a merger; returns the main galaxy's (shifted) position and flux."""
    x0, y0, re, q, angle = pos
    ratio = rng.uniform(0.3, 1.0)
    main_flux = flux / (1 + ratio)
    sep = re * rng.uniform(0.9, 2.0)
    psi = rng.uniform(0, 2 * np.pi)
    x2, y2 = x0 + sep * np.cos(psi) * 0.6, y0 + sep * np.sin(psi) * 0.6
    x0, y0 = x0 - sep * np.cos(psi) * 0.4, y0 - sep * np.sin(psi) * 0.4
    re2 = re * rng.uniform(0.5, 0.9)
    smooth = rng.random() < 0.5
    pos2 = (x2, y2, re2, rng.uniform(0.5 if smooth else 0.4, 1), rng.uniform(0, 180))
    disturb2 = (rng.uniform(0.1, 0.3), rng.uniform(0, 6.3))
    if smooth:
        _render_smooth(cv, rng, pos2, ratio * main_flux, disturb2)
    else:
        shape = ("moderate", "no", 2, "loose")
        _render_disk(cv, rng, pos2, ratio * main_flux, shape, 0.4, disturb=disturb2)
    xm, ym = (x0 + x2) / 2, (y0 + y2) / 2  # a shared, disturbed envelope
    xr, yr = _frame(cv, xm, ym, np.degrees(psi))
    cv.add(_sersic(xr, yr, sep * 1.2, 1.0, 0.6), 0.15 * flux, _COL_DISK)
    return (x0, y0, re, q, angle), main_flux


def _lens(cv, rng, x0, y0, re, flux, point_sources):
    """A lensed arc around the galaxy and, often, its counter-image."""
    radius = re * rng.uniform(1.4, 2.4)
    th0 = rng.uniform(0, 2 * np.pi)
    span = rng.uniform(0.5, 1.1)
    th = th0 + np.linspace(-span, span, 24)
    w = np.full(24, flux * rng.uniform(0.05, 0.11) / 24)
    _arc(cv, x0, y0, radius, th, np.full(24, 0.55), w, _COL_YOUNG)
    if rng.random() < 0.6:
        r2 = radius * rng.uniform(0.6, 0.9)
        xc, yc = x0 + r2 * np.cos(th0 + np.pi), y0 + r2 * np.sin(th0 + np.pi)
        point_sources.append((xc, yc, flux * 0.02, _COL_YOUNG))


def _tails(cv, rng, x0, y0, re, flux):
    """Faint curved tidal tails or plumes leaving the galaxy."""
    n_tails = int(rng.integers(1, 3))
    psi0 = rng.uniform(0, 2 * np.pi)
    sign = rng.choice([-1.0, 1.0])
    for k in range(n_tails):
        psi = psi0 + np.pi * k + rng.normal(0, 0.3)
        t = np.linspace(0.0, 1.0, 28)
        length = rng.uniform(2.5, 4.5)
        rr = re * (0.9 + length * t)
        th = psi + sign * rng.uniform(0.7, 1.6) * t
        sig = (0.6 + 1.2 * t) * max(0.6, re / 5)
        w = flux * rng.uniform(0.07, 0.14) / len(t) * (1.0 - 0.5 * t)
        _arc(cv, x0, y0, rr, th, sig, w, _COL_DISK)


def _shells(cv, rng, x0, y0, re, flux):
    """Concentric partial shells (a smooth galaxy that swallowed a companion)."""
    psi = rng.uniform(0, 2 * np.pi)
    for k in range(int(rng.integers(2, 4))):
        rad = re * (1.6 + 1.1 * k) * rng.uniform(0.9, 1.1)
        th = psi + (np.pi if k % 2 else 0) + np.linspace(-0.9, 0.9, 24)
        w = np.full(len(th), flux * 0.025 / len(th))
        _arc(cv, x0, y0, rad, th, np.full(len(th), max(0.6, re / 6)), w, _COL_OLD)


def _overlapping(cv, rng, x0, y0, re, flux, point_sources):
    """A foreground star or an unrelated galaxy overlapping this one."""
    sep = re * rng.uniform(0.5, 1.6)
    psi = rng.uniform(0, 2 * np.pi)
    xo, yo = x0 + sep * np.cos(psi), y0 + sep * np.sin(psi)
    if rng.random() < 0.6:
        col = rng.choice(_STAR_COLOURS)
        point_sources.append((xo, yo, flux * rng.uniform(0.3, 2.5), col))
    else:
        xr, yr = _frame(cv, xo, yo, rng.uniform(0, 180))
        prof = _sersic(xr, yr, re * rng.uniform(0.3, 0.7), rng.uniform(1, 4), rng.uniform(0.3, 1))
        col = _COL_OLD if rng.random() < 0.5 else 0.5 * (_COL_DISK + _COL_YOUNG)
        cv.add(prof, flux * rng.uniform(0.2, 0.7), col)


def _artifact(cv, rng, flux, psf):
    """Satellite trail, bright-star ghost, or a bad-data stripe (the 'artifact' answer)."""
    kind = rng.choice(["trail", "ghost", "stripe", "star-spikes"])
    if rng.random() < 0.5:  # sometimes a faint galaxy hides behind the artifact
        xr, yr = _frame(cv, rng.normal(0, 2), rng.normal(0, 2), rng.uniform(0, 180))
        cv.add(_sersic(xr, yr, rng.uniform(2, 5), 2.0, rng.uniform(0.5, 1)), flux * 0.3, _COL_DISK)
    if kind == "trail":
        xr, yr = _frame(cv, rng.normal(0, 6), rng.normal(0, 6), rng.uniform(0, 180))
        width = rng.uniform(0.4, 1.2)
        col = [[1.0, 1.0, 1.0], [1.4, 0.3, 0.2], [0.2, 1.3, 0.3], [0.3, 0.4, 1.5]]
        col = np.array(rng.choice(col)).astype(np.float32)
        cv.add_sb(rng.uniform(60, 300) * np.exp(-(yr**2) / (2 * width**2)), col)
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
        cv.add_sb(rng.uniform(100, 400) * mask, np.eye(3, dtype=np.float32)[band])
    else:  # a saturated star with diffraction spikes and a bleed trail
        x0, y0 = rng.normal(0, 3, 2)
        _psf_star(cv, x0, y0, flux * rng.uniform(20, 60), psf * 1.3, _COL_DISK)
        xr, yr = _frame(cv, x0, y0, rng.uniform(0, 90))
        ax, ay = np.abs(xr), np.abs(yr)
        spikes = np.exp(-ay / 0.35) * np.exp(-ax / 14) + np.exp(-ax / 0.35) * np.exp(-ay / 14)
        cv.add_sb(rng.uniform(150, 450) * spikes, np.array([1.0, 1.0, 1.0], np.float32))


def _background(cv, rng, psf):
    """Faint stars and distant galaxies sprinkled over the field."""
    half = REF / 2
    for _ in range(int(rng.poisson(3.5))):
        x0, y0 = rng.uniform(-half, half, 2)
        mag = 22.0 - 3.5 * rng.random() ** 1.5
        col = np.array([rng.uniform(0.7, 1.4), 1.0, rng.uniform(0.6, 1.3)], np.float32)
        if rng.random() < 0.45:
            _psf_star(cv, x0, y0, _flux(mag), psf, col)
            continue
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


def render_galaxy(
    truth_row, size: int = 64, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Render one galaxy as a DECaLS-like g/r/z colour composite.

    Parameters
    ----------
    truth_row : a row of :func:`draw_truth` (pandas Series or dict).
    size : image side in pixels (16 to 1024); the field of view is fixed.
    rng : numpy Generator or int seed for what the truth leaves open (arms, knots, PSF, noise).

    Returns
    -------
    uint8 array ``(size, size, 3)``.
    """
    check_size(size)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)

    def value(key, default=None):
        try:
            return truth_row[key]
        except (KeyError, IndexError):
            if default is None:
                msg = f"render_galaxy: the truth row has no {key!r}; pass a row of draw_truth()."
                raise ValueError(msg) from None
            return default

    gtype = str(value("truth_type"))
    if gtype not in TYPES:
        raise ValueError(f"render_galaxy: unknown truth_type {gtype!r}; expected one of {TYPES}.")
    tags = {t: bool(value(f"tag_{t}", False)) for t in TAGS}
    re = float(value("truth_radius_px")) * REF / float(value("truth_image_size", size))
    q, angle, mag = (float(value(f"truth_{k}")) for k in ("axis_ratio", "angle_deg", "magnitude"))
    contrast = float(value("truth_contrast", 0.6))
    merging = str(value("truth_merging", "none"))

    cv = _Canvas(size)
    psf = rng.uniform(0.75, 1.1)  # Gaussian sigma of the seeing, reference pixels
    x0, y0 = rng.normal(0, 1.2, 2)
    flux = _flux(mag)
    strength = {"minor-disturbance": (0.06, 0.14), "major-disturbance": (0.18, 0.32)}.get(merging)
    disturb = (rng.uniform(*strength), rng.uniform(0, 2 * np.pi)) if strength else (0.0, 0.0)

    point_sources = []  # painted after the blur, already PSF-shaped
    if gtype == "star":
        point_sources.append((x0, y0, flux, rng.choice(_STAR_COLOURS)))
    elif gtype == "artifact":
        _artifact(cv, rng, flux, psf)
    else:
        pos, main_flux = (x0, y0, re, q, angle), flux
        if merging == "merger":  # two galaxies; the catalogue magnitude is the pair
            pos, main_flux = _merger_companion(cv, rng, pos, flux)
            disturb = (rng.uniform(0.1, 0.25), rng.uniform(0, 2 * np.pi))
            x0, y0 = pos[:2]
        if gtype == "smooth":  # diffuse smooth galaxies are just large and faint (the truth)
            _render_smooth(cv, rng, pos, main_flux, disturb)
            _smooth_extras(cv, rng, pos, main_flux, contrast, tags)
        elif gtype == "featured":
            shape = (str(value("truth_bulge")) or "moderate", str(value("truth_bar")) or "no")
            shape += (int(value("truth_arms")), str(value("truth_winding")) or "medium")
            _render_disk(cv, rng, pos, main_flux, shape, contrast, tags, disturb)
        else:
            edge_bulge = str(value("truth_edge_bulge")) or "none"
            _render_edge_on(cv, rng, pos, main_flux, edge_bulge, tags["dust-lane"], disturb)
        if tags["lens"]:
            _lens(cv, rng, x0, y0, re, flux, point_sources)
        if tags["tidal"]:
            if gtype == "smooth" and rng.random() < 0.5:
                _shells(cv, rng, x0, y0, re, main_flux)
            else:
                _tails(cv, rng, x0, y0, re, main_flux)
        if tags["overlapping"]:
            _overlapping(cv, rng, x0, y0, re, flux, point_sources)

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
