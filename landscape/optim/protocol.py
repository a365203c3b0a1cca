"""Scoring of a fair optimizer comparison (in the style of AlgoPerf), as pure NumPy functions.

The protocol (Dahl et al. 2023, "Benchmarking Neural Network Training Algorithms", external
tuning ruleset): every optimizer gets the same tuning budget on every workload, drawn from its
search space by quasi-random search, repeated as independent studies;
a workload is *solved* when the validation metric reaches a target fixed in advance; the score
of one study is the number of steps its fastest trial needs to reach the target, the score of
a workload the median over studies; and the optimizers are compared by performance profiles.

* :func:`quasi_random_trials`: points of a scrambled Halton sequence mapped to log-uniform
  (or uniform) ranges, one independent sequence per study.
* :func:`steps_to_target`: the first evaluation step at which a metric curve reaches the
  target (``inf`` when it never does).
* :func:`workload_score`: the median over studies of the best trial's steps to target.
* :func:`performance_profile`: for optimizer ``o`` and ratio ``r``, the fraction of workloads
  ``w`` with ``t[o, w] <= r * min_o' t[o', w]`` (Dolan and More 2002), unsolved workloads
  counting as failures.
* :func:`lr_sensitivity`: the learning-rate sensitivity of Wortsman et al. (2023, "Small-scale
  proxies for large-scale Transformer training instabilities"),
  ``E_eta[min(l(eta), l0) - min_eta l(eta)]`` over a log-spaced grid of learning rates.

Lower metrics are better throughout (validation error, validation loss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "quasi_random_trials",
    "steps_to_target",
    "workload_score",
    "performance_profile",
    "lr_sensitivity",
]


def quasi_random_trials(space: Mapping[str, tuple[float, float, str]], num_trials: int, *,
                        seed: int) -> dict[str, np.ndarray]:
    """``num_trials`` points of a scrambled Halton sequence over ``space``.

    Args:
      space: ``{name: (low, high, scale)}`` with ``scale`` ``"log"`` (log-uniform in
        ``[low, high]``, ``0 < low``) or ``"linear"``; the dimensions are taken in the given
        order, so the same space and seed give the same trials.
      num_trials: the number of points, ``>= 1``.
      seed: the scrambling seed (one per study: studies are independent sequences).

    Returns:
      ``{name: (num_trials,) float64}``.
    """
    from scipy.stats import qmc

    if int(num_trials) != num_trials or num_trials < 1:
        raise ValueError(f"num_trials must be a positive integer; got {num_trials!r}")
    if not space:
        raise ValueError("space must name at least one hyperparameter")
    for name, (lo, hi, scale) in space.items():
        if scale not in ("log", "linear"):
            raise ValueError(f"space[{name!r}]: scale must be 'log' or 'linear'; got {scale!r}")
        if not lo <= hi or (scale == "log" and not lo > 0):
            raise ValueError(f"space[{name!r}]: need low <= high (and low > 0 on a log scale); "
                             f"got ({lo}, {hi})")
    u = qmc.Halton(d=len(space), scramble=True, seed=seed).random(int(num_trials))
    out = {}
    for j, (name, (lo, hi, scale)) in enumerate(space.items()):
        if scale == "log":
            out[name] = np.exp(np.log(lo) + u[:, j] * (np.log(hi) - np.log(lo)))
        else:
            out[name] = lo + u[:, j] * (hi - lo)
    return out


def steps_to_target(metric: np.ndarray, steps: Sequence[int], target: float) -> np.ndarray:
    """The first step at which ``metric`` is ``<= target``; ``inf`` where it never is.

    Args:
      metric: ``(..., num_evals)`` validation metric at the evaluation ``steps``; NaN (a
        diverged run) never reaches a target.
      steps: ``(num_evals,)`` increasing steps of the evaluations.
      target: the target value (lower is better).

    Returns:
      ``(...)`` float64 steps.
    """
    metric = np.asarray(metric, np.float64)
    steps = np.asarray(steps, np.float64)
    if metric.shape[-1] != steps.shape[0]:
        raise ValueError(f"metric has {metric.shape[-1]} evaluations but steps has "
                         f"{steps.shape[0]}")
    hit = np.nan_to_num(metric, nan=np.inf) <= target
    first = np.argmax(hit, axis=-1)
    return np.where(hit.any(axis=-1), steps[first], np.inf)


def workload_score(times: np.ndarray) -> float:
    """The median over studies of the fastest trial: ``times`` is ``(num_studies,
    num_trials)`` steps to target (``inf`` for a trial that missed it). A study whose trials
    all missed scores ``inf``; the median of an even number of studies with an ``inf`` is
    ``inf`` when the upper middle value is."""
    times = np.asarray(times, np.float64)
    if times.ndim != 2 or times.size == 0:
        raise ValueError(f"times must be (num_studies, num_trials); got shape {times.shape}")
    best = np.sort(times.min(axis=1))
    k = len(best)
    if k % 2:
        return float(best[k // 2])
    lo, hi = best[k // 2 - 1], best[k // 2]
    return float(np.inf) if np.isinf(hi) else float((lo + hi) / 2)


def performance_profile(scores: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """Performance profiles ``rho[o, r]`` of ``scores`` ``(num_optimizers, num_workloads)``.

    ``rho[o, r] = (1 / W) #{w : t[o, w] <= ratios[r] * min_o' t[o', w]}``: the fraction of
    workloads optimizer ``o`` solves within a factor ``ratios[r]`` of the fastest optimizer on
    that workload. A workload no optimizer solves counts as a failure for all; ``inf`` scores
    never count.
    """
    t = np.asarray(scores, np.float64)
    if t.ndim != 2 or t.size == 0:
        raise ValueError(f"scores must be (num_optimizers, num_workloads); got {t.shape}")
    if np.any(np.isnan(t)) or np.any(t < 0):
        raise ValueError("scores must be non-negative or inf (no NaN)")
    ratios = np.asarray(ratios, np.float64)
    best = t.min(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(np.isfinite(t), t / np.where(best > 0, best, 1.0), np.inf)
    rel = np.where(np.isfinite(t) & (best == 0), np.where(t == 0, 1.0, np.inf), rel)
    return (rel[:, :, None] <= ratios[None, None, :]).mean(axis=1)


def lr_sensitivity(final: np.ndarray, initial: float) -> float:
    """Wortsman et al.'s learning-rate sensitivity of one optimizer on one task.

    ``final``: ``(num_lrs,)`` final metric over a log-spaced learning-rate grid (NaN: diverged);
    ``initial``: the metric at initialisation ``l0``. Returns ``mean_eta[min(l(eta), l0)] -
    min_eta l(eta)`` (diverged runs count as ``l0``), 0 for an optimizer whose result does not
    depend on the learning rate.
    """
    final = np.asarray(final, np.float64)
    if final.ndim != 1 or final.size == 0:
        raise ValueError(f"final must be a non-empty 1-D array; got shape {final.shape}")
    capped = np.minimum(np.nan_to_num(final, nan=np.inf), initial)
    return float(np.mean(capped) - np.min(capped))
