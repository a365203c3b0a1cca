"""Metric layout of ``opposing_signals``.

``R = num_steps`` records (one per step, steps ``0..num_steps-1``); ``S`` spikes; ``n =
num_examples``; ``F`` input features. Groups: ``0`` is group A (its loss rises relative to the
mean loss into the largest spike), ``1`` group B, ``-1`` neither (the rule is in
``landscape.dynamics.opposing.OpposingSignals``).
"""

from typing import TypedDict

import numpy as np


class Summary(TypedDict):
    threshold: float  #: 2 / learning_rate
    num_spikes: int  #: S
    biggest_spike_step: int  #: peak step of the largest spike (-1 without spikes)
    biggest_spike_rise: float  #: mean-loss rise over it (NaN without spikes)
    anti_phase_biggest: float  #: correlation of the group-mean changes there (in sample)
    anti_phase_others_median: float  #: median over the other spikes (out of sample; NaN if none)
    fraction_others_negative: float  #: fraction of the other spikes with a negative correlation
    group_sizes: list[int]  #: [A, B]
    dominant_class: list[int]  #: [A, B] most frequent class in each group (-1 if empty)
    purity: list[float]  #: [A, B] fraction of the group in its dominant class
    group_feature_mean: list[float]  #: [A, B] mean of the feature (input norm) in each group
    feature_mean: float  #: mean of the feature over all examples
    feature_std: float  #: its standard deviation
    feature_anti_phase_median: float  #: control: median anti-phase of the feature split
    sharpness_first_crossing: int  #: first sharpness record step with S >= 2/eta (-1: none)
    sharpness_ratio_before_spikes: float  #: median over spikes of S / (2/eta) at the last
    #: sharpness record at or before each spike's start (NaN without spikes)
    sharpness_ratio_after_crossing: float  #: median S / (2/eta) from the first crossing on
    num_params: int


class Metrics(TypedDict):
    steps: np.ndarray  #: [R] steps of the per-example loss records
    mean_loss: np.ndarray  #: [R] mean over examples of the recorded per-example losses
    train_loss: np.ndarray  #: [R] the full-batch loss of each step (the training loop's own)
    sharpness_steps: np.ndarray  #: [R_s] steps of the sharpness records
    sharpness: np.ndarray  #: [R_s] lambda_max of the full-batch Hessian
    spike_steps: np.ndarray  #: [S, 2] int (start step, peak step) of each spike
    spike_rise: np.ndarray  #: [S] mean-loss rise from start to peak
    anti_phase: np.ndarray  #: [S] correlation of the A and B group-mean changes per spike
    groups: np.ndarray  #: [n] int in {0, 1, -1}
    loadings: np.ndarray  #: [n] the leading singular vector the groups are cut from
    group_losses: np.ndarray  #: [2, R] mean loss of groups A and B
    labels: np.ndarray  #: [n] int class of each example
    feature: np.ndarray  #: [n] ||x_i|| of the (centred) input
    composition: np.ndarray  #: [2, 10] int class counts of groups A and B
    group_mean_input: np.ndarray  #: [2, F] mean input of groups A and B
    class_mean_input: np.ndarray  #: [2, F] mean input of each group's dominant class (all n)
    feature_groups: np.ndarray  #: [n] control split: top / bottom feature_fraction by feature
    feature_group_losses: np.ndarray  #: [2, R] mean loss of the feature split
    feature_anti_phase: np.ndarray  #: [S] anti-phase correlation of the feature split
    summary: Summary
