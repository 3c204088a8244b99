"""Audio input: WAV decoding (PCM widths, channels), the sample rate (resampled, not misread), window
placement, and the ``audio_folder`` dataset (lists, seeded split, one-line errors through ``bsnn train``)."""
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from bsnn.cli import main
from bsnn.data import create
from bsnn.data.audio import place_window, read_wav

pytest.importorskip("torchaudio")


def tone(seconds: float, rate: int, start: float = 0.0) -> np.ndarray:
    """A word-like test signal: two tones under 4 kHz (what an 8 kHz file can hold) with a rising envelope."""
    t = start + np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t)) * np.minimum(1, t * 2)


def write_wav(path: Path, x: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> Path:
    x = np.repeat(np.asarray(x, np.float64)[:, None], channels, 1)
    if width == 1:
        raw = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 3:
        v = np.clip(np.round(x * 8388608), -8388608, 8388607).astype(np.int32).reshape(-1)
        raw = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], 1).astype(np.uint8).tobytes()
    else:
        bits = 8 * width
        v = np.clip(np.round(x * 2 ** (bits - 1)), -2 ** (bits - 1), 2 ** (bits - 1) - 1)
        raw = v.astype(f"<i{width}").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


@pytest.mark.parametrize("width, tol", [(1, 1 / 100), (2, 1e-4), (3, 1e-6), (4, 1e-6)])
@pytest.mark.parametrize("channels", [1, 2])
def test_pcm_widths_and_channels_decode_to_the_same_signal(tmp_path, width, tol, channels):
    x = tone(0.1, 16000)
    y, rate = read_wav(write_wav(tmp_path / "a.wav", x, 16000, width, channels))
    assert rate == 16000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < tol


def test_a_negative_24_bit_sample_is_sign_extended(tmp_path):
    y, _ = read_wav(write_wav(tmp_path / "a.wav", np.array([-0.5, 0.25, -1.0]), 8000, width=3))
    assert np.allclose(y, [-0.5, 0.25, -1.0], atol=1e-6)


def test_8_and_16_khz_copies_of_a_clip_give_the_same_frames(tmp_path):
    for rate in (8000, 16000):
        write_wav(tmp_path / f"r{rate}" / "word" / "a.wav", tone(1.0, rate), rate)
        write_wav(tmp_path / f"r{rate}" / "other" / "b.wav", tone(1.0, rate, 0.5), rate)
        (tmp_path / f"r{rate}" / "test.txt").write_text("other/b.wav\n")
    frames = {rate: create("audio_folder", root=str(tmp_path / f"r{rate}"), time_steps=4, test_list="test.txt")
              for rate in (8000, 16000)}
    a, b = frames[8000].train[0][0], frames[16000].train[0][0]
    assert a.shape == b.shape == (4, 1, 32, 32)
    # Misreading 8 kHz as 16 kHz (the old bug) puts the 1 s clip in 0.5 s: frames 3-4 would be padding.
    assert (a - b).abs().mean() < 0.05, (a - b).abs().mean()
    ds = frames[8000].train
    assert ds.waveform(0).shape == (16000,)                   # resampled to the model's 16 kHz


def test_window_placement_pads_short_and_cuts_long_clips():
    x = torch.arange(1, 7, dtype=torch.float32)
    assert place_window(x, 10, "start").tolist() == [1, 2, 3, 4, 5, 6, 0, 0, 0, 0]
    assert place_window(x, 10, "center").tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 0, 0]
    assert place_window(x, 4, "start").tolist() == [1, 2, 3, 4]
    assert place_window(x, 4, "center").tolist() == [2, 3, 4, 5]


def _folder(root: Path, per_class: int = 5, classes=("down", "up", "yes")) -> Path:
    for c in classes:
        for i in range(per_class):
            write_wav(root / c / f"{i}.wav", tone(0.3, 16000, i / 10), 16000)
    return root


def test_audio_folder_seeded_split_is_stratified_deterministic_and_disjoint(tmp_path):
    root = _folder(tmp_path / "d")
    a = create("audio_folder", root=str(root), time_steps=2, test_fraction=0.4, split_seed=3)
    b = create("audio_folder", root=str(root), time_steps=2, test_fraction=0.4, split_seed=3)
    c = create("audio_folder", root=str(root), time_steps=2, test_fraction=0.4, split_seed=4)
    assert a.num_classes == 3 and len(a.test) == 6 and len(a.train) == 9
    assert a.test.files == b.test.files and a.train.files == b.train.files
    assert set(a.test.files).isdisjoint(a.train.files)
    assert sorted(a.test.labels) == [0, 0, 1, 1, 2, 2]
    assert a.test.files != c.test.files                       # the seed chooses


def test_audio_folder_split_lists(tmp_path):
    root = _folder(tmp_path / "d", per_class=2)
    (root / "test.txt").write_text("up/0.wav\ndown/1.wav\n")
    b = create("audio_folder", root=str(root), time_steps=2, test_list="test.txt")
    assert [f.relative_to(root).as_posix() for f in b.test.files] == ["down/1.wav", "up/0.wav"]
    assert len(b.train) == 4
    (root / "train.txt").write_text("yes/0.wav\n")
    b = create("audio_folder", root=str(root), time_steps=2, test_list="test.txt", train_list="train.txt")
    assert len(b.train) == 1 and b.train.labels == [2]


def _train(tmp_path, *sets):
    return main(["train", "--recipe", "tbso_speech_vgg11_t4", "--out", str(tmp_path / "run"),
                 "--set", "data.name=audio_folder", "--set", "data.num_workers=0", "--set", "data.batch_size=4",
                 "--set", "train.epochs=1", "--set", "train.limit_batches=1", "--set", "train.progress=false",
                 "--set", "model.name=mlp", "--set", "model.hidden=[8]", "--set", "method.time_steps=2",
                 *[a for s in sets for a in ("--set", s)]])


@pytest.mark.parametrize("setup, sets, message", [
    (None, ["data.root=MISSING"], "is not a folder"),
    (lambda r: (r / "empty").mkdir(), [], "class folders without .wav files: empty"),
    (lambda r: (r / "t.txt").write_text("up/9.wav\n"), ["data.test_list=t.txt"], "up/9.wav (in a split list)"),
    (lambda r: (r / "up" / "0.wav").write_bytes(b"RIFF...."), ["train.limit_batches=null"], "not a readable PCM"),
    (None, ["data.test_fraction=1.5"], "test_fraction must be in (0, 1)"),
    (None, ["data.train_list=t.txt"], "train_list needs test_list"),
    (None, ["data.sample_rate=10"], "sample_rate must be in"),
    (None, ["data.align=middle"], "align must be one of"),
    (None, ["data.window=0.05"], "window must be in"),
    (lambda r: write_wav(r / "up" / "0.wav", np.zeros(0), 8000), ["train.limit_batches=null"], "holds no samples"),
    (lambda r: write_wav(r / "up" / "0.wav", tone(0.1, 16001), 16001), ["train.limit_batches=null"],
     "has no small ratio"),
])
def test_audio_folder_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys, setup, sets, message):
    root = _folder(tmp_path / "d", per_class=3)
    if setup:
        setup(root)
    sets = [s.replace("MISSING", str(tmp_path / "missing")) for s in sets]
    code = _train(tmp_path, f"data.root={root}", *sets)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    if "limit_batches" not in " ".join(sets):                 # a file's content is read when training reaches it
        assert not (tmp_path / "run").exists()


def test_audio_folder_trains_and_its_checkpoint_knows_the_classes(tmp_path, capsys):
    root = _folder(tmp_path / "d", per_class=4, classes=("a", "b", "c", "d", "e"))
    assert _train(tmp_path, f"data.root={root}") == 0
    ckpt = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    assert state["data_info"]["num_classes"] == 5
    capsys.readouterr()
    assert main(["summary", "--checkpoint", str(ckpt)]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.bsnn")]) == 0
