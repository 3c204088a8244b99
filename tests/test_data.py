"""Datasets: digits split, MNIST from .npz and torchvision folders, clear errors."""
import gzip
import struct

import numpy as np
import pytest
import torch

from bsnn.data import create, make_loader
from bsnn.errors import DatasetError


def test_digits_seeded_split():
    a, b = create("digits"), create("digits")
    assert len(a.train) == 1437 and len(a.test) == 360
    assert torch.equal(a.train.x, b.train.x)
    assert a.train.x.shape[1:] == (1, 8, 8) and 0 <= a.train.x.min() and a.train.x.max() <= 1
    assert not torch.equal(create("digits", split_seed=1).train.x, a.train.x)


def fake_mnist(n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8),
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8))


def test_mnist_from_npz_file_and_folder(tmp_path):
    x_tr, y_tr, x_te, y_te = fake_mnist()
    np.savez(tmp_path / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    for root in (tmp_path / "mnist.npz", tmp_path):
        b = create("mnist", root=str(root))
        assert len(b.train) == 20 and len(b.test) == 10 and b.input_shape == (1, 28, 28)
        assert torch.equal(b.train.y, torch.tensor(y_tr).long())


def _idx(path, array, magic):
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for d in array.shape:
            f.write(struct.pack(">I", d))
        f.write(array.tobytes())


def test_mnist_from_torchvision_folder(tmp_path):
    x_tr, y_tr, x_te, y_te = fake_mnist()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _idx(raw / "train-images-idx3-ubyte", x_tr, 2051)
    _idx(raw / "train-labels-idx1-ubyte", y_tr, 2049)
    _idx(raw / "t10k-images-idx3-ubyte", x_te, 2051)
    _idx(raw / "t10k-labels-idx1-ubyte", y_te, 2049)
    b = create("mnist", root=str(tmp_path))
    assert len(b.train) == 20 and torch.equal(b.test.y, torch.tensor(y_te).long())


@pytest.mark.parametrize("name, setup, message", [
    ("m.npz", lambda p: None, "does not exist"),
    ("folder", lambda p: p.mkdir(), "no dataset at"),
    ("m.npz", lambda p: p.write_bytes(b"garbage"), "is not a valid .npz"),
])
def test_mnist_errors_are_one_line(tmp_path, name, setup, message):
    root = tmp_path / name
    setup(root)
    with pytest.raises(DatasetError, match=message) as e:
        create("mnist", root=str(root))
    assert "\n" not in str(e.value) and str(root) in str(e.value)


def test_loader_order_depends_only_on_seed_and_epoch():
    ds = create("digits").train
    first = lambda s, e: next(iter(make_loader(ds, 16, True, seed=s, epoch=e)))[1]  # noqa: E731
    assert torch.equal(first(0, 3), first(0, 3))
    assert not torch.equal(first(0, 3), first(0, 4))


def test_cifar10_jpeg_pack_and_cutout(tmp_path):
    import io

    from PIL import Image

    from bsnn.data.transforms import Cutout

    rng = np.random.default_rng(0)
    blobs, offsets = [], [0]
    for _ in range(6):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=75)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        offsets.append(offsets[-1] + len(blobs[-1]))
    pack = tmp_path / "c.npz"
    np.savez(pack, jpeg=np.concatenate(blobs), offsets=np.array(offsets), label=np.arange(6, dtype=np.uint8) % 3,
             split=np.array([0, 0, 0, 0, 1, 1], np.uint8))
    b = create("cifar10", root=str(pack))
    assert len(b.train) == 4 and len(b.test) == 2
    x, y = b.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert len(create("cifar10_jpeg", root=str(pack), subset=2).train) == 2
    holes = Cutout(16)(torch.ones(3, 32, 32))
    assert 0 < (holes == 0).sum() <= 3 * 16 * 16 and (holes[0] == 0).sum() * 3 == (holes == 0).sum()


def _write_nmnist_file(path, events):
    """The original N-MNIST format: 40 bits per event (x, y, p|t[22:16], t[15:8], t[7:0])."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    path.write_bytes(bytes(out))


def test_nmnist_from_generated_binary_files(tmp_path):
    for split in ("Train", "Test"):
        for digit in (3, 7):
            d = tmp_path / split / str(digit)
            d.mkdir(parents=True)
            _write_nmnist_file(d / "a.bin", [(1, 2, 0, 10), (5, 6, 1, 20000), (digit, 9, 1, 150000),
                                             (7, 7, 0, 290000)])
    b = create("nmnist", root=str(tmp_path), time_steps=3)
    x, y = b.train[[0, 1]]
    assert x.shape == (2, 3, 2, 34, 34) and sorted(y.tolist()) == [3, 7]
    assert x[0, 0].sum() == 2 and x[0, 1].sum() == 1            # events binned by time, frame t at step t
    assert x[0, 0, 0, 2, 1] == 1 and x[0, 0, 1, 6, 5] == 1       # [polarity, y, x]
    _write_nmnist_file(tmp_path / "Test" / "3" / "gap.bin", [(1, 1, 1, 0), (2, 2, 1, 290000)])
    x, y = create("nmnist", root=str(tmp_path), time_steps=3).test[1]     # Test/3/gap.bin
    assert x.sum(dim=(1, 2, 3)).tolist() == [1, 0, 1]         # an empty time bin is fine
    with pytest.raises(DatasetError, match="archive"):
        create("nmnist", root=str(tmp_path / "n.tar.gz"))


def test_speech_commands_from_generated_wavs(tmp_path):
    import wave

    for word in ("yes", "no"):
        (tmp_path / word).mkdir()
        for i in range(3):
            with wave.open(str(tmp_path / word / f"{i}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes((np.sin(np.arange(12000) * (0.05 + i / 100)) * 8000).astype("<i2").tobytes())
    (tmp_path / "testing_list.txt").write_text("yes/0.wav\nno/0.wav\n")
    (tmp_path / "validation_list.txt").write_text("yes/1.wav\n")
    b = create("speech_commands", root=str(tmp_path), time_steps=4)
    assert len(b.train) == 3 and len(b.test) == 2 and b.num_classes == 2 and b.temporal
    x, y = b.train[0]
    assert x.shape == (4, 1, 32, 32) and -1.0 <= x.min() and x.max() <= 1.0


def test_imagenet_folder(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (300, 260), (10, 200, 30)).save(tmp_path / split / c / "x.JPEG")
    b = create("imagenet", root=str(tmp_path))
    assert b.num_classes == 2 and b.train[0][0].shape == (3, 224, 224) and b.test[0][0].shape == (3, 224, 224)


@pytest.mark.parametrize("name, message", [
    ("cifar10", "CIFAR-10 needs a data root"), ("cifar100", "CIFAR-100 needs a data root"),
    ("imagenet", "ImageNet needs"), ("cifar10_dvs", "CIFAR10-DVS needs"), ("dvs128_gesture", "DVS128 Gesture needs"),
    ("speech_commands", "Speech Commands needs"), ("nmnist", "N-MNIST needs"), ("cifar10_jpeg", "JPEG pack needs"),
])
def test_every_dataset_without_root_says_what_it_needs(name, message, tmp_path):
    with pytest.raises(DatasetError, match=message):
        create(name)
    with pytest.raises(DatasetError) as e:
        create(name, root=str(tmp_path / "missing"))
    assert "\n" not in str(e.value) and "missing" in str(e.value)


# ---- content errors are one line when the dataset is built; nothing deleted or downloaded ----

@pytest.mark.parametrize("name, module, cls", [("cifar10_dvs", "cifar10_dvs", "CIFAR10DVS"),
                                               ("dvs128_gesture", "dvs128_gesture", "DVS128Gesture")])
def test_dvs_loaders_delete_and_download_nothing(tmp_path, no_network, name, module, cls):
    import importlib

    resources = getattr(importlib.import_module(f"spikingjelly.datasets.{module}"), cls).resource_url_md5()
    download = tmp_path / "download"
    download.mkdir()
    for file, _, _ in resources:                     # every file present, all corrupted
        (download / file).write_bytes(b"PK\x03\x04 truncated archive")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(DatasetError, match="corrupted") as e:
        create(name, root=str(tmp_path))
    assert "\n" not in str(e.value) and "downloads nothing" in str(e.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download"]
    (tmp_path / "events_np.building").touch()        # an interrupted conversion: said, not cleaned
    with pytest.raises(DatasetError, match="did not finish"):
        create(name, root=str(tmp_path))


def mnist_npz(path, **change):
    x_tr, y_tr, x_te, y_te = fake_mnist()
    arrays = dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    arrays.update(change)
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("change, message", [
    (dict(y_train=np.full(20, 10, np.uint8)), r"train labels must be in \[0, 10\), found 10..10"),
    (dict(y_test=-np.ones(10, np.int64)), "test labels must be in"),
    (dict(y_train=np.zeros((20, 2), np.uint8)), "one integer per sample"),
    (dict(y_train=np.zeros(20, np.float32)), "one integer per sample"),
    (dict(x_test=np.zeros((10, 20, 20), np.uint8)), r"test samples have shape \(1, 20, 20\), expected \(1, 28, 28\)"),
    (dict(x_test=np.zeros((0, 28, 28), np.uint8), y_test=np.zeros(0, np.uint8)), "the test split is empty"),
])
def test_dataset_content_errors_are_one_line_at_build(tmp_path, change, message):
    with pytest.raises(DatasetError, match=message) as e:
        create("mnist", root=mnist_npz(tmp_path / "m.npz", **change))
    assert "\n" not in str(e.value)


def jpeg_pack(path, offsets_change=None, blob_change=None):
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    blobs, offsets = [], [0]
    for _ in range(4):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        offsets.append(offsets[-1] + len(blobs[-1]))
    blob, offsets = np.concatenate(blobs), np.array(offsets)
    if offsets_change:
        offsets = offsets_change(offsets)
    if blob_change:
        blob = blob_change(blob)
    np.savez(path, jpeg=blob, offsets=offsets, label=np.arange(4, dtype=np.uint8), split=np.array([0, 0, 1, 1], np.uint8))
    return str(path)


@pytest.mark.parametrize("offsets_change, blob_change, message", [
    (lambda o: o[::-1].copy(), None, "inconsistent arrays"),
    (lambda o: o + 10**9, None, "inconsistent arrays"),
    (lambda o: o[:-1], None, "inconsistent arrays"),
    (None, lambda b: np.zeros_like(b), "image 0 cannot be decoded"),
])
def test_corrupted_jpeg_pack_is_one_line(tmp_path, offsets_change, blob_change, message):
    with pytest.raises(DatasetError, match=message) as e:
        create("cifar10_jpeg", root=jpeg_pack(tmp_path / "c.npz", offsets_change, blob_change))
    assert "\n" not in str(e.value)


def test_garbage_image_and_audio_files_are_one_line(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "img" / split / "a").mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "img" / split / "a" / "ok.JPEG")
    (tmp_path / "img" / "train" / "a" / "0.JPEG").write_bytes(b"garbage")       # sorted first
    with pytest.raises(DatasetError, match="cannot decode the image .*0.JPEG"):
        create("imagenet", root=str(tmp_path / "img"))
    speech = tmp_path / "speech"
    (speech / "yes").mkdir(parents=True)
    (speech / "yes" / "0.wav").write_bytes(b"RIFF garbage")
    (speech / "yes" / "1.wav").write_bytes(b"RIFF garbage")
    (speech / "testing_list.txt").write_text("yes/1.wav\n")
    (speech / "validation_list.txt").write_text("")
    with pytest.raises(DatasetError, match="not a readable PCM WAV"):
        create("speech_commands", root=str(speech))


def test_nmnist_folder_that_is_not_a_digit_is_one_line(tmp_path):
    for split in ("Train", "Test"):
        (tmp_path / split / "cat").mkdir(parents=True)
        _write_nmnist_file(tmp_path / split / "cat" / "a.bin", [(1, 2, 0, 10), (5, 6, 1, 20000)])
    with pytest.raises(DatasetError, match="not a digit folder"):
        create("nmnist", root=str(tmp_path), time_steps=2)
