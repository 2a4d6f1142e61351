"""Free Bits-style differentiable precision search (hardware-agnostic part).

Each compute layer gets logits ``alpha[l, o]`` over the precision options; the forward pass
mixes the fake-quantized weights and input activations of every option with
``softmax(alpha[l] / T)`` and the loss is ``cross-entropy + lam * E[BOPs] / BOPs(INT8)``, where
BOPs = MACs * w_bits * a_bits (a hardware-agnostic size/compute proxy). The weights stay frozen
(only ``alpha`` trains) to keep the search short; the temperature ``T`` anneals from 1 to 0.1.
The layers of a tie group (they read one tensor) share one row of ``alpha``. The argmax
choice is then handed to :func:`rvmpq.sw.search.solvers.freebits_heuristic`, which
applies the hardware's measured cycles and the budgets.
"""

from __future__ import annotations

import numpy as np

from .models import run_graph
from .quantizer import Quantizer

__all__ = ["differentiable_search"]


def differentiable_search(qz: Quantizer, options, macs, x, y, lam: float = 0.5, steps: int = 150,
                          batch: int = 128, lr: float = 0.05, seed: int = 0,
                          ties=()) -> list[int]:
    """Return one option index per compute layer (argmax of the learned logits).

    Parameters
    ----------
    qz : Quantizer
    options : list of (w_bits, a_bits)
    macs : sequence of int
        MACs per compute layer.
    x, y : numpy.ndarray
        Training inputs (float NCHW) and labels.
    lam : float
        Weight of the BOPs regulariser.
    steps, batch, lr, seed
        Optimisation settings (seeded).
    ties : sequence of lists of int
        Tie groups (compute indices that read one tensor): each shares one row of logits, so
        its members get one option.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    L, O = qz.n_compute, len(options)
    row = list(range(L))            # layer -> its row of alpha (a tie group shares one)
    for grp in ties:
        for k in grp:
            row[k] = row[grp[0]]
    alpha = torch.zeros(L, O, requires_grad=True)
    nets = [qz.fq_module([w] * L, [a] * L) for (w, a) in options]
    for n in nets:
        for p in n.parameters():
            p.requires_grad_(False)
    macs_t = torch.tensor(np.asarray(macs, dtype=np.float64), dtype=torch.float32)
    bops = torch.tensor([[m * w * a for (w, a) in options] for m in macs], dtype=torch.float32)
    ref = float((macs_t * 64).sum())
    opt = torch.optim.Adam([alpha], lr=lr)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y))
    layers = qz.layers
    for step in range(steps):
        T = 1.0 * (0.1 ** (step / max(steps - 1, 1)))
        idx = torch.randint(0, len(yt), (batch,), generator=g)
        h = xt[idx]
        pi = torch.softmax((alpha[row] if ties else alpha) / T, 1)
        def compute(k, l, h, pi=pi):
            hq = sum(pi[k, o] * nets[o]._fq(h, *nets[o].act[k][:1], nets[o].qa[k], nets[o].act[k][1])
                     for o in range(O))
            w = sum(pi[k, o] * nets[o].qweight(k, k == L - 1) for o in range(O))
            b = nets[0].biases[k]
            return (F.conv2d(hq, w, b, l.stride, l.padding, 1, l.groups) if l.kind == "conv"
                    else F.linear(hq, w, b))
        h = run_graph(layers, h, compute)
        loss = F.cross_entropy(h, yt[idx]) + lam * (pi * bops).sum() / ref
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [int(i) for i in alpha.detach()[row].argmax(1)]
