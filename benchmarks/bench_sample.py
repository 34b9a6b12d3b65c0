"""Benchmark: the DDFM sampler (``Fuser.fuse_sources``) per execution path, in one run.

    python benchmarks/bench_sample.py --model_config tiny --size 288x512 --steps 2 --paths legacy,fast,bf16
    python benchmarks/bench_sample.py --device cuda --size 256x256 480x640 --steps 10 \
        --paths legacy,fast,tf32,bf16,fp16,compiled --markdown
    python benchmarks/bench_sample.py --gpu_suite          # the whole planned GPU measurement
    python benchmarks/bench_sample.py --device cuda --memory_sweep --paths fast,bf16

What it does. The UNet of ``--model_config`` (``full`` = configs/model_config_imagenet.yaml,
``tiny`` = the golden tiny UNet's keys, or a YAML path) is built with *random* weights, no
checkpoint: timing does not depend on the weights. ADM zero-initialises the last convolution of
every block, which would make the network output exactly 0 and every accuracy comparison
trivially equal, so those layers are re-drawn (PyTorch's default uniform init, fixed seed).
For every size (HEIGHTxWIDTH; a random grey pair of that size, fixed seed) and every path the
real sampler loop runs -- ``Fuser.fuse_sources``: DDIM steps, UNet, EM step, FFTs, the final
8-bit grey -- first ``--warmup`` steps untimed, then ``--steps`` steps timed ``--repeat`` times
(median kept), with ``torch.cuda.synchronize`` around the clock on CUDA.

Paths (one model, switched between paths; the same seed and weights for all):
  legacy         the release's einsum attention, float32 (TF32 off)  -- the reference
  fast           attention "auto" (SDPA on CUDA, chunked einsum on CPU), float32
  sdpa, chunked  fast with the attention kernel forced
  tf32           fast with TF32 matmuls/convolutions (CUDA only; same as fast on CPU)
  bf16, fp16     fast under torch.autocast (the EM step and FFTs stay float32)
  channels_last  fast with channels_last activations and weights
  compiled       fast + torch.compile(model, dynamic=True), as ``Fuser(compile=True)``
  compiled_bf16  bf16 + torch.compile
A path that fails (no compiler, out of memory, ...) becomes a row saying why; the run goes on.

Columns: s/step = timed seconds / steps (the whole loop, not only the UNet); s/image @100 is
100 x s/step, an extrapolation to the released 100 steps; peak memory: on CUDA
``torch.cuda.max_memory_allocated`` over the timed runs (weights included), on CPU the growth
of the resident set over the timed runs, sampled every 5 ms from /proc/self/statm (the process
peak, ``getrusage`` maxrss, is printed under the table); x legacy = legacy s/step / path s/step
(measured in this run); TFLOP/s = FLOPs of one UNet call (benchmarks/flops.py) / s/step, so
it slightly understates the UNet's own rate; % peak against the card's spec-sheet dense peak for
that precision where the card is known. max|d| sample: the final float sample (RGB, [-1, 1])
against legacy's, same seed; max|d| u8 and PSNR: the 8-bit grey output against legacy's.
Random weights amplify low-precision error differently from the real checkpoint; the golden
tests measure that with real weights.

``--memory_sweep``: peak memory of a 2-step run at 256x256, 480x640, 768x1024, 1024x1024 (or
``--sweep_sizes``), batch 1, for fast fp32, bf16 and legacy fp32, stopping a path at its first
out-of-memory; on CUDA with the CUDA context's own memory measured, giving "what fits in how
much memory".
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "benchmarks")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from flops import (FLOPS_HEADER, flops_table, format_table, model_config,  # noqa: E402
                   parameter_count, parse_size, size_label, unet_flops)

PATHS = {
    "legacy": dict(attention="legacy", precision="fp32"),
    "fast": dict(attention="auto", precision="fp32"),
    "sdpa": dict(attention="sdpa", precision="fp32"),
    "chunked": dict(attention="chunked", precision="fp32"),
    "tf32": dict(attention="auto", precision="tf32"),
    "bf16": dict(attention="auto", precision="bf16"),
    "fp16": dict(attention="auto", precision="fp16"),
    "channels_last": dict(attention="auto", precision="fp32", channels_last=True),
    "compiled": dict(attention="auto", precision="fp32", compile=True),
    "compiled_bf16": dict(attention="auto", precision="bf16", compile=True),
}
SUITE_PATHS = ["legacy", "fast", "tf32", "bf16", "fp16", "compiled", "compiled_bf16"]
SUITE_SIZES = [(256, 256), (480, 640)]
SWEEP_SIZES = [(256, 256), (480, 640), (768, 1024), (1024, 1024)]
SWEEP_PATHS = ["fast", "bf16", "legacy"]

# Spec-sheet dense peaks (TFLOP/s, no sparsity) per precision; "fp32" is non-tensor-core FP32.
SPEC_PEAKS = {
    "H200": {"fp32": 67, "tf32": 494, "bf16": 989, "fp16": 989},
    "H100 SXM": {"fp32": 67, "tf32": 494, "bf16": 989, "fp16": 989},
    "H100 PCIe": {"fp32": 51, "tf32": 378, "bf16": 756, "fp16": 756},
    "A100": {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312},
}
GiB = 1024 ** 3


# --------------------------------------------------------------------------------------------
# small utilities


def log(line: str) -> None:
    print(line, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def card_peaks(device: torch.device):
    """(label, spec-sheet peaks) of the CUDA card, or (None, None) when not known."""
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device).lower()
    if "h200" in name:
        return "H200", SPEC_PEAKS["H200"]
    if "h100" in name:
        key = "H100 PCIe" if "pcie" in name else "H100 SXM"
        return key, SPEC_PEAKS[key]
    if "a100" in name:
        return "A100", SPEC_PEAKS["A100"]
    return None, None


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def process_peak_rss() -> int:
    """getrusage maxrss: the process's all-time peak (kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class RssSampler:
    """Highest resident set size seen while active, sampled every ``interval`` s from
    /proc/self/statm (torch's allocations are invisible to tracemalloc)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.base is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            now = rss_bytes()
            if now is not None and now > self.peak:
                self.peak = now
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        now = rss_bytes()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    @property
    def growth(self) -> int | None:
        return None if self.base is None else self.peak - self.base


class Memory:
    """Peak memory of a block: CUDA allocator peak, or sampled RSS growth on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = self.reserved = self.at_start = None

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.at_start = torch.cuda.memory_allocated(self.device)
        else:
            self._rss = RssSampler().__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            self.reserved = torch.cuda.max_memory_reserved(self.device)
        else:
            self._rss.__exit__(*exc)
            self.peak = self._rss.growth


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # hand freed heap back so RSS growth is measurable
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# --------------------------------------------------------------------------------------------
# the model, the fuser and the paths


def redraw_zero_layers(model: nn.Module, seed: int) -> int:
    """Re-draw every all-zero conv/linear layer (ADM's zero_module init) from PyTorch's default
    uniform(+-1/sqrt(fan_in)), with a CPU generator so the weights do not depend on the device."""
    gen = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) or module.weight.any():
                continue
            bound = 1 / math.sqrt(module.weight[0].numel())
            for param in (module.weight, module.bias):
                if param is not None:
                    draw = (torch.rand(param.shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound
                    param.copy_(draw.to(param.device, param.dtype))
            count += 1
    return count


def build_fuser(cfg, device: torch.device, seed: int):
    """A Fuser around a randomly initialised UNet (legacy attention, fp32)."""
    from ddfm import Fuser
    from util.config import load_diffusion_config

    diffusion = REPO / "configs" / "diffusion_config.yaml"
    torch.manual_seed(seed)
    fuser = Fuser(cfg, load_diffusion_config(diffusion), device=device, attention="legacy",
                  precision="fp32", allow_random_weights=True)
    redraw_zero_layers(fuser.model, seed + 1)
    return fuser


_SCHEDULES: dict = {}


def set_steps(fuser, steps: int) -> None:
    """Point the fuser at a ``steps``-step respacing of its diffusion config."""
    from guided_diffusion.diffusion import make_schedule

    d = fuser.diffusion_config
    key = (steps, str(fuser.device))
    if key not in _SCHEDULES:
        if steps == 1:  # a 1-step respacing has no posterior variance; run the last step of 2
            two = make_schedule(d.noise_schedule, d.steps, 2, fuser.device)
            _SCHEDULES[key] = type(two)(**{k: (v[:1] if torch.is_tensor(v) else v)
                                           for k, v in two.__dict__.items()})
        else:
            _SCHEDULES[key] = make_schedule(d.noise_schedule, d.steps, steps, fuser.device)
    fuser.schedule = _SCHEDULES[key]


class PathSwitch:
    """Puts one model and Fuser into a path's configuration and back (fp32, legacy).

    Sets the Fuser's ``model`` and its ``options``' ``precision`` and ``channels_last`` as its
    ``model_fn`` reads them, and ``ddfm.set_tf32``."""

    def __init__(self, fuser):
        self.fuser = fuser
        self.base = fuser.model
        self.compiled = None

    @contextlib.contextmanager
    def use(self, name: str):
        from dataclasses import replace

        from ddfm import set_tf32

        spec = PATHS[name]
        fuser, base = self.fuser, self.base
        base.set_attention(spec["attention"])
        fuser.options = replace(fuser.options, precision=spec["precision"])
        set_tf32(spec["precision"] == "tf32")
        if spec.get("channels_last"):
            base.to(memory_format=torch.channels_last)
            fuser.options = replace(fuser.options, channels_last=True)
        if spec.get("compile"):
            if self.compiled is None:
                self.compiled = torch.compile(base, dynamic=True)
            fuser.model = self.compiled
        try:
            yield
        finally:
            fuser.model = base
            fuser.options = replace(fuser.options, precision="fp32", channels_last=False)
            set_tf32(False)
            if spec.get("channels_last"):
                base.to(memory_format=torch.contiguous_format)
            base.set_attention("legacy")


def gray_pair(size, seed: int):
    """Two random grey sources of HEIGHTxWIDTH (smooth structure plus noise), fixed seed."""
    from ddfm import load_source

    h, w = size
    rng = np.random.default_rng(seed + 7919 * h + w)
    out = []
    for name in ("ir", "vis"):
        coarse = rng.uniform(0, 255, size=(max(h // 16, 2), max(w // 16, 2)))
        smooth = np.kron(coarse, np.ones((16, 16)))[:h, :w]
        if smooth.shape != (h, w):
            smooth = np.pad(smooth, ((0, h - smooth.shape[0]), (0, w - smooth.shape[1])), mode="edge")
        img = np.clip(0.7 * smooth + 0.3 * rng.uniform(0, 255, size=(h, w)), 0, 255).round()
        out.append(load_source(img.astype(np.uint8), name))
    return out


def run_sampler(fuser, pair, steps: int, device: torch.device):
    """One image through the real sampler loop; returns (seconds, grey uint8 or None, final
    float sample on the CPU or None, error or None)."""
    from ddfm import FuseOptions

    set_steps(fuser, steps)
    last = {}

    def keep_final(info):
        if info["step"] == 0:
            last["sample"] = info["sample"]

    sync(device)
    start = time.perf_counter()
    result = fuser.fuse_sources([pair[0]], [pair[1]], FuseOptions(), callback=keep_final)[0]
    sync(device)
    seconds = time.perf_counter() - start
    sample = last.get("sample")
    sample = None if sample is None else sample.detach().float().cpu()
    return seconds, result.get("gray"), sample, result.get("error")


# --------------------------------------------------------------------------------------------
# measurements


def measure(fuser, switch, name, size, pair, steps, args, device):
    """Warm up, then time ``args.repeat`` runs of ``steps`` steps. Returns a row dict."""
    row = dict(size=size_label(size), path=name, steps=steps)
    free_memory(device)
    try:
        with switch.use(name):
            t0 = time.perf_counter()
            for _ in range(args.warmup_runs):
                run_sampler(fuser, pair, args.warmup, device)
            row["warmup_s"] = time.perf_counter() - t0
            times, gray, sample, error = [], None, None, None
            with Memory(device) as mem:
                for _ in range(args.repeat):
                    seconds, gray, sample, error = run_sampler(fuser, pair, steps, device)
                    times.append(seconds)
    except Exception as exc:  # noqa: BLE001 - a failed path is a row, not the end of the run
        row["error"] = first_line(exc)
        if "compile" in name:
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
            switch.compiled = None
        free_memory(device)
        return row
    row.update(s_step=statistics.median(times) / steps, s_step_min=min(times) / steps,
               peak=mem.peak, reserved=mem.reserved, gray=gray, sample=sample)
    if error:
        row["note"] = "non-finite sample"
    return row


def compare(row, ref) -> None:
    """Speed-up and differences of ``row`` against the legacy row ``ref`` (same size)."""
    if not ref or "s_step" not in ref or "s_step" not in row:
        return
    row["speedup"] = ref["s_step"] / row["s_step"]
    if row.get("steps") != ref.get("steps"):
        return
    if row.get("sample") is not None and ref.get("sample") is not None:
        row["max_diff"] = float((row["sample"] - ref["sample"]).abs().max())
    if row.get("gray") is not None and ref.get("gray") is not None:
        row["max_diff_u8"], row["psnr"] = gray_difference(row["gray"], ref["gray"])


def gray_difference(gray, ref) -> tuple[int, float]:
    """Largest difference and PSNR (dB, inf when equal) of two 8-bit grey images."""
    a, b = gray.astype(np.float64), ref.astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    return int(np.abs(a - b).max()), math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def timing_cells(row, flops, peaks, device) -> list[str]:
    if "s_step" not in row:
        return [row["size"], row["path"], str(row.get("steps", "")), "-", "-", "-", "-", "-", "-",
                "-", "-", "-",
                (lambda e: e if e.startswith("skipped") else "failed: " + e)(row.get("error", "?"))]
    prec = PATHS[row["path"]]["precision"] if row["path"] in PATHS else "fp32"
    tflops = flops.get(row["size"], 0) / row["s_step"] / 1e12 if flops.get(row["size"]) else None
    peak = peaks.get(prec) if peaks else None
    if device.type == "cpu" and prec == "tf32":
        row.setdefault("note", "tf32 has no effect on CPU")
    psnr = row.get("psnr")
    return [
        row["size"], row["path"], str(row["steps"]),
        f"{row['s_step']:.4g}", f"{row['s_step'] * 100:.4g}",
        f"{row['speedup']:.2f}" if "speedup" in row else "-",
        gib(row.get("peak")),
        "-" if tflops is None else (f"{tflops:.3g}"),
        f"{tflops / peak * 100:.1f}% of {peak:g}" if tflops is not None and peak else "-",
        f"{row['max_diff']:.2e}" if "max_diff" in row else "-",
        str(row["max_diff_u8"]) if "max_diff_u8" in row else "-",
        ("inf" if psnr == math.inf else f"{psnr:.1f}") if psnr is not None else "-",
        (row.get("note", "") + (f" warm-up (compiling) {row['warmup_s']:.1f} s"
                                if "compile" in row["path"] and "warmup_s" in row else "")).strip(),
    ]


def timing_header(device) -> list[str]:
    mem = "peak alloc GiB" if device.type == "cuda" else "peak RSS growth GiB"
    return ["size", "path", "steps", "s/step", "s/image @100 steps (extrap.)", "x legacy", mem,
            "TFLOP/s", "% spec peak", "max|d| sample", "max|d| u8", "PSNR dB vs legacy", "note"]


def progress(row) -> None:
    if "s_step" in row:
        bits = [f"{row['s_step']:.4g} s/step (min {row['s_step_min']:.4g})", f"peak {gib(row.get('peak'))} GiB"]
        if "speedup" in row:
            bits.append(f"x{row['speedup']:.2f} vs legacy")
        if "max_diff" in row:
            bits.append(f"max|d| {row['max_diff']:.2e}")
        log(f"  [{row['size']} {row['path']}, {row['steps']} steps] " + ", ".join(bits))
    else:
        log(f"  [{row['size']} {row['path']}] FAILED: {row.get('error')}")


def decide_steps(fuser, switch, size, pair, args, device) -> int:
    """Steps for every path at this size: --steps, fewer if one legacy step (measured) times
    --steps would exceed --max_path_seconds. Same for all paths so outputs stay comparable."""
    if not args.max_path_seconds:
        return args.steps
    try:
        with switch.use("legacy"):
            run_sampler(fuser, pair, 1, device)  # first call: allocations, kernel selection
            seconds, *_ = run_sampler(fuser, pair, 1, device)
    except Exception:  # noqa: BLE001
        return args.steps
    fit = int(args.max_path_seconds / max(seconds, 1e-9))
    steps = max(2, min(args.steps, fit))
    if steps < args.steps:
        log(f"  {size_label(size)}: legacy takes {seconds:.2f} s/step; {steps} steps per path "
            f"instead of {args.steps} (--max_path_seconds {args.max_path_seconds:g})")
    return steps


# --------------------------------------------------------------------------------------------
# memory sweep


def context_overhead(device) -> int | None:
    """GPU memory in use but not held by PyTorch's caching allocator (CUDA context, libraries);
    counts other processes on the same GPU too."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return (total - free) - torch.cuda.memory_reserved(device)


def memory_sweep(fuser, switch, sizes, paths, device, args) -> list[list[str]]:
    rows = []
    ctx = context_overhead(device)
    for name in paths:
        oom = False
        for size in sizes:
            label = size_label(size)
            if oom:
                rows.append(pad([label, name], "skipped: smaller size ran out of memory", device))
                continue
            if args.deadline and time.perf_counter() - START > args.deadline:
                rows.append(pad([label, name], "skipped: suite deadline", device))
                continue
            free_memory(device)
            weights = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
            try:
                pair = gray_pair(size, args.seed)
                with switch.use(name), Memory(device) as mem:
                    seconds, _, _, error = run_sampler(fuser, pair, 2, device)
            except Exception as exc:  # noqa: BLE001
                oom = is_oom(exc)
                rows.append(pad([label, name], "out of memory" if oom else "failed: " + first_line(exc), device))
                log(f"  [sweep {label} {name}] {'OOM' if oom else first_line(exc)}")
                free_memory(device)
                continue
            need = None if mem.reserved is None or ctx is None else mem.reserved + ctx
            note = "non-finite sample" if error else ""
            if device.type == "cuda":
                rows.append([label, name, gib(mem.peak), gib(mem.reserved), gib(weights),
                             gib(need), f"{seconds / 2:.3g}", note])
            else:
                rows.append([label, name, gib(mem.peak), f"{seconds / 2:.3g}", note])
            log(f"  [sweep {label} {name}] peak {gib(mem.peak)} GiB"
                + (f", reserved {gib(mem.reserved)} GiB" if mem.reserved is not None else ""))
    return rows


def pad(cells, note, device) -> list[str]:
    return cells + ["-"] * (len(sweep_header(device)) - len(cells) - 1) + [note]


def sweep_header(device) -> list[str]:
    if device.type == "cuda":
        return ["size", "path", "peak alloc GiB", "peak reserved GiB", "at start GiB (weights)",
                "GPU memory needed GiB (reserved + context)", "s/step (2-step run, no warm-up)", "note"]
    return ["size", "path", "peak RSS growth GiB (sampled)", "s/step (2-step run, no warm-up)", "note"]


# --------------------------------------------------------------------------------------------
# compiled paths in a child process (a hard time limit on compilation)


def run_compiled_in_child(args, paths, size_steps, refs, deadline_left):
    """Run ``paths`` in a fresh process (same seed: same weights, same sources) killed after
    ``deadline_left`` seconds; returns rows, compared against ``refs`` (legacy rows)."""
    out = Path(tempfile.mkdtemp(prefix="bench_compile_"))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model_config", args.model_config,
           "--device", args.device, "--paths", ",".join(paths), "--repeat", str(args.repeat),
           "--warmup", str(args.warmup), "--seed", str(args.seed),
           *(["--threads", str(args.threads)] if args.threads else []), "--_child_out", str(out),
           "--_size_steps", json.dumps({size_label(s): n for s, n in size_steps.items()}),
           "--size", *[size_label(s) for s in size_steps]]
    log(f"  compiled paths in a child process, killed after {deadline_left:.0f} s")
    note = None
    try:
        subprocess.run(cmd, timeout=max(deadline_left, 1), check=False)
    except subprocess.TimeoutExpired:
        note = f"killed at the suite deadline ({deadline_left:.0f} s left for compiling)"
    rows = []
    data = json.loads((out / "rows.json").read_text()) if (out / "rows.json").exists() else []
    done = {(r["size"], r["path"]) for r in data}
    for r in data:
        blob = out / f"{r['size']}_{r['path']}.pt"
        if blob.exists():
            saved = torch.load(blob, weights_only=False)
            r["sample"], r["gray"] = saved["sample"], saved["gray"]
        compare(r, refs.get(r["size"]))
        rows.append(r)
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    for size in size_steps:
        for name in paths:
            if (size_label(size), name) not in done:
                rows.append(dict(size=size_label(size), path=name, steps=size_steps[size],
                                 error=note or "the child process ended without a result"))
    return rows


# --------------------------------------------------------------------------------------------


START = time.perf_counter()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_config", default="configs/model_config_imagenet.yaml",
                   help="full (configs/model_config_imagenet.yaml, the default), tiny, or a YAML path")
    p.add_argument("--size", nargs="+", type=parse_size, default=None,
                   help="HEIGHTxWIDTH sizes (default 256x256)")
    p.add_argument("--steps", type=int, default=10, help="timed sampler steps per run (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="steps of the untimed warm-up run (default 1)")
    p.add_argument("--paths", default="legacy,fast,bf16,fp16,compiled",
                   help=f"comma-separated, from {','.join(PATHS)}")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per path; the median is kept")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="weights and sources seed (sampler seed: 3407)")
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    p.add_argument("--memory_sweep", action="store_true",
                   help="also measure peak memory at --sweep_sizes for --sweep_paths (batch 1)")
    p.add_argument("--sweep_sizes", nargs="+", type=parse_size, default=SWEEP_SIZES)
    p.add_argument("--sweep_paths", default=",".join(SWEEP_PATHS))
    p.add_argument("--max_path_seconds", type=float, default=0,
                   help="cap on timed seconds per path: fewer steps at a size where legacy is slow (0: off)")
    p.add_argument("--deadline", type=float, default=0,
                   help="seconds after start after which remaining paths are skipped (0: none)")
    p.add_argument("--isolate_compile", action="store_true",
                   help="run compiled paths in a child process killed at --deadline")
    p.add_argument("--gpu_suite", action="store_true",
                   help="the planned GPU measurement: full model, 256x256 and 480x640, paths "
                        f"{','.join(SUITE_PATHS)}, 10 steps, memory sweep, markdown, ~5 min on an H200")
    p.add_argument("--_child_out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_size_steps", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.gpu_suite:
        if args.model_config == p.get_default("model_config"):
            args.model_config = "full"
        args.size = args.size or SUITE_SIZES
        args.paths = ",".join(SUITE_PATHS)
        args.device = args.device or "cuda"
        args.memory_sweep = True
        args.markdown = True
        args.max_path_seconds = args.max_path_seconds or 20
        args.deadline = args.deadline or 330
        args.isolate_compile = True
    args.size = args.size or [(256, 256)]
    args.warmup_runs = 1 if args.warmup > 0 else 0
    args.path_list = [n.strip() for n in args.paths.split(",") if n.strip()]
    bad = [n for n in args.path_list + args.sweep_paths.split(",") if n not in PATHS]
    if bad:
        p.error(f"unknown path(s) {', '.join(bad)}; use {', '.join(PATHS)}")
    if args.steps < 1 or args.repeat < 1:
        p.error("--steps and --repeat must be >= 1")
    return args


def child_main(args, device, cfg) -> int:
    """Child process of --isolate_compile: measure, write rows and final samples to disk."""
    out = Path(args._child_out)
    size_steps = json.loads(args._size_steps)
    fuser = build_fuser(cfg, device, args.seed)
    switch = PathSwitch(fuser)
    rows = []
    for size in args.size:
        pair = gray_pair(size, args.seed)
        for name in args.path_list:
            row = measure(fuser, switch, name, size, pair, size_steps[size_label(size)], args, device)
            progress(row)
            sample, gray = row.pop("sample", None), row.pop("gray", None)
            if sample is not None:
                torch.save({"sample": sample, "gray": gray}, out / f"{row['size']}_{name}.pt")
            rows.append(row)
            (out / "rows.json").write_text(json.dumps(rows))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        log("CUDA is not available here; use --device cpu (and --model_config tiny).")
        return 2
    args.device = str(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    label, cfg = model_config(args.model_config)
    if args._child_out:
        return child_main(args, device, cfg)
    md = args.markdown
    card, peaks, flops = log_header(args, cfg, label, device)

    # -- the model -------------------------------------------------------------------------
    t0 = time.perf_counter()
    fuser = build_fuser(cfg, device, args.seed)
    switch = PathSwitch(fuser)
    log(f"\nmodel built in {time.perf_counter() - t0:.1f} s")
    compiled = [n for n in args.path_list if PATHS[n].get("compile")]
    rows, refs, size_steps = time_eager(fuser, switch, args, device)

    def print_timing(title, table_rows):
        log(f"\n## {title}\n")
        log(format_table(timing_header(device), [timing_cells(r, flops, peaks, device) for r in table_rows], md))

    # -- memory sweep before compiling in the suite (compiling is the slow, risky part) -----
    sweep_rows = None
    if args.memory_sweep and args.isolate_compile:
        print_timing("sampler timing, eager paths", rows)
        rows_printed = len(rows)
        log("\n## memory sweep (progress)")
        sweep_rows = memory_sweep(fuser, switch, args.sweep_sizes, args.sweep_paths.split(","), device, args)
        print_sweep(sweep_rows, device, md)
    else:
        rows_printed = 0
    if compiled:
        rows += time_compiled(fuser, switch, compiled, args, device, size_steps, refs)
    print_timing("sampler timing" + (", compiled paths" if rows_printed else ""), rows[rows_printed:])
    log_notes(device, card, peaks)
    if args.memory_sweep and sweep_rows is None:
        log("\n## memory sweep (progress)")
        sweep_rows = memory_sweep(fuser, switch, args.sweep_sizes, args.sweep_paths.split(","), device, args)
        print_sweep(sweep_rows, device, md)
    log(f"\ntotal wall time {time.perf_counter() - START:.0f} s")
    return 0


def log_header(args, cfg, label: str, device):
    """The run's header and the FLOPs table; returns (card, its peaks, FLOPs per size label)."""
    card, peaks = card_peaks(device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    log(f"# DDFM sampler benchmark ({datetime.datetime.now().strftime('%Y-%m-%d %H:%M')})")
    log(f"device: {where}; torch {torch.__version__}; model: {label}, "
        f"{parameter_count(cfg) / 1e6:.1f}M parameters, random weights; batch 1; "
        f"warm-up {args.warmup} step(s); median of {args.repeat} timed run(s)")
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        log(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
            f"(other processes share the CPU when it exceeds the CPU count: timings then vary)")
    if card:
        log(f"spec-sheet dense peaks for {card} (TFLOP/s, not measured): "
            + ", ".join(f"{k} {v:g}" for k, v in peaks.items()))
    flops = {}
    with contextlib.suppress(Exception):
        sizes = list(dict.fromkeys(args.size + (args.sweep_sizes if args.memory_sweep else [])))
        log("\n## FLOPs per UNet call (torch.utils.flop_counter, meta device)\n")
        log(format_table(FLOPS_HEADER, flops_table(cfg, sizes, label.startswith("full")), args.markdown))
        flops = {size_label(s): unet_flops(cfg, *s).total for s in args.size}
    return card, peaks, flops


def time_eager(fuser, switch, args, device):
    """Time the eager paths, legacy first; returns (rows, legacy row per size, steps per size)."""
    eager = [n for n in args.path_list if not PATHS[n].get("compile")]
    if "legacy" in eager:
        eager.remove("legacy")
        eager.insert(0, "legacy")
    rows, refs, size_steps = [], {}, {}
    log("\n## timing (progress)")
    for size in args.size:
        pair = gray_pair(size, args.seed)
        size_steps[size] = decide_steps(fuser, switch, size, pair, args, device)
        for name in eager:
            if args.deadline and time.perf_counter() - START > args.deadline:
                rows.append(dict(size=size_label(size), path=name, steps=size_steps[size],
                                 error="skipped: suite deadline"))
                continue
            row = measure(fuser, switch, name, size, pair, size_steps[size], args, device)
            if name == "legacy":
                refs[row["size"]] = row
            compare(row, refs.get(row["size"]))
            progress(row)
            rows.append(row)
    return rows, refs, size_steps


def time_compiled(fuser, switch, compiled, args, device, size_steps, refs) -> list:
    """Time the compiled paths (in a child process with --isolate_compile); returns their rows."""
    rows = []
    left = (args.deadline - (time.perf_counter() - START)) if args.deadline else None
    if args.isolate_compile:
        fuser.model.to("cpu")  # leave the GPU to the child
        free_memory(device)
        if left is not None and left < 60:
            rows += [dict(size=size_label(s), path=n, steps=size_steps[s],
                          error=f"skipped: {left:.0f} s left before the suite deadline")
                     for s in args.size for n in compiled]
        else:
            try:
                rows += run_compiled_in_child(args, compiled, size_steps, refs, left or 3600)
            except Exception as exc:  # noqa: BLE001
                rows += [dict(size=size_label(s), path=n, steps=size_steps[s], error=first_line(exc))
                         for s in args.size for n in compiled]
        fuser.model.to(device)
    else:
        for size in args.size:
            pair = gray_pair(size, args.seed)
            for name in compiled:
                row = measure(fuser, switch, name, size, pair, size_steps[size], args, device)
                compare(row, refs.get(row["size"]))
                progress(row)
                rows.append(row)
    return rows


def log_notes(device, card, peaks) -> None:
    """What the timing table's columns mean."""
    log("\ns/step: the whole sampler step (UNet + EM + FFTs), median of --repeat runs; s/image @100 steps "
        "= 100 x s/step, extrapolated, not timed; x legacy: legacy fp32 s/step / this path's; TFLOP/s: "
        "FLOPs of one UNet call / s/step.")
    if device.type == "cpu":
        log(f"CPU memory: growth of the resident set over the timed runs, sampled every 5 ms; process "
            f"peak RSS (getrusage maxrss, whole run): {gib(process_peak_rss())} GiB.")
    if card:
        log(f"% spec peak: against {card} spec-sheet dense peaks (fp32 non-tensor {peaks['fp32']:g}, "
            f"tf32 {peaks['tf32']:g}, bf16/fp16 {peaks['bf16']:g} TFLOP/s), not measured peaks.")


def print_sweep(sweep_rows, device, md) -> None:
    log("\n## memory: what size fits in how much memory (batch 1, 2-step run)\n")
    log(format_table(sweep_header(device), sweep_rows, md))
    if device.type == "cuda":
        log("\npeak alloc: torch.cuda.max_memory_allocated (tensors, weights included); reserved: what "
            "PyTorch's caching allocator held at its peak; GPU memory needed adds the CUDA context and "
            "libraries, measured as (total - free) - reserved (counts other processes on the GPU too).")


if __name__ == "__main__":
    sys.exit(main())
