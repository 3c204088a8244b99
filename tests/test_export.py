"""Export: bit packing (order, +1 convention, padding), BatchNorm folding, file size vs summary, refusals,
the CLI (`bsnn export`, `bsnn summary --file`), NIR and the ONNX time step (skipped without their extras)."""
import json
import struct
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron
from torch import nn

from bsnn import models
from bsnn.cli import main
from bsnn.export import UnsupportedModel, fold_batchnorm, lower, save_packed
from bsnn.measure.params import count_parameters
from bsnn.measure.summary import summary
from bsnn.nn import BinaryConv2d, SpikingSequential
from bsnn.runtime import format as fmt

pytest.importorskip("safetensors")


def randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) * 0.6 - 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.7 - 0.2)
    return model.eval()


# -- bit packing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 7, 8, 9, 63, 64, 65, 130])
def test_pack_round_trip_and_padding(k):
    w = torch.where(torch.rand(5, k) < 0.5, 1.0, -1.0).numpy()
    packed = fmt.pack_signs(w)
    assert packed.dtype == np.uint8 and packed.shape == (5, 8 * ((k + 63) // 64))
    assert np.array_equal(fmt.unpack_signs(packed, k), w)
    bits = np.unpackbits(packed, axis=1, bitorder="little")
    assert not bits[:, k:].any(), "padding bits must be 0"


def test_bit_order_and_plus_one_convention():
    w = -np.ones((1, 70))
    w[0, [0, 9, 64]] = 1                          # +1 at k = 0, 9, 64
    packed = fmt.pack_signs(w)
    assert packed[0, 0] == 0b00000001 and packed[0, 1] == 0b00000010 and packed[0, 8] == 1
    words = packed.view("<u8")                    # bit k of word k // 64
    assert words[0, 0] == (1 << 0) | (1 << 9) and words[0, 1] == 1


def test_conv_k_order_matches_unfold():
    conv = BinaryConv2d(3, 4, 3, stride=2, padding=1)
    x = (torch.rand(2, 3, 7, 7) < 0.3).float()
    g = lower(nn.Sequential(conv))
    packed = fmt.pack_signs(g.tensors["0.weight"])
    w = fmt.unpack_signs(packed, 27)              # [N, K] in file order
    cols = F.unfold(x, 3, padding=1, stride=2)    # [B, K, L]
    y = torch.einsum("nk,bkl->bnl", torch.from_numpy(w), cols).reshape(2, 4, 4, 4)
    assert torch.equal(y, conv(x))


# -- BatchNorm folding -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [1, 2])
def test_batchnorm_folding_is_bit_exact(dims):
    bn = randomize_bn(nn.BatchNorm1d(33) if dims == 1 else nn.BatchNorm2d(33))
    x = torch.randn(16, 33) * 20 if dims == 1 else torch.randint(-40, 40, (4, 33, 5, 5)).float()
    a, b = fold_batchnorm(bn)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = (x.numpy().astype(np.float64) * a.reshape(shape) + b.reshape(shape)).astype(np.float32)   # one FMA
    assert np.array_equal(y, bn(x).detach().numpy())


def test_bn_folded_into_layer_and_standalone_affine():
    g = lower(randomize_bn(models.create("mlp", in_features=64, hidden=(32, 16))))
    ops = [n["op"] for n in g.nodes]
    assert ops == ["flatten", "linear", "lif", "linear", "lif", "linear"]      # BN folded twice
    assert g.node("4")["binary"] and "4.scale" in g.tensors and "4.bias" in g.tensors
    sei = lower(randomize_bn(models.create("sei_resnet_tiny", widths=(8, 16))))
    assert "affine" in {n["op"] for n in sei.nodes}                            # BN before a LIF


# -- file size vs summary ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs, shape", [
    ("mlp", dict(in_features=64, hidden=(512, 512)), (1, 8, 8)),             # the digits demo model
    ("vgg11", dict(), (3, 32, 32)),
    ("resnet18", dict(stem="cifar"), (3, 32, 32)),
    ("sei_resnet_tiny", dict(widths=(32, 64), stem="small", in_channels=3, binarizer="channel_scaled"),
     (3, 32, 32)),        # per-channel scales derived from latent weights: 32-bit in the summary and the file
])
def test_file_size_matches_summary(name, kwargs, shape, tmp_path):
    model = models.create(name, num_classes=10, **kwargs)
    info = save_packed(model, tmp_path / "m.bsnn", 4, shape)
    size = (tmp_path / "m.bsnn").stat().st_size
    s = summary(model, shape, 1, batch_size=1)
    assert info["bytes"] == size and info["summary_bits"] == s.bits == count_parameters(model).bits
    with open(tmp_path / "m.bsnn", "rb") as f:
        header = 8 + struct.unpack("<Q", f.read(8))[0]
    assert header <= 16_000
    assert abs(size - s.bits / 8) <= 0.02 * s.bits / 8 + header


def test_metadata_schema(tmp_path):
    model = randomize_bn(models.create("convnet", channels=(8, 16), method="bptt", tau=3.0, soft_reset=False))
    save_packed(model, tmp_path / "m.bsnn", 5, (1, 28, 28), class_names=list("abcdefghij"))
    desc, tensors = fmt.read(tmp_path / "m.bsnn")
    assert desc["time_steps"] == 5 and desc["input_shape"] == [1, 28, 28] and desc["class_names"][0] == "a"
    assert desc["bit_order"] == "little" and desc["word_bits"] == 64 and desc["plus_one"] == 1
    lif = [n for n in desc["nodes"] if n["op"] == "lif"]
    assert lif and all(n["tau"] == 3.0 and n["v_reset"] == 0.0 and n["decay_input"] is False
                       and n["charge"] == "spikingjelly" for n in lif)
    binary = [n for n in desc["nodes"] if n.get("binary")]
    assert binary and all(tensors[n["name"] + ".weight"].dtype == np.uint8 for n in binary)


def test_float16_real_tensors(tmp_path):
    model = randomize_bn(models.create("mlp", in_features=64, hidden=(64, 64)))
    a = save_packed(model, tmp_path / "a.bsnn", 2, (1, 8, 8))
    b = save_packed(model, tmp_path / "b.bsnn", 2, (1, 8, 8), real_dtype="float16")
    assert b["bytes"] < 0.6 * a["bytes"]
    _, tensors = fmt.read(tmp_path / "b.bsnn")
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.uint8), np.dtype(np.float16)}
    with pytest.raises(ValueError, match="real_dtype"):
        save_packed(model, tmp_path / "c.bsnn", 2, (1, 8, 8), real_dtype="int8")


# -- refusals ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: models.create("vgg11", method="bptt", cfg=[8, "M", 8], agmm={"where": "bn_out"}), "AGMM"),
    (lambda: models.create("sei_qkformer_tiny"), "cannot export"),
    (lambda: SpikingSequential(nn.Flatten(1), nn.Linear(4, 4), nn.GELU()), "GELU"),
    (lambda: SpikingSequential(nn.Conv2d(2, 4, 3, groups=2)), "groups"),
])
def test_unrepresentable_models_are_refused_in_one_line(make, match, tmp_path):
    with pytest.raises(UnsupportedModel, match=match) as e:
        save_packed(make(), tmp_path / "m.bsnn", 2, (2, 8, 8))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m.bsnn").exists()


def test_agmm_backward_mode_is_the_identity_in_eval():
    m = models.create("vgg11", method="bptt", cfg=[8, "M", 8], agmm={"where": "bn_out", "mode": "backward"})
    assert [n["op"] for n in lower(m).nodes].count("conv2d") == 2


# -- CLI ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A run folder with an (untrained) checkpoint of the digits demo recipe, written as the trainer does."""
    from bsnn.config import resolve
    from bsnn.recipes import load_recipe
    from bsnn.train import build_model
    from bsnn.train.checkpoint import atomic_save

    cfg = resolve(load_recipe("digits_tbso"), [])
    out = tmp_path_factory.mktemp("run") / "digits"
    atomic_save({"config": cfg, "model": randomize_bn(build_model(cfg)).state_dict(), "epoch": 0,
                 "data_info": {"num_classes": 10, "input_shape": [1, 8, 8], "temporal": False}}, out / "checkpoint.pt")
    return out


def test_cli_export_and_summary_file(digits_run, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "model.bsnn"
    assert main(["export", "--checkpoint", str(digits_run / "checkpoint.pt"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{out.stat().st_size:,} bytes" in text and "summary 217,128 bytes" in text   # incl. per-step BN
    assert main(["summary", "--file", str(out)]) == 0
    text = capsys.readouterr().out
    assert "linear (binary)" in text and "262,144" in text and "summary size 217,128 bytes" in text
    assert 1.0 <= out.stat().st_size / 217_128 <= 1.02


@pytest.mark.parametrize("args, message", [
    (["--format", "nir"], "reset softly"),                    # without --allow-reset-mismatch
    (["--class-names", "a,b"], "2 names"),
])
def test_cli_export_bad_input_exits_2(digits_run, tmp_path, capsys, args, message):
    if args[:2] == ["--format", "nir"]:
        pytest.importorskip("nir")
    code = main(["export", "--checkpoint", str(digits_run / "checkpoint.pt"), "--out", str(tmp_path / "m"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_cli_export_missing_checkpoint_and_summary_of_foreign_file(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "no.pt"), "--out", str(tmp_path / "m.bsnn")]) == 2
    (tmp_path / "junk.bsnn").write_bytes(b"\x00" * 100)
    assert main(["summary", "--file", str(tmp_path / "junk.bsnn")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "not a bsnn packed model" in err


# -- NIR ----------------------------------------------------------------------------------------------------

def test_nir_round_trip_and_reset_policy(tmp_path):
    nir = pytest.importorskip("nir")
    from bsnn.export.nir import export_nir

    hard = randomize_bn(models.create("convnet", channels=(4, 8), method="bptt", soft_reset=False))
    export_nir(hard, tmp_path / "m.nir", (1, 28, 28), 4)
    g = nir.read(str(tmp_path / "m.nir"))
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert {"Input", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine", "Output"} <= kinds
    binary = [n for n in g.nodes.values() if n.metadata.get("bsnn_binary")]
    assert len(binary) == 1
    b = binary[0]
    scale = np.asarray(b.metadata["bsnn_scale"], dtype=np.float32).reshape(-1, 1, 1, 1)
    assert set(np.unique(np.sign(b.weight / scale))) == {-1.0, 1.0}

    soft = models.create("mlp", in_features=64, hidden=(16, 16))          # online: soft reset
    with pytest.raises(UnsupportedModel, match="allow-reset-mismatch"):
        export_nir(soft, tmp_path / "s.nir", (1, 8, 8))
    export_nir(soft, tmp_path / "s.nir", (1, 8, 8), allow_reset_mismatch=True)
    lifs = [n for n in nir.read(str(tmp_path / "s.nir")).nodes.values() if type(n).__name__ == "LIF"]
    assert lifs and all(n.metadata["bsnn_reset"] == "soft" for n in lifs)


@pytest.mark.parametrize("name, kwargs, shape", [
    ("mlp", dict(in_features=64, hidden=(64, 32)), (1, 8, 8)),
    ("convnet", dict(channels=(4, 8, 8)), (1, 28, 28)),
    ("sei_resnet_tiny", dict(widths=(8, 16), stem="small", in_channels=3), (3, 32, 32)),   # residual sums, BN
])
def test_nirtorch_rebuilt_network_spikes_equal_bsnn(name, kwargs, shape, tmp_path):
    pytest.importorskip("nir")
    pytest.importorskip("nirtorch")
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    from bsnn.export.nir import export_nir

    model = randomize_bn(models.create(name, method="bptt", soft_reset=False, tau=2.0, **kwargs))
    export_nir(model, tmp_path / "m.nir", shape, 4)
    rebuilt = import_from_nir(str(tmp_path / "m.nir"))          # nirtorch's interpreter under SpikingJelly
    x = torch.rand(4, *shape)
    ours, theirs = {}, {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: ours.setdefault(n, []).append(o.clone()))
             for n, m in model.named_modules() if isinstance(m, neuron.LIFNode)]
    stateful = {n.split(".")[0].replace("_", "."): m for n, m in rebuilt.named_modules()
                if type(m).__name__ == "_NIRStatefulModule"}          # fx names: layers_0_lif1
    hooks += [m.register_forward_hook(lambda mod, i, o, n=n: theirs.setdefault(n, []).append(o[0].clone()))
              for n, m in stateful.items()]
    functional.reset_net(model)
    with torch.no_grad():
        ref = model(x.unsqueeze(0).expand(4, *x.shape)).sum(0)
        state, total = None, 0
        for _ in range(4):
            out, state = rebuilt(x, state)
            total = total + out
    for h in hooks:
        h.remove()
    assert set(ours) == set(theirs) and ours
    for n in ours:
        assert torch.equal(ours[n][0], torch.stack(theirs[n])), n
    torch.testing.assert_close(total, ref, rtol=1e-4, atol=1e-5)


# -- ONNX ---------------------------------------------------------------------------------------------------

def _birealnet():
    from bsnn.models.layers import LayerKit
    from bsnn.models.resnet import SpikingBiRealResNet
    return SpikingBiRealResNet((1, 1), 10, 3, "bso", LayerKit("bptt", soft_reset=False), widths=(8, 16))


# ONNX computes a folded BatchNorm as Mul then Add (two roundings where PyTorch fuses them), so a membrane
# within rounding of the threshold may flip a spike: the step matches to rounding, on small models here.
@pytest.mark.parametrize("make, shape", [
    (lambda: models.create("mlp", in_features=64, hidden=(32, 32)), (1, 8, 8)),
    (_birealnet, (3, 16, 16)),
    (lambda: models.create("sei_resnet_tiny", widths=(8, 16), head_kd=True, shortcut="block"), (3, 16, 16)),
])
def test_onnx_step_matches_runtime(make, shape, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from bsnn.export.onnx import export_onnx_step
    from bsnn.export.packed import in_memory

    model = randomize_bn(make())
    info = export_onnx_step(model, tmp_path / "m.onnx", shape, 3)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    x = torch.rand(2, *shape).numpy()
    state = {i.name: np.zeros((2, *i.shape[1:]), np.float32) for i in sess.get_inputs()[1:]}
    assert len(state) == info["states"]
    total = 0
    for _ in range(3):
        out, *vs = sess.run(None, {"x": x, **state})
        total = total + out
        state = {f"v.{i}": v for i, v in enumerate(vs)}
    ref = in_memory(lower(model), 3, shape).run(x)
    np.testing.assert_allclose(total, ref, rtol=1e-4, atol=1e-5)


def test_packed_description_is_plain_json(tmp_path):
    for bn_stats, version in (("shared", "1"), ("per_step", "2")):       # 2: scale/bias rows per step
        save_packed(models.create("mlp", in_features=64, hidden=(16,), bn_stats=bn_stats, time_steps=2),
                    tmp_path / "m.bsnn", 1, (1, 8, 8))
        raw = (tmp_path / "m.bsnn").read_bytes()
        header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
        meta = header["__metadata__"]
        assert meta["format"] == "bsnn-packed" and meta["format_version"] == version
        assert json.loads(meta["bsnn"])["output"] == "4"          # flatten, linear (+BN), lif, head


@pytest.mark.parametrize("module, writer", [("nir", "bsnn.export.nir:export_nir"),
                                            ("onnx", "bsnn.export.onnx:export_onnx_step")])
def test_missing_extra_is_one_line(module, writer, tmp_path, monkeypatch):
    import importlib

    mod, fn = writer.split(":")
    write = getattr(importlib.import_module(mod), fn)
    monkeypatch.setitem(sys.modules, module, None)            # `import nir` / `import onnx` now fails
    with pytest.raises(UnsupportedModel, match=rf"pip install 'bsnn\[{module}\]'"):
        write(models.create("mlp", in_features=64, hidden=(8,), method="bptt", soft_reset=False),
              tmp_path / "m", (1, 8, 8))
