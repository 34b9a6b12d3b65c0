"""The entry points against hostile inputs and outputs, end to end: links into the inputs, link
loops, FIFOs, a second run on the same folder, a source folder given as fused images, a
setup that fails. Each case asserts the one-line message, the exit code, and that no input
byte changed (the shared checks themselves are tested in test_output_paths.py,
test_folder_lock.py and test_conversion.py)."""
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
import reproduce
import sample
from util.folderlock import lock_folder

FAST = ["--prior", "none", "--steps", "2", "--quiet"]


def make_input(root: Path, stems=("a", "b")) -> Path:
    rng = np.random.default_rng(0)
    for modality in ("ir", "vi"):
        (root / modality).mkdir(parents=True)
        for stem in stems:
            Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(root / modality / f"{stem}.png")
    return root


def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def one_error_line(capsys, prefix="error: ") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(prefix) and "Traceback" not in err[0], err
    return err[0]


def test_recon_linked_into_the_input_is_refused_and_the_sources_survive(tmp_path, capsys):
    inp = make_input(tmp_path / "in")
    before = digest(inp)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "recon").symlink_to(inp / "ir")
    assert sample.main(["--input", str(inp), "--save_dir", str(tmp_path / "out"), "--overwrite", *FAST]) == 2
    assert "input" in one_error_line(capsys)
    assert digest(inp) == before


def test_a_second_run_on_a_locked_folder_is_refused_before_it_touches_anything(tmp_path, capsys):
    inp, out = make_input(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    (out / "recon").mkdir()
    other = out / "recon" / f".a.png.{os.getpid()}.tmp"  # a temporary of the run holding the lock
    other.write_bytes(b"in progress")
    lock = lock_folder(out)
    try:
        assert sample.main(["--input", str(inp), "--save_dir", str(out), *FAST]) == 2
        line = one_error_line(capsys)
        assert str(out) in line and str(os.getpid()) in line
        assert other.read_bytes() == b"in progress" and not (out / "recon" / "a.png").exists()
    finally:
        lock.release()
    assert sample.main(["--input", str(inp), "--save_dir", str(out), *FAST]) == 0  # free again
    assert (out / "recon" / "a.png").is_file()


def test_a_setup_failure_leaves_no_output_folder(tmp_path, capsys, golden):
    inp = make_input(tmp_path / "in")
    bad = tmp_path / "model.yaml"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    bad.write_text((golden / "unet_tiny.yaml").read_text().replace("unet_tiny.pt", str(broken)))
    out = tmp_path / "out"
    assert sample.main(["--input", str(inp), "--save_dir", str(out), "--model_config", str(bad),
                        "--steps", "2", "--quiet"]) == 2
    assert str(broken) in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--input", "--save_dir"])
def test_a_link_loop_given_to_sample_py_is_one_line(flag, tmp_path, capsys):
    inp = make_input(tmp_path / "in")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    argv = {"--input": str(inp), "--save_dir": str(tmp_path / "out")} | {flag: str(loop)}
    assert sample.main([x for kv in argv.items() for x in kv] + FAST) == 2
    assert "loop" in one_error_line(capsys)


def fused_folder(tmp_path: Path, inp: Path) -> Path:
    fused = tmp_path / "fused"
    fused.mkdir()
    for p in (inp / "ir").iterdir():
        Image.open(p).save(fused / p.name)
    return fused


def test_evaluate_refuses_a_report_through_a_link_onto_a_source(tmp_path, capsys):
    inp = make_input(tmp_path / "in")
    fused = fused_folder(tmp_path, inp)
    before = digest(inp)
    link = tmp_path / "results.csv"
    link.symlink_to(inp / "vi" / "a.png")
    assert evaluate.main(["--input", str(inp), "--fused", str(fused), "--csv", str(link), "--quiet"]) == 2
    assert "symbolic link" in one_error_line(capsys, "evaluate.py: error: ")
    assert digest(inp) == before and link.is_symlink()


def test_evaluate_never_replaces_a_fifo_and_writes_no_report_when_one_is_refused(tmp_path, capsys):
    inp = make_input(tmp_path / "in")
    fused = fused_folder(tmp_path, inp)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    json_out = tmp_path / "r.json"
    assert evaluate.main(["--input", str(inp), "--fused", str(fused), "--json", str(json_out),
                          "--csv", str(fifo), "--quiet"]) == 2
    assert "FIFO" in one_error_line(capsys, "evaluate.py: error: ")
    assert fifo.is_fifo() and not json_out.exists()  # refused before any image was read


def test_evaluate_writes_a_report_to_stdout_for_a_dash(tmp_path, capsys):
    inp = make_input(tmp_path / "in")
    assert evaluate.main(["--input", str(inp), "--fused", str(fused_folder(tmp_path, inp)), "--csv", "-",
                          "--quiet"]) == 0
    assert "method,image,cropped" in capsys.readouterr().out


def test_evaluate_refuses_a_source_folder_as_fused_images(tmp_path, capsys):
    inp = make_input(tmp_path / "in")
    assert evaluate.main(["--input", str(inp), "--fused", str(inp / "vi"), "--quiet"]) == 2
    assert "is the source folder" in one_error_line(capsys, "evaluate.py: error: ")


def test_evaluate_names_a_broken_source_link_and_exits_1(tmp_path, capsys):
    inp = make_input(tmp_path / "in", stems=("a", "b"))
    fused = fused_folder(tmp_path, inp)
    (inp / "vi" / "b.png").unlink()
    (inp / "vi" / "b.png").symlink_to(tmp_path / "gone.png")
    assert evaluate.main(["--input", str(inp), "--fused", str(fused), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "pair b: source" in err and "fused/b" not in err


def test_evaluate_a_link_loop_as_report_is_one_line(tmp_path, capsys):
    inp = make_input(tmp_path / "in")
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    assert evaluate.main(["--input", str(inp), "--fused", str(fused_folder(tmp_path, inp)), "--csv", str(loop),
                          "--quiet"]) == 2
    assert "loop" in one_error_line(capsys, "evaluate.py: error: ")


def test_reproduce_a_link_loop_as_save_dir_is_one_line(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    (tmp_path / "data").mkdir()
    assert reproduce.main(["--table", "ivf", "--data", str(tmp_path / "data"), "--save_dir", str(loop),
                           "--prior", "none"]) == 2
    assert "loop" in one_error_line(capsys, "reproduce.py: error: ")


def test_the_demo_refuses_formats_sample_py_skips(tmp_path):
    demo_app = pytest.importorskip("demo_app")
    gif = tmp_path / "x.gif"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(gif)
    with pytest.raises(demo_app.DemoError, match=r"\.gif is not a source format"):
        demo_app.read_upload({"path": str(gif), "orig_name": "x.gif"}, "infrared", 1024)


def test_the_demo_refuses_a_malformed_request_before_it_queues(tmp_path, golden):
    """The click's check runs outside the queue (no model is loaded for it), and an API call with
    a value of the wrong kind gets its one-line reason, not an empty error."""
    demo_app = pytest.importorskip("demo_app")
    gr = pytest.importorskip("gradio")
    settings = demo_app.make_settings({"model_config": str(golden / "unet_tiny.yaml"),
                                       "diffusion_config": str(golden / "pipeline" / "small_10steps" /
                                                               "diffusion_config.yaml")})
    try:
        check = demo_app.make_check(settings)
        with pytest.raises(gr.Error, match="must be an uploaded file"):
            check("not a file", None, "infrared-visible", False, 2, 1, 0.5, 0.001, "none")
        with pytest.raises(gr.Error, match="lamb must be a finite number > 0"):
            check(None, None, "infrared-visible", False, 2, 1, -1, 0.001, "none")
    finally:
        import shutil
        shutil.rmtree(settings.workdir)
