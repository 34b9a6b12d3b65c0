"""Benchmark: evaluate.py's folder evaluation, per metric profile, in one process and in worker
processes, on 480x640 pairs, and what that projects for MSRS's test set (361 pairs of 480x640).

    python -m benchmarks.bench_evaluate_folder [--pairs 12] [--profiles vifb,mefb,liu,tang]
                                               [--workers 1,2] [--kernels numpy,compiled] [--md FILE]

The pairs are 480x640 crops of the three TNO pairs in tests/fixtures at several offsets, each
with the rounded-down mean as its fused image, written as PNG to a temporary folder and read back
by the folder runner as evaluate.py reads them. Times are wall-clock seconds of
``metrics.folder.evaluate_profiles`` (reading, every metric, the worker processes' start-up
included): each profile alone, their total ('all'), and, with several profiles, all of them in
one pass ('all, one pass', as ``evaluate.py --profile vifb,mefb,liu,tang``, which computes a
metric two profiles share once). The first run of each profile (the first ``--kernels``, the
first ``--workers``) is the reference its speed-ups are measured against, in the same run; the
one-pass rows are measured against the first run's total. ``--kernels`` sets
DDFM_METRIC_KERNELS for each run (the worker processes inherit it); ``compiled`` (numba) is
compiled, or its cache loaded, before the timing.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from metrics import toolkit_metrics as tm
from metrics.folder import default_workers, evaluate_profiles
from util.fileio import write_text_atomic
from util.images import read_gray
from util.tables import text_table

REPO = Path(__file__).resolve().parents[1]
H, W = 480, 640
MSRS_PAIRS = 361
ONE_PASS = "all, one pass"  # the row of the profiles measured together (evaluate.py --profile a,b,...)


def make_pairs(root: Path, count: int) -> Path:
    """``count`` 480x640 pairs under root/input/{ir,vi} and their means under root/fused."""
    data = REPO / "tests" / "fixtures" / "data" / "TNO"
    stems = sorted(p.stem for p in (data / "ir").glob("*.png"))
    offsets = [(dy, dx) for dy in (0, 48, 96) for dx in (0, 64, 128)]
    for k in range(count):
        stem, (dy, dx) = stems[k % len(stems)], offsets[(k // len(stems)) % len(offsets)]
        ir = read_gray(data / "ir" / f"{stem}.png")[dy:dy + H, dx:dx + W]
        vi = read_gray(data / "vi" / f"{stem}.png")[dy:dy + H, dx:dx + W]
        fused = np.floor((ir.astype(np.float64) + vi) / 2.0).astype(np.uint8)
        for folder, img in (("input/ir", ir), ("input/vi", vi), ("fused", fused)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(root / folder / f"pair{k:03d}.png")
    return root


def time_profiles(root: Path, profiles: list, workers: int, kernels: str) -> float:
    """Wall-clock seconds of one pass of ``profiles`` (one profile, or several measured
    together) over the pairs."""
    os.environ[tm.KERNELS_VARIABLE] = kernels
    tm.warm_compiled_kernels()  # a one-line error for compiled without numba
    start = time.perf_counter()
    by_profile = evaluate_profiles(root / "input", ["ir", "vi"], [root / "fused"], profiles,
                                   warn=lambda msg: None, quiet=True, workers=workers)
    elapsed = time.perf_counter() - start
    for name, results in zip(profiles, by_profile):
        if not results[0].per_image or results[0].skipped:
            raise SystemExit(f"{name}: pairs were skipped: {results[0].skipped}")
    return elapsed


def build_rows(times: dict, pairs: int, runs: list) -> list:
    """One row per profile and run (kernels, workers), then their totals ('all', separate
    runs) and, when timed, the profiles measured together in one pass; the speed-up is against
    the first run of the same row's profile ('one pass': against the total of the first run)."""
    together = times.pop(ONE_PASS, None)
    rows, totals = [], {run: 0.0 for run in runs}
    for profile, by_run in times.items():
        for run in runs:
            totals[run] += by_run[run]
            rows.append(_row(profile, run, by_run[run], by_run[runs[0]], pairs))
    rows += [_row("all", run, totals[run], totals[runs[0]], pairs) for run in runs]
    if together:
        rows += [_row(ONE_PASS, run, together[run], totals[runs[0]], pairs) for run in runs]
    return rows


def _row(profile: str, run: tuple, seconds: float, reference: float, pairs: int) -> list:
    per_pair = seconds / pairs
    return [profile, run[0], str(run[1]), f"{seconds:.1f}", f"{per_pair:.2f}",
            f"{per_pair * MSRS_PAIRS / 60:.1f}", f"{reference / seconds:.2f}x"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--profiles", default="vifb,mefb,liu,tang")
    p.add_argument("--workers", default=f"1,{default_workers()}",
                   help="worker counts to time, the first the reference (default 1 and the usable CPUs)")
    p.add_argument("--kernels", default="numpy,compiled" if tm.compiled_available() else "numpy",
                   help="FMI and Qp kernels to time (DDFM_METRIC_KERNELS), the first the reference "
                        "(default: numpy, and compiled when numba is installed)")
    p.add_argument("--md", type=Path, help="also write the table as Markdown")
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    runs = [(k.strip(), w) for k in args.kernels.split(",") for w in workers]
    profiles = [name.strip() for name in args.profiles.split(",")]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = make_pairs(Path(tmp), args.pairs)
        times = {name: {run: time_profiles(root, [name], run[1], run[0]) for run in runs}
                 for name in profiles}
        if len(profiles) > 1:
            times[ONE_PASS] = {run: time_profiles(root, profiles, run[1], run[0]) for run in runs}
    header = ["Profile", "kernels", "workers", "wall (s)", "s / pair", f"{MSRS_PAIRS} pairs (min)",
              "speed-up"]
    rows = build_rows(times, args.pairs, runs)
    note = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {args.pairs} pairs of {H}x{W} "
            f"(TNO crops, fused = floor of the mean); {os.cpu_count()} CPUs, load average "
            f"{load:.1f} at start; wall-clock of metrics.folder.evaluate_profiles, worker start-up "
            f"included; '{MSRS_PAIRS} pairs' projects the per-pair time to MSRS's test set; "
            f"'{ONE_PASS}': the profiles measured together, as evaluate.py --profile "
            f"{args.profiles} does.")
    table = text_table(header, rows)
    print(table)
    print(note)
    if args.md:
        cmd = (f"python -m benchmarks.bench_evaluate_folder --pairs {args.pairs} --profiles "
               f"{args.profiles} --workers {args.workers} --kernels {args.kernels}")
        write_text_atomic(args.md, f"# Folder evaluation per profile\n\n`{cmd}`\n\n```\n{table}\n```\n\n{note}\n")


if __name__ == "__main__":
    main()
