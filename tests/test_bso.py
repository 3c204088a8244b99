"""BSO / T-BSO: the flip rule against the spec, state, schedulers, AMP, invariants."""
import copy
import math

import pytest
import torch
from torch import nn

from bsnn.nn import BinaryLinear, LatentBinaryLinear, binary_parameters
from bsnn.optim import BSO, TBSO, FlipScheduler, bso_update
from conftest import assert_binary


def rand_binary(*shape):
    return torch.where(torch.rand(shape) < 0.5, -1.0, 1.0)


def reference_step(w, m, g, beta1, thr):
    """Paper eqs. 11-12 written out elementwise."""
    m = beta1 * m + (1 - beta1) * g
    w = torch.where(w * m > thr, -w, w)
    return w, m


@pytest.mark.parametrize("foreach", [True, False])
def test_flip_rule_matches_spec_on_random_tensors(foreach):
    ws = [rand_binary(7, 5), rand_binary(33)]
    ms = [torch.randn(7, 5) * 1e-3, torch.zeros(33)]          # zeros in m
    gs = [torch.randn(7, 5), torch.randn(33) * (torch.rand(33) < 0.5)]  # zeros in g
    expected = [reference_step(w, m, g, 0.9, 0.05) for w, m, g in zip(ws, ms, gs)]
    bso_update(ws, gs, ms, None, beta1=0.9, threshold=0.05, foreach=foreach)
    for w, m, (we, me) in zip(ws, ms, expected):
        assert torch.equal(w, we)
        assert torch.allclose(m, me)
        assert_binary(w)


@pytest.mark.parametrize("foreach", [True, False])
def test_equality_with_threshold_does_not_flip(foreach):
    w = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    g = torch.tensor([0.5, -0.5, 0.0, 0.0, 0.75])       # beta1=0 -> m = g
    bso_update([w], [g], [torch.zeros(5)], None, beta1=0.0, threshold=0.5, foreach=foreach)
    # w*m = 0.5, 0.5 (== thr: kept), 0, 0 (kept), 0.75 (> thr: flipped)
    assert w.tolist() == [1.0, -1.0, 1.0, -1.0, -1.0]
    w0 = torch.tensor([1.0, -1.0])
    bso_update([w0], [torch.zeros(2)], [torch.zeros(2)], None, beta1=0.0, threshold=0.0, foreach=foreach)
    assert w0.tolist() == [1.0, -1.0]                      # w*m == 0 == thr: kept, never sign(0) = 0


def test_flip_only_when_momentum_agrees_with_weight():
    w = torch.tensor([1.0, 1.0, -1.0, -1.0])
    g = torch.tensor([1.0, -1.0, 1.0, -1.0])
    bso_update([w], [g], [torch.zeros(4)], None, beta1=0.5, threshold=0.1)
    assert w.tolist() == [-1.0, 1.0, -1.0, 1.0]            # descent direction only


def make_model():
    return nn.Sequential(nn.Linear(6, 16), BinaryLinear(16, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         BinaryLinear(16, 4))


def loss_of(model, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
    return nn.functional.cross_entropy(model(x), y)


def test_tbso_uses_v_of_current_time_step():
    torch.manual_seed(1)
    model = make_model()
    opt = TBSO(model.parameters(), threshold=1.0, beta1=0.0, beta2=0.5, time_steps=3)
    p = model[1].weight
    loss_of(model, 0).backward()
    opt.step(t=0)
    v = opt.state[p]["v"]
    # Give the time steps very different scales, then step at t=2 with a known gradient.
    v.copy_(torch.tensor([1e6, 1e6, 0.0]))
    w_before = p.detach().clone()
    opt.zero_grad()
    loss_of(model, 1).backward()
    g = p.grad.clone()
    opt.step(t=2)
    v2 = 0.5 * 0.0 + 0.5 * g.pow(2).mean()
    assert torch.allclose(opt.state[p]["v"], torch.tensor([1e6, 1e6, v2.item()]))
    thr = math.sqrt(v2.item() + 1e-20)
    assert torch.equal(p.detach(), torch.where(w_before * g > thr, -w_before, w_before))
    # With the huge v of t=0 the same gradient would not flip anything.
    assert (w_before * g).max() < 1e3


def test_tbso_requires_time_step_and_grows_v():
    model = make_model()
    opt = TBSO(model.parameters(), time_steps=2)
    loss_of(model, 0).backward()
    with pytest.raises(TypeError, match="time-step"):
        opt.step()
    opt.step(t=0)
    opt.step(t=1)
    p = model[1].weight
    v_known = opt.state[p]["v"].clone()
    opt.step(t=5)                                          # T changed (e.g. fine-tuning): no index error
    v = opt.state[p]["v"]
    assert v.numel() == 6
    assert torch.allclose(v[:2], v_known)
    opt.resize_time_steps(4)
    assert opt.state[p]["v"].numel() == 4


def test_binary_after_many_random_steps_and_no_latent_state():
    torch.manual_seed(3)
    model = make_model()
    opt = TBSO(model.parameters(), threshold=1e-7, beta1=0.9, time_steps=4, momentum_reset=True)
    for i in range(200):
        opt.zero_grad()
        (loss_of(model, i) * (10 ** (i % 7 - 3))).backward()
        opt.step(t=i % 4)
        for p in binary_parameters(model):
            assert_binary(p)
    for p in binary_parameters(model):
        st = opt.state[p]
        assert set(st) == {"momentum", "v"}                 # no latent weight, no second moment per weight
        assert st["momentum"].shape == p.shape and st["v"].shape == (4,)
    bso = BSO(model.parameters())
    opt.zero_grad()
    loss_of(model, 0).backward()
    bso.step()
    assert all(set(bso.state[p]) == {"momentum"} for p in binary_parameters(model))


def test_momentum_reset_zeroes_flipped_momentum():
    lin = BinaryLinear(4, 1)
    lin.weight.data = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    opt = BSO(lin.parameters(), threshold=0.1, beta1=0.5, momentum_reset=True)
    lin.weight.grad = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    opt.step()
    assert lin.weight.tolist() == [[-1.0, 1.0, -1.0, 1.0]]
    assert opt.state[lin.weight]["momentum"].tolist() == [[0.0, -0.5, 0.5, 0.0]]


def run_steps(model, opt, seeds, tbso=True):
    for s in seeds:
        opt.zero_grad()
        loss_of(model, s).backward()
        opt.step(t=s % 3) if tbso else opt.step()


@pytest.mark.parametrize("real", [torch.optim.SGD, torch.optim.Adam])
def test_state_dict_round_trip_resumes_identically(real):
    kw = {"momentum": 0.9} if real is torch.optim.SGD else {}
    make_opt = lambda m: TBSO(m.parameters(), threshold=1e-6, beta1=0.9, time_steps=3,  # noqa: E731
                              real_optimizer=real, real_optimizer_kwargs=kw)
    torch.manual_seed(0)
    a = make_model()
    opt_a = make_opt(a)
    sched_a = torch.optim.lr_scheduler.StepLR(opt_a, 2, 0.5)
    run_steps(a, opt_a, range(5))
    sched_a.step()
    saved = copy.deepcopy((a.state_dict(), opt_a.state_dict(), sched_a.state_dict()))
    run_steps(a, opt_a, range(5, 12))

    b = make_model()
    opt_b = make_opt(b)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, 2, 0.5)
    b.load_state_dict(saved[0])
    opt_b.load_state_dict(saved[1])
    sched_b.load_state_dict(saved[2])
    assert opt_b.real_optimizer.param_groups[0] is opt_b.param_groups[1]   # still linked after load
    run_steps(b, opt_b, range(5, 12))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    for k in sa["state"]:
        for key in sa["state"][k]:
            assert torch.equal(torch.as_tensor(sa["state"][k][key]), torch.as_tensor(sb["state"][k][key]))


def test_lr_scheduler_really_changes_the_real_parameters_step():
    model = make_model()
    opt = BSO(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.25)
    assert opt.real_optimizer.param_groups[0]["lr"] == 0.25
    w = model[0].weight
    before = w.detach().clone()
    loss_of(model, 0).backward()
    g = w.grad.clone()
    opt.step()
    assert torch.allclose(w.detach(), before - 0.25 * g)
    sched.step()


def test_gradscaler_path_matches_unscaled_and_skips_inf():
    torch.manual_seed(0)
    a = make_model()
    b = copy.deepcopy(a)
    opt_a = TBSO(a.parameters(), threshold=1e-6, beta1=0.9, time_steps=2)
    opt_b = TBSO(b.parameters(), threshold=1e-6, beta1=0.9, time_steps=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    for s in range(6):
        opt_a.zero_grad()
        loss_of(a, s).backward()
        opt_a.step(t=s % 2)
        opt_b.zero_grad()
        scaler.scale(loss_of(b, s)).backward()
        scaler.step(opt_b, t=s % 2)
        scaler.update()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    before = [p.detach().clone() for p in b.parameters()]
    opt_b.zero_grad()
    scaler.scale(loss_of(b, 0) * float("inf")).backward()
    scaler.step(opt_b, t=0)                                 # inf gradients: step skipped
    scaler.update()
    assert all(torch.equal(p0, p) for p0, p in zip(before, b.parameters()))


def test_bso_rejects_latent_weights_and_splits_groups():
    with pytest.raises(ValueError, match="latent"):
        BSO(LatentBinaryLinear(3, 3).parameters())
    model = make_model()
    opt = BSO(model.parameters())
    kinds = [g["binary"] for g in opt.param_groups]
    assert kinds == [True, False]
    assert "threshold" not in opt.param_groups[1]           # real groups carry no BSO keys


def test_flip_monitor_counts_the_optimizers_sign_changes():
    from bsnn.measure.flips import FlipMonitor

    torch.manual_seed(4)
    model = make_model()
    opt = BSO(model.parameters(), threshold=1e-4, beta1=0.5)
    monitor = FlipMonitor(model, opt)
    total = 0
    for s in range(10):
        before = [p.detach().clone() for p in binary_parameters(model)]
        opt.zero_grad()
        loss_of(model, s).backward()
        opt.step()
        total += sum(int((b != p).sum()) for b, p in zip(before, binary_parameters(model)))
    assert sum(int(c) for c in monitor.counts) == total > 0


@pytest.mark.parametrize("cls, bad", [(BSO, {"treshold": 1e-6}), (TBSO, {"betaa1": 0.5}), (BSO, {"beta2": 0.9}),
                                      (TBSO, {"count_flips": True})])
def test_misspelled_or_foreign_options_raise(cls, bad):
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls(make_model().parameters(), **bad)


def test_options_after_lr_are_keyword_only():
    with pytest.raises(TypeError):
        BSO(make_model().parameters(), 0.1, 1e-6)
    assert TBSO(make_model().parameters(), 0.05).param_groups[0]["lr"] == 0.05


def test_flip_scheduler_step_and_inv_sqrt():
    model = make_model()
    opt = TBSO(model.parameters(), threshold=5e-7, beta1=1 - 1e-3)
    sch = FlipScheduler(opt, "step", every=50, factor=0.1)
    values = []
    for _ in range(102):
        values.append((opt.param_groups[0]["threshold"], 1 - opt.param_groups[0]["beta1"]))
        sch.step()
    # reference code: decay after epoch index 50 and 100 (0-based), i.e. from epochs 51 and 101
    assert values[50] == pytest.approx((5e-7, 1e-3))
    assert values[51] == pytest.approx((5e-8, 1e-4))
    assert values[101] == pytest.approx((5e-9, 1e-5))
    inv = FlipScheduler(TBSO(make_model().parameters(), threshold=1.0, beta1=0.0), "inv_sqrt")
    for _ in range(3):
        inv.step()
    assert inv.optimizer.param_groups[0]["threshold"] == pytest.approx(1 / math.sqrt(4))
    restored = FlipScheduler(opt, "constant")
    restored.load_state_dict(sch.state_dict())
    assert restored.epoch == 102 and restored.kind == "step"


def test_fused_compiled_step_equals_foreach_step():
    """``fused=True`` (torch.compile) must give exactly the flips of the foreach path."""
    torch.manual_seed(5)
    a = make_model()
    b, c = copy.deepcopy(a), copy.deepcopy(a)
    kw = dict(threshold=1e-7, beta1=0.9, time_steps=3, momentum_reset=True)
    opt_a, opt_b = TBSO(a.parameters(), fused=False, **kw), TBSO(b.parameters(), fused=True, **kw)
    for s in range(5):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            loss_of(model, s).backward()
            opt.step(t=s % 3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    for pa, pb in zip(binary_parameters(a), binary_parameters(b)):
        assert_binary(pb)
        assert torch.equal(pa, pb)
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert torch.allclose(sa["momentum"], sb["momentum"], atol=1e-7)
        assert torch.allclose(sa["v"], sb["v"], rtol=1e-5)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(binary_parameters(a), binary_parameters(c)))   # flipped
    # a flip schedule changes hyperparameter values: no second compilation
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    for g in opt_b.param_groups:
        g["threshold"], g["beta1"] = g.get("threshold", 0) * 0.1, 0.5
    opt_b.zero_grad()
    loss_of(b, 9).backward()
    opt_b.step(t=0)
    assert counters["stats"]["unique_graphs"] == graphs


def test_fused_default_compiles_large_groups_and_falls_back_quietly(monkeypatch):
    import bsnn.optim.bso as bso

    torch.manual_seed(6)
    a = make_model()
    b = copy.deepcopy(a)
    opt_a, opt_b = TBSO(a.parameters(), time_steps=2, fused=False), TBSO(b.parameters(), time_steps=2)
    assert opt_b.param_groups[0]["fused"] is None
    assert not bso._fused_by_default(list(binary_parameters(b)))          # small: eager
    monkeypatch.setattr(bso, "FUSED_MIN_NUMEL", 0)
    calls = []
    real = bso._fused
    monkeypatch.setattr(bso, "_fused", lambda *a, **k: calls.append(1) or real(*a, **k))
    for s in range(3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            loss_of(model, s).backward()
            opt.step(t=s % 2)
    assert calls and all(torch.equal(pa, pb) for pa, pb in zip(binary_parameters(a), binary_parameters(b)))

    def broken(*args, **kwargs):
        raise torch._dynamo.exc.TorchDynamoException("no C++ compiler")

    monkeypatch.setattr(bso, "_compiled_update", broken)
    monkeypatch.setattr(bso, "_compile_failed", set())
    opt_b.zero_grad()
    loss_of(b, 5).backward()
    opt_b.step(t=0)                                                          # quietly eager
    assert "cpu" in bso._compile_failed
    with pytest.raises(RuntimeError, match="no C"):
        opt = TBSO(b.parameters(), time_steps=2, fused=True)
        loss_of(b, 6).backward()
        opt.step(t=0)
