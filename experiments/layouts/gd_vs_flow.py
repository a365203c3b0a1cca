"""Metric layout of ``gd_vs_flow``.

Arrays indexed ``[eta, record]`` follow ``config.learning_rates`` and ``steps``; lists indexed
``[eta]`` follow ``config.learning_rates``. Record ``j`` of step size ``eta`` compares GD after
``steps[j]`` steps with gradient flow at time ``steps[j] * eta``.
"""

from typing import TypedDict

import numpy as np


class Summary(TypedDict):
    """Per step size (lists ``[eta]``), and the cost of the one flow run."""

    threshold: list[float]  #: [eta] 2 / eta
    crossing_step: list[int]  #: [eta] first recorded step with GD sharpness >= 2/eta (-1: none)
    flow_crossing_step: list[int]  #: [eta] same for the flow's sharpness at time t eta
    distance_at_crossing: list[float]  #: [eta] distance at crossing_step (NaN if none)
    max_distance_before: list[float]  #: [eta] largest distance before crossing_step
    final_distance: list[float]  #: [eta] distance at the last record
    relative_distance_before: list[float]  #: [eta] max over j < crossing of distance / travel
    relative_final_distance: list[float]  #: [eta] final distance / final travel
    flow_num_steps: int  #: RK4 steps of the flow run (to the largest time)
    flow_num_grads: int  #: full-dataset gradients of the flow run
    flow_num_hvps: int  #: Hessian-vector products of the flow's sharpness tracking
    flow_max_error_estimate: float  #: largest embedded local error estimate of a record segment
    num_params: int


class Metrics(TypedDict):
    steps: np.ndarray  #: [record] GD steps 0, record_every, ... < num_steps
    distance: np.ndarray  #: [eta, record] ||w_GD(t) - w_flow(t eta)||
    travel: np.ndarray  #: [eta, record] ||w_flow(t eta) - w_0||, the scale of the motion
    gd_sharpness: np.ndarray  #: [eta, record] lambda_max(H(w_GD(t)))
    flow_sharpness: np.ndarray  #: [eta, record] lambda_max(H(w_flow(t eta)))
    gd_loss: np.ndarray  #: [eta, record] full-dataset loss along GD
    flow_loss: np.ndarray  #: [eta, record] along the flow at t eta
    summary: Summary
