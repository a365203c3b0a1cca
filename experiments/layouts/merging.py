"""Metric layout of ``merging``: test accuracies."""

from typing import TypedDict

import numpy as np


class Metrics(TypedDict):
    endpoints: float  #: mean of the two models
    ensemble: float  #: averaged logits
    average: float  #: plain weight average
    wm: float  #: weight matching, then average
    wm_repair: float  #: WM + REPAIR
    pleas: np.ndarray  #: [factor] PLeaS at width factor * width, factors config.pleas_factors
    num_merged: np.ndarray  #: [m] number of models merged
    multi_average: np.ndarray  #: [m] plain average of the first m models
    multi_wm: np.ndarray  #: [m] average after alignment to a common reference
