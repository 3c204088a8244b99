"""The command line: bad input exits 2 with one line and writes nothing; train/eval/resume work."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bsnn.cli import main


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args, message", [
    (["train", "--recipe", "nope"], "unknown recipe"),
    (["train", "--recipe", "digits_tbso", "--set", "optim.bogus=1"], "optim.bogus: unknown key"),
    (["train", "--recipe", "digits_tbso", "--set", "bogus.key=1"], "unknown section"),
    (["train", "--recipe", "digits_tbso", "--set", "optim.lr=fast"], "optim.lr: expected float"),
    (["train", "--recipe", "digits_tbso", "--set", "optim.name=rmsprop"], "not one of"),
    (["train", "--recipe", "digits_tbso", "--set", "method.time_steps=0"], "time_steps must be >= 1"),
    (["train", "--recipe", "digits_tbso", "--set", "model.widht=3"], "model.widht: unknown option"),
    (["train", "--recipe", "digits_tbso", "--set", "model.num_classes=3"], "set by bsnn"),
    (["train", "--recipe", "digits_tbso", "--set", "noequals"], "key=value"),
    (["train", "--recipe", "digits_tbso", "--set", "method.name=bptt"], "sgd or adam"),
    (["train", "--recipe", "digits_tbso", "--set", "data.name=mnist"], "MNIST needs a data root"),
    (["train", "--recipe", "digits_tbso", "--set", "data.name=mnist", "--set", "data.root=/no/such"],
     "/no/such does not exist"),
    (["eval", "--checkpoint", "/no/such.pt"], "no checkpoint"),
    # issue 9: nonsense that used to pass silently or end in a traceback
    *[(["train", "--recipe", "digits_tbso", "--set", kv], msg) for kv, msg in [
        ("optim.lr=inf", "optim.lr: must be a finite number"), ("optim.momentum=nan", "finite"),
        ("optim.weight_decay=.nan", "finite"), ("optim.threshold=inf", "finite"), ("optim.eps=nan", "finite"),
        ("optim.lr=1e999", "finite"), ("optim.lr=" + "9" * 400, "too large for a float"),
        ("model.tau=nan", "finite"), ("model.tau=1.0", "tau must be > 1"),
        ("model.v_threshold=0", "v_threshold must be > 0"), ("model.surrogate_alpha=-1", "surrogate_alpha must be > 0"),
        ("schedule.lr_gamma=0", "lr_gamma must be > 0"), ("schedule.flip_factor=-0.1", "flip_factor must be > 0"),
        ("schedule.lr_step=0", "lr_step must be >= 1"), ("schedule.lr_epochs=-3", "lr_epochs must be >= 1"),
        ("schedule.lr_epochs=soon", "lr_epochs: expected int"), ("train.threads=0", "threads must be >= 1"),
        ("train.threads=-1", "threads must be >= 1"), ("train.limit_batches=0", "limit_batches must be >= 1"),
        ("train.seed=-1", "seed must be in"), ("train.epochs=true", "train.epochs: expected int"),
        ("optim.lr=false", "optim.lr: expected float"), ("model.hidden=[0]", "hidden widths must be >= 1"),
        ("model.hidden=[-1, 4]", "hidden widths must be >= 1"), ("data.test_fraction=1.5", "test_fraction must be in"),
        ("data.test_fraction=0", "test_fraction must be in"), ("optim.betas=[0.9, 0.99, 0.1]", "optim.betas must be two"),
        ("optim.momentum=-0.5", "optim tbso: Invalid momentum"), ("optim.eps=-1e-8", "eps must be >= 0"),
        ("optim.weight_decay=-1", "Invalid weight_decay"), ("train.max_nonfinite=-1", "max_nonfinite must be >= 0"),
        ("target=2024-01-01", None), ("description=!!binary aGk=", "bytes values are not allowed"),
        ("model.hidden=&a [*a]", "aliases"), ("optim.lr=" + "x" * 100000, "optim.lr: expected float"),
    ] if msg],
    (["train", "--recipe", "digits_tbso", "--set", "optim.name=adam", "--set", "method.name=bptt",
      "--set", "optim.betas=[0.9]"], "optim.betas must be two"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(args + (["--out", "r"] if args[0] == "train" else []), capsys)
    assert code == 2
    assert (message or "") in err and err.startswith("bsnn: error:") and err.count("\n") == 1, err
    assert len(err) < 500                                     # huge values are cut short
    assert list(tmp_path.iterdir()) == []


def test_run_folder_and_option_errors_come_before_any_work(tmp_path, capsys, monkeypatch):
    import bsnn.train.build as build

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(build, "build_data", lambda cfg: pytest.fail("data built before --out was checked"))
    (tmp_path / "file").write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cases = [(["--out", ""], "--out must not be empty"), (["--resume"], "--resume needs --out"),
             (["--out", "file"], "it is a file"), (["--out", "file/sub"], "not a writable folder"),
             (["--out", "x" * 300], "longer than")]
    if os.geteuid() != 0:                                   # root writes anywhere
        cases.append((["--out", "locked/run"], "not a writable folder"))
    for extra, message in cases:
        code, _, err = run(["train", "--recipe", "digits_tbso", *extra], capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (extra, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "locked"] and not any(locked.iterdir())


def test_string_paths_stay_strings_and_a_whole_section_keeps_its_defaults(tmp_path):
    from bsnn.config import DEFAULTS, resolve
    from bsnn.recipes import load_recipe

    cfg = resolve(load_recipe("digits_tbso"), ["data.root=2024", "name=2024-01-01", "train.init_from=1e3"])
    assert cfg["data"]["root"] == "2024" and cfg["name"] == "2024-01-01" and cfg["train"]["init_from"] == "1e3"
    cfg = resolve(load_recipe("digits_tbso"), ["data={name: digits, batch_size: 8}"])
    assert cfg["data"] == {**DEFAULTS["data"], "batch_size": 8}
    cfg = resolve(load_recipe("digits_tbso"), ["train={epochs: 2}"])
    assert cfg["train"] == {**DEFAULTS["train"], "epochs": 2}


def test_sync_bn_without_torchrun_is_a_warning_line(tmp_path, capsys):
    code, _, err = run(["train", "--recipe", "digits_tbso", "--set", "train.sync_bn=true", "--set", "model.bn_stats=shared",
                        "--set", "train.epochs=1",
                        "--set", "train.progress=false", "--set", "model.hidden=[8,8]", "--set", "train.limit_batches=1",
                        "--out", str(tmp_path / "r")], capsys)
    assert code == 0 and err == "bsnn: warning: train.sync_bn=true has no effect in one process (it applies under torchrun)\n"


def test_malformed_npz_and_bad_yaml(tmp_path, capsys):
    bad = tmp_path / "mnist.npz"
    np.savez(bad, x_train=np.zeros((3, 5, 5), np.uint8))
    code, _, err = run(["train", "--recipe", "digits_tbso", "--set", "data.name=mnist",
                        "--set", f"data.root={bad}", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "is not a valid .npz" in err
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("data: [unclosed\n")
    code, _, err = run(["train", "--recipe", str(recipe)], capsys)
    assert code == 2 and "not valid YAML" in err


def test_train_eval_resume_and_refuse_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--set", "train.progress=false", "--set", "model.hidden=[32,32]", "--out", str(out)]
    code, text, _ = run(["train", "--recipe", "digits_tbso", "--set", "train.epochs=1", *common], capsys)
    assert code == 0 and "test accuracy" in text and "binary (1 bit)" in text and "bits" in text
    assert (out / "checkpoint.pt").is_file() and (out / "config.yaml").is_file()
    assert json.loads((out / "layers.json").read_text())["4"] == "4 BinaryLinear 32→32"   # legends of `bsnn plot`
    code, _, err = run(["train", "--recipe", "digits_tbso", "--set", "train.epochs=1", *common], capsys)
    assert code == 2 and "--resume" in err                   # never overwrite a run
    code, text, _ = run(["train", "--recipe", "digits_tbso", "--set", "train.epochs=2", "--resume", *common],
                        capsys)
    assert code == 0 and "resumed" in text and "after 2 epochs" in text
    code, text, _ = run(["eval", "--checkpoint", str(out / "checkpoint.pt")], capsys)
    assert code == 0 and "(epoch 2): test accuracy" in text
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, _, err = run(["eval", "--checkpoint", str(tmp_path / "junk.pt")], capsys)
    assert code == 2 and "not a bsnn checkpoint" in err


def test_recipes_listing_and_module_entry_point(capsys):
    code, text, _ = run(["recipes"], capsys)
    assert code == 0 and "digits_tbso" in text and "mnist_tbso" in text
    proc = subprocess.run([sys.executable, "-m", "bsnn", "train"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--recipe" in proc.stderr


def test_summary_plot_and_bench_commands(tmp_path, capsys):
    code, text, _ = run(["summary", "--model", "convnet", "--input-shape", "1", "8", "8", "-T", "2",
                         "--set", "channels=[4,8]"], capsys)
    assert code == 0 and "binary BinaryConv2d" in text and "compression" in text and "AC" in text
    code, text, _ = run(["summary", "--recipe", "digits_tbso"], capsys)
    assert code == 0 and "262,144 binary" in text and "random test samples of digits" in text
    code, _, err = run(["summary", "--model", "resnet9000", "--input-shape", "3"], capsys)
    assert code == 2 and "unknown model" in err

    csv = tmp_path / "tp.csv"
    code, text, _ = run(["bench", "throughput", "-T", "1", "2", "--batch-size", "4", "--channels", "4", "8",
                         "--repeats", "1", "--csv", str(csv)], capsys)
    assert code == 0 and "vs BPTT" in text and csv.is_file() and csv.with_suffix(".png").is_file()

    mem = tmp_path / "mem.csv"
    code, text, _ = run(["bench", "memory", "-T", "1", "4", "--setups", "tbso", "bptt", "--batch-size", "4",
                         "--channels", "4", "8", "--csv", str(mem)], capsys)
    assert code == 0
    import csv as csvmod
    rows = list(csvmod.DictReader(open(mem)))
    saved = {(r["method"], r["T"]): float(r["saved MiB"]) for r in rows}
    assert saved[("online T-BSO", "1")] == saved[("online T-BSO", "4")]
    assert saved[("BPTT latent-binary", "4")] > 3 * saved[("BPTT latent-binary", "1")]
    packed = {r["method"]: float(r["persistent MiB, ±1 packed"]) for r in rows}
    assert packed["online T-BSO"] < packed["BPTT latent-binary"]

    out = tmp_path / "run"
    run(["train", "--recipe", "digits_tbso", "--set", "train.epochs=1", "--set", "model.hidden=[16,16]",
         "--set", "train.progress=false", "--out", str(out)], capsys)
    code, text, _ = run(["plot", str(out)], capsys)
    assert code == 0 and text.count("wrote") == 5
    code, _, err = run(["plot", str(tmp_path / "nothing.txt")], capsys)
    assert code == 2


@pytest.mark.parametrize("args, hint", [
    (["train", "--recipe", "digits_tbs"], "did you mean 'digits_tbso'?"),
    (["train", "--recipe", "digits_tbso", "--set", "optim.treshold=1e-6"], "did you mean 'threshold'?"),
    (["train", "--recipe", "digits_tbso", "--set", "model.hiden=[8]"], "did you mean 'hidden'?"),
    (["train", "--recipe", "digits_tbso", "--set", "trian.epochs=1"], "did you mean 'train'?"),
    (["summary", "--model", "vgg1", "--input-shape", "3", "32", "32"], "did you mean 'vgg11'?"),
])
def test_unknown_names_suggest_the_closest(args, hint, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert hint in err and len(err.splitlines()) == 1


def test_version_listings_and_print_config(capsys, tmp_path):
    from bsnn import __version__
    from bsnn.data.registry import list_datasets
    from bsnn.models import list_models

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"bsnn {__version__}"
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == list_models() and "hidden" in out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == list_datasets() and "1x8x8" in out
    os.chdir(tmp_path)
    assert main(["train", "--recipe", "digits_tbso", "--set", "train.epochs=3", "--print-config"]) == 0
    import yaml
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["name"] == "mlp" and not list(tmp_path.iterdir())


def test_batch_job_progress_best_checkpoint_and_run_log(tmp_path, capsys):
    """Without a terminal: progress lines every train.log_every batches; best.pt holds the best epoch;
    train.log keeps what was printed."""
    out = tmp_path / "run"
    code, text, _ = run(["train", "--recipe", "digits_tbso", "--set", "train.epochs=3", "--set",
                         "model.hidden=[32,32]", "--set", "train.log_every=20", "--out", str(out)], capsys)
    assert code == 0
    lines = [line for line in text.splitlines() if line.startswith("epoch 2: batch")]
    assert [line.split(",")[0] for line in lines] == ["epoch 2: batch 20/45", "epoch 2: batch 40/45"]
    assert "samples/s" in lines[0] and "ETA" in lines[0]
    import torch
    history = torch.load(out / "checkpoint.pt", weights_only=True)["history"]
    best = max(range(3), key=lambda e: (history[e]["test_acc"], e))
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == best + 1
    log = (out / "train.log").read_text()
    assert log.startswith(f"run digits_tbso -> {out}") and "done: test accuracy" in log and lines[0] in log


def test_summary_of_a_model_counts_per_step_batchnorm_for_its_time_steps(capsys):
    rows = {}
    for T in (2, 8):
        code, text, _ = run(["summary", "--model", "mlp", "--input-shape", "64", "--set", "hidden=[16]", "-T", str(T)],
                            capsys)
        assert code == 0
        rows[T] = next(line for line in text.splitlines() if "StepBatchNorm" in line)
    assert " 64 " in rows[2] and " 256 " in rows[8]            # 2·16 values per step: 2 and 8 steps
