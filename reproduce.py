#!/usr/bin/env python3
"""Reproduce one of the DDFM paper's tables: fuse every test set of the table, evaluate it with
the reference metrics and print it beside the published numbers.

    python reproduce.py --table ivf --data ROOT                 # MSRS, M3FD, RoadScene, TNO
    python reproduce.py --table mif --data ROOT                 # Harvard MRI-CT (+ MRI-PET, MRI-SPECT)
    python reproduce.py --table ivf --data ROOT --prior none    # the EM-only baseline, no checkpoint
    python reproduce.py --table ivf --data ROOT --compare CDDFuse=results/cddfuse
    torchrun --nproc_per_node 4 reproduce.py --table ivf --data ROOT

For every dataset preset of the table (``configs/presets/*.yaml`` with that ``task``) the pairs
are read from ``ROOT/<preset folder>/<modality>/`` (e.g. ``ROOT/RoadScene/ir`` and ``ROOT/RoadScene/vi``,
the same file name on both sides). A dataset whose folder is missing is named and skipped.
Each dataset is fused by ``sample.py``'s own code (``ddfm.fuse_folder``) with the dataset's preset into
``SAVE_DIR/<preset>/`` -- pairs fused by an earlier run are kept, so an interrupted run continues
where it stopped -- then evaluated by ``evaluate.py`` (reference profile unless ``--profile``) on
``SAVE_DIR/<preset>/recon``. Every ``sample.py`` option given here is passed through unchanged
(``--model_config``, ``--diffusion_config``, ``--steps``, ``--seed``, ``--prior``, ``--precision``,
``--batch``, ``--gpu``, ``--attention``, ``--download_checkpoint``, ...); ``--input``,
``--preset`` and ``--modalities`` are set per dataset.

Printed per dataset: the paper's rows (``configs/paper_results.yaml``), this run's row, this
run's difference to the paper's DDFM row, and one row per ``--compare NAME=DIR`` (another
method's fused images: ``DIR/<preset key or folder>/`` per dataset, or the images directly in
``DIR`` when one dataset is evaluated). Per column the best value is marked ``*x*`` and the second
best ``_x_`` (bold and underline in ``tables.md``), over every method row, as the paper marks them. Written, each
atomically: ``SAVE_DIR/tables.md``, ``tables.csv``, ``tables.json`` and one figure per dataset,
``SAVE_DIR/figures/<preset>.png`` (a few pairs: both sources and the fused results, labelled).

Exit status: 0 when every dataset found was fused and evaluated completely, 1 when a pair failed
or was not counted, 2 on a setup error (bad option, no dataset found, fusion could not start),
130 when interrupted (run the same command again to continue).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ddfm import SetupError, fuse_folder, resolve_options, set_tf32
from ddfm.config import OPTION_CLASSES, PRIOR_LABELS, Door, add_run_options
from ddfm.runner import RunConfig
from ddfm.speed import prefer_expandable_segments
from metrics.folder import EvaluationError, method_entry
from metrics.folder import evaluate_folders as evaluate_fused_folders
from util.fileio import file_in_the_way, write_all_or_none
from util.outputs import OutputPathError, check_output_folder
from util.config import ConfigError, load_yaml
from util.images import (ImageError, files_for_stem, find_pairs, images_by_stem, is_image_file, read_rgb,
                         write_png_atomic)
from metrics.evaluator import PROFILES, TABLE_COLUMNS
from util.options import cli_fields, flag_of, given_values
from util.tables import md_row, md_rule, text_table
from util.presets import Preset, presets_for
from util.sheet import contact_sheet, grid

REPO = Path(__file__).resolve().parent
PAPER_RESULTS = REPO / "configs" / "paper_results.yaml"
TABLES = ("ivf", "mif")
TABLE_TITLES = {"ivf": "infrared-visible fusion (Table 1)", "mif": "medical image fusion (Harvard)"}
# sample.py options that reproduce.py sets for every dataset itself.
PER_DATASET = {"input": "--input", "preset": "--preset", "modalities": "--modalities"}
DASH = "—"
FIGURE_PANEL_WIDTH = 384


class ReproduceError(RuntimeError):
    """A setup problem; reported as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# command line


def _passthrough_names() -> str:
    return ", ".join(flag_of(f) for cls in OPTION_CLASSES for f in cli_fields(cls)
                     if f.name not in PER_DATASET and f.name != "save_dir")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reproduce.py", allow_abbrev=False,
        description="Fuse and evaluate every test set of one of the DDFM paper's tables and print "
                    "the results beside the published numbers.",
        epilog="Every sample.py option is passed through to the fusion of each dataset: "
               + _passthrough_names() + " (see python sample.py --help). --input, --preset and "
               "--modalities are set per dataset from its preset.")
    p.add_argument("--table", required=True, choices=TABLES,
                   help="ivf: MSRS, M3FD, RoadScene, TNO; mif: the Harvard medical presets")
    p.add_argument("--data", required=True, type=Path,
                   help="data root holding one folder per dataset, e.g. ROOT/RoadScene/ir and ROOT/RoadScene/vi")
    p.add_argument("--save_dir", type=Path, default=Path("output/reproduce"),
                   help="fused images (SAVE_DIR/<preset>/), tables and figures (default output/reproduce)")
    p.add_argument("--compare", action="extend", nargs="+", default=[], metavar="NAME=DIR",
                   help="another method's fused images, as one more row per dataset; DIR holds one "
                        "folder per dataset (named by preset key or dataset folder), or the images "
                        "directly when one dataset is evaluated; repeatable")
    p.add_argument("--datasets", default=None,
                   help="only these datasets of the table, comma-separated (preset keys or names, "
                        "e.g. roadscene,tno)")
    p.add_argument("--profile", default="reference", choices=sorted(PROFILES),
                   help="metric conventions (default reference: the evaluator the paper's numbers come from)")
    p.add_argument("--figure_pairs", type=int, default=3,
                   help="pairs shown in each dataset's figure (default 3; 0: no figures)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    fusion_parser = argparse.ArgumentParser(prog="reproduce.py (sample.py options)", allow_abbrev=False)
    add_run_options(fusion_parser)
    given = given_values(OPTION_CLASSES, fusion_parser.parse_args(rest))  # exits 2 naming any unknown option
    for dest, option in PER_DATASET.items():
        if dest in given:
            parser.error(f"{option} is set per dataset from its preset; give the data root "
                         "with --data (and --datasets to choose datasets)")
    if "save_dir" in given:
        parser.error("write --save_dir in full: it is reproduce.py's own option (SAVE_DIR/<preset>/ per dataset)")
    if args.figure_pairs < 0:
        parser.error(f"--figure_pairs must be >= 0, got {args.figure_pairs}")
    args.sample_argv = list(rest)  # as written, for the record in tables.json
    args.fusion_options = given
    return args


def run_label(fusion: RunConfig) -> str:
    return f"this run ({PRIOR_LABELS[fusion.fuser.prior]})"


# --------------------------------------------------------------------------------------------
# the paper's numbers


def load_paper_results(path: Path = PAPER_RESULTS) -> dict:
    try:
        data = load_yaml(path)
    except ConfigError as exc:
        raise ReproduceError(str(exc)) from None
    for key in ("metrics", "rows", "tables"):
        if key not in data:
            raise ReproduceError(f"{path}: missing key '{key}'")
    return data


@dataclass
class Dataset:
    preset: Preset
    paper_name: Optional[str]          # the dataset's name in the paper's table, if it has one
    paper_entry: Optional[dict]
    folder: Optional[Path] = None      # DATA/<preset folder>
    save_dir: Optional[Path] = None    # SAVE_DIR/<preset key>: sample.py's output folder
    status: str = "pending"            # missing | evaluated | failed
    reason: str = ""
    pairs: list = field(default_factory=list)
    unpaired: List[str] = field(default_factory=list)
    fusion: dict = field(default_factory=dict)
    results: Dict[str, dict] = field(default_factory=dict)   # method name -> evaluate.py's JSON entry
    compare_dirs: Dict[str, Path] = field(default_factory=dict)
    rows: List[dict] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    figure: Optional[Path] = None

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def paper_pairs(self) -> Optional[int]:
        if self.preset.paper_pairs is not None:
            return self.preset.paper_pairs
        return (self.paper_entry or {}).get("pairs")


def paper_dataset_for(preset: Preset, entries: dict) -> Optional[str]:
    """The paper's table entry of a preset: the entry named like the preset (ivf), or the entry
    whose ``modality`` is the preset's name (the paper's Harvard table is MRI-CT)."""
    for name, entry in entries.items():
        if name == preset.name or name.lower() == preset.key:
            return name
    for name, entry in entries.items():
        if isinstance(entry, dict) and entry.get("modality") == preset.name:
            return name
    return None


def table_datasets(task: str, paper: dict, only: Optional[str] = None) -> List[Dataset]:
    entries = paper["tables"].get(task, {})
    datasets = []
    for preset in presets_for(task):
        name = paper_dataset_for(preset, entries)
        datasets.append(Dataset(preset, name, entries.get(name) if name else None))
    order = list(entries)
    datasets.sort(key=lambda d: (order.index(d.paper_name) if d.paper_name in order else len(order),
                                 d.preset.key))
    if only:
        wanted = [w.strip().lower() for w in only.split(",") if w.strip()]
        known = {}
        for d in datasets:
            for alias in (d.preset.key, d.preset.name, d.preset.folder):
                known[alias.lower()] = d
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ReproduceError(f"--datasets: {unknown[0]!r} is not a dataset of the {task} table; "
                                 f"choose from {', '.join(d.preset.key for d in datasets)}")
        chosen = {id(known[w]) for w in wanted}
        datasets = [d for d in datasets if id(d) in chosen]
    return datasets


def paper_rows(ds: Dataset, paper: dict, metrics: Sequence[str]) -> List[dict]:
    if ds.paper_entry is None:
        return []
    names = paper.get("row_names", {})
    rows = []
    for code in paper["rows"]:
        values = (ds.paper_entry.get("rows") or {}).get(code)
        values = values if values is not None else [None] * len(metrics)
        rows.append({"method": f"{code} (paper)", "kind": "paper", "code": code,
                     "name": names.get(code, code), "pairs": ds.paper_pairs,
                     "values": dict(zip(metrics, values))})
    return rows


# --------------------------------------------------------------------------------------------
# fusion


def _recon_state(save_dir: Path, pairs) -> dict:
    """(inode, mtime) of each pair's recon PNG, or None: what a sample.py call changed."""
    state = {}
    for pair in pairs:
        try:
            st = (save_dir / "recon" / f"{pair.stem}.png").stat()
            state[pair.stem] = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            state[pair.stem] = None
    return state


def fuse_dataset(ds: Dataset, args) -> int:
    argv = [*args.sample_argv, "--preset", ds.preset.key, "--input", str(ds.folder),
            "--save_dir", str(ds.save_dir)]
    before = _recon_state(ds.save_dir, ds.pairs)
    try:  # the dataset's preset fills in its modalities and colour output
        config = resolve_options(args.fusion_options | dict(preset=ds.preset.key, input=str(ds.folder),
                                                            save_dir=str(ds.save_dir)), Door.CLI)
    except SetupError as exc:
        raise ReproduceError(str(exc)) from None
    code = fuse_folder(config)
    after = _recon_state(ds.save_dir, ds.pairs)
    fused = sum(1 for s in after if after[s] is not None and after[s] != before[s])
    resumed = sum(1 for s in after if after[s] is not None and after[s] == before[s])
    ds.fusion = {"fused": fused, "resumed": resumed, "failed": len(after) - fused - resumed,
                 "exit_status": code, "save_dir": str(ds.save_dir),
                 "sample_argv": argv}
    return code


# --------------------------------------------------------------------------------------------
# evaluation (evaluate.py's own code)


def evaluate_folders(input_dir: Path, modalities: Sequence[str], fused_dirs: Sequence[Path],
                     profile: str, quiet: bool = False) -> Dict[str, dict]:
    """evaluate.py on several fused folders at once; returns its JSON entry per folder path
    (``count``, ``mean``, ``per_image``, ``cropped``, ``skipped``)."""
    dirs = list(dict.fromkeys(Path(d) for d in fused_dirs))
    try:
        results = evaluate_fused_folders(input_dir, modalities, dirs, profile, quiet=quiet)
    except EvaluationError as exc:
        raise ReproduceError(f"evaluate.py failed on {input_dir}: {exc}") from None
    return {str(d): method_entry(r) for d, r in zip(dirs, results)}


def _has_images(folder: Path) -> bool:
    return any(is_image_file(p) for p in folder.iterdir())


def _images_folder(folder: Path) -> Path:
    """A sample.py save_dir holds its images in recon/."""
    if not _has_images(folder) and (folder / "recon").is_dir():
        return folder / "recon"
    return folder


def compare_folder(root: Path, preset: Preset, single: bool) -> Optional[Path]:
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for alias in (preset.key, preset.folder, preset.name):
        if alias.lower() in subdirs:
            return _images_folder(subdirs[alias.lower()])
    if single:
        folder = _images_folder(root)
        if _has_images(folder):
            return folder
    return None


def parse_compare(items: Sequence[str], run_name: str) -> List[tuple]:
    out, seen = [], set()
    for item in items:
        name, sep, folder = item.partition("=")
        name = name.strip()
        if not sep or not name or not folder:
            raise ReproduceError(f"--compare {item!r}: write NAME=DIR, e.g. CDDFuse=results/cddfuse")
        if name in seen or name == run_name or name.endswith("(paper)"):
            raise ReproduceError(f"--compare {item!r}: the name {name!r} is already a row; choose another")
        path = Path(folder)
        if not path.is_dir():
            raise ReproduceError(f"--compare {item!r}: {path} is not a folder")
        seen.add(name)
        out.append((name, path))
    return out


def _round2(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 2)


def build_rows(ds: Dataset, paper: dict, metrics: Sequence[str], label: str) -> None:
    rows = paper_rows(ds, paper, metrics)
    run = ds.results.get(label)
    if run is not None:
        mean = run["mean"]
        rows.append({"method": label, "kind": "this run", "pairs": run["count"],
                     "values": {m: mean.get(m) for m in metrics},
                     "all_metrics": {m: mean.get(m) for m in TABLE_COLUMNS}})
        ddfm = next((r for r in rows if r.get("code") == "DDFM"), None)
        if ddfm is not None:
            # against the paper's two decimals: the printed run value minus the printed paper value
            diff = {}
            for m in metrics:
                ours, theirs = mean.get(m), ddfm["values"].get(m)
                diff[m] = (None if ours is None or theirs is None
                           else round(round(ours, 2) - theirs, 2))
            rows.append({"method": "diff vs DDFM (paper)", "kind": "difference", "pairs": None,
                         "values": diff})
    for name, result in ds.results.items():
        if name == label:
            continue
        mean = result["mean"]
        rows.append({"method": name, "kind": "compare", "pairs": result["count"],
                     "values": {m: mean.get(m) for m in metrics},
                     "all_metrics": {m: mean.get(m) for m in TABLE_COLUMNS}})
    mark_best(rows, metrics, paper.get("higher_is_better", {}))
    ds.rows = rows


RANKED_KINDS = ("paper", "this run", "compare")   # the difference row is not a method


def mark_best(rows: List[dict], metrics: Sequence[str], higher_is_better: dict) -> None:
    """Mark, per column, the best value "best" and the second best "second", as the paper marks
    them (bold, underline), over every method row: the paper's, this run's and the compared
    runs'. Values are compared as printed (two decimals), so equal printed values share a mark.
    Sets ``row["marks"] = {metric: "best" | "second"}`` on the rows that hold one."""
    for row in rows:
        row.pop("marks", None)
    for m in metrics:
        sign = 1 if higher_is_better.get(m, True) else -1
        printed = [(round(r["values"][m], 2), r) for r in rows
                   if r["kind"] in RANKED_KINDS and r["values"].get(m) is not None]
        ranks = sorted({v for v, _ in printed}, key=lambda v: -sign * v)
        for label, value in zip(("best", "second"), ranks[:2]):
            for v, r in printed:
                if v == value:
                    r.setdefault("marks", {})[m] = label


# --------------------------------------------------------------------------------------------
# output


def _cell(v, signed: bool = False) -> str:
    if v is None:
        return DASH
    return f"{v:+.2f}" if signed else f"{v:.2f}"


# How the best / second-best marks look: the paper's bold and underline, in plain text and in
# Markdown (GitHub renders <u>).
MARK_STYLES = {"text": {"best": "*{}*", "second": "_{}_"},
               "md": {"best": "**{}**", "second": "<u>{}</u>"}}
MARK_LEGEND = {"text": "*x*: best, _x_: second best of the column (the paper's bold and underline)",
               "md": "**bold**: best, <u>underlined</u>: second best of the column, as in the paper"}


def _table_cells(ds: Dataset, metrics: Sequence[str], style: str = "text") -> tuple:
    header = ["Method", *metrics, "pairs"]
    body = []
    for r in ds.rows:
        signed = r["kind"] == "difference"
        marks = r.get("marks", {})
        cells = [_cell(r["values"].get(m), signed) for m in metrics]
        cells = [MARK_STYLES[style][marks[m]].format(c) if m in marks else c
                 for m, c in zip(metrics, cells)]
        body.append([r["method"], *cells,
                     "" if r["pairs"] is None and signed else (DASH if r["pairs"] is None else str(r["pairs"]))])
    return header, body


def format_table(ds: Dataset, metrics: Sequence[str]) -> str:
    return text_table(*_table_cells(ds, metrics))


def dataset_heading(ds: Dataset) -> str:
    paper = f"the paper's {ds.paper_name} table" if ds.paper_name else "no table in the paper"
    if ds.paper_name and ds.paper_entry and ds.paper_entry.get("modality"):
        paper = f"the paper's {ds.paper_name} ({ds.paper_entry['modality']}) table"
    return f"{ds.name} (preset {ds.preset.key}; {paper})"


def found_line(ds: Dataset) -> str:
    mods = ", ".join(ds.preset.modalities)
    n = ds.paper_pairs
    size = (f"the paper's test set has {n}" if n is not None
            else "the paper's test-set size is not recorded")
    return f"{len(ds.pairs)} pairs found in {ds.folder} ({mods}); {size}"


def fusion_line(ds: Dataset) -> str:
    f = ds.fusion
    return (f"fusion: {f['fused']} fused now, {f['resumed']} already fused (kept), "
            f"{f['failed']} failed -> {f['save_dir']}")


def _notes(ds: Dataset, label: str) -> List[str]:
    notes = list(ds.notes)
    run = ds.results.get(label)
    n = ds.paper_pairs
    if run is not None and n is not None and run["count"] != n:
        notes.append(f"this run counts {run['count']} pairs, the paper's test set {n}: "
                     "the numbers are not directly comparable")
    return notes


def render_text(datasets: List[Dataset], metrics, label: str, header: List[str]) -> str:
    out = [*header, ""]
    for ds in datasets:
        if ds.status == "missing":
            continue
        out.append(f"== {dataset_heading(ds)} ==")
        out.append(found_line(ds))
        if ds.fusion:
            out.append(fusion_line(ds))
        if ds.rows:
            out.append(format_table(ds, metrics))
            out.append(MARK_LEGEND["text"])
        for note in _notes(ds, label):
            out.append(f"note: {note}")
        out.append("")
    missing = [ds for ds in datasets if ds.status == "missing"]
    if missing:
        out.append("Missing, skipped: " + ", ".join(ds.name for ds in missing))
        out += [f"  {ds.name}: {ds.reason}" for ds in missing]
    return "\n".join(out).rstrip() + "\n"


def render_md(datasets: List[Dataset], metrics, label: str, header: List[str], save_dir: Path) -> str:
    out = [f"# {header[0]}", ""] + [f"{line}  " for line in header[1:]] + [""]
    for ds in datasets:
        if ds.status == "missing":
            continue
        out += [f"## {dataset_heading(ds)}", "", found_line(ds) + ".  "]
        if ds.fusion:
            out.append(fusion_line(ds) + ".")
        out.append("")
        if ds.rows:
            head, body = _table_cells(ds, metrics, "md")
            out.append(md_row(head))
            out.append(md_rule(len(head)))
            out += [md_row(row) for row in body]
            out += ["", MARK_LEGEND["md"] + ".", ""]
        for note in _notes(ds, label):
            out.append(f"- {note}")
        if ds.figure is not None:
            out += ["", f"![{ds.name}]({ds.figure.relative_to(save_dir).as_posix()})"]
        out.append("")
    missing = [ds for ds in datasets if ds.status == "missing"]
    if missing:
        out += ["## Missing datasets (skipped)", ""]
        out += [f"- {ds.name}: {ds.reason}" for ds in missing]
    return "\n".join(out).rstrip() + "\n"


def render_csv(datasets: List[Dataset], table: str, metrics) -> str:
    extra = [m for m in TABLE_COLUMNS if m not in metrics]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "dataset", "preset", "method", "kind", "pairs", *metrics, *extra])
    for ds in datasets:
        for r in ds.rows:
            allm = r.get("all_metrics", {})
            w.writerow([table, ds.name, ds.preset.key, r["method"], r["kind"],
                        "" if r["pairs"] is None else r["pairs"],
                        *("" if r["values"].get(m) is None else repr(r["values"][m]) for m in metrics),
                        *("" if allm.get(m) is None else repr(allm[m]) for m in extra)])
    return buf.getvalue()


def render_json(datasets: List[Dataset], args, paper: dict, metrics, label: str) -> str:
    doc = {
        "table": args.table,
        "paper": paper.get("source", {}).get("paper"),
        "paper_table": paper.get("source", {}).get("tables", {}).get(args.table),
        "data": str(args.data),
        "save_dir": str(args.save_dir),
        "profile": args.profile,
        "profile_description": PROFILES[args.profile].description,
        "sample_options": args.sample_argv,
        "run": label,
        "metrics": list(metrics),
        "datasets": [],
        "missing": [ds.name for ds in datasets if ds.status == "missing"],
    }
    for ds in datasets:
        entry = {"name": ds.name, "preset": ds.preset.key, "paper_dataset": ds.paper_name,
                 "status": ds.status, "folder": str(ds.folder) if ds.folder else None,
                 "modalities": list(ds.preset.modalities), "paper_pairs": ds.paper_pairs}
        if ds.status == "missing":
            entry["reason"] = ds.reason
        else:
            entry.update({
                "pairs_found": len(ds.pairs), "unpaired": ds.unpaired, "fusion": ds.fusion,
                "rows": ds.rows, "notes": _notes(ds, label),
                "evaluation": {name: {k: r[k] for k in ("fused", "count", "mean", "cropped", "skipped")}
                               for name, r in ds.results.items()},
                "figure": str(ds.figure) if ds.figure else None})
            if ds.reason:
                entry["reason"] = ds.reason
        doc["datasets"].append(entry)
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# figures


def _crop_to(image: np.ndarray, shape) -> np.ndarray:
    h, w = shape[:2]
    if image.shape[0] >= h and image.shape[1] >= w:
        return image[:h, :w]
    return image


def make_figure(ds: Dataset, label: str, count: int) -> Optional[np.ndarray]:
    """A grid of up to ``count`` pairs spread over the set: both sources (cropped as the fused
    image is) and every method's fused image, labelled."""
    recon = ds.save_dir / "recon"
    stems = [p.stem for p in ds.pairs if (recon / f"{p.stem}.png").is_file()]
    if not stems or count == 0:
        return None
    picks = sorted(set(np.linspace(0, len(stems) - 1, min(count, len(stems))).round().astype(int)))
    by_stem = {p.stem: p for p in ds.pairs}
    ir_name, vis_name = ds.preset.modalities
    rows = []
    for i in picks:
        stem = stems[i]
        color = ds.save_dir / "color" / f"{stem}.png"
        fused = read_rgb(color if ds.preset.color and color.is_file() else recon / f"{stem}.png")
        panels = [(f"{ds.name} {stem}: {ir_name}", _crop_to(read_rgb(by_stem[stem].ir), fused.shape)),
                  (vis_name, _crop_to(read_rgb(by_stem[stem].vis), fused.shape)),
                  (label, fused)]
        for name, folder in ds.compare_dirs.items():
            found = files_for_stem(images_by_stem(folder), stem)
            if found:
                with contextlib.suppress(ImageError):
                    panels.append((name, _crop_to(read_rgb(found[0]), fused.shape)))
        rows.append(contact_sheet(panels, max_panel_width=FIGURE_PANEL_WIDTH))
    return grid(rows)


# --------------------------------------------------------------------------------------------


def discover(ds: Dataset, data_root: Path) -> None:
    folder = data_root / ds.preset.folder
    ds.folder = folder
    mods = ds.preset.modalities
    if not folder.is_dir():
        ds.status, ds.reason = "missing", f"no folder {folder} (expected {folder / mods[0]} and {folder / mods[1]})"
        return
    try:
        pairs, problems = find_pairs(folder, mods)
    except ImageError as exc:
        ds.status, ds.reason = "missing", str(exc)
        return
    if not pairs:
        ds.status, ds.reason = "missing", f"no pairs in {folder} ({len(problems)} unpaired files)"
        return
    ds.pairs, ds.unpaired = pairs, problems


def check_setup(args) -> None:
    """What would stop every dataset's fusion, checked once before anything is done, so that it
    is one line: sample.py's option and config checks, and --save_dir."""
    try:
        args.fusion = resolve_options(args.fusion_options, Door.CLI)
    except SetupError as exc:
        raise ReproduceError(str(exc)) from None
    blocking = file_in_the_way(args.save_dir)
    if blocking is not None:
        raise ReproduceError(f"--save_dir {args.save_dir}: {blocking} is a file, not a folder; "
                             "choose another folder")
    try:  # through links: a loop, or a folder inside the data, is one line
        check_output_folder(args.save_dir, [args.data], "--save_dir")
    except OutputPathError as exc:
        raise ReproduceError(str(exc)) from None
    existing = next(p for p in [args.save_dir, *args.save_dir.parents] if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ReproduceError(f"--save_dir {args.save_dir}: {existing} is not writable; choose another folder")


def run(args) -> int:
    lead = int(os.environ.get("RANK", "0")) == 0   # under torchrun only rank 0 evaluates and writes
    check_setup(args)
    say = (lambda *a, **k: print(*a, **k, flush=True)) if lead else (lambda *a, **k: None)
    paper = load_paper_results()
    metrics = list(paper["metrics"])
    label = run_label(args.fusion)
    compares = parse_compare(args.compare, label)
    if not args.data.is_dir():
        raise ReproduceError(f"--data {args.data}: not a folder; give the root that holds the dataset folders")
    datasets = table_datasets(args.table, paper, args.datasets)
    if not datasets:
        raise ReproduceError(f"no dataset preset has task {args.table!r} in configs/presets/")
    save_dir = args.save_dir

    say(f"Reproducing the DDFM paper's {TABLE_TITLES[args.table]} table: data {args.data}, "
        f"results in {save_dir}")
    present = discover_all(datasets, args, say)
    status = fuse_datasets(present, args, say)
    if status == 130 or not lead:
        return status
    single = len(present) == 1
    for ds in present:
        status = max(status, evaluate_dataset(ds, args, compares, single, paper, metrics, label, say))
    write_tables(datasets, args, paper, metrics, label, say)
    return status


def discover_all(datasets: List[Dataset], args, say) -> List[Dataset]:
    """Find each dataset's pairs under ``args.data``; return those found (raise if none)."""
    for ds in datasets:
        ds.save_dir = args.save_dir / ds.preset.key
        discover(ds, args.data)
        if ds.status == "missing":
            say(f"{ds.name}: missing, skipped: {ds.reason}")
        else:
            say(f"{ds.name}: {found_line(ds)}")
            for line in ds.unpaired:
                say(f"{ds.name}: not a pair: {line}")
    present = [ds for ds in datasets if ds.status != "missing"]
    if not present:
        raise ReproduceError(f"none of the {args.table} datasets "
                             f"({', '.join(ds.name for ds in datasets)}) was found under {args.data}; "
                             "lay them out as ROOT/<folder>/<modality>/<image> (see README, "
                             "'Reproducing the paper')")
    return present


def fuse_datasets(present: List[Dataset], args, say) -> int:
    """Fuse every dataset found; 0, 1 when a pair failed, 130 when interrupted."""
    status = 0
    for ds in present:
        say(f"{ds.name}: fusing with sample.py --preset {ds.preset.key} {' '.join(args.sample_argv)}".rstrip())
        code = fuse_dataset(ds, args)
        if code == 130:
            say("interrupted: fused pairs are kept; run the same command again to continue")
            return 130
        if code == 2:
            raise ReproduceError(f"{ds.name}: fusion could not start (sample.py's reason is printed "
                                 "above); nothing was evaluated")
        say(f"{ds.name}: {fusion_line(ds)}")
        if code != 0 or ds.fusion["failed"]:
            status = 1
    return status


def evaluate_dataset(ds: Dataset, args, compares, single: bool, paper: dict, metrics, label: str,
                     say) -> int:
    """Evaluate this run's and the compared methods' images of one dataset, build its rows
    and its figure; 1 when it failed or an image of this run was not counted, else 0."""
    status = 0
    dirs = {label: ds.save_dir / "recon"}
    for name, root in compares:
        folder = compare_folder(root, ds.preset, single)
        if folder is None:
            ds.notes.append(f"--compare {name}: no folder for {ds.name} in {root} "
                            f"(expected {root / ds.preset.key} or {root / ds.preset.folder})")
        else:
            dirs[name] = ds.compare_dirs[name] = folder
    try:
        by_dir = evaluate_folders(ds.folder, ds.preset.modalities, list(dirs.values()), args.profile,
                                  quiet=args.fusion.run.quiet)
    except ReproduceError as exc:
        ds.status, ds.reason = "failed", str(exc)
        say(f"{ds.name}: {exc}")
        return 1
    ds.results = {name: by_dir[str(d)] for name, d in dirs.items()}
    for name, result in ds.results.items():
        if result["skipped"]:
            ds.notes.append(f"{name}: {len(result['skipped'])} image(s) not counted "
                            f"(first: {result['skipped'][0]['image']}: {result['skipped'][0]['reason']})")
            if name == label:
                status = 1
        if result["cropped"]:
            ds.notes.append(f"{name}: for {len(result['cropped'])} pair(s) the sources were cropped "
                            "top-left to the fused size (sample.py crops to multiples of 32, as released)")
    ds.status = "evaluated"
    build_rows(ds, paper, metrics, label)
    if args.figure_pairs:
        image = make_figure(ds, label, args.figure_pairs)
        if image is not None:
            ds.figure = args.save_dir / "figures" / f"{ds.preset.key}.png"
            write_png_atomic(ds.figure, image)
    return status


def write_tables(datasets: List[Dataset], args, paper: dict, metrics, label: str, say) -> None:
    """Print the tables and write tables.md, tables.csv and tables.json."""
    save_dir = args.save_dir
    header = [f"DDFM paper, {TABLE_TITLES[args.table]}: the paper's rows and this run",
              f"Data: {args.data}; fused images: {save_dir}/<preset>/recon; "
              f"sample.py options: {' '.join(args.sample_argv) or '(defaults)'}",
              f"Metrics: evaluate.py, profile {args.profile} ({PROFILES[args.profile].description}); "
              f"means over the pairs, two decimals; {DASH}: no value"]
    text = render_text(datasets, metrics, label, header)
    say("")
    say(text, end="")
    try:  # all or none, never into the data
        write_all_or_none({"tables.md": (save_dir / "tables.md", render_md(datasets, metrics, label, header, save_dir)),
                           "tables.csv": (save_dir / "tables.csv", render_csv(datasets, args.table, metrics)),
                           "tables.json": (save_dir / "tables.json",
                                           render_json(datasets, args, paper, metrics, label))}, [args.data])
    except OutputPathError as exc:
        raise ReproduceError(str(exc)) from None
    figures = [ds.figure for ds in datasets if ds.figure is not None]
    say("")
    say(f"written: {save_dir / 'tables.md'}, tables.csv, tables.json"
        + (f"; figures: {', '.join(str(f) for f in figures)}" if figures else ""))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    prefer_expandable_segments()
    set_tf32(args.fusion_options.get("precision") == "tf32")  # process-wide, as sample.py sets it
    try:
        return run(args)
    except ReproduceError as exc:
        print(f"reproduce.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: fused pairs are kept; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
