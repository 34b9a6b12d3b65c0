"""Image reading as the release reads it."""
import numpy as np

from util.images import read_gray, rgb_to_gray_float


def test_gray_of_grey_values_is_identity():
    rgb = np.array([[[255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    grey = rgb_to_gray_float(rgb)
    assert grey.dtype == np.float32 and grey[0, 0] == 255 and grey[0, 1] == 0
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    assert np.array_equal(rgb_to_gray_float(ramp)[0], np.arange(256, dtype=np.float32))


def test_mri_pet_mean_case_is_reproduced_exactly(data_root, eval_cases):
    """eval_cases/mri_pet_mean was made with OpenCV's grey: every pixel must agree, including
    the PET pixels whose luma is exactly k + 0.5."""
    from PIL import Image
    for fused_path in sorted((eval_cases / "mri_pet_mean" / "fused").glob("*.png"))[:12]:
        a = read_gray(data_root / "MRI_PET" / "PET" / fused_path.name)
        b = read_gray(data_root / "MRI_PET" / "MRI" / fused_path.name)
        fused = np.asarray(Image.open(fused_path)).astype(np.float32)
        assert np.array_equal(np.round((a + b) / 2), fused), fused_path.name
