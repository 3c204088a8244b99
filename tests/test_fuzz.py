"""Property-based fuzzing of user input (issue 9): random ``--set`` overrides and corrupted checkpoints.

Every command either succeeds or exits 2 with exactly one ``bsnn: error:`` line on stderr and nothing
written in ``--out``. Training itself is replaced by a no-op, so each example takes milliseconds.
"""
import contextlib
import io
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsnn.cli import main
from bsnn.config import DEFAULTS
from bsnn.models.layers import kit_fields
from bsnn.train.trainer import Trainer

KNOWN_KEYS = sorted({f"{s}.{k}" for s, sec in DEFAULTS.items() if isinstance(sec, dict) for k in sec}
                    | {f"model.{k}" for k in kit_fields()} | {"model.hidden", "data.test_fraction",
                                                               "data.split_seed", "model.agmm.where"}
                    | {k for k, v in DEFAULTS.items() if not isinstance(v, dict)} | set(DEFAULTS))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.sampled_from([0, -1, 2**31, 2**63, -(2**64), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2.0, 2.0), st.text(max_size=12),
    st.sampled_from(["digits", "mnist", "tbso", "sgd", "bptt", "online", "step", "cosine", "auto", "cpu", "cuda",
                     "2024", "2024-01-01", "x" * 5000]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4),
                   st.dictionaries(st.sampled_from(["name", "where", "hidden", "lr", "x", "root"]), scalars,
                                   max_size=3))
raw_texts = st.sampled_from(["[unclosed", "{a: ", "!!python/object/apply:os.system ['true']", "!!binary aGk=",
                             "!!set {a}", "!!timestamp 2024-01-01", "&a [*a]", "1e999", "-.inf", ".nan", "",
                             "'quoted'", "0x1F", "1_000", "+5", "~"])


def render(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("\n...\n").strip()


overrides = st.lists(st.one_of(
    st.tuples(st.sampled_from(KNOWN_KEYS), values.map(render)),
    st.tuples(st.sampled_from(KNOWN_KEYS), raw_texts),
    st.tuples(st.text(min_size=0, max_size=10), values.map(render)),
).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=10), min_size=1, max_size=3)


def fake_fit(self, resume=False):
    self.history = [{"epoch": 1, "test_acc": 0.0, "train_time_s": 0.0}]
    return self.history


@contextlib.contextmanager
def quick_commands():
    """Training is a no-op and thread settings stay as they are (the fuzz may ask for 300 threads)."""
    with mock.patch.object(Trainer, "fit", fake_fit), mock.patch.object(torch, "set_num_threads"):
        yield


def run_cli(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def assert_valid_or_one_line(code, err, out: Path, args):
    if code == 0:
        assert all(line.startswith("bsnn: warning:") for line in err.splitlines()), (args, err)
        return
    assert code == 2, (args, err)
    assert err.startswith("bsnn: error:") and err.count("\n") == 1 and len(err) < 500, (args, err)
    assert not out.exists() or not any(out.iterdir()), (args, sorted(out.iterdir()))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(overrides)
def test_fuzz_train_overrides_are_valid_or_one_line_exit_2(items):
    tmp = Path(tempfile.mkdtemp())
    try:
        out = tmp / "run"
        args = ["train", "--recipe", "digits_tbso", *[f"--set={item}" for item in items],
                "--out", str(out)]
        with quick_commands():
            code, err = run_cli(args)
        assert_valid_or_one_line(code, err, out, args)
    finally:
        shutil.rmtree(tmp)


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    assert main(["train", "--recipe", "digits_tbso", "--set", "train.epochs=1", "--set", "train.progress=false",
                 "--set", "model.hidden=[8,8]", "--set", "train.limit_batches=1", "--out", str(out)]) == 0
    return (out / "checkpoint.pt").read_bytes()


corruption = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("random"), st.binary(max_size=3000)),
)


def corrupt(data: bytes, how) -> bytes:
    kind, arg = how
    if kind == "truncate":
        return data[: int(arg * len(data))]
    if kind == "random":
        return arg
    b = bytearray(data)
    for where, mask in arg:
        i = min(int(where * len(b)), len(b) - 1)
        b[i] ^= mask
    return bytes(b)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(how=corruption)
def test_fuzz_corrupted_checkpoints_through_eval_resume_and_init_from(checkpoint_bytes, how):
    tmp = Path(tempfile.mkdtemp())
    try:
        folder = tmp / "run"
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(corrupt(checkpoint_bytes, how))
        common = ["--set", "train.progress=false", "--set", "model.hidden=[8,8]", "--set", "train.limit_batches=1"]
        with quick_commands():
            code, err = run_cli(["eval", "--checkpoint", str(folder / "checkpoint.pt"),
                                 "--set", "data.test_batch_size=1024"])
            assert code == 0 or (code == 2 and err.startswith("bsnn: error:") and err.count("\n") == 1), err
            code, err = run_cli(["train", "--recipe", "digits_tbso", *common, "--out", str(folder), "--resume"])
            if code != 0:
                assert code == 2 and err.startswith("bsnn: error:") and err.count("\n") == 1, err
                assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]
            new = tmp / "new"
            code, err = run_cli(["train", "--recipe", "digits_tbso", *common, "--out", str(new),
                                 "--set", f"train.init_from={folder / 'checkpoint.pt'}"])
            assert_valid_or_one_line(code, err, new, how)
    finally:
        shutil.rmtree(tmp)
