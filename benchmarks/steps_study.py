"""The steps study: how few sampler steps DDFM needs, per sampler and step spacing.

    python -m benchmarks.steps_study                                  # Gaussian prior, CPU, no download
    python -m benchmarks.steps_study --prior diffusion --device cuda  # the real checkpoint (GPU)
    python -m benchmarks.steps_study --prior diffusion --model_config tiny --samplers ddim,dpmpp_2m \\
        --spacings uniform --steps 100,50,25,10,5 --reference_steps 0 --pairs 2 --size 64x64

For every sampler (ddim = the release's, dpmpp_2m, dpmpp_3m), spacing (uniform = the release's,
logsnr, quadratic) and step count, each pair is fused through the public API (``Fuser``; the
EM step on, seed 3407 as released) and compared with a ``--reference_steps`` DDIM run (uniform
spacing) of the same prior, noise and EM: PSNR and largest difference of the 8-bit grey outputs,
and the paper's six metrics (EN, SD, MI, VIF, Qabf, SSIM; ``metrics.evaluator``, reference
profile). The prior is the Gaussian one (``--prior gaussian``: exact denoiser, no checkpoint)
or the UNet (``--prior diffusion``: ``--model_config`` full = the released checkpoint, tiny =
the golden tiny UNet, or a YAML path).

Pairs (``--pairs N``, the first N of): FLIR_03952 (FLIR), FLIR_00211 (RoadScene), 01 (TNO),
11 of MRI-CT, MRI-PET and MRI-SPECT, from tests/fixtures/data, each cut top-left to ``--size``
(default 256x256, the medical pairs' size) so that the study fits a CPU. The reference run is
the table's first row (its metrics are the target the others are read against).

Columns: s/image (mean over pairs, one pair at a time, after one untimed warm-up run), UNet calls
per image (= steps), s/call (s/image over UNet calls: flat when time follows the calls), PSNR vs
ref (worst and mean over pairs; "exact" when identical), max|d| u8 (largest grey difference over
pairs), |dPSNR| (largest over pairs of the difference between the
evaluator's PSNR metric of this output and that of the reference output; the 0.5 dB rule reads
it), and the six metrics (means over pairs). The recommended setting is the fewest steps that,
on every pair, keep |dPSNR| <= ``--within_db`` (0.5 dB) and a PSNR vs ref at most that much below
what the released setting (DDIM, uniform, 100 steps) reaches on the pair: the 0.5 dB rule on the
metric alone accepts outputs that visibly differ from the reference. Among equals the most
faithful (highest worst PSNR vs ref) wins. ``--out`` writes the table as Markdown with the
command, the date and the machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddfm import Fuser, load_source
from ddfm.config import FuseOptions
from metrics.evaluator import evaluate_pair
from util.fileio import write_text_atomic
from util.tables import md_row, md_rule, text_table

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "fixtures" / "data"
# (set, infrared-role folder, visible-role folder, stem): IVF first, then medical
PAIRS = (("FLIR", "ir", "vi", "FLIR_03952"), ("RoadScene", "ir", "vi", "FLIR_00211"), ("TNO", "ir", "vi", "01"),
         ("MRI_CT", "CT", "MRI", "11"), ("MRI_PET", "PET", "MRI", "11"), ("MRI_SPECT", "SPECT", "MRI", "11"))
PAPER_METRICS = ("EN", "SD", "MI", "VIF", "Qabf", "SSIM")
MODEL_CONFIGS = {"full": REPO / "configs" / "model_config_imagenet.yaml",
                 "tiny": REPO / "tests" / "fixtures" / "golden" / "unet_tiny.yaml"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prior", choices=("gaussian", "diffusion"), default="gaussian")
    p.add_argument("--model_config", default="full", help="with --prior diffusion: full, tiny or a YAML path")
    p.add_argument("--diffusion_config", default=str(REPO / "configs" / "diffusion_config.yaml"))
    p.add_argument("--samplers", default="ddim,dpmpp_2m,dpmpp_3m")
    p.add_argument("--spacings", default="uniform,logsnr,quadratic")
    p.add_argument("--steps", default="100,50,25,15,10,5")
    p.add_argument("--reference_steps", type=int, default=1000, help="DDIM steps of the reference (0: none)")
    p.add_argument("--pairs", type=int, default=6, help=f"how many of the {len(PAIRS)} pairs")
    p.add_argument("--size", default="256x256", help="HEIGHTxWIDTH each pair is cut to (top-left)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--within_db", type=float, default=0.5)
    p.add_argument("--out", default=None, help="also write the table as Markdown to this file")
    args = p.parse_args(argv)
    if not 1 <= args.pairs <= len(PAIRS):
        p.error(f"--pairs must be 1 to {len(PAIRS)}")
    try:
        args.height, args.width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size {args.size!r}: give HEIGHTxWIDTH, such as 256x256")
    return args


def load_pairs(count: int, height: int, width: int):
    """(name, ir Source, vis Source) cut top-left to height x width."""
    pairs = []
    for folder, a, b, stem in PAIRS[:count]:
        sources = []
        for modality in (a, b):
            path = next((DATA / folder / modality).glob(f"{stem}.*"))
            src = load_source(path, modality)
            if src.gray.shape[0] < height or src.gray.shape[1] < width:
                raise SystemExit(f"error: {path} is smaller than --size {height}x{width}; give a smaller --size")
            sources.append(dataclasses.replace(src, gray=src.gray[:height, :width], rgb=src.rgb[:height, :width]))
        pairs.append((f"{folder}/{stem}", *sources))
    return pairs


def fuse_timed(fuser: Fuser, ir, vis, device) -> tuple[np.ndarray, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    gray = fuser.fuse_sources([ir], [vis], FuseOptions())[0]["gray"]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return gray, time.perf_counter() - start


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def measure(fuser: Fuser, pairs, reference, steps: int, device) -> dict:
    """One setting over the pairs: seconds, fidelity to the reference, the metrics."""
    seconds, psnrs, max_diffs, dpsnr, metrics = [], [], [], [], {k: [] for k in PAPER_METRICS}
    for (name, ir, vis), ref in zip(pairs, reference):
        gray, sec = fuse_timed(fuser, ir, vis, device)
        seconds.append(sec)
        values = evaluate_pair(gray, ir.gray, vis.gray)
        for k in PAPER_METRICS:
            metrics[k].append(values[k])
        if ref is not None:
            psnrs.append(psnr(gray, ref["gray"]))
            max_diffs.append(int(np.abs(gray.astype(np.int16) - ref["gray"].astype(np.int16)).max()))
            dpsnr.append(abs(values["PSNR"] - ref["metrics"]["PSNR"]))
    return {"steps": steps, "seconds": float(np.mean(seconds)), "psnr": psnrs, "max_diff": max_diffs,
            "dpsnr": dpsnr, "metrics": {k: float(np.mean(v)) for k, v in metrics.items()}}


def reference_runs(fuser: Fuser, pairs, steps: int, device) -> list:
    if steps == 0:
        return [None] * len(pairs)
    ref_fuser = fuser.with_sampler(sampler="ddim", spacing="uniform", steps=steps)
    runs = []
    for name, ir, vis in pairs:
        gray, sec = fuse_timed(ref_fuser, ir, vis, device)
        runs.append({"gray": gray, "seconds": sec, "metrics": evaluate_pair(gray, ir.gray, vis.gray)})
        print(f"reference {name}: {steps} DDIM steps, {sec:.1f} s", file=sys.stderr)
    return runs


def fmt_psnr(value: float) -> str:
    return "exact" if math.isinf(value) else f"{value:.2f}"


def table(results: list, reference: list, reference_steps: int) -> tuple[list, list]:
    """The rows of the study, the reference run (when made) first."""
    header = ["sampler", "spacing", "steps", "UNet calls", "s/image", "s/call", "PSNR vs ref (worst)",
              "PSNR vs ref (mean)", "max|d| u8", "|dPSNR| dB", *PAPER_METRICS]
    rows = []
    if reference[0] is not None:
        seconds = float(np.mean([r["seconds"] for r in reference]))
        rows.append(["ddim (reference)", "uniform", str(reference_steps), str(reference_steps), f"{seconds:.3f}",
                     f"{seconds / reference_steps:.4f}", "exact", "exact", "0", "0",
                     *(f"{np.mean([r['metrics'][k] for r in reference]):.4f}" for k in PAPER_METRICS)])
    for r in results:
        has_ref = bool(r["psnr"])
        finite = [v for v in r["psnr"] if math.isfinite(v)]
        mean_psnr = (fmt_psnr(math.inf) if not finite else f"{np.mean(finite):.2f}") if has_ref else "-"
        rows.append([r["sampler"], r["spacing"], str(r["steps"]), str(r["steps"]), f"{r['seconds']:.3f}",
                     f"{r['seconds'] / r['steps']:.4f}", fmt_psnr(min(r["psnr"])) if has_ref else "-", mean_psnr,
                     str(max(r["max_diff"])) if has_ref else "-",
                     f"{max(r['dpsnr']):.3f}" if has_ref else "-",
                     *(f"{r['metrics'][k]:.4f}" for k in PAPER_METRICS)])
    return header, rows


def release_row(results: list):
    """The released setting's result (DDIM, uniform spacing, 100 steps), if it was measured."""
    return next((r for r in results if (r["sampler"], r["spacing"], r["steps"]) == ("ddim", "uniform", 100)), None)


def acceptable(r: dict, release, within_db: float) -> bool:
    """On every pair: the evaluator's PSNR metric within ``within_db`` of the reference's, and
    (when the release's setting was measured) the PSNR against the reference no more than
    ``within_db`` below what the released 100 DDIM steps reach on that pair."""
    if not r["dpsnr"] or max(r["dpsnr"]) > within_db:
        return False
    if release is None:
        return True
    return all(ours >= theirs - within_db for ours, theirs in zip(r["psnr"], release["psnr"]))


def recommended(results: list, within_db: float):
    """The fewest steps that are :func:`acceptable`; among equals, the highest worst-pair PSNR
    against the reference."""
    release = release_row(results)
    ok = [r for r in results if acceptable(r, release, within_db)]
    if not ok:
        return None
    return min(ok, key=lambda r: (r["steps"], -min(r["psnr"])))


def markdown(args, argv, header, rows, best, reference, device) -> str:
    command = "python -m benchmarks.steps_study " + " ".join(argv)
    lines = [f"# Steps study, {args.prior} prior ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)",
             "", f"Command: `{command.strip()}`", "",
             f"Machine: {platform.processor() or platform.machine()}, device {device}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} thread(s). Pairs: {', '.join(n for n, _, _ in load_pair_names(args.pairs))}, "
             f"cut top-left to {args.height}x{args.width}. Seed 3407, EM on (lambda 0.5, rho 0.001).", ""]
    if reference[0] is not None:
        ref_seconds = np.mean([r["seconds"] for r in reference])
        lines += [f"Reference: DDIM, uniform spacing, {args.reference_steps} steps, {ref_seconds:.2f} s/image.", ""]
    lines += [md_row(header), md_rule(len(header))] + [md_row(r) for r in rows] + [""]
    if best is not None:
        lines.append(f"Recommended (fewest steps with, on every pair, |dPSNR| <= {args.within_db} dB and a PSNR "
                     f"vs the reference at most {args.within_db} dB below the released 100 DDIM steps'): "
                     f"**{best['sampler']}, {best['spacing']} spacing, {best['steps']} steps** "
                     f"(worst PSNR vs the reference {fmt_psnr(min(best['psnr']))} dB, "
                     f"largest grey difference {max(best['max_diff'])}).")
    return "\n".join(lines) + "\n"


def load_pair_names(count: int):
    return [(f"{folder}/{stem}", None, None) for folder, _, _, stem in PAIRS[:count]]


def build_fuser(args) -> Fuser:
    if args.prior == "gaussian":
        return Fuser(diffusion_config=args.diffusion_config, prior="gaussian", device=args.device)
    model_config = MODEL_CONFIGS.get(args.model_config, args.model_config)
    return Fuser(model_config, args.diffusion_config, prior="diffusion", device=args.device)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fuser = build_fuser(args)
    device = fuser.device
    pairs = load_pairs(args.pairs, args.height, args.width)
    fuse_timed(fuser.with_sampler(steps=2), *pairs[0][1:], device)  # warm-up, untimed
    with torch.inference_mode():
        reference = reference_runs(fuser, pairs, args.reference_steps, device)
    results = []
    for sampler in args.samplers.split(","):
        for spacing in args.spacings.split(","):
            for steps in (int(s) for s in args.steps.split(",")):
                r = measure(fuser.with_sampler(sampler=sampler, spacing=spacing, steps=steps),
                            pairs, reference, steps, device)
                results.append({**r, "sampler": sampler, "spacing": spacing})
                print(f"{sampler} {spacing} {steps}: {r['seconds']:.2f} s/image", file=sys.stderr)
    header, rows = table(results, reference, args.reference_steps)
    print(text_table(header, rows))
    best = recommended(results, args.within_db)
    if best is not None:
        print(f"recommended: {best['sampler']}, {best['spacing']} spacing, {best['steps']} steps")
    if args.out:
        write_text_atomic(args.out, markdown(args, argv, header, rows, best, reference, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
