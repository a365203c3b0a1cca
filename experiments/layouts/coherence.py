"""Metric layout of ``coherence``.

Runs are keyed ``"<dataset>/<labels>"`` (``run_key``) for every dataset of ``config.datasets``
and labels ``"real"``/``"random"``. Arrays indexed ``[record]`` follow ``steps``; arrays indexed
``[kind, record]`` follow ``kinds`` (``"plain"``: the mean gradient through
``landscape.train.train``; ``"winsorize"`` with ``config.c``; ``"median_of_means"`` with
``config.num_groups``). Lists indexed ``[report]`` follow ``config.report_steps``.
"""

from typing import TypedDict

import numpy as np

KINDS = ("plain", "winsorize", "median_of_means")
LABELS = ("real", "random")


def run_key(dataset: str, labels: str) -> str:
    return f"{dataset}/{labels}"


class Run(TypedDict):
    coherence: np.ndarray  #: [record] m-coherence (m = probe_size) of plain SGD on the probe set
    train_loss: np.ndarray  #: [kind, record] cross-entropy on the training set (trained labels)
    train_accuracy: np.ndarray  #: [kind, record] accuracy on the training set (trained labels)
    test_accuracy: np.ndarray  #: [kind, record] accuracy on the test set (true labels)
    #: [kind, record] ||aggregate|| / ||mean|| of the per-example gradients of the batch of that
    #: step, at the run's own params (1 for plain): how much of the gradient survives
    norm_ratio: np.ndarray


class DatasetSummary(TypedDict):
    early_coherence_real: float  #: mean coherence over records with step <= early_steps
    early_coherence_random: float  #: the same on random labels
    early_coherence_ratio: float  #: real / random
    train_accuracy_real: dict[str, list[float]]  #: {kind: [report]} train accuracy, real labels
    train_accuracy_random: dict[str, list[float]]  #: {kind: [report]} on random labels
    mean_norm_ratio_real: dict[str, float]  #: {kind: mean of norm_ratio over the records}
    mean_norm_ratio_random: dict[str, float]  #: {kind: ...} on random labels
    final_test_accuracy_real: dict[str, float]  #: {kind: test accuracy after num_steps}
    final_test_accuracy_random: dict[str, float]  #: {kind: ...} (about chance: 0.1)


class Metrics(TypedDict):
    steps: np.ndarray  #: [record] 0, record_every, ..., num_steps
    kinds: list[str]  #: [kind] KINDS
    runs: dict[str, Run]  #: {run_key(dataset, labels): Run}
    summary: dict[str, DatasetSummary]  #: {dataset: DatasetSummary}
