"""Recipes: YAML files shipped in this package, one per experiment, loaded by name (or from a path)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from ..errors import ConfigError, did_you_mean, short

__all__ = ["list_recipes", "load_recipe"]


def _files() -> dict[str, object]:
    root = resources.files(__name__)
    return {f.name[:-5]: f for f in root.iterdir() if f.name.endswith(".yaml")}


def list_recipes() -> list[str]:
    """The names of the shipped recipes (their ``.yaml`` files without the suffix), sorted."""
    return sorted(_files())


def load_recipe(name: str) -> dict:
    """Load a shipped recipe by name, or a YAML file by path."""
    files = _files()
    if name in files:
        text = files[name].read_text()
    elif name.endswith((".yaml", ".yml")) and Path(name).is_file():
        text = Path(name).read_text()
    else:
        raise ConfigError(f"unknown recipe {short(name)}{did_you_mean(name, files)}; `bsnn recipes` lists them "
                          "(or pass a .yaml path)")
    from ..config import yaml_load

    try:
        recipe = yaml_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {name!r} is not valid YAML ({getattr(e, 'problem', None) or 'parse error'})") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe {name!r} must be a mapping")
    recipe.setdefault("name", Path(name).stem)
    return recipe
