"""The folder runner: every pair of an input folder fused into an output folder.

    status = fuse_folder(input="input", save_dir="output", lamb=0.5)   # options by name
    status = run_folder(resolve_options({...}))                         # or resolved once

This is what ``sample.py`` runs (it only parses the command line), and what ``reproduce.py``
and the web demo call. Pairs are found by name, batched by size, decoded batch by batch,
fused, and saved atomically; a pair that fails (bad file, out of memory, an output path in the
way) is reported in one line and the others go on; with ``torchrun`` the pairs are split
across processes. Exit status: 0 when every pair was fused (or skipped), 1 when any pair
failed, 2 on a setup error (bad option, config, input folder or checkpoint), 130 when
interrupted.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ddfm.config import (PRIOR_LABELS, ConfigError, DiffusionConfig, Door, FuseOptions, FuserOptions,
                         ModelConfig, RunOptions, checked, load_diffusion_config, load_model_config,
                         load_options_file, split_options)
from ddfm.fuser import Fuser
from ddfm.fusion import FusionError
from ddfm.outputs import (PairObserver, SetupError, blocked_output, output_folders, outputs_of,
                          prepare_save_dir, remove_stale_temporaries, save_results)
from ddfm.sources import check_pair, load_source
from guided_diffusion.checkpoint import CheckpointError
from util.download import DownloadError
from util.folderlock import lock_folder
from util.images import ImageError, find_pairs, peek_size
from util.outputs import OutputPathError



@dataclass(frozen=True)
class RunConfig:
    """Every option of a run, resolved and checked: the runner's, the per-pair fusion options,
    the sampler's (the diffusion config with its overrides), the Fuser's, and the UNet's config
    (None with ``prior="none"``)."""
    run: RunOptions
    fuse: FuseOptions
    diffusion: DiffusionConfig
    fuser: FuserOptions
    model: Optional[ModelConfig]


def resolve_options(given: Mapping[str, Any], door: Door = Door.PYTHON) -> RunConfig:
    """Options by name (any of ``ddfm.config``'s, as given through ``door``) -> a checked
    :class:`RunConfig`. Later sources win: the defaults, the preset, the ``config`` options
    file, then ``given``; the diffusion options start from the ``diffusion_config`` file.
    A bad value raises :class:`SetupError` (one line)."""
    try:
        return _resolve(split_options(given, door), door)
    except ConfigError as exc:
        raise SetupError(str(exc)) from None


def _resolve(groups: dict, door: Door) -> RunConfig:
    config_file = groups[RunOptions].get("config")
    if config_file is not None:  # the file's values first, the given ones over them
        from_file = load_options_file(config_file)
        _build({cls: dict(values) for cls, values in from_file.items()}, Door.yaml(config_file))
        groups = {cls: {**from_file[cls], **values} for cls, values in groups.items()}
    return _build(groups, door)


def _build(groups: dict, door: Door) -> RunConfig:
    """The checked options of ``groups`` ({class: values}); errors named as ``door`` names them."""
    run_values = groups[RunOptions]
    if run_values.get("preset") is not None:
        _apply_preset(run_values["preset"], run_values, groups[FuseOptions])
    run = checked(RunOptions(**run_values), door)
    fuse = checked(FuseOptions(**groups[FuseOptions]), door)
    fuser = checked(FuserOptions(**groups[FuserOptions]), door)
    base = load_diffusion_config(run.diffusion_config)
    diffusion = checked(dataclasses.replace(base, **groups[DiffusionConfig]), door)
    model = load_model_config(run.model_config) if fuser.prior == "diffusion" else None
    if model is not None and fuse.crop_multiple % model.size_multiple:
        m = model.size_multiple
        raise ConfigError(f"{door.spell(_field(FuseOptions, 'crop_multiple'))} {fuse.crop_multiple} does "
                          f"not fit the UNet of {run.model_config}, whose input sides must be multiples "
                          f"of {m}; use {m} or a multiple of it")
    return RunConfig(run, fuse, diffusion, fuser, model)


def _field(cls, name):
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def _apply_preset(name, run_values: dict, fuse_values: dict) -> None:
    """A dataset preset fills the modalities and colour output unless they were given."""
    from util.presets import PresetError, load_preset
    try:
        preset = load_preset(name)
    except PresetError as exc:
        raise SetupError(str(exc)) from None
    run_values.setdefault("modalities", ",".join(preset.modalities))
    fuse_values.setdefault("color", preset.color)


def make_fuser(config: RunConfig, device=None) -> Fuser:
    """The Fuser of ``config``; setup problems as :class:`SetupError`."""
    try:
        # the path, so that checkpoint errors can name it
        return Fuser(config.run.model_config, config.diffusion, config.fuser, device=device)
    except (ValueError, CheckpointError, DownloadError) as exc:  # ConfigError is a ValueError
        raise SetupError(str(exc)) from None


def run_folder(config: RunConfig) -> int:
    """Fuse every pair of ``config.run.input`` into ``config.run.save_dir``; the exit status.
    Setup problems raise :class:`SetupError` before anything is written: the model is built
    before any folder is made, and one run at a time writes into a folder (its lock)."""
    run = config.run
    input_dir, save_dir = Path(run.input), Path(run.save_dir)
    try:
        pairs, problems = find_pairs(input_dir, run.modality_names)
    except ImageError as exc:
        raise SetupError(str(exc)) from None
    prepare_save_dir(save_dir, input_dir, output_folders(run, config.fuse))

    dist = Distributed()
    lock = None
    try:
        fuser = make_fuser(config, dist.device(config.fuser.gpu))
        refused = None
        if dist.rank == 0:  # before any rank writes: this run's folder, and no dead run's temporaries
            try:
                lock = _lock(save_dir)
                remove_stale_temporaries(save_dir)
            except SetupError as exc:
                refused = exc
        if dist.total([int(refused is not None)])[0]:  # every rank stops when rank 0 could not lock
            raise refused or SetupError(f"--save_dir {save_dir}: rank 0 could not take the folder; see its error")
        return fuse_pairs(fuser, dist.share(pairs), problems if dist.rank == 0 else [], config, dist)
    finally:
        if lock is not None:
            lock.release()
        dist.close()


def _lock(save_dir: Path):
    try:
        return lock_folder(save_dir, "--save_dir")
    except OutputPathError as exc:  # FolderBusyError among them: another run writes there
        raise SetupError(str(exc)) from None


def fuse_pairs(fuser: Fuser, pairs, problems, config: RunConfig, dist) -> int:
    """Fuse ``pairs`` batch by batch (those whose outputs exist are skipped unless
    ``overwrite``); report ``problems`` and every failure; print the summary."""
    from tqdm.auto import tqdm

    def log(line):  # diagnostics go to stderr, with the progress bars and the summary
        tqdm.write(line, file=sys.stderr)
    run, save_dir = config.run, Path(config.run.save_dir)
    failed = len(problems)
    for line in problems:
        log(f"failed: {line}")
    skipped = fused = 0
    todo = []
    for pair in pairs:
        blocked = blocked_output(pair, run, config.fuse, save_dir)
        if blocked:
            failed += 1
            log(f"failed: {blocked}")
        elif not run.overwrite and all(p.is_file() for p in outputs_of(pair, run, config.fuse, save_dir)):
            skipped += 1
        else:
            todo.append(pair)

    bar = tqdm(total=len(todo), desc="pairs", disable=run.quiet)
    for batch_pairs in batches_by_size(todo, run.batch, fuser, config.fuse):
        batch_fused, batch_failed = fuse_batch(fuser, batch_pairs, config, log)
        fused, failed = fused + batch_fused, failed + batch_failed
        bar.update(len(batch_pairs))
    bar.close()
    fused, skipped, failed = dist.total([fused, skipped, failed])
    if dist.rank == 0:
        note = " (outputs exist; --overwrite to redo)" if skipped else ""
        print(f"done: {fused} fused, {skipped} skipped{note}, {failed} failed -> {save_dir}",
              file=sys.stderr)
    return 1 if failed else 0


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


def batches_by_size(pairs, batch_size: int, fuser, opts):
    """Group pairs by the size the UNet sees, read from the file headers (with --size crop,
    sources that crop to the same multiple share a batch), keeping the sorted order within
    each group. Pixels are decoded batch by batch, so a large dataset is never all in memory."""
    groups: dict = {}
    for index, pair in enumerate(pairs):
        shape = peek_size(pair.ir)
        if shape is None or min(shape) < opts.crop_multiple:
            key = ("alone", index)  # fails when decoded, with its reason
        else:
            key = fuser.working_size(*shape, opts) if opts.size == "crop" else shape
        groups.setdefault(key, []).append(pair)
    for items in groups.values():
        for start in range(0, len(items), batch_size):
            yield items[start:start + batch_size]


def fuse_batch(fuser: Fuser, batch_pairs, config: RunConfig, log) -> tuple[int, int]:
    """Decode, fuse and save one batch; log each failure. Returns (fused, failed)."""
    run, opts, save_dir = config.run, config.fuse, Path(config.run.save_dir)
    batch, failed = [], 0
    for pair in batch_pairs:
        try:
            ir, vis = load_source(pair.ir), load_source(pair.vis)
            check_pair(ir, vis, opts.crop_multiple)  # here, so a bad pair never joins a batch
            batch.append((pair, ir, vis))
        except ImageError as exc:
            failed += 1
            log(f"failed: {exc}")
    if not batch:
        return 0, failed
    names = ", ".join(pair.stem for pair, _, _ in batch)
    observer = (PairObserver([p for p, _, _ in batch], save_dir, run.record, run.trace)
                if (run.record or run.trace) else None)
    try:
        results = fuser.fuse_sources([ir for _, ir, _ in batch], [vis for _, _, vis in batch], opts,
                                     callback=observer, progress=not run.quiet, desc=names)
        errors = save_results(batch, results, run, opts, PRIOR_LABELS[fuser.prior], save_dir, observer,
                              inputs=(Path(run.input),))
        for line in errors:
            log(f"failed: {line}")
        return len(batch) - len(errors), failed + len(errors)
    except (ImageError, FusionError) as exc:
        log(f"failed: {exc}")
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        line = out_of_memory_message(batch, exc, fuser, config.fuser.precision)
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


def out_of_memory_message(batch, exc, fuser: Fuser, precision: str) -> str:
    (pair, ir, _), n = batch[0], len(batch)
    h, w = ir.gray.shape
    gpu = isinstance(exc, torch.cuda.OutOfMemoryError) or fuser.device.type == "cuda"
    where = "GPU" if gpu else "CPU"
    fixes = ([] if precision in ("bf16", "fp16") else ["--precision bf16"]) + \
        (["--batch 1"] if n > 1 else []) + ["smaller images (crop or resize them)"]
    pairs = pair.stem if n == 1 else f"{pair.stem} and {n - 1} more in its batch"
    return f"{pair.ir}: out of {where} memory fusing {pairs} at {w}x{h}; try {', '.join(fixes)}"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def fuse_folder(config: Optional[RunConfig] = None, /, **options) -> int:
    """Fuse a folder of pairs: a resolved ``config``, or options by name (``input=``,
    ``save_dir=``, ``lamb=``, ... any of ``ddfm.config``'s). Returns the exit status (see the
    module docstring); a setup error or an interrupt is reported on stderr in one line. The
    caller sets TF32 (:func:`ddfm.set_tf32`)."""
    previous = None
    try:  # SIGTERM cleans up temporaries as Ctrl-C does (only possible in the main thread)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except (ValueError, AttributeError):
        pass
    try:
        return run_folder(config if config is not None else resolve_options(options))
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
