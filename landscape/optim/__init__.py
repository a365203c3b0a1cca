"""Optimizers from recent papers as optax transformations (``landscape.optim``).

Every optimizer follows optax's conventions: a ``scale_by_<name>(...)``
``optax.GradientTransformation`` whose state is a ``NamedTuple`` with an ``int32`` ``count``,
pure ``init``/``update``, and an alias ``<name>(learning_rate, ..., weight_decay=0.0,
mask=None)`` that chains it with decoupled weight decay (``optax.add_decayed_weights``, with the
mask) and the learning rate (``optax.scale_by_learning_rate``: a float or a schedule), and works
under ``optax.inject_hyperparams`` (hyperparameters that fix array shapes, such as a rank, go in
``static_args``). Each is tested against its authors' reference code in float64 (or, where none
runs on a CPU, a transcription of the published algorithm), and against the optax conventions.

* ``diffgrad`` (Dubey et al. 2020): Adam with the friction ``sigmoid(|g_{t-1} - g_t|)``.
* ``spam`` (Huang et al. 2025): spike-aware clipping, momentum reset, warm-up after each reset.
* ``sgd_sai`` (Xu et al. 2024): per-tensor learning-rate scales from the gradient SNR at step 1.
* ``fira`` (Chen et al. 2024): GaLore-style Adam plus the scaled full-rank residual.
* ``frugal`` (Zmushko et al. 2024): AdamW on a subspace, signSGD/SGD on the rest.
* ``dct_adamw`` and ``dct_*`` (Modoranu et al. 2025): SVD-free low-rank projection by the DCT.
* ``adagrad_norm`` and ``adaptive_batch_train`` (AdAdaGrad, Lau, Liu, Kolar 2024): batch sizes
  grown by the norm, inner-product or orthogonality test.
* ``mfac`` and ``mfac_ihvp`` (Frantar, Kurtic, Alistarh 2021): inverse empirical-Fisher products
  from a window of gradients.
* ``gn_smoothness`` and ``gn_smoothness_step`` (Semenov, Jaggi, Doikov 2025): regularised
  Newton steps set by gradient-normalised smoothness.
* ``tract`` (Petersen et al. 2024): the first layer's update on its pre-activations.
* ``protocol``: the scoring of a fair comparison in the style of AlgoPerf (quasi-random
  search, steps to a fixed target, median over studies, performance profiles, Wortsman et
  al.'s learning-rate sensitivity), used by the experiment ``optimizer_comparison``.
* ``adabelief`` (Zhuang et al. 2020) and ``noisy_sgd`` (gradient noise, Neelakantan et al.
  2015) are optax's own, re-exported for the comparisons.
"""

from optax import adabelief, noisy_sgd

from landscape.optim.adadagrad import (
    BATCH_SIZE_TESTS,
    AdaGradNormState,
    AdaptiveBatchResult,
    adagrad_norm,
    adaptive_batch_train,
    next_batch_size,
    scale_by_adagrad_norm,
)
from landscape.optim.base import chain_with_decay_and_lr
from landscape.optim.dct import (
    DCTAdamWState,
    dct_adamw,
    dct_basis,
    dct_init,
    dct_project,
    dct_project_back,
    dct_projector,
    dct_side,
    dct_update,
    scale_by_dct_adamw,
)
from landscape.optim.diffgrad import DiffGradState, diffgrad, scale_by_diffgrad
from landscape.optim.fira import FiraState, fira, scale_by_fira
from landscape.optim.frugal import FrugalState, frugal, scale_by_frugal
from landscape.optim.gn_smoothness import (
    CGResult,
    GNSmoothnessInfo,
    GNSmoothnessState,
    cg_solve,
    gn_smoothness,
    gn_smoothness_step,
    scale_by_gn_smoothness,
)
from landscape.optim.mfac import (
    MFACCoefficients,
    MFACState,
    mfac,
    mfac_coefficients,
    mfac_ihvp,
    scale_by_mfac,
)
from landscape.optim.projection import Projector, svd_projector
from landscape.optim.protocol import (
    lr_sensitivity,
    performance_profile,
    quasi_random_trials,
    steps_to_target,
    workload_score,
)
from landscape.optim.sgd_sai import SGDSaIState, gradient_snr, scale_by_sgd_sai, sgd_sai
from landscape.optim.spam import SpamState, scale_by_spam, spam
from landscape.optim.tract import (
    TrActState,
    conv_patches,
    scale_by_tract,
    tract,
    tract_precondition,
)

__all__ = [
    "adabelief", "noisy_sgd", "chain_with_decay_and_lr",
    "BATCH_SIZE_TESTS", "AdaGradNormState", "AdaptiveBatchResult", "adagrad_norm",
    "adaptive_batch_train", "next_batch_size", "scale_by_adagrad_norm",
    "DCTAdamWState", "dct_adamw", "dct_basis", "dct_init", "dct_project", "dct_project_back",
    "dct_projector", "dct_side", "dct_update", "scale_by_dct_adamw",
    "DiffGradState", "diffgrad", "scale_by_diffgrad",
    "FiraState", "fira", "scale_by_fira",
    "FrugalState", "frugal", "scale_by_frugal",
    "CGResult", "GNSmoothnessInfo", "GNSmoothnessState", "cg_solve", "gn_smoothness",
    "gn_smoothness_step", "scale_by_gn_smoothness",
    "MFACCoefficients", "MFACState", "mfac", "mfac_coefficients", "mfac_ihvp", "scale_by_mfac",
    "Projector", "svd_projector",
    "lr_sensitivity", "performance_profile", "quasi_random_trials", "steps_to_target",
    "workload_score",
    "SGDSaIState", "gradient_snr", "scale_by_sgd_sai", "sgd_sai",
    "SpamState", "scale_by_spam", "spam",
    "TrActState", "conv_patches", "scale_by_tract", "tract", "tract_precondition",
]
