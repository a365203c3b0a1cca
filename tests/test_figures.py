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


@pytest.mark.parametrize("name", experiments.names())
def test_the_record_behind_each_committed_figure_is_the_current_default_run(name):
    # `make figures` copies the JSON record of every default run it draws from; a record whose
    # config no longer hashes like the default config is stale (rerun `make figures`).
    record = ex.load(name, path=paper_figures.RECORDS_DIR / f"{name}.json", arrays=False)
    module = experiments.get(name)
    assert record.path.exists() and record.name == name
    assert ex.config_hash(ex.make_config(module)) == json_hash(record)
    assert record.config == ex.config_dict(module.Config())
    assert "finished_at" in record.provenance and record.metrics


def json_hash(record):
    import json

    return json.loads(record.path.read_text())["config_hash"]
