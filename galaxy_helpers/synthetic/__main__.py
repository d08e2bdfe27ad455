"""Command line: ``python -m galaxy_helpers.synthetic make|montage`` (see ``--help``)."""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from . import SkyConfig, make_sky, montage_by_answer, montage_by_tag, sky_dir


def _save_small_png(fig, path: Path, dpi: int = 80) -> None:
    """Save a figure as a palette PNG (a few hundred kB instead of megabytes, for the README)."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    buf.seek(0)
    with Image.open(buf) as im:
        im = im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        im.save(path, optimize=True)


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    about = "Make the synthetic sky, or draw its montages for the README."
    parser = argparse.ArgumentParser("python -m galaxy_helpers.synthetic", description=about)
    sub = parser.add_subparsers(dest="command", required=True)
    mon = sub.add_parser("montage", help="render the per-answer and per-tag montages")
    gen = sub.add_parser("make", help="generate (or find in the cache) a sky; print its folder")
    for p in (mon, gen):
        p.add_argument("--n-galaxies", type=int, default=5000)
        p.add_argument("--image-size", type=int, default=64)
        p.add_argument("--seed", type=int, default=1)
    mon.add_argument("--out", default="docs/images", help="folder for synthetic_*.png")
    mon.add_argument("--per", type=int, default=6)
    mon.add_argument("--render-size", type=int, default=128, help="re-render at this size")
    args = parser.parse_args(argv)
    cfg = SkyConfig(n_galaxies=args.n_galaxies, image_size=args.image_size, seed=args.seed)
    t0 = time.perf_counter()
    catalogue = make_sky(cfg)
    took = time.perf_counter() - t0
    print(f"sky with {len(catalogue)} galaxies ready in {took:.1f} s: {sky_dir(cfg)}")
    if args.command == "montage":
        import matplotlib

        matplotlib.use("Agg")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rs = args.render_size or None
        for name, montage in (("answers", montage_by_answer), ("tags", montage_by_tag)):
            path = out / f"synthetic_{name}.png"
            _save_small_png(montage(catalogue, args.per, render_size=rs), path)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
