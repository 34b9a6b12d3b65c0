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
write every per-image value and the means; an output path inside ``--input`` or a ``--fused``
folder, onto an existing image or a folder is refused before anything is read (exit status 2).
Progress bars are drawn only when stderr is a terminal, and not with ``--quiet``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from util.fileio import write_text_atomic
from util.images import IMAGE_EXTENSIONS, ImageError, files_for_stem, find_pairs, images_by_stem, link_problem
from metrics.evaluator import TABLE_COLUMNS
from metrics.profiles import PROFILE_NAMES, table_profile
from util.tables import md_row, md_rule, text_table

CROP_LIMIT = 32  # a fused image may be smaller than its sources by fewer pixels than this


@dataclass
class MethodResult:
    name: str
    fused_dir: Path
    per_image: Dict[str, Dict[str, float]] = field(default_factory=dict)
    cropped: List[str] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)
    columns: Sequence[str] = TABLE_COLUMNS  # the profile's metrics, in table order
    decimals: int = 2  # of the means in the tables (the MATLAB toolkits print 4)

    @property
    def mean(self) -> Dict[str, float]:
        if not self.per_image:
            return {}
        # NaN (a toolkit's 0/0 on a degenerate image) is left out of the mean, as VIFB's nanmean
        vals = {k: [v[k] for v in self.per_image.values() if not math.isnan(v[k])] for k in self.columns}
        return {k: math.fsum(x) / len(x) if x else math.nan for k, x in vals.items()}


class UsageError(Exception):
    """A problem with the command line or the folders; reported as one line, exit status 2."""


def _method_names(dirs: Sequence[Path]) -> List[str]:
    names = [d.name or str(d) for d in dirs]
    if len(set(names)) < len(names):  # two folders called e.g. 'recon': use the paths given
        names = [str(d) for d in dirs]
    if len(set(names)) < len(names):
        raise UsageError("the same --fused folder is given twice")
    return names


def _source_pairs(input_dir: Path, modalities: Sequence[str]):
    if not input_dir.is_dir():
        raise UsageError(f"--input {input_dir}: not a folder")
    folders = [input_dir / m for m in modalities]
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        have = sorted(p.name for p in input_dir.iterdir() if p.is_dir())
        hint = f"; its folders are {', '.join(have)}: name two with --modalities A,B" if have else ""
        raise UsageError(f"--input {input_dir} has no folder {missing[0].name!r}{hint}")
    try:  # sample.py's pairing rule, so that both count the same pairs
        pairs, problems = find_pairs(input_dir, modalities)
    except ImageError as exc:
        raise UsageError(str(exc)) from None
    return ([(pair.stem, pair.a, pair.b) for pair in pairs],
            [(problem.path.stem, problem.reason) for problem in problems])


def _check_outputs(args) -> None:
    """Refuse an output file that would overwrite an input: inside --input or a --fused folder,
    onto an existing image, or onto another of the outputs."""
    guarded = [("--input", args.input.resolve())] + [("--fused", d.resolve()) for d in args.fused]
    seen = {}
    for flag in ("--csv", "--json", "--md"):
        path = getattr(args, flag[2:])
        if path is None:
            continue
        where = path.resolve()
        for name, folder in guarded:
            if where == folder or folder in where.parents:
                raise UsageError(f"{flag} {path} is inside {name} {folder}, whose files are inputs; "
                                 "write the results outside it")
        if where.suffix.lower() in IMAGE_EXTENSIONS and where.exists():
            raise UsageError(f"{flag} {path} is an existing image; give a new file name "
                             f"(e.g. results{'.' + flag[2:]})")
        if where.is_dir():
            raise UsageError(f"{flag} {path} is a folder; give a file name (e.g. {path / ('results.' + flag[2:])})")
        if where in seen:
            raise UsageError(f"{flag} and {seen[where]} are the same file {path}; give two names")
        seen[where] = flag


def _evaluate_method(name: str, fused_dir: Path, pairs, source_problems, profile, warn,
                     quiet: bool = False) -> MethodResult:
    res = MethodResult(name, fused_dir, columns=profile.columns, decimals=profile.decimals)

    def skip(stem: str, reason: str) -> None:
        res.skipped.append({"image": stem, "reason": reason})
        warn(f"{name}/{stem}: {reason}; not counted")

    for stem, reason in source_problems:
        skip(stem, reason)
    fused = images_by_stem(fused_dir, broken_links=True)
    # no bars with --quiet, nor when stderr is not a terminal (logs, pipes): disable=None
    for stem, path_a, path_b in tqdm(pairs, desc=name, unit="img", file=sys.stderr,
                                     dynamic_ncols=True, leave=False, disable=True if quiet else None):
        found = files_for_stem(fused, stem)
        if not found:
            skip(stem, f"no fused image in {fused_dir}")
            continue
        if len(found) > 1:
            skip(stem, f"several fused images: {', '.join(p.name for p in found)}")
            continue
        dangling = link_problem(found[0])
        if dangling:
            skip(stem, f"{found[0]}: {dangling}")
            continue
        try:
            f, a, b = profile.read(found[0]), profile.read(path_a), profile.read(path_b)
        except ImageError as exc:
            skip(stem, str(exc))
            continue
        if a.shape[:2] != b.shape[:2]:
            skip(stem, f"sources differ in size ({path_a.name} {a.shape[1]}x{a.shape[0]}, "
                       f"{path_b.name} {b.shape[1]}x{b.shape[0]})")
            continue
        (h, w), (sh, sw) = f.shape[:2], a.shape[:2]
        if (h, w) != (sh, sw):
            if h <= sh and w <= sw and sh - h < CROP_LIMIT and sw - w < CROP_LIMIT:
                a, b = a[:h, :w], b[:h, :w]
                res.cropped.append(stem)
            else:
                skip(stem, f"fused image is {w}x{h}, sources are {sw}x{sh} "
                           f"(only a crop of fewer than {CROP_LIMIT} pixels per side is accepted)")
                continue
        try:
            res.per_image[stem] = profile.evaluate_pair(f, a, b)
        except ValueError as exc:
            skip(stem, str(exc))
    return res


# --------------------------------------------------------------------------------------------
# output


def _columns(results: Sequence[MethodResult]) -> Sequence[str]:
    return results[0].columns if results else TABLE_COLUMNS


def _fmt(v: Optional[float], decimals: int = 2) -> str:
    return "-" if v is None else f"{v:.{decimals}f}"


def format_table(results: Sequence[MethodResult]) -> str:
    cols = _columns(results)
    header = ["Method", *cols, "pairs", "cropped"]
    rows = []
    for r in results:
        m = r.mean
        rows.append([r.name, *(_fmt(m.get(k), r.decimals) for k in cols),
                     str(len(r.per_image)), str(len(r.cropped))])
    return text_table(header, rows)


def method_entry(r: MethodResult) -> dict:
    """One method's results as the JSON file holds them."""
    return {"fused": str(r.fused_dir), "count": len(r.per_image), "mean": r.mean,
            "per_image": r.per_image, "cropped": r.cropped, "skipped": r.skipped}


def _to_json(results, profile, input_dir, modalities) -> str:
    cols = _columns(results)
    doc = {
        "profile": profile.name,
        "profile_description": profile.description,
        "input": str(input_dir),
        "modalities": list(modalities),
        "metrics": list(cols),
        "methods": {r.name: method_entry(r) for r in results},
    }
    return json.dumps(doc, indent=1) + "\n"


def _to_csv(results) -> str:
    cols = _columns(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "image", "cropped", *cols])
    for r in results:
        for stem, vals in r.per_image.items():
            w.writerow([r.name, stem, int(stem in r.cropped), *(repr(vals[k]) for k in cols)])
        if r.per_image:
            m = r.mean
            w.writerow([r.name, "mean", len(r.cropped), *(repr(m[k]) for k in cols)])
    return buf.getvalue()


def _to_md(results, profile, input_dir, modalities) -> str:
    cols = _columns(results)
    out = [f"# Fusion metrics: `{input_dir}` ({', '.join(modalities)}), profile `{profile.name}`",
           "", profile.description + ".", "",
           "## Means", "",
           md_row(["Method", *cols, "pairs", "cropped"]),
           md_rule(len(cols) + 3)]
    for r in results:
        m = r.mean
        out.append(md_row([r.name, *(_fmt(m.get(k), r.decimals) for k in cols),
                            str(len(r.per_image)), str(len(r.cropped))]))
    for r in results:
        out += ["", f"## {r.name} (`{r.fused_dir}`)", "",
                md_row(["Image", *cols]),
                md_rule(len(cols) + 1)]
        for stem, vals in r.per_image.items():
            mark = " (cropped)" if stem in r.cropped else ""
            out.append(md_row([stem + mark, *(f"{vals[k]:.4f}" for k in cols)]))
        if r.per_image:
            m = r.mean
            out.append(md_row(["**mean**", *(f"**{m[k]:.4f}**" for k in cols)]))
        for s in r.skipped:
            out.append(f"\nNot counted: `{s['image']}`: {s['reason']}.")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------


def evaluate_folders(input_dir: Path, modalities: Sequence[str], fused_dirs: Sequence[Path],
                     profile: str = "reference", warn=None, quiet: bool = False) -> List[MethodResult]:
    """The metrics of every fused folder (one method each) against the sources in
    ``input_dir``; each image not counted is passed to ``warn`` (default: stderr) in one line;
    ``quiet``: no progress bars. Raises :class:`UsageError` for a folder that is missing or holds
    no sources."""
    warn = warn or (lambda msg: tqdm.write(msg, file=sys.stderr))
    conventions = table_profile(profile)
    names = _method_names(fused_dirs)
    for d in fused_dirs:
        if not Path(d).is_dir():
            raise UsageError(f"--fused {d}: not a folder")
    pairs, problems = _source_pairs(Path(input_dir), modalities)
    return [_evaluate_method(n, Path(d), pairs, problems, conventions, warn, quiet)
            for n, d in zip(names, fused_dirs)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fusion metrics of fused images against their sources (paper-style table).")
    p.add_argument("--input", required=True, type=Path,
                   help="folder with one sub-folder per source modality (e.g. input/ir, input/vi)")
    p.add_argument("--fused", required=True, type=Path, action="append",
                   help="folder of fused images, one per method; repeat for several methods")
    p.add_argument("--modalities", default="ir,vi",
                   help="the two source folders, infrared role first (default ir,vi; e.g. CT,MRI)")
    p.add_argument("--profile", default="reference", choices=PROFILE_NAMES,
                   help="metric conventions: 'reference' (the papers' evaluator, default), "
                        "'textbook' (SSIM data range 255, MI in bits), or a MATLAB toolkit's table: "
                        "'vifb' (VIFB's 13 metrics), 'tang' (Tang's Evaluation-for-Image-Fusion)")
    p.add_argument("--csv", type=Path, help="write per-image values and means as CSV")
    p.add_argument("--json", type=Path, help="write per-image values and means as JSON")
    p.add_argument("--md", type=Path, help="write the tables as Markdown")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (never shown when stderr is not a terminal)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def warn(msg: str) -> None:
        tqdm.write(msg, file=sys.stderr)

    try:
        modalities = [m.strip() for m in args.modalities.split(",")]
        if len(modalities) != 2 or not all(modalities) or modalities[0] == modalities[1]:
            raise UsageError(f"--modalities {args.modalities!r}: give two different folder "
                             "names separated by a comma, e.g. ir,vi")
        profile = table_profile(args.profile)
        _check_outputs(args)
        results = evaluate_folders(args.input, modalities, args.fused, args.profile, warn, args.quiet)
    except UsageError as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2

    print(f"Profile: {profile.name} ({profile.description})")
    print(f"Sources: {args.input} ({modalities[0]} as infrared, {modalities[1]})")
    print(format_table(results))
    cropped = sum(len(r.cropped) for r in results)
    if cropped:
        print(f"cropped: pairs whose sources were cropped top-left to the fused size "
              f"(fused images smaller by < {CROP_LIMIT} px per side, as sample.py's crop to "
              f"multiples of 32)")
    skipped = sum(len(r.skipped) for r in results)
    if skipped:
        print(f"{skipped} image(s) not counted; the reasons are listed above (stderr)")

    try:
        if args.json:
            write_text_atomic(args.json, _to_json(results, profile, args.input, modalities))
        if args.csv:
            write_text_atomic(args.csv, _to_csv(results))
        if args.md:
            write_text_atomic(args.md, _to_md(results, profile, args.input, modalities))
    except OSError as exc:
        print(f"evaluate.py: error: cannot write results: {exc}", file=sys.stderr)
        return 2
    return 0 if any(r.per_image for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
