"""Build the API reference from the docstrings with pdoc: ``make docs`` -> ``site/api/index.html``.

Fails (exit 1) on any pdoc warning but one: pdoc cannot trace the private ``_is_param`` flag that
``torch.nn.Parameter.__new__`` sets on instances, which it meets through ``bsnn.nn.BinaryParameter``.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pdoc

KNOWN = "BinaryParameter._is_param is taken from"


def build(out: Path) -> list[str]:
    """Write the HTML reference of ``bsnn`` into ``out``; return the warnings that are not known."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.render.configure(docformat="restructuredtext", footer_text="bsnn")
        pdoc.pdoc("bsnn", "!bsnn.recipes", output_directory=out)
    return [str(w.message) for w in caught if KNOWN not in str(w.message)]


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site/api")
    problems = build(out)
    for p in problems:
        print(f"docs: warning: {p}", file=sys.stderr)
    print(f"wrote {out / 'index.html'}" if not problems else f"{len(problems)} warnings")
    sys.exit(1 if problems else 0)
