"""Tests of ``landscape.optim.frugal`` (FRUGAL, Zmushko et al. 2024).

Reference: the authors' code (github.com/philipzmushko/FRUGAL, ``frugal/`` at the
authors' commit of 13 Nov 2024) is not on PyPI and imports ``transformers``, so
:class:`FrugalOracle` below transcribes its ``ProjOptimizer.step``, ``GaloreOptimizer``,
``CoordOptimizer``, ``BlockOptimizer`` (with ``AdamW._compute_update``) into NumPy float64:
refresh check on the first projected parameter's step, state reset at a refresh, weight decay
``p <- p (1 - lr wd)`` before the step, Adam with ``lr * proj_params_lr_scale``, the
state-free rule on ``G - project_back(project(G))``. The SVD subspace and the ascending /
descending block orders are computed by the oracle itself; the random draws (random frames,
random coordinates, random blocks) come from another generator in the reference (torch), so
the oracle is handed the draws our optimizer made (read from its state) and checks the
update rule around them; separate tests check those draws.
"""

from __future__ import annotations

import _optim_conventions as conv
import _optim_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from landscape.optim.frugal import frugal, scale_by_frugal

pytestmark = pytest.mark.single_dtype

SHAPES = {"w": (8, 6), "b": (6,), "c": (5, 4), "e": (4, 7)}
KEY = jax.random.PRNGKey(3)


class FrugalOracle:
    """NumPy transcription of the reference's ``{Galore,Coord,Block}AdamW.step``."""

    def __init__(self, params, *, lr, wd, density, gap, projection, reset, rule, s, s_free,
                 betas=(0.9, 0.999), eps=1e-8, block_order="random", draws=None):
        self.p = {k: v.copy() for k, v in params.items()}
        self.proj = [k for k in sorted(params) if params[k].ndim == 2]  # jax's leaf order
        self.regular = [k for k in sorted(params) if k not in self.proj]
        self.state = {k: {} for k in params}
        self.kw = dict(lr=lr, wd=wd, density=density, gap=gap, projection=projection,
                       reset=reset, rule=rule, s=s, s_free=s_free, betas=betas, eps=eps)
        self.block_order, self.draws, self.t = block_order, draws, 0
        self.num_active = round(len(self.proj) * density)

    def adam(self, grad, st, lr):
        (b1, b2), eps = self.kw["betas"], self.kw["eps"]
        st["m"] = b1 * st["m"] + (1 - b1) * grad
        st["v"] = b2 * st["v"] + (1 - b2) * grad * grad
        denom = np.sqrt(st["v"]) / np.sqrt(1 - b2 ** st["step"]) + eps
        return st["m"] / denom * (-lr / (1 - b1 ** st["step"]))

    # --- projectors (GaLoreProjector / CoordinateProjector, proj_side="std") -------------
    def new_projector(self, k, grad):
        n, m = grad.shape
        kind, density = self.kw["projection"], self.kw["density"]
        if kind in ("svd", "random"):
            side = "right" if n >= m else "left"
            rank = round((m if side == "right" else n) * density)
            if kind == "svd":
                u, _, vh = np.linalg.svd(grad, full_matrices=False)
                mat = vh[:rank] if side == "right" else u[:, :rank]
            else:
                mat = self.draws(self.t, k)
            return (side, mat)
        return (kind, self.draws(self.t, k))

    @staticmethod
    def down(proj, g):
        side, x = proj
        if side == "right":
            return g @ x.T
        if side == "left":
            return x.T @ g
        if side == "columns":
            return g[:, x]
        if side == "rows":
            return g[x]
        return g.reshape(-1)[x]

    @staticmethod
    def up(proj, a, shape):
        side, x = proj
        if side == "right":
            return a @ x
        if side == "left":
            return x @ a
        full = np.zeros(shape)
        if side == "columns":
            full[:, x] = a
        elif side == "rows":
            full[x] = a
        else:
            full.reshape(-1)[x] = a
        return full

    # --- _update_states ------------------------------------------------------------------
    def update_states(self, grads):
        if self.kw["projection"] == "block":
            return self.update_blocks()
        for k in self.proj:
            st = self.state[k]
            st["projector"] = self.new_projector(k, grads[k])
            if "step" not in st or self.kw["reset"]:
                low = self.down(st["projector"], grads[k])
                st.update(step=0, m=np.zeros_like(low), v=np.zeros_like(low))

    def update_blocks(self):
        for k in self.proj:
            self.state[k] = {"step": 0, "active": False}
        num, order = len(self.proj), self.block_order
        if order == "random":
            chosen = [i for i, k in enumerate(self.proj) if self.draws(self.t, k)]
        elif order == "ascending":
            start = getattr(self, "next_start", 0)
            chosen = [i % num for i in range(start, start + self.num_active)]
            self.next_start = start + self.num_active - (num if start + self.num_active >= num
                                                         else 0)
        else:
            start = getattr(self, "next_start", num - 1)
            chosen = [i % num for i in range(start, start - self.num_active, -1)]
            self.next_start = start - self.num_active + (num if start - self.num_active < 0
                                                         else 0)
        for i in chosen:
            k = self.proj[i]
            self.state[k] = {"step": 0, "active": True, "m": np.zeros(self.p[k].shape),
                             "v": np.zeros(self.p[k].shape)}

    def free(self, g, lr):
        if self.kw["rule"] == "sgd":
            return -lr * g
        if self.kw["rule"] == "sign_sgd":
            return -lr * np.sign(g)
        return np.zeros_like(g)

    # --- step ----------------------------------------------------------------------------
    def step(self, grads):
        kw = self.kw
        lr, wd = kw["lr"], kw["wd"]
        for k in self.regular:
            st = self.state[k]
            if not st:
                st.update(step=0, m=np.zeros_like(grads[k]), v=np.zeros_like(grads[k]))
            self.p[k] *= 1 - lr * wd
            st["step"] += 1
            self.p[k] += self.adam(grads[k], st, lr)
        first = self.state[self.proj[0]]
        if "step" not in first or first["step"] % kw["gap"] == 0:
            self.update_states(grads)
        active_lr, free_lr = lr * kw["s"], lr * kw["s"] * kw["s_free"]
        for k in self.proj:
            g, st = grads[k], self.state[k]
            self.p[k] *= 1 - lr * wd
            st["step"] += 1
            if kw["projection"] == "block":
                upd = self.adam(g, st, active_lr) if st["active"] else self.free(g, free_lr)
            else:
                low = self.down(st["projector"], g)
                upd = self.up(st["projector"], self.adam(low, st, active_lr), g.shape)
                upd = upd + self.free(g - self.up(st["projector"], low, g.shape), free_lr)
            self.p[k] += upd
        self.t += 1
        return {k: v.copy() for k, v in self.p.items()}


def _ours(tx, params, grads, key=None):
    """Params and the FRUGAL state's ``basis`` after every step (float64); ``key`` replaces
    the key in the initial state (same compiled step)."""
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v) for k, v in params.items()}
        state = tx.init(p)
        if key is not None:
            state = (state[0]._replace(key=key), *state[1:])
        step = _STEPS.setdefault(id(tx), (tx, jax.jit(tx.update)))[1]
        traj, bases = [], []
        for g in grads:
            u, state = step({k: jnp.asarray(v) for k, v in g.items()}, state, p)
            p = optax.apply_updates(p, u)
            traj.append({k: np.asarray(v) for k, v in p.items()})
            bases.append({k: np.asarray(v) for k, v in state[0].basis.items()})
    return traj, bases


_STEPS: dict = {}


CASES = [  # projection, rule, reset, block_order
    ("svd", "sign_sgd", True, "random"),
    ("random", "sgd", True, "random"),
    ("columns", "sign_sgd", False, "random"),
    ("rows", "no", True, "random"),
    ("entries", "sign_sgd", True, "random"),
    ("block", "sign_sgd", True, "random"),
    ("block", "sgd", True, "ascending"),
    ("block", "sign_sgd", True, "descending"),
]


@pytest.mark.parametrize("projection,rule,reset,order", CASES)
def test_matches_reference_oracle(projection, rule, reset, order):
    lr, wd, gap, steps, density = 1e-2, 0.1, 25, 300, 0.5
    grads = ref.gradients(SHAPES, steps)
    params = ref.initial_params(SHAPES)
    tx = frugal(lr, density=density, update_gap=gap, projection=projection,
                inactive_update_rule=rule, inactive_lr_scale=0.5, proj_params_lr_scale=1.5,
                reset_statistics=reset, key=KEY, block_order=order, weight_decay=wd)
    ours, bases = _ours(tx, params, grads)
    oracle = FrugalOracle(params, lr=lr, wd=wd, density=density, gap=gap,
                          projection=projection, reset=reset, rule=rule, s=1.5, s_free=0.5,
                          block_order=order, draws=lambda t, k: bases[t][k])
    theirs = [oracle.step(g) for g in grads]
    err = ref.max_relative_error(ours, theirs)
    print(f"frugal {projection}/{rule}/reset={reset}/{order} vs oracle: {err:.2e}")
    assert err <= 1e-10


def test_random_draws_and_refresh_schedule():
    """Random frames are orthonormal, coordinates distinct and in range, the subspace only
    changes at steps 0 mod T, and the draws depend on the key and on nothing else."""
    grads = ref.gradients(SHAPES, 12)
    params = ref.initial_params(SHAPES)
    draws, txs = {}, {}
    for projection in ("random", "entries", "block"):
        txs[projection] = frugal(1e-2, density=0.5, update_gap=4, projection=projection,
                                 key=KEY)
        for key in (KEY, jax.random.PRNGKey(4)):
            draws[projection, int(key[1])] = _ours(txs[projection], params, grads, key)[1]
    for t, b in enumerate(draws["random", 3]):
        np.testing.assert_allclose(b["w"] @ b["w"].T, np.eye(3), atol=1e-12)  # (3, 6) right
        np.testing.assert_allclose(b["e"].T @ b["e"], np.eye(2), atol=1e-12)  # (4, 2) left
        same = np.allclose(b["w"], draws["random", 3][t - 1]["w"])
        assert same == (t % 4 != 0), t
    for b in draws["entries", 3]:
        idx = b["w"]
        assert len(set(idx.tolist())) == 24 and idx.min() >= 0 and idx.max() < 48
    active = [sum(bool(b[k]) for k in ("c", "e", "w")) for b in draws["block", 3]]
    assert active == [2] * 12
    for projection in ("random", "entries"):
        a, b = draws[projection, 3], draws[projection, 4]
        assert not np.allclose(a[0]["w"], b[0]["w"])
    again = _ours(txs["entries"], params, grads)[1]
    np.testing.assert_array_equal(again[-1]["w"], draws["entries", 3][-1]["w"])


def test_errors():
    with pytest.raises(ValueError, match="key"):
        scale_by_frugal(projection="random")
    with pytest.raises(TypeError, match="static_args"):
        scale_by_frugal(density=jnp.asarray(0.5))
    with pytest.raises(ValueError, match="projection"):
        scale_by_frugal(projection="qr")
    with pytest.raises(ValueError, match="density"):
        scale_by_frugal(density=0.1, projection="columns", key=KEY).init({"w": jnp.ones((4, 3))})


def _factory(learning_rate, b1, b2, eps, inactive_lr_scale, update_gap, weight_decay):
    return frugal(learning_rate, density=0.5, update_gap=update_gap, projection="columns",
                  b1=b1, b2=b2, eps=eps, inactive_lr_scale=inactive_lr_scale, key=KEY,
                  weight_decay=weight_decay)


def test_conventions():
    sched = optax.exponential_decay(0.05, 200, 0.5)  # signSGD needs a decaying step
    conv.check_convergence(frugal(sched, density=0.5, update_gap=50),
                           rosenbrock_tx=frugal(0.01))  # 1-D: plain Adam
    shapes = {"w": (5, 4), "b": (4,), "c": (3, 6)}
    conv.check_dtypes_and_state(frugal(0.1, density=0.5, update_gap=3, projection="svd"),
                                shapes)
    conv.check_multisteps(frugal(0.1, density=0.5, update_gap=3, projection="entries",
                                 key=KEY), shapes)
    conv.check_inject_hyperparams(_factory, dict(
        learning_rate=0.1, b1=0.9, b2=0.99, eps=1e-8, inactive_lr_scale=0.5, update_gap=3,
        weight_decay=0.01), shapes, rtol=1e-5)
    conv.check_weight_decay_mask(lambda **kw: frugal(0.1, density=0.5, update_gap=3, **kw),
                                 {}, shapes)
