"""Every third-party module bsnn imports is a declared dependency (an undeclared one breaks fresh installs)."""
import ast
import subprocess
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_top_level_modules() -> set[str]:
    mods = set()
    for f in (ROOT / "src" / "bsnn").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require"
                  and isinstance(node.args[0], ast.Constant)):                 # errors.require("pkg", ...)
                mods.add(node.args[0].value.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"bsnn"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # optional extras count: their modules are imported lazily, where the feature that needs them runs
    optional = [d for extra, deps in project.get("optional-dependencies", {}).items() if extra != "dev" for d in deps]
    declared = {_norm(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in project["dependencies"] + optional}
    dists = md.packages_distributions()
    missing = {m: dists.get(m, [m]) for m in _imported_top_level_modules()
               if not any(_norm(d) in declared for d in dists.get(m, [m]))}
    assert not missing, f"imported but not in [project].dependencies: {missing}"


OPTIONAL_MODULES = ["sklearn", "matplotlib", "torchaudio", "numba", "nir", "nirtorch", "onnx", "onnxruntime",
                    "safetensors", "threadpoolctl", "hypothesis"]


def test_core_works_without_optional_packages(tmp_path):
    """With every optional package blocked, bsnn's core imports, and a feature that needs a missing extra
    (the demo's digits) says which one in one line (exit 2)."""
    code = f"""
import sys
for m in {OPTIONAL_MODULES!r}:
    sys.modules[m] = None
import bsnn, bsnn.data, bsnn.models, bsnn.train, bsnn.measure, bsnn.nn, bsnn.optim
from bsnn.cli import main
sys.exit(main(["train", "--recipe", "digits_tbso", "--out", {str(tmp_path / "run")!r}]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("bsnn: error: the digits dataset needs the optional package 'sklearn': "
                                   "pip install 'bsnn[digits]'")
