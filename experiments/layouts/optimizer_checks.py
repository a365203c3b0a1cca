"""Metric layout of ``optimizer_checks``.

Axes: ``optimizer`` is (adam, spam) in check 1 and (adam, mfac) in check 3; ``spikes`` is (off,
on); ``lr`` follows ``config.learning_rates``; ``seed`` the ``num_seeds`` seed indices; ``step``
the ``num_steps`` optimizer steps; ``record`` follows ``eval_steps``; ``setting`` is the grid
``learning_rates x adam_eps`` (Adam) or ``learning_rates x mfac_damps`` (M-FAC), row-major
(setting ``j`` = ``(learning_rates[j // D], second[j % D])``); ``test`` follows ``ada_tests``;
``segment`` follows ``ada_segment_starts``. Losses are softmax cross-entropy (nats).
"""

from typing import TypedDict

import numpy as np


class SpamSummary(TypedDict):
    """One optimizer of check 1; every list is over the learning rates, means over seeds, at
    the end of training."""

    train_loss_clean: list[float]  #: full training-set loss without spikes
    train_loss_spiked: list[float]  #: with spikes
    train_loss_excess: list[float]  #: spiked minus clean, paired by seed
    test_loss_clean: list[float]
    test_loss_spiked: list[float]
    test_loss_excess: list[float]
    test_accuracy_clean: list[float]
    test_accuracy_spiked: list[float]
    #: mean minibatch loss over the spike_window steps after a spike minus the window before it,
    #: spiked run minus clean run (same batches), mean over spikes and seeds
    spike_jump: list[float]
    #: sum of nu (spiked) / sum of nu (clean) over the spike_window steps after each spike,
    #: mean over spikes and seeds
    second_moment_inflation: list[float]


class MfacSummary(TypedDict):
    """One optimizer of check 3 (equal budget: one trial per setting, the same steps)."""

    final_train_loss: list[float]  #: [setting] full training-set loss, mean over seeds
    final_test_accuracy: list[float]  #: [setting] mean over seeds
    best_setting: int  #: the setting with the lowest final_train_loss (NaN: never best)
    best_learning_rate: float
    best_second: float  #: Adam's eps or M-FAC's damp of the best setting
    best_train_loss: float
    test_accuracy_at_best: float  #: test accuracy of best_setting
    best_test_accuracy: float  #: the highest final_test_accuracy over settings
    best_test_setting: int
    num_diverged: int  #: settings with a non-finite final training loss
    #: best_learning_rate lies strictly inside the grid (the protocol's bracketing rule)
    best_inside_grid: bool


class AdaSummary(TypedDict):
    """One test of check 2 (``fixed``: AdaGrad-Norm at the initial batch size), means over
    seeds."""

    initial_batch_size: float
    mid_batch_size: float  #: batch size of the middle segment
    final_batch_size: float  #: batch size of the last segment
    monotone: bool  #: the batch size never shrank (the rule guarantees it)
    #: mean request over the first quarter of the segments that ran a test (NaN: none ran)
    requested_first_quarter: float
    requested_last_quarter: float  #: the same over the last quarter
    step_reaching_max: list[int]  #: [seed] first segment start at ada_max_batch_size; -1: never
    examples: float  #: training examples processed over all steps
    test_examples: float  #: examples the tests used (two gradient passes each)
    final_segment_loss: float  #: mean minibatch loss of the last segment
    final_train_loss: float  #: full training-set loss after training
    final_test_accuracy: float


class Summary(TypedDict):
    spam: dict[str, SpamSummary]  #: "adam", "spam"
    mfac: dict[str, MfacSummary]  #: "adam", "mfac"
    adadagrad: dict[str, AdaSummary]  #: "fixed" and each of config.ada_tests


class Metrics(TypedDict):
    eval_steps: np.ndarray  #: [record] 0, record_every, ..., num_steps (the last: after training)
    spike_steps: np.ndarray  #: [spike] 0-based steps whose gradient is spiked
    spam_step_loss: np.ndarray  #: [optimizer, spikes, lr, seed, step] minibatch loss
    #: [optimizer, spikes, lr, seed, step] sum of the second moment nu over all params, before
    #: the update of each step
    spam_second_moment: np.ndarray
    spam_train_loss: np.ndarray  #: [optimizer, spikes, lr, seed, record] full training set
    spam_test_loss: np.ndarray  #: [optimizer, spikes, lr, seed, record]
    spam_test_accuracy: np.ndarray  #: [optimizer, spikes, lr, seed, record]
    mfac_train_loss: np.ndarray  #: [optimizer, setting, seed, record] full training set
    mfac_test_loss: np.ndarray  #: [optimizer, setting, seed, record]
    mfac_test_accuracy: np.ndarray  #: [optimizer, setting, seed, record]
    ada_tests: list[str]  #: "fixed" and config.ada_tests: the test axis
    ada_segment_starts: np.ndarray  #: [segment] first step of each segment
    ada_batch_size: np.ndarray  #: [test, seed, segment] batch size of the segment's steps
    #: [test, seed, segment] batch size the test asked for after the segment (NaN: no test)
    ada_requested: np.ndarray
    ada_loss: np.ndarray  #: [test, seed, segment] mean minibatch loss over the segment
    ada_examples: np.ndarray  #: [test, seed, segment] examples processed by the segment's end
    ada_train_loss: np.ndarray  #: [test, seed] full training-set loss after training
    ada_test_loss: np.ndarray  #: [test, seed]
    ada_test_accuracy: np.ndarray  #: [test, seed]
    summary: Summary
