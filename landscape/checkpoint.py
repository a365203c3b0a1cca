"""Atomic, structure-checked checkpoints of pytrees (for training and long experiment runs).

A checkpoint is one ``.npz`` file holding the flattened leaves of a pytree plus a JSON blob of
metadata. Writes go to a temporary file in the same directory, are flushed to disk and then
renamed over the target, so a run killed at any instant leaves either the previous checkpoint or
the new one, never a torn file. Loading checks the stored tree structure and leaf shapes against
a template, so a checkpoint from a different model fails with a clear message.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["save", "load", "metadata", "atomic_write_bytes"]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + rename).

    The file gets the permissions of an ordinary new file (``0o666`` less the umask, i.e.
    ``0644`` under the usual umask), not the ``0600`` of a temporary file, so results are
    readable by everyone who can read the folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(path: str | Path, tree: Any, metadata: dict | None = None) -> None:
    """Atomically save the pytree ``tree`` (arrays) and JSON-able ``metadata`` to ``path``."""
    import io

    leaves, treedef = jax.tree.flatten(tree)
    arrays = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}
    meta = {"treedef": str(treedef), "metadata": metadata or {}}
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def metadata(path: str | Path) -> dict:
    """The metadata dict stored by :func:`save`, without loading the arrays."""
    with np.load(path) as f:
        return json.loads(bytes(f["__meta__"]).decode())["metadata"]


def load(path: str | Path, like: Any) -> tuple[Any, dict]:
    """Load a checkpoint saved by ``save`` into the structure of ``like``.

    Returns ``(tree, metadata)``. Raises ``ValueError`` when the stored structure or any leaf
    shape differs from ``like``.
    """
    leaves_like, treedef = jax.tree.flatten(like)
    with np.load(path) as f:
        meta = json.loads(bytes(f["__meta__"]).decode())
        if meta["treedef"] != str(treedef):
            raise ValueError(
                f"checkpoint {path} has a different pytree structure than expected:\n"
                f"stored   {meta['treedef']}\nexpected {treedef}"
            )
        leaves = [f[f"leaf_{i}"] for i in range(len(leaves_like))]
    for i, (a, b) in enumerate(zip(leaves, leaves_like)):
        if a.shape != np.shape(b):
            raise ValueError(f"checkpoint {path}: leaf {i} has shape {a.shape}, expected "
                             f"{np.shape(b)}")
    leaves = [jax.numpy.asarray(a, dtype=jax.numpy.result_type(b)) for a, b in
              zip(leaves, leaves_like)]
    return jax.tree.unflatten(treedef, leaves), meta["metadata"]
