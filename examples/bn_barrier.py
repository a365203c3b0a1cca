"""Loss barrier between two BatchNorm ResNet-20s: BatchNorm statistics interpolated vs recomputed.

Two ResNet-20s (``landscape.models.ResNet20``, BatchNorm, projection shortcuts) are trained from
different seeds on scikit-learn digits with the right BatchNorm pattern (a ``mode="train"`` loss
and ``model_state=``, so the running statistics are learned). Each endpoint's statistics are
then reset to the exact population statistics of the training set (one train-mode pass, no
momentum), so that both policies below see the same endpoints. Along the linear path
``theta(alpha) = (1 - alpha) theta_A + alpha theta_B`` the eval-mode loss is measured with

* ``state_policy="interpolate"``: the statistics lerped like the weights;
* ``state_policy="recompute"``: the statistics recomputed for ``theta(alpha)`` on the training
  set (``connectivity.batchnorm_reset``, the "reset" of BatchNorm statistics in Jordan et al.
  2023),

both for the raw pair and after aligning B to A by weight matching (``resnet_spec``; the
statistics are permuted with their channels). Interpolated statistics are those of neither the
midpoint network nor its data: the variance of a channel of the averaged network is much smaller
than the average of the endpoints' variances ("variance collapse", Jordan, Sedghi, Saukh,
Entezari, Neyshabur 2023, "REPAIR: REnormalizing Permuted Activations for Interpolation
Repair"), so the expected result is a much higher mid-path loss with interpolated statistics.

Run ``python examples/bn_barrier.py`` (default size) or ``--smoke`` (seconds). ``main`` returns
the paths, barriers and endpoint losses.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import optax
from flax import nnx

from landscape import connectivity, data, losses, models, train
from landscape.models.layers import BATCHNORM_MOMENTUM
from landscape.nnx import functional, loss_fn

POLICIES = ("interpolate", "recompute")


@dataclasses.dataclass(frozen=True)
class Config:
    base_width: int = 16
    num_train: int | None = None  # None: all 1438 training digits
    num_test: int | None = None  # None: all 359 test digits
    num_steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.0  # decoupled (AdamW) when positive
    num_points: int = 11  # odd, so that alpha = 1/2 is on the grid
    seeds: tuple[int, int] = (0, 1)
    test_metrics: bool = True  # test loss and error along the paths

    @classmethod
    def smoke(cls) -> Config:
        return cls(base_width=4, num_train=256, num_test=128, num_steps=30, batch_size=64,
                   num_points=5, test_metrics=False)


def _head(tree, n):
    return tree if n is None else jax.tree.map(lambda a: a[:n], tree)


def _train_pair(cfg: Config, train_set):
    """Two trained ResNet-20s (same architecture, different seeds): ``(template, [(p, s)] * 2)``.

    Both share one train-mode loss (the same graph), so the training step compiles once.
    """
    build = lambda seed: models.ResNet20(10, in_channels=1, norm="batch",
                                         base_width=cfg.base_width, rngs=nnx.Rngs(seed))
    nets = [build(seed) for seed in cfg.seeds]
    lf, _, _ = loss_fn(nets[0], "cross_entropy", mode="train")
    opt = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    trained = []
    for seed, net in zip(cfg.seeds, nets, strict=True):
        init = functional(net, mode="train")
        result = train.train(lf, init.params, opt, train_set, key=jax.random.key(100 + seed),
                             num_steps=cfg.num_steps, batch_size=cfg.batch_size,
                             model_state=init.state, progress=False)
        trained.append((result.params, result.model_state))
    return nets[0], trained


def main(smoke: bool = False, cfg: Config | None = None) -> dict:
    """Train the pair, measure both paths under both policies, print and return the results."""
    cfg = cfg or (Config.smoke() if smoke else Config())
    t0 = time.perf_counter()
    train_set, test_set = data.digits(jax.random.key(0))
    train_set, test_set = _head(train_set, cfg.num_train), _head(test_set, cfg.num_test)
    template, trained = _train_pair(cfg, train_set)

    fm = functional(template, mode="eval")
    reset = connectivity.batchnorm_reset(functional(template, mode="train").apply_with_state,
                                         BATCHNORM_MOMENTUM)

    def eval_loss(params, batch, state):
        return losses.softmax_cross_entropy(fm.apply(params, batch["x"], state=state), batch["y"])

    def eval_error(params, batch, state):
        return losses.error(fm.apply(params, batch["x"], state=state), batch["y"])

    endpoints = _endpoints(trained, reset, eval_loss, train_set)
    (pa, sa), (pb, sb) = ((e["params"], e["state"]) for e in endpoints)
    pairs = {"raw": (pb, sb), "aligned": _align(pa, pb, sb)}
    extra = dict(error_fn=eval_error, test_dataset=test_set) if cfg.test_metrics else {}
    paths, barriers = {}, {}
    for pair, (qb, tb) in pairs.items():
        for policy in POLICIES:
            path = connectivity.interpolate(
                eval_loss, pa, qb, train_set, cfg.num_points, state_a=sa, state_b=tb,
                state_policy=policy, recompute_state=reset if policy == "recompute" else None,
                **extra)
            paths[pair, policy], barriers[pair, policy] = path, _barriers(path, cfg)
    if cfg.test_metrics:
        ends = paths["raw", "interpolate"].test_errors
        for e, err in zip(endpoints, (ends[0], ends[-1]), strict=True):
            e["test_error"] = float(err)
    seconds = time.perf_counter() - t0
    _report(cfg, endpoints, barriers, seconds)
    return {"config": cfg, "endpoints": endpoints, "paths": paths, "barriers": barriers,
            "seconds": seconds}


def _endpoints(trained, reset, eval_loss, train_set):
    """Each model with its statistics reset to the exact population statistics of the
    training set (what the recompute policy gives at alpha = 0 and 1), and the train loss
    with those and with the learned running averages."""
    out = []
    reset_jit, loss_jit = jax.jit(reset), jax.jit(eval_loss)
    for params, running in trained:
        state = reset_jit(params, running, train_set)
        out.append({"params": params, "state": state,
                    "loss_running_stats": float(loss_jit(params, train_set, running)),
                    "loss": float(loss_jit(params, train_set, state))})
    return out


def _align(pa, pb, sb):
    """B permuted to A by weight matching; its BatchNorm statistics follow their channels."""
    wm = connectivity.weight_matching(connectivity.resnet_spec(pa), pa, pb,
                                      key=jax.random.key(7))
    tree = {"params": pb, "state": sb}
    out = connectivity.apply_permutation(connectivity.resnet_spec(tree), wm.perm, tree)
    return out["params"], out["state"]


def _barriers(path, cfg):
    """``max_minus_mean`` barriers of the path and its mid-path train loss."""
    out = {"loss": float(connectivity.barrier(path).value),
           "mid_loss": float(path.losses[cfg.num_points // 2])}
    if cfg.test_metrics:
        out["test_loss"] = float(connectivity.barrier(path, split="test").value)
        out["test_error"] = float(connectivity.barrier(path, metric="error",
                                                       split="test").value)
    return out


def _report(cfg, endpoints, barriers, seconds):
    print(f"ResNet-20 (base width {cfg.base_width}, BatchNorm) on digits, "
          f"{cfg.num_steps} Adam steps per model; {seconds:.0f} s")
    for name, e in zip("AB", endpoints, strict=True):
        test = f", test error {e['test_error']:.4f}" if "test_error" in e else ""
        print(f"  model {name}: train loss {e['loss']:.2e} (population statistics), "
              f"{e['loss_running_stats']:.2e} (running averages){test}")
    print(f"  {'pair':8s} {'BN statistics':12s} {'L(1/2)':>8s} {'barrier':>8s} "
          f"{'test barrier':>12s} {'test err barrier':>16s}")
    for (pair, policy), b in barriers.items():
        test = (f"{b['test_loss']:12.4f} {b['test_error']:16.4f}" if cfg.test_metrics
                else f"{'-':>12s} {'-':>16s}")
        print(f"  {pair:8s} {policy:12s} {b['mid_loss']:8.4f} {b['loss']:8.4f} {test}")
    print("  (barrier: max_alpha L(alpha) - (L(0) + L(1)) / 2; L(1/2): train loss at the "
          "midpoint)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds")
    main(smoke=parser.parse_args().smoke)
