"""The command line: bad input exits 2 with one line and writes nothing; train/eval/resume work."""
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
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(args + (["--out", "r"] if args[0] == "train" else []), capsys)
    assert code == 2
    assert message in err and err.startswith("bsnn: error:") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_malformed_npz_and_bad_yaml(tmp_path, capsys):
    bad = tmp_path / "mnist.npz"
    np.savez(bad, x_train=np.zeros((3, 5, 5), np.uint8))
    code, _, err = run(["train", "--recipe", "digits_tbso", "--set", "data.name=mnist",
                        "--set", f"data.root={bad}", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "not a valid MNIST .npz" in err
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
