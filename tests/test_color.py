import numpy as np
import torch

from ddfm.color import (luma_bt601, rgb_from_ycbcr_full, rgb_to_ycbcr_over_255,
                        ycbcr_full_from_rgb, ycbcr_over_255_to_rgb)


def test_forward_transform_matches_release(color):
    ours = rgb_to_ycbcr_over_255(torch.from_numpy(color["rgb"])).numpy()
    assert np.abs(ours - color["ycbcr_over_255"]).max() <= 1e-6


def test_inverse_transform_matches_release(color):
    ours = ycbcr_over_255_to_rgb(torch.from_numpy(color["ycbcr_over_255"])).numpy()
    assert ours.dtype == np.float32
    assert np.abs(ours - color["rgb_back"]).max() <= 1e-6


def test_round_trip_is_identity_to_float_rounding(color):
    rgb = torch.from_numpy(color["rgb"])
    back = ycbcr_over_255_to_rgb(rgb_to_ycbcr_over_255(rgb))
    assert torch.allclose(back, rgb, atol=1e-5)


def test_luma_has_no_offset():
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1) * torch.ones(1, 3, 2, 2)
    assert torch.allclose(luma_bt601(rgb), torch.full((1, 1, 2, 2), 0.299))


def test_full_range_ycbcr_round_trip():
    rgb = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * 255
    back = rgb_from_ycbcr_full(ycbcr_full_from_rgb(rgb))
    assert torch.allclose(back, rgb, atol=0.1)  # the field's 3-decimal coefficients
    grey = torch.full((1, 3, 2, 2), 77.0)
    ycc = ycbcr_full_from_rgb(grey)
    assert torch.allclose(ycc[:, 1:], torch.full((1, 2, 2, 2), 128.0), atol=1e-4)
