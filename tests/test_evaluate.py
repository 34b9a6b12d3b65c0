"""evaluate.py: the reference numbers through the command line itself, the table, the files,
and the handling of missing, mismatched and unreadable images."""
import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import evaluate
from metrics import evaluator as M
from metrics import folder as folder_runner
from conftest import REPO
from tolerance import EPS32, rel_ulps
from util.images import read_gray, write_png_atomic

# Against the reference's numbers: 8 units of float32 resolution of each value, as in
# test_metrics.py (Qabf's per-pixel float32 exp/arctan kernels vary by CPU: 0.85 units measured).
RTOL = 8 * EPS32
CASES = ("roadscene_mean", "mri_ct_max", "flir_ddfm_tiny_100steps")
HEADER = ["Method", "EN", "SD", "MI", "VIF", "Qabf", "SSIM", "SF", "AG", "SCD", "CC", "PSNR",
          "MSE", "pairs", "cropped"]


def _run(capsys, *argv):
    rc = evaluate.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def _close(got, want, where):
    bad = {k: (got[k], want[k]) for k in want if not abs(got[k] - want[k]) <= RTOL * abs(want[k])}
    assert not bad, f"{where}: {bad}"


def _table(out):
    """Header and rows of the printed table, split on whitespace."""
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.split()[:2] == ["Method", "EN"])
    rows = []
    for line in lines[i + 1:]:
        cells = line.split()
        if len(cells) != len(HEADER):
            break
        rows.append(cells)
    return lines[i].split(), rows


@pytest.mark.numeric
@pytest.mark.parametrize("name", CASES)
def test_cli_matches_reference(name, metric_cases, tmp_path, capsys):
    case = metric_cases[name]
    expected = case["expected"]
    out_json = tmp_path / "res" / "metrics.json"
    rc, out, err = _run(capsys, "--input", case["input"], "--fused", case["fused"],
                        "--modalities", ",".join(case["modalities"]), "--json", out_json)
    assert rc == 0, err
    doc = json.loads(out_json.read_text())
    assert doc["profile"] == "reference" and doc["modalities"] == case["modalities"]
    (method,) = doc["methods"].values()
    assert method["count"] == len(expected["per_image"]) and not method["skipped"]
    assert set(method["per_image"]) == set(expected["per_image"])
    for stem, want in expected["per_image"].items():
        _close(method["per_image"][stem], want, f"{name}/{stem}")
    _close(method["mean"], expected["mean"], f"{name} mean")
    # sample.py's crop to multiples of 32: only the pipeline case has smaller fused images
    n_crop = len(expected["per_image"]) if name == "flir_ddfm_tiny_100steps" else 0
    assert len(method["cropped"]) == n_crop
    # the printed table: paper column order, one row named after the folder, two decimals
    header, rows = _table(out)
    assert header == HEADER
    (row,) = rows
    assert row[0] == case["fused"].name
    assert row[1:13] == [f"{expected['mean'][k]:.2f}" for k in HEADER[1:13]]
    assert row[13:] == [str(len(expected["per_image"])), str(n_crop)]
    assert "Profile: reference" in out
    assert not [p for p in out_json.parent.iterdir() if p.name != "metrics.json"]  # no temp files


@pytest.mark.numeric
def test_several_methods_and_all_files(metric_cases, tmp_path, capsys):
    """Two fused folders give two rows; CSV, JSON and Markdown hold per-image values and means;
    the textbook profile differs from the reference only in MI (bits) and SSIM."""
    case = metric_cases["flir_ddfm_tiny_100steps"]
    m1 = tmp_path / "runA" / "recon"
    m2 = tmp_path / "runB" / "recon"
    shutil.copytree(case["fused"], m1)
    shutil.copytree(case["fused"], m2)
    (m2 / "FLIR_04071.png").unlink()
    files = {k: tmp_path / "out" / f"r.{k}" for k in ("csv", "json", "md")}
    rc, out, err = _run(capsys, "--input", case["input"], "--fused", m1, "--fused", m2,
                        "--csv", files["csv"], "--json", files["json"], "--md", files["md"])
    assert rc == 0
    header, rows = _table(out)
    assert [r[0] for r in rows] == [str(m1), str(m2)]  # same folder names: the paths name them
    assert [r[-2:] for r in rows] == [["3", "3"], ["2", "2"]]
    assert "FLIR_04071" in err and "no fused image" in err
    doc = json.loads(files["json"].read_text())
    assert doc["methods"][str(m2)]["skipped"][0]["image"] == "FLIR_04071"

    with files["csv"].open() as fh:
        table = list(csv.DictReader(fh))
    assert [(r["method"], r["image"]) for r in table] == (
        [(str(m1), s) for s in ("FLIR_03952", "FLIR_04071", "FLIR_04598", "mean")]
        + [(str(m2), s) for s in ("FLIR_03952", "FLIR_04598", "mean")])
    want = case["expected"]["per_image"]["FLIR_03952"]
    _close({k: float(table[0][k]) for k in want}, want, "csv")
    _close({k: float(table[3][k]) for k in want}, case["expected"]["mean"], "csv mean")
    md = files["md"].read_text()
    assert "| Method | EN | SD | MI | VIF | Qabf | SSIM | SF | AG | SCD | CC | PSNR | MSE |" in md
    assert "FLIR_04598 (cropped)" in md and "**mean**" in md and "FLIR_04071" in md

    rc, out, _ = _run(capsys, "--input", case["input"], "--fused", m1, "--profile", "textbook",
                      "--json", tmp_path / "t.json")
    assert rc == 0 and "Profile: textbook" in out
    txt = json.loads((tmp_path / "t.json").read_text())["methods"]["recon"]["per_image"]
    ref = doc["methods"][str(m1)]["per_image"]
    for stem in ref:
        # float64 (eps 2.2e-16): a change of logarithm base rounds each of a few thousand terms
        assert txt[stem]["MI"] == pytest.approx(ref[stem]["MI"] / math.log(2), rel=1e-12)
        assert txt[stem]["SSIM"] != ref[stem]["SSIM"]
        assert {k: v for k, v in txt[stem].items() if k not in ("MI", "SSIM")} == \
               {k: v for k, v in ref[stem].items() if k not in ("MI", "SSIM")}


def _spy_on_pools(monkeypatch) -> list:
    """The worker count of every pool the folder runner starts."""
    pools = []
    real_start = folder_runner.start_pool
    monkeypatch.setattr(folder_runner, "start_pool", lambda count: pools.append(count) or real_start(count))
    return pools


@pytest.mark.parametrize("workers", ["1", "2"])
def test_mismatches_are_named_and_not_counted(workers, tmp_path, capsys, monkeypatch):
    """The same result, order of the skipped images included, in one process or in two
    worker processes (8 pairs: enough for workers)."""
    pools = _spy_on_pools(monkeypatch)
    rng = np.random.default_rng(0)
    src = tmp_path / "input"
    fused = tmp_path / "fused"

    def img(h, w):
        return rng.integers(0, 256, (h, w)).astype(np.uint8)

    for stem in ("good", "missing", "cropped", "halved", "larger", "corrupt", "twice"):
        write_png_atomic(src / "ir" / f"{stem}.png", img(70, 90))
        write_png_atomic(src / "vi" / f"{stem}.png", img(70, 90))
    write_png_atomic(src / "ir" / "lonely.png", img(70, 90))
    write_png_atomic(src / "ir" / "unequal.png", img(70, 90))
    write_png_atomic(src / "vi" / "unequal.png", img(71, 90))
    write_png_atomic(fused / "good.png", img(70, 90))
    write_png_atomic(fused / "cropped.png", img(64, 64))  # sample.py's crop to multiples of 32
    write_png_atomic(fused / "halved.png", img(35, 45))
    write_png_atomic(fused / "larger.png", img(72, 90))
    (fused / "corrupt.png").write_bytes(b"not a png at all")
    write_png_atomic(fused / "twice.png", img(70, 90))
    write_png_atomic(fused / "twice.jpg", img(70, 90))
    write_png_atomic(fused / "unequal.png", img(70, 90))

    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--input", src, "--fused", fused, "--json", out_json,
                        "--workers", workers)
    assert rc == 1  # a source without its partner makes the table partial, as sample.py fails that pair
    doc = json.loads(out_json.read_text())["methods"]["fused"]
    assert sorted(doc["per_image"]) == ["cropped", "good"]
    assert doc["cropped"] == ["cropped"]
    reasons = {s["image"]: s["reason"] for s in doc["skipped"]}  # source problems, then pairs
    assert list(reasons) == ["lonely", "corrupt", "halved", "larger", "missing", "twice", "unequal"]
    assert "no fused image" in reasons["missing"]
    assert "45x35" in reasons["halved"] and "90x70" in reasons["halved"]
    assert "90x72" in reasons["larger"]
    assert "corrupt.png" in reasons["corrupt"] and "\n" not in reasons["corrupt"]  # read_gray's reason
    assert "no partner named lonely.png" in reasons["lonely"]
    assert "sources differ in size" in reasons["unequal"]
    assert "several fused images" in reasons["twice"]
    lines = [line for line in err.splitlines() if "not counted" in line]
    assert len(lines) == 7 and all(line.startswith(("fused/", "pair lonely: source ")) for line in lines)
    _, rows = _table(out)
    assert rows[0][-2:] == ["2", "1"]
    assert "7 image(s) not counted" in out
    assert pools == ([2] if workers == "2" else [])

    # the cropped pair is evaluated against the top-left crop of its sources
    f = read_gray(fused / "cropped.png")
    a = read_gray(src / "ir" / "cropped.png")[:64, :64]
    b = read_gray(src / "vi" / "cropped.png")[:64, :64]
    assert doc["per_image"]["cropped"] == M.evaluate_pair(f, a, b)

    # nothing countable at all: exit status 1
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = _run(capsys, "--input", src, "--fused", empty)
    assert rc == 1 and err.count("no fused image") == 8


@pytest.mark.parametrize("workers", ["1", "2"])
def test_several_profiles_in_one_pass_write_what_separate_runs_write(workers, tmp_path, capsys,
                                                                     monkeypatch):
    """--profile reference,mefb,liu: one pass over the pairs (MEFB's and Liu's Qp computed once),
    in one process or in two workers, prints the three tables and writes, for each profile, the
    reports a run of that profile alone writes, byte for byte. A pair only the toolkits refuse
    (smaller than 32x32) is named once per profile that refuses it."""
    pools = _spy_on_pools(monkeypatch)
    rng = np.random.default_rng(3)
    for k in range(8):
        for folder_name in ("input/ir", "input/vi", "fused"):
            write_png_atomic(tmp_path / folder_name / f"p{k}.png",
                             rng.integers(0, 256, (40, 48)).astype(np.uint8))
    for folder_name in ("input/ir", "input/vi", "fused"):
        write_png_atomic(tmp_path / folder_name / "tiny.png",
                         rng.integers(0, 256, (24, 24)).astype(np.uint8))
    common = ["--input", tmp_path / "input", "--fused", tmp_path / "fused", "--workers", workers]
    rc, out, err = _run(capsys, *common, "--profile", "reference,mefb,liu",
                        "--json", tmp_path / "all" / "r_{profile}.json",
                        "--csv", tmp_path / "all" / "r_{profile}.csv")
    assert rc == 0 and [line.split(" (")[0] for line in out.splitlines()
                        if line.startswith("Profile:")] == ["Profile: reference", "Profile: mefb",
                                                            "Profile: liu"]
    assert err.count("fused/tiny: ") == 2 and "not counted in profile mefb" in err
    assert "not counted in profile liu" in err and "profile reference" not in err
    assert pools == ([2] if workers == "2" else [])
    for name in ("reference", "mefb", "liu"):
        rc, _, _ = _run(capsys, *common, "--profile", name, "--json", tmp_path / name / "r.json",
                        "--csv", tmp_path / name / "r.csv")
        assert rc == 0
        for ext in ("json", "csv"):
            assert ((tmp_path / "all" / f"r_{name}.{ext}").read_bytes()
                    == (tmp_path / name / f"r.{ext}").read_bytes()), (name, ext)
    assert "tiny" in json.loads((tmp_path / "reference" / "r.json").read_text())["methods"]["fused"]["per_image"]


def test_profile_list_usage_errors_are_one_line(tmp_path, capsys):
    for folder_name in ("input/ir", "input/vi", "fused"):
        write_png_atomic(tmp_path / folder_name / "a.png", np.zeros((40, 40), np.uint8))
    common = ["--input", tmp_path / "input", "--fused", tmp_path / "fused"]
    cases = [
        (["--profile", "vifb,foo"], "--profile vifb,foo: unknown profile 'foo'; choose from "
                                    "reference, textbook, vifb, mefb, liu, tang, tang2022"),
        (["--profile", "tang,tang"], "--profile tang,tang: a profile is named twice"),
        (["--profile", "vifb,tang", "--json", tmp_path / "r.json"],
         f"--json {tmp_path / 'r.json'}: with several profiles each report needs {{profile}} in its "
         f"name, e.g. {tmp_path / 'r_{profile}.json'}"),
        (["--profile", "vifb,tang", "--csv", "-"],
         "--csv -: with several profiles each report needs {profile} in its name, e.g. "
         "results_{profile}.csv"),
    ]
    for extra, message in cases:
        rc, out, err = _run(capsys, *common, *extra)
        assert rc == 2 and out == "" and err == f"evaluate.py: error: {message}\n", err
    assert not (tmp_path / "r.json").exists()


def test_usage_errors_are_one_line(data_root, tmp_path, capsys):
    mri_pet = data_root / "MRI_PET"
    rc, out, err = _run(capsys, "--input", mri_pet, "--fused", tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "no folder 'ir'" in err and "MRI, PET" in err and "--modalities" in err
    rc, _, err = _run(capsys, "--input", mri_pet, "--modalities", "PET", "--fused", tmp_path)
    assert rc == 2 and "two different folder names" in err
    rc, _, err = _run(capsys, "--input", mri_pet, "--modalities", "PET,MRI",
                      "--fused", tmp_path / "nowhere")
    assert rc == 2 and "not a folder" in err
    rc, _, err = _run(capsys, "--input", tmp_path / "nowhere", "--fused", tmp_path)
    assert rc == 2 and "not a folder" in err
    rc, _, err = _run(capsys, "--input", mri_pet, "--modalities", "PET,MRI", "--fused", tmp_path,
                      "--workers", "0")
    assert rc == 2 and "--workers 0: give 1 or more processes" in err


@pytest.mark.numeric
@pytest.mark.parametrize("case, data, modalities, rule", [
    ("mri_pet_mean", "MRI_PET", "PET,MRI", "mean"),
    ("mri_spect_max", "MRI_SPECT", "SPECT,MRI", "max"),
    ("tno_mean", "TNO", "ir,vi", "mean"),
])
def test_eval_cases_are_consistent(case, data, modalities, rule, eval_cases, data_root,
                                   tmp_path, capsys):
    """The extra fused sets (no expected values): every pair counted under the medical folder
    names; per-image values equal evaluate_pair; simple metrics equal independent float64
    formulas."""
    fused = eval_cases / case / "fused"
    src = data_root / data
    out_json = tmp_path / "r.json"
    rc, out, err = _run(capsys, "--input", src, "--fused", fused, "--modalities", modalities,
                        "--json", out_json)
    assert rc == 0, err
    doc = json.loads(out_json.read_text())["methods"]["fused"]
    m1, m2 = modalities.split(",")
    n = len(list((src / m1).iterdir()))
    assert doc["count"] == n and not doc["skipped"] and not doc["cropped"]
    _, rows = _table(out)
    assert rows[0][0] == "fused" and rows[0][-2:] == [str(n), "0"]
    for stem, vals in doc["per_image"].items():
        assert all(math.isfinite(v) for v in vals.values())
    stems = sorted(doc["per_image"])
    for stem in (stems[0], stems[-1]):
        f = read_gray(next(fused.glob(stem + ".*")))
        a = read_gray(next((src / m1).glob(stem + ".*")))
        b = read_gray(next((src / m2).glob(stem + ".*")))
        # the rule the folder is named after, exactly: read_gray rounds the colour PET
        # sources' k + 0.5 luma pixels as OpenCV (with FMA) did when the case was made
        want = np.round((a + b) / 2) if rule == "mean" else np.maximum(a, b)
        assert np.array_equal(f, want)
        vals = doc["per_image"][stem]
        assert vals == M.evaluate_pair(f, a, b)
        f64, a64, b64 = (x.astype(np.float64) for x in (f, a, b))
        # the float32 metrics against float64 textbook formulas: float32 sums of positive terms
        # (32 units of float32 resolution, as test_sum32_is_numpy124_chunked_pairwise_sum says)
        mse = (np.mean((a64 - f64) ** 2) + np.mean((b64 - f64) ** 2)) / 2
        assert rel_ulps(vals["MSE"], mse) <= 32 and rel_ulps(vals["SD"], np.std(f64)) <= 32
        cc = (np.corrcoef(a64.ravel(), f64.ravel())[0, 1] + np.corrcoef(b64.ravel(), f64.ravel())[0, 1]) / 2
        # CC also cancels when centring (1 - CC ~ 0.1-0.5): 1e-5 = 84 units of the value
        assert vals["CC"] == pytest.approx(cc, rel=1e-5)
        p = np.bincount(f.astype(np.int64).ravel(), minlength=256) / f.size
        p = p[p > 0]
        # float64 (eps 2.2e-16) both ways, a few hundred terms summed in another order
        assert vals["EN"] == pytest.approx(-np.sum(p * np.log2(p)), rel=1e-12)
        assert vals["PSNR"] == pytest.approx(10 * np.log10(f64.max() ** 2 / vals["MSE"]), rel=1e-12)
    mean = {k: float(np.mean([v[k] for v in doc["per_image"].values()])) for k in M.TABLE_COLUMNS}
    assert doc["mean"] == pytest.approx(mean, rel=1e-12)  # float64 means of the same values
    assert rows[0][1:13] == [f"{mean[k]:.2f}" for k in M.TABLE_COLUMNS]


# ------------------------------------------------------------------ outputs, bars

def _small_case(root):
    """input/{ir,vi}/{a,b}.png and fused/{a,b}.png, random 40x48 images."""
    rng = np.random.default_rng(16)
    for stem in ("a", "b"):
        for folder in ("input/ir", "input/vi", "fused"):
            write_png_atomic(root / folder / f"{stem}.png", rng.integers(0, 256, (40, 48)).astype(np.uint8))
    return root / "input", root / "fused"


def _digest(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flag, target, words", [
    ("--csv", "input/ir/a.png", ["inside the input", "/input"]),
    ("--json", "input/ir/a.png", ["inside the input", "/input"]),
    ("--md", "input/results.md", ["inside the input", "/input"]),
    ("--json", "fused/metrics.json", ["inside the input", "/fused"]),
    ("--csv", "fused/a.png", ["inside the input", "/fused"]),
    ("--csv", "elsewhere/photo.png", ["existing image"]),
    ("--json", "elsewhere", ["is a folder"]),
])
def test_outputs_never_overwrite_inputs(flag, target, words, tmp_path, capsys):
    inp, fused = _small_case(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    write_png_atomic(tmp_path / "elsewhere" / "photo.png", np.zeros((8, 8), np.uint8))
    before = _digest(tmp_path)
    rc, out, err = _run(capsys, "--input", inp, "--fused", fused, flag, tmp_path / target)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"evaluate.py: error: {flag} {tmp_path / target}"), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _digest(tmp_path) == before, "an input was touched"
    assert out == ""
    # the same outputs outside the inputs are written
    res = tmp_path / "res" / f"out.{flag[2:]}"
    rc, out, err = _run(capsys, "--input", inp, "--fused", fused, flag, res)
    assert rc == 0 and res.is_file() and _digest(inp) == before_inputs(before)


def before_inputs(digest):
    return {k[len("input/"):]: v for k, v in digest.items() if k.startswith("input/")}


def test_two_outputs_on_one_file_are_refused(tmp_path, capsys):
    inp, fused = _small_case(tmp_path)
    rc, _, err = _run(capsys, "--input", inp, "--fused", fused, "--csv", tmp_path / "r.txt",
                      "--json", tmp_path / "r.txt")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "same file" in err
    assert not (tmp_path / "r.txt").exists()


def test_no_progress_bars_in_logs_and_quiet_silences_a_terminal(tmp_path, capsys, monkeypatch):
    inp, fused = _small_case(tmp_path)
    rc, out, err = _run(capsys, "--input", inp, "--fused", fused)  # stderr is not a terminal
    assert rc == 0 and err == "", err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    rc, out, err = _run(capsys, "--input", inp, "--fused", fused)
    assert rc == 0 and "%|" in err  # a terminal shows the bar (so the check above can fail)
    rc, out, err = _run(capsys, "--input", inp, "--fused", fused, "--quiet")
    assert rc == 0 and err == "", err


def test_pairs_are_sample_py_pairs_and_broken_links_are_named(tmp_path, capsys):
    """evaluate.py counts the pairs sample.py fuses (util.images.find_pairs: same name first, then
    a single file of the same stem), and names a dangling link instead of skipping it."""
    from util.images import find_pairs

    rng = np.random.default_rng(1)
    src, fused = tmp_path / "input", tmp_path / "fused"
    for folder, name in (("ir", "same.png"), ("vi", "same.png"), ("vi", "same.jpg"),
                         ("ir", "stem.png"), ("vi", "stem.jpg"), ("ir", "gone.png"), ("vi", "gone.png"),
                         ("ir", "ghost.png")):
        write_png_atomic(src / folder / name, rng.integers(0, 256, (40, 48)).astype(np.uint8))
    (src / "ir" / "ghost.png").unlink()
    (src / "ir" / "ghost.png").symlink_to(tmp_path / "nowhere.png")
    (src / "vi" / "ghost.png").symlink_to(tmp_path / "nowhere.png")
    for stem in ("same", "stem"):
        write_png_atomic(fused / f"{stem}.png", rng.integers(0, 256, (40, 48)).astype(np.uint8))
    (fused / "gone.png").symlink_to(tmp_path / "deleted.png")

    pairs, _ = find_pairs(src)
    assert [p.stem for p in pairs] == ["gone", "same", "stem"]
    rc, out, err = _run(capsys, "--input", src, "--fused", fused, "--json", tmp_path / "r.json")
    assert rc == 1  # the broken source pair (ghost) makes the table partial
    doc = json.loads((tmp_path / "r.json").read_text())["methods"]["fused"]
    assert sorted(doc["per_image"]) == ["same", "stem"]  # same.png with same.png, stem.png with stem.jpg
    reasons = {s["image"]: s["reason"] for s in doc["skipped"]}
    assert sorted(reasons) == ["ghost", "gone", "same"]
    assert "broken symbolic link" in reasons["gone"] and "gone.png" in reasons["gone"]
    assert "broken symbolic link" in reasons["ghost"]
    assert "same.jpg" in reasons["same"]  # the vi file left over, named
    assert "broken symbolic link" in err and "Traceback" not in err


def test_folder_benchmark_runs_and_projects_msrs(tmp_path, capsys, monkeypatch):
    """benchmarks/bench_evaluate_folder.py on two pairs, one worker: its table and note."""
    from benchmarks import bench_evaluate_folder

    monkeypatch.setattr(sys, "argv", ["bench", "--pairs", "2", "--profiles", "reference",
                                      "--workers", "1", "--md", str(tmp_path / "t.md")])
    bench_evaluate_folder.main()
    out = capsys.readouterr().out
    assert "361 pairs (min)" in out and "reference" in out and "1.00x" in out
    assert "2 pairs of 480x640" in (tmp_path / "t.md").read_text()


def _sigint_default() -> None:
    """In the child before exec: SIGINT at its default, as under a terminal. A test run started
    as a background job of a non-interactive shell has SIGINT ignored, which every child would
    inherit (and Python keeps an inherited SIG_IGN), so no Ctrl-C would reach it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


# 0.3 s after the workers exist they are importing numpy (this process has long left the
# milliseconds in which it starts them, ignoring Ctrl-C); 1.5 s after, they are measuring
@pytest.mark.parametrize("delay", [0.3, 1.5], ids=["workers_starting", "workers_measuring"])
def test_ctrl_c_stops_the_workers_at_once_and_writes_nothing(delay, tmp_path):
    """Ctrl-C (SIGINT to the whole process group) during a run with worker processes, while
    they import or while they measure: one line, exit status 130, no report, no traceback from
    the parent or the workers."""
    import os
    import signal
    import subprocess
    import time

    rng = np.random.default_rng(5)
    for k in range(24):  # tang on 24 pairs of 480x640: many seconds on any CPU
        for folder_name in ("input/ir", "input/vi", "fused"):
            write_png_atomic(tmp_path / folder_name / f"p{k:02d}.png",
                             rng.integers(0, 256, (480, 640)).astype(np.uint8))
    report = tmp_path / "r.json"
    run = subprocess.Popen([sys.executable, "evaluate.py", "--input", str(tmp_path / "input"),
                            "--fused", str(tmp_path / "fused"), "--profile", "tang",
                            "--workers", "2", "--json", str(report)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, preexec_fn=_sigint_default)
    children = Path(f"/proc/{run.pid}/task/{run.pid}/children")
    for _ in range(600):  # until the pool's two workers run (Linux shows them), at most 60 s
        if children.exists() and len(children.read_text().split()) >= 2:
            break
        time.sleep(0.1)
    time.sleep(delay)
    os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, (out, err)
    assert err == "evaluate.py: interrupted; no table and no report written\n"
    assert out == "" and not report.exists()
