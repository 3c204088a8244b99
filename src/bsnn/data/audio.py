"""Google Speech Commands from a local root, as T log-mel frames of 1x32x32 (one per time step).

The 1 s clip (zero-padded) is cut into T equal segments; each becomes a log-mel spectrogram (32 mel
bands) resized to 32x32, scaled to [0, 1] per sample and normalised with mean 0.5, std 0.5 (BSO spec
§5.1). The WAV files are read with Python's ``wave`` module: torchaudio's dataset class needs an audio
I/O backend (torchcodec) that bsnn does not depend on; the mel filterbank is torchaudio's.
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import DatasetError, require
from .registry import DataBundle, register_dataset

__all__ = ["speech_commands", "SpeechFrames"]

HOWTO = ("the extracted speech_commands_v0.02 (or v0.01) folder: <word>/*.wav plus validation_list.txt "
         "and testing_list.txt (http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz)")
SAMPLE_RATE = 16000


def read_wav(path: Path) -> torch.Tensor:
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise DatasetError(f"Speech Commands: {path} is not mono 16-bit PCM")
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    except (wave.Error, EOFError, OSError, ValueError) as e:
        raise DatasetError(f"Speech Commands: {path} is not a readable WAV file ({type(e).__name__})") from None
    return torch.from_numpy(data)


class SpeechFrames(Dataset):
    def __init__(self, files: list[Path], labels: list[int], time_steps: int, size: int = 32):
        torchaudio = require("torchaudio", "audio", "audio datasets")

        self.files, self.labels, self.T, self.size = files, labels, time_steps, size
        self.mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=480, hop_length=160, n_mels=size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        x = read_wav(self.files[i])[:SAMPLE_RATE]
        x = F.pad(x, (0, SAMPLE_RATE - len(x)))
        segs = x.view(self.T, -1) if SAMPLE_RATE % self.T == 0 else x[: SAMPLE_RATE // self.T * self.T].view(self.T, -1)
        spec = torch.log(self.mel(segs) + 1e-6).unsqueeze(1)                 # [T, 1, mels, frames]
        spec = F.interpolate(spec, size=(self.size, self.size), mode="bilinear", align_corners=False)
        lo, hi = spec.amin(), spec.amax()
        spec = (spec - lo) / (hi - lo + 1e-6)
        return (spec - 0.5) / 0.5, self.labels[i]


@register_dataset("speech_commands", num_classes=35, input_shape=(1, 32, 32), temporal=True)
def speech_commands(root: str | None = None, time_steps: int = 4) -> DataBundle:
    if not root:
        raise DatasetError(f"Speech Commands needs data.root=PATH: {HOWTO}")
    path = Path(root).expanduser()
    if not (path / "testing_list.txt").is_file() or not (path / "validation_list.txt").is_file():
        raise DatasetError(f"Speech Commands: {path} has no testing_list.txt/validation_list.txt; expected {HOWTO}")
    words = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("_"))
    index = {w: i for i, w in enumerate(words)}
    test = set((path / "testing_list.txt").read_text().split())
    val = set((path / "validation_list.txt").read_text().split())
    train_f, train_y, test_f, test_y = [], [], [], []
    for w in words:
        for f in sorted((path / w).glob("*.wav")):
            rel = f"{w}/{f.name}"
            if rel in test:
                test_f.append(f)
                test_y.append(index[w])
            elif rel not in val:
                train_f.append(f)
                train_y.append(index[w])
    if not train_f or not test_f:
        raise DatasetError(f"Speech Commands: no .wav files found under {path}; expected {HOWTO}")
    return DataBundle(SpeechFrames(train_f, train_y, time_steps), SpeechFrames(test_f, test_y, time_steps),
                      num_classes=len(words), input_shape=(1, 32, 32), temporal=True)
