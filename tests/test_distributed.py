"""torchrun with 2 CPU processes (gloo): identical binary weights on every rank, resume from checkpoint."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(*args, cwd):
    torchrun_bin = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run([torchrun_bin, "--standalone", "--nproc_per_node=2", str(WORKER), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def evaluate_checkpoint(path) -> float:
    """What ``bsnn eval`` reports for a checkpoint: its test accuracy in one process."""
    from bsnn.train import build_trainer
    from bsnn.train.checkpoint import load_run

    state = load_run(path)
    trainer = build_trainer(state["config"], log=lambda *a: None)
    trainer.net.load_state_dict(state["model"])
    return trainer.evaluate()["test_acc"]


@pytest.mark.parametrize("mode", ["realtime", "accumulated"])
def test_two_process_training_keeps_binary_weights_identical_and_resumes(tmp_path, mode):
    run = tmp_path / "run"
    torchrun(run, 1, "fresh", mode, cwd=tmp_path)
    result = (run / "ddp_result.txt").read_text().split()
    assert result[:4] == ["identical=True", "start_epoch=0", "epochs=1", "world=2"]
    assert float(result[4]) == evaluate_checkpoint(run / "checkpoint.pt")   # BN buffers synchronised
    assert (run / "checkpoint.pt").is_file() and (run / "metrics.csv").read_text().count("\n") == 2
    torchrun(run, 2, "resume", mode, cwd=tmp_path)
    result = (run / "ddp_result.txt").read_text().split()
    assert result[:4] == ["identical=True", "start_epoch=1", "epochs=2", "world=2"]
    assert float(result[4]) == evaluate_checkpoint(run / "checkpoint.pt")
    assert (run / "metrics.csv").read_text().count("\n") == 3
