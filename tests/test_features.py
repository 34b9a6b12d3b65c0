"""Beyond the release: colour, presets/modalities, full-size output, the EM-only
baseline, batches, resume. Fast settings: the tiny golden UNet and 2-3 steps."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from ddfm import FuseOptions, Fuser, load_source
from ddfm.color import rgb_from_ycbcr_full, ycbcr_full_from_rgb
from util.presets import available, load_preset


def tiny_args(golden, *extra):
    return ["--model_config", str(golden / "unet_tiny.yaml"),
            "--diffusion_config", str(golden / "pipeline" / "small_10steps" / "diffusion_config.yaml"),
            "--quiet", *extra]


def png(path):
    return np.asarray(Image.open(path))


def copy_pairs(src_root, modalities, stems, dst_root, crop=None):
    """Copy a few pairs (optionally cropped to (h, w)) into a fresh input folder."""
    for modality in modalities:
        (dst_root / modality).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            src = next((src_root / modality).glob(f"{stem}.*"))
            if crop is None:
                shutil.copy(src, dst_root / modality / src.name)
            else:
                with Image.open(src) as im:
                    im.crop((0, 0, crop[1], crop[0])).save(dst_root / modality / f"{stem}.png")
    return dst_root


def test_presets_load():
    keys = available()
    for key in ("msrs", "roadscene", "tno", "m3fd", "harvard_mri_ct", "harvard_mri_pet", "harvard_mri_spect"):
        assert key in keys
    pet = load_preset("harvard_mri_pet")
    assert pet.modalities == ("PET", "MRI") and pet.color and pet.task == "mif"
    assert load_preset("roadscene").paper_pairs == 50


def test_mri_pet_modalities_end_to_end_with_colour(golden, data_root, tmp_path):
    inp = copy_pairs(data_root / "MRI_PET", ("PET", "MRI"), ["11", "12"], tmp_path / "in")
    out = tmp_path / "out"
    code = sample.main(tiny_args(golden, "--input", str(inp), "--modalities", "PET,MRI",
                                 "--save_dir", str(out), "--steps", "2", "--color", "--sheet"))
    assert code == 0
    for stem in ("11", "12"):
        grey = png(out / "recon" / f"{stem}.png")
        colour = png(out / "color" / f"{stem}.png")
        assert grey.shape == (256, 256) and colour.shape == (256, 256, 3)
        assert png(out / "sheet" / f"{stem}.png").ndim == 3
        # Y of the colour output is the grey result; its CbCr is the PET image's (within 1 level)
        pet = np.asarray(Image.open(inp / "PET" / f"{stem}.png").convert("RGB"))
        ycc_out = ycbcr_full_from_rgb(torch.from_numpy(colour.astype(np.float32)).permute(2, 0, 1)[None])[0]
        ycc_pet = ycbcr_full_from_rgb(torch.from_numpy(pet.astype(np.float32)).permute(2, 0, 1)[None])[0]
        # clipping to 0..255 moves chroma where Y is extreme: compare where the exact
        # Y-fused/CbCr-from-PET colour lies inside the 8-bit range
        exact = ycc_pet.clone()
        exact[0] = torch.from_numpy(grey.astype(np.float32))
        exact_rgb = rgb_from_ycbcr_full(exact[None])[0]
        unclipped = ((exact_rgb >= -0.5) & (exact_rgb <= 255.5)).all(dim=0)
        assert unclipped.float().mean() > 0.5
        # 1 grey level from rounding each RGB channel to 8 bits, 1e-3 for the float32 colour
        # matrices at scale 255 (~30 units of float32 resolution)
        assert (ycc_out[1:] - ycc_pet[1:]).abs()[:, unclipped].max() <= 1.0 + 1e-3
        assert (ycc_out[0] - torch.from_numpy(grey.astype(np.float32))).abs()[unclipped].max() <= 1.0 + 1e-3


def test_preset_sets_modalities(golden, data_root, tmp_path):
    inp = copy_pairs(data_root / "MRI_SPECT", ("SPECT", "MRI"), ["11"], tmp_path / "in")
    out = tmp_path / "out"
    assert sample.main(tiny_args(golden, "--input", str(inp), "--preset", "harvard_mri_spect",
                                 "--save_dir", str(out), "--steps", "2")) == 0
    assert (out / "recon" / "11.png").exists() and (out / "color" / "11.png").exists()


def test_grey_sources_stay_grey(golden, data_root, tmp_path):
    inp = copy_pairs(data_root / "TNO", ("ir", "vi"), ["01"], tmp_path / "in", crop=(70, 90))
    out = tmp_path / "out"
    assert sample.main(tiny_args(golden, "--input", str(inp), "--save_dir", str(out),
                                 "--steps", "2", "--color")) == 0
    colour = png(out / "color" / "01.png")
    grey = png(out / "recon" / "01.png")
    for channel in range(3):
        assert np.array_equal(colour[..., channel], grey)


@pytest.mark.parametrize("size", [(70, 97), (33, 65)])
def test_pad_returns_exact_source_size(golden, data_root, tmp_path, size):
    inp = copy_pairs(data_root / "RoadScene", ("ir", "vi"), ["FLIR_00211"], tmp_path / "in", crop=size)
    out_pad, out_crop = tmp_path / "pad", tmp_path / "crop"
    assert sample.main(tiny_args(golden, "--input", str(inp), "--save_dir", str(out_pad),
                                 "--steps", "2", "--size", "pad", "--color", "--record")) == 0
    assert png(out_pad / "recon" / "FLIR_00211.png").shape == size
    assert png(out_pad / "color" / "FLIR_00211.png").shape == (*size, 3)
    assert png(out_pad / "progress" / "FLIR_00211" / "x_0000.png").shape == size
    assert sample.main(tiny_args(golden, "--input", str(inp), "--save_dir", str(out_crop), "--steps", "2")) == 0
    assert png(out_crop / "recon" / "FLIR_00211.png").shape == (size[0] // 32 * 32, size[1] // 32 * 32)


def test_batch_size_and_order_do_not_change_outputs(golden, data_root, tmp_path):
    # five pairs: three crop to one working size (a real batch of three), two to others
    stems = ["FLIR_00211", "FLIR_00977", "FLIR_01130", "FLIR_04269", "FLIR_04424"]
    inp = tmp_path / "in"
    for stem, size in zip(stems, [(70, 97), (64, 96), (95, 120), (40, 40), (64, 64)]):
        copy_pairs(data_root / "RoadScene", ("ir", "vi"), [stem], inp, crop=size)
    outs = []
    for batch in (1, 3):
        out = tmp_path / f"b{batch}"
        assert sample.main(tiny_args(golden, "--input", str(inp), "--save_dir", str(out),
                                     "--steps", "2", "--batch", str(batch))) == 0
        outs.append(out)
    names = sorted(p.name for p in (outs[0] / "recon").iterdir())
    assert len(names) == 5
    for name in names:
        assert np.array_equal(png(outs[0] / "recon" / name), png(outs[1] / "recon" / name)), name
    # order inside a batch: the API fused in reverse order gives the same arrays
    fuser = Fuser(golden / "unet_tiny.yaml", golden / "pipeline" / "small_10steps" / "diffusion_config.yaml",
                  steps=2)
    same_size = stems[:3]
    ir = [load_source(inp / "ir" / f"{s}.png") for s in same_size]
    vis = [load_source(inp / "vi" / f"{s}.png") for s in same_size]
    reverse = fuser.fuse_sources(ir[::-1], vis[::-1], FuseOptions())
    for stem, result in zip(same_size[::-1], reverse):
        assert np.array_equal(result["gray"], png(outs[0] / "recon" / f"{stem}.png")), stem


def test_resume_skips_and_overwrite_replaces(golden, tmp_path, capsys):
    inp = golden / "pipeline" / "small_10steps" / "input"
    out = tmp_path / "out"
    args = tiny_args(golden, "--input", str(inp), "--save_dir", str(out), "--steps", "2")
    assert sample.main(args) == 0
    target = out / "recon" / "crop_03952.png"
    reference = target.read_bytes()
    target.write_bytes(b"sentinel")  # a rerun must not touch an existing output
    capsys.readouterr()
    assert sample.main(args) == 0
    assert target.read_bytes() == b"sentinel"
    assert "0 fused, 1 skipped" in capsys.readouterr().err
    assert sample.main(args + ["--overwrite"]) == 0
    assert target.read_bytes() == reference
    assert "1 fused, 0 skipped, 0 failed" in capsys.readouterr().err


def test_em_only_baseline_runs_without_checkpoint(data_root, tmp_path):
    inp = copy_pairs(data_root / "RoadScene", ("ir", "vi"), ["FLIR_00211", "FLIR_00977"], tmp_path / "in")
    missing = tmp_path / "model.yaml"
    missing.write_text("image_size: 256\nnum_channels: 256\nnum_res_blocks: 2\n"
                       "model_path: does/not/exist.pt\n")
    out = tmp_path / "out"
    code = sample.main(["--model_config", str(missing), "--input", str(inp), "--save_dir", str(out),
                        "--prior", "none", "--quiet", "--sheet"])
    assert code == 0
    fused = png(out / "recon" / "FLIR_00211.png")
    assert fused.dtype == np.uint8 and fused.min() == 0 and fused.max() == 255
    with Image.open(inp / "ir" / "FLIR_00211.jpg") as im:
        assert fused.shape == (im.height // 32 * 32, im.width // 32 * 32)
    assert not (tmp_path / "does").exists()
