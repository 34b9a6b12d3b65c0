import numpy as np
import pytest
import torch

from ddfm.em import em_init, em_step, psf2otf
from tolerance import ulps

pytestmark = pytest.mark.numeric

# How each EM output is compared with the release, in units of float32 resolution (tolerance.py):
# C, D and tau elementwise (square roots and quotients of each pixel: their rounding scales with
# the element, and C runs from ~1 to ~1e5), F, H, F1 and F2 against the array's largest value
# (they come out of a 2-D FFT solve, whose rounding scales with the whole array).
SCALES = {"C": None, "D": None, "tau": None, "F": "max", "H": "max", "F1": "max", "F2": "max"}
# 4 chained steps; each rounds a square root and quotients (~1 unit, varying by a unit with the
# CPU's kernels) and a float32 mean over 48*80 pixels feeding the next step's C and D (a few
# units, depending on how the reduction is split); the FFT solve adds ~log2(3840) = 12 units.
# Measured: 2.7 units at most with AVX2, scalar and 1-thread kernels (an AVX-512 CPU puts C one
# unit of its element off at step 0); a 1e-3 relative change of lamb or rho moves F1/F2 by 8400
# units (test_em_tolerance_sees_a_small_change_of_lamb_or_rho).
EM_ULPS = 64


def run_chain(em_steps, case, scale_lamb=1.0, scale_rho=1.0):
    """The four chained EM steps of ``case`` from the release's inputs: a list of
    {key: array} per step."""
    ir_role = torch.from_numpy(em_steps[f"{case}__I"])
    vis_role = torch.from_numpy(em_steps[f"{case}__V"])
    state = em_init(ir_role)
    steps = []
    for s in range(4):
        lamb, rho = (float(v) for v in em_steps[f"{case}__s{s}__lamb_rho"])
        f_pre = torch.from_numpy(em_steps[f"{case}__s{s}__f_pre"])
        fused, state = em_step(f_pre, ir_role, vis_role, state, lamb * scale_lamb, rho * scale_rho)
        out = {key: getattr(state, key).numpy() for key in ("C", "D", "F1", "F2", "H")}
        out["F"] = fused.numpy()
        out["tau"] = np.array([state.tau_a.item(), state.tau_b.item()], dtype=np.float32)
        steps.append(out)
    return steps


def chain_errors(em_steps, case, steps):
    """{(step, key): error in units of float32 resolution} against the release."""
    return {(s, key): ulps(out[key], em_steps[f"{case}__s{s}__{key}"], scale=SCALES[key])
            for s, out in enumerate(steps) for key in SCALES}


@pytest.mark.parametrize("case", ["c0", "c1", "c2"])
def test_four_chained_em_steps_match_release(em_steps, case):
    errors = chain_errors(em_steps, case, run_chain(em_steps, case))
    bad = {where: round(err, 1) for where, err in errors.items() if not err <= EM_ULPS}
    assert not bad, f"{case}: (step, key) -> units of float32 resolution, over {EM_ULPS}: {bad}"


@pytest.mark.parametrize("param", ["lamb", "rho"])
def test_em_tolerance_sees_a_small_change_of_lamb_or_rho(em_steps, param):
    """The bound above means something: a 1e-3 relative change of lamb or rho (8400 units of
    float32 resolution) moves the chain far beyond EM_ULPS."""
    scaled = run_chain(em_steps, "c0", **{f"scale_{param}": 1.001})
    worst = max(chain_errors(em_steps, "c0", scaled).values())
    assert worst > 20 * EM_ULPS, worst


def test_em_step_is_pure_and_batch_safe(em_steps):
    ir_role = torch.from_numpy(em_steps["c0__I"])
    vis_role = torch.from_numpy(em_steps["c0__V"])
    f_pre = torch.from_numpy(em_steps["c0__s0__f_pre"])
    copies = [t.clone() for t in (ir_role, vis_role, f_pre)]
    single, _ = em_step(f_pre, ir_role, vis_role, em_init(ir_role))
    for before, after in zip(copies, (ir_role, vis_role, f_pre)):
        assert torch.equal(before, after)
    # a batch of two: the first pair's result must not depend on its neighbour
    other = torch.flip(f_pre, dims=[-1]) * 0.5
    batch_ir = torch.cat([ir_role, -ir_role])
    batch_vis = torch.cat([vis_role, vis_role * 0.3])
    batched, state = em_step(torch.cat([f_pre, other]), batch_ir, batch_vis, em_init(batch_ir))
    # the same arithmetic on each image; only the FFT's batched plan may round differently
    assert ulps(batched[:1], single, scale="max") <= EM_ULPS
    assert state.tau_a.shape == (2, 1, 1, 1)


def test_psf2otf_of_difference_kernel():
    otf = psf2otf(torch.tensor([[1.0, -1.0]]), 4, 6)
    # MATLAB: psf2otf([1 -1], [4 6]) = exp(2*pi*i*k/6) - 1 along columns (the -1 sits at the
    # origin after centring), constant along rows
    k = torch.arange(6)
    expected = torch.exp(2j * torch.pi * k / 6) - 1
    # a 6-point FFT of exact values against exp() in float32: a few units of |otf| <= 2
    assert ulps(torch.view_as_real(otf[0]), torch.view_as_real(expected.to(otf.dtype)), scale=2) <= 16
    assert torch.allclose(otf[3], otf[0])
