"""Folders of fused images evaluated against their sources: one :class:`MethodResult` per
folder (every per-image value, the means, what was cropped and what was not counted), and the
results as a text table, JSON, CSV and Markdown. ``evaluate.py`` and ``reproduce.py`` call this.

Sources are paired by ``sample.py``'s own rule (:func:`util.images.find_pairs`); a fused image
smaller than its sources by fewer than 32 pixels per side is compared with the sources cropped
top-left to its size; anything else that does not fit is named in one line and not counted.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from metrics.evaluator import TABLE_COLUMNS
from metrics.profiles import table_profile
from util.images import ImageError, files_for_stem, find_pairs, images_by_stem, link_problem
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


class EvaluationError(Exception):
    """A fused or source folder that cannot be evaluated; the message is one line."""


def _method_names(dirs: Sequence[Path]) -> List[str]:
    names = [d.name or str(d) for d in dirs]
    if len(set(names)) < len(names):  # two folders called e.g. 'recon': use the paths given
        names = [str(d) for d in dirs]
    if len(set(names)) < len(names):
        raise EvaluationError("the same --fused folder is given twice")
    return names


def _source_pairs(input_dir: Path, modalities: Sequence[str]):
    if not input_dir.is_dir():
        raise EvaluationError(f"--input {input_dir}: not a folder")
    folders = [input_dir / m for m in modalities]
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        have = sorted(p.name for p in input_dir.iterdir() if p.is_dir())
        hint = f"; its folders are {', '.join(have)}: name two with --modalities A,B" if have else ""
        raise EvaluationError(f"--input {input_dir} has no folder {missing[0].name!r}{hint}")
    try:  # sample.py's pairing rule, so that both count the same pairs
        pairs, problems = find_pairs(input_dir, modalities)
    except ImageError as exc:
        raise EvaluationError(str(exc)) from None
    return ([(pair.stem, pair.ir, pair.vis) for pair in pairs],
            [(problem.path.stem, f"source {problem}") for problem in problems])


def _evaluate_method(name: str, fused_dir: Path, pairs, source_problems, profile, warn,
                     quiet: bool = False) -> MethodResult:
    res = MethodResult(name, fused_dir, columns=profile.columns, decimals=profile.decimals)

    def skip(stem: str, reason: str, where: str = f"{name}/") -> None:
        res.skipped.append({"image": stem, "reason": reason})
        warn(f"{where}{stem}: {reason}; not counted")

    for stem, reason in source_problems:  # named by the source file, not by a fused image
        skip(stem, reason, where="pair ")
    fused = images_by_stem(fused_dir, broken_links=True)
    # no bars with --quiet, nor when stderr is not a terminal (logs, pipes): disable=None
    for stem, ir_path, vis_path in tqdm(pairs, desc=name, unit="img", file=sys.stderr,
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
            fused_gray, ir, vis = profile.read(found[0]), profile.read(ir_path), profile.read(vis_path)
        except ImageError as exc:
            skip(stem, str(exc))
            continue
        if ir.shape[:2] != vis.shape[:2]:
            skip(stem, f"sources differ in size ({ir_path.name} {ir.shape[1]}x{ir.shape[0]}, "
                       f"{vis_path.name} {vis.shape[1]}x{vis.shape[0]})")
            continue
        (h, w), (sh, sw) = fused_gray.shape[:2], ir.shape[:2]
        if (h, w) != (sh, sw):
            if h <= sh and w <= sw and sh - h < CROP_LIMIT and sw - w < CROP_LIMIT:
                ir, vis = ir[:h, :w], vis[:h, :w]
                res.cropped.append(stem)
            else:
                skip(stem, f"fused image is {w}x{h}, sources are {sw}x{sh} "
                           f"(only a crop of fewer than {CROP_LIMIT} pixels per side is accepted)")
                continue
        try:
            res.per_image[stem] = profile.evaluate_pair(fused_gray, ir, vis)
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


def to_json(results, profile, input_dir, modalities) -> str:
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


def to_csv(results) -> str:
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


def to_md(results, profile, input_dir, modalities) -> str:
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
    ``quiet``: no progress bars. Raises :class:`EvaluationError` for a folder that is missing or holds
    no sources."""
    warn = warn or (lambda msg: tqdm.write(msg, file=sys.stderr))
    conventions = table_profile(profile)
    names = _method_names(fused_dirs)
    for d in fused_dirs:
        if not Path(d).is_dir():
            raise EvaluationError(f"--fused {d}: not a folder")
        _not_a_source_folder(Path(d), Path(input_dir), modalities)
    pairs, problems = _source_pairs(Path(input_dir), modalities)
    return [_evaluate_method(n, Path(d), pairs, problems, conventions, warn, quiet)
            for n, d in zip(names, fused_dirs)]


def _not_a_source_folder(fused_dir: Path, input_dir: Path, modalities: Sequence[str]) -> None:
    """A fused folder that is (through any link) the input folder or one of its source folders
    would score the sources as a method: refused in one line."""
    real = fused_dir.resolve()
    for folder in [input_dir, *(input_dir / m for m in modalities)]:
        if real == folder.resolve():
            raise EvaluationError(f"--fused {fused_dir} is the source folder {folder}; give a folder of "
                                  "fused images (e.g. SAVE_DIR/recon)")
