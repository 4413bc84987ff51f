"""The vectorized trainer: all selected silos take each local step together, in numpy — of one run or of many.

For FLamby's logistic regression and the MLP, per-step Python overhead dominates a torch loop
(thousands of 4-row batches), so the silos' parameters are stacked (rows, parameters) and one
step of every silo is a handful of batched array operations with hand-written gradients and
optimizers that follow torch's update rules (SGD with momentum/weight decay, Adam, AdamW). Rows
of data stay in one concatenated array indexed per silo, so memory grows linearly with the number
of silos, and each step gathers only its own batches.

A row need not be a silo of the same run: :func:`train_many` stacks the jobs of many runs (a
sweep) into one call, with each row's learning rate, optimizer, momentum, weight decay, proximal
term and SCAFFOLD correction held per row. Every operation acts on each row alone (``np.matvec``
and ``np.vecmat`` compute row by row, as the batched matmul does), so a run's rows come out bit for
bit as when the run trains alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedkit.data.silos import Federation
from fedkit.training import ADAM_BETAS, ADAM_EPS, LocalTraining, PrivateSteps, TrainJob

GradFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]
Trained = tuple[np.ndarray, np.ndarray, np.ndarray]  # new parameters (silos, P), mean batch loss, step count


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


def _softplus(z: np.ndarray) -> np.ndarray:
    """``log(1 + exp(z))``, stable for any ``z``, as ``log1p(exp(-|z|)) + max(z, 0)``.

    Five times faster than ``np.logaddexp(0, z)`` on a round's logits (numpy vectorizes ``exp`` and
    ``log1p`` but not ``logaddexp``); equal to it within float32 rounding.
    """
    t = np.abs(z)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    t += np.maximum(z, 0)
    return t


def _logreg(d: int) -> tuple[GradFn, Forward, Forward, bool]:
    """Gradient and forward of logistic regression; rows carry a trailing 1 so ``[w, b]`` is one vector."""

    def grad(theta: np.ndarray, xb: np.ndarray, sw: np.ndarray, neg_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.matvec(xb, theta)  # row by row, as (xb @ theta[:, :, None]) computes it, and faster for many rows
        return np.vecmat(_residual(z, sw, neg_s), xb), z

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
        np.matmul(dh.transpose(0, 2, 1), xb, out=g[:, : h * d].reshape(k, h, d))
        bias = g[:, h * d : o]
        bias[...] = dh[:, 0]
        for i in range(1, dh.shape[1]):  # dh.sum(axis=1) in the same order, without its slow strided reduction
            bias += dh[:, i]
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


@dataclass(frozen=True)
class RowSettings:
    """The local-training settings of each stacked row, as float32 columns of shape (rows, 1).

    Parameters
    ----------
    lr
        Each row's learning rate.
    momentum
        SGD momentum (0 for Adam rows).
    weight_decay
        L2 weight decay added to the gradient (SGD and Adam rows).
    decoupled
        AdamW's decoupled weight decay (0 for the other rows).
    prox_mu
        FedProx's proximal weight (0 without).
    n_sgd
        Rows ``[0, n_sgd)`` take SGD steps, the others Adam or AdamW steps.
    anchor
        FedProx's anchor of each row (rows, P); None when no row has a proximal term.
    corrections
        SCAFFOLD's gradient correction of each row (rows, P); None when no row has one.
    """

    lr: np.ndarray
    momentum: np.ndarray
    weight_decay: np.ndarray
    decoupled: np.ndarray
    prox_mu: np.ndarray
    n_sgd: int
    anchor: np.ndarray | None = None
    corrections: np.ndarray | None = None

    @classmethod
    def of(cls, jobs: Sequence[TrainJob]) -> RowSettings:
        """The settings of ``jobs`` stacked in order, one row per silo of each job.

        Parameters
        ----------
        jobs
            The jobs, every SGD job before the Adam/AdamW ones.

        Returns
        -------
        RowSettings
            One row per silo of each job, in order.
        """
        counts = [len(job.silos) for job in jobs]

        def column(values: Sequence[float]) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=np.float32), counts)[:, None]

        def stacked(parts: list[np.ndarray | None], used: bool) -> np.ndarray | None:
            if not used:
                return None
            width = next(p.shape[-1] for p in parts if p is not None)
            zero = np.zeros((1, width), dtype=np.float32)
            rows = [np.broadcast_to(zero if p is None else p, (n, width)) for p, n in zip(parts, counts, strict=True)]
            return np.concatenate(rows).astype(np.float32)

        sgd = [job.hp.optimizer == "sgd" for job in jobs]
        if sgd != sorted(sgd, reverse=True):
            raise ValueError("RowSettings.of needs the SGD jobs first")  # train_many orders them
        wd = [job.hp.weight_decay for job in jobs]
        adamw = [job.hp.optimizer == "adamw" for job in jobs]
        anchors = [None if not job.prox_mu else np.asarray(job.anchor)[None, :] for job in jobs]
        return cls(
            lr=column([job.hp.lr for job in jobs]),
            momentum=column([job.hp.momentum for job in jobs]),
            weight_decay=column([0.0 if w else d for d, w in zip(wd, adamw, strict=True)]),
            decoupled=column([d if w else 0.0 for d, w in zip(wd, adamw, strict=True)]),
            prox_mu=column([job.prox_mu for job in jobs]),
            n_sgd=sum(n for n, s in zip(counts, sgd, strict=True) if s),
            anchor=stacked(anchors, any(job.prox_mu for job in jobs)),
            corrections=stacked([job.corrections for job in jobs], any(j.corrections is not None for j in jobs)),
        )


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
        self.shape = (model, d, hidden if model == "mlp" else 0)
        self._grad, self._forward, self._forward_rows, with_ones = _logreg(d) if model == "logreg" else _mlp(d, hidden)
        self._x = np.concatenate([s.x_train for s in federation.silos]).astype(np.float32)
        if with_ones:
            self._x = np.hstack([self._x, np.ones((len(self._x), 1), dtype=np.float32)])
        self._y = np.concatenate([s.y_train for s in federation.silos]).astype(np.float32)
        sizes = [s.n_train for s in federation.silos]
        self._offset = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)

    @classmethod
    def stacked(cls, trainers: Sequence[VectorizedTrainer]) -> tuple[VectorizedTrainer, list[int]]:
        """One trainer over the rows of every trainer in ``trainers`` (one model shape), and each one's first silo.

        Parameters
        ----------
        trainers
            Trainers of one model shape, over any federations.

        Returns
        -------
        tuple of VectorizedTrainer and list of int
            The stacked trainer, and where each trainer's silos start in it: silo ``i`` of
            ``trainers[t]`` is silo ``firsts[t] + i``.
        """
        shapes = {t.shape for t in trainers}
        if len(shapes) != 1:
            raise ValueError(f"stacked trainers need one model shape; got {sorted(shapes)}")
        table = cls.__new__(cls)
        table.shape, table._grad = trainers[0].shape, trainers[0]._grad
        table._forward, table._forward_rows = trainers[0]._forward, trainers[0]._forward_rows
        table._x = np.concatenate([t._x for t in trainers]) if len(trainers) > 1 else trainers[0]._x
        table._y = np.concatenate([t._y for t in trainers]) if len(trainers) > 1 else trainers[0]._y
        rows = np.cumsum([0] + [len(t._y) for t in trainers[:-1]])
        table._offset = np.concatenate([t._offset + r for t, r in zip(trainers, rows, strict=True)])
        firsts = np.cumsum([0] + [len(t._offset) for t in trainers[:-1]]).tolist()
        return table, firsts

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
        private: PrivateSteps | None = None,
    ) -> Trained:
        """Train silos ``silos`` from ``starts`` (silos, parameters) along their batch ``plans``.

        Returns the new parameters, each silo's mean batch loss, and its step count. With ``private``
        every step is a DP-SGD step (:class:`~fedkit.training.PrivateSteps`).
        """
        job = TrainJob(list(silos), starts, list(plans), hp, prox_mu, anchor, corrections)
        return self.train_rows(list(silos), starts, plans, RowSettings.of([job]), private=private)

    def train_rows(
        self,
        silos: Sequence[int],
        starts: np.ndarray,
        plans: Sequence[np.ndarray],
        settings: RowSettings,
        *,
        with_loss: bool = True,
        private: PrivateSteps | None = None,
    ) -> Trained:
        """Train row ``j`` (silo ``silos[j]`` from ``starts[j]`` along ``plans[j]``) with its own ``settings``.

        Steps go in blocks of about :data:`BLOCK_ENTRIES` batch entries, so memory does not grow
        with the number of steps.

        Parameters
        ----------
        silos
            The silo of each row (a silo may appear in several rows).
        starts
            Each row's parameters before training, (rows, P).
        plans
            Each row's batch plan (steps, batch size), ``-1`` for padding.
        settings
            Each row's optimizer, hyperparameters, proximal term and correction.
        with_loss
            Also compute each row's mean batch loss (NaN without).
        private
            DP-SGD's per-example clipping and noise for every row (one per silo, in order), else None: each
            step's batch-mean gradient is replaced by :func:`fedkit.privacy.dpsgd.noisy_mean`, and a step
            whose Poisson batch is empty still takes its noisy step.

        Returns
        -------
        tuple of numpy.ndarray
            The new parameters (rows, P), each row's mean batch loss and its step count.
        """
        k = len(silos)
        steps = np.array([len(p) for p in plans])
        total_steps, batch = int(steps.max()), max(p.shape[1] for p in plans)
        offsets = self._offset[np.asarray(silos)][None, :, None]
        theta = np.array(starts, dtype=np.float32)
        descent = _Descent(theta, settings, total_steps)
        xb = np.empty((k, batch, self._x.shape[1]), dtype=np.float32)  # one step's batches, when gathered per step
        loss_sum = np.zeros(k)
        block = max(1, BLOCK_ENTRIES // (k * batch))
        for first in range(0, total_steps, block):
            local = _plan_block(plans, first, min(first + block, total_steps), batch)
            valid = local >= 0
            rows = local + offsets
            np.copyto(rows, 0, where=~valid)
            counts = _count_valid(valid)
            weights = valid * (1.0 / np.maximum(counts, 1)).astype(np.float32)
            active = (counts > 0).astype(np.float32)  # (steps, rows, 1): 0 after a row's last step
            grad = self._grad
            if private is not None:  # DP-SGD: a step per planned step, even with an empty batch
                stop = first + len(local)
                active = (np.arange(first, stop)[:, None, None] < steps[None, :, None]).astype(np.float32)
                grad = _PrivateGrad(self.shape, private, len(local), theta.shape[1])
            ys = self._y[rows]
            neg_s = 2 * ys - 1  # -(1 - 2y): the residual's sign, for every step at once
            sw = -neg_s * weights
            zs = np.empty(local.shape, dtype=np.float32) if with_loss else None
            if rows.size * self._x.shape[1] <= GATHER_AT_ONCE:  # a block that fits a cache: one gather for all steps
                batches: np.ndarray | _PerStep = np.take(self._x, rows, axis=0)
            else:  # many rows: each step gathers its own batches, in cache, into one buffer
                batches = _PerStep(self._x, rows, xb)
            descent.run(first, grad, batches, sw, neg_s, settings.lr * active, zs)
            if zs is not None:
                with np.errstate(over="ignore", invalid="ignore"):  # a diverged row's inf - inf: NaN, reported
                    step_loss = (weights * (_softplus(zs) - ys * zs)).sum(axis=2)  # (steps, rows): mean BCE per batch
                # summed step after step in float64, as one sum over all steps would
                loss_sum = np.vstack([loss_sum[None, :], step_loss * active[:, :, 0]]).sum(axis=0, dtype=np.float64)
        if not with_loss:
            return theta, np.full(k, np.nan), steps
        return theta, loss_sum / steps, steps


BLOCK_ENTRIES = 1 << 20
"""Batch entries (steps × rows × batch size) prepared at once by :meth:`VectorizedTrainer.train_rows`."""
GATHER_AT_ONCE = 1 << 18
"""Features (entries × columns) up to which a block's batches are gathered in one call rather than step by step."""


class _PrivateGrad:
    """A :data:`GradFn` for a block of DP-SGD steps: each call is the next step's noisy mean of clipped gradients.

    The block's standard normals are drawn up front, ``(steps, parameters)`` from each row's own stream
    (the draws of consecutive blocks continue each stream, so a silo's noise is the same trained alone
    or with others); the trainer calls it once per step, in order.
    """

    def __init__(self, shape: tuple[str, int, int], private: PrivateSteps, steps: int, n_params: int) -> None:
        self.model, self.hidden = shape[0], shape[2]
        self.private = private
        normals = [stream.standard_normal((steps, n_params)) for stream in private.streams]
        self.normals = np.stack(normals, axis=1)  # (steps, rows, P)
        self.std = np.asarray(private.noise_multipliers, dtype=np.float64) * private.clip
        self.step = 0

    def __call__(
        self, theta: np.ndarray, xb: np.ndarray, sw: np.ndarray, neg_s: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        from fedkit.privacy.dpsgd import example_grads_and_logits, noisy_mean

        y = (neg_s + 1) * 0.5  # neg_s = 2y - 1
        grads, z = example_grads_and_logits(self.model, theta, xb, y, hidden=self.hidden)
        mean = noisy_mean(
            grads,
            sw != 0,  # the batch's real rows (padding has weight 0)
            clip=self.private.clip,
            std_normal=self.normals[self.step],
            noise_std=self.std,
            expected_batch_size=np.asarray(self.private.expected_batch_sizes),
        )
        self.step += 1
        return mean.astype(np.float32), z


class _PerStep:
    """The batches of step ``i`` gathered on demand: ``x[rows[i]]`` written into the buffer ``out``."""

    def __init__(self, x: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
        self.x, self.rows, self.out = x, rows, out

    def __getitem__(self, i: int) -> np.ndarray:
        return np.take(self.x, self.rows[i], axis=0, out=self.out)

    def __len__(self) -> int:
        return len(self.rows)


def _count_valid(valid: np.ndarray) -> np.ndarray:
    """``valid.sum(axis=2, keepdims=True)``: the entries of each batch, added column by column for small batches.

    A reduction over a short last axis is several times slower in numpy than a few whole-array additions.
    """
    if valid.shape[2] > 16:
        return valid.sum(axis=2, keepdims=True)
    counts = valid[:, :, :1].astype(np.int32)
    for i in range(1, valid.shape[2]):
        counts += valid[:, :, i : i + 1]
    return counts


def _plan_block(plans: Sequence[np.ndarray], first: int, stop: int, batch: int) -> np.ndarray:
    """Steps ``first:stop`` of every plan, step-major (steps, rows, batch), ``-1`` past a plan's end or batch."""
    if all(len(p) >= stop and p.shape[1] == batch for p in plans):
        return np.stack([p[first:stop] for p in plans], axis=1)
    local = np.full((stop - first, len(plans), batch), -1, dtype=np.int64)
    for i, plan in enumerate(plans):
        part = plan[first:stop]
        local[: len(part), i, : plan.shape[1]] = part
    return local


class _Descent:
    """The optimizer state of a stacked training call, and its steps, in place on ``theta`` (rows, P).

    SGD rows keep a momentum buffer, Adam/AdamW rows their moments; both persist across
    :meth:`run` calls, which take consecutive blocks of steps. In-place operations on
    preallocated arrays: a few microseconds each at this size. A setting no row uses costs
    nothing; a row whose value is 0 among rows that use it gets exactly its plain update
    (adding ``0 * x``, or momentum ``0 * m``).
    """

    def __init__(self, theta: np.ndarray, settings: RowSettings, total_steps: int) -> None:
        self.theta, self.settings = theta, settings
        n, b1, b2 = settings.n_sgd, *ADAM_BETAS
        self.m, self.v, self.tmp = np.zeros_like(theta), np.zeros_like(theta), np.empty_like(theta)
        self.sgd, self.adam = slice(0, n), slice(n, len(theta))
        self.momentum, self.wd_s = settings.momentum[self.sgd], settings.weight_decay[self.sgd]
        self.wd_a, self.neg_decoupled = settings.weight_decay[self.adam], -settings.decoupled[self.adam]
        self.inv_bc1 = [1.0 / (1.0 - b1 ** (t + 1)) for t in range(total_steps)]  # Adam bias corrections, as torch
        self.sqrt_bc2 = [math.sqrt(1.0 - b2 ** (t + 1)) for t in range(total_steps)]

    def run(
        self,
        first: int,
        grad: GradFn,
        batches: np.ndarray | _PerStep,
        sw: np.ndarray,
        neg_s: np.ndarray,
        step_lr: np.ndarray,
        zs: np.ndarray | None,
    ) -> None:
        """Steps ``first, first + 1, ...``, one per entry of ``batches`` (each step's rows' features)."""
        theta, settings, tmp = self.theta, self.settings, self.tmp
        sgd, adam = self.sgd, self.adam
        theta_s, m_s, tmp_s = theta[sgd], self.m[sgd], tmp[sgd]
        theta_a, m_a, v_a, tmp_a = theta[adam], self.m[adam], self.v[adam], tmp[adam]
        lr_s, lr_a = step_lr[:, sgd], step_lr[:, adam]
        use_momentum, use_wd_s = bool(self.momentum.any()), bool(self.wd_s.any())
        use_wd_a, use_decoupled = bool(self.wd_a.any()), bool(self.neg_decoupled.any())
        prox = settings.prox_mu if settings.anchor is not None else None
        n_sgd, b1, b2 = settings.n_sgd, *ADAM_BETAS
        # over: the residual's exp for confident right answers; invalid: a diverging run's inf - inf, which
        # validation reports (fedkit.privacy.validation) instead of a screen of warnings
        with np.errstate(over="ignore", invalid="ignore"):
            for i in range(len(batches)):
                s = first + i
                g, z = grad(theta, batches[i], sw[i], neg_s[i])
                if zs is not None:
                    zs[i] = z
                if prox is not None:
                    np.subtract(theta, settings.anchor, out=tmp)
                    tmp *= prox
                    g += tmp
                if settings.corrections is not None:
                    g += settings.corrections
                if n_sgd:
                    g_s = g[sgd]
                    if use_wd_s:
                        np.multiply(theta_s, self.wd_s, out=tmp_s)
                        g_s += tmp_s
                    if use_momentum:
                        if s:
                            m_s *= self.momentum
                            m_s += g_s
                        else:
                            m_s[...] = g_s
                        g_s = m_s
                    np.multiply(g_s, lr_s[i], out=tmp_s)
                    theta_s -= tmp_s
                if n_sgd == len(theta):
                    continue
                g_a = g[adam]
                if use_decoupled:  # AdamW: theta *= 1 - lr * wd, before the Adam step
                    factor = tmp_a[:, :1]
                    np.multiply(lr_a[i], self.neg_decoupled, out=factor)
                    factor += 1
                    theta_a *= factor
                if use_wd_a:
                    np.multiply(theta_a, self.wd_a, out=tmp_a)
                    g_a += tmp_a
                m_a *= b1
                np.multiply(g_a, 1 - b1, out=tmp_a)
                m_a += tmp_a
                v_a *= b2
                np.multiply(g_a, g_a, out=tmp_a)
                tmp_a *= 1 - b2
                v_a += tmp_a
                np.sqrt(v_a, out=tmp_a)
                tmp_a /= self.sqrt_bc2[s]
                tmp_a += ADAM_EPS
                np.divide(m_a, tmp_a, out=tmp_a)
                tmp_a *= lr_a[i]
                tmp_a *= self.inv_bc1[s]
                theta_a -= tmp_a


def train_many(entries: Sequence[tuple[VectorizedTrainer, TrainJob]], *, with_loss: bool = True) -> list[Trained]:
    """Every job, on its own trainer's silos, in as few stacked calls as possible; one result per entry, in order.

    Jobs of one model shape, batch size and step count share a call (a sweep: every run of a round);
    within it the rows of SGD jobs come first. Each job's result equals ``trainer.train`` of it alone.

    Parameters
    ----------
    entries
        ``(trainer, job)`` pairs: the job trains silos of that trainer.
    with_loss
        Also compute the mean batch losses (NaN without).

    Returns
    -------
    list of tuple
        Per entry: new parameters (silos, P), mean batch loss and step count per silo.
    """
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, (trainer, job) in enumerate(entries):
        key = (trainer.shape, job.hp.batch_size, max(map(len, job.plans)), id(job) if job.private else None)
        groups.setdefault(key, []).append(i)
    out: list[Trained | None] = [None] * len(entries)
    for members in groups.values():
        members.sort(key=lambda i: entries[i][1].hp.optimizer != "sgd")  # stable: SGD rows first
        trainers = list({id(entries[i][0]): entries[i][0] for i in members}.values())
        table, firsts = VectorizedTrainer.stacked(trainers)
        first = {id(t): f for t, f in zip(trainers, firsts, strict=True)}
        jobs = [entries[i][1] for i in members]
        silos = [first[id(entries[i][0])] + s for i in members for s in entries[i][1].silos]
        starts = np.concatenate([job.starts for job in jobs])
        plans = [plan for job in jobs for plan in job.plans]
        private = jobs[0].private  # a DP-SGD job trains alone (its own group)
        theta, loss, steps = table.train_rows(
            silos, starts, plans, RowSettings.of(jobs), with_loss=with_loss, private=private
        )
        sizes = [len(job.silos) for job in jobs]
        parts = zip(split_rows(theta, sizes), split_rows(loss, sizes), split_rows(steps, sizes), strict=True)
        for i, part in zip(members, parts, strict=True):
            out[i] = part
    return out  # type: ignore[return-value]  # every entry is in one group
