"""Do the course's tools work on real galaxies? Every real-galaxy number, measured in one run.

For each encoder (the course checkpoint, the quick model, raw-pixel PCA and random weights,
all in the same run, all reading images with the course checkpoint's framing) this prints:

- Galaxy Zoo 2 anomalies (``gz2_kaggle_subset``, interesting = odd > 0.9): the paper's
  experiment (simulated researcher round(5 x odd), 10 random labels then batches of 10 by
  expected improvement to 200, labelled galaxies first, mean of 5 repeats): precision@50 and
  average precision;
- Galaxy Zoo 2 similarity: precision@10 from each ring / merger / irregular galaxy alone
  (standardised PCA-10, Euclidean), and their mean;
- DECaLS rings (``gz_decals_rings``): frozen encoder + logistic regression, balanced accuracy
  with 10 / 30 / 100 labels (20 repeats);
- held-out Galaxy Zoo 2 galaxies (the manifest's ``test`` split; trained models only):
  vote-fraction error below the mean baseline and confident accuracy on smooth-or-featured
  and edge-on.

Run from the repository root (needs the data, e.g. ``GALAXY_DATA_MIRROR=../shared/data``)::

    python benchmarks/bench_real_transfer.py                    # all four encoders
    python benchmarks/bench_real_transfer.py --encoders course pixels --repeats 2
    python benchmarks/bench_real_transfer.py --json out.json

``--gz2-crop`` / ``--rings-crop`` override the surveys' framing (the catalogues' ``crop``
column) to measure its effect.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIMILARITY_TAGS = ("ring", "merger", "irregular")


def measure(encoder, gz2, rings, args, cache) -> dict:
    from galaxy_helpers import transfer

    t0 = time.perf_counter()
    row: dict = {"encoder": encoder}
    X = transfer.encoder_features(encoder, gz2, reference=args.reference, cache=cache)
    anomalies = transfer.anomaly_search(X, gz2["odd"], repeats=args.repeats, seed=args.seed)
    row["gz2_anomaly_precision_at_50"] = anomalies["precision_at_50"]
    row["gz2_anomaly_average_precision"] = anomalies["average_precision"]
    row["gz2_anomaly_predicted_average_precision"] = anomalies["predicted_average_precision"]
    tags = transfer.tag_precision(X, gz2, SIMILARITY_TAGS)
    for tag in SIMILARITY_TAGS:
        row[f"gz2_p10_{tag}"] = tags[tag]
        row[f"gz2_p10_{tag}_chance"] = tags[f"{tag}_chance"]
    row["gz2_p10_mean"] = sum(tags[t] for t in SIMILARITY_TAGS) / len(SIMILARITY_TAGS)
    R = transfer.encoder_features(encoder, rings, reference=args.reference, cache=cache)
    probe = transfer.linear_probe(R, rings["ring"], repeats=args.ring_repeats, seed=args.seed)
    for budget, acc in probe.items():
        row[f"rings_frozen_{budget}"] = acc
    if encoder not in ("pixels", "random"):
        for key, value in transfer.held_out_votes(encoder, gz2).items():
            row[f"gz2_test_{key}"] = value
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--encoders", nargs="+", default=["course", "synthetic", "quick", "pixels", "random"]
    )
    parser.add_argument("--reference", default="course", help="framing for pixels / random")
    parser.add_argument("--repeats", type=int, default=5, help="anomaly repeats")
    parser.add_argument("--ring-repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gz2-crop", type=float, default=None)
    parser.add_argument("--rings-crop", type=float, default=None)
    parser.add_argument(
        "--limit", type=int, default=None, help="first N galaxies of each set (smoke tests)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="write the README table")
    args = parser.parse_args(argv)

    import pandas as pd

    from galaxy_helpers import data

    gz2 = data.load_dataset("gz2_kaggle_subset", progress=False)
    rings = data.load_dataset("gz_decals_rings", progress=False)
    if args.limit:
        gz2 = gz2.iloc[: args.limit].reset_index(drop=True)
        rings = rings.groupby("ring").head(args.limit // 2).reset_index(drop=True)
    if args.gz2_crop is not None:
        gz2["crop"] = args.gz2_crop
    if args.rings_crop is not None:
        rings["crop"] = args.rings_crop
    cache: dict = {}
    rows = []
    for encoder in args.encoders:
        rows.append(measure(encoder, gz2, rings, args, cache))
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows).set_index("encoder").T
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
        print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown_table(rows))
    return 0


#: (row label, metric key, target) of the README's real-galaxy table, in order.
TABLE_ROWS = [
    ("GZ2 anomalies (odd > 0.9): precision@50", "gz2_anomaly_precision_at_50", ">= 0.80"),
    ("GZ2 anomalies: average precision", "gz2_anomaly_average_precision", ">= 0.40"),
    ("GZ2 similarity: precision@10, ring", "gz2_p10_ring", ""),
    ("GZ2 similarity: precision@10, merger", "gz2_p10_merger", ""),
    ("GZ2 similarity: precision@10, irregular", "gz2_p10_irregular", ""),
    ("GZ2 similarity: mean precision@10", "gz2_p10_mean", ">= 0.25"),
    ("DECaLS rings, frozen encoder: 10 labels", "rings_frozen_10", ""),
    ("DECaLS rings, frozen encoder: 30 labels", "rings_frozen_30", ">= 0.75"),
    ("DECaLS rings, frozen encoder: 100 labels", "rings_frozen_100", ">= 0.80"),
    (
        "held-out GZ2: vote-fraction error below the mean baseline",
        "gz2_test_mae_reduction",
        ">= 0.35",
    ),
    (
        "held-out GZ2: confident accuracy, smooth-or-featured",
        "gz2_test_accuracy_smooth_or_featured",
        ">= 0.90",
    ),
    ("held-out GZ2: confident accuracy, edge-on", "gz2_test_accuracy_edge_on", ">= 0.90"),
]


def markdown_table(rows) -> str:
    """The measured rows as the README's markdown table (one column per encoder)."""
    names = [r["encoder"] for r in rows]
    lines = ["| real galaxies | " + " | ".join(names) + " | target |"]
    lines.append("|---" * (len(names) + 2) + "|")
    for label, key, target in TABLE_ROWS:
        cells = [f"{r[key]:.3f}" if isinstance(r.get(key), float) else "" for r in rows]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
