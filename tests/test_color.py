import numpy as np
import pytest
import torch

from ddfm.color import (luma_bt601, rgb_from_ycbcr_full, rgb_to_ycbcr_over_255,
                        ycbcr_full_from_rgb, ycbcr_over_255_to_rgb)
from tolerance import ulps

pytestmark = pytest.mark.numeric

# A 3x3 colour matrix and an offset per pixel: three products and sums, each rounded by half a
# unit of float32 resolution of the channel's scale (1, as these values are /255): 8 units.
COLOR_ULPS = 8


def test_forward_transform_matches_release(color):
    ours = rgb_to_ycbcr_over_255(torch.from_numpy(color["rgb"])).numpy()
    assert ulps(ours, color["ycbcr_over_255"], scale=1.0) <= COLOR_ULPS


def test_inverse_transform_matches_release(color):
    ours = ycbcr_over_255_to_rgb(torch.from_numpy(color["ycbcr_over_255"])).numpy()
    assert ours.dtype == np.float32
    assert ulps(ours, color["rgb_back"], scale=1.0) <= COLOR_ULPS


def test_round_trip_is_identity_to_float_rounding(color):
    rgb = torch.from_numpy(color["rgb"])
    back = ycbcr_over_255_to_rgb(rgb_to_ycbcr_over_255(rgb))
    # the inverse of a 3-decimal matrix is not its exact inverse: 1e-5 ~ 84 units of scale 1
    assert ulps(back, rgb, scale=1.0) <= 84


def test_luma_has_no_offset():
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1) * torch.ones(1, 3, 2, 2)
    assert ulps(luma_bt601(rgb), torch.full((1, 1, 2, 2), 0.299), scale=1.0) <= COLOR_ULPS


def test_full_range_ycbcr_round_trip():
    rgb = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * 255
    back = rgb_from_ycbcr_full(ycbcr_full_from_rgb(rgb))
    # the field's 3-decimal coefficients: their inverse is off by ~1e-4 relative, 0.1 on 0..255
    assert torch.allclose(back, rgb, rtol=0, atol=0.1)
    grey = torch.full((1, 3, 2, 2), 77.0)
    ycc = ycbcr_full_from_rgb(grey)
    # 128 + grey * (coefficients summing to 0 in 3 decimals): float32 rounding at scale 255
    assert ulps(ycc[:, 1:], torch.full((1, 2, 2, 2), 128.0), scale=255.0) <= COLOR_ULPS
