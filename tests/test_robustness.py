"""Bad input gets a clear one-line error and nothing is lost.

Every case is built in ``tmp_path`` and run through ``sample.main`` (a few through a real
``python sample.py`` subprocess, for the exit status, the absence of tracebacks and signals).
Each checks the message (it names the file or key and the fix), the exit status, that the good
pairs beside the bad one were fused, and that no partial or temporary file exists.
"""
import hashlib
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from conftest import GOLDEN, REPO
from ddfm import FuseOptions, Fuser
from util.images import ImageError, read_rgb

TINY_MODEL = GOLDEN / "unet_tiny.yaml"
TINY_DIFFUSION = GOLDEN / "pipeline" / "small_10steps" / "diffusion_config.yaml"
FAST = ["--model_config", str(TINY_MODEL), "--diffusion_config", str(TINY_DIFFUSION),
        "--steps", "2", "--quiet"]
H, W = 64, 96
SUMMARY = re.compile(r"done: (\d+) fused, (\d+) skipped.*?(\d+) failed")


# ------------------------------------------------------------------------------------ helpers

def images_for(name: str, h: int = H, w: int = W):
    """A deterministic (grey infrared, RGB visible) pair of smooth-plus-noise uint8 images."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 80 * np.sin(xx / 9 + rng.uniform(0, 6)) * np.cos(yy / 7)
    ir = np.clip(base + rng.normal(0, 12, (h, w)), 0, 255).astype(np.uint8)
    vis = np.clip(base[..., None] * rng.uniform(0.5, 1.0, 3) + rng.normal(0, 20, (h, w, 3)),
                  0, 255).astype(np.uint8)
    return ir, vis


def add_pair(root: Path, name: str, h: int = H, w: int = W, content: str | None = None):
    ir, vis = images_for(content or Path(name).stem, h, w)
    for folder, array in (("ir", ir), ("vi", vis)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / folder / name)
    return root / "ir" / name, root / "vi" / name


def run_cli(capsys, *argv):
    capsys.readouterr()
    rc = sample.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out + err


def summary(text: str):
    match = SUMMARY.search(text)
    assert match, f"no summary line in:\n{text}"
    return tuple(int(g) for g in match.groups())  # fused, skipped, failed


def failed_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("failed: ")]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_named_once(lines: list[str], path: Path, *words: str) -> str:
    """Exactly one line names ``path``; it gives a reason and, after '; ', a fix."""
    mine = [line for line in lines if str(path) in line]
    assert len(mine) == 1, (path, lines)
    line = mine[0]
    assert "; " in line.split(str(path), 1)[1], f"no fix after '; ' in {line!r}"
    for word in words:
        assert word.lower() in line.lower(), (word, line)
    return line


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def assert_clean_outputs(save_dir: Path):
    """No temporary file anywhere; every PNG is complete (decodes and passes its CRCs)."""
    assert temporaries(save_dir) == [], temporaries(save_dir)
    for png in save_dir.rglob("*.png"):
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            im.load()


def tree_digest(root: Path) -> dict:
    """Every path under ``root`` (hidden ones too) with the hash of its content."""
    digest = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if not path.is_file():
            digest[key] = "dir"
        elif os.access(path, os.R_OK):
            digest[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:  # the unreadable case (when not root)
            digest[key] = (path.stat().st_size, path.stat().st_mtime_ns)
    return digest


def recon(save_dir: Path, stem: str) -> np.ndarray:
    return np.asarray(Image.open(save_dir / "recon" / f"{stem}.png"))


def fused_stems(save_dir: Path) -> set:
    return {p.stem for p in (save_dir / "recon").glob("*.png") if p.is_file()}


def write_png16_rgb(path: Path, array: np.ndarray):
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_tiff(path: Path, array: np.ndarray, sample_format: int = 1):
    """A minimal uncompressed little-endian TIFF, (H, W) or (H, W, 3), any numeric dtype
    (sample_format 1 = unsigned integer, 3 = IEEE float); Pillow cannot write 16-bit RGB or
    float RGB TIFFs."""
    array = np.ascontiguousarray(array)
    h, w = array.shape[:2]
    c = 1 if array.ndim == 2 else array.shape[2]
    bits = array.dtype.itemsize * 8
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    n_tags = 10 + (c > 1)
    extra_at = 8 + 2 + 12 * n_tags + 4
    extra = b""
    if c > 1:
        extra = struct.pack(f"<{c}H", *[bits] * c) + struct.pack(f"<{c}H", *[sample_format] * c)
    data_at = extra_at + len(extra)
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, bits if c == 1 else extra_at),
            (259, 3, 1, 1), (262, 3, 1, 1 if c == 1 else 2), (273, 4, 1, data_at),
            (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)),
            (339, 3, c, sample_format if c == 1 else extra_at + 2 * c)]
    if c > 1:
        tags.append((284, 3, 1, 1))
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in sorted(tags):
        packed = struct.pack("<HH", value, 0) if (kind == 3 and count == 1) else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + extra + data)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's tensors are too small for threads to pay: one thread is several times
    cheaper in CPU time, most of all on a busy machine (restored after this module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_model(monkeypatch):
    """Setup errors must come before any work: building the model fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the setup error was reported")
    import ddfm.runner
    monkeypatch.setattr(ddfm.runner, "Fuser", refuse)


# ----------------------------------------------------------------------- input folder errors

@pytest.mark.parametrize("case", ["missing_input", "empty_input", "missing_vi", "empty_folders"])
def test_input_folder_errors_are_one_line_before_any_work(case, tmp_path, capsys, no_model):
    inp, out = tmp_path / "in", tmp_path / "out"
    if case != "missing_input":
        inp.mkdir()
    if case == "missing_vi":
        add_pair(inp, "a.png")
        for f in (inp / "vi").iterdir():
            f.unlink()
        (inp / "vi").rmdir()
        (inp / "visible").mkdir()
    if case == "empty_folders":
        (inp / "ir").mkdir()
        (inp / "vi").mkdir()
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out)
    assert rc == 2
    lines = error_lines(text)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    expected = {"missing_input": (inp, "not found", "--input"),
                "empty_input": (inp / "ir", "not found", "--modalities"),
                "missing_vi": (inp / "vi", "not found", "visible", "--modalities"),
                "empty_folders": (inp, "no images")}[case]
    path, *words = expected
    assert str(path) in lines[0] and "; " in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()


# --------------------------------------------------------------------- bad files, good pairs

def build_mixed_input(root: Path) -> dict:
    """Good pairs and one pair (or lone file) per bad case. Returns stem -> (named file, words)."""
    for stem in ("good_1", "good_2", "good_3"):
        add_pair(root, f"{stem}.png")
    bad = {}
    ir, vis = add_pair(root, "lone_ir.png")
    vis.unlink()
    bad["lone_ir"] = (ir, "no partner")
    ir, vis = add_pair(root, "lone_vi.png")
    ir.unlink()
    bad["lone_vi"] = (vis, "no partner")
    ir, vis = add_pair(root, "sizes.png")
    Image.fromarray(images_for("x", H, W + 4)[1]).save(vis)
    bad["sizes"] = (ir, "differs", "96x64", "100x64", "resize")
    ir, vis = add_pair(root, "tiny.png", h=20, w=W)
    bad["tiny"] = (ir, "smaller than 32", "at least 32x32")
    ir, vis = add_pair(root, "trunc_jpeg.jpg")
    data = ir.read_bytes()
    ir.write_bytes(data[:len(data) // 2])
    bad["trunc_jpeg"] = (ir, "truncated", "re-export")
    ir, vis = add_pair(root, "trunc_png.png")
    data = vis.read_bytes()
    vis.write_bytes(data[:len(data) // 2])
    bad["trunc_png"] = (vis, "truncated", "re-export")
    ir, vis = add_pair(root, "zero.png")
    ir.write_bytes(b"")
    bad["zero"] = (ir, "empty", "0 bytes")
    ir, vis = add_pair(root, "text.png")
    vis.write_text("not an image, just text renamed .png\n")
    bad["text"] = (vis, "not an image", "re-export")
    ir, vis = add_pair(root, "float_grey.tif")
    write_tiff(ir, images_for("f")[0].astype(np.float32), sample_format=3)
    bad["float_grey"] = (ir, "floating-point", "16-bit integer")
    ir, vis = add_pair(root, "float_rgb.tif")
    write_tiff(vis, images_for("f")[1].astype(np.float32), sample_format=3)
    bad["float_rgb"] = (vis, "floating-point", "16-bit integer")
    if os.geteuid() != 0:  # root reads through any mode
        ir, vis = add_pair(root, "unreadable.png")
        ir.chmod(0)
        bad["unreadable"] = (ir, "permission denied", "readable")
    return bad


@pytest.mark.parametrize("batch", ["1", "4"])
def test_each_bad_file_is_named_and_the_good_pairs_are_fused(batch, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    bad = build_mixed_input(inp)
    before = tree_digest(inp)
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--batch", batch,
                       "--color", "--sheet")
    assert rc == 1
    lines = failed_lines(text)
    for stem, (path, *words) in bad.items():
        assert_named_once(lines, path, *words)
    assert len(lines) == len(bad), lines
    assert "Traceback" not in text
    assert summary(text) == (3, 0, len(bad))
    assert fused_stems(out) == {"good_1", "good_2", "good_3"}
    for folder in ("color", "sheet"):
        assert {p.stem for p in (out / folder).glob("*.png")} == {"good_1", "good_2", "good_3"}
    assert_clean_outputs(out)
    assert tree_digest(inp) == before, "something was written inside --input"


def test_names_with_spaces_non_ascii_and_upper_case_extensions(tmp_path, capsys):
    """Odd names fuse exactly as a plain name with the same content (the seed is per pair)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "plain.png", content="scene")
    odd = {"scène 1": ("scène 1.PNG", "scène 1.PNG"), "红外 图像": ("红外 图像.png", "红外 图像.png"),
           "UP": ("UP.JPG", "UP.JPG"), "mixed": ("mixed.PNG", "mixed.jpeg")}
    ref_ir, ref_vis = images_for("scene")
    for stem, (ir_name, vis_name) in odd.items():
        for folder, name, array in (("ir", ir_name, ref_ir), ("vi", vis_name, ref_vis)):
            is_jpeg = name.lower().endswith((".jpg", ".jpeg"))
            Image.fromarray(array).save(inp / folder / name, format="JPEG" if is_jpeg else "PNG")
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out)
    assert rc == 0, text
    assert summary(text) == (5, 0, 0)
    assert fused_stems(out) == {"plain", *odd}
    assert np.array_equal(recon(out, "scène 1"), recon(out, "plain"))
    assert np.array_equal(recon(out, "红外 图像"), recon(out, "plain"))
    assert_clean_outputs(out)


# ------------------------------------------------------------------ 16-bit, RGBA and palette

def test_16_bit_exports_fuse_exactly_as_the_8_bit_images(tmp_path, capsys):
    """Decision: 16-bit sources are read with 8-bit semantics, v / 257 rounded (grey); a
    16-bit export of an 8-bit image (v * 257) therefore gives exactly the 8-bit result."""
    inp, out = tmp_path / "in", tmp_path / "out"
    ir, vis = add_pair(inp, "eight.png", content="scene")
    ir8, vis8 = images_for("scene")
    Image.fromarray(ir8.astype(np.uint16) * 257).save(inp / "ir" / "png16.png")
    write_png16_rgb(inp / "vi" / "png16.png", vis8.astype(np.uint16) * 257)
    Image.fromarray(ir8.astype(np.uint16) * 257).save(inp / "ir" / "tif16.tif")
    write_tiff(inp / "vi" / "tif16.tif", vis8.astype(np.uint16) * 257)
    assert Image.open(inp / "ir" / "png16.png").mode == "I;16"
    assert np.array_equal(read_rgb(inp / "vi" / "png16.png"), vis8)
    assert np.array_equal(read_rgb(inp / "vi" / "tif16.tif"), vis8)
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--color")
    assert rc == 0, text
    for stem in ("png16", "tif16"):
        assert np.array_equal(recon(out, stem), recon(out, "eight")), stem
        assert np.array_equal(np.asarray(Image.open(out / "color" / f"{stem}.png")),
                              np.asarray(Image.open(out / "color" / "eight.png"))), stem


def test_16_bit_grey_scales_by_257_and_32_bit_out_of_range_is_refused(tmp_path):
    values = np.array([[0, 128, 129, 32767, 32768, 65535, 257 * 200, 257 * 200 + 128]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    got = read_rgb(tmp_path / "g16.png")[..., 0]
    assert got.tolist() == np.round(values / 257).astype(int).tolist()
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(ImageError, match=r"i32\.tif: .*outside 0\.\.65535.*; "):
        read_rgb(tmp_path / "i32.tif")


def test_rgba_and_palette_fuse_as_their_rgb_conversion(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    ir8, vis8 = images_for("scene")
    rgba = np.dstack([vis8, np.random.default_rng(1).integers(0, 256, (H, W), dtype=np.uint8)])
    palette = Image.fromarray(vis8).quantize(64)
    ir_la = Image.fromarray(np.dstack([ir8, np.full((H, W), 200, np.uint8)]), "LA")
    sources = {"rgba": (Image.fromarray(ir8), Image.fromarray(rgba, "RGBA")),
               "palette": (Image.fromarray(ir8), palette),
               "grey_alpha": (ir_la, Image.fromarray(vis8))}
    for stem, (a, b) in sources.items():
        for folder, im in (("ir", a), ("vi", b)):
            (inp / folder).mkdir(parents=True, exist_ok=True)
            im.save(inp / folder / f"{stem}.png")
            im.convert("RGB").save(inp / folder / f"{stem}_rgb.png")
    assert Image.open(inp / "vi" / "palette.png").mode == "P"
    assert Image.open(inp / "vi" / "rgba.png").mode == "RGBA"
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--color")
    assert rc == 0, text
    for stem in sources:
        assert np.array_equal(recon(out, stem), recon(out, f"{stem}_rgb")), stem
        assert np.array_equal(np.asarray(Image.open(out / "color" / f"{stem}.png")),
                              np.asarray(Image.open(out / "color" / f"{stem}_rgb.png"))), stem


# ------------------------------------------------------------------------------ config errors

def write_config(src: Path, dest: Path, **changes) -> Path:
    lines = []
    for line in src.read_text().splitlines():
        key = line.split(":", 1)[0].strip()
        if key in changes:
            value = changes.pop(key)
            if value is not None:
                lines.append(f"{key}: {value}")
        else:
            lines.append(line)
    lines += [f"{key}: {value}" for key, value in changes.items()]
    dest.write_text("\n".join(lines) + "\n")
    return dest


CONFIG_CASES = {
    # name: (model config changes, diffusion config changes, flags after "--steps 2" (None: no
    # flags, not even --steps), words the message must hold)
    "unknown_key": ({}, {"samplr": "ddim"}, [], ["'samplr'", "did you mean 'sampler'"]),
    "wrong_type_model": ({"num_channels": "many"}, {}, [], ["'num_channels'", "integer"]),
    "wrong_type_diffusion": ({}, {"clip_denoised": "'maybe'"}, [], ["'clip_denoised'", "true or false"]),
    "lamb_zero": ({}, {}, ["--lamb", "0"], ["--lamb", "> 0"]),
    "rho_negative": ({}, {}, ["--rho", "-0.5"], ["--rho", ">= 0"]),
    "respacing_flag": ({}, {}, ["--steps", "2000"], ["--steps", "1000"]),
    "respacing_zero": ({}, {}, ["--steps", "0"], ["--steps"]),
    "respacing_config": ({}, {"timestep_respacing": 2000}, None, ["'timestep_respacing'", "1000"]),
    "unknown_sampler": ({}, {"sampler": "euler"}, [], ["'sampler'", "ddim"]),
    "unknown_schedule": ({}, {"noise_schedule": "cosinus"}, [], ["'noise_schedule'", "linear"]),
    "bad_channel_mult": ({"channel_mult": "1,two,2"}, {}, [], ["'channel_mult'"]),
    "crop_multiple_vs_model": ({}, {}, ["--crop_multiple", "2"], ["--crop_multiple", "4"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_errors_name_the_key_at_start(case, tmp_path, capsys, no_model):
    model_changes, diffusion_changes, flags, words = CONFIG_CASES[case]
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    model_cfg = write_config(TINY_MODEL, tmp_path / "model.yaml", model_path=GOLDEN / "unet_tiny.pt",
                             **model_changes)
    diffusion_cfg = write_config(TINY_DIFFUSION, tmp_path / "diffusion.yaml", **diffusion_changes)
    argv = ["--model_config", model_cfg, "--diffusion_config", diffusion_cfg, "--quiet",
            "--input", inp, "--save_dir", out, *([] if flags is None else ["--steps", "2", *flags])]
    rc, text = run_cli(capsys, *argv)
    assert rc == 2, text
    lines = error_lines(text)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists(), "outputs were set up before the configs were checked"


# ------------------------------------------------------------------------------- checkpoints

def bad_checkpoint(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.pt"
    good = GOLDEN / "unet_tiny.pt"
    if kind == "missing":
        return path
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return path
    if kind == "empty":
        path.write_bytes(b"")
        return path
    if kind == "list":
        torch.save([torch.zeros(3)], path)
        return path
    if kind == "whole_model":
        torch.save(torch.nn.Linear(2, 2), path)
        return path
    state = torch.load(good, map_location="cpu", weights_only=True)
    if kind == "renamed_key":
        state["out.2.weight_renamed"] = state.pop("out.2.weight")
    elif kind == "class_conditional":
        state["label_emb.weight"] = torch.zeros(1000, 128)
    elif kind == "other_size":
        state["out.2.weight"] = torch.zeros(3, 32, 3, 3)
    torch.save(state, path)
    return path


CHECKPOINT_CASES = {
    "missing": ["not found", "https://", "--download_checkpoint"],
    "truncated": ["cannot be read", "download it again"],
    "empty": ["empty", "download it again"],
    "list": ["not a state dict"],
    "whole_model": ["weights_only", "state_dict()"],
    "renamed_key": ["does not fit", "missing out.2.weight", "unexpected out.2.weight_renamed"],
    "class_conditional": ["class-conditional", "label_emb.weight"],
    "other_size": ["does not fit", "out.2.weight"],
}


@pytest.mark.parametrize("kind", sorted(CHECKPOINT_CASES))
def test_checkpoint_errors_are_one_line_and_never_random_weights(kind, tmp_path, capsys, monkeypatch):
    import util.download

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(util.download, "download", no_download)
    monkeypatch.setattr(util.download, "_stdin_is_tty", lambda: False)
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    ckpt = bad_checkpoint(kind, tmp_path)
    model_cfg = write_config(TINY_MODEL, tmp_path / "model.yaml", model_path=ckpt)
    argv = [*FAST, "--model_config", model_cfg, "--input", inp, "--save_dir", out]
    rc, text = run_cli(capsys, *argv, "--allow_random_weights")
    assert rc == 2, text
    lines = error_lines(text)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert str(ckpt) in lines[0]
    for word in CHECKPOINT_CASES[kind]:
        assert word in lines[0], (word, lines[0])
    assert not list(out.rglob("*.png"))


# ------------------------------------------------------------------------------- save folder

def test_unwritable_save_dir_fails_before_any_work(tmp_path, capsys, no_model):
    inp = tmp_path / "in"
    add_pair(inp, "a.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("a regular file where a folder is needed\n")
    cases = [blocker / "out", blocker]
    if os.geteuid() != 0:  # root writes through a read-only mode; then only the cases above
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        cases.append(locked / "out")
    try:
        for save_dir in cases:
            rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", save_dir)
            assert rc == 2, text
            lines = error_lines(text)
            assert len(lines) == 1, lines
            assert lines[0].startswith("error: --save_dir ") and str(save_dir) in lines[0]
            assert ("not writable" in lines[0] or "is a file, not a folder" in lines[0]
                    or "a file stands where a folder" in lines[0]) and "choose another" in lines[0]
    finally:
        if os.geteuid() != 0:
            (tmp_path / "locked").chmod(0o700)
    assert blocker.read_text().startswith("a regular file")


@pytest.mark.parametrize("where", ["inside", "same"])
def test_save_dir_inside_input_is_refused(where, tmp_path, capsys, no_model):
    inp = tmp_path / "in"
    add_pair(inp, "a.png")
    before = tree_digest(inp)
    save_dir = inp / "ir" / "out" if where == "inside" else inp
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", save_dir)
    assert rc == 2
    lines = error_lines(text)
    assert len(lines) == 1 and "inside --input" in lines[0] and "outside" in lines[0], lines
    assert tree_digest(inp) == before


def test_nothing_is_written_inside_input_with_every_output(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    add_pair(inp, "b.jpg")
    before = tree_digest(inp)
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--color", "--sheet",
                       "--record", "--trace")
    assert rc == 0, text
    assert tree_digest(inp) == before
    assert_clean_outputs(out)
    assert {p.name for p in out.iterdir()} == {"recon", "color", "sheet", "progress", "trace"}
    umask = os.umask(0)
    os.umask(umask)
    for png in out.rglob("*.png"):  # ordinary permissions, not a temporary file's 0600
        assert png.stat().st_mode & 0o777 == 0o666 & ~umask, png


# ------------------------------------------------------------------- NaN, out of memory, Ctrl-C

def poison(monkeypatch, stem_word: str):
    """Make the UNet return NaN for the pairs whose infrared file name holds ``stem_word``."""
    real = Fuser.fuse_sources

    def fuse_sources(self, ir, vis, opts=FuseOptions(), **kwargs):
        bad = [k for k, s in enumerate(ir) if stem_word in Path(s.name).stem]
        if not bad:
            return real(self, ir, vis, opts, **kwargs)
        model_fn = self.model_fn

        def nan_model(x, t):
            y = model_fn(x, t).clone()
            y[bad] = float("nan")
            return y
        self.model_fn = nan_model
        try:
            return real(self, ir, vis, opts, **kwargs)
        finally:
            del self.model_fn
    monkeypatch.setattr(Fuser, "fuse_sources", fuse_sources)


@pytest.mark.parametrize("batch", ["1", "3"])
def test_nan_sample_stops_that_pair_and_saves_nothing_of_it(batch, tmp_path, capsys, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    for stem in ("a", "b_poison", "c"):
        add_pair(inp, f"{stem}.png")
    poison(monkeypatch, "poison")
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--batch", batch,
                       "--record", "--trace", "--color", "--sheet")
    assert rc == 1, text
    assert_named_once(failed_lines(text), inp / "ir" / "b_poison.png", "NaN")
    assert summary(text) == (2, 0, 1)
    assert fused_stems(out) == {"a", "c"}
    leftovers = [p for p in out.rglob("*") if "b_poison" in str(p.relative_to(out))]
    assert leftovers == [], "garbage of the NaN pair was saved"
    for stem in ("a", "c"):
        assert len(list((out / "progress" / stem).glob("*.png"))) == 2
        assert recon(out, stem).std() > 0
    assert_clean_outputs(out)


@pytest.mark.parametrize("error", ["cuda", "cpu"])
def test_out_of_memory_on_one_pair_names_it_and_the_run_continues(error, tmp_path, capsys, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    for stem in ("a", "b_huge", "c"):
        add_pair(inp, f"{stem}.png")
    real = Fuser.fuse_sources

    def fuse_sources(self, ir, vis, opts=FuseOptions(), **kwargs):
        if any("b_huge" in s.name for s in ir):
            if error == "cuda":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                               "not enough memory: you tried to allocate 21474836480 bytes.")
        return real(self, ir, vis, opts, **kwargs)
    monkeypatch.setattr(Fuser, "fuse_sources", fuse_sources)
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out)
    assert rc == 1, text
    line = assert_named_once(failed_lines(text), inp / "ir" / "b_huge.png", "out of", "memory",
                             f"{W}x{H}", "--precision bf16")
    assert "Traceback" not in text and "\n" not in line
    assert summary(text) == (2, 0, 1)
    assert fused_stems(out) == {"a", "c"}
    assert_clean_outputs(out)


@pytest.mark.parametrize("when", ["png", "trace"])
def test_interrupt_while_writing_leaves_no_temporary(when, tmp_path, capsys, monkeypatch):
    """Ctrl-C in the middle of writing an output: exit 130, no partial or temporary file."""
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    if when == "png":
        real_save = Image.Image.save

        def save(self, fp, *args, **kwargs):
            real_save(self, fp, *args, **kwargs)  # some bytes are in the temporary file
            raise KeyboardInterrupt
        monkeypatch.setattr(Image.Image, "save", save)
    else:
        real_savez = np.savez

        def savez(fh, **arrays):
            real_savez(fh, **arrays)
            raise KeyboardInterrupt
        monkeypatch.setattr(np, "savez", savez)
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out,
                       *(["--trace"] if when == "trace" else []))
    assert rc == 130
    assert "interrupted" in text and "Traceback" not in text
    assert [p for p in out.rglob("*") if p.is_file()] == []


# -------------------------------------------------------------------- real processes, signals

def cli_command(inp: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "sample.py", "--model_config", str(TINY_MODEL),
            "--diffusion_config", str(TINY_DIFFUSION), "--quiet", "--input", str(inp),
            "--save_dir", str(out), *map(str, extra)]


# One thread, as in this process (see one_thread); stdin is not a terminal (never a prompt).
PROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# A limit that only catches a hung process: a machine busy with other work may take many times
# the idle duration, and that must never fail a test.
HANG_S = 1200


def run_process(cmd, timeout=HANG_S):
    return subprocess.run(cmd, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env=PROCESS_ENV)


def test_process_exit_status_and_messages_without_traceback(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "good.png")
    ir, _ = add_pair(inp, "broken.png")
    ir.write_bytes(b"")
    # a setup error: exit 2, exactly one line on stderr, nothing on stdout
    proc = run_process(cli_command(inp, out, "--steps", "2", "--lamb", "0"))
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: --lamb")
    # a missing checkpoint without a terminal: one line with the path and the URL, no prompt
    missing = tmp_path / "nowhere" / "256x256_diffusion_uncond.pt"
    model_cfg = write_config(TINY_MODEL, tmp_path / "model.yaml", model_path=missing)
    cmd = cli_command(inp, out, "--steps", "2")
    cmd[cmd.index("--model_config") + 1] = str(model_cfg)
    proc = run_process(cmd)
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: checkpoint {missing} not found") and "https://" in proc.stderr
    assert not missing.parent.exists() and not list(out.rglob("*.png"))
    # a bad pair: exit 1, its line, the summary, the good pair fused
    proc = run_process(cli_command(inp, out, "--steps", "2"))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text
    assert_named_once(failed_lines(text), ir, "empty")
    assert summary(text) == (1, 0, 1)
    assert fused_stems(out) == {"good"}


SIGNAL_PAIRS = [f"p{k}" for k in range(5)]
SIGNAL_STEPS = 10
STOP_AT = ("p1", 3)  # the signal lands after pair p1's 3rd step

# The child runs sample.main as `python sample.py` would, with one hook: after pair p1's 3rd
# step it writes a marker file and waits there. The test sends the signal only once the
# marker exists, so the signal always lands in the middle of a pair, never after the run has
# finished, however loaded the machine is (no race between the run and the test's polling).
SIGNAL_CHILD = r"""
import signal, sys, time
from pathlib import Path
# Ctrl-C as in a terminal: a test run started as a background job of a script inherits an
# ignored SIGINT, which Python then keeps ignoring
signal.signal(signal.SIGINT, signal.default_int_handler)
import sample
from ddfm.outputs import PairObserver
marker, stem, step = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
observe = PairObserver.__call__
def hooked(self, info):
    observe(self, info)
    if self.pairs[0].stem == stem and self.count == step:
        # written whole, then renamed: the test must never read a half-written marker
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(str(self.frames[stem]))
        tmp.replace(marker)
        end = time.monotonic() + 600  # the signal comes long before
        while time.monotonic() < end:
            time.sleep(0.05)
PairObserver.__call__ = hooked
sys.exit(sample.main(sys.argv[4:]))
"""


def start_and_stop(tmp_path, sig):
    """Start a real run, wait until it is in the middle of pair p1 (p0 fused, p1's first frames
    recorded in its unfinished progress folder), send ``sig``; return (exit status, output,
    input folder, save folder, command)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    for stem in SIGNAL_PAIRS:
        add_pair(inp, f"{stem}.png")
    cmd = cli_command(inp, out, "--steps", SIGNAL_STEPS, "--record")
    marker = tmp_path / "in_p1.txt"
    child = [sys.executable, "-c", SIGNAL_CHILD, str(marker), STOP_AT[0], str(STOP_AT[1]), *cmd[2:]]
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        proc = subprocess.Popen(child, cwd=REPO, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                                env=PROCESS_ENV)
        try:
            while not marker.exists():
                assert proc.poll() is None, log.read_text()
                time.sleep(0.02)
            # mid-run: p0 is fused, p1 has recorded frames that are not a progress folder yet
            assert fused_stems(out) == {"p0"}
            unfinished = Path(marker.read_text())
            assert unfinished.parent == out / "progress" and unfinished.name.startswith(".p1.")
            assert len(list(unfinished.glob("x_*.png"))) == STOP_AT[1]
            assert sorted(p.name for p in (out / "progress").iterdir()) == sorted(["p0", unfinished.name])
            proc.send_signal(sig)
            rc = proc.wait(timeout=HANG_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return rc, log.read_text(), inp, out, cmd


def progress_folders(out: Path) -> dict:
    """progress/ entries (hidden ones too) -> number of frames."""
    return {p.name: len(list(p.iterdir())) for p in (out / "progress").iterdir()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_exits_130_without_partial_files_and_rerun_completes(sig, tmp_path, capsys):
    rc, text, inp, out, cmd = start_and_stop(tmp_path, sig)
    assert rc == 130, text
    assert "interrupted" in text and "Traceback" not in text
    assert_clean_outputs(out)
    assert fused_stems(out) == {"p0"}
    # the interrupted pair's frames are gone; p0's progress folder is complete
    assert progress_folders(out) == {"p0": SIGNAL_STEPS}
    before = tree_digest(inp)
    rc, text = run_cli(capsys, *cmd[2:])  # the same command, in this process
    assert rc == 0, text
    assert summary(text) == (len(SIGNAL_PAIRS) - 1, 1, 0)
    assert fused_stems(out) == set(SIGNAL_PAIRS)
    assert progress_folders(out) == {stem: SIGNAL_STEPS for stem in SIGNAL_PAIRS}
    assert_clean_outputs(out)
    assert tree_digest(inp) == before


def test_interrupted_record_run_then_rerun_without_record_leaves_no_stray_frames(tmp_path, capsys):
    """A pair's progress folder is complete or absent, also when the rerun does not
    record: the interrupted pair's frames never mix with the new result."""
    rc, text, inp, out, cmd = start_and_stop(tmp_path, signal.SIGINT)
    assert rc == 130, text
    rc, text = run_cli(capsys, *[a for a in cmd[2:] if a != "--record"])
    assert rc == 0, text
    assert summary(text) == (len(SIGNAL_PAIRS) - 1, 1, 0)
    assert fused_stems(out) == set(SIGNAL_PAIRS)
    assert progress_folders(out) == {"p0": SIGNAL_STEPS}
    assert_clean_outputs(out)


def _ended_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_sigkill_then_rerun_removes_stale_temporaries_and_completes(tmp_path):
    rc, text, inp, out, cmd = start_and_stop(tmp_path, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    # the killed pair's unfinished progress folder is left behind, with its frames
    assert [p.name for p in (out / "progress").iterdir() if p.name.startswith(".p1.")]
    # A kill during a write leaves its temporary (named with its writer's pid); plant some as
    # such a kill would, with the pid of a process that has ended.
    dead = _ended_pid()
    (out / "recon" / f".p4.png.{dead}.tmp").write_bytes(b"\x89PNG partial")
    (out / "progress" / "p0" / f".x_0003.png.{dead}.tmp").write_bytes(b"\x89PNG")
    (out / "trace").mkdir(exist_ok=True)
    (out / "trace" / f".p4.npz.{dead}.tmp").write_bytes(b"PK")
    unrelated = out / "notes" / ".keep.tmp"  # not ours: never touched
    unrelated.parent.mkdir()
    unrelated.write_text("user file")
    proc = run_process(cmd)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    assert fused_stems(out) == set(SIGNAL_PAIRS)
    assert progress_folders(out) == {stem: SIGNAL_STEPS for stem in SIGNAL_PAIRS}
    assert unrelated.read_text() == "user file"
    unrelated.unlink()
    assert_clean_outputs(out)


# ------------------------------------------------------------------ outputs never overwrite inputs

def assert_one_error_line(text: str, *words: str) -> str:
    lines = error_lines(text)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in text
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("which", ["model", "diffusion"])
def test_binary_yaml_is_one_line_exit_2(which, tmp_path, capsys, no_model):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    bad = tmp_path / f"{which}.yaml"
    bad.write_bytes(b"image_size: 64\n\xff\xfe\x00\x89PNG\x00\xc3(")
    flag = "--model_config" if which == "model" else "--diffusion_config"
    argv = [*FAST, flag, bad, "--input", inp, "--save_dir", out]
    rc, text = run_cli(capsys, *argv)
    assert rc == 2
    assert_one_error_line(text, str(bad), "UTF-8")
    assert not out.exists()


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "resume"])
def test_output_path_that_is_a_folder_fails_only_that_pair(overwrite, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    for stem in ("a", "b", "c"):
        add_pair(inp, f"{stem}.png")
    blocker = out / "recon" / "b.png"
    blocker.mkdir(parents=True)
    (blocker / "keep.txt").write_text("mine")
    before = tree_digest(inp)
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--record",
                       *(["--overwrite"] if overwrite else []))
    assert rc == 1, text
    assert "Traceback" not in text
    line = assert_named_once(failed_lines(text), blocker, "folder", "move it away")
    assert str(inp / "ir" / "b.png") in line
    assert summary(text) == (2, 0, 1)
    assert fused_stems(out) == {"a", "c"}
    assert (blocker / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "progress").iterdir()) == ["a", "c"]
    assert temporaries(out) == []
    assert tree_digest(inp) == before


@pytest.mark.parametrize("seed", [str(10 ** 23), str(2 ** 64), str(-(2 ** 63) - 1)])
def test_seed_out_of_range_is_refused_before_anything_is_created(seed, tmp_path, capsys, no_model):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--seed", seed)
    assert rc == 2
    assert_one_error_line(text, "--seed", seed, str(2 ** 64 - 1))
    assert not out.exists()


def test_seed_range_ends_are_accepted(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    for seed in (2 ** 64 - 1, -(2 ** 63)):
        rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--seed", seed,
                           "--overwrite")
        assert rc == 0, text
    assert fused_stems(out) == {"a"}


def link_digest(root: Path) -> dict:
    """tree_digest that also records symbolic links (by target), dangling or looping ones too."""
    digest = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            digest[str(path.relative_to(root))] = ("link", os.readlink(path))
        elif path.is_file():
            digest[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def test_dangling_and_looping_links_are_failed_pairs(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    for stem in ("a", "c"):
        add_pair(inp, f"{stem}.png")
    _, vis = add_pair(inp, "dangling.png")
    (inp / "ir" / "dangling.png").unlink()
    (inp / "ir" / "dangling.png").symlink_to(tmp_path / "gone.png")
    _, vis = add_pair(inp, "loop.png")
    (inp / "vi" / "loop.png").unlink()
    (inp / "vi" / "loop.png").symlink_to(inp / "vi" / "loop.png")
    (inp / "ir" / "lone.png").symlink_to("nowhere.png")  # a link without a partner
    before = link_digest(inp)
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out)
    assert rc == 1, text
    lines = failed_lines(text)
    assert_named_once(lines, inp / "ir" / "dangling.png", "broken symbolic link", "gone.png")
    assert_named_once(lines, inp / "vi" / "loop.png", "loops")
    assert_named_once(lines, inp / "ir" / "lone.png", "broken symbolic link")
    assert len(lines) == 3, lines
    assert summary(text) == (2, 0, 3)
    assert fused_stems(out) == {"a", "c"}
    assert_clean_outputs(out)
    assert link_digest(inp) == before


def nan_checkpoint(tmp_path: Path, value: float) -> Path:
    state = torch.load(GOLDEN / "unet_tiny.pt", map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
    state[key].view(-1)[3] = value
    path = tmp_path / f"weights_{value}.pt"
    torch.save(state, path)
    return path


NAN_CASES = {
    # name: (diffusion config changes, flags, words the line must hold)
    "yaml_eta_nan": ({"eta": ".nan"}, [], ["'eta'", "finite"]),
    "yaml_eta_inf": ({"eta": ".inf"}, [], ["'eta'", "finite"]),
    "cli_eta_nan": ({}, ["--eta", "nan"], ["--eta", "finite"]),
    "cli_eta_inf": ({}, ["--eta", "inf"], ["--eta", "finite"]),
    "yaml_eta_too_big": ({"eta": 3.0}, [], ["'eta'", "square root", "eta <= 1"]),
    "cli_eta_too_big": ({}, ["--eta", "3"], ["--eta", "square root", "eta <= 1"]),
    "yaml_huge_steps": ({"steps": 100000000}, [], ["'steps'", "100000", "NaN"]),
    "cli_lamb_inf": ({}, ["--lamb", "inf"], ["--lamb", "finite"]),
    "cli_rho_inf": ({}, ["--rho", "inf"], ["--rho", "finite"]),
}


@pytest.mark.parametrize("case", sorted(NAN_CASES))
def test_settings_that_can_only_give_nan_are_refused_at_start(case, tmp_path, capsys, no_model):
    changes, flags, words = NAN_CASES[case]
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    diffusion_cfg = write_config(TINY_DIFFUSION, tmp_path / "diffusion.yaml", **changes)
    rc, text = run_cli(capsys, *FAST, "--diffusion_config", diffusion_cfg, "--input", inp,
                       "--save_dir", out, *flags)
    assert rc == 2, text
    line = assert_one_error_line(text, *words)
    assert "--seed" not in line  # not the per-pair advice that cannot help
    assert not out.exists()


def test_eta_up_to_the_ddim_limit_runs_and_above_it_would_be_nan(tmp_path, capsys):
    """The eta limit is the one the sampler needs: at the limit every pixel is finite; just
    above it the DDIM update has a negative square root (checked on the schedule)."""
    from guided_diffusion.diffusion import space_timesteps
    from ddfm.config import max_ddim_eta
    kept = space_timesteps(1000, 2)
    limit = max_ddim_eta("linear", 1000, kept)
    assert 1 < limit < 1.01
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--eta", limit * 0.999)
    assert rc == 0, text
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--eta", limit * 1.01,
                       "--overwrite")
    assert rc == 2 and "square root" in text


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_checkpoint_with_non_finite_weights_is_refused_by_the_audit(value, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    ckpt = nan_checkpoint(tmp_path, value)
    model_cfg = write_config(TINY_MODEL, tmp_path / "model.yaml", model_path=ckpt)
    rc, text = run_cli(capsys, *FAST, "--model_config", model_cfg, "--input", inp, "--save_dir", out)
    assert rc == 2, text
    assert_one_error_line(text, str(ckpt), "NaN or Inf weights", "download it again")
    assert not list(out.rglob("*.png"))


def test_ambiguous_partners_are_called_ambiguous(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "good.png")
    ir, vis = add_pair(inp, "x.png")
    vis.unlink()
    for ext in ("jpg", "bmp"):
        Image.fromarray(images_for("x")[1]).save(inp / "vi" / f"x.{ext}")
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out)
    assert rc == 1, text
    lines = failed_lines(text)
    assert len(lines) == 1, lines
    assert_named_once(lines, ir, "ambiguous", "x.bmp", "x.jpg")
    assert "no partner" not in text
    assert summary(text) == (1, 0, 1) and fused_stems(out) == {"good"}


def test_checkpoint_error_names_the_model_config_given(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    ckpt = bad_checkpoint("other_size", tmp_path)
    model_cfg = write_config(TINY_MODEL, tmp_path / "my_model.yaml", model_path=ckpt)
    rc, text = run_cli(capsys, *FAST, "--model_config", model_cfg, "--input", inp, "--save_dir", out)
    assert rc == 2
    line = assert_one_error_line(text, str(ckpt), str(model_cfg))
    assert "model_config_imagenet" not in line and "256x256_diffusion_uncond" not in line


@pytest.mark.parametrize("kind", ["text_no_suffix", "yaml_wrong_keys", "image", "folder"])
def test_preset_file_that_is_not_a_preset_is_not_called_missing(kind, tmp_path, capsys, no_model):
    inp, out = tmp_path / "in", tmp_path / "out"
    ir, _ = add_pair(inp, "a.png")
    preset = {"text_no_suffix": tmp_path / "notes", "yaml_wrong_keys": tmp_path / "p.yaml",
              "image": ir, "folder": tmp_path / "in"}[kind]
    if kind == "text_no_suffix":
        preset.write_text("just some notes\n")
    if kind == "yaml_wrong_keys":
        preset.write_text("sampler: ddim\n")
    before = tree_digest(inp)
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--preset", preset)
    assert rc == 2
    line = assert_one_error_line(text, str(preset))
    assert "not found" not in line
    assert ("is a folder" if kind == "folder" else "not a preset file") in line
    assert not out.exists() and tree_digest(inp) == before
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out, "--preset", tmp_path / "none.yaml")
    assert rc == 2 and "not found" in assert_one_error_line(text)


def test_recon_being_a_file_is_named_as_such(tmp_path, capsys, no_model):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    out.mkdir()
    (out / "recon").write_text("a user's file\n")
    rc, text = run_cli(capsys, *FAST, "--input", inp, "--save_dir", out)
    assert rc == 2
    line = assert_one_error_line(text, str(out / "recon"), "is a file, not a folder")
    assert "File exists" not in line
    assert (out / "recon").read_text() == "a user's file\n"
    assert [p.name for p in out.iterdir()] == ["recon"]


def test_checkpoint_in_another_pickle_protocol_prints_one_line(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    add_pair(inp, "a.png")
    state = torch.load(GOLDEN / "unet_tiny.pt", map_location="cpu", weights_only=True)
    ckpt = tmp_path / "legacy.pt"
    torch.save(state, ckpt, pickle_protocol=4, _use_new_zipfile_serialization=False)
    model_cfg = write_config(TINY_MODEL, tmp_path / "model.yaml", model_path=ckpt)
    cmd = cli_command(inp, out, "--steps", "2")
    cmd[cmd.index("--model_config") + 1] = str(model_cfg)
    proc = run_process(cmd)  # a real process: the warning would go to its stderr
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: checkpoint {ckpt}") and "pickle protocol 4" in proc.stderr
    assert "Warning" not in proc.stderr
    assert not list(out.rglob("*.png"))
