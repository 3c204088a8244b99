"""The self-ensemble view (bsnn.measure.ensemble): members equal a hand-written per-step loop, the residue
ξ/V_th equals the LIF equations by hand, every model kind runs and is left as found, and the CLI."""
import csv
import json
import os

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from torch.utils.data import DataLoader, TensorDataset

from bsnn import models
from bsnn.cli import main
from bsnn.measure import EnsembleReport, ensemble
from bsnn.measure.plots import plot
from bsnn.nn import OnlineLIFNode, SpikingSequential, set_step_mode
from bsnn.train import BPTTMethod, OnlineMethod


def _loader(n=48, batch_size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(n, 16, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def _step_modes(model):
    return {n: getattr(m, "step_mode", None) for n, m in model.named_modules()}


@pytest.mark.parametrize("kind", ["online", "bptt"])
def test_members_equal_a_manual_per_step_loop(kind):
    T = 4
    torch.manual_seed(0)
    model = models.create("mlp", in_features=16, hidden=[32, 32], num_classes=4, method=kind)
    method = OnlineMethod(T) if kind == "online" else BPTTMethod(T)
    loader = _loader()
    model.train()
    modes = _step_modes(model)
    r = ensemble(model, loader, method)
    assert model.training and _step_modes(model) == modes

    model.eval()
    member, agree, ens, n, normal = torch.zeros(T), torch.zeros(T, T), 0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            normal += int((method.predict(model, x).argmax(1) == y).sum())   # the model's own prediction
            set_step_mode(model, "s")
            functional.reset_net(model)
            out = torch.stack([model(x) for _ in range(T)])
            if kind == "bptt":                      # multi-step output, step t = member t
                set_step_mode(model, "m")
                functional.reset_net(model)
                torch.testing.assert_close(model(x.unsqueeze(0).expand(T, *x.shape)), out)
            pred = out.argmax(-1)
            member += (pred == y).sum(1)
            agree += (pred[:, None] == pred[None]).sum(-1)
            ens += int((out.sum(0).argmax(-1) == y).sum())
            n += len(y)
    assert r.samples == n == 48 and r.time_steps == T
    assert torch.equal(torch.tensor(r.member_acc, dtype=torch.float64).mul(n).round(), member.double())
    assert torch.equal(torch.tensor(r.agreement, dtype=torch.float64).mul(n).round(), agree.double())
    assert r.ensemble_acc == pytest.approx(ens / n) == pytest.approx(normal / n)
    assert r.cumulative_acc[0] == r.member_acc[0] and r.cumulative_acc[-1] == r.ensemble_acc
    assert min(min(row) for row in r.agreement) < 1.0          # the members differ: the test means something
    assert [x.name for x in r.layers] == ["3", "6"] and not r.skipped
    assert all(x.xi_step[0] == 0 and x.xi_mean is not None and x.xi_std > 0 for x in r.layers)
    # max_batches
    assert ensemble(model, loader, method, max_batches=1).samples == 16


def _by_hand(c, vth, tau, decay_input, hard, T):
    """ξ/V_th and spikes per step of one neuron with constant input c (v_reset = 0; tau None = IF)."""
    v, xi, spikes = 0.0, [], []
    for _ in range(T):
        r = v if tau is None else v - v / tau          # the leaked residue: charge with zero input
        h = r + (c / tau if decay_input else c)
        s = h >= vth
        xi.append(r / vth)
        spikes.append(float(s))
        v = (0.0 if hard else h - vth) if s else h
    return xi, spikes


@pytest.mark.parametrize("make, c, hand", [
    (lambda: OnlineLIFNode(tau=2.0, v_threshold=0.5), 0.3, dict(tau=2.0, decay_input=False, hard=False)),
    (lambda: neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=0.5, v_reset=None), 0.3,
     dict(tau=2.0, decay_input=False, hard=False)),
    (lambda: neuron.LIFNode(tau=3.0, decay_input=True, v_threshold=0.5, v_reset=0.0), 1.2,
     dict(tau=3.0, decay_input=True, hard=True)),
    (lambda: neuron.IFNode(v_threshold=0.5, v_reset=None), 0.35, dict(tau=None, decay_input=False, hard=False)),
], ids=["online_lif", "lif_soft", "lif_decay_input_hard", "if"])
def test_residue_equals_the_lif_equations(make, c, hand):
    T = 5
    model = SpikingSequential(make())
    loader = DataLoader(TensorDataset(torch.full((6, 3), c), torch.zeros(6, dtype=torch.long)), batch_size=4)
    r = ensemble(model, loader, OnlineMethod(T))
    xi, spikes = _by_hand(c, 0.5, T=T, **hand)
    (layer,) = r.layers
    assert layer.xi_step[0] == 0.0
    assert layer.xi_step == pytest.approx(xi, abs=1e-6)
    assert layer.firing_rate == pytest.approx(spikes)
    assert 0 < sum(spikes) < T                          # both branches of the dynamics are exercised
    assert layer.xi_mean == pytest.approx(sum(xi[1:]) / (T - 1), abs=1e-6)
    assert layer.xi_std == pytest.approx(torch.tensor(xi[1:]).std(unbiased=False).item(), abs=1e-5)


def test_unknown_neurons_are_listed_and_t1_has_no_residue():
    model = SpikingSequential(neuron.ParametricLIFNode(), OnlineLIFNode())
    loader = DataLoader(TensorDataset(torch.rand(4, 3), torch.zeros(4, dtype=torch.long)), batch_size=4)
    r = ensemble(model, loader, OnlineMethod(1))
    assert r.skipped == ["0 (ParametricLIFNode)"] and [x.name for x in r.layers] == ["1"]
    assert r.layers[0].xi_mean is None and r.layers[0].xi_std is None
    back = EnsembleReport.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and "ParametricLIFNode" in back.table()
    with pytest.raises(ValueError):
        ensemble(model, loader, OnlineMethod(1), max_batches=0)


@pytest.mark.parametrize("name, kwargs, method, shape", [
    ("vgg11", dict(in_channels=1, num_classes=10, method="online"), OnlineMethod(2), (1, 16, 16)),
    ("resnet18", dict(stem="cifar", num_classes=10, method="bptt"), BPTTMethod(2), (3, 16, 16)),
])
def test_big_models_run_and_are_left_as_found(name, kwargs, method, shape):
    model = models.create(name, **kwargs)
    loader = DataLoader(TensorDataset(torch.rand(2, *shape), torch.randint(0, 10, (2,))), batch_size=2)
    model.train()
    modes = _step_modes(model)
    r = ensemble(model, loader, method)
    assert model.training and _step_modes(model) == modes
    assert r.samples == 2 and len(r.member_acc) == 2 and len(r.agreement) == 2 and not r.skipped
    spiking = [m for m in model.modules() if isinstance(m, (OnlineLIFNode, neuron.LIFNode))]
    assert len(r.layers) == len(spiking) > 0
    assert all(0 <= f <= 1 for x in r.layers for f in x.firing_rate)
    assert "ensemble accuracy" in r.table()
    # restored on an exception too (a batch of the wrong shape), hooks removed
    bad = DataLoader(TensorDataset(torch.rand(2, 5, 7, 7), torch.zeros(2, dtype=torch.long)), batch_size=2)
    with pytest.raises(RuntimeError):
        ensemble(model, bad, method)
    assert model.training and _step_modes(model) == modes
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


# ---- CLI ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ens") / "run"
    assert main(["train", "--recipe", "digits_tbso", "--set", "train.epochs=1", "--set", "train.limit_batches=2",
                 "--set", "train.progress=false", "--set", "model.hidden=[64,64]", "--out", str(out)]) == 0
    return out


def _run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_ensemble_and_plot(run_dir, tmp_path, capsys):
    ckpt = str(run_dir / "checkpoint.pt")
    code, text, _ = _run(["ensemble", "--checkpoint", ckpt, "--batches", "2"], capsys)
    assert code == 0 and "ensemble accuracy" in text and "agreement" in text
    report = EnsembleReport.from_dict(json.loads((run_dir / "ensemble.json").read_text()))
    assert report.time_steps == 4 and report.samples == 360          # digits: 360 test samples, 256 a batch
    with open(run_dir / "metrics.csv") as f:
        test_acc = float(list(csv.DictReader(f))[-1]["test_acc"])
    assert report.ensemble_acc == pytest.approx(test_acc)            # the model's normal prediction
    code, text, _ = _run(["plot", str(run_dir)], capsys)
    assert code == 0 and (run_dir / "ensemble.png").stat().st_size > 10_000 and "ensemble.png" in text
    out = tmp_path / "sub" / "e.json"
    code, _, _ = _run(["ensemble", "--checkpoint", ckpt, "--batches", "1", "--out", str(out)], capsys)
    assert code == 0 and json.loads(out.read_text())["samples"] == 256
    assert plot(out) == [tmp_path / "sub" / "e.png"] and (tmp_path / "sub" / "e.png").is_file()


def test_cli_ensemble_bad_input_exits_2_with_one_line(run_dir, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(256))
    (tmp_path / "file").write_text("x")
    ckpt = str(run_dir / "checkpoint.pt")
    out = tmp_path / "never.json"
    for args, message in [
        (["--checkpoint", str(tmp_path / "no.pt")], "no checkpoint"),
        (["--checkpoint", str(junk)], "not a bsnn checkpoint"),
        (["--checkpoint", ckpt, "--batches", "0"], "--batches must be >= 1"),
        (["--checkpoint", ckpt, "--set", "nope.key=1"], "unknown section"),
        (["--checkpoint", ckpt, "--out", str(tmp_path / "file" / "e.json")], "cannot write"),
    ]:
        code, _, err = _run(["ensemble", *args] + ([] if "--out" in args else ["--out", str(out)]), capsys)
        assert code == 2, args
        assert err.startswith("bsnn: error:") and message in err and err.count("\n") == 1, err
    assert not out.exists()
