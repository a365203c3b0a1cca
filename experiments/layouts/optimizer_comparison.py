"""Metric layout of ``optimizer_comparison``.

Axes: ``[optimizer]`` follows ``optimizers`` (``config.optimizers``); ``[workload]`` follows
``workloads``; ``[ratio]`` follows ``ratios``; ``[study, trial]`` the tuning studies and their
quasi-random trials; ``[lr]`` the learning-rate grid of the sensitivity curves; ``[eval]`` the
evaluation steps of a workload (``curves[w]["steps"]``). Steps to target are ``inf`` where the
target was not reached; metrics are ``nan`` where a run diverged. Lower metrics are better
(validation error for the classifiers, validation loss in nats per token for the language
model).
"""

from typing import TypedDict

import numpy as np


class WorkloadCurves(TypedDict):
    steps: np.ndarray  #: [eval] evaluation steps 0, eval_every, ..., num_steps
    initial: float  #: the validation metric at initialisation (the same for every optimizer)
    #: [optimizer, eval] the median study's (by best final metric) fastest trial to the
    #: target, or its best final trial when none reaches it
    best_curve: np.ndarray
    default_curve: np.ndarray  #: [optimizer, eval] metric of the defaults run
    trial_curves: np.ndarray  #: [optimizer, study, trial, eval] metric of every tuning trial
    trial_times: np.ndarray  #: [optimizer, study, trial] steps to target of every tuning trial
    trial_final: np.ndarray  #: [optimizer, study, trial] final metric of every tuning trial
    trial_lr: np.ndarray  #: [optimizer, study, trial] the trials' peak learning rates
    grid_lr: np.ndarray  #: [optimizer, lr] the sensitivity grid (other hyperparameters default)
    grid_final: np.ndarray  #: [optimizer, lr] final metric on the grid
    sweep_best: np.ndarray  #: [baseline, trial] best metric of each target-sweep trial


class Summary(TypedDict):
    solved: dict[str, int]  #: optimizer -> workloads solved (tuned, median study)
    default_solved: dict[str, int]  #: optimizer -> workloads solved by the defaults run
    profile_at_1: dict[str, float]  #: optimizer -> fraction of workloads where it is fastest
    profile_at_max: dict[str, float]  #: optimizer -> fraction within max_ratio of the fastest
    profile_area: dict[str, float]  #: optimizer -> mean of the tuned profile over [1, max_ratio]
    default_profile_area: dict[str, float]  #: the same for the defaults profile
    fastest: dict[str, list[str]]  #: workload -> the optimizers with the lowest score
    relaxed_solved: dict[str, int]  #: as solved, at the relaxed targets
    relaxed_default_solved: dict[str, int]  #: as default_solved, at the relaxed targets
    relaxed_profile_area: dict[str, float]  #: as profile_area, at the relaxed targets
    relaxed_default_profile_area: dict[str, float]  #: as default_profile_area, relaxed
    relaxed_fastest: dict[str, list[str]]  #: as fastest, at the relaxed targets
    targets_from_config: bool  #: the targets scored against are config.targets
    targets_match_sweep: bool  #: they equal the targets this run's sweep gives


class Metrics(TypedDict):
    optimizers: list[str]  #: [optimizer]
    workloads: list[str]  #: [workload]
    metric_names: list[str]  #: [workload] "error" or "loss"
    targets: list[float]  #: [workload] the targets scored against
    sweep_targets: list[float]  #: [workload] the targets the sweep of this run gives
    floors: list[float]  #: [workload] Bayes-optimal validation loss (language model), else nan
    ratios: np.ndarray  #: [ratio] 1 .. max_ratio
    scores: np.ndarray  #: [optimizer, workload] median over studies of the best steps to target
    default_scores: np.ndarray  #: [optimizer, workload] steps to target of the defaults run
    profile: np.ndarray  #: [optimizer, ratio] performance profile of the tuned scores
    default_profile: np.ndarray  #: [optimizer, ratio] performance profile of the defaults
    #: [optimizer, workload] median over studies of the study's best final metric (nan: the
    #: median study diverged in every trial)
    #: [workload] the relaxed targets: the sweep's relaxed_rank-th best (same rule)
    relaxed_targets: list[float]
    relaxed_scores: np.ndarray  #: [optimizer, workload] as scores, at the relaxed targets
    relaxed_default_scores: np.ndarray  #: [optimizer, workload] as default_scores, relaxed
    relaxed_profile: np.ndarray  #: [optimizer, ratio] profile of relaxed_scores
    relaxed_default_profile: np.ndarray  #: [optimizer, ratio] profile of relaxed_default_scores
    tuned_final: np.ndarray
    default_final: np.ndarray  #: [optimizer, workload] final metric of the defaults run
    sensitivity: np.ndarray  #: [optimizer, workload] Wortsman et al.'s lr sensitivity
    state_bytes: np.ndarray  #: [optimizer, workload] optimizer-state bytes
    state_ratio: np.ndarray  #: [optimizer, workload] state bytes / AdamW's state bytes
    param_bytes: list[int]  #: [workload] parameter bytes
    num_params: list[int]  #: [workload]
    curves: dict[str, WorkloadCurves]  #: per workload name
    summary: Summary
