"""Configuration: merging, overrides, type coercion, validation."""
import pytest

from bsnn.data import create as create_data
from bsnn.train import build_model
from bsnn.config import DEFAULTS, apply_overrides, parse_value, resolve
from bsnn.errors import ConfigError
from bsnn.recipes import list_recipes, load_recipe


def test_parse_value_reads_scientific_notation_and_lists():
    assert parse_value("1e-6") == 1e-6            # YAML 1.1 alone would give the string "1e-6"
    assert parse_value("[64, 64]") == [64, 64]
    assert parse_value("true") is True
    assert parse_value("ottt") == "ottt"


def test_resolve_merges_recipe_then_overrides_and_coerces():
    cfg = resolve({"optim": {"threshold": "5e-7"}}, ["optim.lr=1", "method.time_steps=6"])
    assert cfg["optim"]["threshold"] == 5e-7 and isinstance(cfg["optim"]["lr"], float)
    assert cfg["method"]["time_steps"] == 6
    assert cfg["train"] == DEFAULTS["train"]


@pytest.mark.parametrize("over, msg", [
    (["method.time_steps=2.5"], "expected int"),
    (["train.amp=yes please"], "expected bool"),
    (["model.hidden=[a, b]"], r"model.hidden\[0\]: expected int"),
    (["model.hidden=[]"], "model mlp: hidden needs at least one width"),
    (["schedule.flip=sometimes"], "not one of"),
    (["optim.beta1=1.0"], "beta1"),
])
def test_bad_values_raise(over, msg):
    with pytest.raises(ConfigError, match=msg):
        build_model(resolve({}, over), create_data("digits"))


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown top-level key"):
        resolve({"optimiser": {}})
    with pytest.raises(ConfigError, match="unknown section"):
        apply_overrides(DEFAULTS, ["optimiser.lr=1"])


def test_every_shipped_recipe_resolves():
    for name in list_recipes():
        recipe = load_recipe(name)
        needs_teacher = recipe.get("distill", {}).get("name") in ("soft", "hard")
        if needs_teacher:          # distilling recipes name no teacher: the user supplies a local file
            with pytest.raises(ConfigError, match="needs a local teacher"):
                resolve(recipe)
        cfg = resolve(recipe, ["distill.teacher=teacher.pt"] if needs_teacher else [])
        assert cfg["name"] == name and cfg["description"]
        assert cfg["target"] and "value" in cfg["target"]
