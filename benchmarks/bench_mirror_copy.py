"""A dataset copied from the mirror into an empty cache (``data.fetch``): each file through
pooch's fetch (a ``Pooch`` per file, its temporary file, checksum and rename: the code until
2026-12-04) against ``data._copy_verified`` (the same checks in one read), in the same run.

Both variants must leave the same bytes in the cache (compared by SHA-256). The rounds alternate
the variants; the best of each is kept.

Usage::

    GALAXY_DATA_MIRROR=../shared/data python benchmarks/bench_mirror_copy.py \\
        --json benchmarks/results/mirror_copy_<date>.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from unittest import mock

VARIANTS = ("pooch", "one_read")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="gz2_kaggle_subset")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    from galaxy_helpers import data
    from galaxy_helpers.core import write_json

    class MirrorCopy:  # the pooch downloader the mirror used until 2026-12-04
        def __init__(self, entry, source):
            self.entry, self.source, self.origin = entry, source, f"mirror file {source}"

        def __call__(self, url, output_file, store):
            shutil.copyfile(self.source, output_file)

    def through_pooch(entry, source, final):
        return data._retrieve(entry, final, MirrorCopy(entry, source))

    def fingerprint(folder: Path) -> str:
        h = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".json"):
            h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
        return h.hexdigest()

    manifest = data.load_manifest(args.dataset)
    best, prints = dict.fromkeys(VARIANTS, float("inf")), {}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            with tempfile.TemporaryDirectory() as tmp:
                patch = mock.patch.object(data, "_copy_verified", through_pooch)
                with patch if variant == "pooch" else mock.patch.dict({}):
                    t0 = time.perf_counter()
                    folder = data.fetch(manifest, cache_dir=tmp, progress=False)
                    best[variant] = min(best[variant], time.perf_counter() - t0)
                prints[variant] = fingerprint(folder)
    result = {
        "dataset": args.dataset,
        "files": len(manifest.files),
        "rounds": args.rounds,
        "seconds": {v: round(s, 3) for v, s in best.items()},
        "speedup": round(best["pooch"] / best["one_read"], 2),
        "same_files": prints["pooch"] == prints["one_read"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0 if result["same_files"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
