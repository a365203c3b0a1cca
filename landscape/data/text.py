"""A character-level language-modelling corpus that every machine already has, offline.

The text is the docstrings of the running interpreter's standard library (about 1.8M
characters of English; 1,804,916 in Python 3.11.7), read from the ``.py`` sources with
``ast``; no module is imported and nothing touches the network.

What the corpus contains, exactly:

* Files: every ``*.py`` under ``sysconfig.get_paths()["stdlib"]``, visited in sorted order of
  their POSIX path relative to that directory. Skipped: any file with a path component in
  ``EXCLUDED_DIRS`` (test suites such as ``test/``, ``tests/``, ``idlelib/idle_test/``,
  ``lib2to3/tests/``, plus ``site-packages``, ``dist-packages``, ``__pycache__`` and the
  build-specific ``config-*`` directory), the build-generated ``_sysconfigdata*.py``, and files
  that fail to decode as UTF-8 or to parse with this interpreter's ``ast``.
* Docstrings: of the module, then of every class, function and async function in source order
  (a depth-first walk of the syntax tree), as returned by
  ``ast.get_docstring(node, clean=True)`` (``inspect.cleandoc``: tabs expanded, common
  indentation removed). Empty docstrings are skipped; duplicates are kept.
* Joined with ``SEPARATOR`` (a blank line).

Vocabulary: a fixed character set independent of the Python version, ``VOCAB`` = newline
followed by printable ASCII ``' '..'~'`` (ids 0..95); any other character maps to
``UNKNOWN_ID`` = 96; ``VOCAB_SIZE`` = 97. ``decode`` shows the unknown id as U+FFFD.

Pinning: ``corpus_fingerprint()`` gives the Python version, the sha256 of the UTF-8 encoded
text and its length. The text depends on the standard library's sources, so the hash is fixed
per Python release (a distribution that patches the stdlib may differ); ``stdlib_text`` checks
it against ``expected_sha256`` and fails with both hashes when they differ.

Splitting: the first ``1 - valid_fraction`` of the characters are training text, the rest
validation text; windows are drawn inside one region and never cross the boundary.

Reference for the use of small character-level transformers as proxies: Wortsman et al.,
"Small-scale proxies for large-scale Transformer training instabilities", 2023.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import pathlib
import sys
import sysconfig
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "EXCLUDED_DIRS",
    "SEPARATOR",
    "TextData",
    "UNKNOWN_ID",
    "VOCAB",
    "VOCAB_SIZE",
    "corpus_fingerprint",
    "decode",
    "encode",
    "stdlib_corpus",
    "stdlib_text",
]

VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
UNKNOWN_ID = len(VOCAB)
VOCAB_SIZE = len(VOCAB) + 1
SEPARATOR = "\n\n"
EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)

_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BLOCK_FIELDS = ("body", "handlers", "orelse", "finalbody", "cases")
_BLOCK_WRAPPERS = (ast.ExceptHandler, ast.match_case)
_LOOKUP = np.full(128, UNKNOWN_ID, np.int32)
_LOOKUP[[ord(c) for c in VOCAB]] = np.arange(len(VOCAB), dtype=np.int32)


def _included(rel: pathlib.PurePosixPath) -> bool:
    dirs = rel.parts[:-1]
    if any(d in EXCLUDED_DIRS or d.startswith("config-") for d in dirs):
        return False
    return not rel.name.startswith("_sysconfigdata")


def _docstrings(tree: ast.AST):
    """Docstrings of the module, classes and functions of ``tree`` in source order.

    Only statement lists are walked (``body``, exception handlers, ``orelse``, ``finalbody``,
    ``match`` cases): a class or function definition is always a statement, so this finds the
    same nodes as a walk of the whole tree, several times faster.
    """
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DOC_NODES):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        stack.extend(reversed(_child_statements(node)))


def _child_statements(node: ast.AST) -> list:
    children = []
    for field in _BLOCK_FIELDS:
        for child in getattr(node, field, ()):
            children.extend(child.body if isinstance(child, _BLOCK_WRAPPERS) else [child])
    return children


def _file_docstrings(path: pathlib.Path) -> list[str]:
    try:
        tree = ast.parse(path.read_bytes().decode("utf-8"), filename=str(path))
    except (UnicodeDecodeError, SyntaxError, ValueError):
        return []
    return list(_docstrings(tree))


@functools.cache
def stdlib_corpus(root: str | None = None) -> str:
    """The concatenated docstrings of the standard library (see the module docstring).

    Args:
      root: the directory to read (default: ``sysconfig.get_paths()["stdlib"]``); given for
        tests on a small tree.

    Cached per process and per ``root``: the first call parses about 730 files (about 3.5 s
    of one CPU core for Python 3.11), later calls are free.
    """
    base = pathlib.Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise ValueError(f"root must be an existing directory; got {str(base)!r}")
    relative = sorted(p.relative_to(base).as_posix() for p in base.rglob("*.py"))
    files = [base / rel for rel in relative if _included(pathlib.PurePosixPath(rel))]
    return SEPARATOR.join(doc for path in files for doc in _file_docstrings(path))


def _python_version() -> str:
    return ".".join(str(v) for v in sys.version_info[:3])


@functools.cache
def corpus_fingerprint() -> dict:
    """``{"python_version", "sha256", "num_chars"}`` of ``stdlib_corpus()`` (sha256 of UTF-8)."""
    text = stdlib_corpus()
    return {
        "python_version": _python_version(),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "num_chars": len(text),
    }


def encode(text: str) -> np.ndarray:
    """Character ids ``(len(text),)`` int32 in ``[0, VOCAB_SIZE)``; characters outside
    ``VOCAB`` become ``UNKNOWN_ID``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ids = np.full(codes.shape, UNKNOWN_ID, np.int32)
    ascii_ = codes < 128
    ids[ascii_] = _LOOKUP[codes[ascii_]]
    return ids


def decode(ids) -> str:
    """The text of a 1-D sequence of ids (``UNKNOWN_ID`` shows as U+FFFD)."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"ids must be a 1-D integer array; got shape {ids.shape}, dtype {ids.dtype}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
        raise ValueError(f"ids must lie in [0, {VOCAB_SIZE}); got range [{ids.min()}, {ids.max()}]")
    table = np.array(list(VOCAB + "\ufffd"))
    return "".join(table[ids])


@functools.cache
def _corpus_ids() -> np.ndarray:
    ids = encode(stdlib_corpus())
    ids.setflags(write=False)
    return ids


class TextData(NamedTuple):
    """Output of ``stdlib_text``.

    Fields:
      train, valid: ``{"tokens": int32 (n, seq_len + 1)}``; a model reads ``tokens[:, :-1]``
        and predicts ``tokens[:, 1:]``.
      fingerprint: ``corpus_fingerprint()`` plus ``"split_index"``, the first validation
        character, and ``"vocab_size"``.
    """

    train: dict
    valid: dict
    fingerprint: dict


def _windows(key, region: np.ndarray, num: int, length: int) -> np.ndarray:
    # int32 explicitly: the same windows whatever JAX_ENABLE_X64 says.
    starts = np.asarray(jax.random.randint(key, (num,), 0, len(region) - length + 1, jnp.int32))
    return region[starts[:, None] + np.arange(length)]


def _check_int(name: str, value, low: int):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")


def stdlib_text(
    key: jax.Array, *, seq_len: int, num_train: int, num_valid: int,
    valid_fraction: float = 0.1, expected_sha256: str | None = None,
) -> TextData:
    """Windows of the standard-library docstring corpus for next-character prediction.

    The corpus (``stdlib_corpus``, ``N`` characters) is split once and for all: characters
    ``[0, s)`` train, ``[s, N)`` validation, ``s = floor((1 - valid_fraction) N)``. Each example
    is ``seq_len + 1`` consecutive characters starting at an offset drawn uniformly from its
    region, so no window crosses ``s``. Windows may overlap each other.

    Args:
      key: ``jax.random`` key for the start offsets (split into train and validation keys).
      seq_len: model context length ``T`` >= 1; windows hold ``T + 1`` ids.
      num_train, num_valid: number of windows (>= 1 each).
      valid_fraction: the last fraction of the text held out, in (0, 1).
      expected_sha256: if given, the corpus hash must equal it (see ``corpus_fingerprint``).

    Returns:
      ``TextData(train, valid, fingerprint)``; the arrays are int32 ``(n, T + 1)``.
    """
    _check_int("seq_len", seq_len, 1)
    _check_int("num_train", num_train, 1)
    _check_int("num_valid", num_valid, 1)
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1); got {valid_fraction!r}")
    fp = corpus_fingerprint()
    if expected_sha256 is not None and expected_sha256 != fp["sha256"]:
        raise ValueError(
            f"expected_sha256 does not match the corpus of Python {fp['python_version']}: "
            f"expected {expected_sha256}, got {fp['sha256']} ({fp['num_chars']} characters). "
            "The standard library differs from the pinned one; pin the hash of this "
            "interpreter or run on the pinned Python version."
        )
    ids = _corpus_ids()
    split = int(np.floor((1.0 - valid_fraction) * len(ids)))
    for name, size in (("training", split), ("validation", len(ids) - split)):
        if size < seq_len + 1:
            raise ValueError(
                f"seq_len={seq_len} is too long for the {name} region ({size} characters)"
            )
    k_train, k_valid = jax.random.split(key)
    train = _windows(k_train, ids[:split], num_train, seq_len + 1)
    valid = _windows(k_valid, ids[split:], num_valid, seq_len + 1)
    info = dict(fp, split_index=split, vocab_size=VOCAB_SIZE)
    return TextData({"tokens": jnp.asarray(train)}, {"tokens": jnp.asarray(valid)}, info)
