"""Every notebook in notebooks/ executes top to bottom without error, and its figures show inline.

The notebooks are executed at reduced sizes: ``SHRINK`` lists, per notebook, source
substitutions (old text, new text, the exact number of times the old text occurs) applied to
the code cells before execution, so that every cell's code path runs in seconds while the
notebook on disk keeps the sizes (and the stored outputs) a researcher reads. A substitution
that no longer matches its count fails the test, so an edited notebook cannot silently run at
full size.

The kernel starts without ``MPLBACKEND`` (the suite sets it to Agg for itself), as it would in
Jupyter, so a library import that switched the backend off inline plotting would leave the
figure cells without an image and fail here.
"""

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.single_dtype

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


#: notebook name -> [(old, new, occurrences)] applied to the code cells before execution.
SHRINK: dict[str, list[tuple[str, str, int]]] = {
    "01_hessian_spectrum.ipynb": [
        ("num_steps=300, batch_size=128", "num_steps=60, batch_size=128", 1),
        ("a[:500], train)", "a[:200], train)", 1),
        ("batch_size=500)", "batch_size=200)", 3),
        ("num_matvecs=60", "num_matvecs=20", 1),
        ("num_probes=4, num_steps=60)", "num_probes=2, num_steps=20)", 2),
        ("num_moments=150, num_probes=4", "num_moments=40, num_probes=2", 1),
    ],
    "04_training_dynamics.ipynb": [
        ("num_steps=800, probes=probes", "num_steps=200, probes=probes", 1),
        ("num_steps=1000, probes=", "num_steps=100, probes=", 1),
        ("learning_rate=eta, num_steps=400,", "learning_rate=eta, num_steps=200,", 2),
        ("gd_loss = np.asarray(res.trace[\"loss\"][:400])",
         "gd_loss = np.asarray(res.trace[\"loss\"][:200])", 1),
        ("S[:400]", "S[:200]", 1),
    ],
    "05_gradient_statistics.ipynb": [
        ("def run(dataset, steps=300)", "def run(dataset, steps=60)", 1),
        ("np.arange(0, 300, 10)", "np.arange(0, 60, 10)", 1),
        ("num_steps=300, batch_size=64, value_and_grad=vg",
         "num_steps=60, batch_size=64, value_and_grad=vg", 1),
    ],
}


def shrink(nb, name: str) -> None:
    """Apply ``SHRINK[name]`` to the code cells of ``nb`` in place (each count must match)."""
    for old, new, count in SHRINK.get(name, []):
        cells = [c for c in nb.cells if c.cell_type == "code"]
        found = sum(c.source.count(old) for c in cells)
        assert found == count, f"{name}: {old!r} occurs {found} times, SHRINK expects {count}"
        for c in cells:
            c.source = c.source.replace(old, new)


def test_shrink_names_existing_notebooks():
    assert set(SHRINK) <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    shrink(nb, path.name)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        client.execute()
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    drawing = [c for c in nb.cells if c.cell_type == "code" and FIGURE.search(c.source)]
    for cell in drawing:
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"a figure cell of {path.name} shows no image:\n{cell.source[:300]}"


FIGURE = re.compile(r"plotting\.figure\(|plt\.subplots\(|plt\.figure\(")
