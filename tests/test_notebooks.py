"""Every notebook in notebooks/ executes top to bottom without error, and its figures show inline.

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
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
