"""The README's Python snippets run, in order, in one namespace (the tour must not rot)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.single_dtype

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no python snippets"
    namespace: dict = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md[python block {i}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"README python block {i} failed: {exc!r}\n{block}") from exc
