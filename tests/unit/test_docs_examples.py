"""Every Python example in the README and docs/ at least compiles, and the self-contained
quickstart snippets (no server needed) run as shown."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8")), 1):
            yield pytest.param(match.group(1), id=f"{page.name}#{number}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_example_compiles(code):
    # Async examples use top-level await, as in `python -m asyncio`.
    compile(code, "<docs>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("number", [2, 3, 4])
def test_offline_quickstart_examples_run(number, capsys):
    page = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    code = list(BLOCK.finditer(page))[number - 1].group(1)
    exec(compile(code, f"quickstart#{number}", "exec"), {})
