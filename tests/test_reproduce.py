"""reproduce.py end to end with the tiny golden model (2 steps) on a small copy of the test data
laid out as the presets expect: RoadScene and TNO present (2 pairs each, cropped small), MSRS and
M3FD absent."""
import contextlib
import io
import json
import shutil

import pytest
from PIL import Image

import evaluate
import reproduce

CROP = (0, 0, 100, 70)  # 100x70: fused at 96x64 (multiples of 32), so evaluate.py crops the sources


def _copy_pairs(src, dst, count, crop=CROP):
    for mod in sorted(p.name for p in src.iterdir() if p.is_dir()):
        (dst / mod).mkdir(parents=True)
        for f in sorted(p for p in (src / mod).iterdir() if p.is_file())[:count]:
            with Image.open(f) as im:
                im.crop(crop).save(dst / mod / f"{f.stem}.png")


@pytest.fixture(scope="module")
def small_data(data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in ("RoadScene", "TNO"):
        _copy_pairs(data_root / name, root / name, 2)
    return root


@pytest.fixture(scope="module")
def tiny(golden):
    return ["--model_config", str(golden / "unet_tiny.yaml"),
            "--diffusion_config", str(golden / "pipeline" / "small_10steps" / "diffusion_config.yaml"),
            "--steps", "2", "--quiet"]


def run_reproduce(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = reproduce.main([str(a) for a in argv])
    return code, out.getvalue()


def recon_state(save_dir):
    return {p.relative_to(save_dir).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(save_dir.glob("*/recon/*.png"))}


@pytest.fixture(scope="module")
def first_run(small_data, tiny, tmp_path_factory):
    save = tmp_path_factory.mktemp("repro")
    code, text = run_reproduce(["--table", "ivf", "--data", small_data, "--save_dir", save, *tiny])
    doc = json.loads((save / "tables.json").read_text(encoding="utf-8"))
    return {"code": code, "text": text, "save": save, "json": doc, "state": recon_state(save)}


def _block(text, name):
    """The printed block of one dataset: from its heading to the next blank line."""
    start = text.index(f"== {name} ")
    end = text.find("\n\n", start)
    return text[start:end if end >= 0 else len(text)]


def _row(block, method):
    return next(line for line in block.splitlines() if line.startswith(method))


def _plain(cells):
    """Cells without the best (*x*) / second-best (_x_) marks."""
    return [c.strip("*_") for c in cells]


PAPER_ROADSCENE = {  # tests/fixtures/paper/ddfm_tables.csv
    "FGAN": ["7.12", "40.13", "1.90", "0.36", "0.26", "0.61"],
    "DDFM": ["7.41", "52.61", "2.35", "0.75", "0.65", "0.98"],
}


def test_tables_print_paper_rows_and_this_run(first_run):
    assert first_run["code"] == 0, first_run["text"]
    text = first_run["text"]
    road = _block(text, "RoadScene")
    assert "2 pairs found" in road and "the paper's test set has 50" in road
    assert "fusion: 2 fused now, 0 already fused" in road
    assert _plain(_row(road, "DDFM (paper)").split()[2:8]) == PAPER_ROADSCENE["DDFM"]
    assert _plain(_row(road, "FGAN (paper)").split()[2:8]) == PAPER_ROADSCENE["FGAN"]
    for code in ("FGAN", "GMcC", "U2F", "RFN", "TarD", "DeF", "UMF"):  # complete: no dash
        cells = _plain(_row(road, f"{code} (paper)").split()[2:8])
        assert "—" not in cells and all(float(c) > 0 for c in cells)
    assert _row(road, "this run (DDFM)")
    assert _row(road, "diff vs DDFM (paper)")
    tno = _block(text, "TNO")
    assert "the paper's test set has 25" in tno
    assert _plain(_row(tno, "DDFM (paper)").split()[2:8]) == ["7.06", "51.42", "2.21", "0.81", "0.49", "0.95"]
    diff = _row(tno, "diff vs DDFM (paper)").split()[4:10]
    assert all(d.startswith(("+", "-")) for d in diff)
    assert "not in configs/paper_results.yaml" not in text
    for name in ("tables.md", "tables.csv", "tables.json"):
        assert (first_run["save"] / name).is_file()
    md = (first_run["save"] / "tables.md").read_text(encoding="utf-8")
    # RoadScene: DDFM leads every column of the paper (SSIM tied with UMF-CMGR); this run (EM
    # only, 2 pairs) may take a mark from it, so the marks are stripped here
    road_md = md[md.index("## RoadScene"):]
    ddfm_md = next(line for line in road_md.splitlines() if line.startswith("| DDFM (paper) |"))
    cells = [c.strip() for c in ddfm_md.strip("|").split("|")]
    assert [c.replace("**", "").replace("<u>", "").replace("</u>", "") for c in cells[1:]] == \
        PAPER_ROADSCENE["DDFM"] + ["50"]
    assert "**bold**: best" in md
    assert not list(first_run["save"].glob(".*.tmp"))


@pytest.mark.parametrize("name", ["RoadScene", "TNO"])
def test_best_and_second_best_marked_per_column(first_run, name):
    """Per column, over the paper's rows and this run's: the largest printed value is marked
    *best*, the next distinct one _second_; nothing else, and not the difference row."""
    block = _block(first_run["text"], name)
    methods = [f"{code} (paper)" for code in ("FGAN", "GMcC", "U2F", "RFN", "TarD", "DeF", "UMF", "DDFM")]
    cells = {m: _row(block, m).split()[2:8] for m in methods}
    cells["this run"] = _row(block, "this run (DDFM)").split()[3:9]
    assert "*" not in _row(block, "diff vs DDFM (paper)") and "_" not in _row(block, "diff vs DDFM (paper)")
    for col in range(6):
        values = {m: float(c[col].strip("*_")) for m, c in cells.items()}
        ranked = sorted(set(values.values()), reverse=True)
        for m, c in cells.items():
            want = ("*" if values[m] == ranked[0] else "_" if values[m] == ranked[1] else "")
            assert c[col] == (f"{want}{c[col].strip('*_')}{want}" if want else c[col]), (m, col, c[col])
    assert "*x*: best, _x_: second best" in block
    entry = next(d for d in first_run["json"]["datasets"] if d["name"] == name)
    ddfm = next(r for r in entry["rows"] if r.get("code") == "DDFM")
    assert set(ddfm.get("marks", {}).values()) <= {"best", "second"}


def test_mark_best_ties_share_and_lower_is_better():
    rows = [{"kind": "paper", "values": {"A": 1.004, "B": 3.0}},
            {"kind": "this run", "values": {"A": 1.0, "B": 2.0}},
            {"kind": "compare", "values": {"A": 0.5, "B": None}},
            {"kind": "difference", "values": {"A": 9.0, "B": 9.0}}]
    reproduce.mark_best(rows, ["A", "B"], {"A": True, "B": False})
    assert rows[0]["marks"] == {"A": "best", "B": "second"}     # 1.004 prints as 1.00: a tie
    assert rows[1]["marks"] == {"A": "best", "B": "best"}       # B: lower is better
    assert rows[2]["marks"] == {"A": "second"}
    assert "marks" not in rows[3]


def test_missing_datasets_named_and_skipped(first_run):
    text, doc, save = first_run["text"], first_run["json"], first_run["save"]
    assert "MSRS: missing, skipped" in text and "M3FD: missing, skipped" in text
    assert "Missing, skipped: MSRS, M3FD" in text
    assert "== MSRS" not in text and "== M3FD" not in text
    assert doc["missing"] == ["MSRS", "M3FD"]
    assert [d["name"] for d in doc["datasets"] if d["status"] == "evaluated"] == ["RoadScene", "TNO"]
    assert not (save / "msrs").exists() and not (save / "m3fd").exists()


@pytest.mark.parametrize("name,key", [("RoadScene", "roadscene"), ("TNO", "tno")])
def test_this_run_row_equals_evaluate_py(first_run, small_data, tmp_path, name, key):
    out = tmp_path / "eval.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate.main(["--input", str(small_data / name),
                              "--fused", str(first_run["save"] / key / "recon"), "--json", str(out)]) == 0
    expected = next(iter(json.loads(out.read_text())["methods"].values()))
    entry = next(d for d in first_run["json"]["datasets"] if d["name"] == name)
    row = next(r for r in entry["rows"] if r["kind"] == "this run")
    assert row["pairs"] == expected["count"] == 2
    assert row["all_metrics"] == expected["mean"]
    metrics = ["EN", "SD", "MI", "VIF", "Qabf", "SSIM"]
    printed = _plain(_row(_block(first_run["text"], name), "this run (DDFM)").split()[3:9])
    assert printed == [f"{expected['mean'][m]:.2f}" for m in metrics]
    paper = next(r for r in entry["rows"] if r.get("code") == "DDFM")["values"]
    diff = next(r for r in entry["rows"] if r["kind"] == "difference")["values"]
    for m in metrics:
        assert diff[m] == round(round(expected["mean"][m], 2) - paper[m], 2)


def test_figures_are_valid_pngs(first_run):
    figures = first_run["save"] / "figures"
    assert sorted(p.name for p in figures.iterdir()) == ["roadscene.png", "tno.png"]
    for path in figures.iterdir():
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            assert im.width > 3 * 96 and im.height > 2 * 64  # 3 panels per row, one row per pair


def test_rerun_fuses_nothing_new_and_compare_adds_rows(first_run, small_data, tiny, tmp_path):
    save = first_run["save"]
    # another method: the infrared images as its "fused" results, one folder per dataset
    # (named by preset key for RoadScene, by the dataset's folder for TNO)
    other = tmp_path / "other"
    shutil.copytree(small_data / "RoadScene" / "ir", other / "roadscene")
    shutil.copytree(small_data / "TNO" / "ir", other / "TNO")
    code, text = run_reproduce(["--table", "ivf", "--data", small_data, "--save_dir", save, *tiny,
                                "--compare", f"IRonly={other}"])
    assert code == 0, text
    assert recon_state(save) == first_run["state"]  # no recon file rewritten
    for name in ("RoadScene", "TNO"):
        block = _block(text, name)
        assert "fusion: 0 fused now, 2 already fused (kept), 0 failed" in block
        # the same values; the marks may move, as the compared run is ranked too
        assert _plain(_row(block, "this run (DDFM)").split()) == \
            _plain(_row(_block(first_run["text"], name), "this run (DDFM)").split())
        assert _row(block, "IRonly").split()[-1] == "2"
    doc = json.loads((save / "tables.json").read_text(encoding="utf-8"))
    road = next(d for d in doc["datasets"] if d["name"] == "RoadScene")
    assert road["fusion"]["fused"] == 0 and road["fusion"]["resumed"] == 2
    assert [r["method"] for r in road["rows"] if r["kind"] == "compare"] == ["IRonly"]
    assert "IRonly" in (save / "tables.csv").read_text()
    with Image.open(save / "figures" / "roadscene.png") as im:  # the compared images join the figure
        assert im.width > 4 * 96


def test_prior_none_needs_no_checkpoint(golden, small_data, tmp_path):
    absent = tmp_path / "absent" / "model.pt"
    config = tmp_path / "no_checkpoint.yaml"
    text = (golden / "unet_tiny.yaml").read_text()
    config.write_text(text.replace("model_path: unet_tiny.pt", f"model_path: {absent}"))
    assert f"model_path: {absent}" in config.read_text()
    common = ["--table", "ivf", "--data", small_data, "--datasets", "tno", "--model_config", config,
              "--diffusion_config", golden / "pipeline" / "small_10steps" / "diffusion_config.yaml",
              "--steps", "3", "--quiet"]
    # the config really names no usable checkpoint: the diffusion prior cannot start
    code, _ = run_reproduce([*common, "--save_dir", tmp_path / "ddfm"])
    assert code == 2
    # one dataset: a --compare folder may hold the fused images directly
    direct = tmp_path / "direct"
    shutil.copytree(small_data / "TNO" / "vi", direct)
    code, text = run_reproduce([*common, "--save_dir", tmp_path / "em", "--prior", "none",
                                "--compare", f"VIonly={direct}"])
    assert code == 0, text
    block = _block(text, "TNO")
    assert "fusion: 2 fused now" in block
    assert _row(block, "this run (EM only)").split()[-1] == "2"
    assert _row(block, "VIonly").split()[-1] == "2"
    assert "RoadScene" not in text  # --datasets tno: the other datasets are not considered
    assert sorted(p.name for p in (tmp_path / "em" / "tno" / "recon").iterdir()) == ["01.png", "02.png"]
    assert not absent.exists() and not absent.parent.exists()


def test_mif_table_maps_mri_ct_to_the_papers_harvard_table(data_root, tiny, tmp_path):
    data = tmp_path / "data"
    _copy_pairs(data_root / "MRI_CT", data / "MRI_CT", 1, crop=(0, 0, 64, 64))
    code, text = run_reproduce(["--table", "mif", "--data", data, "--save_dir", tmp_path / "out",
                                *tiny, "--prior", "none"])
    assert code == 0, text
    block = _block(text, "MRI-CT")
    assert "the paper's Harvard (MRI-CT) table" in block
    assert _plain(_row(block, "DDFM (paper)").split()[2:8]) == ["4.64", "63.11", "1.99", "0.76", "0.60", "1.41"]
    assert _row(block, "this run (EM only)")
    assert "MRI-PET: missing, skipped" in text and "MRI-SPECT: missing, skipped" in text


def test_options_set_per_dataset_are_refused(tmp_path):
    for extra in (["--input", "x"], ["--preset", "tno"], ["--modalities", "a,b"], ["--save", "x"],
                  ["--no_such_option"]):
        with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
            reproduce.parse_args(["--table", "ivf", "--data", str(tmp_path), *extra])
        assert exc.value.code == 2, extra


def test_missing_data_root_and_no_dataset_are_setup_errors(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_reproduce(["--table", "ivf", "--data", tmp_path / "nowhere"])[0] == 2
        assert run_reproduce(["--table", "ivf", "--data", tmp_path])[0] == 2
    assert "none of the ivf datasets (MSRS, M3FD, RoadScene, TNO) was found" in err.getvalue()


# ------------------------------------------------------------------ outputs and inputs

def _synthetic_tno(root):
    """ROOT/TNO/{ir,vi}/{01,02}.png: two synthetic 70x100 grey pairs."""
    import numpy as np
    rng = np.random.default_rng(16)
    for mod in ("ir", "vi"):
        (root / "TNO" / mod).mkdir(parents=True)
        for stem in ("01", "02"):
            Image.fromarray(rng.integers(0, 256, (70, 100)).astype("uint8")).save(root / "TNO" / mod / f"{stem}.png")
    return root


def _run_both(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = reproduce.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_save_dir_that_is_a_file_is_one_line(tiny, tmp_path):
    data = _synthetic_tno(tmp_path / "data")
    blocker = tmp_path / "results"
    blocker.write_text("my notes\n")
    for save_dir in (blocker, blocker / "sub"):
        code, out, err = _run_both(["--table", "ivf", "--data", data, "--datasets", "tno",
                                    "--save_dir", save_dir, *tiny])
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"reproduce.py: error: --save_dir {save_dir}"), lines
        assert "is a file, not a folder" in lines[0] and "Traceback" not in err
    assert blocker.read_text() == "my notes\n"


@pytest.mark.parametrize("flag", ["--model_config", "--diffusion_config"])
def test_binary_yaml_is_one_line_before_anything(flag, tiny, tmp_path):
    data = _synthetic_tno(tmp_path / "data")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary")
    argv = list(tiny)
    argv[argv.index(flag) + 1] = str(bad)
    save = tmp_path / "out"
    code, out, err = _run_both(["--table", "ivf", "--data", data, "--save_dir", save, *argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"reproduce.py: error: {bad}") and "UTF-8" in lines[0], lines
    assert out == "" and not save.exists()


def test_quiet_silences_every_progress_bar(tiny, tmp_path, monkeypatch):
    import sys
    data = _synthetic_tno(tmp_path / "data")
    err = io.StringIO()
    err.isatty = lambda: True  # as on a terminal, where bars are shown unless --quiet
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with contextlib.redirect_stdout(out):
        code = reproduce.main([str(a) for a in ["--table", "ivf", "--data", data, "--datasets", "tno",
                                                 "--save_dir", tmp_path / "out", *tiny]])
    assert code == 0, out.getvalue() + err.getvalue()
    assert "fusion: 2 fused now" in out.getvalue()
    assert "%|" not in err.getvalue() and "\r" not in err.getvalue(), err.getvalue()
    # without --quiet the same terminal shows evaluate.py's bar (so the check above can fail)
    err2 = io.StringIO()
    err2.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", err2)
    with contextlib.redirect_stdout(io.StringIO()):
        code = reproduce.main([str(a) for a in ["--table", "ivf", "--data", data, "--datasets", "tno",
                                                 "--save_dir", tmp_path / "out",
                                                 *[a for a in tiny if a != "--quiet"]]])
    assert code == 0 and "%|" in err2.getvalue()
