#!/usr/bin/env python3
"""What size fits in how much GPU memory: for each size and precision, the smallest memory cap
(torch.cuda.set_per_process_memory_fraction) under which two DDFM steps of the full 256x256
UNet (random weights) still run, and the peak allocated there.

PyTorch's peak memory without a cap overstates the need: cuDNN picks convolution algorithms
with large workspaces when memory is free and falls back to leaner ones when it is not, so the
cap is what a smaller card would see. CUDA only.

    python -m benchmarks.bench_memory [--sizes 256x256 480x640 768x1024] [--caps 4 6 8 12 16 24 32]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddfm import FuseOptions, Fuser, Source, set_tf32  # noqa: E402
from ddfm.config import PRECISIONS  # noqa: E402
from benchmarks.flops import parse_size, size_label  # noqa: E402
from ddfm.config import load_model_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def try_once(fuser, h, w, cap_gib, total_gib):
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib / total_gib))
    torch.cuda.reset_peak_memory_stats()
    rng = np.random.default_rng(0)
    src = [Source(np.zeros((h, w, 3), np.uint8), rng.integers(0, 256, (h, w)).astype(np.float32), "a")]
    try:
        t0 = time.time()
        fuser.fuse_sources(src, src, FuseOptions())
        torch.cuda.synchronize()
        return True, torch.cuda.max_memory_allocated() / 2**30, (time.time() - t0) / fuser.schedule.num_steps
    except torch.cuda.OutOfMemoryError:
        return False, None, None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[(256, 256), (480, 640), (768, 1024)])
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--caps", nargs="+", type=float, default=[4, 6, 8, 12, 16, 24, 32, 48])
    args = p.parse_args(argv)
    bad = [q for q in args.precisions.split(",") if q not in PRECISIONS]
    if bad:
        p.error(f"--precisions: unknown {', '.join(bad)}; use {', '.join(PRECISIONS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_memory.py needs CUDA")
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    cfg = load_model_config(REPO / "configs" / "model_config_imagenet.yaml")
    import dataclasses
    cfg = dataclasses.replace(cfg, model_path=None)
    print(f"device: {torch.cuda.get_device_name()} ({total:.0f} GiB); torch {torch.__version__}; 2 steps, batch 1")
    print("| size | precision | smallest cap that runs (GiB) | peak allocated there (GiB) | s/step there |")
    print("|---|---|---|---|---|")
    for precision in args.precisions.split(","):
        set_tf32(precision == "tf32")  # process-wide, as sample.py sets it
        fuser = Fuser(cfg, REPO / "configs" / "diffusion_config.yaml", precision=precision, steps=2,
                      allow_random_weights=True)
        for h, w in args.sizes:
            result = "> {:g}".format(args.caps[-1]), "-", "-"
            for cap in args.caps:
                ok, peak, sps = try_once(fuser, h, w, cap, total)
                if ok:
                    result = f"{cap:g}", f"{peak:.2f}", f"{sps:.3f}"
                    break
            print(f"| {size_label((h, w))} | {precision} | {result[0]} | {result[1]} | {result[2]} |", flush=True)
        del fuser
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
