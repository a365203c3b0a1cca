"""Metric layout of ``data_diet``.

Lists indexed ``[fraction]`` follow ``config.fractions``; arrays ``[fraction, seed]`` have one
column per final-training seed (``config.train_seeds``); score arrays ``[example]`` follow the
MNIST-1D training set of the run (``config.num_train`` examples). Every method's entry at
fraction 0 is the same run (nothing is pruned).
"""

from typing import TypedDict

import numpy as np


class Scores(TypedDict):
    """Per-example scores, each the mean over ``config.score_seeds`` networks."""

    el2n: np.ndarray  #: [example] EL2N after score_epochs epochs (the data-diet score)
    el2n_init: np.ndarray  #: [example] EL2N at initialisation (for reference; not a method)
    grand_init: np.ndarray  #: [example] GraNd at initialisation
    grand_early: np.ndarray  #: [example] GraNd after score_epochs epochs


class ScoreNetworks(TypedDict):
    """The networks the scores come from, after their short training (one entry per seed)."""

    num_steps: int  #: score_epochs * (num_train // batch_size) steps on the full set
    train_accuracy: list[float]  #: [score seed] on the full training set
    test_accuracy: list[float]  #: [score seed]


class Summary(TypedDict):
    full_accuracy: float  #: mean test accuracy over seeds without pruning
    mean_accuracy: dict[str, list[float]]  #: method -> [fraction] mean over seeds
    drop: dict[str, list[float]]  #: method -> [fraction] full_accuracy - mean_accuracy
    el2n_minus_random: list[float]  #: [fraction] mean accuracy of el2n minus that of random
    spearman: dict[str, float]  #: score name -> rank correlation with el2n over examples


class Metrics(TypedDict):
    fractions: list[float]  #: [fraction] fractions pruned (config.fractions)
    methods: list[str]  #: the pruning methods run (config.methods)
    num_kept: list[int]  #: [fraction] examples kept, num_train - round(fraction * num_train)
    test_accuracy: dict[str, np.ndarray]  #: method -> [fraction, seed] after final training
    train_accuracy: dict[str, np.ndarray]  #: method -> [fraction, seed] on the kept examples
    scores: Scores
    score_networks: ScoreNetworks
    summary: Summary
