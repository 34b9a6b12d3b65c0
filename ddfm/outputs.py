"""The output folder of a run: checked before any work, temporaries of a killed run removed,
every output written atomically, progress frames published only with their pair.

``SAVE_DIR/recon/<stem>.png`` (always), ``color/``, ``sheet/``, ``trace/<stem>.npz`` and
``progress/<stem>/x_<step>.png`` as the options ask.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ddfm.color import rgb_to_ycbcr_over_255
from ddfm.config import FuseOptions, RunOptions
from ddfm.fusion import to_gray_uint8
from util.fileio import atomic_path, file_in_the_way, write_all_or_none
from util.fileio import remove_stale_temporaries as remove_temporaries_of_dead
from util.images import encode_png, write_png_atomic
from util.outputs import (OutputPathError, check_output_folder, check_output_tree, nearest_writable_folder,
                          real_path)


class SetupError(RuntimeError):
    """A problem found before any pair is fused; the message is one line."""


def output_folders(run: RunOptions, fuse: FuseOptions) -> list[str]:
    """The folders of SAVE_DIR these options write into."""
    return ["recon"] + [name for name, on in (("color", fuse.color), ("sheet", run.sheet),
                                              ("trace", run.trace), ("progress", run.record)) if on]


def prepare_save_dir(save_dir: Path, input_dir: Path, folders: Sequence[str] = ("recon",)) -> None:
    """Check that ``save_dir`` and each of its output ``folders`` (any of which may be a link)
    land outside the inputs and can be written; nothing is created. A problem is a one-line
    :class:`SetupError`."""
    try:
        real, inp = check_output_folder(save_dir, (), "--save_dir"), real_path(input_dir, "--input")
        if real == inp or inp in real.parents:
            raise SetupError(f"--save_dir {save_dir} is inside --input {input_dir}; choose a folder "
                             "outside the inputs")
        check_output_tree(save_dir, folders, [input_dir], "--save_dir")
    except OutputPathError as exc:
        raise SetupError(str(exc)) from None
    # a file where a folder must be: named as such (mkdir would only say "File exists")
    blocking = file_in_the_way(save_dir, folders)
    if blocking is not None:
        raise SetupError(f"--save_dir {save_dir}: not writable ({blocking} is a file, not a folder); "
                         "choose another folder or move that file away")
    folder, writable = nearest_writable_folder(real / "recon")
    if not writable:
        raise SetupError(f"--save_dir {save_dir}: not writable (cannot create files in {folder}); "
                         "choose another folder")


OUTPUT_FOLDERS = ("recon", "color", "sheet", "trace")


def remove_stale_temporaries(save_dir: Path) -> None:
    """Temporaries of a run killed outright (SIGKILL, power loss) never became outputs; remove
    those whose process is gone (another run's, still writing, are kept). Only this program's
    folders are searched (the rest of --save_dir may hold anything)."""
    remove_temporaries_of_dead([save_dir / name for name in OUTPUT_FOLDERS])
    # frames of a pair that never finished, and temporaries inside finished progress folders
    remove_temporaries_of_dead([save_dir / "progress"], subfolders=True)


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

    def save_trace(self, pair, inputs: Sequence[Path] = ()) -> None:
        """Write the trace of a pair that was fused (never of one that failed)."""
        if self.traces is None:
            return
        trace = self.traces[self.pairs.index(pair)]
        with atomic_path(self.save_dir / "trace" / f"{pair.stem}.npz", inputs) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **trace)


def outputs_of(pair, run: RunOptions, fuse: FuseOptions, save_dir: Path) -> list[Path]:
    paths = [save_dir / "recon" / f"{pair.stem}.png"]
    if fuse.color:
        paths.append(save_dir / "color" / f"{pair.stem}.png")
    if run.sheet:
        paths.append(save_dir / "sheet" / f"{pair.stem}.png")
    return paths


def pair_files(pair, ir, vis, result: dict, run: RunOptions, fuse: FuseOptions, sheet_label: str,
               save_dir: Path) -> dict:
    """The PNGs of one fused pair, encoded: {name: (path, bytes)}; ``sheet_label`` names the
    result's panel on a contact sheet."""
    from util.sheet import contact_sheet
    files = {"recon": (save_dir / "recon" / f"{pair.stem}.png", encode_png(result["gray"]))}
    if fuse.color:
        files["color"] = (save_dir / "color" / f"{pair.stem}.png", encode_png(result["color"]))
    if run.sheet:
        ir_name, vis_name = run.modality_names
        panels = [(ir_name, ir.rgb), (vis_name, vis.rgb), (sheet_label, result.get("color", result["gray"]))]
        files["sheet"] = (save_dir / "sheet" / f"{pair.stem}.png", encode_png(contact_sheet(panels)))
    return files


def save_results(batch, results, run: RunOptions, fuse: FuseOptions, sheet_label: str, save_dir: Path,
                 observer=None, inputs: Sequence[Path] = ()) -> list[str]:
    """Write each pair's outputs; return the one-line errors of pairs that were not saved (an
    output path that cannot be written fails that pair only). A pair's PNGs are published
    together or not at all (a full disk leaves none of them); none lands on or in ``inputs``."""
    errors = []
    for (pair, ir, vis), result in zip(batch, results):
        if "error" in result:
            errors.append(result["error"])
            continue
        target = save_dir / "recon" / f"{pair.stem}.png"
        try:
            if observer is not None:  # first, as before the recon: a trace never lacks its pair
                target = save_dir / "trace" / f"{pair.stem}.npz"
                observer.save_trace(pair, inputs)
            files = pair_files(pair, ir, vis, result, run, fuse, sheet_label, save_dir)
            target = files["recon"][0]
            write_all_or_none(files, inputs)
            if observer is not None:
                target = save_dir / "progress" / pair.stem
                observer.finish(pair)
        except OutputPathError as exc:
            errors.append(f"{exc}; {pair.ir.name} not saved")
        except OSError as exc:
            errors.append(f"{target}: cannot write ({exc.strerror or exc}); {pair.ir.name} not saved "
                          "completely, free that path and run again")
    return errors


def blocked_output(pair, run: RunOptions, fuse: FuseOptions, save_dir: Path):
    """One line when an output path of ``pair`` exists but is not a file (a folder), or its
    progress folder is not a folder: the pair fails before it is fused, nothing is touched."""
    paths = outputs_of(pair, run, fuse, save_dir)
    if run.trace:
        paths.append(save_dir / "trace" / f"{pair.stem}.npz")
    for path in paths:
        if (path.exists() or path.is_symlink()) and not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file"
            return (f"{path}: the output path of {pair.ir} is {what}; move it away (or choose "
                    "another --save_dir) and run again")
    progress = save_dir / "progress" / pair.stem
    if run.record and (progress.exists() or progress.is_symlink()) and not (
            progress.is_dir() and not progress.is_symlink()):
        return (f"{progress}: the progress folder of {pair.ir} is a file or link; move it away (or "
                "choose another --save_dir) and run again")
    return None
