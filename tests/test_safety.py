"""Checkpoints load without running code, bad checkpoints are one line, run files are atomic with the
umask's mode, and stale temporaries of interrupted writes are cleaned (issue 9, items 1, 2 and 5)."""
import io
import os
import pickle
import random

import numpy as np
import pytest
import torch

from bsnn.cli import main
from bsnn.nn import BinaryLinear, is_binary
from bsnn.train import checkpoint as ckpt

COMMON = ["--set", "train.progress=false", "--set", "model.hidden=[16,16]", "--set", "train.limit_batches=2"]


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 1-epoch run (its folder)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--recipe", "digits_tbso", "--set", "train.epochs=1", *COMMON, "--out", str(out)]) == 0
    return out


class Payload:
    """Unpickling this object would run ``touch MARKER`` (through os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_checkpoint(path, marker, state=None):
    """A file in torch's format whose unpickling would run a command."""
    torch.save({**(state or {"epoch": 1, "config": {}}), "model": Payload(marker)}, path)


def test_every_checkpoint_load_refuses_a_malicious_pickle_and_runs_nothing(tmp_path, capsys, trained):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    malicious_checkpoint(evil, marker)
    raw = tmp_path / "raw.pkl"                       # a plain pickle (protocol 2: GLOBAL + REDUCE)
    raw.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    resume = tmp_path / "resume"
    resume.mkdir()
    malicious_checkpoint(resume / "checkpoint.pt", marker)
    before = sorted(p.name for p in resume.iterdir())
    attempts = [
        ["eval", "--checkpoint", str(evil)],
        ["eval", "--checkpoint", str(raw)],
        ["summary", "--checkpoint", str(evil)],
        ["ensemble", "--checkpoint", str(evil), "--out", str(tmp_path / "e.json")],
        ["train", "--recipe", "digits_tbso", *COMMON, "--out", str(resume), "--resume"],
        ["train", "--recipe", "digits_tbso", *COMMON, "--set", f"train.init_from={evil}",
         "--out", str(tmp_path / "init")],
        ["train", "--recipe", "digits_tbso", *COMMON, "--set", "distill.name=soft",
         "--set", f"distill.teacher={evil}", "--out", str(tmp_path / "distill")],
    ]
    for args in attempts:
        code, _, err = run(args, capsys)
        assert code == 2 and err.startswith("bsnn: error:") and err.count("\n") == 1, (args, err)
        assert "unsafe unpickling" in err or "not a bsnn checkpoint" in err, err
        assert not marker.exists(), args
    assert sorted(p.name for p in resume.iterdir()) == before          # nothing written by --resume
    assert not (tmp_path / "init").exists() and not (tmp_path / "distill").exists()
    with pytest.raises(ckpt.CheckpointError, match="unsafe unpickling"):
        ckpt.load(evil)
    assert not marker.exists()


def test_checkpoint_of_an_older_bsnn_is_refused_with_one_line(tmp_path, capsys, trained):
    """Older checkpoints pickled numpy's RNG state (an ndarray): refused, never loaded unsafely."""
    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()
    torch.save(state, tmp_path / "old.pt")
    code, _, err = run(["eval", "--checkpoint", str(tmp_path / "old.pt")], capsys)
    assert code == 2 and "unsafe unpickling" in err and "older bsnn" in err and err.count("\n") == 1


def test_checkpoints_hold_only_tensors_and_plain_types(trained):
    state = torch.load(trained / "checkpoint.pt", weights_only=True)      # raises on anything else
    assert set(state) >= {"epoch", "model", "optimizer", "rng", "config", "history"}
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    assert isinstance(state["optimizer"]["skipped_steps"], int)


def test_rng_state_round_trip_through_a_safe_load(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    np.random.normal()                               # numpy caches a Gaussian: has_gauss=1
    ckpt.atomic_save(ckpt.rng_state(), tmp_path / "rng.pt")
    expect = (random.random(), np.random.normal(), np.random.random(), torch.rand(3))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ckpt.set_rng_state(ckpt.load(tmp_path / "rng.pt"))
    got = (random.random(), np.random.normal(), np.random.random(), torch.rand(3))
    assert got[:3] == expect[:3] and torch.equal(got[3], expect[3])


def test_binary_parameter_loads_under_weights_only():
    layer = BinaryLinear(4, 3)
    buf = io.BytesIO()
    torch.save({"w": layer.weight, "keep_vars": layer.state_dict(keep_vars=True)}, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    assert is_binary(back["w"]) and back["w"].kind == "binary" and torch.equal(back["w"], layer.weight)
    assert is_binary(back["keep_vars"]["weight"])


def corruptions(data: bytes):
    rng = np.random.default_rng(0)
    flipped = bytearray(data)
    for i in rng.integers(0, len(data), 40):
        flipped[i] ^= 0xFF
    return {"empty": b"", "truncated": data[: len(data) // 2], "tail cut": data[:-10],
            "flipped": bytes(flipped), "random": rng.bytes(len(data)), "text": b"not a checkpoint\n"}


def test_corrupted_checkpoints_are_one_line_for_eval_resume_and_init_from(tmp_path, capsys, trained):
    data = (trained / "checkpoint.pt").read_bytes()
    for name, blob in corruptions(data).items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(blob)
        before = sorted(p.name for p in folder.iterdir())
        for args in (["eval", "--checkpoint", str(folder / "checkpoint.pt")],
                     ["train", "--recipe", "digits_tbso", *COMMON, "--out", str(folder), "--resume"],
                     ["train", "--recipe", "digits_tbso", *COMMON, "--out", str(folder / "new"),
                      "--set", f"train.init_from={folder / 'checkpoint.pt'}"]):
            code, _, err = run(args, capsys)
            assert code == 2 and err.startswith("bsnn: error:") and err.count("\n") == 1, (name, args, err)
        assert sorted(p.name for p in folder.iterdir()) == before, name


@pytest.mark.parametrize("change, message", [
    (lambda s: s["model"].pop("0.weight") if "0.weight" in s["model"] else s["model"].popitem(),
     "does not fit"),
    (lambda s: s["model"].update({k: v[..., :1] for k, v in list(s["model"].items())[:1]}), "does not fit"),
    (lambda s: s.pop("config"), "not a bsnn checkpoint"),
    (lambda s: s.pop("rng"), "cannot be resumed"),
    (lambda s: s["config"]["model"].update(hidden=[32, 32]), "another model"),
])
def test_checkpoints_with_missing_keys_or_another_model_are_one_line(tmp_path, capsys, trained, change, message):
    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    change(state)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    torch.save(state, run_dir / "checkpoint.pt")
    code, _, err = run(["train", "--recipe", "digits_tbso", *COMMON, "--out", str(run_dir), "--resume"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt"]
    if message == "does not fit":
        code, _, err = run(["eval", "--checkpoint", str(run_dir / "checkpoint.pt")], capsys)
        assert code == 2 and message in err and err.count("\n") == 1


def test_init_from_a_folder_or_a_number_is_one_line(tmp_path, capsys):
    for value, message in ((str(tmp_path), "it is a folder"), ("[1, 2]", "train.init_from: expected str")):
        code, _, err = run(["train", "--recipe", "digits_tbso", *COMMON, "--set", f"train.init_from={value}",
                            "--out", str(tmp_path / "r")], capsys)
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_run_files_follow_the_umask_and_stay_atomic(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert run(["train", "--recipe", "digits_tbso", "--set", "train.epochs=1", *COMMON, "--out", str(out)],
                   capsys)[0] == 0
        for name in ("checkpoint.pt", "config.yaml", "metrics.csv"):
            assert (out / name).stat().st_mode & 0o777 == 0o644, name
        os.umask(0o077)
        ckpt.atomic_write_text("x", tmp_path / "private.txt")
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert not list(out.glob(".*.tmp"))


def test_stale_temporaries_are_removed_on_start_and_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"

    def crash(f):                                    # a write killed half-way: its temporary stays
        f.write(b"partial")
        raise SystemExit("killed")

    assert run(["train", "--recipe", "digits_tbso", "--set", "train.epochs=1", *COMMON, "--out", str(out)],
               capsys)[0] == 0
    stale = [out / ".checkpoint.pt.abc123.tmp", out / ".metrics.csv.x.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    keep = out / ".hidden_user_file"
    keep.write_text("mine")
    code, text, _ = run(["train", "--recipe", "digits_tbso", "--set", "train.epochs=2", *COMMON, "--out", str(out),
                         "--resume"], capsys)
    assert code == 0 and "interrupted write" in text
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"
    assert ckpt.load_run(out / "checkpoint.pt")["epoch"] == 2
    # a real interrupted write: the temporary is removed by the writer itself when it can
    with pytest.raises(SystemExit):
        ckpt._atomic(out / "checkpoint.pt", crash)
    assert not list(out.glob(".*.tmp")) and ckpt.load_run(out / "checkpoint.pt")["epoch"] == 2
