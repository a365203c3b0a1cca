"""Figure scripts: the plugin contract, and no JAX. (Each figure is drawn, twice and byte for
byte the same, from the smoke results in tests/test_experiments.py.)"""

import inspect
import subprocess
import sys

import pytest

import experiments
import paper_figures
from landscape import experiment as ex

pytestmark = pytest.mark.single_dtype

FIGURES = paper_figures.names()


def test_figure_script_imports_no_jax():
    code = ("import sys, paper_figures\n"
            "for name in paper_figures.names():\n"
            "    paper_figures.get(name)\n"
            "    assert 'jax' not in sys.modules, f'{name} imports jax'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", FIGURES)
def test_figure_satisfies_the_protocol(name):
    fig = paper_figures.get(name)
    assert isinstance(fig, ex.Figure)
    assert fig.EXPERIMENTS and set(fig.EXPERIMENTS) <= set(experiments.names())
    assert list(inspect.signature(fig.draw).parameters) == ["results", "out_dir"]


def test_every_experiment_has_a_figure():
    read = {e for name in FIGURES for e in paper_figures.get(name).EXPERIMENTS}
    assert read == set(experiments.names())


def test_unknown_figure_is_a_usage_error():
    with pytest.raises(ex.UsageError, match="unknown figure 'nope'"):
        paper_figures.get("nope")
