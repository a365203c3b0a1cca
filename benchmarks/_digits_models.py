"""The two benchmark models on scikit-learn digits, as plain JAX functions of a parameter pytree.

Both models are also defined in PyTorch (``_torch_models.py``) and the *same* weights are ported
there, so that every curvature quantity in the benchmark is computed for one and the same
function by every library.

* ``mlp``: 64 -> 32 -> 32 -> 10 with tanh (3,466 parameters; small enough for a dense float64
  Hessian, which is the oracle for trace and spectral density).
* ``cnn``: conv3x3(1->16) relu, conv3x3(16->32) relu, 2x2 average pool, dense 512->32 relu,
  dense 32->10 (21,546 parameters). No BatchNorm. Images are NHWC, kernels HWIO.

The loss is the mean softmax cross-entropy over the 512 training images (pixel values / 16).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from landscape import losses

NUM_EXAMPLES = 512
MLP_WIDTHS = (64, 32, 32, 10)
CNN_CHANNELS = (1, 16, 32)
CNN_HIDDEN = 32


def digits(num_examples: int = NUM_EXAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    """``num_examples`` random scikit-learn digits: ``x`` (n, 8, 8, 1) float32 in [0, 1],
    ``y`` (n,) int32 labels; the subset is fixed by ``seed``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    idx = np.random.default_rng(seed).permutation(len(data.target))[:num_examples]
    x = (data.images[idx] / 16.0).astype(np.float32)[..., None]
    return {"x": x, "y": data.target[idx].astype(np.int32)}


def _dense_init(key, fan_in, fan_out):
    w = jax.random.normal(key, (fan_in, fan_out)) * np.sqrt(1.0 / fan_in)
    return {"w": w, "b": jnp.zeros((fan_out,))}


def _conv_init(key, c_in, c_out):
    w = jax.random.normal(key, (3, 3, c_in, c_out)) * np.sqrt(2.0 / (9 * c_in))
    return {"w": w, "b": jnp.zeros((c_out,))}


def init_mlp(key) -> dict:
    keys = jax.random.split(key, len(MLP_WIDTHS) - 1)
    return {
        f"dense{i}": _dense_init(k, MLP_WIDTHS[i], MLP_WIDTHS[i + 1]) for i, k in enumerate(keys)
    }


def apply_mlp(params, x):
    h = x.reshape(x.shape[0], -1)
    n = len(MLP_WIDTHS) - 1
    for i in range(n):
        layer = params[f"dense{i}"]
        h = h @ layer["w"] + layer["b"]
        if i < n - 1:
            h = jnp.tanh(h)
    return h


def init_cnn(key) -> dict:
    k1, k2, k3, k4 = jax.random.split(key, 4)
    c0, c1, c2 = CNN_CHANNELS
    return {
        "conv0": _conv_init(k1, c0, c1),
        "conv1": _conv_init(k2, c1, c2),
        "dense0": _dense_init(k3, 4 * 4 * c2, CNN_HIDDEN),
        "dense1": _dense_init(k4, CNN_HIDDEN, 10),
    }


def _conv(x, layer):
    y = jax.lax.conv_general_dilated(
        x, layer["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + layer["b"]


def apply_cnn(params, x):
    h = jax.nn.relu(_conv(x, params["conv0"]))
    h = jax.nn.relu(_conv(h, params["conv1"]))
    n, hh, ww, c = h.shape
    h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))  # 2x2 average pool
    h = h.reshape(n, -1)  # (h, w, c) order
    h = jax.nn.relu(h @ params["dense0"]["w"] + params["dense0"]["b"])
    return h @ params["dense1"]["w"] + params["dense1"]["b"]


MODELS = {"mlp": (init_mlp, apply_mlp), "cnn": (init_cnn, apply_cnn)}
TRAIN_STEPS = {"mlp": 100, "cnn": 30}  # Adam(3e-3) full-batch steps: train loss ~0.1 and ~0.02


def make_loss(apply_fn):
    """``loss_fn(params, batch)``: mean softmax cross-entropy of ``apply_fn`` on the batch."""

    def loss_fn(params, batch):
        return losses.softmax_cross_entropy(apply_fn(params, batch["x"]), batch["y"])

    return loss_fn


def trained_params(name: str, data: dict, *, seed: int = 0, steps: int | None = None,
                   lr: float = 3e-3):
    """Initialise model ``name`` and train it full-batch with Adam for ``steps`` steps.

    A briefly trained network has the Hessian structure the benchmark is about (a few outliers
    above a bulk near zero); at initialisation the spectrum is less representative.
    ``steps=None`` uses ``TRAIN_STEPS[name]``. Returns ``(params, final_loss)`` in float32.
    """
    init_fn, apply_fn = MODELS[name]
    steps = TRAIN_STEPS[name] if steps is None else steps
    params = init_fn(jax.random.key(seed))
    loss_fn = make_loss(apply_fn)
    opt = optax.adam(lr)
    batch = jax.tree.map(jnp.asarray, data)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss_fn)(p, batch)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s

    # A Python loop over a jitted step: XLA:CPU runs these convolutions far slower inside
    # lax.scan (measured ~30x on this machine), and ``steps`` is a static setup constant.
    state = opt.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    return params, float(loss_fn(params, batch))


def _conv_shifted(x, layer):
    """The same 'SAME' 3x3 convolution as ``_conv``, written as 9 shifted matmuls.

    XLA:CPU runs the derivative convolutions of ``lax.conv_general_dilated`` 25-50x slower
    inside ``lax.while_loop``/``scan`` bodies than at the top level (they keep non-canonical
    dimension labels there and miss the fast Eigen kernel; cf. jax-ml/jax#12868). Written as
    pads, slices and matmuls, the function and its derivatives avoid convolutions entirely.
    """
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = layer["b"]
    for dh in range(3):
        for dw in range(3):
            out = out + xp[:, dh : dh + h, dw : dw + w, :] @ layer["w"][dh, dw]
    return out


def apply_cnn_shifted(params, x):
    """``apply_cnn`` with ``_conv_shifted``: the same function of the same parameters."""
    h = jax.nn.relu(_conv_shifted(x, params["conv0"]))
    h = jax.nn.relu(_conv_shifted(h, params["conv1"]))
    n, hh, ww, c = h.shape
    h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))
    h = h.reshape(n, -1)
    h = jax.nn.relu(h @ params["dense0"]["w"] + params["dense0"]["b"])
    return h @ params["dense1"]["w"] + params["dense1"]["b"]
