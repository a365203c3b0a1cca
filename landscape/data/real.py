"""Real datasets that ship inside packages: scikit-learn digits and MNIST-1D.

Both return ``(train, test)``, each a dict ``{"x": float array, "y": int32 labels}`` with a
leading example axis. Neither touches the network: digits is bundled with scikit-learn, and
MNIST-1D is *generated* with ``mnist1d.data.make_dataset`` (``get_dataset`` would download).

References:
  Greydanus and Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024.
  Alpaydin and Kaynak, optical recognition of handwritten digits (UCI), via scikit-learn.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["digits", "mnist1d", "seed_from_key"]


def seed_from_key(key: jax.Array) -> int:
    """A non-negative 31-bit integer seed drawn deterministically from a JAX key."""
    return int(jax.random.randint(key, (), 0, 2**31 - 1, dtype=jnp.int32))


def _split(x: np.ndarray, y: np.ndarray, key: jax.Array, num_test: int):
    perm = np.asarray(jax.random.permutation(key, len(y)))
    test, train = perm[:num_test], perm[num_test:]
    as_dict = lambda idx: {"x": jnp.asarray(x[idx]), "y": jnp.asarray(y[idx], jnp.int32)}
    return as_dict(train), as_dict(test)


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int32)


def digits(key: jax.Array, *, test_fraction: float = 0.2, flatten: bool = False):
    """scikit-learn's 1797 8x8 handwritten digits, split into train/test by ``key``.

    Args:
      key: PRNG key choosing the random train/test split (same key, same split).
      test_fraction: fraction of the 1797 examples held out, in (0, 1).
      flatten: return ``x`` as ``(n, 64)`` instead of images ``(n, 8, 8, 1)`` (NHWC).

    Returns:
      ``(train, test)`` dicts with ``x`` in [0, 1] (float32 whatever the x64 flag: cast it,
      ``x.astype(jnp.float64)``, for float64 work) and ``y`` int32 labels in 0..9. With the
      default fraction: 1438 train, 359 test.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    images, labels = _digits_arrays()
    x = images.reshape(len(labels), -1) if flatten else images[..., None]
    return _split(x, labels, key, int(round(test_fraction * len(labels))))


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int, seed: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, 1.0
    # make_dataset seeds NumPy's global RNG; restore it so callers see no side effect.
    saved = np.random.get_state()
    try:
        out = make_dataset(args)
    finally:
        np.random.set_state(saved)
    return out["x"].astype(np.float32), out["y"].astype(np.int32)


def mnist1d(key: jax.Array, *, num_train: int = 4000, num_test: int = 1000):
    """MNIST-1D generated offline: 10 classes of length-40 signals.

    The generator's seed is drawn from ``key``; the examples are then split at random
    (also from ``key``) into ``num_train`` and ``num_test``. The default 4000/1000 split matches
    the published MNIST-1D benchmark.

    Returns:
      ``(train, test)`` dicts with ``x`` of shape ``(n, 40)`` (standardised signals) and ``y``
      int32 labels.
    """
    for name, v in (("num_train", num_train), ("num_test", num_test)):
        if int(v) != v or v <= 0:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    k_gen, k_split = jax.random.split(key)
    total = num_train + num_test
    # make_dataset produces num_samples // 10 examples per class; round up to a multiple of 10.
    x, y = _mnist1d_arrays(-(-total // 10) * 10, seed_from_key(k_gen))
    train, test = _split(x, y, k_split, num_test)
    return jax.tree.map(lambda a: a[:num_train], train), test
