"""Quantizer: PTQ calibration, fake-quant QAT with STE, training necessity, integer export.

Quantization scheme (what the kernels run):

* weights: symmetric, narrow range ``[-(2**(b-1) - 1), 2**(b-1) - 1]``, one scale per output
  channel; the *last* layer uses one scale for the whole tensor so that the argmax of its raw
  int32 logits is the prediction;
* activations (the input of every compute layer): unsigned with zero point 0 when the producer
  ends in ReLU (or, for the network input, when the calibration data are all >= 0), else signed
  symmetric (zero point 0); one scale per tensor, chosen by the calibration method;
* accumulator headroom (a 32-bit accumulator cannot hold K products of two full-range 16-bit
  operands): per layer the integer grids actually used, ``qa`` for the input and ``qw`` for the
  weights, start at the full range of their bits and the larger one loses one bit at a time
  until ``2 * K * qa * qw <= 2**31 - 1`` (``K`` = dot-product length, factor 2 = margin for
  activations above the calibrated clip, which stay representable up to the bits' full range).
  Only 16-bit operands (or huge K) are affected; the integer model counts no wrap in practice.
  The input of a layer behind a bounded ReLU (ReLU6) keeps its full range, only ``qw`` shrinks,
  so that the requantizer's clamp keeps the bound (:meth:`Quantizer.qmax`);
* bias: int32 at scale ``s_in * s_w[c]``; requant multiplier ``M[c] = s_in * s_w[c] / s_out``
  as ``mult[c] * 2**-shift`` with the largest per-layer shift that keeps every ``|mult|`` below
  2**31 (shift clamped to 0..63).

Concatenations (layer graphs): the concatenated tensor is quantized as its readers' input,
and its inputs' producers requantize straight onto that grid (one scale, sign and bits), so
the integer concatenation is exact; the readers of the concatenation and of the tensors in it
form one tie group, calibrated on the values of all the tensors they read.

Residual adds (layer graphs, ``FLayer.src``): every tensor read by a compute layer is
quantized as that layer's input (all its compute readers must use the same ``a_bits``: they
form a *tie group*, :meth:`Quantizer.tie_groups`, and share one input grid: the ``qa`` of
the group's longest dot product at 16-bit weights, :meth:`Quantizer.qmax`); a tensor read only
by adds is calibrated on its own values at the bits of the add's output; the
add requantizes both inputs to its output scale (:mod:`rvmpq.sw.search.qnn`). In fake-quant
training the add itself runs in float, on operands and an output fake-quantized on those
same grids (so QAT sees the rounding of a block's last conv to the add's bits).

Calibration methods (activation ranges, and per-channel weight ranges with ``w_method``):
``minmax`` (the largest magnitude), ``percentile`` (99.99th percentile of the magnitudes) and
``mse`` (the clipping value, among 0.30..1.00 of the maximum in 36 steps, that minimises the
mean squared quantize-dequantize error at the target bit width).

Training necessity (Edge-MPQ's per-layer "PTQ enough or QAT needed", rule used here):
layer ``l`` at precision ``b`` needs QAT iff its single-layer PTQ accuracy probe
(integer model, every other layer at 16 bits, validation split) loses more than ``tau``
accuracy points (default 0.5) against the float model. Layers that need it are fine-tuned with
fake quantization and a straight-through estimator; the others keep their PTQ weights frozen.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .costs_api import check_bits
from .models import FLayer
from .qnn import QLayer, QNetwork

__all__ = ["CALIB_METHODS", "QAT_EPOCHS", "QAT_LR", "clip_value", "weight_scales", "Quantizer",
           "needs_qat", "qat_finetune", "quantize_dequantize"]

CALIB_METHODS = ("minmax", "percentile", "mse")

#: QAT fine-tune defaults (:func:`qat_finetune`): 45 epochs, Adam at 1e-3 with cosine decay.
#: Chosen on the validation split (MNIST-1D's had 500 samples then; it has 5,000 now):
#: mean integer-model accuracy over 12 low-bit configurations of the 4 built-in models (every
#: layer fine-tuned) 95.8 % against 93.6 % for the earlier 5
#: epochs at a constant 3e-4; distillation from the float model's logits gave the same 95.8 %
#: and was left out. Then, over 18 configurations (each model's ``hawq-ilp`` picks of the
#: benchmark and uniform INT4; every layer fine-tuned; 1 torch thread): 15 / 30 / 45 epochs
#: 95.99 / 96.26 / 96.50 % (12 configurations up, 4 down, 2 equal from 15 to 45; the
#: largest gains at 2 bits).
#: Learned activation scales (LSQ on the log scale) were tried as well and left out: per
#: model (digits-cnn, mnist1d-cnn, mnist1d-cnn-l, mnist1d-resnet) +0.1 / +0.3 / +0.4 / -0.9
#: points of mean validation accuracy.
#: Three more variants were measured on the 5,000-sample MNIST-1D validation split (and digits'),
#: each against these defaults on 20 configurations (the benchmark's 0.7-0.4 picks and uniform
#: INT4/INT2; mean change in points, configurations up / down): every layer trainable, not
#: only the flagged ones, +0.02 (4 / 11); weight scales that follow each channel's largest
#: weight during the fine-tune -0.16 (4 / 12); 90 epochs +0.18 (10 / 7; +1.0 and +2.0 on
#: mnist1d-resnet's mostly-INT2 configurations, -0.26 and -0.22 on mnist1d-cnn's [16,4,4,4] and
#: [8,4,4,4], at twice the time). None was kept: none lifts the 4-bit configurations that
#: decide the 70 % target. Session 13, on mnist1d-cnn's four best configurations within 0.7x
#: ([16,4,4,4], [8,4,4,4], [16,4,4,8], [8,4,4,16]; mean change in validation points): learning
#: rate 3e-4 -0.11, 3e-3 -0.10; another fine-tune seed -0.06 (per configuration -0.12..+0.08,
#: the seed noise); an exponential moving average of the trained weights, exported in their
#: place, -0.02 (decay 0.99) and +0.00 (0.998). None was kept. Session 14, the same four:
#: learned activation scales (LSQ) again, now judged on the 5,000-sample validation split (the
#: +0.3 above was on 500 samples), the scale's learning rate 1e-2 / 1e-3: -0.08 / -0.17
#: (per configuration -0.16..0.00 / -0.46..0.00). Not kept.
QAT_EPOCHS = 45
QAT_LR = 1e-3


def _qmax(bits: int, signed: bool) -> int:
    return (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1


def quantize_dequantize(x: np.ndarray, scale, bits: int, signed: bool) -> np.ndarray:
    """Float round trip through the integer grid (round half up, narrow signed range)."""
    q = np.floor(np.asarray(x) / scale + 0.5)
    qm = _qmax(bits, signed)
    return np.clip(q, -qm if signed else 0, qm) * scale


def clip_value(x: np.ndarray, bits: int, signed: bool, method: str = "mse") -> float:
    """Clipping value of a tensor for one calibration method.

    Parameters
    ----------
    x : numpy.ndarray
        Calibration values.
    bits : int
        Target bits (used by ``mse``).
    signed : bool
        Symmetric signed (magnitudes) or unsigned (positive part) grid.
    method : str
        One of :data:`CALIB_METHODS`.
    """
    if method not in CALIB_METHODS:
        raise ValueError(f"calibration method {method!r}; allowed values: {list(CALIB_METHODS)}")
    v = np.abs(x).ravel() if signed else np.maximum(np.asarray(x).ravel(), 0)
    top = float(v.max(initial=0.0))
    if top == 0.0:
        return 1e-8
    if method == "minmax":
        return top
    if method == "percentile":
        return max(float(np.percentile(v, 99.99)), 1e-8)
    qm = _qmax(bits, signed)
    best, best_c = np.inf, top
    xs = np.asarray(x).ravel()
    for r in np.linspace(0.30, 1.0, 36):
        c = top * r
        err = float(np.mean((quantize_dequantize(xs, c / qm, bits, signed) - xs) ** 2))
        if err < best:
            best, best_c = err, c
    return best_c


def headroom_qmax(k: int, a_bits: int, a_signed: bool, w_bits: int) -> tuple[int, int]:
    """``(qa, qw)``: the integer input / weight ranges used for a dot product of length ``k``.

    See "accumulator headroom" in the module docstring.
    """
    qa, qw = _qmax(a_bits, a_signed), _qmax(w_bits, True)
    while 2 * k * qa * qw > 2 ** 31 - 1:
        if qa >= qw:
            qa //= 2
        else:
            qw //= 2
    return qa, qw


def weight_scales(w: np.ndarray, bits: int, method: str = "minmax", per_channel: bool = True,
                  qmax: int | None = None) -> np.ndarray:
    """Symmetric weight scale per output channel (axis 0), or one repeated if not per channel.

    ``qmax`` overrides the integer range (accumulator headroom); default ``2**(bits-1) - 1``.
    """
    qm = qmax or _qmax(bits, True)
    if per_channel:
        c = np.array([clip_value(w[i], bits, True, method) for i in range(w.shape[0])])
    else:
        c = np.full(w.shape[0], clip_value(w, bits, True, method))
    return np.maximum(c, 1e-12) / qm


def _mult_shift(m: np.ndarray) -> tuple[np.ndarray, int]:
    mmax = float(np.abs(m).max())
    if mmax <= 0:
        return np.zeros(len(m), dtype=np.int64), 0
    shift = int(np.floor(np.log2((2 ** 31 - 1) / mmax)))
    shift = min(max(shift, 0), 63)
    mult = np.floor(m * 2.0 ** shift + 0.5)
    if np.abs(mult).max() > 2 ** 31 - 1:
        raise ValueError(f"requant multiplier {mmax:g} does not fit a signed 32-bit mult with "
                         "shift >= 0; the layer's scales are inconsistent")
    return mult.astype(np.int64), shift


class Quantizer:
    """PTQ calibration and integer export of a traced float model.

    Parameters
    ----------
    layers : list of FLayer
        From :func:`rvmpq.sw.search.models.trace_model`.
    calib_x : numpy.ndarray
        Float NCHW calibration batch (the validation split; up to 500 samples are used).
    act_method, w_method : str
        Calibration methods (:data:`CALIB_METHODS`) for activations and weights.
    """

    def __init__(self, layers: list[FLayer], calib_x: np.ndarray, act_method: str = "mse",
                 w_method: str = "mse"):
        for m in (act_method, w_method):
            if m not in CALIB_METHODS:
                raise ValueError(f"calibration method {m!r}; allowed values: {list(CALIB_METHODS)}")
        self.layers = layers
        self.act_method, self.w_method = act_method, w_method
        self.input_shape = tuple(calib_x.shape[1:])
        self.comp_idx = [i for i, l in enumerate(layers) if l.is_compute]
        x = np.asarray(calib_x[:500], dtype=np.float64)
        self.graph = any(l.src is not None for l in layers)   # residual adds: a DAG
        self._signed = []
        if self.graph:
            self._outs = self._collect_outputs(layers, x)
            self._acts = [self._outs[self._src(i)[0]] for i in self.comp_idx]
            self._signed = [self.tensor_signed(self._src(i)[0]) for i in self.comp_idx]
        else:
            self._acts = self._collect_inputs(layers, x)
            for k, i in enumerate(self.comp_idx):
                if k == 0:
                    self._signed.append(bool(x.min() < 0))
                else:
                    self._signed.append(not layers[self.comp_idx[k - 1]].relu)
        self._x_signed = bool(x.min() < 0)
        # inputs bounded by a ReLU with an upper bound (ReLU6): their integer values must
        # stay within the calibrated grid, see qmax
        self._bounded = [self._bound(self._src(i)[0]) for i in self.comp_idx]
        self._scale_cache: dict = {}
        # tied layers (readers of one tensor) get one input grid, so one scale at equal
        # a_bits whatever their w_bits: qa from the group's longest dot product at 16-bit
        # weights (the smallest qa any member could need), then each member's qw fits it
        groups = self.tie_groups()
        self._tie_k = {k: max(self.dot_len(m) for m in g) for g in groups for k in g}
        # the calibration values of each layer's input grid: its input's; a tie group whose
        # members read different tensors of one grid (a concatenation and a tensor in it, or
        # a tensor and its max pooling) calibrates on all of them
        self._calib = list(self._acts)
        for g in groups:
            ts = list(dict.fromkeys(self._src(self.comp_idx[k])[0] for k in g))
            if len(ts) > 1:
                v = np.concatenate([self._outs[t].ravel() for t in ts])
                for k in g:
                    self._calib[k] = v

    @property
    def n_compute(self) -> int:
        """Number of compute layers."""
        return len(self.comp_idx)

    @staticmethod
    def _collect_inputs(layers, x):
        from .models import float_forward

        acts, h = [], x
        for l in layers:
            if l.is_compute:
                acts.append(h)
            h = float_forward([l], h) if l.kind != "flatten" else h.reshape(h.shape[0], -1)
        return acts

    def tie_groups(self) -> list[list[int]]:
        """The compute layers (compute indices, ascending) that read one tensor, directly or
        through max pooling / flattening, as groups of two or more, ordered by first member.
        Their inputs are one quantized tensor, so a configuration must give every member of a
        group the same ``a_bits`` (the search ties their whole option). A concatenation is one
        tensor with its inputs (they are requantized onto its grid): the readers of both are
        one group. ``[]`` for a chain."""
        if not self.graph:
            return []
        # a concatenation and the tensors in it are one grid: their readers tie too
        parent: dict = {}

        def find(t):
            while parent.get(t, t) != t:
                t = parent[t]
            return t

        for i, l in enumerate(self.layers):
            if l.kind == "concat":
                for s in l.src:
                    parent[find(self._producer(s))] = find(i)
        roots: dict = {}
        for k, i in enumerate(self.comp_idx):
            roots.setdefault(find(self._producer(self._src(i)[0])), []).append(k)
        return sorted((g for g in roots.values() if len(g) > 1), key=lambda g: g[0])

    def _src(self, i: int) -> tuple:
        from .models import layer_inputs

        return layer_inputs(self.layers, i)

    def _producer(self, i: int) -> int:
        """The layer that computed the values of layer ``i``'s output: ``i`` itself, or
        through max pooling and flattening (which only select and reorder values) the layer
        before them; ``-1`` for the network input. A concatenation is its own producer (its
        inputs': :meth:`tensor_signed`, :meth:`_bound`)."""
        while i >= 0 and self.layers[i].kind in ("maxpool", "flatten"):
            i = self._src(i)[0]
        return i

    def _bound(self, i: int) -> bool:
        """Whether the output of layer ``i`` (``-1``: the input) is bounded by a ReLU with an
        upper bound (``relu_max``; a concatenation: each of its inputs)."""
        i = self._producer(i)
        if i >= 0 and self.layers[i].kind == "concat":
            return all(self._bound(s) for s in self._src(i))
        return i >= 0 and self.layers[i].relu_max is not None

    @staticmethod
    def _collect_outputs(layers, x) -> dict:
        """Float output of every layer (``-1``: the input) of a layer graph."""
        import torch

        from .models import float_forward

        outs = {-1: x}
        for i, l in enumerate(layers):
            ins = [outs[s] for s in (l.src if l.src is not None else (i - 1,))]
            if l.kind in ("add", "concat"):
                h = ins[0] + ins[1] if l.kind == "add" else np.concatenate(ins, 1)
                outs[i] = np.clip(h, 0, l.relu_max) if l.relu else h
            elif l.kind == "flatten":
                outs[i] = ins[0].reshape(ins[0].shape[0], -1)
            else:
                with torch.no_grad():
                    outs[i] = float_forward([dataclasses.replace(l, src=None)], ins[0])
        return outs

    def tensor_signed(self, i: int) -> bool:
        """Whether the output of layer ``i`` (``-1``: the input) is quantized signed: not after
        a ReLU (pooling and flattening keep their input's sign; a concatenation is signed
        if any of its inputs is)."""
        i = self._producer(i)
        if i < 0:
            return bool(self._outs[-1].min() < 0)
        if self.layers[i].kind == "concat":
            return any(self.tensor_signed(s) for s in self._src(i))
        return not self.layers[i].relu

    def dot_len(self, k: int) -> int:
        """Dot-product length of compute layer ``k``."""
        return int(np.prod(self.layers[self.comp_idx[k]].weight.shape[1:]))

    def qmax(self, k: int, a_bits: int, w_bits: int) -> tuple[int, int]:
        """``(qa, qw)`` integer ranges of compute layer ``k`` (accumulator headroom). A member
        of a tie group (:meth:`tie_groups`) gets the group's ``qa``: the one of its longest
        dot product at 16-bit weights; its ``qw`` then halves until the layer's own dot
        product fits. A layer whose input a bounded ReLU (``FLayer.relu_max``, e.g. ReLU6)
        produced keeps the full-range ``qa`` and only ``qw`` halves."""
        if self._bounded[k]:
            # the requantizer clamps to the bits' full range, not to a reduced qa: only a
            # full-range grid keeps the bound (values above the calibrated clip, which is at
            # most the bound, cannot be represented), so the weights give up the headroom
            qa, qw = _qmax(a_bits, False), _qmax(w_bits, True)
            while self.dot_len(k) * qa * qw > 2 ** 31 - 1:
                qw //= 2
            return qa, qw
        if k in self._tie_k:
            qa = headroom_qmax(self._tie_k[k], a_bits, self._signed[k], 16)[0]
            qw = _qmax(w_bits, True)
            while 2 * self.dot_len(k) * qa * qw > 2 ** 31 - 1:
                qw //= 2
            return qa, qw
        return headroom_qmax(self.dot_len(k), a_bits, self._signed[k], w_bits)

    def act_scale(self, k: int, bits: int, w_bits: int | None = None) -> tuple[float, bool]:
        """``(scale, signed)`` of the input of compute layer ``k`` at ``bits``.

        ``w_bits`` (layer k's weight bits, default = ``bits``) matters only through the
        accumulator headroom.
        """
        w_bits = w_bits or bits
        key = (k, bits, w_bits)
        if key not in self._scale_cache:
            signed = self._signed[k]
            c = clip_value(self._calib[k], bits, signed, self.act_method)
            qa, _ = self.qmax(k, bits, w_bits)
            self._scale_cache[key] = (c / qa, signed)
        return self._scale_cache[key]

    def _check(self, w_bits, a_bits):
        n = self.n_compute
        if len(w_bits) != n or len(a_bits) != n:
            raise ValueError(f"need {n} w_bits and a_bits (one per conv/linear layer), got "
                             f"{len(w_bits)} and {len(a_bits)}")
        return ([check_bits(b, "w_bits") for b in w_bits], [check_bits(b, "a_bits") for b in a_bits])

    def export(self, w_bits, a_bits, layers: list[FLayer] | None = None,
               w_method: str | None = None, qat: list[bool] | None = None, meta=None,
               w_scales: list | None = None) -> QNetwork:
        """Integer network for per-layer bits.

        Parameters
        ----------
        w_bits, a_bits : sequence of int
            Per compute layer; ``a_bits[k]`` is the precision of layer k's input.
        layers : list of FLayer, optional
            Weights to use (e.g. after QAT); default the calibrated model's.
        w_method : str, optional
            Weight calibration override (QAT exports use ``"minmax"``, as in training).
        qat : list of bool, optional
            Recorded per compute layer in the export.
        w_scales : list of numpy.ndarray, optional
            Per compute layer weight scales to use instead of calibrating (QAT results).
        """
        w_bits, a_bits = self._check(w_bits, a_bits)
        layers = layers or self.layers
        w_method = w_method or self.w_method
        qat = qat or [False] * self.n_compute
        if self.graph:
            return self._export_graph(w_bits, a_bits, layers, w_method, qat, meta, w_scales)
        c, h, w = self.input_shape
        shape = (h, w, c)
        s0, sg0 = self.act_scale(0, a_bits[0], w_bits[0])
        out: list[QLayer] = []
        k = -1
        flat_shape = None
        logit_scale = 1.0
        for l in layers:
            if l.kind == "maxpool":
                ho, wo = shape[0] // l.kernel[0], shape[1] // l.kernel[1]
                out.append(QLayer("maxpool", l.name, shape, (ho, wo, shape[2]), kernel=l.kernel,
                                  stride=l.stride))
                shape = (ho, wo, shape[2])
                continue
            if l.kind == "flatten":
                flat_shape = shape
                out.append(QLayer("flatten", l.name, shape, (1, 1, int(np.prod(shape)))))
                shape = (1, 1, int(np.prod(shape)))
                continue
            k += 1
            last = k == self.n_compute - 1
            out_q = None if last else (*self.act_scale(k + 1, a_bits[k + 1], w_bits[k + 1]),
                                       a_bits[k + 1])
            ql, ls = self._quantize_compute(k, l, shape, flat_shape, w_bits, a_bits, w_method,
                                            w_scales, qat, out_q)
            out.append(ql)
            logit_scale = ls if ls is not None else logit_scale
            oshape = ql.out_shape
            shape = oshape
        meta = dict(meta or {}, act_method=self.act_method, w_method=w_method)
        return QNetwork(float(s0), 0, a_bits[0], sg0, out, logit_scale, meta)

    def _tensor_quant(self, w_bits, a_bits) -> dict:
        """``{layer index: (scale, signed, bits)}`` of every quantized tensor of a layer graph.

        A tensor read by a compute layer gets that layer's input quantization (every compute
        reader must agree on the bits); pooling / flattening / concatenation pass their
        reader's quantization through (the inputs of a concatenation are on its grid); a
        tensor read only by residual adds is calibrated on its own values at the
        bits of the add's output. Computed readers-first (reverse topological order).
        """
        n = len(self.layers)
        readers: dict = {i: [] for i in range(-1, n)}
        for i in range(n):
            for s in self._src(i):
                readers[s].append(i)
        kof = {i: k for k, i in enumerate(self.comp_idx)}
        q: dict = {}
        for i in range(n - 1, -2, -1):
            reqs, adds = [], []
            for c in readers[i]:
                lc = self.layers[c]
                if lc.is_compute:
                    k = kof[c]
                    s, sg = self.act_scale(k, a_bits[k], w_bits[k])
                    reqs.append((s, sg, a_bits[k], lc.name))
                elif lc.kind in ("maxpool", "flatten", "concat"):
                    if q.get(c) is not None:
                        reqs.append((*q[c], lc.name))
                elif lc.kind == "add":
                    adds.append(c)
            if reqs:
                if len({r[2] for r in reqs}) > 1:
                    raise ValueError(
                        "layers " + ", ".join(r[3] for r in reqs) + " read the same tensor but "
                        "need different precisions " + str(sorted({r[2] for r in reqs})) +
                        "; give them equal a_bits")
                if len({r[:3] for r in reqs}) > 1:   # a tie group's one grid: cannot happen
                    raise RuntimeError(
                        "layers " + ", ".join(r[3] for r in reqs) + " read the same tensor at "
                        f"{reqs[0][2]} bits on different grids (scale, signed) "
                        + str(sorted({(float(r[0]), r[1]) for r in reqs}))
                        + ": a quantizer bug, please report it")
                q[i] = reqs[0][:3]
            elif adds:
                bits = q[adds[0]][2]
                sg = self.tensor_signed(i)
                c = clip_value(self._outs[i], bits, sg, self.act_method)
                q[i] = (c / _qmax(bits, sg), sg, bits)
            else:
                q[i] = None           # the logits, or a value nobody reads
        return q

    def _quantize_compute(self, k, l, shape, flat_hwc, w_bits, a_bits, w_method, w_scales, qat,
                          out_q, **extra):
        """One compute layer (conv / linear, compute index ``k``) of :meth:`export`, for the
        chain and the graph forms alike.

        ``shape``: its input (h, w, c); ``flat_hwc``: the (h, w, c) a preceding flatten
        flattened, or None (torch flattens CHW, the kernels HWC, so a linear layer's columns
        are reordered); ``out_q``: the next tensor's (scale, signed, bits), unused for the last
        (logits) layer; ``extra``: more :class:`QLayer` fields (``src``).

        Returns
        -------
        (QLayer, float or None)
            The layer and, for the logits layer, the logit scale.
        """
        last = k == self.n_compute - 1
        s_in, sg_in = self.act_scale(k, a_bits[k], w_bits[k])
        _, qm = self.qmax(k, a_bits[k], w_bits[k])
        if w_scales is not None and w_scales[k] is not None:
            sw = np.asarray(w_scales[k], dtype=np.float64)
        else:
            sw = weight_scales(l.weight, w_bits[k], w_method, per_channel=not last, qmax=qm)
        wf = l.weight
        if l.kind == "linear" and flat_hwc is not None and wf.shape[1] == np.prod(flat_hwc):
            hh, ww, cc = flat_hwc
            wf = wf.reshape(wf.shape[0], cc, hh, ww).transpose(0, 2, 3, 1).reshape(wf.shape[0], -1)
        wq = np.clip(np.floor(wf / sw.reshape((-1,) + (1,) * (wf.ndim - 1)) + 0.5), -qm, qm)
        wq = wq.astype(np.int64)
        if l.kind == "conv":
            wq = wq.transpose(0, 2, 3, 1).copy()  # (Cout, kh, kw, Cin/g)
            ho = (shape[0] + 2 * l.padding[0] - l.kernel[0]) // l.stride[0] + 1
            wo = (shape[1] + 2 * l.padding[1] - l.kernel[1]) // l.stride[1] + 1
            oshape = (ho, wo, wq.shape[0])
        else:
            if int(np.prod(shape)) != wq.shape[1]:
                raise ValueError(f"{l.name}: Linear expects {wq.shape[1]} inputs, got "
                                 f"{int(np.prod(shape))}")
            oshape = (1, 1, wq.shape[0])
        bias = np.clip(np.floor(l.bias / (s_in * sw) + 0.5), -2 ** 31, 2 ** 31 - 1)
        bias = bias.astype(np.int64)     # input zero point 0: no correction term
        logit_scale = None
        if last:
            mult, shift, ob, osg = np.ones(len(sw), dtype=np.int64), 0, 32, True
            logit_scale = float(s_in * sw[0])
        else:
            s_out, osg, ob = out_q
            mult, shift = _mult_shift(s_in * sw / s_out)
        ql = QLayer(l.kind, l.name, shape, oshape, w_bits[k], a_bits[k], sg_in, 0, wq, bias,
                    mult, shift, 0, ob, osg, l.relu, l.stride, l.padding, l.kernel, l.groups,
                    [float(v) for v in sw], bool(qat[k]), **extra)
        return ql, logit_scale

    def _export_graph(self, w_bits, a_bits, layers, w_method, qat, meta, w_scales) -> QNetwork:
        """:meth:`export` of a layer graph (residual adds); same per-layer rules."""
        q = self._tensor_quant(w_bits, a_bits)
        c, h, w = self.input_shape
        shapes = {-1: (h, w, c)}
        out: list[QLayer] = []
        k = -1
        logit_scale = 1.0
        for i, l in enumerate(layers):
            src = self._src(i)
            shape = shapes[src[0]]
            if l.kind == "maxpool":
                ho, wo = shape[0] // l.kernel[0], shape[1] // l.kernel[1]
                out.append(QLayer("maxpool", l.name, shape, (ho, wo, shape[2]), kernel=l.kernel,
                                  stride=l.stride, src=src))
                shapes[i] = (ho, wo, shape[2])
                continue
            if l.kind == "flatten":
                out.append(QLayer("flatten", l.name, shape, (1, 1, int(np.prod(shape))), src=src))
                shapes[i] = (1, 1, int(np.prod(shape)))
                continue
            if l.kind == "concat":
                parts = [shapes[v] for v in src]
                if len({p[:2] for p in parts}) > 1 or q[i] is None:
                    raise ValueError(f"{l.name}: concatenates tensors of shapes {parts}; "
                                     "they must share the height and width")
                so, osg, ob = q[i]
                oshape = (*shape[:2], sum(p[2] for p in parts))
                out.append(QLayer("concat", l.name, oshape, oshape, out_bits=ob,
                                  out_signed=osg, relu=bool(l.relu), src=src))
                shapes[i] = oshape
                continue
            if l.kind == "add":
                if shapes[src[1]] != shape:
                    raise ValueError(f"{l.name}: adds tensors of shapes {shape} and "
                                     f"{shapes[src[1]]}")
                (sa, sga, ba), (sb, sgb, bb) = q[src[0]], q[src[1]]
                so, osg, ob = q[i]
                m = np.array([sa / so, sb / so])
                # |x| < 2**max(bits) and |mult| < 2**(30 - max(bits)): |acc| < 2**31
                shift = int(np.clip(np.floor(np.log2(2.0 ** (30 - max(ba, bb)) / m.max())), 0, 63))
                mult = np.floor(m * 2.0 ** shift + 0.5).astype(np.int64)
                out.append(QLayer("add", l.name, shape, shape, 0, max(ba, bb), sga or sgb, 0,
                                  None, None, mult, shift, 0, ob, osg, l.relu, src=src))
                shapes[i] = shape
                continue
            k += 1
            flat_hwc = None
            if l.kind == "linear" and src[0] >= 0 and layers[src[0]].kind == "flatten":
                flat_hwc = shapes[self._src(src[0])[0]]
            ql, ls = self._quantize_compute(k, l, shape, flat_hwc, w_bits, a_bits, w_method,
                                            w_scales, qat, q[i], src=src)
            out.append(ql)
            logit_scale = ls if ls is not None else logit_scale
            oshape = ql.out_shape
            shapes[i] = oshape
        s0, sg0, b0 = q[-1]
        meta = dict(meta or {}, act_method=self.act_method, w_method=w_method)
        return QNetwork(float(s0), 0, b0, sg0, out, logit_scale, meta)

    def fq_module(self, w_bits, a_bits, layers: list[FLayer] | None = None,
                  trainable: list[bool] | None = None):
        """A torch module running the model with fake quantization (STE) at the given bits.

        ``None`` in ``w_bits`` / ``a_bits`` leaves that layer's weights / input in float.
        Weight scales are fixed at the calibrated values (``w_method``) of the starting weights
        (export a fine-tuned result with ``w_scales=module.w_scales``); activation scales are
        the calibrated ones. In a layer graph with every bit given, the tensors around each
        residual add (its inputs and output) are fake-quantized on the integer model's grids.
        """
        return FakeQuantNet(self, list(w_bits), list(a_bits), layers or self.layers, trainable)


def _fq_net_class():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class _FakeQuantNet(nn.Module):
        def __init__(self, qz: Quantizer, w_bits, a_bits, layers, trainable):
            super().__init__()
            self.layers = layers
            self.w_bits, self.a_bits = w_bits, a_bits
            n = qz.n_compute
            trainable = trainable if trainable is not None else [True] * n
            self.weights = nn.ParameterList()
            self.biases = nn.ParameterList()
            self.act, self.qa, self.qw = [], [], []
            self.w_scales = []
            for k, i in enumerate(qz.comp_idx):
                l = layers[i]
                self.weights.append(nn.Parameter(torch.tensor(l.weight, dtype=torch.float32),
                                                 requires_grad=bool(trainable[k])))
                self.biases.append(nn.Parameter(torch.tensor(l.bias, dtype=torch.float32),
                                                requires_grad=bool(trainable[k])))
                wb = w_bits[k] or 16
                self.act.append(qz.act_scale(k, a_bits[k], wb) if a_bits[k] else None)
                self.qa.append(qz.qmax(k, a_bits[k], wb)[0] if a_bits[k] else None)
                self.qw.append(qz.qmax(k, a_bits[k] or 16, w_bits[k])[1] if w_bits[k] else None)
                # weight scales fixed at the calibrated (w_method) values of the start weights,
                # so the export after QAT uses exactly the grid that was trained
                self.w_scales.append(
                    weight_scales(l.weight, w_bits[k], qz.w_method, per_channel=k != n - 1,
                                  qmax=self.qw[k]) if w_bits[k] else None)
            # residual adds: the integer model requantizes each add input that no compute
            # layer reads (a block's last conv) and each add output to their own grids
            # (Quantizer._tensor_quant); fake-quantize those tensors the same way, so that QAT
            # trains what is deployed (a compute layer's input is fake-quantized by the
            # layer itself: on the same grid, so a second rounding of it changes nothing)
            self.tensor_q = {}
            if qz.graph and all(w_bits) and all(a_bits):
                tq = qz._tensor_quant(w_bits, a_bits)
                for i, l in enumerate(layers):
                    if l.kind != "add":
                        continue
                    for j in (i, *l.src):
                        if j >= 0 and tq.get(j) is not None:
                            s, sg, b = tq[j]
                            self.tensor_q[j] = (s, _qmax(b, sg), sg)

        @staticmethod
        def _fq(x, scale, qm, signed):
            lo = -qm * scale if signed else 0.0
            xc = torch.clamp(x, lo, qm * scale)
            return xc + (torch.floor(xc / scale + 0.5) * scale - xc).detach()

        def qweight(self, k, last):
            w = self.weights[k]
            b = self.w_bits[k]
            if not b:
                return w
            qm = self.qw[k]
            s = torch.tensor(self.w_scales[k], dtype=w.dtype).reshape((-1,) + (1,) * (w.dim() - 1))
            return self._fq(w, s, qm, True)

        def forward(self, x):
            # residual adds: their operands and outputs are fake-quantized on the integer
            # model's grids (``tensor_q``); the add itself runs in float
            from .models import run_graph

            n = len(self.weights)

            def compute(k, l, x):
                if self.act[k] is not None:
                    s, sg = self.act[k]
                    x = self._fq(x, s, self.qa[k], sg)
                w = self.qweight(k, k == n - 1)
                if l.kind == "conv":
                    return F.conv2d(x, w, self.biases[k], l.stride, l.padding, 1, l.groups)
                return F.linear(x, w, self.biases[k])
            def post(i, h):
                q = self.tensor_q.get(i)
                return h if q is None else self._fq(h, *q)
            return run_graph(self.layers, x, compute, post if self.tensor_q else None)

        def to_layers(self) -> list[FLayer]:
            """Copy of the float layer list with this module's (fine-tuned) weights."""
            out, k = [], -1
            for l in self.layers:
                if l.is_compute:
                    k += 1
                    out.append(dataclasses.replace(
                        l, weight=self.weights[k].detach().double().numpy().copy(),
                        bias=self.biases[k].detach().double().numpy().copy()))
                else:
                    out.append(l)
            return out

    return _FakeQuantNet


def FakeQuantNet(qz, w_bits, a_bits, layers, trainable=None):
    """Build the fake-quant torch module (see :meth:`Quantizer.fq_module`)."""
    return _fq_net_class()(qz, w_bits, a_bits, layers, trainable)


def needs_qat(probe_drop: np.ndarray, option_bits: list[int], config_bits: list[int],
              tau: float = 0.5) -> list[bool]:
    """Edge-MPQ training-necessity decision per layer (rule in the module docstring).

    Parameters
    ----------
    probe_drop : numpy.ndarray
        ``(layers, options)`` single-layer PTQ accuracy drop in points (integer model).
    option_bits : list of int
        Bits of each option column.
    config_bits : list of int
        Chosen bits per layer.
    tau : float
        Threshold in accuracy points.

    Returns
    -------
    list of bool
        True where QAT is needed.
    """
    probe_drop = np.asarray(probe_drop)
    if probe_drop.shape != (len(config_bits), len(option_bits)):
        raise ValueError(f"probe_drop shape {probe_drop.shape} != (layers={len(config_bits)}, "
                         f"options={len(option_bits)})")
    return [bool(probe_drop[k, option_bits.index(b)] > tau) for k, b in enumerate(config_bits)]


def qat_finetune(qz: Quantizer, w_bits, a_bits, x_train, y_train, trainable: list[bool],
                 epochs: int = QAT_EPOCHS, lr: float = QAT_LR, batch: int = 64, seed: int = 0,
                 layers: list[FLayer] | None = None) -> tuple[list[FLayer], list]:
    """Short QAT fine-tune (fake quant + STE) of the layers marked ``trainable``.

    Adam on the cross-entropy, learning rate ``lr`` decayed to 0 over the run by a half
    cosine, ``epochs`` passes over the training split in seeded random batches. The
    defaults (:data:`QAT_EPOCHS`, :data:`QAT_LR`) were chosen on the validation split of the
    four built-in models (see :data:`QAT_EPOCHS`).

    Returns ``(layers, w_scales)``: the float layer list with updated weights and the weight
    scales it was trained on; export with ``qz.export(..., layers=layers, w_scales=w_scales)``.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net = qz.fq_module(w_bits, a_bits, layers, trainable)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        return list(layers or qz.layers), net.w_scales
    opt = torch.optim.Adam(params, lr=lr)
    x = torch.from_numpy(np.asarray(x_train, dtype=np.float32))
    y = torch.from_numpy(np.asarray(y_train))
    g = torch.Generator().manual_seed(seed)
    steps, step = epochs * -(-len(y) // batch), 0
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + float(np.cos(np.pi * step / steps)))
            step += 1
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    return net.to_layers(), net.w_scales
