"""Issue 5: binarizers, the AGMM gate, flip/gradient analysis for latent weights."""
import math

import pytest
import torch
from spikingjelly.activation_based import functional

from bsnn.models import create
from bsnn.nn import SignSTE
from bsnn.nn.binarize import ScaledSign
from bsnn.nn.modulation import AGMM


def test_scaled_sign_forward_scale_and_tanh_gradient():
    w = torch.tensor([[1.0, 2.0, 3.0, 6.0], [-1.0, -1.0, 1.0, 1.0]], requires_grad=True)
    b = ScaledSign(t_start=1.0, t_end=1.0)
    y = b(w)
    flat = w.detach()
    std = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)
    scale = torch.exp2(torch.round(torch.log2(std.abs().mean(1))))
    assert torch.equal(y.detach(), torch.where(std >= 0, 1.0, -1.0) * scale[:, None])
    assert set(scale.tolist()) <= {0.5, 1.0, 2.0}                                 # powers of two
    # backward: k*t*(1 - tanh^2(t*w_std)) through the standardisation (t = 1, k = 1)
    y.backward(torch.ones_like(y))
    w2 = w.detach().clone().requires_grad_()
    f = w2 - w2.mean(1, keepdim=True)
    s = f / (w2.std(1, keepdim=True) + 1e-8)
    (s * (1 - torch.tanh(s.detach()) ** 2) * scale[:, None]).sum().backward()
    assert torch.allclose(w.grad, w2.grad, atol=1e-6)


def test_scaled_sign_annealing_is_log_uniform():
    b = ScaledSign(0.1, 10.0)
    b.anneal(0.0)
    assert b.t == pytest.approx(0.1) and b.k == pytest.approx(10.0)
    b.anneal(0.5)
    assert b.t == pytest.approx(1.0) and b.k == 1.0
    b.anneal(1.0)
    assert b.t == pytest.approx(10.0) and b.k == 1.0


def test_sign_ste_module():
    w = torch.tensor([-1.5, -0.5, 0.0, 0.5], requires_grad=True)
    SignSTE(clip=1.0)(w).sum().backward()
    assert w.grad.tolist() == [0.0, 1.0, 1.0, 1.0]


def _x(T=3, B=2, C=4):
    torch.manual_seed(0)
    return torch.randn(T, B, C, 5, 5)


@pytest.mark.parametrize("statistic, shape", [("channel_mean", (3, 2, 4, 1, 1)), ("sample_mean", (3, 2, 1, 1, 1)),
                                              ("step_mean", (3, 1, 1, 1, 1))])
def test_agmm_gate_shape_and_value(statistic, shape):
    g = AGMM(4, 3, statistic=statistic, alpha_init=0.8, step_mode="m")
    with torch.no_grad():
        g.alpha.copy_(torch.tensor([0.8, 0.5, 0.2]))
    x = _x()
    y = g(x)
    dims = {"channel_mean": (3, 4), "sample_mean": (2, 3, 4), "step_mean": (1, 2, 3, 4)}[statistic]
    e = x.mean(dims, keepdim=True)
    assert e.shape == shape
    m = torch.tensor([0.8, 0.5, 0.2]).view(3, 1, 1, 1, 1) * torch.sigmoid(e)
    assert torch.allclose(y, m * x)


@pytest.mark.parametrize("detach", [True, False])
def test_agmm_scales_gradient_per_time_step(detach):
    g = AGMM(4, 3, alpha_init=1.0, detach=detach, step_mode="m")
    with torch.no_grad():
        g.alpha.copy_(torch.tensor([1.0, 0.5, 0.25]))
    x = _x().requires_grad_()
    g(x).sum().backward()
    m = torch.tensor([1.0, 0.5, 0.25]).view(3, 1, 1, 1, 1) * torch.sigmoid(x.detach().mean((3, 4), keepdim=True))
    if detach:
        assert torch.allclose(x.grad, m.expand_as(x))              # a pure per-step rescaling
    else:
        sig = torch.sigmoid(x.detach().mean((3, 4), keepdim=True))
        extra = torch.tensor([1.0, 0.5, 0.25]).view(3, 1, 1, 1, 1) * sig * (1 - sig) \
            * x.detach().sum((3, 4), keepdim=True) / 25
        assert torch.allclose(x.grad, m + extra, atol=1e-6)
    assert g.alpha.grad is not None and g.alpha.grad.shape == (3,)


def test_agmm_single_step_counts_time_and_matches_multi_step():
    gm = AGMM(4, 3, step_mode="m")
    gs = AGMM(4, 3, step_mode="s")
    with torch.no_grad():
        for g in (gm, gs):
            g.alpha.copy_(torch.tensor([0.9, 0.6, 0.3]))
    x = _x()
    ys = torch.stack([gs(x[t]) for t in range(3)])
    assert torch.allclose(ys, gm(x))
    functional.reset_net(torch.nn.Sequential(gs))
    assert gs.t == 0


def test_agmm_backward_mode_keeps_forward_value():
    g = AGMM(4, 3, mode="backward", step_mode="m")
    x = _x().requires_grad_()
    y = g(x)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.sigmoid(x.detach().mean((3, 4), keepdim=True)).expand_as(x))


def test_agmm_in_models_and_summary():
    from bsnn.measure.summary import summary

    m = create("convnet", in_channels=1, image_size=8, channels=(4, 8), method="bptt", time_steps=2,
               agmm={"where": "bn_out"}, binarizer="scaled_sign", surrogate="triangle", surrogate_alpha=1.0,
               soft_reset=False)
    s = summary(m, (1, 8, 8), 2)
    assert any(r.kind == "AGMM" for r in s.rows)
    assert any("AGMM" in type(mod).__name__ for mod in m.modules())
    with pytest.raises(ValueError, match="where"):
        create("convnet", agmm={"where": "nowhere"})
    assert math.isfinite(s.megabytes)
