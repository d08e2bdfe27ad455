"""Notebook 05's simulated labelling run (``LabellingWidget.run_simulated``, 200 labels in
batches of 10 on the course sky) drawing only the last batch's cards against drawing every
batch's (the widget's behaviour until 2026-12-04), measured in the same run.

Both variants label the same galaxies in the same order (the same learner and seed), so the
label files they write are compared too. Variant ``every_batch`` is the widget with
``retrain`` always drawing its cards and its top gallery; the rounds alternate the variants and
the best of each is kept. Run outside a Jupyter kernel, so this leaves out the cost of sending
every new widget to a browser, which the notebook pays as well.

Usage::

    python benchmarks/bench_widget_simulation.py --json benchmarks/results/widget_simulation_<date>.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

VARIANTS = ("every_batch", "last_batch")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="course")
    p.add_argument("--n-labels", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--n-galaxies", type=int, default=None, help="sky size (default: the course's)")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    from galaxy_helpers import anomaly, labelling, representations, synthetic
    from galaxy_helpers.core import write_json

    class EveryBatch(labelling.LabellingWidget):
        def retrain(self, show: bool = True):
            return super().retrain(show=True)

    sky_size = {} if args.n_galaxies is None else {"n_galaxies": args.n_galaxies}
    sky = synthetic.make_sky(progress=False, **sky_size)
    table = representations.extract_representations(args.encoder, sky, progress=False)
    features = table.filter(like="feat_").to_numpy()
    scores = anomaly.get_researcher("merger hunter").score(sky)
    classes = {"every_batch": EveryBatch, "last_batch": labelling.LabellingWidget}

    def one(variant: str, folder: Path) -> tuple[float, list]:
        session = labelling.LabelSession(folder / f"{variant}.jsonl", user="bench", catalogue=sky)
        learner = anomaly.ActiveLearner(n_components=40, random_state=0)
        widget = classes[variant](session, sky, features, learner=learner, batch_size=10)
        t0 = time.perf_counter()
        widget.run_simulated(scores, n_labels=args.n_labels, progress=False)
        seconds = time.perf_counter() - t0
        return seconds, [(r.id_str, r.score) for r in session.records]

    best = dict.fromkeys(VARIANTS, float("inf"))
    labels = {}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            with tempfile.TemporaryDirectory() as tmp:
                seconds, labels[variant] = one(variant, Path(tmp))
            best[variant] = min(best[variant], seconds)
    result = {
        "encoder": args.encoder,
        "n_labels": args.n_labels,
        "rounds": args.rounds,
        "seconds": {v: round(s, 3) for v, s in best.items()},
        "speedup": round(best["every_batch"] / best["last_batch"], 2),
        "same_labels": labels["every_batch"] == labels["last_batch"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0 if result["same_labels"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
