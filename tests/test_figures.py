"""Figure scripts: never import JAX, and draw byte-identical files from the same results."""

import subprocess
import sys
from pathlib import Path

import pytest

from landscape import experiment

pytestmark = pytest.mark.single_dtype

REPO = Path(__file__).resolve().parent.parent
FIGURES = experiment.list_figures()


@pytest.mark.parametrize("name", FIGURES)
def test_figure_script_does_not_import_jax(name):
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import paper_figures.{name} as m; "
            "assert 'jax' not in sys.modules, 'imports jax'; assert m.EXPERIMENTS")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", FIGURES)
def test_smoke_figure_is_drawn_deterministically(name, tmp_path):
    first = experiment.draw_figures([name], smoke=True, out_dir=tmp_path / "a", quiet=True)
    second = experiment.draw_figures([name], smoke=True, out_dir=tmp_path / "b", quiet=True)
    assert first and {p.suffix for p in first} == {".png", ".pdf"}
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between two draws"
