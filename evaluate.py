"""Evaluate fused images against their sources and print the papers' metric table.

    python evaluate.py --input input --fused output/recon
    python evaluate.py --input tests/fixtures/data/MRI_CT --modalities CT,MRI --fused A --fused B

``--input`` holds one folder per modality (default ``ir`` and ``vi``; the first plays the
infrared role), with the same file names in each; every ``--fused`` folder (one method each)
holds one fused image per source pair, named like the sources (any image extension; DDFM's
``sample.py`` writes ``<name>.png``). Images are read as the reference evaluator reads them
(grey = round(0.299 R + 0.587 G + 0.114 B)); the metrics are those of ``metrics/evaluator.py``.

The table (stdout) has one row per fused folder: the mean of every metric over the pairs, two
decimals, columns EN SD MI VIF Qabf SSIM (DDFM's Table 1), then SF AG SCD CC PSNR MSE, then how
many pairs were counted and for how many the sources were cropped. A fused image smaller than
its sources by fewer than 32 pixels per side (``sample.py`` crops to multiples of 32) is compared
with the sources cropped top-left to its size; any other size mismatch, a missing or unreadable
image is named on stderr, one line each, and not counted. ``--csv``, ``--json`` and ``--md``
write every per-image value and the means (``-``: standard output), all or none; an output path
inside ``--input`` or a ``--fused`` folder (through any link), onto an existing image, a folder,
a link, a device or a FIFO is refused before anything is read (exit status 2), and so is a
``--fused`` folder that is a source folder. Exit status 1 when no image was counted or a source
pair could not be read; 130 on Ctrl-C (the worker processes stop at once, nothing is
written). Pairs are measured in ``--workers`` processes from 8 pairs on. ``--profile
vifb,mefb,liu,tang`` prints several tables from one pass over the images (a metric two of them
compute on the same images, such as MEFB's and Liu's Qp, is computed once); each report path
then holds ``{profile}``, e.g. ``--json results_{profile}.json``. Progress bars are drawn
only when stderr is a terminal, and not with ``--quiet``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from metrics.profiles import PROFILE_NAMES, table_profile
from metrics.toolkit_metrics import kernel_choice
from metrics.folder import (CROP_LIMIT, DEFAULT_MAX_WORKERS, MIN_PAIRS_FOR_WORKERS, EvaluationError,
                            default_workers, evaluate_profiles, format_table, to_csv, to_json, to_md)
from util.fileio import check_report_outputs, write_all_or_none
from util.images import IMAGE_EXTENSIONS
from util.outputs import OutputPathError


class UsageError(Exception):
    """A problem with the command line; reported as one line, exit status 2."""

def _profile_names(value: str) -> list:
    """--profile's comma-separated names, checked: known, each once."""
    names = [name.strip() for name in value.split(",")]
    for name in names:
        if name not in PROFILE_NAMES:
            raise UsageError(f"--profile {value}: unknown profile {name!r}; choose from "
                             f"{', '.join(PROFILE_NAMES)}")
    if len(set(names)) < len(names):
        raise UsageError(f"--profile {value}: a profile is named twice")
    return names


def _report_paths(args, names: list) -> dict:
    """The reports to write: key -> (flag, path, index of the profile), one per flag and
    profile; the key is the flag, or 'flag (profile)' with several profiles. ``{profile}`` in a
    path is replaced by the profile's name, and required with several profiles."""
    outputs = {}
    for flag in ("--csv", "--json", "--md"):
        path = getattr(args, flag[2:])
        if path is None:
            continue
        if len(names) > 1 and "{profile}" not in str(path):
            example = (Path("results_{profile}." + flag[2:]) if str(path) == "-"
                       else path.with_name(f"{path.stem}_{{profile}}{path.suffix}"))
            raise UsageError(f"{flag} {path}: with several profiles each report needs {{profile}} "
                             f"in its name, e.g. {example}")
        for k, name in enumerate(names):
            key = flag if len(names) == 1 else f"{flag} ({name})"
            outputs[key] = (flag, Path(str(path).replace("{profile}", name)), k)
    return outputs


def _check_outputs(outputs: dict) -> None:
    """What the shared output check (``util.fileio.check_report_outputs``, run first: inside an
    input, links, devices, FIFOs, two outputs on one file) does not refuse: a report onto an
    existing image, or a folder given where a file is due."""
    for key, (flag, path, _) in outputs.items():
        if str(path) == "-":
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.exists():
            raise UsageError(f"{key} {path} is an existing image; give a new file name "
                             f"(e.g. results{'.' + flag[2:]})")
        if path.is_dir():
            raise UsageError(f"{key} {path} is a folder; give a file name (e.g. {path / ('results.' + flag[2:])})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fusion metrics of fused images against their sources (paper-style table).")
    p.add_argument("--input", required=True, type=Path,
                   help="folder with one sub-folder per source modality (e.g. input/ir, input/vi)")
    p.add_argument("--fused", required=True, type=Path, action="append",
                   help="folder of fused images, one per method; repeat for several methods")
    p.add_argument("--modalities", default="ir,vi",
                   help="the two source folders, infrared role first (default ir,vi; e.g. CT,MRI)")
    p.add_argument("--profile", default="reference", metavar="NAME[,NAME...]",
                   help="metric conventions, one table each: 'reference' (the papers' evaluator, "
                        "default), 'textbook' (SSIM data range 255, MI in bits), or a MATLAB "
                        "toolkit's table: 'vifb' (VIFB's 13 metrics), 'mefb' (MEFB's), 'liu' (Liu's "
                        "toolbox), 'tang' (Tang's Evaluation-for-Image-Fusion), 'tang2022' (its 2022 "
                        "script, behind the 2022 papers' numbers). Several, comma-separated, are "
                        "measured in one pass, a metric two of them share computed once; each "
                        "report path then needs {profile} in it")
    p.add_argument("--workers", type=int, default=None,
                   help="pairs measured at once in separate processes, from "
                        f"{MIN_PAIRS_FOR_WORKERS} pairs on (default: the CPUs this process may use, "
                        f"at most {DEFAULT_MAX_WORKERS}); the values do not depend on it")
    p.add_argument("--csv", type=Path, help="write per-image values and means as CSV")
    p.add_argument("--json", type=Path, help="write per-image values and means as JSON")
    p.add_argument("--md", type=Path, help="write the tables as Markdown")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (never shown when stderr is not a terminal)")
    return p


def _print_tables(args, modalities, profiles, by_profile) -> list:
    """Each profile's table, then what was cropped and not counted; returns every result."""
    for k, (profile, results) in enumerate(zip(profiles, by_profile)):
        print(f"Profile: {profile.name} ({profile.description})")
        if k == 0:
            print(f"Sources: {args.input} ({modalities[0]} as infrared, {modalities[1]})")
        print(format_table(results))
    results = [r for results in by_profile for r in results]
    if any(r.cropped for r in results):
        print(f"cropped: pairs whose sources were cropped top-left to the fused size "
              f"(fused images smaller by < {CROP_LIMIT} px per side, as sample.py's crop to "
              f"multiples of 32)")
    skipped = len({(r.name, s["image"]) for r in results for s in r.skipped})
    if skipped:
        print(f"{skipped} image(s) not counted; the reasons are listed above (stderr)")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def warn(msg: str) -> None:
        tqdm.write(msg, file=sys.stderr)

    try:
        modalities = [m.strip() for m in args.modalities.split(",")]
        if len(modalities) != 2 or not all(modalities) or modalities[0] == modalities[1]:
            raise UsageError(f"--modalities {args.modalities!r}: give two different folder "
                             "names separated by a comma, e.g. ir,vi")
        names = _profile_names(args.profile)
        profiles = [table_profile(name) for name in names]
        try:  # the environment's choice of FMI and Qp kernels, checked before any image
            kernel_choice()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        workers = default_workers() if args.workers is None else args.workers
        if workers < 1:
            raise UsageError(f"--workers {args.workers}: give 1 or more processes")
        outputs = _report_paths(args, names)
        check_report_outputs({key: path for key, (_, path, _) in outputs.items()},
                             [args.input, *args.fused])  # before any image is read
        _check_outputs(outputs)
        by_profile = evaluate_profiles(args.input, modalities, args.fused, names, warn,
                                       args.quiet, workers)
    except (UsageError, EvaluationError, OutputPathError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # reports are written only after every pair: nothing to undo
        print("evaluate.py: interrupted; no table and no report written", file=sys.stderr)
        return 130

    results = _print_tables(args, modalities, profiles, by_profile)
    render = {"--json": lambda k: to_json(by_profile[k], profiles[k], args.input, modalities),
              "--csv": lambda k: to_csv(by_profile[k]),
              "--md": lambda k: to_md(by_profile[k], profiles[k], args.input, modalities)}
    reports = {key: (path, render[flag](k)) for key, (flag, path, k) in outputs.items()}
    try:  # all or none: a failure leaves every earlier report as it was
        write_all_or_none(reports, [args.input, *args.fused])
    except OSError as exc:
        print(f"evaluate.py: error: cannot write results: {exc}", file=sys.stderr)
        return 2
    # a source pair that could not be read is a data error: the table is partial
    bad_source = any(s["reason"].startswith("source ") for r in results for s in r.skipped)
    counted = all(any(r.per_image for r in method_results) for method_results in by_profile)
    return 0 if counted and not bad_source else 1


if __name__ == "__main__":
    sys.exit(main())
