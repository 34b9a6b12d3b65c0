"""The Python API (ddfm.Fuser) gives exactly what sample.py writes, from paths, arrays and PIL
images: golden/pipeline/flir_10steps (its inputs and diffusion config) with the tiny golden model.

Both sides run with steps=2 / --steps 2 to keep the module fast on a CPU (the API is the same
code path whatever the step count); the case's own 10 steps are checked under --runslow."""
import numpy as np
import pytest
from PIL import Image

import sample
from ddfm import Fuser


@pytest.fixture(scope="module")
def case(golden):
    return golden / "pipeline" / "flir_10steps"


STEPS = 2


def run_cli(golden, case, out, *extra):
    argv = ["--model_config", str(golden / "unet_tiny.yaml"),
            "--diffusion_config", str(case / "diffusion_config.yaml"),
            "--input", str(case / "input"), "--save_dir", str(out), "--quiet", *extra]
    assert sample.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def cli_outputs(golden, case, tmp_path_factory):
    return run_cli(golden, case, tmp_path_factory.mktemp("cli"), "--color", "--steps", str(STEPS))


@pytest.fixture(scope="module")
def fuser(golden, case):
    return Fuser(golden / "unet_tiny.yaml", case / "diffusion_config.yaml", steps=STEPS)


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im)


def _as_path(path):
    return path


def _as_array(path):
    with Image.open(path) as im:  # ir is grey 'L' -> (H, W) uint8; vi is RGB -> (H, W, 3) uint8
        return np.asarray(im).copy()


def _as_pil(path):
    with Image.open(path) as im:
        im.load()
        return im.copy()


KINDS = {"path": _as_path, "array": _as_array, "pil": _as_pil}


def test_every_pair_equals_sample_py_recon(fuser, case, cli_outputs):
    """One pair per input kind (each pair is the same computation whatever the kind)."""
    stems = sorted(p.stem for p in (case / "input" / "ir").iterdir())
    assert len(stems) == 3
    for stem, (kind, convert) in zip(stems, KINDS.items()):
        ir = convert(case / "input" / "ir" / f"{stem}.jpg")
        vis = convert(case / "input" / "vi" / f"{stem}.jpg")
        fused = fuser(ir, vis)
        expected = _png(cli_outputs / "recon" / f"{stem}.png")
        assert fused.dtype == np.uint8 and fused.shape == expected.shape, kind
        assert np.array_equal(fused, expected), (stem, kind, int((fused != expected).sum()))


def test_colour_equals_sample_py_color(fuser, case, cli_outputs):
    stem = "FLIR_03952"
    fused = fuser(_as_pil(case / "input" / "ir" / f"{stem}.jpg"),
                  _as_array(case / "input" / "vi" / f"{stem}.jpg"), color=True)
    expected = _png(cli_outputs / "color" / f"{stem}.png")
    assert fused.shape == expected.shape and expected.ndim == 3
    assert np.array_equal(fused, expected)


def test_input_kinds_decode_to_the_same_sources(case):
    """Paths, arrays and PIL images reach the pipeline as the same grey and RGB values."""
    from ddfm import load_source
    for side in ("ir", "vi"):
        path = case / "input" / side / "FLIR_04071.jpg"
        ref = load_source(path)
        for kind, convert in KINDS.items():
            src = load_source(convert(path))
            assert np.array_equal(src.gray, ref.gray), (side, kind)
            assert np.array_equal(src.rgb, ref.rgb), (side, kind)


@pytest.mark.slow
def test_flir_10steps_as_configured_equals_sample_py(golden, case, tmp_path):
    out = run_cli(golden, case, tmp_path)
    fuser = Fuser(golden / "unet_tiny.yaml", case / "diffusion_config.yaml")
    for ir in sorted((case / "input" / "ir").iterdir()):
        fused = fuser(ir, case / "input" / "vi" / ir.name)
        assert np.array_equal(fused, _png(out / "recon" / f"{ir.stem}.png")), ir.name
