"""Suite-wide settings: CPU only, quiet progress bars, results written to a temporary folder."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CI", "1")  # tqdm bars stay quiet inside the suite

import pytest  # noqa: E402


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
