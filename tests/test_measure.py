"""Measurements: summary counts (hand-computed), synaptic operations and firing rates on constructed input."""
import json
import pytest
import torch
from torch import nn

from bsnn.measure import count_parameters
from bsnn.measure.summary import E_AC_PJ, E_MAC_PJ, summary
from bsnn.models import create
from bsnn.nn import BinaryConv2d, BinaryLinear, OnlineLIFNode, SpikingSequential, TraceRouted


def test_summary_counts_match_hand_computation():
    model = create("convnet", in_channels=1, image_size=8, channels=(4, 8), head="flatten", bn_stats="shared")
    s = summary(model, (1, 8, 8), time_steps=2)
    by_kind = {r.name: r for r in s.rows}
    # conv0 1->4 3x3 real (36), bn0 (8 + 8 buffers), binary conv 4->8 3x3 (288), bn1 (16 + 16 buffers),
    # flatten 8*4*4 -> Linear 10 (1280 + 10)
    assert by_kind["0"].real_params == 36 and by_kind["0"].binary_params == 0
    assert by_kind["4"].binary_params == 288 and by_kind["4"].real_params == 0
    assert by_kind["4"].kind == "binary BinaryConv2d"
    assert by_kind["1"].real_params == 8 and by_kind["1"].buffers == 8
    assert s.binary_params == 288 and s.real_params == 36 + 8 + 16 + 1290
    assert s.bits == 288 + 32 * 1350 and by_kind["4"].bytes == 36
    assert s.megabytes == pytest.approx((288 + 32 * 1350) / 8e6)
    assert s.megabytes_with_buffers == pytest.approx((288 + 32 * (1350 + 24)) / 8e6)
    assert s.float32_megabytes == pytest.approx(32 * 1638 / 8e6)
    assert by_kind["4"].output_shape == (8, 4, 4) and by_kind["2"].output_shape == (4, 8, 8)
    c = count_parameters(model)
    assert (c.binary, c.real, c.buffers) == (288, 1350, 24)
    assert "compression" in s.table()


def test_synaptic_operations_exact_on_known_spikes():
    lin = BinaryLinear(3, 2)
    conv = BinaryConv2d(1, 5, 3, padding=1)
    net = nn.Sequential(TraceRouted(lin))
    s = summary(net, x=torch.tensor([[1.0, 0.0, 1.0]]), time_steps=3)
    assert s.rows[0].acs == 3 * 2 * 2 and s.rows[0].macs == 0          # 2 spikes x 2 outputs x 3 steps
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0                                                   # centre: fan-out 9 positions
    x[0, 0, 0, 0] = 1.0                                                   # corner: fan-out 4 positions
    s = summary(nn.Sequential(TraceRouted(conv)), x=x, time_steps=1)
    assert s.rows[0].acs == (9 + 4) * 5
    real = nn.Linear(4, 3)
    s = summary(nn.Sequential(real), x=torch.full((2, 4), 0.5), time_steps=2)
    assert s.rows[0].macs == 2 * 4 * 3 and s.rows[0].acs == 0            # real x real: dense MACs
    assert s.energy_uj == pytest.approx(24 * E_MAC_PJ * 1e-6)
    assert E_AC_PJ < E_MAC_PJ


def test_firing_rate_exact_on_constructed_input():
    node = OnlineLIFNode(tau=2.0, v_threshold=1.0)
    net = SpikingSequential(nn.Identity(), node)
    # neurons with input 2 fire at every step (v: 2 -> 1 -> 0.5+2 ...), input 0 never: rate 0.5
    s = summary(net, x=torch.tensor([[2.0, 0.0, 2.0, 0.0]]), time_steps=4)
    row = next(r for r in s.rows if r.kind == "OnlineLIFNode")
    assert row.firing_rate == 0.5


def test_summary_of_multistep_model_matches_single_step_counts():
    online = create("convnet", in_channels=1, image_size=8, channels=(4, 8), bn_stats="shared")
    bptt = create("convnet", in_channels=1, image_size=8, channels=(4, 8), method="bptt")
    a, b = summary(online, (1, 8, 8), 2), summary(bptt, (1, 8, 8), 2)
    assert (a.binary_params, a.real_params) == (b.binary_params, b.real_params)
    assert [r.output_shape for r in a.rows] == [r.output_shape for r in b.rows]
    assert {r.name: r for r in b.rows}["4"].kind == "latent-binary LatentBinaryConv2d"


class Scripted(torch.optim.Optimizer):
    """Sets the weight to the next value of a trajectory at every step."""

    def __init__(self, params, trajectory):
        super().__init__(params, {})
        self.trajectory = iter(trajectory)

    @torch.no_grad()
    def step(self, closure=None):
        self.param_groups[0]["params"][0].copy_(torch.tensor(next(self.trajectory)))


@pytest.mark.parametrize("latent", [False, True])
def test_flip_rates_exact_on_constructed_trajectory(latent):
    from bsnn.measure.flips import FlipMonitor
    from bsnn.nn import LatentBinaryLinear

    layer = LatentBinaryLinear(4, 1) if latent else BinaryLinear(4, 1)
    model = nn.Sequential(layer)
    start = [[0.2, 0.0, 0.5, 0.3]] if latent else [[1.0, 1.0, 1.0, 1.0]]   # latent 0.0 counts as +1
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(start))
    traj = ([[[-0.1, 0.0, 0.5, 0.3]], [[0.1, 0.7, 0.5, 0.3]], [[0.1, -0.2, -0.4, 0.3]]] if latent else
            [[[-1.0, 1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0, 1.0]], [[1.0, -1.0, -1.0, 1.0]]])
    opt = Scripted(model.parameters(), traj)
    mon = FlipMonitor(model, opt)
    for _ in range(3):
        opt.step()
    rates = mon.epoch_end()
    assert rates == {"flip_step/0": 4 / (4 * 3), "flip_epoch/0": 2 / 4}
    mon.remove()


def test_run_plots_and_benchmark_csv_plots_are_written(tmp_path):
    from bsnn.config import resolve
    from bsnn.measure.plots import plot
    from bsnn.recipes import load_recipe
    from bsnn.train import build_trainer

    cfg = resolve(load_recipe("digits_tbso"), ["train.progress=false", "model.hidden=[32,32]", "train.epochs=2"])
    trainer = build_trainer(cfg, out_dir=tmp_path / "run", log=lambda *a: None)
    trainer.fit()
    row = trainer.history[-1]
    assert [k for k in row if k.startswith("flip_")] == ["flip_step/4", "flip_epoch/4"]
    assert 0 < row["flip_step/4"] < 1 and 0 <= row["flip_epoch/4"] <= 1
    assert [k for k in row if k.startswith("fire/")] == ["fire/3", "fire/6"]
    assert "threshold" in row and "lr" in row and "beta1" in row
    paths = plot(tmp_path / "run")
    assert {p.name for p in paths} == {"accuracy.png", "loss.png", "flip_rate.png", "gradients.png", "firing_rate.png"}
    assert row["grad_var/4"] > 0
    for p in paths:
        assert p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG"
    csv = tmp_path / "mem.csv"
    csv.write_text("method,T,peak MiB,saved MiB\nA,1,10,1\nA,2,10,1\nB,1,10,1\nB,2,20,2\n")
    (png,) = plot(csv)
    assert png.suffix == ".png" and png.stat().st_size > 5000


def test_plots_name_layers_keep_tick_labels_and_use_whole_epochs(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from bsnn.measure import plots
    from bsnn.measure.labels import LABELS_FILE, layer_labels

    labels = layer_labels(create("mlp", in_features=64, hidden=(32, 32)))
    assert labels["4"] == "4 BinaryLinear 32→32" and labels["3"].startswith("3 ") and "LIF" in labels["3"]
    run = tmp_path / "run"
    run.mkdir()
    (run / LABELS_FILE).write_text(json.dumps(labels))
    (run / "metrics.csv").write_text("epoch,train_acc,test_acc,flip_step/4,flip_epoch/4,fire/3\n"
                                     "1,0.5,0.5,1.0e-4,0.01,0.2\n2,0.6,0.6,1.1e-4,0.011,0.21\n"
                                     "3,0.7,0.7,1.2e-4,0.012,0.22\n")
    figures = {}

    def keep(fig, path):
        fig.canvas.draw()
        figures[path.name] = fig
        return path
    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_run(run)
    flips = figures["flip_rate.png"].axes[0]
    assert [t.get_text() for t in flips.get_legend().get_texts()] == ["4 BinaryLinear 32→32"]
    assert flips.get_yscale() == "linear"              # 1.0e-4..1.2e-4: a narrow range on a linear axis
    low, high = flips.get_ylim()
    shown = [t for t in flips.get_yticklabels() if t.get_text() and low <= t.get_position()[1] <= high]
    assert len(shown) >= 3
    assert all(float(x).is_integer() for x in flips.get_xticks())
    fire = figures["firing_rate.png"].axes[0]
    assert fire.get_legend().get_texts()[0].get_text() == labels["3"]
    plt.close("all")
    fig, ax = plt.subplots()
    plots._y_scale(ax, [1e-6, 1e-3, 0.2], 1e-6)
    assert ax.get_yscale() == "symlog"                  # decades apart: symlog
    plt.close(fig)
