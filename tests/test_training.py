"""Trainers: resume equals uninterrupted, memory independent of T (online) vs growing (BPTT), accuracy."""
import pytest
import torch
from spikingjelly.activation_based import functional

from bsnn.config import resolve
from bsnn.data import create as create_data
from bsnn.measure import SavedTensorMeter
from bsnn.models import create as create_model
from bsnn.nn import binary_parameters, set_step_mode
from bsnn.optim import TBSO
from bsnn.recipes import load_recipe
from bsnn.train import BPTTMethod, OnlineMethod, build_trainer
from bsnn.train.trainer import Trainer
from conftest import assert_binary

DIGITS = create_data("digits")


def small_cfg_of(*overrides):
    return resolve(load_recipe("digits_tbso"), ["train.progress=false", "model.hidden=[64,64]",
                                                "train.epochs=3", "schedule.flip=step",
                                                "schedule.flip_every=1", *overrides])


small_cfg = small_cfg_of


@pytest.mark.parametrize("bn_stats", ["shared", "per_step"])
def test_stopped_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch, bn_stats):
    small_cfg = lambda: small_cfg_of(f"model.bn_stats={bn_stats}")   # noqa: E731
    full = build_trainer(small_cfg(), out_dir=tmp_path / "full", log=lambda *a: None, bundle=DIGITS)
    full.fit()

    class Crash(Exception):
        pass

    save = Trainer.save_checkpoint

    def crash_after_epoch_2(self, epoch):
        path = save(self, epoch)
        if epoch == 2:
            raise Crash
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", crash_after_epoch_2)
    part = build_trainer(small_cfg(), out_dir=tmp_path / "part", log=lambda *a: None, bundle=DIGITS)
    with pytest.raises(Crash):
        part.fit()
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    torch.manual_seed(1234)                      # disturb the global RNG: the checkpoint must restore it
    resumed = build_trainer(small_cfg(), out_dir=tmp_path / "part", log=lambda *a: None, bundle=DIGITS)
    resumed.fit(resume=True)
    assert resumed.start_epoch == 2
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["test_acc"] for r in full.history] == [r["test_acc"] for r in resumed.history]
    assert (tmp_path / "part" / "metrics.csv").read_text().count("\n") == 4
    assert not list((tmp_path / "part").glob(".*.tmp"))      # atomic writes leave no temporaries


def test_demo_recipe_reaches_95_percent_and_weights_stay_binary():
    cfg = resolve(load_recipe("digits_tbso"), ["train.progress=false"])
    trainer = build_trainer(cfg, log=lambda *a: None, bundle=DIGITS)
    trainer.fit()
    assert trainer.history[-1]["test_acc"] >= 0.95
    for p in binary_parameters(trainer.model):
        assert_binary(p)


def saved_bytes_per_backward(model, method, x, y, optimizer):
    with SavedTensorMeter().measure() as meter:
        method.train_batch(model, x, y, optimizer)
    return meter.peak


def test_online_memory_does_not_grow_with_T_but_bptt_does():
    x, y = DIGITS.train.x[:32], DIGITS.train.y[:32]
    online, bptt = {}, {}
    for T in (1, 2, 8):
        torch.manual_seed(0)
        m = create_model("convnet", in_channels=1, image_size=8, channels=(8, 16), method="online")
        online[T] = saved_bytes_per_backward(m, OnlineMethod(T), x, y, TBSO(m.parameters(), time_steps=T))
        m = create_model("convnet", in_channels=1, image_size=8, channels=(8, 16), method="bptt")
        bptt[T] = saved_bytes_per_backward(m, BPTTMethod(T), x, y, torch.optim.SGD(m.parameters(), lr=0.1))
    assert online[1] == online[2] == online[8] > 0
    assert bptt[8] > 3.5 * bptt[2] > 3.5 * 1.9 * bptt[1] / 2


@pytest.mark.parametrize("mode", ["realtime", "accumulated"])
def test_online_modes_step_counts(mode):
    m = create_model("mlp", in_features=64, hidden=(32, 32))
    opt = TBSO(m.parameters(), time_steps=3)
    steps = []
    orig = opt.step
    opt.step = lambda *a, **k: (steps.append(k.get("t")), orig(*a, **k))[1]
    OnlineMethod(3, mode=mode).train_batch(m, DIGITS.train.x[:16], DIGITS.train.y[:16], opt)
    assert steps == ([0, 1, 2] if mode == "realtime" else [0])


def test_online_batch_equals_manual_loop():
    """One realtime batch = reset, then per t: forward, CE/T backward, step(t)."""
    torch.manual_seed(0)
    a = create_model("mlp", in_features=64, hidden=(32, 32))
    b = create_model("mlp", in_features=64, hidden=(32, 32))
    b.load_state_dict(a.state_dict())
    oa, ob = TBSO(a.parameters(), time_steps=2), TBSO(b.parameters(), time_steps=2)
    x, y = DIGITS.train.x[:16], DIGITS.train.y[:16]
    OnlineMethod(2, loss_lambda=0.1).train_batch(a, x, y, oa)
    functional.reset_net(b)
    for t in range(2):
        ob.zero_grad()
        out = b(x)
        onehot = torch.nn.functional.one_hot(y, 10).float()
        loss = (0.9 * torch.nn.functional.cross_entropy(out, y)
                + 0.1 * torch.nn.functional.mse_loss(out, onehot)) / 2
        loss.backward()
        ob.step(t=t)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_bptt_gradients_match_manual_unrolled_loop():
    torch.manual_seed(0)
    m = create_model("mlp", in_features=64, hidden=(16, 16), method="bptt").eval()  # BN per sample
    x, y = DIGITS.train.x[:8], DIGITS.train.y[:8]
    BPTTMethod(3, loss_lambda=0.2).train_batch(m, x, y, torch.optim.SGD(m.parameters(), lr=0.0))
    grads = [p.grad.clone() for p in m.parameters()]
    set_step_mode(m, "s")                        # the same modules, unrolled by hand
    functional.reset_net(m)
    m.zero_grad()
    loss = 0
    for _ in range(3):
        out = m(x)
        onehot = torch.nn.functional.one_hot(y, 10).float()
        loss = loss + (0.8 * torch.nn.functional.cross_entropy(out, y)
                       + 0.2 * torch.nn.functional.mse_loss(out, onehot)) / 3
    loss.backward()
    for g, p in zip(grads, m.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads)


def test_bptt_trains_on_digits():
    with pytest.warns(UserWarning, match="optim.beta1=0.99 has no effect with optim.name=adam"):
        cfg = resolve(load_recipe("digits_tbso"), [
            "train.progress=false", "method.name=bptt", "optim.name=adam", "optim.lr=0.01",
            "train.epochs=3", "model.hidden=[128,128]"])
    trainer = build_trainer(cfg, log=lambda *a: None, bundle=DIGITS)
    trainer.fit()
    assert trainer.history[-1]["test_acc"] > 0.85
