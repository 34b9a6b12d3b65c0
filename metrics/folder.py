"""Folders of fused images evaluated against their sources: one :class:`MethodResult` per
folder (every per-image value, the means, what was cropped and what was not counted), and the
results as a text table, JSON, CSV and Markdown. ``evaluate.py`` and ``reproduce.py`` call this.

Sources are paired by ``sample.py``'s own rule (:func:`util.images.find_pairs`); a fused image
smaller than its sources by fewer than 32 pixels per side is compared with the sources cropped
top-left to its size; anything else that does not fit is named in one line and not counted.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from metrics.evaluator import TABLE_COLUMNS
from metrics.profiles import table_profile
from metrics.toolkit_metrics import shared_results
from util.images import ImageError, files_for_stem, find_pairs, images_by_stem, link_problem
from util.tables import md_row, md_rule, text_table

CROP_LIMIT = 32  # a fused image may be smaller than its sources by fewer pixels than this
DEFAULT_MAX_WORKERS = 8  # evaluate.py's default --workers: the usable CPUs, at most this many
# fewer pairs than this are measured in this process: starting a worker (importing numpy and
# scipy) costs about a second, more than a pair of the Python evaluator's metrics
MIN_PAIRS_FOR_WORKERS = 8


def default_workers() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it), at most
    ``DEFAULT_MAX_WORKERS``: each worker holds a pair's images and the metrics' temporaries."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        usable = os.cpu_count() or 1
    return max(1, min(usable, DEFAULT_MAX_WORKERS))


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


@dataclass(frozen=True)
class _Job:
    """One pair to evaluate: its stem and the three files."""
    stem: str
    fused: Path
    ir: Path
    vis: Path


def _jobs(fused_dir: Path, pairs, skip) -> List[_Job]:
    """The pairs whose fused image is there, once and a real file; the others go to ``skip``."""
    fused = images_by_stem(fused_dir, broken_links=True)
    jobs = []
    for stem, ir_path, vis_path in pairs:
        found = files_for_stem(fused, stem)
        if not found:
            skip(stem, f"no fused image in {fused_dir}")
        elif len(found) > 1:
            skip(stem, f"several fused images: {', '.join(p.name for p in found)}")
        elif dangling := link_problem(found[0]):
            skip(stem, f"{found[0]}: {dangling}")
        else:
            jobs.append(_Job(stem, found[0], ir_path, vis_path))
    return jobs


def evaluate_job(job: _Job, profile, read=None) -> tuple:
    """Read and measure one pair: ('ok', values, cropped) or ('skip', reason, False). A
    top-level function of the job and the profile (or its name), so a worker process can run
    it. ``read(reader, path)``: how to call the profile's reader (default: directly)."""
    profile = table_profile(profile)
    read = read or (lambda reader, path: reader(path))
    try:
        fused, ir, vis = (read(profile.read, path) for path in (job.fused, job.ir, job.vis))
    except ImageError as exc:
        return "skip", str(exc), False
    if ir.shape[:2] != vis.shape[:2]:
        return "skip", (f"sources differ in size ({job.ir.name} {ir.shape[1]}x{ir.shape[0]}, "
                        f"{job.vis.name} {vis.shape[1]}x{vis.shape[0]})"), False
    (h, w), (sh, sw) = fused.shape[:2], ir.shape[:2]
    cropped = (h, w) != (sh, sw)
    if cropped:
        if not (h <= sh and w <= sw and sh - h < CROP_LIMIT and sw - w < CROP_LIMIT):
            return "skip", (f"fused image is {w}x{h}, sources are {sw}x{sh} (only a crop of "
                            f"fewer than {CROP_LIMIT} pixels per side is accepted)"), False
        ir, vis = ir[:h, :w], vis[:h, :w]
    try:
        return "ok", profile.evaluate_pair(fused, ir, vis), cropped
    except ValueError as exc:
        return "skip", str(exc), False


def evaluate_job_profiles(job: _Job, profiles: Sequence) -> list:
    """evaluate_job under each profile, in order. Each file is decoded once per reader (the
    toolkits share one), the image handed to every profile read-only; what several profiles
    compute on the same images (Qp in MEFB's and Liu's tables, ...) is computed once
    (``shared_results``)."""
    images = {}

    def read_once(reader, path):
        if (reader, path) not in images:
            img = reader(path)
            img.flags.writeable = False  # shared by the profiles: none may change it
            images[reader, path] = img
        return images[reader, path]

    with shared_results():
        return [evaluate_job(job, profile, read_once) for profile in profiles]


def _picklable_name(profile) -> Optional[str]:
    """The name a worker process can look ``profile`` up by, or None (a custom profile)."""
    name = profile if isinstance(profile, str) else getattr(profile, "name", None)
    try:
        return name if table_profile(name) == table_profile(profile) else None
    except ValueError:
        return None


def _evaluate_in_worker(job_and_profiles: tuple) -> tuple:
    """evaluate_job_profiles in a worker process: (job, outcomes)."""
    job, profiles = job_and_profiles
    return job, evaluate_job_profiles(job, profiles)


def _run_jobs(jobs: List[_Job], profiles: Sequence, pool, bar):
    """Yield (job, [outcome per profile]) for every job, here or in the worker processes of
    ``pool`` (outcomes then come out of order)."""
    if pool is None or len(jobs) <= 1:
        for job in jobs:
            yield job, evaluate_job_profiles(job, profiles)
            bar.update()
        return
    names = [_picklable_name(profile) for profile in profiles]
    for job, outcomes in pool.imap_unordered(_evaluate_in_worker, [(job, names) for job in jobs]):
        yield job, outcomes
        bar.update()


def _ignore_interrupts() -> None:
    """Worker start-up: Ctrl-C reaches the whole process group; only the parent acts on it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_pool(count: int):
    """``count`` spawned worker processes (nothing of this process is shared with them) that
    ignore Ctrl-C from their first instruction: they are started while this process ignores
    SIGINT (a new interpreter keeps an inherited SIG_IGN), so an interrupt during their imports
    prints no traceback. A Ctrl-C in the milliseconds this process takes to start them is lost
    (press it again). The initializer covers a pool started outside the main thread."""
    context = multiprocessing.get_context("spawn")
    if threading.current_thread() is not threading.main_thread():  # signal() needs the main one
        return context.Pool(count, initializer=_ignore_interrupts)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return context.Pool(count, initializer=_ignore_interrupts)
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _workers(count: int, profiles: Sequence):
    """A pool of ``count`` worker processes, or None where one process will do or a profile
    has no name to send them. An interrupt (or any error) stops the workers at once."""
    if count <= 1 or any(_picklable_name(profile) is None for profile in profiles):
        yield None
        return
    pool = start_pool(count)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def _evaluate_method(name: str, fused_dir: Path, pairs, source_problems, profiles: Sequence,
                     warn, quiet: bool = False, pool=None) -> List[MethodResult]:
    """One fused folder under each profile: a MethodResult per profile, in order. A pair left
    out by every profile for one reason is named once; else each profile's reason is named."""
    tables = [table_profile(profile) for profile in profiles]
    results = [MethodResult(name, fused_dir, columns=t.columns, decimals=t.decimals) for t in tables]
    for stem, reason in source_problems:  # named by the source file, not by a fused image
        for res in results:
            res.skipped.append({"image": stem, "reason": reason})
        warn(f"pair {stem}: {reason}; not counted")
    outcomes = {}  # stem of a pair: [('ok', values, cropped) or ('skip', reason, False)] per profile

    def skip(stem: str, reason: str) -> None:
        outcomes[stem] = [("skip", reason, False)] * len(tables)
        warn(f"{name}/{stem}: {reason}; not counted")

    jobs = _jobs(fused_dir, pairs, skip)
    # no bars with --quiet, nor when stderr is not a terminal (logs, pipes): disable=None
    with tqdm(total=len(jobs), desc=name, unit="img", file=sys.stderr, dynamic_ncols=True,
              leave=False, disable=True if quiet else None) as bar:
        for job, got in _run_jobs(jobs, profiles, pool, bar):
            outcomes[job.stem] = got
            _warn_skips(f"{name}/{job.stem}", got, tables, warn)
    for stem, _, _ in pairs:  # in pair order, however the workers finished
        for res, (kind, value, cropped) in zip(results, outcomes[stem]):
            if kind == "ok":
                res.per_image[stem] = value
                if cropped:
                    res.cropped.append(stem)
            else:
                res.skipped.append({"image": stem, "reason": value})
    return results


def _warn_skips(where: str, outcomes: list, tables: list, warn) -> None:
    """One line for a pair every profile left out for one reason, else one per profile."""
    reasons = [(t.name, o[1]) for t, o in zip(tables, outcomes) if o[0] == "skip"]
    if len(reasons) == len(tables) and len({r for _, r in reasons}) == 1:
        warn(f"{where}: {reasons[0][1]}; not counted")
        return
    for profile, reason in reasons:
        warn(f"{where}: {reason}; not counted in profile {profile}")


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
                     profile="reference", warn=None, quiet: bool = False,
                     workers: int = 1) -> List[MethodResult]:
    """The metrics of every fused folder (one method each) against the sources in
    ``input_dir``; each image not counted is passed to ``warn`` (default: stderr) in one line;
    ``quiet``: no progress bars; ``workers``: pairs measured in that many processes at once
    when there are at least ``MIN_PAIRS_FOR_WORKERS`` (the values do not depend on it). Raises
    :class:`EvaluationError` for a folder that is missing or holds no sources."""
    return evaluate_profiles(input_dir, modalities, fused_dirs, [profile], warn, quiet, workers)[0]


def evaluate_profiles(input_dir: Path, modalities: Sequence[str], fused_dirs: Sequence[Path],
                      profiles: Sequence, warn=None, quiet: bool = False,
                      workers: int = 1) -> List[List[MethodResult]]:
    """``evaluate_folders`` under several profiles in one pass over the images: for each
    profile, in order, its results per fused folder. Each image file is decoded once per reader
    (all the toolkits share one), and a metric several profiles compute on the same images is
    computed once; the values are those of separate runs."""
    warn = warn or (lambda msg: tqdm.write(msg, file=sys.stderr))
    for profile in profiles:
        table_profile(profile)  # an unknown name fails before any image is read
    names = _method_names(fused_dirs)
    for d in fused_dirs:
        if not Path(d).is_dir():
            raise EvaluationError(f"--fused {d}: not a folder")
        _not_a_source_folder(Path(d), Path(input_dir), modalities)
    pairs, problems = _source_pairs(Path(input_dir), modalities)
    jobs = len(pairs) * len(fused_dirs)
    with _workers(min(workers, jobs) if jobs >= MIN_PAIRS_FOR_WORKERS else 1, profiles) as pool:
        by_method = [_evaluate_method(n, Path(d), pairs, problems, profiles, warn, quiet, pool)
                     for n, d in zip(names, fused_dirs)]
    return [list(results) for results in zip(*by_method)] if by_method else [[] for _ in profiles]


def _not_a_source_folder(fused_dir: Path, input_dir: Path, modalities: Sequence[str]) -> None:
    """A fused folder that is (through any link) the input folder or one of its source folders
    would score the sources as a method: refused in one line."""
    real = fused_dir.resolve()
    for folder in [input_dir, *(input_dir / m for m in modalities)]:
        if real == folder.resolve():
            raise EvaluationError(f"--fused {fused_dir} is the source folder {folder}; give a folder of "
                                  "fused images (e.g. SAVE_DIR/recon)")
