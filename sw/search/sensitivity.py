"""Per-layer sensitivity metrics, side by side, and how well each predicts real accuracy.

Every metric gives a ``(layers, options)`` table for one quantized layer at a time:

``noise``
    quantization noise-to-signal ratio of the layer's weights plus its input activations
    (``MSE / mean square``, SQNR = -10 log10 of it), from the calibration split.
``hessian``
    HAWQ-V3: ``Tr(H_l) / n_l * ||Q_b(W_l) - W_l||^2`` with the Hessian trace of the float loss
    w.r.t. the layer's weights estimated by Hutchinson's method (Rademacher probes).
``probe``
    single-layer accuracy probe on the **integer** model: accuracy drop (points) with layer l at
    b bits and every other layer at 16 bits, validation split.
``mqe``
    mask-guided estimate in the spirit of OHQ's MQE: only a random Bernoulli(p) mask of the
    layer's weight quantization error (and of its input activation error) is applied, the
    KL divergence between float and perturbed output distributions is averaged over draws and
    divided by p (first-order extrapolation to the full error). This is our reading of MQE; OHQ
    published no code.

The layers of a tie group (:meth:`Quantizer.tie_groups`) read one quantized tensor and the
solvers add their impacts up, so ``noise``, ``probe`` and ``mqe`` charge that input's
quantization to the group's first member only.

:func:`correlation_study` draws random mixed configurations, runs them on the integer model,
and reports each metric's Spearman rank correlation between its additive prediction and the
real accuracy; it also fits, per metric, a scale from metric units to accuracy points (least
squares through the origin) so that any metric can drive the solvers in accuracy points.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .qnn import int_forward
from .quantizer import Quantizer, weight_scales

__all__ = ["METRICS", "Evaluator", "metric_noise", "metric_hessian", "metric_probe",
           "metric_mqe", "correlation_study", "all_metrics"]

METRICS = ("noise", "hessian", "probe", "mqe")


@dataclasses.dataclass
class Evaluator:
    """Integer-model evaluation of bit configurations on one data split (cached).

    Attributes
    ----------
    qz : Quantizer
    x, y : numpy.ndarray
        Float NCHW inputs and labels.
    """

    qz: Quantizer
    x: np.ndarray
    y: np.ndarray
    _cache: dict = dataclasses.field(default_factory=dict)

    def evaluate(self, w_bits, a_bits=None) -> tuple[float, float]:
        """``(accuracy %, cross-entropy loss)`` of the integer network."""
        a_bits = list(a_bits if a_bits is not None else w_bits)
        key = (tuple(w_bits), tuple(a_bits))
        if key not in self._cache:
            net = self.qz.export(list(w_bits), a_bits)
            z = int_forward(net, self.x).astype(np.float64) * net.logit_scale
            z = z - z.max(1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(1, keepdims=True))
            loss = float(-logp[np.arange(len(self.y)), self.y].mean())
            acc = float((z.argmax(1) == self.y).mean() * 100)
            self._cache[key] = (acc, loss)
        return self._cache[key]


def _layer_weights(qz: Quantizer, k: int) -> np.ndarray:
    return qz.layers[qz.comp_idx[k]].weight


def _wq_error(qz: Quantizer, k: int, bits: int) -> np.ndarray:
    w = _layer_weights(qz, k)
    last = k == qz.n_compute - 1
    _, qm = qz.qmax(k, bits, bits)
    s = weight_scales(w, bits, qz.w_method, per_channel=not last, qmax=qm)
    s = s.reshape((-1,) + (1,) * (w.ndim - 1))
    return np.clip(np.floor(w / s + 0.5), -qm, qm) * s - w


def _owns_input(qz: Quantizer) -> list[bool]:
    """Per compute layer: whether its metric counts the error of its input activations. The
    members of a tie group (:meth:`Quantizer.tie_groups`) read one quantized tensor, and the
    solvers add their impacts up, so only the group's first member counts it (as
    :func:`metric_probe` quantizes the shared input only in the first member's probe)."""
    later = {k for g in qz.tie_groups() for k in g[1:]}
    return [k not in later for k in range(qz.n_compute)]


def _aq(qz: Quantizer, k: int, x: np.ndarray, bits: int) -> np.ndarray:
    s, sg = qz.act_scale(k, bits, bits)
    qa, _ = qz.qmax(k, bits, bits)
    q = np.floor(x / s + 0.5)
    return np.clip(q, -qa if sg else 0, qa) * s


def metric_noise(qz: Quantizer, bits) -> tuple[np.ndarray, np.ndarray]:
    """Noise-to-signal ratio table and the matching SQNR in dB, both ``(L, O)``.

    A layer's ratio is its weights' plus its input's; a tie group's shared input is counted in
    its first member only (:func:`_owns_input`)."""
    L = qz.n_compute
    nsr = np.zeros((L, len(bits)))
    owns = _owns_input(qz)
    for k in range(L):
        w = _layer_weights(qz, k)
        a = qz._acts[k]
        for j, b in enumerate(bits):
            ew = float(np.mean(_wq_error(qz, k, b) ** 2)) / max(float(np.mean(w ** 2)), 1e-30)
            ea = (float(np.mean((_aq(qz, k, a, b) - a) ** 2)) / max(float(np.mean(a ** 2)), 1e-30)
                  if owns[k] else 0.0)
            nsr[k, j] = ew + ea
    return nsr, -10 * np.log10(np.maximum(nsr, 1e-30))


def _torch_forward(qz: Quantizer, x, weights: dict | None = None, act_fn: dict | None = None):
    import torch
    import torch.nn.functional as F

    from .models import run_graph

    weights = weights or {}
    act_fn = act_fn or {}

    def compute(k, l, x):
        if k in act_fn:
            x = act_fn[k](x)
        w = weights.get(k, torch.from_numpy(l.weight))
        b = torch.from_numpy(l.bias)
        return (F.conv2d(x, w, b, l.stride, l.padding, 1, l.groups) if l.kind == "conv"
                else F.linear(x, w, b))
    return run_graph(qz.layers, x, compute)


def metric_hessian(qz: Quantizer, x, y, bits, n_probes: int = 16, seed: int = 0,
                   max_samples: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """HAWQ-V3 impact table ``(L, O)`` and the per-layer Hessian traces (Hutchinson)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.asarray(x[:max_samples], dtype=np.float64))
    yt = torch.from_numpy(np.asarray(y[:max_samples]))
    ws = {k: torch.tensor(_layer_weights(qz, k), requires_grad=True) for k in range(qz.n_compute)}
    loss = F.cross_entropy(_torch_forward(qz, xt, ws), yt)
    params = [ws[k] for k in range(qz.n_compute)]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    traces = np.zeros(qz.n_compute)
    for _ in range(n_probes):
        vs = [torch.randint(0, 2, p.shape, generator=g).double() * 2 - 1 for p in params]
        hv = torch.autograd.grad(grads, params, vs, retain_graph=True)
        for k in range(qz.n_compute):
            traces[k] += float((hv[k] * vs[k]).sum()) / n_probes
    table = np.zeros((qz.n_compute, len(bits)))
    for k in range(qz.n_compute):
        n = _layer_weights(qz, k).size
        for j, b in enumerate(bits):
            table[k, j] = max(traces[k], 0.0) / n * float((_wq_error(qz, k, b) ** 2).sum())
    return table, traces


def metric_probe(ev: Evaluator, bits, ref_bits: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Single-layer probe tables ``(L, O)``: accuracy drop (points) and loss increase.

    A layer of a tie group (layers reading one tensor, :meth:`Quantizer.tie_groups`, whose
    ``a_bits`` must be equal) is probed with its weights at ``b``; the shared input is set
    to ``b`` (for every member) only in the probe of the group's first member, so the
    members' probes add up to the group's weights and its one input."""
    L = ev.qz.n_compute
    acc0, loss0 = ev.evaluate([ref_bits] * L)
    dacc = np.zeros((L, len(bits)))
    dloss = np.zeros((L, len(bits)))
    group = {k: g for g in ev.qz.tie_groups() for k in g}
    for k in range(L):
        for j, b in enumerate(bits):
            cfg = [ref_bits] * L
            cfg[k] = b
            if k in group:
                ab = [ref_bits] * L
                if k == group[k][0]:
                    for m in group[k]:
                        ab[m] = b
                acc, loss = ev.evaluate(cfg, ab)
            else:
                acc, loss = ev.evaluate(cfg)
            dacc[k, j] = acc0 - acc
            dloss[k, j] = loss - loss0
    return dacc, dloss


def metric_mqe(qz: Quantizer, x, bits, p: float = 0.5, draws: int = 4, seed: int = 0,
               max_samples: int = 256) -> np.ndarray:
    """Mask-guided KL estimate table ``(L, O)`` (see module docstring). A tie group's shared
    input is perturbed in its first member's estimate only (:func:`_owns_input`)."""
    import torch

    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(np.asarray(x[:max_samples], dtype=np.float64))
    with torch.no_grad():
        logp0 = torch.log_softmax(_torch_forward(qz, xt), 1)
        table = np.zeros((qz.n_compute, len(bits)))
        owns = _owns_input(qz)
        for k in range(qz.n_compute):
            w = _layer_weights(qz, k)
            for j, b in enumerate(bits):
                err = _wq_error(qz, k, b)
                kl = 0.0
                for _ in range(draws):
                    mw = rng.random(w.shape) < p
                    ma_seed = int(rng.integers(1 << 31))

                    def act(a, b=b, k=k, ma_seed=ma_seed):
                        an = a.numpy()
                        m = np.random.default_rng(ma_seed).random(an.shape) < p
                        return torch.from_numpy(np.where(m, _aq(qz, k, an, b), an))

                    z = _torch_forward(qz, xt, {k: torch.from_numpy(w + mw * err)},
                                       {k: act} if owns[k] else None)
                    logp = torch.log_softmax(z, 1)
                    kl += float((logp0.exp() * (logp0 - logp)).sum(1).mean()) / draws
                table[k, j] = max(kl, 0.0) / p
    return table


def all_metrics(qz: Quantizer, ev: Evaluator, bits, seed: int = 0, log=None) -> dict:
    """Every metric's table, ``name -> (L, O) array`` (``probe`` = accuracy drop)."""
    out = {}
    if log:
        log("sensitivity: quantization noise")
    out["noise"], out["sqnr_db"] = metric_noise(qz, bits)
    if log:
        log("sensitivity: Hessian trace (Hutchinson)")
    out["hessian"], out["hessian_trace"] = metric_hessian(qz, ev.x, ev.y, bits, seed=seed)
    if log:
        log("sensitivity: single-layer probes on the integer model")
    out["probe"], out["probe_loss"] = metric_probe(ev, bits)
    if log:
        log("sensitivity: mask-guided KL (MQE)")
    out["mqe"] = metric_mqe(qz, ev.x, bits, seed=seed)
    return out


def correlation_study(ev: Evaluator, tables: dict, bits, n_configs: int = 24, seed: int = 0,
                      metrics=METRICS) -> dict:
    """Spearman correlation of each metric's additive prediction with real accuracy.

    Random configurations draw each layer's bits uniformly from ``bits`` (seeded; the members
    of a tie group, :meth:`Quantizer.tie_groups`, take their first member's draw). Returns
    ``{"configs": [...], "accuracy": [...], "spearman": {metric: rho}, "scale": {metric:
    points per unit}, "float_ref": acc at 16 bits}``. ``rho`` is computed between the negated
    predicted impact and the accuracy, so +1 is a perfect ranking.
    """
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    L = ev.qz.n_compute
    acc_ref, _ = ev.evaluate([16] * L)
    cfgs, accs = [], []
    for _ in range(n_configs):
        j = rng.integers(0, len(bits), L)
        for g in ev.qz.tie_groups():   # layers reading one tensor: one precision
            j[g] = j[g[0]]
        cfgs.append([bits[i] for i in j])
        accs.append(ev.evaluate(cfgs[-1])[0])
    accs = np.array(accs)
    drop = acc_ref - accs
    rho, scale = {}, {}
    for m in metrics:
        t = tables[m]
        pred = np.array([sum(t[k, bits.index(b)] for k, b in enumerate(c)) for c in cfgs])
        r = spearmanr(-pred, accs).statistic if np.ptp(pred) > 0 and np.ptp(accs) > 0 else 0.0
        rho[m] = float(0.0 if np.isnan(r) else r)
        denom = float((pred ** 2).sum())
        scale[m] = float((pred * drop).sum() / denom) if denom > 0 else 0.0
        scale[m] = max(scale[m], 0.0)
    return {"configs": cfgs, "accuracy": accs.tolist(), "spearman": rho, "scale": scale,
            "float_ref": acc_ref, "seed": seed}
