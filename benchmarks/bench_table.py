"""The README's benchmark table, measured in one run and rendered from the results it saves.

Runs the benchmark scripts one after the other, each in a process of its own (so one's torch
threads, memory or worker processes never touch the next), with the commands the README's table
names (``bench_search.py`` twice). Each writes ``<out>/<run>_<date>.json``; this script keeps
what it saw of each run (command, exit code, load average at its start, seconds) and the
machine's facts in ``<out>/benchmarks_<date>.json``, and writes ``<out>/benchmarks_<date>.md``:
the table, every number in it formatted from those files, and the conditions under it. The
README quotes that file verbatim (``tests/test_benchmark_table.py``).

Real galaxies come from the cache or the data mirror (``$GALAXY_DATA_MIRROR``, passed on to every
benchmark as an absolute path): without the Galaxy Zoo 2 subset, ``decode_once`` measures the
synthetic sky and ``parallel_repeats`` the sky alone, and their rows say so; ``mirror_copy`` is
not run without its dataset in the mirror, so the table is not written.
Not in the table: ``bench_compile.py`` (a cold Inductor compile alone takes minutes),
``bench_gpu_profile.py`` (GPU only), and ``bench_margins.py``, ``bench_course.py`` and
``bench_real_transfer.py`` (science margins, course budgets and real-galaxy results, not speed).

Usage::

    GALAXY_DATA_MIRROR=../shared/data python benchmarks/bench_table.py   # the real run, into
                                                          # benchmarks/results
    python benchmarks/bench_table.py --only search_all    # rerun one; the table is re-rendered
                                                          # from every result of that date
    python benchmarks/bench_table.py --render --date 2026-12-05   # re-render only
    python benchmarks/bench_table.py --smoke              # tiny sizes, seconds, a scratch folder

Exits 1 when a benchmark failed (a budget benchmark over its budget is a result, not a failure)
or the table misses a result.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
RESULTS = BENCHMARKS / "results"


class Run(NamedTuple):
    """One benchmark command of the table (a NamedTuple: the tests load this file unregistered,
    where a dataclass cannot resolve its annotations)."""

    name: str  # results file stem: <name>_<date>.json
    script: str
    args: str  # the README's command line after the script
    smoke: str  # tiny sizes: seconds, measures nothing
    budget_exit: bool = False  # exits 1 when over its budget, after writing its result
    mirror: bool = False  # copies its --dataset from the data mirror: not run when it is not there

    def argv(self, smoke: bool) -> list[str]:
        return (self.smoke if smoke else self.args).split()

    def dataset(self, smoke: bool) -> str:
        argv = self.argv(smoke)
        return argv[argv.index("--dataset") + 1]


RUNS = (
    Run(
        "training",
        "bench_training.py",
        "--steps 10 --rounds 3 --n-galaxies 1000 --threads 1",
        "--steps 3 --rounds 1 --n-galaxies 300 --image-size 32 --batch-size 8 --threads 1",
    ),
    Run("extraction", "bench_extraction.py", "--n 1000", "--n 64 --batch-size 32 --repeats 1"),
    Run(
        "search_10d",
        "bench_search.py",
        "--sizes 1000000 --dims 10 --queries 50",
        "--sizes 5000 --dims 10 --queries 5",
    ),
    Run("search_all", "bench_search.py", "--queries 20", "--sizes 1000 5000 --queries 5"),
    Run(
        "anomaly",
        "bench_anomaly.py",
        "",
        "--n 2000 --dim 64 --labels 40 --repeats 2",
        budget_exit=True,
    ),
    Run("synthetic", "bench_synthetic.py", "", "--n 200 --size 32 --workers 1", budget_exit=True),
    Run(
        "channels_last",
        "bench_channels_last.py",
        "",
        "--n-galaxies 300 --n 64 --steps 2 --batch 8 --rounds 1",
    ),
    Run(
        "optimizer",
        "bench_optimizer.py",
        "--rounds 5",
        "--image-size 16 --batch-size 8 --steps 2 --rounds 1 --threads 1",
    ),
    Run(
        "widget_simulation",
        "bench_widget_simulation.py",
        "",
        "--n-galaxies 300 --n-labels 30 --rounds 1",
    ),
    Run(
        "decode_once", "bench_decode_once.py", "", "--dataset gz_decals_examples --n 32 --rounds 1"
    ),
    Run(
        "parallel_repeats",
        "bench_parallel_repeats.py",
        "",
        "--n-galaxies 300 --n-labels 20 --repeats 2 --rounds 1 --no-gz2",
    ),
    Run(
        "mirror_copy",
        "bench_mirror_copy.py",
        "--dataset gz2_kaggle_subset --rounds 4",
        "--dataset gz_decals_examples --rounds 1",
        mirror=True,
    ),
)
RUN_NAMES = tuple(r.name for r in RUNS)
HEADER = "| what | command | ours | baseline, same run |\n|---|---|---|---|\n"


class MissingResults(Exception):
    """The table cannot be rendered: some of its results are missing or failed."""


# --- formatting: every number comes from a result file ------------------------------------
def _ms(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _x(v: float) -> str:
    return f"{v:.0f}x" if v >= 10 else f"{v:.1f}x"


def _small(v: float) -> str:
    return f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def _training(r: dict) -> tuple[str, str, str]:
    what = (
        f"training loop ({r['architecture']}, {r['image_size']} px, batch {r['batch_size']}, "
        f"{_plural(r['threads'], 'torch thread')}, {r['precision']})"
    )
    ratio, target = r["ratio"], r["target_ratio"]
    if ratio >= 1:
        verdict = "data loading, augmentation and the loss cost nothing measurable"
    else:
        verdict = "within its target" if ratio >= target else "**below its target**"
    ours = (
        f"{r['ours_images_per_s']:,.1f} img/s, {ratio:.2f}x the bare loop "
        f"(target {target:g}x): {verdict}"
    )
    base = (
        f"bare PyTorch loop on one in-memory batch: {r['bare_images_per_s']:,.1f} img/s "
        f"(each the {_best_of(r['rounds'])} of {r['steps']} steps)"
    )
    return what, ours, base


def _extraction(r: dict) -> tuple[str, str, str]:
    what = f"representation extraction from PNG files ({r['architecture']}, {r['image_size']} px)"
    below = "" if r["ratio"] >= r["target_ratio"] else ", **below its target**"
    ours = (
        f"{r['from_files_img_per_s']:,.1f} img/s, {r['ratio']:.0%} of the bare forward pass "
        f"(target {r['target_ratio']:.0%}{below}); {_plural(r['n'], 'galaxy', 'galaxies')}, "
        f"batch {r['batch_size']}, {_plural(r['torch_threads'], 'torch thread')}, "
        f"{r.get('precision', 'float32')}, best of {r['repeats']}"
    )
    base = f"bare forward pass on in-memory tensors: {r['bare_forward_img_per_s']:,.1f} img/s"
    return what, ours, base


def _pick(records: list[dict], largest_dims: bool) -> tuple[dict, dict]:
    """{method: record} at the run's largest size and its smallest (or largest) dims."""
    n = max(r["n"] for r in records)
    dims = [r["dims"] for r in records if r["n"] == n]
    d = max(dims) if largest_dims else min(dims)
    chosen = [r for r in records if r["n"] == n and r["dims"] == d]
    return {r["method"]: r for r in chosen}, chosen[0]


def _same(r: dict) -> str:
    return "exact" if r["same_neighbours"] == 1 else f"{r['same_neighbours']:.1%} same neighbours"


def _search_10d(records: list[dict]) -> tuple[str, str, str]:
    by, r = _pick(records, largest_dims=False)
    kd, ball = by["SimilarityIndex kdtree"], by["sklearn ball_tree"]
    what = f"one search query, {r['n']:,} galaxies x {r['dims']} dims, k = {r['k']}"
    target = kd["target_ms_per_query"]
    over = "" if target is None or kd["ms_per_query"] <= target else ", **over it**"
    ours = (
        f"{_ms(kd['ms_per_query'])} ms, {_same(kd)} (k-d tree, "
        f"{_x(kd['speedup_over_ball_tree'])} the ball tree's speed; target {target:g} ms{over})"
    )
    base = f"scikit-learn ball tree: {_ms(ball['ms_per_query'])} ms"
    return what, ours, base


def _search_all(records: list[dict]) -> tuple[str, str, str]:
    by, r = _pick(records, largest_dims=True)
    what = f"one search query, {r['n']:,} x {r['dims']} dims"
    faiss, numpy = by.get("SimilarityIndex faiss"), by["SimilarityIndex numpy"]
    parts = []
    if faiss:
        parts.append(
            f"{_ms(faiss['ms_per_query'])} ms with the optional `faiss-cpu` ({_same(faiss)}, "
            f"{_x(faiss['speedup_over_ball_tree'])} the ball tree's speed)"
        )
    fallback = "its fallback" if faiss else "the fallback: `faiss-cpu` was not installed"
    parts.append(
        f"{_ms(numpy['ms_per_query'])} ms with NumPy brute force ({fallback}; {_same(numpy)}, "
        f"{_x(numpy['speedup_over_ball_tree'])} the ball tree's speed)"
    )
    base = f"ball tree: {_ms(by['sklearn ball_tree']['ms_per_query'])} ms"
    return what, "; ".join(parts), base


def _anomaly(r: dict) -> tuple[str, str, str]:
    what = (
        f"anomaly step: retrain on {r['n_labels']:,} labels, rescore "
        f"{r['n_galaxies']:,} galaxies, choose the next batch"
    )
    steps, forest = r["gp_step_all_s"], r["isolation_forest_score_all_s"]
    over = "" if r["within_budget"] else ", **over it**"
    ours = (
        f"median {r['gp_step_median_s']:.2f} s over {_plural(len(steps), 'step')} "
        f"({min(steps):.2f} to {max(steps):.2f} s; target {r['budget_s']:g} s{over}), "
        f"{r['gp_step_over_isolation_forest']:.2f}x the forest's scoring time"
    )
    base = (
        f"isolation-forest scoring of the same galaxies: median "
        f"{r['isolation_forest_score_median_s']:.2f} s ({min(forest):.2f} to "
        f"{max(forest):.2f} s); Astronomaly's fold-in step: "
        f"{r['astronomaly_step_median_s']:.2f} s"
    )
    return what, ours, base


def _synthetic(r: dict) -> tuple[str, str, str]:
    over = "" if r["within_budget"] else ", **over it**"
    ours = (
        f"{r['n_galaxies']:,} galaxies at {r['image_size']} px in {r['make_sky_wall_s']:.1f} s "
        f"with {_plural(r['workers'], 'worker process', 'worker processes')} "
        f"(target {r['budget_s']:g} s{over}); {r['wall_over_ideal']:.2f}x the "
        f"{r['ideal_wall_s_on_idle_machine']:.1f} s it would take with the cores to itself"
    )
    base = (
        f"{r['baseline_galaxies']:,} galaxies rendered in one process: "
        f"{_small(r['baseline_render_and_png_cpu_ms_per_galaxy'])} ms of CPU each with its "
        f"PNG file ({_small(r['baseline_render_cpu_ms_per_galaxy'])} ms rendering alone)"
    )
    return "synthetic sky generation", ours, base


def _best_of(rounds: int) -> str:
    return f"best of {_plural(rounds, 'alternated round')}"


def _same_or_flag(same: bool, what: str, differ: str | None = None) -> str:
    """A benchmark's own check that both variants gave the same output, flagged when not."""
    return f"the same {what} either way" if same else f"**different {differ or what}**"


def _s(v: float) -> str:
    return f"{v:,.2f}"


def _faster(ratio: float, baseline: str) -> str:
    """``ratio``, the baseline's time over ours: a speed-up, flagged when it is none."""
    return f"{ratio:.2f}x {baseline}" + ("" if ratio >= 1 else ", **slower**")


def _time_of(ratio: float, baseline: str) -> str:
    """``ratio``, our time over the baseline's, flagged when over 1."""
    return f"{ratio:.2f}x {baseline}" + ("" if ratio <= 1 else ", **slower**")


def _channels_last(r: dict) -> tuple[str, str, str]:
    n = r["numerics"]
    what = (
        f"channels-last encoder input ({r['encoder']} checkpoint, {r['image_size']} px, "
        f"{_plural(r['torch_threads'], 'torch thread')}, {n['precision']})"
    )
    nhwc, nchw = r["variants"]["channels_last"], r["variants"]["nchw"]
    encode, finetune = (
        _faster(r[k], "NCHW's speed") for k in ("speedup_encode", "speedup_finetune")
    )
    ours = (
        f"encoding {nhwc['encode_img_per_s']:,.1f} img/s ({encode}), a finetuning step "
        f"{nhwc['finetune_img_per_s']:,.1f} img/s ({finetune}); "
        f"each the {_best_of(r['rounds'])}"
    )
    base = (
        f"contiguous NCHW input, same images: encoding {nchw['encode_img_per_s']:,.1f} img/s, "
        f"finetuning {nchw['finetune_img_per_s']:,.1f} img/s"
    )
    return what, ours, base


def _optimizer(r: dict) -> tuple[str, str, str]:
    c, n = r["config"], r["numerics"]
    what = (
        f"AdamW step ({c['architecture']}, {c['image_size']} px, batch {c['batch_size']}, "
        f"{_plural(n['torch_threads'], 'torch thread')}, {n['precision']})"
    )
    fused, default = r["ms"]["fused"], r["ms"]["default"]
    kernel = (
        "fused kernel (`training.make_adamw`)"
        if c["fused_kernel_used"]
        else "`training.make_adamw`, **the fused kernel was not available**"
    )
    optimizer, step = (
        _time_of(r[k], "the default's time")
        for k in ("fused_optimizer_over_default", "fused_step_over_default")
    )
    ours = (
        f"{kernel}: optimizer {_ms(fused['optimizer'])} ms ({optimizer}), whole step "
        f"{step} (forward + "
        f"backward {_ms(fused['forward_backward'])} ms); {_best_of(c['rounds'])} of "
        f"{c['steps']} steps"
    )
    base = (
        f"PyTorch's default AdamW: optimizer {_ms(default['optimizer'])} ms, forward + "
        f"backward {_ms(default['forward_backward'])} ms"
    )
    return what, ours, base


def _widget_simulation(r: dict) -> tuple[str, str, str]:
    what = (
        f"simulated labelling, {r['n_labels']:,} labels (`LabellingWidget.run_simulated`, "
        f"{r['encoder']} checkpoint's features)"
    )
    s = r["seconds"]
    same = _same_or_flag(r["same_labels"], "labels")
    speed = _faster(r["speedup"], "drawing every batch's speed")
    ours = (
        f"the last batch's cards only: {_s(s['last_batch'])} s ({speed}), {same}; "
        f"{_best_of(r['rounds'])}, outside a Jupyter kernel"
    )
    base = f"every batch's cards and top gallery drawn: {_s(s['every_batch'])} s"
    return what, ours, base


#: What a result without real galaxies says about it (the table's commands always ask for some).
NO_GZ2 = "neither cached nor in a data mirror (`GALAXY_DATA_MIRROR`)"


def _decode_once(r: dict) -> tuple[str, str, str]:
    c = r["config"]
    if c["dataset"] == "synthetic":
        where = f"{c['galaxies']:,} galaxies of the synthetic sky: **no real galaxies, {NO_GZ2}**"
    else:
        where = f"{c['galaxies']:,} galaxies of `{c['dataset']}`"
    what = (
        f"one decode of a catalogue for the {c['encoder']} checkpoint's table and both "
        f"baselines ({where})"
    )
    once, again = r["seconds"]["once"], r["seconds"]["per_notebook"]
    total, baselines = (
        _time_of(r[k], "the time when decoded again")
        for k in ("once_over_per_notebook", "nb04_once_over_per_notebook")
    )
    ours = (
        f"pixels kept: {_s(once['total'])} s in all ({total}), the baselines "
        f"{_s(once['nb04_baselines'])} s ({baselines}); {_best_of(c['rounds'])}, fresh caches"
    )
    base = (
        f"decoded again for the baselines: {_s(again['total'])} s in all, the baselines "
        f"{_s(again['nb04_baselines'])} s (the checkpoint's table "
        f"{_s(again['nb03_extract'])} s, {_s(once['nb03_extract'])} s with pixels kept)"
    )
    return what, ours, base


def _parallel_repeats(r: dict) -> tuple[str, str, str]:
    what = (
        f"independent repeats in {_plural(r['workers'], 'worker process', 'worker processes')} "
        f"(`core.parallel_map`, {r['encoder']} checkpoint)"
    )
    s, speedup, same = r["seconds"], r["speedup"], r["same_tables"]
    one = "one process's speed"
    parts = [
        f"{name} {_s(s[name]['workers'])} s ({_faster(x, one)})" for name, x in speedup.items()
    ]
    differ = [name for name, ok in same.items() if not ok]
    text = "; ".join(parts) + (
        f"; **different tables: {', '.join(differ)}**" if differ else "; the same tables either way"
    )
    if not any("GZ2" in name for name in s):
        text += (
            "; Galaxy Zoo 2 workloads left out (`--no-gz2`)"
            if r.get("no_gz2")
            else f"; **no Galaxy Zoo 2 workloads: `gz2_kaggle_subset` {NO_GZ2}**"
        )
    ours = f"{text}; {_best_of(r['rounds'])}"
    base = "one after the other: " + "; ".join(
        f"{name} {_s(t['one_after_another'])} s" for name, t in s.items()
    )
    return what, ours, base


def _mirror_copy(r: dict) -> tuple[str, str, str]:
    what = (
        f"a dataset copied from the data mirror into an empty cache (`data.fetch`, "
        f"{_plural(r['files'], 'file')} of `{r['dataset']}`)"
    )
    s = r["seconds"]
    same = _same_or_flag(r["same_files"], "bytes", "files")
    speed = _faster(r["speedup"], "pooch's speed")
    ours = (
        f"one read per file (`data._copy_verified`): {_s(s['one_read'])} s ({speed}), {same}; "
        f"{_best_of(r['rounds'])}"
    )
    base = f"each file through pooch's fetch: {_s(s['pooch'])} s"
    return what, ours, base


#: (results file stem, cells of its row), in the table's order.
ROWS = (
    ("training", _training),
    ("extraction", _extraction),
    ("search_10d", _search_10d),
    ("search_all", _search_all),
    ("anomaly", _anomaly),
    ("synthetic", _synthetic),
    ("channels_last", _channels_last),
    ("optimizer", _optimizer),
    ("widget_simulation", _widget_simulation),
    ("decode_once", _decode_once),
    ("parallel_repeats", _parallel_repeats),
    ("mirror_copy", _mirror_copy),
)


def _shown(folder: Path) -> str:
    folder = Path(folder).resolve()
    try:
        return folder.relative_to(REPO).as_posix()
    except ValueError:
        return str(folder)


def markdown(results: dict, meta: dict, where: str, names=RUN_NAMES) -> str:
    """The table and the conditions it was measured in, from the results and this run's record
    (the rows of ``names``, in the table's order)."""
    date, runs, m = meta["date"], meta["runs"], meta["machine"]
    names = [n for n in RUN_NAMES if n in names]
    lines = [HEADER.rstrip("\n")]
    for name, cells in ROWS:
        if name not in names:
            continue
        what, ours, base = cells(results[name])
        lines.append(f"| {what} | `{runs[name]['command']}` | {ours} | {base} |")
    smoke = any(runs[name]["smoke"] for name in names)
    text = "\n".join(lines) + "\n\n"
    if smoke:
        text += (
            "**Smoke run at tiny sizes: these numbers say nothing about speed; only a run "
            "without `--smoke` is a measurement.**\n\n"
        )
    listed = ", ".join(f"`{n}`" for n in names)
    threads_env = ", ".join(f"{k}={v}" for k, v in m["thread_env"].items()) or (
        "no thread variables set"
    )
    text += (
        f"Measured on {date} (UTC) by `python benchmarks/bench_table.py"
        f"{' --smoke' if smoke else ''}`, one benchmark after the other, each in a process of "
        f"its own; every number in the table is read from `{where}/<name>_{date}.json` for "
        f"{listed}. Machine: {m['cpu_count']} CPUs ({m['cpu_model']}), Python {m['python']} on "
        f"{m['platform']}, torch {m['torch']} with {m['torch_threads']} threads by default "
        f"({threads_env}). Load average (1, 5, 15 min) when each started, and its wall time: "
    )
    text += "; ".join(
        f"{name} {', '.join(f'{x:.2f}' for x in runs[name]['load_average_start'])} "
        f"({runs[name]['seconds']:.0f} s)"
        for name in names
    )
    return text + ".\n"


def render(folder: Path, date: str, names=RUN_NAMES) -> str:
    """The markdown of ``<folder>/benchmarks_<date>.json`` and the results it names: every run of
    the table (or only ``names``, to re-render a table of fewer rows)."""
    folder = Path(folder)
    meta_path = folder / f"benchmarks_{date}.json"
    if not meta_path.exists():
        raise MissingResults(f"no {meta_path}")
    meta = json.loads(meta_path.read_text())
    missing = [
        n
        for n in names
        if not meta["runs"].get(n, {}).get("ok") or not (folder / f"{n}_{date}.json").exists()
    ]
    if missing:
        why = "".join(
            f"; {n}: {meta['runs'][n]['not_run']}"
            for n in missing
            if meta["runs"].get(n, {}).get("not_run")
        )
        raise MissingResults(f"no successful {', '.join(missing)} run of {date} in {folder}{why}")
    results = {n: json.loads((folder / f"{n}_{date}.json").read_text()) for n in names}
    return markdown(results, meta, _shown(folder), names)


# --- running ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown model"


def machine_facts() -> dict:
    import torch

    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "thread_env": {k: os.environ[k] for k in names if os.environ.get(k)},
    }


def not_in_mirror(run: Run, smoke: bool, env: dict) -> str:
    """Why ``run`` cannot run (its dataset is not in the data mirror of ``env``), else ''."""
    if not run.mirror:
        return ""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from galaxy_helpers import data

    dataset, mirror = run.dataset(smoke), env.get(data.MIRROR_ENV, "").strip()
    with tempfile.TemporaryDirectory(prefix="bench_table_empty_") as empty:  # nothing cached
        if mirror and data.dataset_available(dataset, cache_dir=empty, mirror=mirror):
            return ""
    where = f"the mirror {mirror} lacks it" if mirror else f"{data.MIRROR_ENV} is not set"
    return (
        f"it copies {dataset} from the data mirror, and {where}: set {data.MIRROR_ENV} to a "
        f"folder holding {dataset}/ (e.g. {data.MIRROR_ENV}=../shared/data) and run it again"
    )


def bench_env(cache: str | None) -> dict:
    """The benchmarks' environment: this one, the repository importable, the data mirror as an
    absolute path (they run in the repository root), and ``cache`` as their cache if given."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if mirror := env.get("GALAXY_DATA_MIRROR", "").strip():
        env["GALAXY_DATA_MIRROR"] = str(Path(mirror).expanduser().resolve())
    if cache is not None:
        env["GALAXY_HELPERS_CACHE"] = cache
    return env


def run_one(run: Run, folder: Path, date: str, smoke: bool, env: dict) -> dict:
    """Run one benchmark in its own process; its record for ``benchmarks_<date>.json``."""
    out = folder / f"{run.name}_{date}.json"
    out.unlink(missing_ok=True)  # a failed run must not leave an older result in the table
    args = run.argv(smoke)
    command = shlex.join(["python", f"benchmarks/{run.script}", *args])
    print(f"\n=== {run.name}: {command}", flush=True)
    load = [round(x, 2) for x in os.getloadavg()]
    if why := not_in_mirror(run, smoke, env):
        print(f"=== {run.name} NOT RUN: {why}", file=sys.stderr, flush=True)
        return {
            "command": command,
            "smoke": smoke,
            "exit_code": None,
            "ok": False,
            "not_run": why,
            "load_average_start": load,
            "seconds": 0.0,
        }
    t0 = time.perf_counter()
    cmd = [sys.executable, str(BENCHMARKS / run.script), *args, "--json", str(out)]
    rc = subprocess.call(cmd, cwd=REPO, env=env)
    seconds = round(time.perf_counter() - t0, 1)
    ok = out.exists() and (rc == 0 or (rc == 1 and run.budget_exit))
    if not ok:
        out.unlink(missing_ok=True)
        print(f"=== {run.name} FAILED (exit code {rc})", file=sys.stderr, flush=True)
    return {
        "command": command,
        "smoke": smoke,
        "exit_code": rc,
        "ok": ok,
        "load_average_start": load,
        "seconds": seconds,
    }


def _date(text: str) -> str:
    return datetime.date.fromisoformat(text).isoformat()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    parser.add_argument("--date", type=_date, default=today, help="default: today (UTC)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: benchmarks/results (--smoke: a new temp folder)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks, not measures")
    parser.add_argument("--only", nargs="+", choices=RUN_NAMES, metavar="NAME",
                        help=f"run only these of {', '.join(RUN_NAMES)}")  # fmt: skip
    parser.add_argument("--render", action="store_true", help="run nothing, re-render the table")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="bench_table_smoke_")) if args.smoke else RESULTS
    if args.smoke and args.out.resolve() == RESULTS.resolve():
        parser.error("--smoke measures nothing: give it an --out other than benchmarks/results")
    folder = args.out
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / f"benchmarks_{args.date}.json"
    failed = []
    if not args.render:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"runs": {}}
        meta |= {"date": args.date, "machine": machine_facts()}
        with tempfile.TemporaryDirectory(prefix="bench_table_cache_") as cache:
            env = bench_env(cache if args.smoke else None)  # smoke: tiny skies of its own
            for run in RUNS:
                if args.only and run.name not in args.only:
                    continue
                meta["runs"][run.name] = record = run_one(run, folder, args.date, args.smoke, env)
                meta_path.write_text(json.dumps(meta, indent=1) + "\n")  # kept as it goes
                if not record["ok"]:
                    failed.append(run.name)
    try:
        text = render(folder, args.date)
    except MissingResults as err:
        print(f"\nno table written: {err}", file=sys.stderr)
        return 1
    md = folder / f"benchmarks_{args.date}.md"
    md.write_text(text)
    print(f"\n{text}\nwrote {md}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
