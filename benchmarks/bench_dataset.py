"""Benchmark: how long each paper test set takes, fast path against the release's way, in one run.

    python -m benchmarks.bench_dataset --device cuda --precision bf16 --batch 4          # eager bf16
    python -m benchmarks.bench_dataset --device cuda --precision bf16 --batch 4 --compile
    python -m benchmarks.bench_dataset --tiny                                            # CPU smoke run

For each test set (MSRS, M3FD, RoadScene, TNO, Harvard; ``--datasets`` to choose) a batch of
random grey pairs at the set's size goes through the real sampler (``Fuser.fuse_sources``: UNet,
EM step, FFTs, DDIM update, final 8-bit grey) on a UNet with random weights (the architecture of
``--model_config``; ADM's zero-initialised layers re-drawn, as ``bench_sample.py`` does). Two paths
are timed in the same run, with the same weights:

  release  batch 1, the release's einsum attention, fp32 with TF32 off (the faithful path)
  chosen   the options given: --precision, --batch, --batched_unet, --attention, --compile,
           --compile_mode, --channels_last, --cudnn_benchmark (cuDNN times its convolution
           algorithms per size and keeps the fastest: a candidate for the fp32 path, not yet
           an option of sample.py)

Per path and set: a ``--warmup``-step untimed run (it compiles with ``--compile``; its seconds are
the "warm-up s" column), then ``--steps`` timed steps (median of ``--repeat`` runs), with
``torch.cuda.synchronize`` around the clock on CUDA. Columns:
  s/step        seconds of one sampler step of the whole batch (UNet + EM + FFTs)
  TFLOP/s       batch x FLOPs of one UNet call (benchmarks/flops.py) / s/step
  % peak        TFLOP/s / the peak of that precision (``--peak``; default H200 dense spec:
                bf16/fp16 989, tf32 494, fp32 67 TFLOP/s; ``--release_peak`` for the release path)
  pairs/h       3600 / (100 x s/step / batch): at the released 100 steps
  set min @100  ceil(pairs / batch) x 100 x s/step / 60: the whole set, projected, not timed
  x release     release s/pair-step / chosen s/pair-step
  peak mem      CUDA ``max_memory_allocated`` over the timed run (weights included); on CPU the
                growth of the resident set over the timed run, sampled every 5 ms
  PSNR dB       the first pair's 8-bit grey output after the timed run (``--steps`` steps, same
                weights, sources and noise seed on both paths) against the release path's, and
  max |d|       the largest grey-level difference: the fast path's fidelity on the full UNet
A note per set gives the time of the EM step alone (the x0 hook, eager float32, chosen batch) and
its share of the chosen path's step: the most that compiling the EM step could save.
Sets whose images vary in size are timed at one representative size (stated in the table).

``--tiny``: the golden tiny UNet's keys, every size divided by 8 (rounded up to a multiple of 32),
1 timed step, no warm-up, batch 2: the whole script end to end on a CPU in well under a minute.

Raw outputs: ``--out`` (default ``benchmarks/results``) gets ``bench_dataset_<device>_<date>.md``
(the table and the run's header) and ``.json`` (every measured number).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from util.tables import render_table
REPO = Path(__file__).resolve().parents[1]

from benchmarks.common import (Memory, first_line, free_memory, gib, gray_difference,  # noqa: E402
                          gray_pair, redraw_zero_layers, set_steps, sync)
from benchmarks.flops import model_config, parameter_count, size_label, unet_flops  # noqa: E402

from ddfm.config import ATTENTION_MODES, BATCHED_UNET, COMPILE_MODES, PRECISIONS  # noqa: E402

# (name, pairs, (H, W) the UNet sees, where the size and count come from)
DATASETS = [
    ("MSRS", 361, (480, 640), "361 pairs, 640x480"),
    ("M3FD", 300, (768, 1024), "300 pairs, 1024x768"),
    ("RoadScene", 50, (288, 512), "50 pairs of varied sizes; 288x512 = their mean cropped area"),
    ("TNO", 25, (576, 768), "25 pairs of varied sizes; 576x768 = the most common (9 pairs), also the largest"),
    ("Harvard", 21, (256, 256), "256x256; 21 = the MRI-CT pairs this project holds "
                                "(the paper's count is not recorded in configs/paper_results.yaml)"),
]
H200_PEAKS = {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0}  # dense spec, TFLOP/s
STEPS_PER_IMAGE = 100


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_config", default="full",
                   help="full (configs/model_config_imagenet.yaml, default), tiny, or a YAML path")
    p.add_argument("--tiny", action="store_true",
                   help="CPU smoke run: tiny UNet, sizes / 8, 1 timed step, no warm-up, batch 2")
    p.add_argument("--datasets", default=",".join(d[0] for d in DATASETS),
                   help="comma-separated subset of " + ", ".join(d[0] for d in DATASETS))
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16")
    p.add_argument("--batch", type=int, default=None, help="pairs per batch of the chosen path (default 4)")
    p.add_argument("--batched_unet", choices=BATCHED_UNET, default="auto")
    p.add_argument("--attention", choices=ATTENTION_MODES, default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile_mode", choices=COMPILE_MODES, default="default")
    p.add_argument("--compile_cache", default=None, metavar="DIR")
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--cudnn_benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark on for the chosen path (CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per set and path (default 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before timing (default 1)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs, median kept (default 1)")
    p.add_argument("--peak", type=float, default=None,
                   help="TFLOP/s peak for the chosen path's %% column (default: H200 dense spec for its "
                        "precision, bf16/fp16 989, tf32 494, fp32 67; on CPU none unless given)")
    p.add_argument("--release_peak", type=float, default=None,
                   help="peak for the release (fp32) path (default: 67, H200 fp32, on CUDA)")
    p.add_argument("--no_release", action="store_true", help="time only the chosen path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"),
                   help="folder for the raw outputs (default benchmarks/results)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = p.parse_args(argv)
    if args.tiny:
        if args.model_config == "full":
            args.model_config = "tiny"
        args.steps = 1 if args.steps is None else args.steps
        args.warmup = 0 if args.warmup is None else args.warmup
        args.batch = 2 if args.batch is None else args.batch
    args.steps = 3 if args.steps is None else args.steps
    args.warmup = 1 if args.warmup is None else args.warmup
    args.batch = 4 if args.batch is None else args.batch
    known = {d[0].lower(): d for d in DATASETS}
    wanted = [n.strip().lower() for n in args.datasets.split(",") if n.strip()]
    bad = [n for n in wanted if n not in known]
    if bad or not wanted:
        p.error(f"--datasets: unknown {', '.join(bad) or '(none given)'}; use {', '.join(d[0] for d in DATASETS)}")
    args.sets = [known[n] for n in wanted]
    if args.steps < 1 or args.repeat < 1 or args.warmup < 0 or args.batch < 1:
        p.error("--steps, --repeat and --batch must be >= 1, --warmup >= 0")
    return args


def tiny_size(size):
    """A test set's size divided by 8, rounded up to a multiple of 32."""
    return tuple(max(32, -(-(s // 8) // 32) * 32) for s in size)


def build(cfg, device, seed, **options):
    """A Fuser around randomly initialised weights: the same seed gives the same weights for
    every path (drawn on the CPU in float32, before any cast)."""
    from ddfm import Fuser
    from ddfm.config import load_diffusion_config

    torch.manual_seed(seed)
    fuser = Fuser(cfg, load_diffusion_config(REPO / "configs" / "diffusion_config.yaml"), device=device,
                  allow_random_weights=True, **options)
    redraw_zero_layers(fuser.model, seed + 1)
    return fuser


def time_set(fuser, size, batch, args, device):
    """Warm-up, then the timed run(s) of one batch at ``size``. Returns a dict of numbers."""
    from ddfm import FuseOptions

    pairs = [gray_pair(size, args.seed + k) for k in range(batch)]
    ir, vis = [p[0] for p in pairs], [p[1] for p in pairs]
    free_memory(device)
    out = {}
    sync(device)
    start = time.perf_counter()
    if args.warmup:
        set_steps(fuser, args.warmup)
        fuser.fuse_sources(ir, vis, FuseOptions())
    sync(device)
    out["warmup_s"] = time.perf_counter() - start
    set_steps(fuser, args.steps)
    times = []
    with Memory(device) as mem:
        for _ in range(args.repeat):
            sync(device)
            start = time.perf_counter()
            results = fuser.fuse_sources(ir, vis, FuseOptions())
            sync(device)
            times.append(time.perf_counter() - start)
    out["s_step"] = statistics.median(times) / args.steps
    out["peak_bytes"] = mem.peak
    out["non_finite"] = sum("error" in r for r in results)
    out["gray0"] = results[0].get("gray")  # the first pair's output, for the fidelity columns
    return out


def em_step_seconds(size, batch, device, repeat=5) -> float:
    """Seconds of DDFM's x0 hook alone (colour transform, one EM step with its FFTs, inverse
    transform; float32, eager, as the sampler runs it) for a batch at ``size``: how much of a
    step compiling the EM step could at most save."""
    from ddfm import FuseOptions
    from ddfm.fusion import em_hook

    gen = torch.Generator().manual_seed(0)
    ir, vis = (torch.rand(batch, 1, *size, generator=gen).mul(2).sub(1).to(device) for _ in range(2))
    x0_pred = torch.rand(batch, 3, *size, generator=gen).mul(2).sub(1).to(device)
    hook, state = em_hook(ir, vis, FuseOptions())
    _, state = hook(x0_pred, 0, state)  # warm-up (cuFFT plans)
    sync(device)
    start = time.perf_counter()
    for step in range(repeat):
        _, state = hook(x0_pred, step, state)
    sync(device)
    return (time.perf_counter() - start) / repeat


def row_numbers(m, pairs, batch, flops, peak):
    s_step = m["s_step"]
    tflops = batch * flops / s_step / 1e12
    return dict(s_step=s_step, s_pair_step=s_step / batch, tflops=tflops,
                pct_peak=(100 * tflops / peak) if peak else None,
                pairs_per_hour=3600 / (STEPS_PER_IMAGE * s_step / batch),
                set_minutes=math.ceil(pairs / batch) * STEPS_PER_IMAGE * s_step / 60)


def device_slug(device) -> str:
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(device).lower()).strip("_")
    return "cpu"


def pick_device(args):
    """The benchmark's device, or None after an error line (CUDA asked for but absent; CUDA
    graphs asked for off CUDA)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: CUDA is not available here; use --device cpu (and --tiny)", file=sys.stderr)
        return None
    if args.compile_mode == "reduce-overhead" and device.type != "cuda":
        print("error: --compile_mode reduce-overhead records CUDA graphs and needs --device cuda; "
              "use --compile_mode default on the CPU", file=sys.stderr)
        return None
    return device


def run_header(args, device, label, cfg, chosen_peak, release_peak, stamp) -> list[str]:
    """The lines that say what was measured, where and against which peaks."""
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    chosen_desc = (f"{args.precision}, batch {args.batch}, batched UNet {args.batched_unet}, attention "
                   f"{args.attention}" + (f", compiled ({args.compile_mode})" if args.compile else "")
                   + (", channels_last" if args.channels_last else "")
                   + (", cuDNN benchmark" if args.cudnn_benchmark else ""))
    header = [f"# DDFM whole-test-set benchmark ({stamp.strftime('%Y-%m-%d %H:%M')} UTC)",
              f"device: {where}; torch {torch.__version__}; model: {label}, "
              f"{parameter_count(cfg) / 1e6:.1f}M parameters, random weights",
              f"chosen path: {chosen_desc}; release path: batch 1, legacy attention, fp32 (TF32 off)",
              f"{args.warmup} warm-up step(s), {args.steps} timed step(s), median of {args.repeat} run(s); "
              f"projections at {STEPS_PER_IMAGE} steps per pair"]
    if chosen_peak or release_peak:
        header.append(f"% peak against {chosen_peak or '-'} TFLOP/s (chosen, {args.precision}) and "
                      f"{release_peak or '-'} TFLOP/s (release, fp32)"
                      + (" -- spec-sheet dense peaks, not measured" if args.peak is None else " (given)"))
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        header.append(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return header


def set_backends(precision: str, cudnn_benchmark: bool) -> None:
    """The process-wide switches of a path, as sample.py sets them: TF32 only for tf32 (cuDNN
    would otherwise allow it in fp32 convolutions by default), and cuDNN's algorithm search."""
    from ddfm import set_tf32

    set_tf32(precision == "tf32")
    torch.backends.cudnn.benchmark = cudnn_benchmark


def measure(paths, sets, cfg, device, args, flops) -> tuple[dict, Optional[float]]:
    """Time every set on every path: {(set, path): row numbers or {"error"}}, and the chosen
    path's compile time."""
    results = {}
    compile_seconds = None
    for path, options, batch, peak in paths:
        set_backends(options["precision"], args.cudnn_benchmark and path == "chosen")
        try:
            fuser = build(cfg, device, args.seed, **options)
        except Exception as exc:  # noqa: BLE001 - say why and go on with the other path
            print(f"  [{path}] cannot build: {first_line(exc)}", flush=True)
            for name, *_ in sets:
                results[(name, path)] = dict(error=first_line(exc))
            continue
        for name, pairs, size, _ in sets:
            try:
                m = time_set(fuser, size, batch, args, device)
                m.update(row_numbers(m, pairs, batch, flops[size], peak), batch=batch)
                if path == "chosen":
                    m.update(chosen_extras(m, results.get((name, "release"), {}), size, batch, device))
                print(f"  [{name} {size_label(size)} {path}] {m['s_step']:.4g} s/step (batch {batch}), "
                      f"{m['tflops']:.3g} TFLOP/s, peak mem {gib(m['peak_bytes'])} GiB, "
                      f"warm-up {m['warmup_s']:.1f} s", flush=True)
            except Exception as exc:  # noqa: BLE001 - an out-of-memory set is a row saying so
                m = dict(error=first_line(exc), batch=batch)
                print(f"  [{name} {size_label(size)} {path}] FAILED: {m['error']}", flush=True)
                free_memory(device)
            results[(name, path)] = m
        if path == "chosen" and args.compile:
            compile_seconds = fuser.compile_seconds
        del fuser
        free_memory(device)
    return results, compile_seconds


def table_rows(sets, paths, results) -> list[list[str]]:
    table = []
    for name, pairs, size, _ in sets:
        ref = results.get((name, "release"), {})
        for path, *_ in paths:
            m = results[(name, path)]
            if "error" in m:
                table.append([name, str(pairs), size_label(size), path, str(m.get("batch", "-"))]
                             + ["-"] * 10 + ["failed: " + m["error"]])
                continue
            speed = (ref["s_pair_step"] / m["s_pair_step"]) if "s_pair_step" in ref else None
            pct = m["pct_peak"]
            table.append([name, str(pairs), size_label(size), path, str(m["batch"]),
                          f"{m['s_step']:.4g}", f"{m['s_pair_step']:.4g}", f"{m['tflops']:.3g}",
                          "-" if pct is None else f"{pct:.1f}", f"{m['pairs_per_hour']:.4g}",
                          f"{m['set_minutes']:.4g}", "-" if speed is None else f"{speed:.2f}",
                          gib(m["peak_bytes"]), f"{m['warmup_s']:.1f}", *fidelity_cells(m)])
    return table


def chosen_extras(m, ref, size, batch, device) -> dict:
    """What the chosen path's row adds to its timing: the first pair's PSNR and largest grey
    difference against the release path's output (when both have one), and the EM step's own
    time with its share of the step."""
    extras = {}
    if m.get("gray0") is not None and ref.get("gray0") is not None:
        extras["max_diff_u8"], extras["psnr_vs_release"] = gray_difference(m["gray0"], ref["gray0"])
    seconds = em_step_seconds(size, batch, device)
    extras.update(em_ms_step=1e3 * seconds, em_pct_step=100 * seconds / m["s_step"])
    return extras


def fidelity_cells(m) -> list[str]:
    """The PSNR and max |d| cells: "-" for the release path and where there is no comparison."""
    if "psnr_vs_release" not in m:
        return ["-", "-"]
    psnr = m["psnr_vs_release"]
    return ["inf" if psnr == math.inf else f"{psnr:.1f}", str(m["max_diff_u8"])]


def strict_json(value):
    """``value`` with every non-finite float written as a string ("inf", "nan"), so the raw JSON
    is standard JSON (json.dumps would write Infinity, which other readers refuse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_raw(base: Path, md: str, raw: dict) -> None:
    from util.fileio import atomic_path
    base.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(strict_json(raw), indent=1, default=str, allow_nan=False) + "\n"
    for suffix, content in ((".md", md), (".json", text)):
        with atomic_path(base.with_suffix(suffix)) as tmp:
            Path(tmp).write_text(content, encoding="utf-8")
    print(f"\nraw outputs: {base}.md, {base}.json", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = pick_device(args)
    if device is None:
        return 2
    label, cfg = model_config(args.model_config)
    chosen_peak = args.peak if args.peak is not None else (H200_PEAKS[args.precision] if device.type == "cuda" else None)
    release_peak = (args.release_peak if args.release_peak is not None
                    else (H200_PEAKS["fp32"] if device.type == "cuda" else None))
    stamp = datetime.datetime.now(datetime.timezone.utc)
    header = run_header(args, device, label, cfg, chosen_peak, release_peak, stamp)
    for line in header:
        print(line, flush=True)
    chosen_opts = dict(precision=args.precision, batched_unet=args.batched_unet, attention=args.attention,
                       compile=args.compile, compile_mode=args.compile_mode if args.compile else None,
                       compile_cache=args.compile_cache if args.compile else None,
                       channels_last=args.channels_last)
    sets = [(name, pairs, tiny_size(size) if args.tiny else size, note) for name, pairs, size, note in args.sets]
    flops = {size: unet_flops(cfg, *size).total for _, _, size, _ in sets}
    paths = ([] if args.no_release else [("release", dict(attention="legacy", precision="fp32",
                                                         batched_unet="off"), 1, release_peak)])
    paths.append(("chosen", chosen_opts, args.batch, chosen_peak))
    results, compile_seconds = measure(paths, sets, cfg, device, args, flops)

    mem_col = "peak alloc GiB" if device.type == "cuda" else "peak RSS growth GiB"
    columns = ["set", "pairs", "size (HxW)", "path", "batch", "s/step", "s/pair-step", "TFLOP/s", "% peak",
               "pairs/h @100", "set min @100", "x release", mem_col, "warm-up s", "PSNR dB", "max |d|"]
    table = table_rows(sets, paths, results)
    notes = [f"{name}: {note}" + (f" (timed at {size_label(size)}, --tiny)" if args.tiny else "")
             for name, _, size, note in sets]
    chosen = {name: results[(name, "chosen")] for name, *_ in sets}
    notes += [f"{name}: the EM step (eager float32 x0 hook, batch {args.batch}) takes {m['em_ms_step']:.3g} ms "
              f"of the chosen path's step ({m['em_pct_step']:.1f} %)" for name, m in chosen.items() if "em_ms_step" in m]
    if compile_seconds is not None:
        notes.append(f"compile: {compile_seconds:.1f} s (first UNet call of the chosen path)")
    if device.type == "cpu" and args.precision == "tf32":
        notes.append("tf32 has no effect on the CPU (it is plain fp32 there)")
    print("\n" + render_table(columns, table, args.markdown) + "\n\n" + "\n".join(notes), flush=True)

    base = Path(args.out) / f"bench_dataset_{device_slug(device)}_{stamp.strftime('%Y-%m-%d_%H%M')}"
    md = "\n".join(header) + "\n\n" + render_table(columns, table, True) + "\n\n" + "\n".join(
        f"- {n}" for n in notes) + "\n"
    raw = dict(header=header, columns=columns, table=table, notes=notes, argv=sys.argv[1:] if argv is None else argv,
               compile_seconds=compile_seconds,
               rows=[dict(set=name, pairs=pairs, size=size_label(size), path=path,
                          **{k: v for k, v in results[(name, path)].items() if k != "gray0"})
                     for name, pairs, size, _ in sets for path, *_ in paths])
    write_raw(base, md, raw)
    return 1 if any("error" in m for m in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
