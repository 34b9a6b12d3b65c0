#!/usr/bin/env python3
"""DDFM fusion from the command line: configs -> model + sampler -> for each pair: load, fuse, save.

    python sample.py                                   # released defaults: input/ -> output/
    python sample.py --input DIR --save_dir OUT --record

Outputs: ``SAVE_DIR/recon/<stem>.png`` (8-bit grey), with ``--record`` also
``SAVE_DIR/progress/<stem>/x_<step:04d>.png``. Every file is written atomically.
Exit status: 0 when every pair was fused, 1 when any pair failed, 2 on a setup error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from guided_diffusion.diffusion import SamplerOptions, make_schedule
from guided_diffusion.fusion import EM_ROLES, FusionError, FusionOptions, check_finite, fuse, to_gray_uint8
from util.color import rgb_to_ycbcr_over_255
from util.config import ConfigError, load_diffusion_config, load_model_config
from util.images import ImageError, find_pairs, read_gray, write_png_atomic


class SetupError(RuntimeError):
    """A problem found before any pair is fused; the message is one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DDFM: fuse infrared-visible or medical image pairs.")
    p.add_argument("--model_config", default="configs/model_config_imagenet.yaml",
                   help="UNet config (the released keys); model_path inside it")
    p.add_argument("--diffusion_config", default="configs/diffusion_config.yaml",
                   help="diffusion/sampler config (the released keys, plus eta)")
    p.add_argument("--input", default="input", help="folder holding the two modality folders")
    p.add_argument("--modalities", default="ir,vi",
                   help="the two subfolders of --input, infrared role first (default ir,vi)")
    p.add_argument("--save_dir", default="output", help="output folder (recon/, progress/)")
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index (CPU when no CUDA)")
    p.add_argument("--seed", type=int, default=3407, help="seed, reset for every pair (default 3407)")
    p.add_argument("--lamb", type=float, default=0.5, help="EM lambda (default 0.5)")
    p.add_argument("--rho", type=float, default=0.001, help="EM rho (default 0.001)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (overrides the config; 0 as released)")
    p.add_argument("--steps", default=None,
                   help="timestep_respacing override, e.g. 100, 25, '10,5,5', ddim50")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default=None,
                   help="override the config's sampler: ddim (released) or ddpm (paper Algorithm 1)")
    p.add_argument("--em_roles", choices=EM_ROLES, default="release",
                   help="which source is the EM's I: release = visible (as the released code), "
                        "paper = infrared (paper Eq. 13)")
    p.add_argument("--crop_multiple", type=int, default=32,
                   help="sources are cropped top-left to multiples of this (default 32, released)")
    p.add_argument("--record", action="store_true",
                   help="also save the sample after every step under SAVE_DIR/progress/<stem>/")
    p.add_argument("--trace", action="store_true",
                   help="save every step's tensors to SAVE_DIR/trace/<stem>.npz (keys as the golden "
                        "trace: step000__x, __em_f_pre, __em_F, __pred_xstart, __sample, __t)")
    p.add_argument("--attention", choices=("auto", "legacy", "sdpa", "chunked"), default="auto",
                   help="attention kernel: auto = SDPA on CUDA, chunked on CPU; legacy = the "
                        "original einsum (all equal to float rounding)")
    p.add_argument("--download_checkpoint", action="store_true",
                   help="download the checkpoint without asking when it is missing")
    p.add_argument("--allow_random_weights", action="store_true",
                   help="run with an untrained UNet when model_path is empty (timing only)")
    p.add_argument("--overwrite", action="store_true", help="fuse pairs whose output already exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_respacing(text):
    if text is None:
        return None
    text = str(text).strip()
    return int(text) if text.isdigit() else text


def pick_device(gpu: int) -> torch.device:
    if torch.cuda.is_available():
        if not 0 <= gpu < torch.cuda.device_count():
            raise SetupError(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device(f"cuda:{gpu}")
    return torch.device("cpu")


def check_args(args) -> None:
    if not args.lamb > 0:
        raise SetupError(f"--lamb must be > 0, got {args.lamb}")
    if not args.rho >= 0:
        raise SetupError(f"--rho must be >= 0, got {args.rho}")
    if args.eta is not None and args.eta < 0:
        raise SetupError(f"--eta must be >= 0, got {args.eta}")
    if args.crop_multiple < 1:
        raise SetupError(f"--crop_multiple must be >= 1, got {args.crop_multiple}")
    modalities = [m.strip() for m in args.modalities.split(",")]
    if len(modalities) != 2 or not all(modalities) or modalities[0] == modalities[1]:
        raise SetupError(f"--modalities must name two different folders, e.g. ir,vi; got {args.modalities!r}")
    args.modalities = tuple(modalities)


def prepare_save_dir(save_dir: Path, input_dir: Path) -> None:
    save_dir = save_dir.resolve()
    inp = input_dir.resolve()
    if save_dir == inp or inp in save_dir.parents:
        raise SetupError(f"--save_dir {save_dir} is inside --input {inp}; choose a folder outside the inputs")
    try:
        (save_dir / "recon").mkdir(parents=True, exist_ok=True)
        probe = save_dir / "recon" / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SetupError(f"--save_dir {save_dir}: not writable ({exc.strerror}); choose another folder") from None


def load_model(model_cfg, args, device):
    from guided_diffusion.unet import create_model
    from util.checkpoint import CheckpointError
    from util.download import DownloadError, ensure_checkpoint

    path = model_cfg.model_path
    if path is None:
        if not args.allow_random_weights:
            raise SetupError(f"{args.model_config}: model_path is empty; set it to "
                             "256x256_diffusion_uncond.pt (or pass --allow_random_weights for timing runs)")
    else:
        try:
            path = str(ensure_checkpoint(Path(path), assume_yes=args.download_checkpoint))
        except DownloadError as exc:
            raise SetupError(str(exc)) from None
    try:
        model = create_model(**model_cfg.unet_kwargs(), model_path=path, attention=args.attention)
    except CheckpointError as exc:
        raise SetupError(str(exc)) from None
    return model.to(device).eval()


def load_pair_tensors(pair, crop_multiple: int, device):
    """Both sources as grey (N=1, 1, H, W) in [-1, 1], cropped top-left to the multiple."""
    ir = read_gray(pair.a)
    vis = read_gray(pair.b)
    if ir.shape != vis.shape:
        raise ImageError(f"{pair.a}: size {ir.shape[1]}x{ir.shape[0]} differs from its partner "
                         f"{pair.b} ({vis.shape[1]}x{vis.shape[0]}); resize one to match")
    h, w = ir.shape
    h_crop, w_crop = h - h % crop_multiple, w - w % crop_multiple
    if h_crop == 0 or w_crop == 0:
        raise ImageError(f"{pair.a}: {w}x{h} is smaller than {crop_multiple} px on a side; "
                         f"use images of at least {crop_multiple}x{crop_multiple}")

    def prep(gray):
        t = torch.from_numpy(np.ascontiguousarray(gray[:h_crop, :w_crop]))[None, None]
        return ((t / 255) * 2 - 1).to(device)
    return prep(ir), prep(vis)


def progress_writer(folder: Path):
    def on_step(info):
        image = to_gray_uint8(info["sample"], rounding="progress")[0].cpu().numpy()
        write_png_atomic(folder / f"x_{info['step']:04d}.png", image)
    return on_step


class TraceRecorder:
    """Observes every step and keeps its tensors on the host, keyed as ``golden/.../trace.npz``
    (step000 = the first, noisiest step). ``em_F`` is the luminance of the corrected x0."""

    def __init__(self):
        self.arrays = {}
        self.count = 0

    def __call__(self, info):
        prefix = f"step{self.count:03d}__"
        self.arrays[prefix + "t"] = np.array([info["step"]], dtype=np.int64)
        self.arrays[prefix + "x"] = info["x_t"].cpu().numpy()
        self.arrays[prefix + "em_f_pre"] = rgb_to_ycbcr_over_255(info["x0_raw"])[:, :1].cpu().numpy()
        self.arrays[prefix + "em_F"] = rgb_to_ycbcr_over_255(info["x0_pred"])[:, :1].cpu().numpy()
        self.arrays[prefix + "pred_xstart"] = info["x0_pred"].cpu().numpy()
        self.arrays[prefix + "sample"] = info["sample"].cpu().numpy()
        self.count += 1

    def save(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **self.arrays)
        os.replace(tmp, path)


def observers(*callbacks):
    active = [cb for cb in callbacks if cb is not None]
    if not active:
        return None

    def on_step(info):
        for cb in active:
            cb(info)
    return on_step


def run(args) -> int:
    check_args(args)
    try:
        model_cfg = load_model_config(args.model_config)
        diff_cfg = load_diffusion_config(args.diffusion_config).with_overrides(
            eta=args.eta, sampler=args.sampler, timestep_respacing=parse_respacing(args.steps))
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    device = pick_device(args.gpu)

    input_dir, save_dir = Path(args.input), Path(args.save_dir)
    try:
        pairs, problems = find_pairs(input_dir, args.modalities)
    except ImageError as exc:
        raise SetupError(str(exc)) from None
    prepare_save_dir(save_dir, input_dir)

    model = load_model(model_cfg, args, device)
    sched = make_schedule(diff_cfg.noise_schedule, diff_cfg.steps, diff_cfg.timestep_respacing, device)
    opts = SamplerOptions(sampler=diff_cfg.sampler, model_mean_type=diff_cfg.model_mean_type,
                          model_var_type=diff_cfg.model_var_type, clip_denoised=diff_cfg.clip_denoised,
                          dynamic_threshold=diff_cfg.dynamic_threshold,
                          rescale_timesteps=diff_cfg.rescale_timesteps, eta=diff_cfg.eta)
    fusion = FusionOptions(lamb=args.lamb, rho=args.rho, em_roles=args.em_roles)

    from tqdm.auto import tqdm
    log = tqdm.write
    failed = list(problems)
    for line in problems:
        log(f"skipped: {line}")
    fused = skipped = 0
    bar = tqdm(pairs, desc="pairs", disable=args.quiet)
    for pair in bar:
        out_path = save_dir / "recon" / f"{pair.stem}.png"
        if out_path.exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            ir, vis = load_pair_tensors(pair, args.crop_multiple, device)
            trace = TraceRecorder() if args.trace else None
            callback = observers(progress_writer(save_dir / "progress" / pair.stem) if args.record else None,
                                 trace)
            with torch.inference_mode():
                rgb = fuse(model, sched, opts, ir, vis, [args.seed], fusion, callback=callback,
                           progress=not args.quiet, desc=pair.stem)
            check_finite(rgb, [str(pair.a)])
            if trace is not None:
                trace.save(save_dir / "trace" / f"{pair.stem}.npz")
            write_png_atomic(out_path, to_gray_uint8(rgb, rounding="recon")[0].cpu().numpy())
            fused += 1
        except (ImageError, FusionError) as exc:
            failed.append(str(exc))
            log(f"failed: {exc}")
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            msg = (f"{pair.a}: CUDA out of memory at {tuple(ir.shape[-2:])}; try --precision bf16 "
                   "or smaller images")
            failed.append(msg)
            log(f"failed: {msg}")
    print(f"done: {fused} fused, {skipped} skipped (already there; --overwrite to redo), "
          f"{len(failed)} failed -> {save_dir / 'recon'}", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, no partial file was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
