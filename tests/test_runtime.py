"""The torch-free runtime: identical spikes and logits within 1e-4 of the PyTorch eval-mode model on every
exported architecture (random and trained weights, both paths, both popcount kernels), conv edge cases,
import without torch, and one-line errors (exit 2) for corrupted or foreign files."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import base, functional
from torch import nn

from bsnn import models
from bsnn.cli import main
from bsnn.export import save_packed
from bsnn.models.layers import LayerKit
from bsnn.models.resnet import SpikingBiRealResNet, SpikingResNet
from bsnn.nn import BinaryConv2d, BinaryLinear, OnlineLIFNode, SpikingSequential

pytest.importorskip("safetensors")
from bsnn.runtime import FormatError, load, popcount  # noqa: E402
from bsnn.runtime.format import pack_signs, padded_k, read  # noqa: E402
from bsnn.runtime.ops import im2col  # noqa: E402


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c, stats = m.num_features, m.running_mean.shape          # [C], or [T, C] per time step
            m.running_mean.copy_(torch.rand(stats, generator=g) * 0.6 - 0.3)
            m.running_var.copy_(torch.rand(stats, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.7 - 0.2)
    return model.eval()


def torch_spikes(model: nn.Module, x: torch.Tensor, T: int, temporal: bool = False):
    """PyTorch eval: logits summed over T and every neuron's spikes as [T, B, ...] arrays."""
    model.eval()
    rec: dict[str, list] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: rec.setdefault(n, []).append(o.detach().clone()))
             for n, m in model.named_modules() if isinstance(m, base.MemoryModule) and hasattr(m, "v_threshold")]
    functional.reset_net(model)
    with torch.no_grad():
        if getattr(model, "step_mode", "s") == "m":
            seq = x.transpose(0, 1) if temporal else x.unsqueeze(0).expand(T, *x.shape)
            total, multi = model(seq).sum(0), True
        else:
            total = sum(model(x[:, t] if temporal else x) for t in range(T))
            multi = False
    for h in hooks:
        h.remove()
    functional.reset_net(model)
    return total.numpy(), {k: (v[0] if multi else torch.stack(v)).numpy() for k, v in rec.items()}


def assert_same(model, x, T, path, mode, kernel=None, temporal=False, input_shape=None):
    shape = input_shape or tuple(x.shape[2:] if temporal else x.shape[1:])
    save_packed(model, path, T, shape, temporal=temporal)
    ref, spikes = torch_spikes(model, x, T, temporal)
    rt = load(path, mode, kernel)
    rec: dict = {}
    out = rt.run(x.numpy(), record=rec)
    assert spikes, "the model has no neurons"
    for name, s in spikes.items():
        got = np.stack(rec[name])
        assert got.shape == s.shape and np.array_equal(got, s), f"{name}: {int((got != s).sum())} spikes differ"
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    return rt


def _bireal(method, stem, **kw):
    return SpikingBiRealResNet((1, 1, 1), 10, 3, stem, LayerKit(method, **kw), widths=(8, 16, 32))


def _resnet19ish(method, stem, **kw):
    return SpikingResNet((1, 1), (8, 16), 10, 3, stem, LayerKit(method, **kw))


ARCHS = {
    "mlp-online": (lambda: models.create("mlp", in_features=64, hidden=(96, 80)), (1, 8, 8)),
    "mlp-bptt": (lambda: models.create("mlp", in_features=64, hidden=(96, 80), method="bptt", tau=3.0), (1, 8, 8)),
    "convnet-online": (lambda: models.create("convnet", channels=(8, 16, 24)), (1, 28, 28)),
    "convnet-bptt-gap": (lambda: models.create("convnet", channels=(8, 16), head="gap", method="bptt",
                                               soft_reset=False), (1, 28, 28)),
    "vgg11-online": (lambda: models.create("vgg11"), (3, 16, 16)),
    "vgg11-bptt": (lambda: models.create("vgg11", method="bptt", binarizer="scaled_sign"), (3, 16, 16)),
    "resnet18-online": (lambda: models.create("resnet18", num_classes=10, stem="cifar"), (3, 8, 8)),
    "bireal-bptt-bso-stem": (lambda: _bireal("bptt", "bso"), (3, 16, 16)),
    "bireal-online-imagenet-stem": (lambda: _bireal("online", "imagenet"), (3, 32, 32)),
    "resnet19-bptt": (lambda: _resnet19ish("bptt", "cifar", tau=3.0), (3, 16, 16)),
    "resnet19-online-imagenet-stem": (lambda: _resnet19ish("online", "imagenet"), (3, 32, 32)),
    "sei-per_layer": (lambda: models.create("sei_resnet_tiny", widths=(8, 16, 32)), (3, 16, 16)),
    "sei-block-kd-hard": (lambda: models.create("sei_resnet_tiny", widths=(8, 16), shortcut="block", head_kd=True,
                                                soft_reset=False, binarizer="scaled_sign"), (3, 16, 16)),
    "sei-none-online-small": (lambda: models.create("sei_resnet_tiny", widths=(8, 16), shortcut="none",
                                                    stem="small", method="online", in_channels=1), (1, 28, 28)),
    "sei-channel_scaled-nmnist": (lambda: models.create("sei_resnet_tiny", widths=(8, 16), stem="small",
                                                        binarizer="channel_scaled", in_channels=2), (2, 34, 34)),
    # BatchNorm statistics per time step (format version 2: scale/bias rows per step; T=3 > 2 rows)
    "mlp-online-per_step": (lambda: models.create("mlp", in_features=64, hidden=(96, 80), bn_stats="per_step",
                                                  time_steps=2), (1, 8, 8)),
    "vgg11-bptt-per_step": (lambda: models.create("vgg11", method="bptt", bn_stats="per_step", time_steps=3),
                            (3, 16, 16)),
    "sei-per_step": (lambda: models.create("sei_resnet_tiny", widths=(8, 16), bn_stats="per_step", time_steps=3),
                     (3, 16, 16)),
}


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("mode", ["reference", "packed"])
def test_runtime_matches_pytorch(arch, mode, tmp_path):
    make, shape = ARCHS[arch]
    torch.manual_seed(0)
    model = randomize_bn(make())
    assert_same(model, torch.rand(3, *shape), 3, tmp_path / "m.bsnn", mode)


@pytest.mark.parametrize("numpy_bitwise_count", [True, False])
def test_both_popcount_kernels_agree_with_dense(numpy_bitwise_count, monkeypatch):
    if not numpy_bitwise_count:                  # numpy < 2: the byte lookup table
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    rng = np.random.default_rng(0)
    for m, k, n in [(5, 1, 3), (7, 63, 4), (9, 64, 5), (33, 130, 17), (64, 576, 32)]:
        s = (rng.random((m, k)) < 0.3).astype(np.uint8)
        w = np.where(rng.random((n, k)) < 0.5, 1, -1)
        dense = s.astype(np.int64) @ w.T
        sw = popcount.pack_rows(s, padded_k(k))
        ww = popcount.pack_rows((w > 0).astype(np.uint8), padded_k(k)).T
        assert np.array_equal(popcount.binary_gemm(sw, ww, "numpy"), dense)
        if popcount.kernel() == "numba":
            assert np.array_equal(popcount.binary_gemm(sw, ww, "numba"), dense)


@pytest.mark.parametrize("use", ["numpy", "numba"])
def test_binary_conv_on_bit_planes_equals_float_conv(use):
    """The im2col-free conv on channel-packed pixels, with pooled-spike bit planes, stride and padding."""
    if use == "numba" and popcount.kernel() != "numba":
        pytest.skip("numba is not installed (optional extra 'fast')")
    rng = np.random.default_rng(1)
    for c, n, hw, k, stride, pad, d in [(3, 4, 7, 3, 1, 1, 1), (70, 5, 6, 3, 2, 1, 4), (64, 8, 5, 1, 1, 0, 2),
                                         (130, 3, 9, 3, 2, 0, 1)]:
        x = rng.integers(0, d + 1, (2, c, hw, hw)).astype(np.float32) / d
        w = np.where(rng.random((n, c, k, k)) < 0.5, 1, -1)
        want = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                          stride=stride, padding=pad).numpy()
        words = popcount.pack_pixels(x, d, (pad, pad), use)
        assert np.array_equal(words, popcount.pack_pixels(x, d, (pad, pad), "numpy"))
        w_words = popcount.conv_weight_words(pack_signs(w), c, (k, k))
        got = popcount.binary_conv(words, w_words, (k, k), (stride, stride), d=d, use=use)
        assert got.dtype == np.float32 and np.array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("kernel", ["numpy", "numba"])
def test_conv_edge_cases(kernel, tmp_path):
    """K not a multiple of 8 or 64, 1x1 and 3x3 convs, stride, zero padding, no padding, pooled spikes."""
    if kernel == "numba" and popcount.kernel() != "numba":
        pytest.skip("numba is not installed (optional extra 'fast')")
    kit = LayerKit("online", trace="none")
    model = SpikingSequential(
        nn.Conv2d(3, 5, 3, 1, 1, bias=True), nn.BatchNorm2d(5), kit.neuron(),
        BinaryConv2d(5, 7, 3, stride=2, padding=1), nn.BatchNorm2d(7), OnlineLIFNode(3.0, 0.8),     # K = 45
        BinaryConv2d(7, 9, 1), nn.BatchNorm2d(9), kit.neuron(),                                     # K = 7
        nn.AvgPool2d(2), BinaryConv2d(9, 11, 3, stride=1, padding=0), kit.neuron(),                 # K = 81
        nn.Flatten(1), BinaryLinear(11 * 1 * 1, 13), nn.BatchNorm1d(13), kit.neuron(),              # K = 11
        nn.Linear(13, 4))
    torch.manual_seed(3)
    assert_same(randomize_bn(model), torch.rand(4, 3, 11, 11), 4, tmp_path / "m.bsnn", "packed", kernel)


def test_im2col_matches_unfold():
    x = torch.rand(2, 3, 9, 7)
    for k, s, p in [((3, 3), (1, 1), (1, 1)), ((1, 1), (2, 2), (0, 0)), ((3, 2), (2, 1), (0, 1))]:
        cols, (oh, ow) = im2col(x.numpy(), k, s, p)
        ref = nn.functional.unfold(x, k, padding=p, stride=s).transpose(1, 2).reshape(-1, cols.shape[1])
        assert np.array_equal(cols, ref.numpy())


def test_temporal_input(tmp_path):
    model = randomize_bn(models.create("mlp", in_features=2 * 6 * 6, hidden=(32,)))
    x = (torch.rand(3, 4, 2, 6, 6) < 0.2).float()          # [B, T, C, H, W] event frames
    assert_same(model, x, 4, tmp_path / "m.bsnn", "packed", temporal=True)


def test_bptt_steps_trained_convnet(tmp_path):
    """Weights and BN statistics after a few BPTT/Adam steps (latent weights, binarized by the export)."""
    torch.manual_seed(0)
    model = models.create("convnet", channels=(8, 16, 16), method="bptt")
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for _ in range(3):
        functional.reset_net(model)
        loss = nn.functional.cross_entropy(model(x.unsqueeze(0).expand(2, *x.shape)).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for mode in ("reference", "packed"):
        assert_same(model.eval(), x[:4], 2, tmp_path / "m.bsnn", mode)


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    """A 2-batch T-BSO run of the digits demo recipe, exported."""
    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(["train", "--recipe", "digits_tbso", "--out", str(out), "--set", "train.epochs=1",
                 "--set", "train.limit_batches=2", "--set", "train.progress=false"]) == 0
    assert main(["export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(out / "model.bsnn")]) == 0
    return out


def _digits_model(run):
    from bsnn.data import create
    from bsnn.train import build_model
    from bsnn.train.checkpoint import load_model_state, load_run

    state = load_run(run / "checkpoint.pt")
    model = build_model(state["config"])
    load_model_state(model, state["model"], run)
    x, _ = create("digits").test[list(range(48))]
    return model.eval(), x


def test_trained_digits_spikes_and_cli_infer(trained_digits, tmp_path, capsys):
    model, x = _digits_model(trained_digits)
    for mode in ("reference", "packed"):
        assert_same(model, x, 4, tmp_path / "m.bsnn", mode)
    ref, _ = torch_spikes(model, x, 4)
    np.save(tmp_path / "x.npy", x.numpy())
    capsys.readouterr()
    for path in ("packed", "reference"):
        assert main(["infer", str(trained_digits / "model.bsnn"), str(tmp_path / "x.npy"), "--path", path]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [int(line.split("\t")[1]) for line in lines] == ref.argmax(1).tolist()


def test_runtime_imports_and_runs_without_torch(trained_digits, tmp_path):
    _, x = _digits_model(trained_digits)
    np.save(tmp_path / "x.npy", x.numpy())
    expected = load(trained_digits / "model.bsnn").run(x.numpy())
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        import bsnn.runtime as rt
        for mode in ("packed", "reference"):
            out = rt.load({str(trained_digits / "model.bsnn")!r}, mode).run(np.load({str(tmp_path / "x.npy")!r}))
            np.save({str(tmp_path)!r} + "/out_" + mode + ".npy", out)
        from bsnn.cli import main                      # `bsnn infer` imports no torch either
        assert main(["infer", {str(trained_digits / "model.bsnn")!r}, {str(tmp_path / "x.npy")!r}]) == 0
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", rt.kernel())
    """)
    for env, kernel in (({}, popcount.kernel()), ({"BSNN_POPCOUNT": "numpy"}, "numpy")):
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                           env={**os.environ, **env})
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == f"ok {kernel}", r.stderr[-2000:]
        for mode in ("packed", "reference"):
            np.testing.assert_array_equal(np.load(tmp_path / f"out_{mode}.npy"), expected)


def _corruptions(good: bytes, tmp_path) -> dict:
    import json
    import struct

    from safetensors.numpy import save

    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8:8 + n])
    meta = header["__metadata__"]

    def with_meta(**changes):
        desc = json.loads(meta["bsnn"])
        tensors = read_tensors(good, tmp_path)
        m = {**meta, **{k: v for k, v in changes.items() if k != "desc"}}
        if "desc" in changes:
            changes["desc"](desc, tensors)
            m["bsnn"] = json.dumps(desc)
        return save(tensors, metadata=m)

    def drop_tensor(desc, tensors):
        tensors.pop(next(k for k in tensors if k.endswith(".weight")))

    def bad_input(desc, tensors):
        desc["nodes"][1]["inputs"] = ["nowhere"]

    def no_fan_in(desc, tensors):
        del desc["nodes"][1]["in_features"]

    def shapes_do_not_fit(desc, tensors):
        desc["input_shape"] = [1, 4, 4]          # well-formed, but 16 inputs for a 64-input layer

    return {
        "truncated": good[: len(good) // 2],
        "garbage": b"\x13\x37" * 500,
        "empty": b"",
        "foreign safetensors": save({"w": np.zeros(3, np.float32)}),
        "version 99": with_meta(format_version="99"),
        "bad json": with_meta(bsnn="{not json"),
        "missing tensor": with_meta(desc=drop_tensor),
        "dangling input": with_meta(desc=bad_input),
        "missing attribute": with_meta(desc=no_fan_in),
    }, with_meta(desc=shapes_do_not_fit)


def read_tensors(data: bytes, tmp_path):
    p = tmp_path / "tmp.bsnn"
    p.write_bytes(data)
    return read(p)[1]


def test_corrupted_and_foreign_files_give_one_line_and_exit_2(tmp_path, capsys):
    save_packed(randomize_bn(models.create("mlp", in_features=64, hidden=(16, 16))), tmp_path / "good.bsnn", 2,
                (1, 8, 8))
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    good = (tmp_path / "good.bsnn").read_bytes()
    corrupted, unfit = _corruptions(good, tmp_path)
    for what, data in corrupted.items():
        p = tmp_path / f"{what.replace(' ', '_')}.bsnn"
        p.write_bytes(data)
        with pytest.raises(FormatError):
            load(p)
        capsys.readouterr()
        assert main(["infer", str(p), str(tmp_path / "x.npy")]) == 2, what
        err = capsys.readouterr().err
        assert err.startswith("bsnn: error:") and err.count("\n") == 1, (what, err)
    (tmp_path / "unfit.bsnn").write_bytes(unfit)
    np.save(tmp_path / "small.npy", np.zeros((2, 1, 4, 4), np.float32))
    np.save(tmp_path / "none.npy", np.zeros((0, 1, 8, 8), np.float32))
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 8, 8), np.float32))
    for args in ([str(tmp_path / "good.bsnn"), str(tmp_path / "wrong.npy")],
                 [str(tmp_path / "good.bsnn"), str(tmp_path / "good.bsnn")],
                 [str(tmp_path / "nothing.bsnn"), str(tmp_path / "x.npy")],
                 [str(tmp_path / "unfit.bsnn"), str(tmp_path / "small.npy")],
                 [str(tmp_path / "good.bsnn"), str(tmp_path / "none.npy")]):
        assert main(["infer", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
