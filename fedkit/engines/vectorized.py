"""The vectorized trainer: all selected silos take each local step together, in numpy.

For FLamby's logistic regression and the MLP, per-step Python overhead dominates a torch loop
(thousands of 4-row batches), so the silos' parameters are stacked (silos, parameters) and one
step of every silo is a handful of batched array operations with hand-written gradients and
optimizers that follow torch's update rules (SGD with momentum/weight decay, Adam, AdamW). Rows
stay in one concatenated array indexed per silo, so memory grows linearly with the number of silos.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from fedkit.data.silos import Federation
from fedkit.training import ADAM_BETAS, ADAM_EPS, LocalTraining

GradFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]
MANY_SILOS = 64


def _residual(z: np.ndarray, sw: np.ndarray, neg_s: np.ndarray) -> np.ndarray:
    """``(sigmoid(z) - y) * w``, the logistic loss gradient at the logits, as ``s*w / (1 + exp(-s*z))``, s = 1 - 2y.

    ``sw = s*w`` and ``neg_s = -s`` come precomputed for the whole round, so a step costs four small
    array operations (scipy's expit would be one, but importing scipy.special costs 0.4 s of every
    notebook kernel's start-up); for y = 1 it avoids the cancellation of ``sigmoid(z) - 1``.
    ``exp`` overflowing to inf for confident right answers gives the right 0 (warning silenced in train).
    """
    t = np.multiply(z, neg_s)
    np.exp(t, out=t)
    t += 1
    return np.divide(sw, t, out=t)


def _logreg(d: int) -> tuple[GradFn, Forward, Forward, bool]:
    """Gradient and forward of logistic regression; rows carry a trailing 1 so ``[w, b]`` is one vector."""

    def grad(theta: np.ndarray, xb: np.ndarray, sw: np.ndarray, neg_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(theta) < MANY_SILOS:  # batched matmul wins for a few silos, einsum for many
            z = (xb @ theta[:, :, None])[:, :, 0]
            r = _residual(z, sw, neg_s)
            return (r[:, None, :] @ xb)[:, 0, :], z
        z = np.einsum("kbd,kd->kb", xb, theta)
        r = _residual(z, sw, neg_s)
        return np.einsum("kb,kbd->kd", r, xb), z

    def forward(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return x @ theta[:d] + theta[d]

    def forward_rows(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.einsum("rd,rd->r", x, theta[:, :d]) + theta[:, d]

    return grad, forward, forward_rows, True


def _mlp(d: int, h: int) -> tuple[GradFn, Forward, Forward, bool]:
    """Gradient and forward of Linear(d, h) → ReLU → Linear(h, 1), flat in torch's parameter order."""
    o = h * d + h  # offset of the output layer

    def grad(theta: np.ndarray, xb: np.ndarray, sw: np.ndarray, neg_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = len(theta)
        a = xb @ theta[:, : h * d].reshape(k, h, d).transpose(0, 2, 1) + theta[:, None, h * d : o]
        hid = np.maximum(a, 0)
        z = (hid @ theta[:, o : o + h, None])[:, :, 0] + theta[:, o + h, None]
        r = _residual(z, sw, neg_s)
        g = np.empty_like(theta)
        g[:, o : o + h] = (r[:, None, :] @ hid)[:, 0, :]
        g[:, o + h] = r.sum(axis=1)
        dh = r[:, :, None] * theta[:, None, o : o + h] * (a > 0)
        g[:, : h * d] = (dh.transpose(0, 2, 1) @ xb).reshape(k, h * d)
        g[:, h * d : o] = dh.sum(axis=1)
        return g, z

    def forward(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        hid = np.maximum(x @ theta[: h * d].reshape(h, d).T + theta[h * d : o], 0)
        return hid @ theta[o : o + h] + theta[o + h]

    def forward_rows(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        r = len(theta)
        hid = np.maximum(np.einsum("rd,rhd->rh", x, theta[:, : h * d].reshape(r, h, d)) + theta[:, h * d : o], 0)
        return np.einsum("rh,rh->r", hid, theta[:, o : o + h]) + theta[:, o + h]

    return grad, forward, forward_rows, False


def split_rows(values: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """``values`` cut into consecutive views of the given sizes (cheaper than ``np.split`` for many parts).

    Parameters
    ----------
    values
        The rows to cut.
    sizes
        Rows of each part, summing to ``len(values)``.
    """
    ends = np.cumsum(sizes).tolist()
    return [values[end - size : end] for size, end in zip(sizes, ends, strict=True)]


class VectorizedTrainer:
    """Batched local training of FLamby's logistic regression or the MLP over any subset of silos.

    Parameters
    ----------
    federation
        The silos.
    model
        ``"logreg"`` or ``"mlp"``.
    hidden
        Hidden units (``mlp`` only).
    """

    def __init__(self, federation: Federation, model: str, hidden: int) -> None:
        d = len(federation.features)
        self._grad, self._forward, self._forward_rows, with_ones = _logreg(d) if model == "logreg" else _mlp(d, hidden)
        self._x = np.concatenate([s.x_train for s in federation.silos]).astype(np.float32)
        if with_ones:
            self._x = np.hstack([self._x, np.ones((len(self._x), 1), dtype=np.float32)])
        self._y = np.concatenate([s.y_train for s in federation.silos]).astype(np.float32)
        sizes = [s.n_train for s in federation.silos]
        self._offset = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)

    def logits(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Logits of one model (flat parameters) on rows ``x`` (a diverged model's overflow gives inf: scored null)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._forward(params.astype(np.float32), x).astype(np.float64)

    def logits_each(self, params: np.ndarray, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Logits of model ``params[i]`` on rows ``xs[i]`` for every i, in one batched pass."""
        rows = np.concatenate(xs)
        group = np.repeat(np.arange(len(xs)), [len(x) for x in xs])
        with np.errstate(over="ignore", invalid="ignore"):
            z = self._forward_rows(np.asarray(params, dtype=np.float32)[group], rows).astype(np.float64)
        return split_rows(z, [len(x) for x in xs])

    def train(
        self,
        silos: Sequence[int],
        starts: np.ndarray,
        plans: Sequence[np.ndarray],
        hp: LocalTraining,
        *,
        prox_mu: float = 0.0,
        anchor: np.ndarray | None = None,
        corrections: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Train silos ``silos`` from ``starts`` (silos, parameters) along their batch ``plans``.

        Returns the new parameters, each silo's mean batch loss, and its step count.
        """
        k = len(silos)
        steps = np.array([len(p) for p in plans])
        total_steps, batch = int(steps.max()), plans[0].shape[1]
        local = np.full((total_steps, k, batch), -1, dtype=np.int64)  # step-major: each step is contiguous
        for i, plan in enumerate(plans):
            local[: len(plan), i] = plan
        valid = local >= 0
        rows = np.where(valid, local + self._offset[np.asarray(silos)][None, :, None], 0)
        counts = valid.sum(axis=2, keepdims=True)
        weights = (valid / np.maximum(counts, 1)).astype(np.float32)
        active = (counts > 0).astype(np.float32)  # (steps, silos, 1): 0 after a silo's last step
        xs, ys = self._x[rows], self._y[rows]  # every batch of the round, gathered once
        neg_s = 2 * ys - 1  # -(1 - 2y): the residual's sign, for every step at once
        sw = -neg_s * weights
        zs = np.empty((total_steps, k, batch), dtype=np.float32)
        step_lr = hp.lr * active
        theta = np.array(starts, dtype=np.float32)
        anchor32 = None if not prox_mu else np.asarray(anchor, dtype=np.float32)
        corr32 = None if corrections is None else np.asarray(corrections, dtype=np.float32)
        wd, momentum, (b1, b2) = hp.weight_decay, hp.momentum, ADAM_BETAS
        m = np.zeros_like(theta)
        v = np.zeros_like(theta)
        tmp = np.empty_like(theta)
        inv_bc1 = [1.0 / (1.0 - b1 ** (t + 1)) for t in range(total_steps)]  # Adam bias corrections, as torch
        sqrt_bc2 = [math.sqrt(1.0 - b2 ** (t + 1)) for t in range(total_steps)]
        grad, sgd, adamw = self._grad, hp.optimizer == "sgd", hp.optimizer == "adamw"
        # over: the residual's exp for confident right answers; invalid: a diverging run's inf - inf, which
        # validation reports (fedkit.privacy.validation) instead of a screen of warnings
        with np.errstate(over="ignore", invalid="ignore"):
            for s in range(total_steps):  # in-place updates: a few microseconds per operation at this size
                g, zs[s] = grad(theta, xs[s], sw[s], neg_s[s])
                if anchor32 is not None:
                    np.subtract(theta, anchor32, out=tmp)
                    tmp *= prox_mu
                    g += tmp
                if corr32 is not None:
                    g += corr32
                if sgd:
                    if wd:
                        np.multiply(theta, wd, out=tmp)
                        g += tmp
                    if momentum:
                        if s:
                            m *= momentum
                            m += g
                        else:
                            m[...] = g
                        g = m
                    np.multiply(g, step_lr[s], out=tmp)
                    theta -= tmp
                    continue
                if adamw:
                    np.multiply(step_lr[s], -wd, out=tmp[:, :1])
                    tmp[:, :1] += 1
                    theta *= tmp[:, :1]
                elif wd:
                    np.multiply(theta, wd, out=tmp)
                    g += tmp
                m *= b1
                np.multiply(g, 1 - b1, out=tmp)
                m += tmp
                v *= b2
                np.multiply(g, g, out=tmp)
                tmp *= 1 - b2
                v += tmp
                np.sqrt(v, out=tmp)
                tmp /= sqrt_bc2[s]
                tmp += ADAM_EPS
                np.divide(m, tmp, out=tmp)
                tmp *= step_lr[s]
                tmp *= inv_bc1[s]
                theta -= tmp
            step_loss = (weights * (np.logaddexp(0, zs) - ys * zs)).sum(axis=2)  # (steps, silos)
            loss_sum = (step_loss * active[:, :, 0]).sum(axis=0, dtype=np.float64)
        return theta, loss_sum / steps, steps
