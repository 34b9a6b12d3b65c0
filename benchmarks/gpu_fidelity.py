#!/usr/bin/env python3
"""Fidelity of a device against the golden fixtures (made on the CPU): runs sample.py on the
golden pipeline cases with --noise_device cpu (so the device starts from the CPU's noise) and
prints, per case, the largest trace differences and how many recon pixels match the golden
(the release's fp32) PNGs, with their PSNR. It runs on the CPU too (the fast paths' fidelity there).

    python -m benchmarks.gpu_fidelity [--attention auto] [--precision fp32]
    python -m benchmarks.gpu_fidelity --precision bf16 --batch 3            # batched UNet (auto)
    python -m benchmarks.gpu_fidelity --compile --cases small_10steps       # compiled fp32
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
from ddfm.config import ATTENTION_MODES, BATCHED_UNET, COMPILE_MODES, PRECISIONS  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fixtures", default=str(REPO / "tests" / "fixtures"),
                   help="folder holding golden/ (the repository's tests/fixtures)")
    p.add_argument("--attention", default="auto", choices=ATTENTION_MODES)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--cases", default="small_10steps,flir_10steps")
    p.add_argument("--batch", type=int, default=1, help="sample.py --batch (flir_10steps: 3 = one batch)")
    p.add_argument("--batched_unet", default="auto", choices=BATCHED_UNET)
    p.add_argument("--compile", action="store_true", help="sample.py --compile")
    p.add_argument("--compile_mode", default=None, choices=COMPILE_MODES,
                   help="sample.py --compile_mode (with --compile)")
    args = p.parse_args(argv)
    args.case_list = [c for c in args.cases.split(",") if c]
    args.golden = golden = Path(args.fixtures) / "golden"
    unknown = [c for c in args.case_list if not (golden / "pipeline" / c / "diffusion_config.yaml").is_file()]
    if unknown or not args.case_list:
        have = sorted(d.name for d in (golden / "pipeline").glob("*") if d.is_dir())
        p.error(f"--cases: no golden case {', '.join(unknown) or '(none given)'} in {golden / 'pipeline'}; "
                f"use {', '.join(have)}")
    if args.compile_mode and not args.compile:
        p.error("--compile_mode needs --compile")
    return args


def main(argv=None):
    args = parse_args(argv)
    extra = ["--batch", str(args.batch), "--batched_unet", args.batched_unet]
    if args.compile:
        extra += ["--compile"] + (["--compile_mode", args.compile_mode] if args.compile_mode else [])
    path = f"batch {args.batch}, batched UNet {args.batched_unet}" + (
        f", compiled ({args.compile_mode or 'default'})" if args.compile else "")
    golden = args.golden
    print("| case | attention | precision | path | trace max abs diff (sample / x0 / EM in / EM out) "
          "| recon pixels identical | max diff | PSNR dB | compile |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.case_list:
        case_dir = golden / "pipeline" / case
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "sample.py", "--model_config", str(golden / "unet_tiny.yaml"),
                   "--diffusion_config", str(case_dir / "diffusion_config.yaml"),
                   "--input", str(case_dir / "input"), "--save_dir", out, "--quiet",
                   "--noise_device", "cpu", "--attention", args.attention, "--precision", args.precision, *extra]
            trace_file = case_dir / "trace.npz"
            if trace_file.exists():
                cmd.append("--trace")
            run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if run.returncode != 0:
                print(f"| {case} | failed: {run.stderr.strip().splitlines()[-1]} |")
                continue
            trace_text = "-"
            if trace_file.exists():
                ref = np.load(trace_file)
                ours = np.load(next(Path(out, "trace").glob("*.npz")))
                worst = {k: max(float(np.abs(ours[n] - ref[n]).max()) for n in ref.files if n.endswith("__" + k))
                         for k in ("sample", "pred_xstart", "em_f_pre", "em_F")}
                trace_text = " / ".join(f"{v:.1e}" for v in worst.values())
            same = total = 0
            worst_px = 0
            sq = 0.0
            for ref_png in sorted((case_dir / "recon").glob("*.png")):
                a = np.asarray(Image.open(Path(out) / "recon" / ref_png.name)).astype(int)
                b = np.asarray(Image.open(ref_png)).astype(int)
                same += int((a == b).sum())
                total += a.size
                worst_px = max(worst_px, int(np.abs(a - b).max()))
                sq += float(((a - b) ** 2).sum())
            psnr = "inf" if sq == 0 else f"{10 * np.log10(255 ** 2 * total / sq):.1f}"
            compiled = next((ln.split(" (")[0] for ln in run.stderr.splitlines() if ln.startswith("compile: ")), "-")
            print(f"| {case} | {args.attention} | {args.precision} | {path} | {trace_text} "
                  f"| {100 * same / total:.3f} % | {worst_px} | {psnr} | {compiled} |", flush=True)


if __name__ == "__main__":
    main()
