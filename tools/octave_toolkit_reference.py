"""Make tests/fixtures/toolkits/: small image crops and the values the MATLAB toolkits'
own code gives on them under GNU Octave.

How the committed reference values were made (run from the repository root):

    apt-get install -y octave octave-image octave-signal octave-dev   # octave-dev: mkoctfile
    # the toolkits, unchanged, side by side in one folder (any checkout of these commits):
    #   VIFB/                          github.com/xingchenzhang/VIFB @ 22b2ea9d
    #   Evaluation-for-Image-Fusion/   github.com/Linfeng-Tang/Evaluation-for-Image-Fusion @ 0e87153b
    #   Evaluation-for-Image-Fusion-2022/   the same repository @ 5d6c43a7 (the 2022 script)
    #   MEFB/                          github.com/xingchenzhang/MEFB @ 9e185bf8
    #   imageFusionMetrics/            github.com/zhengliu6699/imageFusionMetrics @ d6f7f1a0
    python3 tools/octave_toolkit_reference.py --toolkits /path/to/folder [--kits mefb liu]

``--kits`` reruns only the named toolkits and keeps the other stored values (MEFB, Liu's
toolbox and Tang's 2022 script run in Octave processes of their own: their files share names
with the others').

It writes the crops (PNG) and ``octave_reference.json`` (every value with 17 significant
digits, the Octave version and the toolkit commits). The tests read only those files. Octave
lacks three MATLAB functions the toolkits call; the script supplies them in a temporary folder,
each the documented MATLAB behaviour and nothing more: ``freqspace`` (only if missing),
``blkproc`` (zero-padded blocks) and, for Qcv and Qcb only, ``ifft2`` returning the real part
(MATLAB returns a real array for the conjugate-symmetric spectra these metrics build; Octave
keeps a ~1e-13 imaginary part, which Qcv's squares would turn into a complex result).

Liu's Qm (metricPWW.m) needs Simoncelli's matlabPyrTools, which the toolbox ships as
matlabPyrTools.zip, with its MEX function corrDn (the shipped binaries are MATLAB's; the
corrDn.m beside them is a fallback that warns at every call that the MEX file should be used).
The script unzips it into a temporary folder and compiles the unchanged C sources with
``mkoctfile --mex corrDn.c convolve.c wrap.c edges.c``, an empty ``matrix.h`` on the include
path (MATLAB's header, which Octave's mex.h replaces); the Octave program stops unless corrDn
is that MEX file. matlabPyrTools is on the path only around the metricPWW call: its mean2.m
(which metricCvejic and ssim_index.m call), factorial.m and shift.m would shadow Octave's own
for the other metrics. (Octave 7.3 prints "ignoring const execution_exception& while preparing
to exit" after a MEX file has run; the exit status is 0 and the values are not affected.)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "toolkits"
VIFB_FILES = {"CE": "Cross_entropy", "EN": "Entropy", "MI": "Mutinf", "PSNR": "Psnr",
              "AG": "Avg_gradient", "EI": "Edge_intensity", "Qabf": "Qabf", "SD": "Variance",
              "SF": "Spatial_frequency", "RMSE": "Rmse", "SSIM": "Ssim", "Qcb": "Qcb", "Qcv": "Qcv"}
FMI_CASES = ("tno_mean", "kettle_colour", "walkingnight_grey_ir", "constant_fused")
FMI_CROP = "{1:20, 1:24}"  # FMI_dct is computed on this top-left corner of those cases
# MEFB's util/configMetrics.m, in its order, as {column: metricsX file}; FMI (default 'edge'
# features: MATLAB's edge, which Octave implements differently) is run by the 'fmi' kit with
# the MATLAB_EDGE shim, not here.
MEFB_FILES = {"CE": "Cross_entropy", "EN": "Entropy", "FMI": "FMI", "NMI": "NMI", "PSNR": "Psnr",
              "Qncie": "Qncie", "TE": "TE", "AG": "Avg_gradient", "EI": "Edge_intensity",
              "Qabf": "Qabf", "Qp": "Qp", "SD": "SD", "SF": "Spatial_frequency", "Qc": "Qc",
              "Qw": "Qw", "Qy": "Qy", "MEF_SSIM": "MEF_SSIM", "Qcb": "Qcb", "Qcv": "Qcv",
              "VIFF": "VIF"}
# Liu's fusionAssess.m, in its order, as {column: call}; Qm (metricPWW) runs with matlabPyrTools
# and its compiled corrDn on the path (``pyrtools_path``, ``_liu_program``).
LIU_CALLS = {"Qmi": "metricMI(A, B, F, 1)", "Qte": "metricMI(A, B, F, 3)", "Qncie": "metricWang(A, B, F)",
             "Qg": "metricXydeas(A, B, F)", "Qm": "metricPWW(A, B, F)",
             "Qsf": "metricZheng(A, B, F)", "Qp": "metricZhao(A, B, F)",
             "Qs": "metricPeilla(A, B, F, 1)", "Qc": "metricCvejic(A, B, F, 2)",
             "Qy": "metricYang(A, B, F)", "Qcv": "metricChen(A, B, F)", "Qcb": "metricChenBlum(A, B, F)"}
TANG_NAMES = ("EN", "SF", "SD", "PSNR", "MSE", "MI", "VIF", "AG", "CC", "SCD", "Qabf")
TANG2022_FMI_CASES = ("tno_mean",)  # its FMI_dct and FMI_w on the FMI_CROP corner only

SHIMS = {
    "freqspace.m": """function [f1, f2] = freqspace(n, flag)
  if numel(n) == 1, n = [n n]; end
  f1 = ((0:n(2)-1) - floor(n(2)/2)) * (2/n(2));
  f2 = ((0:n(1)-1) - floor(n(1)/2)) * (2/n(1));
  if nargin > 1, [f1, f2] = meshgrid(f1, f2); end
end
""",
    "blkproc.m": """function b = blkproc(a, bs, border, fun)
  [h, w] = size(a); nh = ceil(h / bs(1)); nw = ceil(w / bs(2));
  a = [a, zeros(h, nw*bs(2) - w); zeros(nh*bs(1) - h, nw*bs(2))];
  b = zeros(nh, nw);
  for i = 1:nh
    for j = 1:nw
      b(i, j) = fun(a((i-1)*bs(1)+1:i*bs(1), (j-1)*bs(2)+1:j*bs(2)));
    end
  end
end
""",
}
REAL_IFFT2 = """function y = ifft2(x)
  y = real(builtin('ifft2', x));
end
"""


# MATLAB's edge(a) with its defaults (Sobel, automatic threshold, thinning), for the FMI
# columns only: Octave's own edge thins differently (and refuses doubles outside 0..1). A
# per-pixel transcription of the algorithm of MATLAB's code-generation edge.m
# (computeEdgesWithThinningPortable: neighbours outside the image count as smaller), kept
# apart from metrics/toolkit_metrics.matlab_edge, which is vectorised.
MATLAB_EDGE = """function e = edge(a)
  a = double(a);
  op = fspecial('sobel') / 8;
  bx = imfilter(a, op', 'replicate');
  by = imfilter(a, op, 'replicate');
  b = bx .* bx + by .* by;
  cutoff = 4 * sum(b(:)) / numel(b);
  bx = abs(bx); by = abs(by);
  [m, n] = size(b);
  e = false(m, n);
  for c = 1:n
    for r = 1:m
      b1 = (c - 1 < 1) || (b(r, c - 1) <= b(r, c));
      b2 = (c + 1 > n) || (b(r, c) > b(r, c + 1));
      b3 = (r - 1 < 1) || (b(r - 1, c) <= b(r, c));
      b4 = (r + 1 > m) || (b(r, c) > b(r + 1, c));
      e(r, c) = (b(r, c) > cutoff) && (((bx(r, c) >= (by(r, c) - eps * 100)) && b1 && b2) ...
                || ((by(r, c) >= (bx(r, c) - eps * 100)) && b3 && b4));
    end
  end
end
"""


def matlab_dwt2_shim() -> str:
    """MATLAB's dwt2(x, 'dmey') (Wavelet Toolbox, default dwtmode 'sym'), which Octave lacks:
    its steps (extend the columns half-point symmetrically by lf-1, convolve the rows, keep
    columns 2:2:end; the same down the columns), with the Toolbox's discrete Meyer filters as
    PyWavelets ships them (pywt.Wavelet('dmey').dec_lo / dec_hi, 62 taps)."""
    import pywt

    w = pywt.Wavelet("dmey")
    lo = " ".join(f"{v:.17g}" for v in w.dec_lo)
    hi = " ".join(f"{v:.17g}" for v in w.dec_hi)
    return f"""function [a, h, v, d] = dwt2(x, wname)
  if ~strcmp(wname, 'dmey'), error('dwt2 shim: dmey only'); end
  lo = [{lo}];
  hi = [{hi}];
  lf = numel(lo); ext = lf - 1; last = size(x) + lf - 1;
  y = symext(double(x), ext, 2);
  z = conv2(y, lo, 'valid');
  a = down(z, lo, ext, last); h = down(z, hi, ext, last);
  z = conv2(y, hi, 'valid');
  v = down(z, lo, ext, last); d = down(z, hi, ext, last);
end
function y = down(x, f, ext, last)
  y = x(:, 2:2:last(2));
  y = symext(y, ext, 1);
  y = conv2(y', f, 'valid')';
  y = y(2:2:last(1), :);
end
function y = symext(x, k, dim)
  n = size(x, dim); i = (1 - k:n + k) - 1; i = mod(i, 2 * n);
  i(i >= n) = 2 * n - 1 - i(i >= n);
  if dim == 2, y = x(:, i + 1); else, y = x(i + 1, :); end
end
"""


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L") if im.mode in ("L", "LA", "1") else im.convert("RGB"))


def make_cases() -> dict:
    """The cases: {name: (fused, infrared, visible)} uint8 arrays, odd and even sizes, colour
    and grey, a saturated fused image and constant ones."""
    data = REPO / "tests" / "fixtures"
    vifb = data / "toolkits" / "vifb"
    ir = _load(data / "data" / "TNO" / "ir" / "01.png")[200:264, 300:380, 0]
    vi = _load(data / "data" / "TNO" / "vi" / "01.png")[200:264, 300:380, 0]
    mean = np.floor((ir.astype(np.int32) + vi + 1) / 2).astype(np.uint8)
    k_ir = _load(vifb / "input" / "IR" / "kettle.jpg")[201:276, 250:343]
    k_vi = _load(vifb / "input" / "VI" / "kettle.jpg")[201:276, 250:343]
    k_f = _load(vifb / "fused" / "SeAFusion" / "kettle.jpg")[201:276, 250:343]
    w_ir = _load(vifb / "input" / "IR" / "walkingnight.jpg")[100:167, 120:190]
    w_vi = _load(vifb / "input" / "VI" / "walkingnight.jpg")[100:167, 120:190]
    w_f = _load(vifb / "fused" / "ADF" / "walkingnight.jpg")[100:167, 120:190]
    bright = np.minimum(255, ir.astype(np.int32) * 2).astype(np.uint8)  # partly 254/255
    return {
        "tno_mean": (mean, ir, vi),
        "tno_saturated": (bright, ir, vi),
        "kettle_colour": (k_f, k_ir, k_vi),
        "walkingnight_grey_ir": (w_f, w_ir, w_vi),
        "constant_fused": (np.full_like(ir, 128), ir, vi),
        "constant_source": (mean, np.full_like(ir, 7), vi),
    }


def _octave_program(case_dir: Path, names) -> str:
    lines = ["pkg load image", "pkg load signal", "more off", "warning('off', 'all');"]
    for case in names:
        lines.append(f"F = imread('{case_dir}/{case}_fused.png'); A = imread('{case_dir}/{case}_ir.png');"
                     f" B = imread('{case_dir}/{case}_vi.png');")
        for col, fname in VIFB_FILES.items():
            lines.append(f"try, v = metrics{fname}(B, A, F); catch e, v = -9999; disp(e.message); end")
            lines.append(f"printf('R %s vifb %s %.17g\\n', '{case}', '{col}', v);")
        lines.append("if size(F,3)>2, F=rgb2gray(F); end; if size(A,3)>2, A=rgb2gray(A); end;"
                     " if size(B,3)>2, B=rgb2gray(B); end")
        outs = ", ".join(TANG_NAMES)
        lines.append(f"[{outs}] = tang_easy(F, A, B);")
        for col in TANG_NAMES:
            lines.append(f"printf('R %s tang %s %.17g\\n', '{case}', '{col}', {col});")
        lines.append("fA = im2double(A)*255; fB = im2double(B)*255; fF = im2double(F)*255;")
        lines.append(f"printf('R %s tang Nabf %.17g\\n', '{case}', analysis_nabf(fF, fA, fB));")
        lines.append(f"printf('R %s tang Nabf_tang_order %.17g\\n', '{case}', analysis_nabf(fA, fB, fF));")
        lines.append("seq = zeros([size(fA) 2]); seq(:, :, 1) = fA; seq(:, :, 2) = fB;")
        lines.append(f"printf('R %s tang MS_SSIM %.17g\\n', '{case}', analysis_ms_ssim(seq, fF));")
        if case in FMI_CASES:  # Octave's FMI loops take minutes per 1000 pixels: a corner only
            lines.append(f"c = {FMI_CROP}; printf('R %s tang_corner FMI_dct %.17g\\n', '{case}',"
                         " analysis_fmi(fA(c{1}, c{2}), fB(c{1}, c{2}), fF(c{1}, c{2}), 'dct'));")
    return "\n".join(lines) + "\n"


def with_real_ifft2(col: str, call: str, real: Path) -> str:
    """The call, with the real-ifft2 shim on the path for Qcb and Qcv only: Qp's phase
    congruency needs the complex ifft2."""
    if col in ("Qcb", "Qcv"):
        return f"addpath('{real}'); v = {call}; rmpath('{real}');"
    return f"v = {call};"


def _mefb_program(case_dir: Path, names, real: Path) -> str:
    """MEFB's compute_metrics.m call, metricsX(imgA, imgB, fused), with A = infrared and
    B = visible as imread gives them; an error is stored as the missing value."""
    lines = ["pkg load image", "pkg load signal", "more off", "warning('off', 'all');"]
    for case in names:
        lines.append(f"F = imread('{case_dir}/{case}_fused.png'); A = imread('{case_dir}/{case}_ir.png');"
                     f" B = imread('{case_dir}/{case}_vi.png');")
        for col, fname in MEFB_FILES.items():
            if col == "FMI":  # needs MATLAB's edge: the 'fmi' kit runs it
                continue
            call = with_real_ifft2(col, f"metrics{fname}(A, B, F)", real)
            lines.append(f"try, {call} catch e, v = -9999; disp(e.message); end")
            lines.append(f"printf('R %s mefb %s %.17g\\n', '{case}', '{col}', v);")
    return "\n".join(lines) + "\n"


def path_lines(folders) -> tuple:
    """Octave statements putting the folders on the path (the last one searched first) and
    taking them off again."""
    return (" ".join(f"addpath('{d}');" for d in folders),
            " ".join(f"rmpath('{d}');" for d in folders))


def _liu_program(case_dir: Path, names, real: Path, pyrtools: tuple) -> str:
    """Liu's metrics as fusionAssess(im1, im2, fused) calls them, on double images (A = infrared,
    B = visible); a colour image is made grey with rgb2gray first (the toolbox is for grey
    images). matlabPyrTools and the compiled corrDn (``pyrtools``) are on the path for Qm
    only, also when metricPWW stops; the program stops at once unless corrDn is the MEX file."""
    add, drop = path_lines(pyrtools)
    lines = ["pkg load image", "pkg load signal", "more off", "warning('off', 'all');",
             f"{add} if isempty(regexp(which('corrDn'), '\\.mex$')), error('corrDn is not the "
             f"compiled MEX file: %s', which('corrDn')); end; {drop}"]
    for case in names:
        lines.append(f"F = imread('{case_dir}/{case}_fused.png'); A = imread('{case_dir}/{case}_ir.png');"
                     f" B = imread('{case_dir}/{case}_vi.png');")
        lines.append("if size(F,3)>2, F=rgb2gray(F); end; if size(A,3)>2, A=rgb2gray(A); end;"
                     " if size(B,3)>2, B=rgb2gray(B); end; A = double(A); B = double(B); F = double(F);")
        for col, call in LIU_CALLS.items():
            run = f"try, {with_real_ifft2(col, call, real)} catch e, v = -9999; disp(e.message); end"
            lines.append(f"{add} {run}; {drop}" if col == "Qm" else run)
            lines.append(f"printf('R %s liu %s %.17g\\n', '{case}', '{col}', v);")
    return "\n".join(lines) + "\n"


def _fmi_programs(case_dir: Path, names, toolkits: Path, matlab_only: Path) -> list:
    """The FMI columns whose features Octave lacks, with the MATLAB_EDGE and dwt2 shims put
    ahead of the image package: Tang's FMI_pixel (analysis_fmi's default 'edge' features)
    and FMI_w ('wavelet', dwt2 'dmey') on the whole crops, as analysis_Reference calls them;
    MEFB's metricsFMI(A = infrared, B = visible, fused). One Octave process each."""
    head = ("pkg load image", "pkg load signal", "more off", "warning('off', 'all');",
            f"addpath('{matlab_only}');")
    tang, mefb = list(head), list(head)
    tang.insert(0, f"addpath('{toolkits / 'Evaluation-for-Image-Fusion' / 'Evaluation'}');")
    mefb.insert(0, f"addpath('{toolkits / 'MEFB' / 'metrics'}');")
    for case in names:
        read = (f"F = imread('{case_dir}/{case}_fused.png'); A = imread('{case_dir}/{case}_ir.png');"
                f" B = imread('{case_dir}/{case}_vi.png');")
        tang += [read, "if size(F,3)>2, F=rgb2gray(F); end; if size(A,3)>2, A=rgb2gray(A); end;"
                 " if size(B,3)>2, B=rgb2gray(B); end",
                 "fA = im2double(A)*255; fB = im2double(B)*255; fF = im2double(F)*255;",
                 f"printf('R %s tang FMI_pixel %.17g\\n', '{case}', analysis_fmi(fA, fB, fF));",
                 f"printf('R %s tang FMI_w %.17g\\n', '{case}', analysis_fmi(fA, fB, fF, 'wavelet'));"]
        mefb += [read, "try, v = metricsFMI(A, B, F); catch e, v = -9999; disp(e.message); end",
                 f"printf('R %s mefb FMI %.17g\\n', '{case}', v);"]
    return ["\n".join(tang) + "\n", "\n".join(mefb) + "\n"]


TANG_EASY = """function [EN, SF, SD, PSNR, MSE, MI, VIF, AG, CC, SCD, Qabf] = tang_easy(F, A, B)
  [EN, SF, SD, PSNR, MSE, MI, VIF, AG, CC, SCD, Qabf] = analysis_Reference(F, A, B, 1);
end
"""


def _tang2022_program(case_dir: Path, names) -> str:
    """Tang's 2022 analysis_Reference.m (5d6c43a7) on the rgb2gray'd uint8 images: its easy = 1
    outputs through tang_easy, and the easy = 0 ones called as that script calls them --
    analysis_nabf(image_fused, image1, image2) on im2double images, mef_ssim and
    analysis_ms_ssim(imgSeq, image_f) -- but FMI (Octave's loops: minutes per crop), which is
    run on the FMI_CROP corner of TANG2022_FMI_CASES ('dct', and 'wavelet' with the dwt2 shim);
    FMI_pixel needs MATLAB's edge, whose ties on 0..1 data depend on imfilter's rounding, and
    is not run."""
    lines = ["pkg load image", "pkg load signal", "more off", "warning('off', 'all');"]
    for case in names:
        lines.append(f"F = imread('{case_dir}/{case}_fused.png'); A = imread('{case_dir}/{case}_ir.png');"
                     f" B = imread('{case_dir}/{case}_vi.png');")
        lines.append("if size(F,3)>2, F=rgb2gray(F); end; if size(A,3)>2, A=rgb2gray(A); end;"
                     " if size(B,3)>2, B=rgb2gray(B); end")
        lines.append(f"[{', '.join(TANG_NAMES)}] = tang_easy(F, A, B);")
        for col in TANG_NAMES:
            lines.append(f"printf('R %s tang2022 %s %.17g\\n', '{case}', '{col}', {col});")
        lines.append("image1 = im2double(A); image2 = im2double(B); image_fused = im2double(F);")
        lines.append("imgSeq = zeros([size(A) 2]); imgSeq(:, :, 1) = A; imgSeq(:, :, 2) = B;")
        for col, call in (("Nabf", "analysis_nabf(image_fused, image1, image2)"),
                          ("SSIM", "mef_ssim(imgSeq, F)"), ("MS_SSIM", "analysis_ms_ssim(imgSeq, F)")):
            lines.append(f"printf('R %s tang2022 %s %.17g\\n', '{case}', '{col}', {call});")
        if case in TANG2022_FMI_CASES:
            corner = "image1(c{1}, c{2}), image2(c{1}, c{2}), image_fused(c{1}, c{2})"
            lines.append(f"c = {FMI_CROP};")
            for col, feature in (("FMI_dct", "dct"), ("FMI_w", "wavelet")):
                lines.append(f"printf('R %s tang2022_corner {col} %.17g\\n', '{case}', "
                             f"analysis_fmi({corner}, '{feature}'));")
    return "\n".join(lines) + "\n"


def _run_program(prog: str) -> dict:
    """Run an Octave program and collect its 'R case kit column value' lines."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run.m"
        run.write_text(prog)
        proc = subprocess.run(["octave-cli", "--no-gui", str(run)], capture_output=True,
                              text=True, timeout=3600)
    values: dict = {}
    for line in proc.stdout.replace("\r", "\n").splitlines():  # phasecong's progress uses \r
        if line.startswith("R "):
            _, case, kit, col, val = line.split()
            values.setdefault(case, {}).setdefault(kit, {})[col] = float(val)
        elif line.strip():
            print("octave:", line, file=sys.stderr)
    if proc.returncode:
        sys.exit(f"octave failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return values


def _shim_folders(tmp: Path) -> str:
    """Write the shims; the addpath line that puts them last (the real-ifft2 folder is
    ``tmp / 'real_ifft2'``, added by the programs around Qcb and Qcv only)."""
    shims, real = tmp / "shims", tmp / "real_ifft2"
    shims.mkdir()
    real.mkdir()
    for name, text in SHIMS.items():
        (shims / name).write_text(text)
    (real / "ifft2.m").write_text(REAL_IFFT2)
    (tmp / "tang_easy.m").write_text(TANG_EASY)
    (tmp / "matlab_only").mkdir()
    (tmp / "matlab_only" / "edge.m").write_text(MATLAB_EDGE)
    (tmp / "matlab_only" / "dwt2.m").write_text(matlab_dwt2_shim())
    # freqspace: Octave's own (if it has one) takes precedence over the shim
    return f"addpath('{tmp}'); addpath('{shims}');"


def pyrtools_path(toolbox: Path, tmp: Path) -> tuple:
    """Unzip the toolbox's matlabPyrTools.zip into ``tmp`` and compile corrDn's MEX file from its
    unchanged sources with mkoctfile; the two folders to put on the path, compiled one last."""
    with zipfile.ZipFile(toolbox / "matlabPyrTools.zip") as zf:
        zf.extractall(tmp)
    pyr, mex, include = tmp / "matlabPyrTools", tmp / "pyrtools_mex", tmp / "mex_include"
    mex.mkdir()
    include.mkdir()
    (include / "matrix.h").write_text("/* MATLAB's matrix.h: Octave's mex.h declares it all */\n")
    sources = [str(pyr / "MEX" / n) for n in ("corrDn.c", "convolve.c", "wrap.c", "edges.c")]
    proc = subprocess.run(["mkoctfile", "--mex", f"-I{include}", "-o", str(mex / "corrDn.mex"),
                           *sources], cwd=tmp, capture_output=True, text=True)
    if proc.returncode:  # its C is of 1996: gcc warns (old-style definitions), errors stop here
        sys.exit(f"mkoctfile failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return pyr, mex


def run_octave(toolkits: Path, case_dir: Path, names, kits) -> dict:
    """{case: {kit: {column: value}}} for the kits asked for: VIFB and Tang's in one Octave
    process, MEFB, Liu's and the FMI columns ('fmi': Tang's FMI_pixel and FMI_w, MEFB's FMI;
    slow: Octave's per-window loops) in processes of their own, two at a time."""
    values: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        shims, real = _shim_folders(Path(tmp)), Path(tmp) / "real_ifft2"
        runs = []
        if {"vifb", "tang"} & set(kits):
            vifb = toolkits / "VIFB" / "metrics"
            tang = toolkits / "Evaluation-for-Image-Fusion" / "Evaluation"
            # VIFB and Tang's code take ifft2 complex nowhere but Qcb and Qcv: real one throughout
            runs.append(f"addpath('{tang}'); addpath('{vifb}'); {shims} addpath('{real}');\n"
                        + _octave_program(case_dir, names))
        if "mefb" in kits:
            runs.append(f"addpath('{toolkits / 'MEFB' / 'metrics'}'); {shims}\n"
                        + _mefb_program(case_dir, names, real))
        if "liu" in kits:
            liu = toolkits / "imageFusionMetrics"
            pyrtools = pyrtools_path(liu, Path(tmp))
            runs.append(f"addpath('{liu}'); {shims}\n" + _liu_program(case_dir, names, real, pyrtools))
        if "fmi" in kits:
            runs += _fmi_programs(case_dir, names, toolkits, Path(tmp) / "matlab_only")
        if "tang2022" in kits:
            tang2022 = toolkits / "Evaluation-for-Image-Fusion-2022" / "Evaluation"
            runs.append(f"addpath('{tang2022}'); {shims} addpath('{Path(tmp) / 'matlab_only'}');\n"
                        + _tang2022_program(case_dir, names))
        with ThreadPoolExecutor(max_workers=2) as pool:  # one Octave process per run
            for fresh in pool.map(_run_program, runs):
                for case, by_kit in fresh.items():
                    for kit, columns in by_kit.items():
                        values.setdefault(case, {}).setdefault(kit, {}).update(columns)
    return values


TOOLKIT_COMMITS = {"VIFB": "xingchenzhang/VIFB@22b2ea9d91499cc5962d9bdcae9c290270f0fade",
                   "tang": "Linfeng-Tang/Evaluation-for-Image-Fusion@"
                           "0e87153be77320e31ef2cabb5820518d2ac56bac",
                   "tang2022": "Linfeng-Tang/Evaluation-for-Image-Fusion@"
                               "5d6c43a68850409e1ec67d56de1827113064a19a",
                   "MEFB": "xingchenzhang/MEFB@9e185bf88de280b12a2d9a2ff12d66e40bc1ff91",
                   "liu": "zhengliu6699/imageFusionMetrics@d6f7f1a0c0a13e7d19bc1e8e4d4f3ad51f439273"}


def _pywt_version() -> str:
    from importlib.metadata import version  # pywt 1.9.0's own __version__ says 1.8.0

    return version("PyWavelets")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--toolkits", type=Path, required=True,
                   help="folder holding VIFB/, Evaluation-for-Image-Fusion/, "
                   "Evaluation-for-Image-Fusion-2022/, MEFB/ and imageFusionMetrics/")
    p.add_argument("--kits", nargs="+", choices=("vifb", "tang", "mefb", "liu", "fmi", "tang2022"),
                   default=["vifb", "tang", "mefb", "liu", "fmi", "tang2022"],
                   help="toolkits to run ('fmi': the FMI columns Octave needs shims for); "
                   "the stored values of the others are kept")
    args = p.parse_args()
    cases = make_cases()
    crops = OUT / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    for name, (f, ir, vi) in cases.items():
        for role, img in (("fused", f), ("ir", ir), ("vi", vi)):
            Image.fromarray(img).save(crops / f"{name}_{role}.png")
    fresh = run_octave(args.toolkits, crops, list(cases), args.kits)
    target = OUT / "octave_reference.json"
    values = json.loads(target.read_text())["values"] if target.exists() else {}
    for case, by_kit in fresh.items():
        for kit, columns in by_kit.items():
            values.setdefault(case, {}).setdefault(kit, {}).update(columns)
    version = subprocess.run(["octave-cli", "--eval", "disp(version)"], capture_output=True,
                             text=True).stdout.strip()
    doc = {"source": "tools/octave_toolkit_reference.py", "octave": version,
           "fmi_crop": "tang_corner and tang2022_corner values are of the top-left 20x24 corner "
                       "of the case's images",
           "toolkits": TOOLKIT_COMMITS, "missing_value": -9999,
           "liu_Qm": "corrDn of the liu toolbox's matlabPyrTools.zip (MEX/corrDn.c, convolve.c, "
                     "wrap.c, edges.c) compiled with mkoctfile --mex",
           "values": values}
    if any("FMI_pixel" in kits.get("tang", {}) for kits in values.values()):  # the 'fmi' kit's
        doc["fmi_shims"] = ("tang FMI_pixel/FMI_w and mefb FMI ran with this script's MATLAB_EDGE "
                            f"(edge) and dwt2 shims, the dmey filters of PyWavelets {_pywt_version()}")
    if any("tang2022_corner" in kits for kits in values.values()):
        doc["tang2022"] = ("Tang's analysis_Reference.m of 5d6c43a7 and the files it calls; "
                           "tang2022_corner FMI_w ran with this script's dwt2 shim, the dmey "
                           f"filters of PyWavelets {_pywt_version()}")
    partial = target.with_suffix(".json.part")
    partial.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(partial, target)  # a reader never sees half a file
    print(f"wrote {target}: {len(values)} cases")


if __name__ == "__main__":
    main()
