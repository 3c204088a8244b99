"""Documentation: the tutorials run as written (every block not marked as needing a GPU or data), and
the API reference builds from the docstrings without warnings."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
BLOCK = re.compile(r"(<!-- not run by the tests:[^>]*-->\s*)?```(bash|python)\n(.*?)```", re.S)


def blocks(page: Path) -> list[tuple[str, str]]:
    """The (language, code) blocks of a page that the tests run, in order."""
    return [(lang, code) for skip, lang, code in BLOCK.findall(page.read_text()) if not skip]


def test_every_tutorial_has_runnable_blocks():
    assert len(TUTORIALS) == 3
    for page in TUTORIALS:
        assert blocks(page), page.name


@pytest.mark.parametrize("page", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(page, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "2", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT / "src")}
    python = []          # a python block runs after the page's earlier ones (their names carry over)
    for i, (lang, code) in enumerate(blocks(page)):
        if lang == "python":
            python.append(code)
            cmd = [sys.executable, "-c", "\n".join(python)]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", code]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{page.name} block {i}:\n{code}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_api_reference_builds_without_warnings(tmp_path):
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from build import build
    finally:
        sys.path.pop(0)
    assert build(tmp_path) == []
    html = (tmp_path / "bsnn" / "optim.html").read_text()
    assert "BSO" in html and "TBSO" in html


DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
DOTTED = re.compile(r"\bbsnn(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"from (bsnn(?:\.\w+)*) import (?:\(([^)]*)\)|([\w ,]+))")


def documented_names() -> set[str]:
    names = set()
    for page in DOC_PAGES:
        text = page.read_text()
        names.update(DOTTED.findall(text))
        for module, wrapped, items in FROM_IMPORT.findall(text):
            items = wrapped or items
            names.update(f"{module}.{item.strip()}" for item in items.replace("\n", ",").split(",") if item.strip())
    return names


def resolve_name(dotted: str):
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_name_the_docs_mention_exists():
    names = documented_names()
    assert "bsnn.nn.AGMM" in names and len(names) > 20
    missing = []
    for name in sorted(names):
        try:
            resolve_name(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"the docs mention names that do not exist: {missing}"
