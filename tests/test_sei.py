"""SEI-BWSNN: multi-shortcut blocks, binarizer variants, per-step losses and distillation, teachers."""
import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from bsnn.config import resolve
from bsnn.errors import ConfigError, UserError
from bsnn.measure import SavedTensorMeter, count_parameters
from bsnn.models import create
from bsnn.models.sei_resnet import SEIBlock
from bsnn.nn import BinaryParameter, binary_parameters, set_step_mode
from bsnn.nn.binarize import make_binarizer
from bsnn.optim import TBSO
from bsnn.recipes import load_recipe
from bsnn.train import BPTTMethod, OnlineMethod, StepLoss, build_trainer, load_teacher
from bsnn.train.method import frozen_batchnorm_stats
from conftest import assert_binary


def binary_layers(model):
    return [m for m in model.modules() if isinstance(getattr(m, "weight", None), BinaryParameter)]


def record_inputs(model):
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach())) for m in binary_layers(model)]
    return seen, hooks


@pytest.mark.parametrize("method", ["bptt", "online"])
@pytest.mark.parametrize("shortcut", ["per_layer", "block", "none"])
def test_every_binary_layer_of_sei_resnet_sees_spikes(method, shortcut):
    model = create("sei_resnet_tiny", in_channels=1, num_classes=4, method=method, shortcut=shortcut)
    model.train(method == "bptt")            # online training mode carries [spike, trace]; eval sends spikes
    seen, hooks = record_inputs(model)
    x = torch.randn(3, 1, 16, 16) * 3
    model(x.unsqueeze(0).expand(2, *x.shape) if method == "bptt" else x)
    for h in hooks:
        h.remove()
    assert len(seen) == 6 and all(((s == 0) | (s == 1)).all() for s in seen)
    assert any(s.sum() > 0 for s in seen)


def test_shortcut_variants_change_the_graph_as_named():
    torch.manual_seed(0)
    blocks = {s: SEIBlock(__import__("bsnn").models.layers.LayerKit("bptt"), 4, 4, 1, s).eval()
              for s in ("per_layer", "block", "none")}
    state = blocks["per_layer"].state_dict()
    for b in blocks.values():
        b.load_state_dict(state, strict=False)
    x = torch.randn(2, 3, 4, 6, 6) * 2                  # [T, B, C, H, W]
    ref = blocks["per_layer"]

    def unit(bn, lif, conv, v):
        return conv(lif(bn(v.flatten(0, 1)).unflatten(0, v.shape[:2])).flatten(0, 1)).unflatten(0, v.shape[:2])

    out = {}
    for s, b in blocks.items():
        functional.reset_net(b)
        out[s] = b(x)
    functional.reset_net(ref)
    h = unit(ref.bn1, ref.lif1, ref.conv1, x)
    functional.reset_net(ref)
    h_res = h + x
    assert torch.allclose(out["per_layer"], unit(ref.bn2, ref.lif2, ref.conv2, h_res) + h_res, atol=1e-6)
    functional.reset_net(ref)
    assert torch.allclose(out["block"], unit(ref.bn2, ref.lif2, ref.conv2, h) + x, atol=1e-6)
    functional.reset_net(ref)
    assert torch.allclose(out["none"], unit(ref.bn2, ref.lif2, ref.conv2, h), atol=1e-6)
    assert blocks["none"].downsample is None
    down = SEIBlock(__import__("bsnn").models.layers.LayerKit("bptt"), 4, 8, 2, "per_layer").downsample
    assert [type(m).__name__ for m in down] == ["AvgPool2d", "Conv2d", "BatchNorm2d"]
    assert not isinstance(down[1].weight, BinaryParameter)


def test_sei_resnet_presets_count_binary_convs():
    r18 = count_parameters(create("sei_resnet18"))
    assert sum(1 for _ in binary_parameters(create("sei_resnet18", method="online"))) == 16
    assert r18.binary == 10_985_472                     # 16 binary 3x3 convs (latent in BPTT, 1 bit deployed)
    r34 = create("sei_resnet34", method="online")
    assert sum(1 for _ in binary_parameters(r34)) == 32
    tiny = create("sei_resnet_tiny", method="online")
    assert sum(p.numel() for p in binary_parameters(tiny)) == 9 * (2 * 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128)


@pytest.mark.parametrize("name", ["sei_resnet_tiny"])
def test_T1_multi_step_output_equals_single_step_forward(name):
    model = create(name, in_channels=1, num_classes=5, method="bptt").eval()
    x = torch.randn(4, 1, 12, 12)
    functional.reset_net(model)
    multi = model(x.unsqueeze(0))[0]
    set_step_mode(model, "s")
    functional.reset_net(model)
    single = model(x)
    assert torch.allclose(multi, single, atol=1e-6)


@pytest.mark.parametrize("name, expect", [
    ("channel_scaled", lambda w: w.abs().flatten(1).mean(1).view(-1, 1) * torch.where(w >= 0, 1.0, -1.0)),
    ("centred_channel", lambda w: w.abs().mean(1, keepdim=True) * torch.where(w - w.mean(1, keepdim=True) >= 0, 1., -1.)),
    ("centred_layer", lambda w: w.abs().mean() * torch.where(w - w.mean() >= 0, 1.0, -1.0)),
    ("standardized", lambda w: torch.where(w - w.mean(1, keepdim=True) >= 0, 1.0, -1.0)),
])
def test_scaled_and_centred_binarizers(name, expect):
    w = torch.randn(6, 10, requires_grad=True)
    b = make_binarizer(name)
    y = b(w)
    assert torch.allclose(y, expect(w.detach()))
    assert y.flatten(1).abs().std(1).max() < 1e-6                   # one magnitude per row
    (y * torch.randn_like(y)).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_distillation_with_alpha_zero_equals_plain_cross_entropy():
    out, y, teacher = torch.randn(8, 5), torch.randint(0, 5, (8,)), torch.randn(8, 5)
    plain = StepLoss()(out, y)
    assert torch.equal(plain, F.cross_entropy(out, y))
    for kind in ("soft", "hard", "self"):
        assert torch.equal(StepLoss(distill=kind, alpha=0.0)(out, y, teacher), plain)
    soft = StepLoss(distill="soft", alpha=1.0, tau=2.0)(out, y, teacher)
    ref = F.kl_div(F.log_softmax(out / 2, -1), F.softmax(teacher / 2, -1), reduction="batchmean") * 4
    assert torch.allclose(soft, ref)
    hard = StepLoss(distill="hard", alpha=0.5)(out, y, teacher)
    assert torch.allclose(hard, 0.5 * plain + 0.5 * F.cross_entropy(out, teacher.argmax(1)))


def test_distillation_head_gets_the_distillation_loss():
    out, kd, y, teacher = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True), \
        torch.randint(0, 3, (4,)), torch.randn(4, 3)
    StepLoss(distill="hard", alpha=1.0)((out, kd), y, teacher).backward()
    assert out.grad is None or out.grad.abs().sum() == 0
    assert kd.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["bptt", "online"])
def test_self_distillation_sends_no_gradient_into_the_teacher_signal(method, monkeypatch):
    torch.manual_seed(0)
    model = create("mlp", in_features=16, hidden=[32, 32], num_classes=4, method=method)
    x, y = torch.rand(8, 16), torch.randint(0, 4, (8,))
    crit = StepLoss(distill="self", alpha=1.0)
    teachers = []
    orig = StepLoss.__call__

    def spy(self, out, y, teacher=None):
        teachers.append(teacher)
        return orig(self, out, y, teacher)

    monkeypatch.setattr(StepLoss, "__call__", spy)
    m = (BPTTMethod(3, criterion=crit) if method == "bptt" else OnlineMethod(3, "accumulated", criterion=crit))
    opt = torch.optim.SGD(model.parameters(), lr=0.0) if method == "bptt" else TBSO(model.parameters(), time_steps=3)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    m.train_batch(model, x, y, opt)
    assert len(teachers) == 3 and all(t is not None and not t.requires_grad and t.grad_fn is None for t in teachers)
    assert all(torch.equal(teachers[0], t) for t in teachers)     # one ensemble mean teaches every member
    if method == "online":       # the pre-pass leaves BN statistics as one training forward per step does
        m2 = create("mlp", in_features=16, hidden=[32, 32], num_classes=4, method=method)
        m2.load_state_dict(init)
        OnlineMethod(3, "accumulated").train_batch(m2, x, y, TBSO(m2.parameters(), time_steps=3))
        for k in (k for k in init if "running" in k):
            assert torch.allclose(model.state_dict()[k], m2.state_dict()[k])


def test_frozen_batchnorm_stats_restores_buffers():
    model = create("mlp", in_features=16, hidden=[8, 8], num_classes=2)
    before = [b.clone() for b in model.buffers()]
    with torch.no_grad(), frozen_batchnorm_stats(model):
        model(torch.rand(4, 16) * 5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))


def test_online_sei_training_memory_does_not_grow_with_T():
    x, y = torch.rand(16, 1, 12, 12), torch.randint(0, 4, (16,))
    saved = {}
    for T in (1, 2, 6):
        torch.manual_seed(0)
        model = create("sei_resnet_tiny", in_channels=1, num_classes=4, widths=(8, 16), method="online")
        method = OnlineMethod(T, criterion=StepLoss(distill="self", alpha=0.5))
        with SavedTensorMeter().measure() as meter:
            method.train_batch(model, x, y, TBSO(model.parameters(), time_steps=T))
        saved[T] = meter.peak
        for p in binary_parameters(model):
            assert_binary(p)
    assert saved[1] == saved[2] == saved[6] > 0


def _scripted_teacher(path, classes, shape):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(torch.tensor(shape).prod()), classes))
    torch.jit.save(torch.jit.script(net), str(path))
    return net


def test_teachers_load_from_local_files_in_three_formats(tmp_path):
    x = torch.rand(3, 1, 8, 8)
    net = _scripted_teacher(tmp_path / "t.pt", 10, (1, 8, 8))
    t = load_teacher(tmp_path / "t.pt")
    assert torch.allclose(t(x), net(x)) and t.seconds > 0
    import torchvision

    tv = torchvision.models.get_model("resnet18", weights=None, num_classes=7).eval()
    torch.save(tv.state_dict(), tmp_path / "sd.pt")
    t = load_teacher(tmp_path / "sd.pt", arch="resnet18", num_classes=7)
    img = torch.rand(2, 3, 32, 32)
    assert torch.allclose(t(img), tv(img), atol=1e-5)
    with pytest.raises(UserError, match="teacher_arch"):
        load_teacher(tmp_path / "sd.pt")
    with pytest.raises(UserError, match="does not fit"):
        load_teacher(tmp_path / "sd.pt", arch="resnet34", num_classes=7)
    with pytest.raises(UserError, match="no file"):
        load_teacher(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="cannot read"):
        load_teacher(tmp_path / "junk.pt")


def test_distillation_run_from_a_recipe_with_a_full_precision_twin_teacher(tmp_path):
    common = ["train.progress=false", "model.hidden=[32,32]", "train.epochs=1", "train.limit_batches=3"]
    twin = build_trainer(resolve(load_recipe("digits_tbso"), [*common, "model.binary=false", "optim.name=sgd"]),
                         out_dir=tmp_path / "fp", log=lambda *a: None)
    twin.fit()
    cfg = resolve(load_recipe("digits_tbso"), [*common, "distill.name=soft", "distill.alpha=0.7",
                                               f"distill.teacher={tmp_path / 'fp' / 'checkpoint.pt'}"])
    student = build_trainer(cfg, out_dir=tmp_path / "s", log=lambda *a: None)
    x = student.data.test.x[:5]
    twin.net.eval()
    assert torch.allclose(student.method.teacher(x), twin.method.predict(twin.net, x) / 4, atol=1e-6)
    student.fit()
    assert student.history[-1]["teacher_time_s"] > 0
    with pytest.raises(ConfigError, match="needs a local teacher"):
        resolve(load_recipe("digits_tbso"), ["distill.name=hard"])
    with pytest.raises(ConfigError, match="distill.alpha"):
        resolve(load_recipe("digits_tbso"), ["distill.name=self", "distill.alpha=1.5"])


def test_head_kd_returns_two_heads_in_training_and_their_mean_in_eval():
    model = create("sei_resnet_tiny", in_channels=1, num_classes=3, head_kd=True, method="bptt")
    x = torch.rand(2, 2, 1, 8, 8)
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 2
    model.eval()
    heads = []
    for h in (model.head, model.head_kd):
        h.register_forward_hook(lambda mod, inp, o: heads.append(o))
    functional.reset_net(model)
    y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 2, 3)
    assert torch.allclose(y.flatten(0, 1), (heads[0] + heads[1]) / 2)
    loss, pred = BPTTMethod(2, criterion=StepLoss(distill="self", alpha=0.5)).train_batch(
        model.train(), x[0], torch.tensor([0, 1]), torch.optim.SGD(model.parameters(), lr=0.1))
    assert pred.shape == (2, 3) and torch.isfinite(loss)


def test_sei_recipes_reject_bad_input_with_one_line(tmp_path, capsys):
    from bsnn.cli import main

    bad = [["--recipe", "sei_imagenet_qkformer_10_768_t2"],                                  # no teacher file
           ["--recipe", "sei_cifar10_resnet_tiny", "--set", "model.shortcut=dense"],
           ["--recipe", "sei_cifar10_qkformer_tiny", "--set", "model.binary_scope=attention"],
           ["--recipe", "sei_mnist_resnet_tiny", "--set", "distill.tau=0"],
           ["--recipe", "sei_mnist_resnet_tiny", "--set", "distill.name=hard", "--set",
            f"distill.teacher={tmp_path / 'nowhere.pt'}"]]
    for args in bad:
        assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("bsnn: error:") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_ensemble_of_a_distilled_run_needs_no_teacher(tmp_path):
    from bsnn.cli import main

    common = ["--set", "train.progress=false", "--set", "model.hidden=[16,16]", "--set", "train.epochs=1",
              "--set", "train.limit_batches=2"]
    assert main(["train", "--recipe", "digits_tbso", *common, "--out", str(tmp_path / "t")]) == 0
    assert main(["train", "--recipe", "digits_tbso", *common, "--set", "distill.name=soft", "--set",
                 f"distill.teacher={tmp_path / 't' / 'checkpoint.pt'}", "--out", str(tmp_path / "s")]) == 0
    (tmp_path / "t" / "checkpoint.pt").unlink()                 # the teacher is gone
    assert main(["ensemble", "--checkpoint", str(tmp_path / "s" / "checkpoint.pt"), "--batches", "1"]) == 0
