"""Metric layouts: one module per experiment, each defining the ``TypedDict`` ``Metrics``.

A layout is the one place that names the keys of an experiment's metrics and says what each
holds (its type, and for arrays the meaning of each axis). The experiment annotates ``run`` with
it and re-exports it; its figure imports it to read the stored result through a typed view. These
modules import only NumPy (for the ``np.ndarray`` annotations), never JAX, so figure scripts can
import them. Arrays are ``np.ndarray`` once stored and loaded; axes are written ``[seed, step]``.
``tests/test_experiments.py`` checks that every smoke result has exactly the declared keys.
"""
