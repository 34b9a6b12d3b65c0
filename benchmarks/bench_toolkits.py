"""Benchmark: the MATLAB toolkits' metrics (metrics/toolkits.py) against the toolkits' own code
run under GNU Octave, per metric, on one 480x640 grey pair, in the same run.

    python -m benchmarks.bench_toolkits [--octave-dir DIR] [--profiles vifb,mefb,liu,tang] [--repeat 3]
                                        [--md benchmarks/results/toolkits_cpu_DATE.md]

``--octave-dir`` is a folder holding the toolkits unchanged: ``VIFB/`` (xingchenzhang/VIFB),
``Evaluation-for-Image-Fusion/`` (Linfeng-Tang/...), ``MEFB/`` (xingchenzhang/MEFB) and
``imageFusionMetrics/`` (zhengliu6699/...); without it, or without ``octave-cli``, the
Octave column is left out with a note. The pair is TNO 01 from tests/fixtures (infrared and
visible, 480x640 top-left crop), the fused image their rounded-down mean. Ours: CPU time of
this thread (``time.thread_time``), median of ``--repeat`` runs, numpy held to one thread, with
the NumPy forms of FMI and Qp (``DDFM_METRIC_KERNELS=numpy``) and, when numba is installed,
with the compiled ones (``metrics/compiled.py``, compiled before the timing); the speed-up over
Octave is that of evaluate.py's default (compiled when numba is installed).
Octave: its own ``cputime`` around each metric call, one run (the loops take minutes), with
the shims of tools/octave_toolkit_reference.py. Each Octave value is printed beside ours, so a
row whose values differ would show it.
"""
from __future__ import annotations

import os

if __name__ == "__main__":  # one thread, set before numpy loads
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from metrics import toolkit_metrics as tm  # noqa: E402
from metrics.toolkits import TOOLKIT_PROFILES  # noqa: E402
from tools.octave_toolkit_reference import (LIU_CALLS, MATLAB_EDGE, MEFB_FILES,  # noqa: E402
                                            REAL_IFFT2, SHIMS, VIFB_FILES, matlab_dwt2_shim,
                                            path_lines, pyrtools_path, with_real_ifft2)
from util.images import read_gray  # noqa: E402
from util.fileio import write_text_atomic  # noqa: E402
from util.tables import text_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
H, W = 480, 640

# How each Tang metric is called in analysis_Reference (A = infrared, B = visible, F fused;
# fA, fB, fF = im2double(x) * 255).
TANG_CALLS = {
    "EN": "entropy(F)", "MI": "MI_evaluation(A, B, F, 256)", "SF": "SF_evaluation(fF)",
    "SD": "SD_evaluation(fF)", "PSNR": "PSNR_evaluation(fA, fB, fF)",
    "MSE": "MSE_evaluation(fA, fB, fF)", "VIF": "vifp_mscale(fA, fF) + vifp_mscale(fB, fF)",
    "AG": "AG_evaluation(fF)", "CC": "CC_evaluation(fA, fB, fF)",
    "SCD": "analysis_SCD(fA, fB, fF)", "Qabf": "analysis_Qabf(fA, fB, fF)",
    "Nabf": "analysis_nabf(fF, fA, fB)", "Nabf_tang_order": "analysis_nabf(fA, fB, fF)",
    "SSIM": "", "MS_SSIM": "analysis_ms_ssim(cat(3, fA, fB), fF)",
    "FMI_pixel": "analysis_fmi(fA(1:30, 1:40), fB(1:30, 1:40), fF(1:30, 1:40))",
    "FMI_dct": "analysis_fmi(fA(1:30, 1:40), fB(1:30, 1:40), fF(1:30, 1:40), 'dct')",
    "FMI_w": "analysis_fmi(fA(1:30, 1:40), fB(1:30, 1:40), fF(1:30, 1:40), 'wavelet')",
}
# Octave's FMI takes about an hour on the whole pair: it is timed on a 30x40 corner and its
# time scaled by the ratio of window counts (FMI_w: of its [cA cH; cV cD] feature images, each
# band (n + 61) // 2 wide), marked '~' in the table. MATLAB's edge and dwt2 come from the shims
# of tools/octave_toolkit_reference.py.
_CORNER = (30 - 2) * (40 - 2)
_WAVELET = (2 * ((H + 61) // 2) - 2) * (2 * ((W + 61) // 2) - 2) / (
    (2 * ((30 + 61) // 2) - 2) * (2 * ((40 + 61) // 2) - 2))
OCTAVE_SCALE = {"FMI_pixel": (H - 2) * (W - 2) / _CORNER, "FMI_dct": (H - 2) * (W - 2) / _CORNER,
                "FMI_w": _WAVELET}


def load_pair():
    data = REPO / "tests" / "fixtures" / "data" / "TNO"
    ir = read_gray(data / "ir" / "01.png")[:H, :W].astype(np.float64)
    vi = read_gray(data / "vi" / "01.png")[:H, :W].astype(np.float64)
    return np.floor((ir + vi) / 2.0), ir, vi


def time_ours(profile, f, ir, vi, repeat: int, kernels: str) -> dict:
    """{column: (median CPU seconds, value)} with FMI's and Qp's ``kernels``."""
    os.environ[tm.KERNELS_VARIABLE] = kernels
    tm.warm_compiled_kernels()
    out = {}
    for name in profile.columns:
        times, value = [], None
        for _ in range(repeat):
            t0 = time.thread_time()
            value = profile.metric(name, f, ir, vi)
            times.append(time.thread_time() - t0)
        out[name] = (statistics.median(times), value)
    return out


def _octave_call(kit: str, name: str) -> str:
    if kit == "vifb":
        return f"metrics{VIFB_FILES[name]}(B, A, F)"
    if kit == "mefb":
        return f"metrics{MEFB_FILES[name]}(A, B, F)"
    if kit == "liu":
        return LIU_CALLS[name].replace("(A, B, F", "(dA, dB, dF")
    if kit == "tang2022":
        return ""  # the 2022 script's files share names with today's: ours timed only
    return TANG_CALLS[name]


def _octave_lines(kit: str, columns, real: Path, pyrtools: tuple = ()) -> list:
    """One timed call per column; Liu's Qm with matlabPyrTools and the compiled corrDn
    (``pyrtools``) on the path, put there outside the timing."""
    lines = []
    add, drop = path_lines(pyrtools)
    for name in columns:
        call = _octave_call(kit, name)
        if not call:
            continue  # MATLAB's built-in ssim: not in Octave
        timed = with_real_ifft2(name, call, real) if kit in ("mefb", "liu") else f"v = {call};"
        # a call the reference cannot make (MEFB's MEF_SSIM on grey images) prints no row
        line = (f"try, t0 = cputime; {timed} t = cputime - t0;"
                f" printf('T {kit} {name} %.6f %.17g\\n', t, v); fflush(stdout);"
                " catch e, disp(e.message); end")
        lines.append(f"{add} {line}; {drop}" if kit == "liu" and name == "Qm" else line)
    return lines


def _kit_paths(octave_dir: Path, kit: str, tmp: Path) -> str:
    """The addpath line of a kit's Octave process (MEFB's and Liu's files share names with
    VIFB's, so each of them runs alone; VIFB and Tang's code take the real ifft2 throughout)."""
    if kit == "mefb":
        return f"addpath('{octave_dir / 'MEFB' / 'metrics'}'); addpath('{tmp}');"
    if kit == "liu":
        return (f"addpath('{octave_dir / 'imageFusionMetrics'}'); addpath('{tmp}');"
                " dA = double(A); dB = double(B); dF = double(F);")
    return (f"addpath('{octave_dir / 'Evaluation-for-Image-Fusion' / 'Evaluation'}');"
            f" addpath('{octave_dir / 'VIFB' / 'metrics'}'); addpath('{tmp}');"
            f" addpath('{tmp / 'real_ifft2'}');")


def time_octave(octave_dir: Path, kits, f, ir, vi, size) -> dict:
    """Octave's cputime per metric on the top-left ``size`` crop, scaled to the whole pair by
    the pixel count (FMI: by its window count, on its 30x40 corner)."""
    h, w = size
    scale = (H * W) / (h * w)
    f, ir, vi = f[:h, :w], ir[:h, :w], vi[:h, :w]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, text in SHIMS.items():
            (tmp / name).write_text(text)
        (tmp / "real_ifft2").mkdir()
        (tmp / "real_ifft2" / "ifft2.m").write_text(REAL_IFFT2)
        (tmp / "matlab_only").mkdir()  # MATLAB's edge and dwt2, ahead of the image package
        (tmp / "matlab_only" / "edge.m").write_text(MATLAB_EDGE)
        (tmp / "matlab_only" / "dwt2.m").write_text(matlab_dwt2_shim())
        for role, img in (("F", f), ("A", ir), ("B", vi)):
            Image.fromarray(img.astype(np.uint8)).save(tmp / f"{role}.png")
        for kit in kits:
            prog = ["pkg load image", "pkg load signal", "warning('off', 'all');",
                    f"F = imread('{tmp}/F.png'); A = imread('{tmp}/A.png'); B = imread('{tmp}/B.png');",
                    "fA = im2double(A) * 255; fB = im2double(B) * 255; fF = im2double(F) * 255;",
                    _kit_paths(octave_dir, kit, tmp), f"addpath('{tmp / 'matlab_only'}');"]
            pyrtools = pyrtools_path(octave_dir / "imageFusionMetrics", tmp) if kit == "liu" else ()
            prog += _octave_lines(kit, TOOLKIT_PROFILES[kit].columns, tmp / "real_ifft2", pyrtools)
            (tmp / "bench.m").write_text("\n".join(prog) + "\n")
            proc = subprocess.run(["octave-cli", "--no-gui", str(tmp / "bench.m")],
                                  capture_output=True, text=True)
            for line in proc.stdout.replace("\r", "\n").splitlines():
                if line.startswith("T "):
                    _, kit_name, name, t, v = line.split()
                    out[(kit_name, name)] = (float(t) * OCTAVE_SCALE.get(name, scale), float(v))
    return out


def build_table(kits, ours, compiled, octave, scaled: bool) -> tuple[list, list]:
    """Rows per metric: NumPy time, compiled time (when measured), Octave time and the speed-up
    over it of evaluate.py's default (compiled when measured), the values."""
    header = ["Profile", "Metric", "NumPy (ms)", "compiled (ms)", "Octave (s)", "speed-up",
              "ours value", "Octave value"]
    rows, tot_numpy, tot_default, tot_oct = [], 0.0, 0.0, 0.0
    for kit in kits:
        for name, (t, v) in ours[kit].items():
            tc = compiled[kit][name][0] if compiled else None
            default = t if tc is None else tc
            tot_numpy, tot_default = tot_numpy + t, tot_default + default
            o = octave.get((kit, name))
            if o:
                tot_oct += o[0]
            mark = "~" if name in OCTAVE_SCALE or scaled else ""
            rows.append([kit, name, f"{t * 1e3:.1f}", f"{tc * 1e3:.1f}" if tc is not None else "-",
                         f"{mark}{o[0]:.2f}" if o else "-",
                         f"{mark}{o[0] / default:.0f}x" if o and default > 0 else "-", f"{v:.6g}",
                         "(crop)" if mark and o else f"{o[1]:.6g}" if o else "-"])
    rows.append(["all", "total", f"{tot_numpy * 1e3:.1f}",
                 f"{tot_default * 1e3:.1f}" if compiled else "-", f"{tot_oct:.2f}" if octave else "-",
                 f"{tot_oct / tot_default:.0f}x" if octave else "-", "", ""])
    return header, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--octave-dir", type=Path, help="folder with VIFB/, Evaluation-for-Image-Fusion/, "
                   "MEFB/ and imageFusionMetrics/")
    p.add_argument("--profiles", default="vifb,mefb,liu,tang")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--octave-size", default=f"{H}x{W}",
                   help="run Octave on this top-left crop (HxW) and scale its times by the pixel count")
    p.add_argument("--md", type=Path, help="also write the table and notes as Markdown")
    args = p.parse_args()
    kits = [k.strip() for k in args.profiles.split(",")]
    for k in kits:
        if k not in TOOLKIT_PROFILES:
            p.error(f"--profiles: unknown {k!r}; choose from {', '.join(TOOLKIT_PROFILES)}")
    f, ir, vi = load_pair()
    ours = {k: time_ours(TOOLKIT_PROFILES[k], f, ir, vi, args.repeat, "numpy") for k in kits}
    compiled = ({k: time_ours(TOOLKIT_PROFILES[k], f, ir, vi, args.repeat, "compiled") for k in kits}
                if tm.compiled_available() else {})
    notes = ["Tang's SSIM is MATLAB's built-in ssim, which Octave lacks: no Octave time. MEFB's "
             "MEF_SSIM stops on grey images (rgb2gray): no values on either side.",
             "~: scaled Octave time. FMI: Octave timed on a 30x40 corner, scaled by the window count "
             "(the whole pair takes about an hour)."]
    if args.octave_dir and shutil.which("octave-cli"):
        size = tuple(int(v) for v in args.octave_size.lower().split("x"))
        octave = time_octave(args.octave_dir, kits, f, ir, vi, size)
        if size != (H, W):
            notes.append(f"Octave ran on the top-left {size[0]}x{size[1]} crop (its loops take "
                         f"minutes per metric at full size); its times are scaled to {H}x{W} by "
                         "the pixel count and its values are the crop's.")
    else:
        octave = {}
        notes.append("Octave column left out: give --octave-dir with the toolkits and install octave-cli.")
    if not compiled:
        notes.append("compiled column left out: numba is not installed (pip install numba).")
    header, rows = build_table(kits, ours, compiled, octave, args.octave_size != f"{H}x{W}")
    table = text_table(header, rows)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes.append(f"{when}; one {H}x{W} grey pair (TNO 01, fused = floor of the mean); ours: CPU time "
                 f"of one thread, median of {args.repeat} (compiled: FMI and Qp by metrics/compiled.py, the "
                 "rest as NumPy); Octave: cputime of one run.")
    print(table + "\n\n" + "\n".join(notes))
    if args.md:
        cmd = "python -m benchmarks.bench_toolkits " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "md")
        write_text_atomic(args.md, f"# MATLAB-toolkit metrics: ours vs Octave\n\n`{cmd}`\n\n```\n{table}\n```\n\n"
                          + "\n".join(notes) + "\n")


if __name__ == "__main__":
    main()
