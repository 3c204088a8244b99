"""Non-finite values never pass silently (issue 9, item 4): optimizers skip and count steps with NaN/inf
gradients, a NaN loss stops the run keeping the last good checkpoint, datasets refuse NaN inputs."""
import pytest
import torch

from bsnn.cli import main
from bsnn.data import TensorPairs
from bsnn.errors import DatasetError
from bsnn.models import create as create_model
from bsnn.nn import binary_parameters
from bsnn.optim import BSO, TBSO
from bsnn.train import OnlineMethod, checkpoint as ckpt
from bsnn.train.method import optimizer_step
from conftest import assert_binary


def model_and_grads(seed=0):
    torch.manual_seed(seed)
    m = create_model("mlp", in_features=8, hidden=(16, 16))
    for p in m.parameters():
        p.grad = torch.randn_like(p)
    return m


@pytest.mark.parametrize("cls", [BSO, TBSO])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_step_is_skipped_counted_and_flipping_goes_on(cls, foreach, bad):
    m = model_and_grads()
    kw = {"time_steps": 1} if cls is TBSO else {}
    opt = cls(m.parameters(), lr=0.1, threshold=0.0, beta1=0.5, foreach=foreach, **kw)
    opt.step(t=0)                                           # state exists before the bad step
    before = {k: v.clone() for k, v in m.state_dict().items()}
    state_before = {id(p): {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}
                    for p in m.parameters() if opt.state[p]}
    w = next(binary_parameters(m))
    w.grad[0, 0] = bad                                      # one bad value in one binary tensor
    opt.step(t=0)
    assert opt.skipped_steps == 1 and opt.state_dict()["skipped_steps"] == 1
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k                 # weights (binary and real) untouched
    for p in m.parameters():
        for k, v in state_before.get(id(p), {}).items():
            assert torch.equal(opt.state[p][k], v), k       # momentum and v[t] not poisoned
    # finite gradients again: steps happen, weights stay ±1 and keep flipping
    flips = 0
    for i in range(5):
        for p in m.parameters():
            p.grad = torch.randn_like(p)
        old = w.detach().clone()
        opt.step(t=0)
        flips += int((old != w).sum())
        assert_binary(w)
    assert flips > 0 and opt.skipped_steps == 1
    for p in m.parameters():
        assert all(torch.isfinite(v).all() for v in opt.state[p].values() if torch.is_tensor(v))


def test_skipped_steps_survive_state_dict_round_trip():
    m = model_and_grads()
    opt = TBSO(m.parameters(), time_steps=2)
    next(m.parameters()).grad.fill_(float("nan"))           # a real parameter's gradient
    opt.step(t=1)
    other = TBSO(m.parameters(), time_steps=2)
    other.load_state_dict(opt.state_dict())
    assert other.skipped_steps == 1 and "skipped_steps" not in other.param_groups[0]


def test_plain_optimizers_are_skipped_by_the_method_step():
    m = model_and_grads()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    before = [p.detach().clone() for p in m.parameters()]
    next(m.parameters()).grad[0] = float("inf")
    optimizer_step(opt, 0)
    assert opt.skipped_steps == 1 and all(torch.equal(a, p) for a, p in zip(before, m.parameters()))
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    optimizer_step(opt, 0)
    assert opt.skipped_steps == 1 and not torch.equal(before[0], next(m.parameters()))
    assert opt.state_dict()["skipped_steps"] == 1


def test_gradscaler_skips_first_and_bso_sees_only_finite_gradients():
    m = model_and_grads()
    opt = TBSO(m.parameters(), time_steps=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 3])
    method = OnlineMethod(1)
    method.train_batch(m, x, y, opt, scaler)                # finite: one real step
    assert opt.skipped_steps == 0 and len(opt.state) > 0
    before = [p.detach().clone() for p in m.parameters()]
    method.train_batch(m, x * float("nan"), y, opt, scaler)  # NaN: the scaler skips, and backs off
    assert scaler.get_scale() == 1.0 and opt.skipped_steps == 0
    assert all(torch.equal(a, p) for a, p in zip(before, m.parameters()))


def test_datasets_refuse_nonfinite_inputs_and_bad_labels():
    x = torch.rand(4, 1, 8, 8)
    x[1, 0, 2, 3] = float("nan")
    with pytest.raises(DatasetError, match="NaN or inf"):
        TensorPairs(x, torch.arange(4))
    with pytest.raises(DatasetError, match="one integer per sample"):
        TensorPairs(torch.rand(4, 3), torch.rand(4))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    """Epoch 1 trains normally; in epoch 2 the loss turns NaN: exit 3, one message, epoch 1 kept."""
    from bsnn.train.trainer import Trainer

    out = tmp_path / "run"
    train_epoch = Trainer.train_epoch

    def poisoned(self, epoch):
        if epoch == 1:
            for p in self.net.parameters():
                if not getattr(p, "kind", None):
                    p.data.fill_(float("nan"))               # real weights NaN: the loss is NaN
        return train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", poisoned)
    code = main(["train", "--recipe", "digits_tbso", "--set", "train.epochs=3", "--set", "train.progress=false",
                 "--set", "model.hidden=[16,16]", "--set", "train.limit_batches=3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and err.startswith("bsnn: error: epoch 2, batch 1: the training loss is nan"), err
    assert "keeps epoch 1" in err and "Non-finite values" in err and err.count("\n") == 1
    state = ckpt.load_run(out / "checkpoint.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values()
                                       if v.is_floating_point())
    assert (out / "metrics.csv").read_text().count("\n") == 2
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt")]) == 0


def test_max_nonfinite_tolerates_that_many_bad_batches(tmp_path, monkeypatch):
    from bsnn.config import resolve
    from bsnn.recipes import load_recipe
    from bsnn.train import build_trainer

    cfg = resolve(load_recipe("digits_tbso"), ["train.progress=false", "model.hidden=[16,16]", "train.epochs=1",
                                               "train.limit_batches=4", "train.max_nonfinite=2"])
    trainer = build_trainer(cfg, log=lambda *a: None)
    real = trainer.method.train_batch
    calls = []

    def sometimes_nan(*args):
        loss, out = real(*args)
        calls.append(1)
        return (loss * float("nan"), out) if len(calls) in (2, 3) else (loss, out)

    trainer.method.train_batch = sometimes_nan
    trainer.fit()
    assert trainer.nonfinite == 2 and torch.isfinite(torch.tensor(trainer.history[-1]["train_loss"]))
    calls.clear()
    trainer.epochs = 2
    with pytest.raises(Exception, match="3 non-finite losses"):
        trainer.fit()
