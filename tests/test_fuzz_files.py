"""Property-based fuzz of dataset files: corrupted bytes in one file of every registered dataset
(checkpoints: test_fuzz.py). Either the input still works, or one line (exit 2 /
``DatasetError``); never another exception, a deleted or changed user file, or network access."""
import io
import shutil
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsnn.data import create, list_datasets
from bsnn.errors import UserError

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---- corruptions ---------------------------------------------------------------------------------------

corruption = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999)),
    st.tuples(st.just("flip"), st.floats(0.0, 0.999), st.integers(1, 255)),
    st.tuples(st.just("zero_run"), st.floats(0.0, 0.999), st.integers(1, 4096)),
    st.tuples(st.just("random"), st.binary(min_size=0, max_size=300)),
    st.tuples(st.just("empty")),
)


def corrupt(data: bytes, how: tuple) -> bytes:
    kind = how[0]
    if kind == "truncate":
        return data[:int(len(data) * how[1])]
    if kind == "flip" and data:
        i = int(len(data) * how[1])
        return data[:i] + bytes([data[i] ^ how[2]]) + data[i + 1:]
    if kind == "zero_run" and data:
        i = int(len(data) * how[1])
        return data[:i] + bytes(min(how[2], len(data) - i)) + data[i + how[2]:]
    if kind == "random":
        return how[1]
    return b""


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


# ---- a small valid copy of every registered dataset ------------------------------------------------------

def _wav(path: Path, seconds: float = 0.5, rate: int = 16000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.sin(np.arange(int(seconds * rate)) * 0.05) * 8000).astype("<i2").tobytes())


def _jpeg(path_or_buf, size=(32, 32), seed=0):
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path_or_buf, "JPEG")


def make_mnist(root: Path) -> dict:
    rng = np.random.default_rng(0)
    np.savez(root / "mnist.npz", x_train=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
             y_train=np.arange(8, dtype=np.uint8), x_test=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
             y_test=np.arange(4, dtype=np.uint8))
    return dict(root=str(root / "mnist.npz"))


def make_cifar10_jpeg(root: Path) -> dict:
    blobs, offsets = [], [0]
    for i in range(4):
        buf = io.BytesIO()
        _jpeg(buf, seed=i)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
        offsets.append(offsets[-1] + len(blobs[-1]))
    np.savez(root / "c.npz", jpeg=np.concatenate(blobs), offsets=np.array(offsets),
             label=np.arange(4, dtype=np.uint8), split=np.array([0, 0, 1, 1], np.uint8))
    return dict(root=str(root / "c.npz"))


def make_imagenet(root: Path) -> dict:
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            _jpeg(root / split / c / "x.JPEG", size=(40, 48))
    return dict(root=str(root))


def make_nmnist(root: Path) -> dict:
    for split in ("Train", "Test"):
        for digit in (3, 7):
            (root / split / str(digit)).mkdir(parents=True)
            ev = [(1, 2, 0, 10), (5, 6, 1, 20000), (digit, 9, 1, 150000)]
            (root / split / str(digit) / "a.bin").write_bytes(
                b"".join(bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF]) for x, y, p, t in ev))
    return dict(root=str(root), time_steps=3)


def make_speech_commands(root: Path) -> dict:
    for word in ("yes", "no"):
        (root / word).mkdir()
        for i in range(2):
            _wav(root / word / f"{i}.wav")
    (root / "testing_list.txt").write_text("yes/0.wav\nno/0.wav\n")
    (root / "validation_list.txt").write_text("")
    return dict(root=str(root), time_steps=2)


def make_audio_folder(root: Path) -> dict:
    for word in ("up", "down"):
        (root / word).mkdir()
        for i in range(3):
            _wav(root / word / f"{i}.wav", rate=8000 if i == 2 else 16000)
    return dict(root=str(root), time_steps=2)


def make_torchvision_cifar(folder: str):
    """torchvision's CIFAR layout; its MD5 check refuses anything but the published files, so every
    generated copy is 'corrupted' and must be one line."""
    def make(root: Path) -> dict:
        (root / folder).mkdir()
        for name in ("data_batch_1", "test_batch", "batches.meta", "train", "test", "meta"):
            (root / folder / name).write_bytes(b"\x80\x04 not the published file")
        return dict(root=str(root))
    return make


def make_spikingjelly(cls_path: str):
    """The original archives in download/ (SpikingJelly's layout); generated ones fail their MD5."""
    def make(root: Path) -> dict:
        import importlib

        module, cls = cls_path.rsplit(".", 1)
        (root / "download").mkdir()
        for file, _, _ in getattr(importlib.import_module(module), cls).resource_url_md5():
            (root / "download" / file).write_bytes(b"PK\x03\x04 generated archive")
        return dict(root=str(root))
    return make


MAKERS = {
    "mnist": make_mnist,
    "cifar10_jpeg": make_cifar10_jpeg,
    "imagenet": make_imagenet,
    "nmnist": make_nmnist,
    "speech_commands": make_speech_commands,
    "audio_folder": make_audio_folder,
    "cifar10": make_torchvision_cifar("cifar-10-batches-py"),
    "cifar100": make_torchvision_cifar("cifar-100-python"),
    "cifar10_dvs": make_spikingjelly("spikingjelly.datasets.cifar10_dvs.CIFAR10DVS"),
    "dvs128_gesture": make_spikingjelly("spikingjelly.datasets.dvs128_gesture.DVS128Gesture"),
    "digits": None,                      # inside the scikit-learn wheel: no user file to corrupt
    "early_cue": None,                   # generated
}


def test_every_registered_dataset_has_a_corruption_case():
    assert set(MAKERS) == set(list_datasets())


def read_all(name: str, options: dict) -> None:
    """Build the dataset and read every sample (lazy loaders decode here)."""
    bundle = create(name, **options)
    for ds in (bundle.train, bundle.test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert torch.isfinite(torch.as_tensor(x)).all() and 0 <= int(y) < bundle.num_classes


@pytest.mark.parametrize("name", [n for n, make in MAKERS.items() if make is not None])
def test_corrupted_dataset_file_is_one_line_and_nothing_is_lost(name, no_network, tmp_path):
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    options = MAKERS[name](pristine)
    files = sorted(p.relative_to(pristine) for p in pristine.rglob("*") if p.is_file())
    if name not in ("cifar10", "cifar100", "cifar10_dvs", "dvs128_gesture"):
        read_all(name, options)                          # the uncorrupted copy is valid

    @FUZZ
    @given(target=st.sampled_from(files), how=corruption)
    def check(target, how):
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            root = Path(d) / "data"
            shutil.copytree(pristine, root)
            (root / target).write_bytes(corrupt((root / target).read_bytes(), how))
            before = snapshot(root)
            opts = {k: (v.replace(str(pristine), str(root)) if k == "root" else v) for k, v in options.items()}
            try:
                read_all(name, opts)
            except UserError as e:
                assert "\n" not in str(e) and len(str(e)) <= 400
            after = snapshot(root)
            assert all(after.get(p) == b for p, b in before.items()), "a user file was deleted or changed"
    check()
