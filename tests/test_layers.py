"""The library's modules depend on each other one way (README, "Architecture").

Every ``landscape.X`` import inside ``landscape/`` is read from the source (absolute imports and
``from landscape import X``) and must go from a higher layer to a strictly lower one. A new
module has to be placed in ``LAYER`` before it can be imported, which keeps the order written
down in one place.
"""

from __future__ import annotations

import ast
import collections
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent

# 0: argument checks; 1: pytree/operator/file primitives, models and data; 2: batching and the
# loss registry; 3: the curvature operators, the spectral routines and the training loop; 4: what
# builds on them, including the flax adapter (it reads the training loop's tracing flag); 5: the
# optimizers (AdAdaGrad reads the gradient statistics of dynamics); 6: the runner and the
# plotting at the edge.
LAYER = {
    "validate": 0, "typing": 0, "reprs": 0,
    "_version": 1, "__version__": 1, "tree": 1, "linop": 1, "checkpoint": 1, "models": 1,
    "conv_rewrite": 1,
    "data": 1,
    "batching": 2, "losses": 2,
    "curvature": 3, "spectral": 3, "train": 3,
    "connectivity": 4, "attention": 4, "blockwise": 4, "parallel": 4, "nnx": 4, "dynamics": 4,
    "optim": 5,
    "experiment": 6, "plotting": 6,
}


def _imports(source: str) -> set[str]:
    """The ``landscape`` components a module imports (``landscape.X...`` -> ``X``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
            if node.module == "landscape":
                names += [f"landscape.{a.name}" for a in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("landscape.")}
    return found


def _graph() -> dict[str, set[str]]:
    graph = collections.defaultdict(set)
    for path in (REPO / "landscape").rglob("*.py"):
        parts = path.relative_to(REPO / "landscape").with_suffix("").parts
        if parts == ("__init__",):
            continue
        graph[parts[0]] |= _imports(path.read_text()) - {parts[0]}
    return graph


def test_the_checker_reads_both_import_forms():
    src = "from landscape import batching, tree as T\nimport landscape.linop\nfrom . import x\n"
    assert _imports(src) == {"batching", "tree", "linop"}


def test_every_component_has_a_layer_and_imports_only_lower_layers():
    graph = _graph()
    components = {p.stem if p.is_file() else p.name
                  for p in (REPO / "landscape").iterdir()
                  if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert components - set(LAYER) == set(), "place new modules in LAYER"
    upward = {(a, b) for a, deps in graph.items() for b in deps if LAYER[b] >= LAYER[a]}
    assert not upward, f"imports that do not go down a layer: {sorted(upward)}"
