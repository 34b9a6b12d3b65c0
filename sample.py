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
import shutil
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ddfm import FuseOptions, Fuser, FuserOptions, check_pair, load_source, set_tf32
from ddfm.fusion import FusionError, to_gray_uint8
from ddfm.color import rgb_to_ycbcr_over_255
from ddfm.options import PRIOR_LABELS
from util.config import ConfigError, DiffusionConfig
from util.checkpoint import CheckpointError
from util.download import DownloadError
from util.fileio import atomic_path, file_in_the_way
from util.images import ImageError, find_pairs, peek_size, write_png_atomic
from util.options import add_options, flag_names, option, values_of


class SetupError(RuntimeError):
    """A problem found before any pair is fused; the message is one line."""


@dataclass(frozen=True)
class SampleOptions:
    """The options of sample.py itself (inputs, outputs, batching); the fusion and speed
    options are the fields of FuseOptions, DiffusionConfig and FuserOptions."""
    model_config: str = option("configs/model_config_imagenet.yaml",
                               help="UNet config (the released keys); model_path inside it")
    diffusion_config: str = option("configs/diffusion_config.yaml",
                                   help="diffusion/sampler config (the released keys, plus eta)")
    preset: Optional[str] = option(None, help="dataset preset: a name in configs/presets/ (e.g. roadscene, "
                                              "harvard_mri_pet) or a YAML path; sets --modalities and --color "
                                              "unless given")
    input: str = option("input", help="folder holding the two modality folders")
    modalities: Optional[str] = option(None, help="the two subfolders of --input, infrared role first "
                                                  "(default ir,vi)")
    save_dir: str = option("output", help="output folder")
    record: bool = option(False, help="save the sample after every step under SAVE_DIR/progress/<stem>/")
    trace: bool = option(False, help="save every step's tensors to SAVE_DIR/trace/<stem>.npz "
                                     "(keys as the golden trace)")
    sheet: bool = option(False, help="also write SAVE_DIR/sheet/<stem>.png: sources and result side by side")
    overwrite: bool = option(False, help="fuse pairs whose outputs already exist")
    quiet: bool = option(False, help="no progress bars")
    batch: int = option(1, group="speed",
                        help="pairs of the same size fused together (each with its own seeded noise)")


GROUPS = {"io": "inputs and outputs", "fusion": "fusion (each changes the output)",
          "speed": "speed and devices (outputs equal to float rounding unless noted)"}
# where the options come from, in the order --help lists them within a group
OPTION_CLASSES = (SampleOptions, FuseOptions, DiffusionConfig, FuserOptions)
DEFAULT_GROUPS = {SampleOptions: "io", DiffusionConfig: "fusion"}
OVERRIDES = (DiffusionConfig,)  # None unless given: the config file's value stands


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DDFM: fuse infrared-visible or medical image pairs.")
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for cls in OPTION_CLASSES:
        add_options(p, cls, groups, DEFAULT_GROUPS.get(cls), overrides=cls in OVERRIDES)
    return p


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
    # --eta is checked with the diffusion config's eta (load_configs), by the same rule
    for name, value, ok, rule in (("--batch", args.batch, args.batch >= 1, ">= 1"),
                                  ("--em_iterations", args.em_iterations,
                                   args.em_iterations is None or args.em_iterations >= 1, ">= 1")):
        if not ok:
            raise SetupError(f"{name} must be {rule}, got {value}")
    for name in ("compile_mode", "compile_cache"):
        if getattr(args, name) is not None and not args.compile:
            raise SetupError(f"--{name} applies to a compiled UNet; add --compile or drop --{name}")
    try:
        return FuseOptions(**values_of(FuseOptions, args)).validate()
    except ValueError as exc:
        raise SetupError(f"--{str(exc)}") from None


def prepare_save_dir(save_dir: Path, input_dir: Path, args=None) -> None:
    save_dir, inp = save_dir.resolve(), input_dir.resolve()
    if save_dir == inp or inp in save_dir.parents:
        raise SetupError(f"--save_dir {save_dir} is inside --input {inp}; choose a folder outside the inputs")
    folders = ["recon"] + ([] if args is None else
                           [name for name, on in (("color", args.color), ("sheet", args.sheet),
                                                  ("trace", args.trace), ("progress", args.record)) if on])
    # a file where a folder must be: named as such (mkdir would only say "File exists")
    blocking = file_in_the_way(save_dir, folders)
    if blocking is not None:
        raise SetupError(f"--save_dir {save_dir}: not writable ({blocking} is a file, not a folder); "
                         "choose another folder or move that file away")
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
        for p in progress.iterdir():  # frames of a pair that never finished (see PairObserver)
            if p.is_dir() and not p.is_symlink() and p.name.startswith(".") and p.name.endswith(".tmp"):
                shutil.rmtree(p, ignore_errors=True)
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
    """Observes the steps of one batch: progress PNGs and traces, per pair.

    A pair's frames are written to a hidden folder ``progress/.<stem>.<pid>.tmp`` and renamed
    to ``progress/<stem>`` only once the pair is saved (:meth:`finish`), so a progress folder is
    complete or absent; :meth:`discard` removes the unfinished ones (a failed pair, an
    interrupt) and the next run removes those of a run killed outright."""

    def __init__(self, pairs, save_dir: Path, record: bool, trace: bool):
        self.pairs, self.save_dir, self.record = pairs, save_dir, record
        self.traces = [dict() for _ in pairs] if trace else None
        self.count = 0
        self.frames = {pair.stem: save_dir / "progress" / f".{pair.stem}.{os.getpid()}.tmp"
                       for pair in pairs} if record else {}

    def finish(self, pair) -> None:
        """The pair is saved: its frames become ``progress/<stem>`` (replacing an older one)."""
        frames = self.frames.pop(pair.stem, None)
        if frames is None or not frames.is_dir():
            return
        final = frames.parent / pair.stem
        old = frames.parent / f".{pair.stem}.{os.getpid()}.old.tmp"
        if final.is_dir() and not final.is_symlink():
            os.replace(final, old)
        os.replace(frames, final)  # anything else in the way fails the pair (OSError), untouched
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        for frames in self.frames.values():
            shutil.rmtree(frames, ignore_errors=True)
        self.frames = {}

    def __call__(self, info):
        if self.record:
            images = to_gray_uint8(info["sample"], rounding="progress").cpu().numpy()
            finite = torch.isfinite(info["sample"]).flatten(1).all(dim=1).tolist()
            for pair, image, ok in zip(self.pairs, images, finite):
                if not ok:  # a NaN/Inf sample: the pair fails at the end; save no garbage
                    continue
                write_png_atomic(self.frames[pair.stem] / f"x_{info['step']:04d}.png", image)
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

    def save_trace(self, pair) -> None:
        """Write the trace of a pair that was fused (never of one that failed)."""
        if self.traces is None:
            return
        trace = self.traces[self.pairs.index(pair)]
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


def save_results(batch, results, args, save_dir: Path, observer=None) -> list[str]:
    """Write each pair's outputs; return the one-line errors of pairs that were not saved
    (an output path that cannot be written fails that pair only)."""
    from util.sheet import contact_sheet
    errors = []
    for (pair, ir, vis), result in zip(batch, results):
        if "error" in result:
            errors.append(result["error"])
            continue
        try:
            if observer is not None:  # first, as before the recon: a trace never lacks its pair
                target = save_dir / "trace" / f"{pair.stem}.npz"
                observer.save_trace(pair)
            target = save_dir / "recon" / f"{pair.stem}.png"
            write_png_atomic(target, result["gray"])
            if args.color:
                target = save_dir / "color" / f"{pair.stem}.png"
                write_png_atomic(target, result["color"])
            if args.sheet:
                a_name, b_name = args.modalities
                shown = result.get("color", result["gray"])
                panels = [(a_name, ir.rgb), (b_name, vis.rgb),
                          (PRIOR_LABELS[args.prior], shown)]
                target = save_dir / "sheet" / f"{pair.stem}.png"
                write_png_atomic(target, contact_sheet(panels))
            if observer is not None:
                target = save_dir / "progress" / pair.stem
                observer.finish(pair)
        except OSError as exc:
            errors.append(f"{target}: cannot write ({exc.strerror or exc}); {pair.a.name} not saved "
                          "completely, free that path and run again")
    return errors


def blocked_output(pair, args, save_dir: Path):
    """One line when an output path of ``pair`` exists but is not a file (a folder), or its
    progress folder is not a folder: the pair fails before it is fused, nothing is touched."""
    paths = outputs_of(pair, args, save_dir)
    if args.trace:
        paths.append(save_dir / "trace" / f"{pair.stem}.npz")
    for path in paths:
        if (path.exists() or path.is_symlink()) and not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file"
            return (f"{path}: the output path of {pair.a} is {what}; move it away (or choose "
                    "another --save_dir) and run again")
    progress = save_dir / "progress" / pair.stem
    if args.record and (progress.exists() or progress.is_symlink()) and not (
            progress.is_dir() and not progress.is_symlink()):
        return (f"{progress}: the progress folder of {pair.a} is a file or link; move it away (or "
                "choose another --save_dir) and run again")
    return None


def load_configs(args):
    """Both configs with the command line's overrides, checked before anything else is done."""
    from util.config import load_diffusion_config, load_model_config
    try:
        model_cfg = load_model_config(args.model_config) if args.prior == "diffusion" else None
        diff_cfg = load_diffusion_config(args.diffusion_config).with_overrides(
            where=f"command line (with {args.diffusion_config})", names=flag_names(DiffusionConfig),
            **values_of(DiffusionConfig, args))
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    if model_cfg is not None and args.crop_multiple % model_cfg.size_multiple:
        m = model_cfg.size_multiple
        raise SetupError(f"--crop_multiple {args.crop_multiple} does not fit the UNet of "
                         f"{args.model_config}, whose input sides must be multiples of {m}; "
                         f"use --crop_multiple {m} or a multiple of it")
    return model_cfg, diff_cfg


def make_fuser(args, diff_cfg, device=None) -> Fuser:
    """The Fuser of these options (``load_configs``' diffusion config); setup problems as SetupError."""
    try:
        # the path (checked by load_configs as model_cfg), so that checkpoint errors can name it
        return Fuser(args.model_config, diff_cfg, FuserOptions(**values_of(FuserOptions, args)),
                     device=device)
    except (ValueError, CheckpointError, DownloadError) as exc:  # ConfigError is a ValueError
        raise SetupError(str(exc)) from None


def run(args) -> int:
    opts = check_args(args)
    model_cfg, diff_cfg = load_configs(args)
    input_dir, save_dir = Path(args.input), Path(args.save_dir)
    try:
        pairs, problems = find_pairs(input_dir, args.modalities)
    except ImageError as exc:
        raise SetupError(str(exc)) from None
    prepare_save_dir(save_dir, input_dir, args)

    dist = Distributed()
    try:
        device = dist.device(args.gpu)
        if dist.rank == 0:  # before any rank writes
            remove_stale_temporaries(save_dir)
        dist.barrier()
        fuser = make_fuser(args, diff_cfg, device)
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
        blocked = blocked_output(pair, args, save_dir)
        if blocked:
            failed += 1
            log(f"failed: {blocked}")
        elif not args.overwrite and all(p.is_file() for p in outputs_of(pair, args, save_dir)):
            skipped += 1
        else:
            todo.append(pair)

    bar = tqdm(total=len(todo), desc="pairs", disable=args.quiet)
    for batch_pairs in batches_by_size(todo, args.batch, fuser, opts):
        batch_fused, batch_failed = fuse_batch(fuser, batch_pairs, opts, args, save_dir, log)
        fused, failed = fused + batch_fused, failed + batch_failed
        bar.update(len(batch_pairs))
    bar.close()
    fused, skipped, failed = dist.total([fused, skipped, failed])
    if dist.rank == 0:
        note = " (outputs exist; --overwrite to redo)" if skipped else ""
        print(f"done: {fused} fused, {skipped} skipped{note}, {failed} failed -> {save_dir}",
              file=sys.stderr)
    return 1 if failed else 0


def fuse_batch(fuser, batch_pairs, opts, args, save_dir: Path, log) -> tuple[int, int]:
    """Decode, fuse and save one batch; log each failure. Returns (fused, failed)."""
    batch, failed = [], 0
    for pair in batch_pairs:
        try:
            ir, vis = load_source(pair.a), load_source(pair.b)
            check_pair(ir, vis, opts.crop_multiple)  # here, so a bad pair never joins a batch
            batch.append((pair, ir, vis))
        except ImageError as exc:
            failed += 1
            log(f"failed: {exc}")
    if not batch:
        return 0, failed
    names = ", ".join(pair.stem for pair, _, _ in batch)
    observer = (PairObserver([p for p, _, _ in batch], save_dir, args.record, args.trace)
                if (args.record or args.trace) else None)
    try:
        results = fuser.fuse_sources([ir for _, ir, _ in batch], [vis for _, _, vis in batch], opts,
                                     callback=observer, progress=not args.quiet, desc=names)
        errors = save_results(batch, results, args, save_dir, observer)
        for line in errors:
            log(f"failed: {line}")
        return len(batch) - len(errors), failed + len(errors)
    except (ImageError, FusionError) as exc:
        log(f"failed: {exc}")
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        line = out_of_memory_message(batch, exc, fuser, args)
        del exc  # drop the traceback's tensors before emptying the cache
        torch.cuda.empty_cache()
        log(f"failed: {line}")
    finally:
        if observer is not None:  # frames of pairs not saved (failed, interrupted)
            observer.discard()
    return 0, failed + len(batch)


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


def fuse_folder(args: argparse.Namespace) -> int:
    """Fuse the pairs of ``args.input`` into ``args.save_dir`` (``args``: sample.py's options,
    as :func:`build_parser` parses them; the caller sets TF32 with :func:`ddfm.set_tf32`).
    Returns the exit status; a setup error or an interrupt is reported on stderr in one line."""
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    set_tf32(args.precision == "tf32")  # process-wide: fp32 is faithful only with TF32 off
    return fuse_folder(args)


if __name__ == "__main__":
    sys.exit(main())
