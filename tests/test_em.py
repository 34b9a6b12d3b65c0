import numpy as np
import pytest
import torch

from ddfm.em import em_init, em_step, psf2otf

STATE_KEYS = ("C", "D", "F1", "F2", "H")


@pytest.mark.parametrize("case", ["c0", "c1", "c2"])
def test_four_chained_em_steps_match_release(em_steps, case):
    ir_role = torch.from_numpy(em_steps[f"{case}__I"])
    vis_role = torch.from_numpy(em_steps[f"{case}__V"])
    state = em_init(ir_role)
    for s in range(4):
        prefix = f"{case}__s{s}__"
        lamb, rho = (float(v) for v in em_steps[prefix + "lamb_rho"])
        f_pre = torch.from_numpy(em_steps[prefix + "f_pre"])
        fused, state = em_step(f_pre, ir_role, vis_role, state, lamb, rho)
        assert np.abs(fused.numpy() - em_steps[prefix + "F"]).max() <= 1e-5, (case, s, "F")
        for key in STATE_KEYS:
            diff = np.abs(getattr(state, key).numpy() - em_steps[prefix + key]).max()
            assert diff <= 1e-5, (case, s, key, diff)
        taus = np.array([state.tau_a.item(), state.tau_b.item()])
        assert np.abs(taus - em_steps[prefix + "tau"]).max() <= 1e-5, (case, s, "tau")


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
    assert torch.allclose(batched[:1], single, atol=1e-6)
    assert state.tau_a.shape == (2, 1, 1, 1)


def test_psf2otf_of_difference_kernel():
    otf = psf2otf(torch.tensor([[1.0, -1.0]]), 4, 6)
    # MATLAB: psf2otf([1 -1], [4 6]) = exp(2*pi*i*k/6) - 1 along columns (the -1 sits at the
    # origin after centring), constant along rows
    k = torch.arange(6)
    expected = torch.exp(2j * torch.pi * k / 6) - 1
    assert torch.allclose(otf[0], expected.to(otf.dtype), atol=1e-6)
    assert torch.allclose(otf[3], otf[0])
