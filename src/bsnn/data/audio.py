"""Audio datasets as T log-mel frames of 1x32x32 (one per time step): Google Speech Commands, and any
folder of WAV files (``audio_folder``: ``<class>/*.wav``).

* **Reading**: Python's ``wave`` module — PCM WAV of 8 (unsigned), 16, 24 or 32 bits, any number of
  channels (averaged to mono), any sample rate; no audio I/O backend needed. Other encodings (float,
  compressed) are refused with one line.
* **Rate**: a clip whose rate differs from ``sample_rate`` is resampled with
  ``torchaudio.functional.resample`` (band-limited sinc interpolation).
* **Window**: ``window`` seconds (1 s: Speech Commands' clip length). ``align="start"`` keeps a longer
  clip's first ``window`` and zero-pads a shorter one at the end; ``align="center"`` keeps the middle and
  pads both sides equally.
* **Features**: the window is cut into T equal segments; each becomes a log-mel spectrogram (32 bands,
  30 ms FFT, 10 ms hop) resized to 32x32; a sample is scaled to [0, 1] and normalised with mean 0.5, std
  0.5 — the BSO paper's Speech Commands setup (Liang et al., ICML 2025).
"""
from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import DatasetError, one_line, require
from .registry import DataBundle, data_root, register_dataset

__all__ = ["speech_commands", "audio_folder", "AudioFrames", "read_wav", "place_window"]

SPEECH_HOWTO = ("the extracted speech_commands_v0.02 (or v0.01) folder: <word>/*.wav plus validation_list.txt "
                "and testing_list.txt (http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz)")
FOLDER_HOWTO = ("a folder with one subfolder of .wav files per class (<class>/*.wav), and optionally "
                "train/test list files of paths relative to it")
ALIGNS = ("start", "center")
MAX_RESAMPLE_RATIO = 2000     # 44.1 kHz -> 16 kHz is 441/160; 16001 Hz (a corrupted header) would be 16001/16000
_PCM = {1: ("u1", 128.0, 128.0), 2: ("<i2", 0.0, 32768.0), 4: ("<i4", 0.0, 2147483648.0)}


def read_wav(path: Path, dataset: str = "audio") -> tuple[np.ndarray, int]:
    """``(mono float32 samples in [-1, 1], sample rate)`` of a PCM WAV file, or a one-line ``DatasetError``."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError, ValueError) as e:
        raise DatasetError(one_line(f"{dataset}: {path} is not a readable PCM WAV file ({type(e).__name__}: {e})",
                                    300)) from None
    if width not in (1, 2, 3, 4) or channels < 1 or rate < 1:
        raise DatasetError(f"{dataset}: {path} has {width}-byte samples, {channels} channels at {rate} Hz; "
                           "expected 8/16/24/32-bit PCM")
    usable = len(raw) - len(raw) % (width * channels)
    buf = np.frombuffer(raw[:usable], np.uint8)
    if width == 3:                                   # 24-bit little-endian: sign-extend into int32
        b = buf.reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) ^ 0x800000) - 0x800000
        x = x.astype(np.float32) / 8388608.0
    else:
        dtype, offset, scale = _PCM[width]
        x = (buf.view(dtype).astype(np.float32) - offset) / scale
    return x.reshape(-1, channels).mean(1), rate


def place_window(x: torch.Tensor, length: int, align: str) -> torch.Tensor:
    """``length`` samples of ``x``: its first/middle ones, or ``x`` zero-padded at the end/both sides."""
    n = len(x)
    if n >= length:
        start = 0 if align == "start" else (n - length) // 2
        return x[start:start + length]
    left = 0 if align == "start" else (length - n) // 2
    return F.pad(x, (left, length - n - left))


class AudioFrames(Dataset):
    """WAV files -> ``[T, 1, size, size]`` log-mel frames (see the module docstring) and labels."""

    def __init__(self, files: list[Path], labels: list[int], time_steps: int, sample_rate: int = 16000,
                 window: float = 1.0, align: str = "start", size: int = 32, dataset: str = "audio"):
        self.torchaudio = require("torchaudio", "audio", "audio datasets")
        self.files, self.labels, self.T, self.size, self.dataset = files, labels, time_steps, size, dataset
        self.rate, self.align = sample_rate, align
        self.length = int(round(window * sample_rate)) // time_steps * time_steps
        self.mel = self.torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=int(round(0.03 * sample_rate)), hop_length=int(round(0.01 * sample_rate)),
            n_mels=size)

    def __len__(self) -> int:
        return len(self.files)

    def waveform(self, i: int) -> torch.Tensor:
        """Clip ``i`` at ``sample_rate``, windowed: ``[window · sample_rate]`` samples."""
        x, rate = read_wav(self.files[i], self.dataset)
        if len(x) == 0:
            raise DatasetError(f"{self.dataset}: {self.files[i]} holds no samples")
        x = torch.from_numpy(x)
        if rate != self.rate:
            if max(rate, self.rate) // math.gcd(rate, self.rate) > MAX_RESAMPLE_RATIO:
                raise DatasetError(f"{self.dataset}: {self.files[i]} is at {rate} Hz, which has no small ratio to "
                                   f"{self.rate} Hz (its resampling filter would be huge); convert the file")
            x = self.torchaudio.functional.resample(x, rate, self.rate)
        return place_window(x, self.length, self.align)

    def __getitem__(self, i):
        segs = self.waveform(i).view(self.T, -1)
        spec = torch.log(self.mel(segs) + 1e-6).unsqueeze(1)                 # [T, 1, mels, frames]
        spec = F.interpolate(spec, size=(self.size, self.size), mode="bilinear", align_corners=False)
        lo, hi = spec.amin(), spec.amax()
        spec = (spec - lo) / (hi - lo + 1e-6)
        return (spec - 0.5) / 0.5, self.labels[i]


def _check_options(time_steps: int, sample_rate: int, window: float, align: str) -> None:
    if time_steps < 1:
        raise ValueError(f"time_steps must be >= 1, got {time_steps}")
    if not 1000 <= sample_rate <= 384000:
        raise ValueError(f"sample_rate must be in [1000, 384000] Hz, got {sample_rate}")
    if not 0 < window <= 60 or window / time_steps < 0.03:
        raise ValueError(f"window must be in (0, 60] seconds and hold T segments of at least 30 ms, got {window}")
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {', '.join(ALIGNS)}, got {align!r}")


def _read_list(path: Path, dataset: str) -> set[str]:
    try:
        return set(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{dataset}: cannot read the list {path} ({type(e).__name__}); expected a text "
                           "file of relative .wav paths, one per line") from None


def _folder(root: str | None, dataset: str, howto: str) -> Path:
    path = data_root(root, dataset, howto)
    if not path.is_dir():
        raise DatasetError(f"{dataset}: {path} is not a folder; expected {howto}")
    return path


@register_dataset("speech_commands", num_classes=35, input_shape=(1, 32, 32), temporal=True)
def speech_commands(root: str | None = None, time_steps: int = 4, sample_rate: int = 16000, window: float = 1.0,
                    align: str = "start") -> DataBundle:
    """Google Speech Commands: words = subfolders, the official testing list is the test split, the
    validation list is left out, the rest trains."""
    _check_options(time_steps, sample_rate, window, align)
    path = _folder(root, "Speech Commands", SPEECH_HOWTO)
    if not (path / "testing_list.txt").is_file() or not (path / "validation_list.txt").is_file():
        raise DatasetError(f"Speech Commands: {path} has no testing_list.txt/validation_list.txt; "
                           f"expected {SPEECH_HOWTO}")
    words = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("_"))
    test = _read_list(path / "testing_list.txt", "Speech Commands")
    val = _read_list(path / "validation_list.txt", "Speech Commands")
    train, test_split = [], []
    for y, w in enumerate(words):
        for f in sorted((path / w).glob("*.wav")):
            rel = f"{w}/{f.name}"
            if rel in test:
                test_split.append((f, y))
            elif rel not in val:
                train.append((f, y))
    if not train or not test_split:
        raise DatasetError(f"Speech Commands: no .wav files found under {path}; expected {SPEECH_HOWTO}")
    return _bundle(train, test_split, len(words), time_steps, sample_rate, window, align, "Speech Commands")


@register_dataset("audio_folder", num_classes=None, input_shape=(1, 32, 32), temporal=True)
def audio_folder(root: str | None = None, time_steps: int = 4, sample_rate: int = 16000, window: float = 1.0,
                 align: str = "start", train_list: str | None = None, test_list: str | None = None,
                 test_fraction: float = 0.2, split_seed: int = 0) -> DataBundle:
    """Your own audio: ``root/<class>/*.wav`` (classes sorted by name). The split: ``test_list`` (and
    optionally ``train_list``; default: every file not in the test list), paths relative to ``root``
    one per line, or a seeded stratified split holding out ``test_fraction`` of each class."""
    _check_options(time_steps, sample_rate, window, align)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    path = _folder(root, "audio_folder", FOLDER_HOWTO)
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    files = {c: sorted((path / c).glob("*.wav")) for c in classes}
    empty = [c for c in classes if not files[c]]
    if not classes or empty:
        what = f"class folders without .wav files: {', '.join(empty[:5])}" if empty else "no class folders"
        raise DatasetError(f"audio_folder: {path} has {what}; expected {FOLDER_HOWTO}")
    every = {f"{c}/{f.name}": (f, y) for y, c in enumerate(classes) for f in files[c]}
    if test_list:
        lists = [_read_list(path / name, "audio_folder") if name else None for name in (test_list, train_list)]
        for listed in (x for x in lists if x):
            missing = sorted(listed - set(every))
            if missing:
                raise DatasetError(f"audio_folder: {missing[0]} (in a split list) is not a .wav file under {path}")
        test_names, train_names = lists[0], lists[1] or set(every) - lists[0]
        test = [every[n] for n in sorted(test_names)]
        train = [every[n] for n in sorted(train_names)]
    elif train_list:
        raise ValueError("train_list needs test_list (or neither: a seeded split)")
    else:
        rng = np.random.default_rng(split_seed)
        train, test = [], []
        for y, c in enumerate(classes):
            order = rng.permutation(len(files[c]))
            n_test = max(1, int(round(test_fraction * len(order)))) if len(order) > 1 else 0
            test += [(files[c][i], y) for i in sorted(order[:n_test])]
            train += [(files[c][i], y) for i in sorted(order[n_test:])]
    if not train or not test:
        raise DatasetError(f"audio_folder: {path} gives an empty {'train' if not train else 'test'} split; "
                           "add files or lists")
    return _bundle(train, test, len(classes), time_steps, sample_rate, window, align, "audio_folder")


def _bundle(train, test, classes: int, time_steps, sample_rate, window, align, dataset: str) -> DataBundle:
    make = lambda pairs: AudioFrames([f for f, _ in pairs], [y for _, y in pairs], time_steps,  # noqa: E731
                                     sample_rate, window, align, dataset=dataset)
    return DataBundle(make(train), make(test), num_classes=classes, input_shape=(1, 32, 32), temporal=True)
