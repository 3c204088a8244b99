"""Every shipped recipe trains two batches on generated data of its input shape; two-phase T change."""
import pytest
import torch

from bsnn.config import resolve
from bsnn.data import DataBundle, TensorPairs, dataset_info
from bsnn.nn import binary_parameters
from bsnn.optim import TBSO
from bsnn.recipes import list_recipes, load_recipe
from bsnn.train import build_trainer
from conftest import assert_binary


def generated(cfg, n=4):
    info = dataset_info(cfg["data"]["name"])
    T = cfg["method"]["time_steps"]
    shape = (n, T, *info.input_shape) if info.temporal else (n, *info.input_shape)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    y = torch.randint(0, info.num_classes, (n,), generator=g)
    return DataBundle(TensorPairs(x, y), TensorPairs(x, y), info.num_classes, info.input_shape, info.temporal)


def scripted_teacher(path, cfg):
    """A small local TorchScript teacher for recipes that distil from a user-supplied file."""
    info = dataset_info(cfg["data"]["name"])
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(info.input_shape[0], info.num_classes))
    torch.jit.save(torch.jit.script(net), str(path))
    return f"distill.teacher={path}"


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_trains_two_batches(name, tmp_path):
    recipe = load_recipe(name)
    extra = []
    if recipe.get("distill", {}).get("name") in ("soft", "hard"):
        extra = [scripted_teacher(tmp_path / "teacher.pt", resolve(recipe, ["distill.name=none"])),
                 "distill.teacher_format=torchscript"]
    cfg = resolve(recipe, ["data.batch_size=2", "data.test_batch_size=2", "data.num_workers=0",
                           "train.epochs=1", "train.limit_batches=2", "train.progress=false",
                           "train.device=cpu", "train.amp=false", *extra])
    trainer = build_trainer(cfg, out_dir=tmp_path, log=lambda *a: None, bundle=generated(cfg))
    history = trainer.fit()
    assert len(history) == 1 and history[0]["train_loss"] > 0
    assert (tmp_path / "checkpoint.pt").is_file()
    for p in binary_parameters(trainer.model):
        assert_binary(p)


def test_two_phase_training_changes_T_and_carries_tbso_state(tmp_path):
    common = ["train.progress=false", "model.hidden=[32,32]", "train.epochs=1", "train.limit_batches=3"]
    phase1 = build_trainer(resolve(load_recipe("digits_tbso"), [*common, "method.time_steps=1"]),
                           out_dir=tmp_path / "p1", log=lambda *a: None)
    phase1.fit()
    v1 = {i: phase1.optimizer.state[p]["v"].clone() for i, p in enumerate(binary_parameters(phase1.model))}
    assert all(v.numel() == 1 for v in v1.values())
    cfg2 = resolve(load_recipe("digits_tbso"), [*common, "method.time_steps=4", "optim.threshold=1e-11",
                                                 "optim.beta1=0.99999999",
                                                 f"train.init_from={tmp_path / 'p1' / 'checkpoint.pt'}"])
    phase2 = build_trainer(cfg2, out_dir=tmp_path / "p2", log=lambda *a: None)
    for a, b in zip(phase1.model.parameters(), phase2.model.parameters()):
        assert torch.equal(a, b)                                   # weights carried over
    opt = phase2.optimizer
    assert isinstance(opt, TBSO) and opt.time_steps == 4
    for i, p in enumerate(binary_parameters(phase2.model)):
        v = opt.state[p]["v"]
        assert v.numel() == 4 and v[0] == v1[i][0]                 # v resized, phase-1 value kept
    g = next(g for g in opt.param_groups if g["binary"])
    assert g["threshold"] == 1e-11 and g["beta1"] == 0.99999999     # this phase's hyperparameters
    phase2.fit()                                                   # T=4 steps run: no index error
    assert phase2.history[-1]["epoch"] == 1
