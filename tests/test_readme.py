"""The README's runnable snippets run, so that none can rot.

A fenced ```python block is runnable when the line before its fence is the HTML comment
``<!-- runnable -->`` (invisible on GitHub). Mark a block so only when it runs offline, on the
shipped models, in seconds; each runs in an empty working folder in a fresh namespace.
"""

import re
import sys
import types
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
MARKER = "<!-- runnable -->"


def runnable_blocks(text: str) -> list[tuple[str, int, str]]:
    """(the section heading above it, first code line number, code) of every marked python block."""
    blocks, heading, lines = [], "top", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip() == "```python" and i > 0 and lines[i - 1].strip() == MARKER:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            blocks.append((heading, i + 2, "\n".join(lines[i + 1 : end]) + "\n"))
            i = end
        i += 1
    return blocks


BLOCKS = runnable_blocks(README.read_text())


def test_the_instrument_snippets_are_marked():
    headings = [h for h, _, _ in BLOCKS]
    assert any(h.startswith("Models") for h in headings) and any(h.startswith("Estimate") for h in headings)
    assert README.read_text().count(MARKER) == len(BLOCKS), f"a {MARKER} line is not right above a ```python fence"


def test_marker_parsing():
    text = "# A\n<!-- runnable -->\n```python\nx = 1\n```\n```python\nnot run\n```\n"
    text += "## B\n<!-- runnable -->\n```python\ny\n```\n"
    assert runnable_blocks(text) == [("A", 4, "x = 1\n"), ("B", 12, "y\n")]


@pytest.mark.parametrize("heading, line, code", BLOCKS, ids=[f"{h.split()[0]}-line{n}" for h, n, _ in BLOCKS])
def test_snippet_runs(heading, line, code, tmp_path, monkeypatch, one_thread, request):
    from probity import models

    if models.SMOLLM2 in code:  # the session's SmolLM2 (the shared fixture), not a second 20-second load
        shared, load = request.getfixturevalue("smollm2"), models.load
        monkeypatch.setattr(
            models, "load", lambda name, *a, **kw: shared if name == models.SMOLLM2 else load(name, *a, **kw)
        )
    monkeypatch.chdir(tmp_path)
    name = f"readme_line{line}"
    module = types.ModuleType(name)  # a real module, so that dataclasses defined in the snippet resolve
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(code, f"{README}:{line}", "exec"), module.__dict__)  # noqa: S102 - the README's own code


def test_no_unmarked_block_uses_a_name_it_never_imports():
    """The failure the Models snippet had (``torch.zeros_like`` without ``import torch``), in every
    python block, marked or not: a module used as ``name.attr`` must be imported in that block."""
    for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S):
        for module in ("torch", "np", "report", "models"):
            used = re.search(rf"(?<![\w.]){module}\.\w", block)
            imported = re.search(rf"import .*\b{module}\b|import {module}\b", block)
            assert not used or imported, f"a README block uses {module}. without importing it:\n{block}"
