"""SEI-QKFormer: sizes, binary scope, FFN shortcuts, spike inputs, step modes, both methods, learning."""
import re
import time
from contextlib import contextmanager

import pytest
import torch
from spikingjelly.activation_based import functional

from bsnn.models import create, model_signature
from bsnn.models.qkformer import DropPath, SpikingMLP
from bsnn.nn import BinaryParameter, binary_parameters, set_step_mode
from bsnn.train import BPTTMethod
from conftest import assert_binary

QKFORMER_10_768 = 64_962_760          # QKFormer's own code (imagenet/qkformer.py), the paper's 64.96 M
FFN = r"stage\d\.\d+\.mlp\.conv[12]\.(layer\.)?weight"
ATTN = r"stage\d\.\d+\.attn\.(q|k|v|proj)_conv\.(layer\.)?weight"


def n_params(model, binary_only=False):
    return sum(p.numel() for p in model.parameters() if not binary_only or isinstance(p, BinaryParameter))


def binary_names(model):
    return {n for n, p in model.named_parameters() if isinstance(p, BinaryParameter)}


def matching(model, *patterns):
    return {n for n, _ in model.named_parameters() if any(re.fullmatch(p, n) for p in patterns)}


def tiny(**kw):
    return create("sei_qkformer_tiny", **kw)


def test_preset_parameter_counts():
    fp = create("sei_qkformer_10_768", binary_scope="none")
    assert n_params(fp, True) == 0
    assert abs(n_params(fp) - QKFORMER_10_768) / QKFORMER_10_768 < 0.01
    assert n_params(fp) == 64_924_744                # QKFormer minus its 38,016 conv biases before BN
    model = create("sei_qkformer_10_768")
    assert n_params(model) == n_params(fp)
    assert n_params(model, True) == 35_684_352       # 2 * 4 * (192^2 + 2 * 384^2 + 7 * 768^2)
    share = n_params(model, True) / n_params(model)
    assert 0.5 < share < 0.6 and round(share, 4) == 0.5496
    assert n_params(tiny()) == 750_554 <= 1e6


@pytest.mark.parametrize("method", ["bptt", "online"])
def test_binary_scope_selects_layers_by_tag(method):
    model = tiny(method=method)
    ffn = matching(model, FFN)
    assert len(ffn) == 2 * 4                          # two convs in each of the 4 blocks
    assert binary_names(model) == ffn
    attn = matching(model, ATTN)
    assert len(attn) == 3 + 3 + 4 + 4                 # q/k/proj in 2 Token-QK blocks, q/k/v/proj in 2 SSA
    assert binary_names(tiny(method=method, binary_scope="all")) == ffn | attn
    assert binary_names(tiny(method=method, binary_scope="none")) == set()
    for name in binary_names(tiny(method=method, binary_scope="all")):
        assert not name.startswith(("patch_embed", "head"))
    if method == "online":
        assert len(list(binary_parameters(model))) == 8
        for p in binary_parameters(model):
            assert_binary(p)


def test_kit_binary_false_gives_full_precision():
    assert binary_names(tiny(binary=False)) == set()


@pytest.mark.parametrize("kw, match", [
    ({"binary_scope": "mlp"}, "binary_scope"), ({"ffn_shortcut": "block"}, "ffn_shortcut"),
    ({"drop_path": 1.0}, "drop_path"), ({"depths": (1, 2)}, "depths"), ({"num_heads": 3}, "divisible"),
    ({"patch_embed": "vit"}, "patch_embed"), ({"mlp_ratio": 0}, "mlp_ratio"), ({"depths": 3}, "depths"),
    ({"embed_dim": 36, "num_heads": 1}, "multiple of 8"),
])
def test_bad_options_raise_value_error(kw, match):
    with pytest.raises(ValueError, match=match):
        create("sei_qkformer", **{"embed_dim": 64, "num_heads": 4, "image_size": 32, **kw})


def test_presets_expose_options_in_signature():
    for name in ("sei_qkformer_10_768", "sei_qkformer_tiny"):
        params = model_signature(name).parameters
        assert {"num_classes", "in_channels", "image_size", "method", "binary_scope", "ffn_shortcut", "head_kd",
                "drop_path", "kit"} <= set(params)


def test_ffn_shortcuts_change_the_output_and_follow_the_formula():
    a, b = tiny(), tiny(ffn_shortcut="none")
    b.load_state_dict(a.state_dict())                # the shortcuts hold no parameters
    x = torch.rand(2, 2, 3, 16, 16)
    assert not torch.allclose(a(x), b(x))            # training mode: BN on batch statistics
    mlp = a.stage3[0].mlp
    assert isinstance(mlp, SpikingMLP) and mlp.ratio == 4
    a.eval()
    x = torch.randn(2, 2, 128, 8, 8)
    functional.reset_net(a)
    y = mlp(x)
    functional.reset_net(a)
    h = mlp.bn1(mlp.conv1(mlp.lif1(x).flatten(0, 1))).unflatten(0, (2, 2)) + torch.cat([x, x, x, x], 2)
    y2 = mlp.bn2(mlp.conv2(mlp.lif2(h).flatten(0, 1))).unflatten(0, (2, 2))
    y_hand = y2 + h.reshape(2, 2, 128, 4, 8, 8).mean(3)
    assert torch.allclose(y, y_hand, atol=1e-5)
    pool = h.reshape(2, 2, 128, 4, 8, 8).mean(3)
    assert torch.allclose(pool[:, :, 5], h[:, :, 20:24].mean(2))   # channel 5 <- hidden 20..23


def _spike_hooks(model):
    seen = []

    def hook(module, args, _out):
        x = args[0]
        assert torch.all((x == 0) | (x == 1)), f"{type(module).__name__} got non-spike input"
        seen.append(module)

    mods = [m for m in model.modules() if isinstance(getattr(m, "weight", None), BinaryParameter)]
    return mods, seen, [m.register_forward_hook(hook) for m in mods]


@pytest.mark.parametrize("method, train", [("bptt", True), ("online", False)])
def test_every_binary_layer_sees_spikes(method, train):
    model = tiny(method=method, binary_scope="all")
    model.train(train)
    mods, seen, _ = _spike_hooks(model)
    assert len(mods) == 8 + 14
    x = torch.rand(3, 3, 16, 16) * 4
    if method == "bptt":
        model(x.unsqueeze(0).expand(2, *x.shape))
    else:
        functional.reset_net(model)
        for _ in range(2):
            model(x)
    assert {id(m) for m in seen} == {id(m) for m in mods}


def test_single_step_equals_multi_step():
    model = tiny(head_kd=True).eval()
    x = torch.rand(3, 2, 3, 16, 16)
    with torch.no_grad():
        functional.reset_net(model)
        multi = model(x)
        set_step_mode(model, "s")
        functional.reset_net(model)
        single = torch.stack([model(x[t]) for t in range(3)])
    assert multi.shape == (3, 2, 10)
    assert torch.allclose(multi, single, atol=1e-5)


def test_bptt_forward_backward_and_head_kd():
    model = tiny(head_kd=True, drop_path=0.1)
    x = torch.rand(2, 4, 3, 16, 16)
    out = model(x)
    assert isinstance(out, tuple) and out[0].shape == out[1].shape == (2, 4, 10)
    (out[0].sum() + out[1].sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    functional.reset_net(model)
    y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 4, 10)


def test_online_forward_backward_gives_every_weight_a_gradient():
    model = tiny(method="online", binary_scope="all", head_kd=True, drop_path=0.1)
    assert model.step_mode == "s"
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    functional.reset_net(model)
    for _ in range(2):
        out, kd = model(x)
        assert out.shape == kd.shape == (4, 10)
        (torch.nn.functional.cross_entropy(out, y) + torch.nn.functional.cross_entropy(kd, y)).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert len(list(binary_parameters(model))) == 22
    for p in binary_parameters(model):
        assert_binary(p)
        assert p.grad.abs().sum() > 0
    model.eval()
    functional.reset_net(model)
    assert model(x).shape == (4, 10)


def test_drop_path_keeps_one_mask_per_sample_over_time():
    dp = DropPath(0.5, "s")
    x = torch.ones(64, 2, 3)
    first = dp(x)
    assert set(first.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(dp(x), first)                 # same mask at the next time step
    functional.reset_net(dp)
    assert not torch.equal(dp(x), first)             # a new sample batch draws again
    dp_m = DropPath(0.5, "m")
    out = dp_m(torch.ones(3, 64, 2))
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    assert torch.equal(dp.eval()(x), x)


@contextmanager
def one_thread():
    """Timings on a shared 2-core CPU are steadier on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def test_tiny_forward_backward_is_fast():
    model = tiny()
    x = torch.rand(2, 4, 3, 32, 32)
    times = []
    with one_thread():
        for _ in range(4):                           # the first calls pay one-off allocation costs
            functional.reset_net(model)
            t = time.perf_counter()
            model(x).sum().backward()
            times.append(time.perf_counter() - t)
    assert min(times[2:]) < 1.0


def _quadrants(n, size, generator):
    """Class c in 0..3: quadrant c (row-major) is brighter by 1, plus Gaussian noise."""
    y = torch.randint(0, 4, (n,), generator=generator)
    x = 0.3 * torch.randn(n, 3, size, size, generator=generator)
    h = size // 2
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 2)
        x[i, :, h * r:h * (r + 1), h * col:h * (col + 1)] += 1.0
    return x, y


def test_tiny_learns_bright_quadrant():
    """BPTT at T=2, per-step CE, Adam 1e-3, 3 epochs of 160 samples; 16x16 inputs (the tiny preset adapts;
    32x32 costs four times as much) keep it to about 15 s."""
    g = torch.Generator().manual_seed(0)
    x, y = _quadrants(224, 16, g)
    xtr, ytr, xte, yte = x[:160], y[:160], x[160:], y[160:]
    model = tiny(num_classes=4, image_size=16)
    method = BPTTMethod(time_steps=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with one_thread():
        for _ in range(3):
            perm = torch.randperm(160, generator=g)
            model.train()
            for i in range(0, 160, 8):
                idx = perm[i:i + 8]
                method.train_batch(model, xtr[idx], ytr[idx], opt)
        model.eval()
        acc = (method.predict(model, xte).argmax(1) == yte).float().mean().item()
    assert acc > 0.5
