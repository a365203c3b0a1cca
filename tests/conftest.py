"""Suite-wide settings: CPU only, quiet progress bars, results written to a temporary folder."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CI", "1")  # tqdm bars stay quiet inside the suite

import pytest  # noqa: E402

_X64 = os.environ.get("JAX_ENABLE_X64", "0").lower() in ("1", "true")


#: Modules whose tests take the longest (a README tour of ~90 s, notebooks, a 4-device
#: subprocess, experiment smoke runs) run first, each kept in one piece, so that pytest-xdist's
#: two workers end together instead of one waiting for the other's last long test.
SLOW_FIRST = ("test_readme.py", "test_notebooks.py", "test_curvature_sharding.py",
              "test_experiments.py", "test_batchnorm.py")


def _slow_rank(item) -> int:
    name = item.path.name
    return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)


def pytest_collection_modifyitems(config, items):
    """Run the slow modules first (``SLOW_FIRST``; the order within a module is kept); in the
    float64 pass of ``make test`` leave out tests marked ``single_dtype``, and in the float32
    pass those marked ``float64_only`` (a check whose float64 tolerance is the one that can
    tell a bug from rounding, and whose float32 run would repeat the same code path).

    Those tests exercise plumbing whose behaviour does not depend on the float dtype (notebook
    and README execution, figure drawing, the runner, experiment smoke runs without dtype-specific
    assertions; the attention experiments run in float64 whatever the flag). They run once, in
    the float32 pass; every library test with a dtype-dependent tolerance runs in both.
    ``LANDSCAPE_BOTH_DTYPES=1`` runs every test in both passes.
    """
    items[:] = sorted(items, key=_slow_rank)  # stable: modules stay contiguous
    if os.environ.get("LANDSCAPE_BOTH_DTYPES") == "1":
        return
    skip = "single_dtype" if _X64 else "float64_only"
    keep = [it for it in items if it.get_closest_marker(skip) is None]
    dropped = [it for it in items if it.get_closest_marker(skip) is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True, scope="session")
def _results_in_tmp(tmp_path_factory):
    """Experiments run by tests never write into the checkout's results/ folder.

    Under pytest-xdist the workers of one run share a results folder, so a smoke result stored
    by one test (an experiment's own test) is reused by another (its figure's test) instead of
    being computed again. Results are written atomically, so concurrent writers are safe.
    """
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "results"
    path.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("LANDSCAPE_RESULTS")
    os.environ["LANDSCAPE_RESULTS"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LANDSCAPE_RESULTS", None)
    else:
        os.environ["LANDSCAPE_RESULTS"] = old


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's in-memory compiled programs after each test module.

    Every loaded XLA:CPU executable keeps memory mappings: three test modules leave about 28,000
    of them in one process, and an xdist worker that runs half of the suite reached the kernel's
    limit (``vm.max_map_count``, 65,530) and crashed inside JAX's compilation-cache write.
    Clearing after each module keeps a worker near a thousand; programs used again are read back
    from the persistent compilation cache that ``make test`` sets.
    """
    yield
    import sys

    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
