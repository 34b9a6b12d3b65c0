#!/usr/bin/env python3
"""DDFM fusion from the command line: configs -> model + sampler -> for each pair: load, fuse, save.

    python sample.py                                   # released defaults: input/ -> output/
    python sample.py --input DIR --save_dir OUT --record
    torchrun --nproc_per_node 4 sample.py --input DIR  # pairs split across processes

Outputs (each written atomically): ``SAVE_DIR/recon/<stem>.png`` (8-bit grey, as released),
with ``--color`` ``color/<stem>.png``, with ``--record`` ``progress/<stem>/x_<step:04d>.png``,
with ``--sheet`` ``sheet/<stem>.png``, with ``--trace`` ``trace/<stem>.npz``.
Exit status: 0 when every pair was fused (or skipped), 1 when any pair failed, 2 on a setup
error (bad option, config, input folder or checkpoint), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from ddfm import (BATCHED_UNET, COMPILE_MODES, PRECISIONS, PRIORS, SIZES, FuseOptions, Fuser,
                  check_pair, load_source)
from guided_diffusion.fusion import EM_ROLES, FusionError, to_gray_uint8
from util.color import rgb_to_ycbcr_over_255
from util.config import ConfigError
from util.fileio import atomic_path
from util.images import ImageError, find_pairs, peek_size, write_png_atomic


class SetupError(RuntimeError):
    """A problem found before any pair is fused; the message is one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DDFM: fuse infrared-visible or medical image pairs.")
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--model_config", default="configs/model_config_imagenet.yaml",
                   help="UNet config (the released keys); model_path inside it")
    g.add_argument("--diffusion_config", default="configs/diffusion_config.yaml",
                   help="diffusion/sampler config (the released keys, plus eta)")
    g.add_argument("--preset", default=None,
                   help="dataset preset: a name in configs/presets/ (e.g. roadscene, harvard_mri_pet) "
                        "or a YAML path; sets --modalities and --color unless given")
    g.add_argument("--input", default="input", help="folder holding the two modality folders")
    g.add_argument("--modalities", default=None,
                   help="the two subfolders of --input, infrared role first (default ir,vi)")
    g.add_argument("--save_dir", default="output", help="output folder")
    g.add_argument("--record", action="store_true",
                   help="save the sample after every step under SAVE_DIR/progress/<stem>/")
    g.add_argument("--trace", action="store_true",
                   help="save every step's tensors to SAVE_DIR/trace/<stem>.npz (keys as the golden trace)")
    g.add_argument("--color", action="store_true", default=None,
                   help="also write SAVE_DIR/color/<stem>.png: fused Y with the colour source's CbCr")
    g.add_argument("--sheet", action="store_true",
                   help="also write SAVE_DIR/sheet/<stem>.png: sources and result side by side")
    g.add_argument("--overwrite", action="store_true", help="fuse pairs whose outputs already exist")
    g.add_argument("--quiet", action="store_true", help="no progress bars")

    g = p.add_argument_group("fusion (each changes the output)")
    g.add_argument("--seed", type=int, default=3407, help="seed, reset for every pair (default 3407)")
    g.add_argument("--lamb", type=float, default=0.5, help="EM lambda (default 0.5)")
    g.add_argument("--rho", type=float, default=0.001, help="EM rho (default 0.001)")
    g.add_argument("--eta", type=float, default=None, help="DDIM eta (overrides the config; 0 as released)")
    g.add_argument("--steps", default=None,
                   help="timestep_respacing override: 100, 25, '10,5,5', ddim50")
    g.add_argument("--sampler", choices=("ddim", "ddpm"), default=None,
                   help="override the config: ddim (released) or ddpm (paper Algorithm 1)")
    g.add_argument("--em_roles", choices=EM_ROLES, default="release",
                   help="which source is the EM's I: release = visible (as the released code), "
                        "paper = infrared (paper Eq. 13)")
    g.add_argument("--size", choices=SIZES, default="crop",
                   help="crop: top-left to multiples of --crop_multiple (released); "
                        "pad: reflect-pad, fuse, crop back to the exact source size")
    g.add_argument("--crop_multiple", type=int, default=32, help="size multiple (default 32)")
    g.add_argument("--prior", choices=PRIORS, default="diffusion",
                   help="diffusion (DDFM) or none: the EM fusion alone, no UNet, no checkpoint")
    g.add_argument("--em_iters", type=int, default=None,
                   help="with --prior none: EM iterations (default: the sampler's step count)")

    g = p.add_argument_group("speed and devices (outputs equal to float rounding unless noted)")
    g.add_argument("--gpu", type=int, default=0, help="CUDA device index (CPU when no CUDA)")
    g.add_argument("--batch", type=int, default=1,
                   help="pairs of the same size fused together (each with its own seeded noise)")
    g.add_argument("--batched_unet", choices=BATCHED_UNET, nargs="?", const="on", default="auto",
                   help="with --batch: one UNet call for the whole batch (on; equal to the per-pair "
                        "result to float rounding) or one per pair (off; outputs identical whatever the "
                        "batch); auto (default) = on under tf32/bf16/fp16, off in fp32")
    g.add_argument("--noise_device", choices=("run", "cpu"), default="run",
                   help="where seeded noise is drawn: run = the run device (released; a GPU run then "
                        "differs from a CPU run), cpu = same numbers on every device")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="UNet precision: fp32 (faithful), tf32, bf16, fp16 (EM and FFT stay fp32)")
    g.add_argument("--attention", choices=("auto", "legacy", "sdpa", "chunked"), default="auto",
                   help="attention kernel: auto = SDPA; chunked = legacy maths 128 queries at a time (bit-identical to legacy); legacy = the original")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (the first step compiles; its time is printed)")
    g.add_argument("--compile_mode", choices=COMPILE_MODES, default=None,
                   help="with --compile: default, reduce-overhead (CUDA graphs; CUDA only) or max-autotune")
    g.add_argument("--compile_cache", default=None, metavar="DIR",
                   help="with --compile: folder of the compile caches, reused by later runs "
                        "(default $TORCHINDUCTOR_CACHE_DIR, else ~/.cache/ddfm/inductor)")
    g.add_argument("--channels_last", action="store_true", help="channels_last memory format")
    g.add_argument("--download_checkpoint", action="store_true",
                   help="download the checkpoint without asking when it is missing")
    g.add_argument("--allow_random_weights", action="store_true",
                   help="run an untrained UNet when model_path is empty (timing only)")
    return p


def parse_respacing(text):
    if text is None:
        return None
    text = str(text).strip()
    return int(text) if text.isdigit() else text


def apply_preset(args) -> None:
    """Fill --modalities/--color from a dataset preset; explicit flags win."""
    if args.preset is not None:
        from util.presets import PresetError, load_preset
        try:
            preset = load_preset(args.preset)
        except PresetError as exc:
            raise SetupError(str(exc)) from None
        if args.modalities is None:
            args.modalities = ",".join(preset.modalities)
        if args.color is None:
            args.color = preset.color
    if args.modalities is None:
        args.modalities = "ir,vi"
    args.color = bool(args.color)


def check_args(args) -> FuseOptions:
    apply_preset(args)
    modalities = [m.strip() for m in args.modalities.split(",")]
    if len(modalities) != 2 or not all(modalities) or modalities[0] == modalities[1]:
        raise SetupError(f"--modalities must name two different folders, e.g. ir,vi; got {args.modalities!r}")
    args.modalities = tuple(modalities)
    for name, value, ok, rule in (("--eta", args.eta, args.eta is None or args.eta >= 0, ">= 0"),
                                  ("--batch", args.batch, args.batch >= 1, ">= 1"),
                                  ("--em_iters", args.em_iters, args.em_iters is None or args.em_iters >= 1, ">= 1")):
        if not ok:
            raise SetupError(f"{name} must be {rule}, got {value}")
    for name in ("compile_mode", "compile_cache"):
        if getattr(args, name) is not None and not args.compile:
            raise SetupError(f"--{name} applies to a compiled UNet; add --compile or drop --{name}")
    try:
        return FuseOptions(seed=args.seed, lamb=args.lamb, rho=args.rho, em_roles=args.em_roles,
                           size=args.size, crop_multiple=args.crop_multiple, color=args.color).validate()
    except ValueError as exc:
        raise SetupError(f"--{str(exc)}") from None


def prepare_save_dir(save_dir: Path, input_dir: Path) -> None:
    save_dir, inp = save_dir.resolve(), input_dir.resolve()
    if save_dir == inp or inp in save_dir.parents:
        raise SetupError(f"--save_dir {save_dir} is inside --input {inp}; choose a folder outside the inputs")
    try:
        (save_dir / "recon").mkdir(parents=True, exist_ok=True)
        probe = save_dir / "recon" / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SetupError(f"--save_dir {save_dir}: not writable ({exc.strerror}); choose another folder") from None


OUTPUT_FOLDERS = ("recon", "color", "sheet", "trace")


def remove_stale_temporaries(save_dir: Path) -> None:
    """Temporary files of a run killed outright (SIGKILL, power loss) never became outputs;
    remove them so the folder holds only complete files. Only this program's folders are
    searched (the rest of --save_dir may hold anything)."""
    folders = [save_dir / name for name in OUTPUT_FOLDERS]
    progress = save_dir / "progress"
    if progress.is_dir():
        folders += [p for p in progress.iterdir() if p.is_dir()]
    for folder in folders:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


class Distributed:
    """torchrun support: rank r of W takes pairs r, r+W, ... of the sorted list."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        if self.active:
            import torch.distributed as dist
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend, timeout=timedelta(hours=12))

    def device(self, gpu: int):
        if self.active and torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device(f"cuda:{self.local_rank}")
        return None  # Fuser picks --gpu or the CPU

    def share(self, items: list) -> list:
        return items[self.rank::self.world] if self.active else items

    def total(self, counts: list[int]) -> list[int]:
        if not self.active:
            return counts
        import torch.distributed as dist
        t = torch.tensor(counts, dtype=torch.int64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.cpu().tolist()

    def barrier(self):
        if self.active:
            import torch.distributed as dist
            dist.barrier()

    def close(self):
        if self.active:
            import torch.distributed as dist
            dist.destroy_process_group()


class PairObserver:
    """Observes the steps of one batch: progress PNGs and traces, per pair."""

    def __init__(self, pairs, save_dir: Path, record: bool, trace: bool):
        self.pairs, self.save_dir, self.record = pairs, save_dir, record
        self.traces = [dict() for _ in pairs] if trace else None
        self.count = 0

    def __call__(self, info):
        if self.record:
            images = to_gray_uint8(info["sample"], rounding="progress").cpu().numpy()
            finite = torch.isfinite(info["sample"]).flatten(1).all(dim=1).tolist()
            for pair, image, ok in zip(self.pairs, images, finite):
                if not ok:  # a NaN/Inf sample: the pair fails at the end; save no garbage
                    continue
                write_png_atomic(self.save_dir / "progress" / pair.stem / f"x_{info['step']:04d}.png", image)
        if self.traces is not None:
            prefix = f"step{self.count:03d}__"
            arrays = {"x": info["x_t"], "em_f_pre": rgb_to_ycbcr_over_255(info["x0_raw"])[:, :1],
                      "em_F": rgb_to_ycbcr_over_255(info["x0_pred"])[:, :1],
                      "pred_xstart": info["x0_pred"], "sample": info["sample"]}
            for k, trace in enumerate(self.traces):
                trace[prefix + "t"] = np.array([info["step"]], dtype=np.int64)
                for key, value in arrays.items():
                    trace[prefix + key] = value[k:k + 1].cpu().numpy()
        self.count += 1

    def save_traces(self, results):
        """Write the traces of the pairs that were fused (not of those that failed)."""
        for pair, trace, result in zip(self.pairs, self.traces or [], results):
            if "error" in result:
                continue
            with atomic_path(self.save_dir / "trace" / f"{pair.stem}.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **trace)


def outputs_of(pair, args, save_dir: Path) -> list[Path]:
    paths = [save_dir / "recon" / f"{pair.stem}.png"]
    if args.color:
        paths.append(save_dir / "color" / f"{pair.stem}.png")
    if args.sheet:
        paths.append(save_dir / "sheet" / f"{pair.stem}.png")
    return paths


def batches_by_size(pairs, batch_size: int, fuser, opts):
    """Group pairs by the size the UNet sees, read from the file headers (with --size crop,
    sources that crop to the same multiple share a batch), keeping the sorted order within
    each group. Pixels are decoded batch by batch, so a large dataset is never all in memory."""
    groups: dict = {}
    for index, pair in enumerate(pairs):
        shape = peek_size(pair.a)
        if shape is None or min(shape) < opts.crop_multiple:
            key = ("alone", index)  # fails when decoded, with its reason
        else:
            key = fuser.working_size(*shape, opts) if opts.size == "crop" else shape
        groups.setdefault(key, []).append(pair)
    for items in groups.values():
        for start in range(0, len(items), batch_size):
            yield items[start:start + batch_size]


def save_results(batch, results, args, save_dir: Path) -> list[str]:
    """Write each pair's outputs; return the one-line errors of pairs that produced none."""
    from util.sheet import contact_sheet
    errors = []
    for (pair, ir, vis), result in zip(batch, results):
        if "error" in result:
            errors.append(result["error"])
            continue
        write_png_atomic(save_dir / "recon" / f"{pair.stem}.png", result["gray"])
        if args.color:
            write_png_atomic(save_dir / "color" / f"{pair.stem}.png", result["color"])
        if args.sheet:
            a_name, b_name = args.modalities
            shown = result.get("color", result["gray"])
            panels = [(a_name, ir.rgb), (b_name, vis.rgb),
                      ("DDFM" if args.prior == "diffusion" else "EM only", shown)]
            write_png_atomic(save_dir / "sheet" / f"{pair.stem}.png", contact_sheet(panels))
    return errors


def load_configs(args):
    """Both configs with the command line's overrides, checked before anything else is done."""
    from util.config import load_diffusion_config, load_model_config
    try:
        model_cfg = load_model_config(args.model_config) if args.prior == "diffusion" else None
        diff_cfg = load_diffusion_config(args.diffusion_config).with_overrides(
            where=f"command line (with {args.diffusion_config})", names={"timestep_respacing": "--steps"},
            eta=args.eta, sampler=args.sampler, timestep_respacing=parse_respacing(args.steps))
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    if model_cfg is not None and args.crop_multiple % model_cfg.size_multiple:
        m = model_cfg.size_multiple
        raise SetupError(f"--crop_multiple {args.crop_multiple} does not fit the UNet of "
                         f"{args.model_config}, whose input sides must be multiples of {m}; "
                         f"use --crop_multiple {m} or a multiple of it")
    return model_cfg, diff_cfg


def run(args) -> int:
    opts = check_args(args)
    model_cfg, diff_cfg = load_configs(args)
    input_dir, save_dir = Path(args.input), Path(args.save_dir)
    try:
        pairs, problems = find_pairs(input_dir, args.modalities)
    except ImageError as exc:
        raise SetupError(str(exc)) from None
    prepare_save_dir(save_dir, input_dir)

    dist = Distributed()
    try:
        device = dist.device(args.gpu)
        if dist.rank == 0:  # before any rank writes
            remove_stale_temporaries(save_dir)
        dist.barrier()
        try:
            fuser = Fuser(model_cfg or args.model_config, diff_cfg, device=device,
                          gpu=args.gpu, prior=args.prior, attention=args.attention,
                          precision=args.precision, compile=args.compile,
                          channels_last=args.channels_last, em_iterations=args.em_iters,
                          download_checkpoint=args.download_checkpoint,
                          allow_random_weights=args.allow_random_weights,
                          batched_unet=args.batched_unet, noise_device=args.noise_device,
                          compile_mode=args.compile_mode or "default", compile_cache=args.compile_cache)
        except ConfigError as exc:
            raise SetupError(str(exc)) from None
        except Exception as exc:
            from util.checkpoint import CheckpointError
            from util.download import DownloadError
            if isinstance(exc, (CheckpointError, DownloadError, ValueError)):
                raise SetupError(str(exc)) from None
            raise
        return fuse_all(fuser, dist.share(pairs), problems if dist.rank == 0 else [], opts, args,
                        save_dir, dist)
    finally:
        dist.close()


def fuse_all(fuser, pairs, problems, opts, args, save_dir, dist) -> int:
    from tqdm.auto import tqdm

    def log(line):  # diagnostics go to stderr, with the progress bars and the summary
        tqdm.write(line, file=sys.stderr)
    failed = len(problems)
    for line in problems:
        log(f"failed: {line}")
    skipped = fused = 0
    todo = []
    for pair in pairs:
        if not args.overwrite and all(p.exists() for p in outputs_of(pair, args, save_dir)):
            skipped += 1
        else:
            todo.append(pair)

    bar = tqdm(total=len(todo), desc="pairs", disable=args.quiet)
    for batch_pairs in batches_by_size(todo, args.batch, fuser, opts):
        batch = []
        for pair in batch_pairs:
            try:
                ir, vis = load_source(pair.a), load_source(pair.b)
                check_pair(ir, vis, opts.crop_multiple)  # here, so a bad pair never joins a batch
                batch.append((pair, ir, vis))
            except ImageError as exc:
                failed += 1
                log(f"failed: {exc}")
        if not batch:
            bar.update(len(batch_pairs))
            continue
        names = ", ".join(pair.stem for pair, _, _ in batch)
        try:
            observer = (PairObserver([p for p, _, _ in batch], save_dir, args.record, args.trace)
                        if (args.record or args.trace) else None)
            results = fuser.fuse_sources([ir for _, ir, _ in batch], [vis for _, _, vis in batch], opts,
                                         callback=observer, progress=not args.quiet, desc=names)
            if observer is not None:
                observer.save_traces(results)
            errors = save_results(batch, results, args, save_dir)
            for line in errors:
                log(f"failed: {line}")
            failed += len(errors)
            fused += len(batch) - len(errors)
        except (ImageError, FusionError) as exc:
            failed += len(batch)
            log(f"failed: {exc}")
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            line = out_of_memory_message(batch, exc, fuser, args)
            del exc  # drop the traceback's tensors before emptying the cache
            torch.cuda.empty_cache()
            failed += len(batch)
            log(f"failed: {line}")
        bar.update(len(batch_pairs))
    bar.close()
    fused, skipped, failed = dist.total([fused, skipped, failed])
    if dist.rank == 0:
        note = " (outputs exist; --overwrite to redo)" if skipped else ""
        print(f"done: {fused} fused, {skipped} skipped{note}, {failed} failed -> {save_dir}",
              file=sys.stderr)
    return 1 if failed else 0


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return "DefaultCPUAllocator" in text or "can't allocate memory" in text or "out of memory" in text


def out_of_memory_message(batch, exc, fuser, args) -> str:
    (pair, ir, _), n = batch[0], len(batch)
    h, w = ir.gray.shape
    gpu = isinstance(exc, torch.cuda.OutOfMemoryError) or fuser.device.type == "cuda"
    where = "GPU" if gpu else "CPU"
    fixes = ([] if args.precision in ("bf16", "fp16") else ["--precision bf16"]) + \
        (["--batch 1"] if n > 1 else []) + ["smaller images (crop or resize them)"]
    pairs = pair.stem if n == 1 else f"{pair.stem} and {n - 1} more in its batch"
    return f"{pair.a}: out of {where} memory fusing {pairs} at {w}x{h}; try {', '.join(fixes)}"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    previous = None
    try:  # SIGTERM cleans up temporaries as Ctrl-C does (only possible in the main thread)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except (ValueError, AttributeError):
        pass
    try:
        return run(args)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, no partial file was written; "
              "run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
