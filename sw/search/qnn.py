"""The integer network: export format and the bit-exact integer-only numpy inference model.

This model is the *validator*: every accuracy the search reports as "validated" comes from it,
never from fake-quantized floats. It computes exactly what the RISC-V kernels compute:

* layout HWC (``(N, H, W, C)`` arrays), conv weights ``(Cout, kh, kw, Cin/groups)``, linear
  weights ``(out, in)`` with ``in`` in HWC flatten order;
* input quantization (the only float step): ``q = clamp(floor(x / input_scale + 1/2) +
  input_zp, lo, hi)`` at the first layer's ``a_bits`` (``x`` given NCHW, transposed to HWC);
* per compute layer: ``acc = wrap32(sum(w * a) + bias)`` where the padding value of ``a`` is the
  input zero point and ``bias`` already holds the zero-point correction ``-zp_in * sum(w)``;
  products and sums are exact integers, wrapped to 32 bits like the int32 accumulator;
* requantization of every layer but the last with :func:`rvmpq.sw.golden.requant`
  (docs/contracts.md section 3): per-output-channel ``mult``, per-layer ``shift``, ``zp_out``,
  ``out_bits`` = the next layer's ``a_bits``; ReLU is the clamp of an unsigned output;
* max pooling on the integers; the last layer's ``acc`` are the int32 logits (argmax = class);
* residual add (``kind == "add"``, two sources ``src = (i, j)``): both inputs are integer
  tensors at their own scales; ``acc = x_i * mult[0] + x_j * mult[1]`` (exact, ``|acc| < 2**31``
  by construction) and ``y = requant(acc, 1, shift, zp_out, out_bits, out_signed)``, i.e.
  ``mult[n] * 2**-shift`` approximates ``scale_n / scale_out``; ReLU is the unsigned clamp.
* concatenation along the channels (``kind == "concat"``, two or more sources ``src``): the
  inputs are integer tensors on one grid (their producers requantize to the concat's
  ``out_bits`` / ``out_signed`` at one scale), so the output is their integer values side by
  side (``numpy.concatenate`` over the last, channel axis), no arithmetic.
  A layer reads the output of the previous layer unless its ``src`` names others (``-1`` =
  the quantized network input).

Exactness note: the dot products are evaluated with a float32 matrix product when every
partial sum is provably below 2**24 in magnitude (``K * max|a| * max|w|``; then float32 is
exact integer arithmetic, whatever the summation order), with float64 below 2**53, and with an
int64 product otherwise (or with ``exact="int64"``). The float paths are BLAS-fast (float32
about 2.7x float64 on the 4-bit layers of the MNIST-1D models). All three paths are tested to
agree.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np

__all__ = ["QLayer", "QNetwork", "requant", "quantize_input", "wrap32", "dot_dtype",
           "int_forward", "int_accuracy", "int_logits"]


def _requant_fallback(acc, mult, shift, zp, bits, out_signed):
    """Contract section 3, used only until rvmpq.sw.golden exists (warned once)."""
    p = np.asarray(acc, dtype=np.int64) * np.asarray(mult, dtype=np.int64)
    if shift:
        r = (p >> shift) + ((p >> (shift - 1)) & 1)
    else:
        r = p
    lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if out_signed else (0, (1 << bits) - 1))
    r = np.clip(r, lo - (1 << 16), hi + (1 << 16))
    return np.clip(r + zp, lo, hi).astype(np.int64)


_REQUANT = None


def requant(acc, mult, shift, zp, bits, out_signed):
    """Requantize with ``rvmpq.sw.golden.requant`` (the one shared definition).

    ``mult`` may be an array broadcasting against ``acc`` (per output channel). If the golden
    module is not installed yet, a local copy of the contract is used with a warning.
    """
    global _REQUANT
    if _REQUANT is None:
        try:
            from rvmpq.sw.golden import requant as g

            _REQUANT = g
        except ImportError:
            warnings.warn("rvmpq.sw.golden is not available: using the local copy of the "
                          "requant contract (docs/contracts.md section 3)", stacklevel=2)
            _REQUANT = _requant_fallback
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    try:
        # the per-channel mult broadcasts inside the golden model (not copied to acc's shape)
        out = np.asarray(_REQUANT(acc, mult, int(shift), int(zp), int(bits), bool(out_signed)),
                         dtype=np.int64)
        return np.broadcast_to(out, acc.shape).copy() if out.shape != acc.shape else out
    except (TypeError, ValueError):
        # a golden model that takes scalar mult only: one call per channel
        mult = np.broadcast_to(mult, acc.shape)
        out = np.empty_like(acc)
        for c in range(acc.shape[-1]):
            out[..., c] = _REQUANT(acc[..., c], int(mult[(0,) * (acc.ndim - 1) + (c,)]),
                                   int(shift), int(zp), int(bits), bool(out_signed))
        return out


def wrap32(v):
    """Wrap int64 values to the signed 32-bit range (two's complement)."""
    v = np.asarray(v, dtype=np.int64)
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _range(bits: int, signed: bool) -> tuple[int, int]:
    return ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1))


@dataclasses.dataclass
class QLayer:
    """One layer of the integer network.

    Attributes
    ----------
    kind : str
        ``"conv"``, ``"linear"``, ``"maxpool"``, ``"flatten"``, ``"add"`` or ``"concat"``.
    name : str
        Source module path.
    in_shape, out_shape : tuple of int
        ``(H, W, C)`` (``(1, 1, F)`` for linear).
    w_bits, a_bits : int
        Weight bits and input activation bits (compute layers; 0 otherwise).
    a_signed : bool
        Input activations signed (else unsigned).
    zp_in : int
        Input zero point (padding value).
    weight : numpy.ndarray
        int64; conv ``(Cout, kh, kw, Cin/groups)``, linear ``(out, in)``; symmetric, values in
        ``[-(2**(w_bits-1) - 1), 2**(w_bits-1) - 1]``.
    bias : numpy.ndarray
        int32 per output channel (zero-point correction included).
    mult : numpy.ndarray
        int32 per output channel (unused for the last layer).
    shift : int
        0..63 per layer.
    zp_out : int
        Output zero point.
    out_bits : int
        Output bits (= next compute layer's ``a_bits``; 32 for the logits layer).
    out_signed : bool
        Output signed; ReLU layers are unsigned with ``zp_out = 0``.
    relu : bool
        ReLU fused (documentation; the clamp does it).
    stride, padding, kernel : tuple of int
        Geometry ``(h, w)``.
    groups : int
        Conv groups.
    w_scale : list of float
        Float weight scale per output channel (for reports and dequantization).
    qat : bool
        Whether this layer was fine-tuned with QAT.
    src : tuple of int, optional
        Indices of the layers read (``-1``: the network input); ``None``: the previous layer.
        An ``"add"`` layer reads two and keeps its two input multipliers in ``mult``; a
        ``"concat"`` layer reads two or more, in channel order, all on its grid
        (``out_bits``, ``out_signed``).
    """

    kind: str
    name: str
    in_shape: tuple
    out_shape: tuple
    w_bits: int = 0
    a_bits: int = 0
    a_signed: bool = False
    zp_in: int = 0
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    mult: np.ndarray | None = None
    shift: int = 0
    zp_out: int = 0
    out_bits: int = 32
    out_signed: bool = True
    relu: bool = False
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    kernel: tuple = (1, 1)
    groups: int = 1
    w_scale: list | None = None
    qat: bool = False
    src: tuple | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as nested lists)."""
        d = dataclasses.asdict(self)
        for k in ("weight", "bias", "mult"):
            if d[k] is not None:
                d[k] = np.asarray(d[k]).astype(int).tolist()
        for k in ("in_shape", "out_shape", "stride", "padding", "kernel"):
            d[k] = list(d[k])
        if d["src"] is None:
            del d["src"]     # sequential networks keep their old JSON form
        else:
            d["src"] = [int(s) for s in d["src"]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QLayer":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for k in ("weight", "bias", "mult"):
            if d.get(k) is not None:
                d[k] = np.asarray(d[k], dtype=np.int64)
        for k in ("in_shape", "out_shape", "stride", "padding", "kernel"):
            d[k] = tuple(d[k])
        if d.get("src") is not None:
            d["src"] = tuple(int(s) for s in d["src"])
        return cls(**d)


@dataclasses.dataclass
class QNetwork:
    """An integer network ready for the kernels / deploy.

    Attributes
    ----------
    input_scale : float
        Real value of one input step.
    input_zp : int
        Input zero point.
    input_bits : int
        Bits of the quantized input (= first layer's ``a_bits``).
    input_signed : bool
        Quantized input signed.
    layers : list of QLayer
    logit_scale : float
        Real value of one logit step (per-tensor weight scale of the last layer x input scale).
    meta : dict
        Free-form provenance (model name, calibration method, ...).
    """

    input_scale: float
    input_zp: int
    input_bits: int
    input_signed: bool
    layers: list
    logit_scale: float = 1.0
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def compute_layers(self) -> list:
        """The conv / linear layers."""
        return [l for l in self.layers if l.kind in ("conv", "linear")]

    def bits(self) -> list[tuple[int, int]]:
        """``(w_bits, a_bits)`` per compute layer."""
        return [(l.w_bits, l.a_bits) for l in self.compute_layers]

    def sources(self, i: int) -> tuple:
        """The layers that layer ``i`` reads (``-1``: the network input): its ``src``, or the
        previous layer when ``src`` is unset."""
        l = self.layers[i]
        return tuple(int(s) for s in l.src) if l.src is not None else (i - 1,)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = {k: getattr(self, k) for k in ("input_scale", "input_zp", "input_bits",
                                            "input_signed", "logit_scale", "meta")}
        d["format"] = "rvmpq-qnn-1"
        d["layers"] = [l.to_dict() for l in self.layers]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QNetwork":
        """Inverse of :meth:`to_dict`."""
        if d.get("format") != "rvmpq-qnn-1":
            raise ValueError(f"not an rvmpq integer network (format={d.get('format')!r}, "
                             "expected 'rvmpq-qnn-1')")
        return cls(d["input_scale"], d["input_zp"], d["input_bits"], d["input_signed"],
                   [QLayer.from_dict(l) for l in d["layers"]], d.get("logit_scale", 1.0),
                   d.get("meta", {}))

    def save(self, path) -> None:
        """Write as JSON (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        tmp.replace(path)

    @classmethod
    def load(cls, path) -> "QNetwork":
        """Read a JSON file written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def quantize_input(x: np.ndarray, net: QNetwork) -> np.ndarray:
    """Quantize a float NCHW batch to the integer HWC input (the one float step)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"input must be NCHW (4-D), got shape {x.shape}")
    q = np.floor(x / net.input_scale + 0.5).astype(np.int64) + net.input_zp
    lo, hi = _range(net.input_bits, net.input_signed)
    return np.clip(q, lo, hi).transpose(0, 2, 3, 1).copy()


def dot_dtype(k: int, a_max: int, w_max: int, exact: str = "auto"):
    """The dtype in which a ``K``-long integer dot product is exact: ``numpy.float32`` when
    ``k * a_max * w_max < 2**24``, ``numpy.float64`` below ``2**53``, else ``numpy.int64``
    (always ``numpy.int64`` with ``exact="int64"``). ``a_max`` / ``w_max`` bound the operands'
    magnitudes, so every partial sum is below the bound in any summation order."""
    bound = int(k) * int(a_max) * int(w_max)
    if exact == "auto" and bound < (1 << 24):
        return np.float32
    if exact == "auto" and bound < (1 << 53):
        return np.float64
    return np.int64


def _dot(a: np.ndarray, w: np.ndarray, exact: str, dt=None) -> np.ndarray:
    """Exact integer ``a @ w.T`` for integer-valued ``a (M, K)``, ``w (N, K)`` (int64 result),
    in ``dt`` (default :func:`dot_dtype` of the operands)."""
    if dt is None:
        dt = dot_dtype(a.shape[1], np.abs(a).max(initial=0), np.abs(w).max(initial=0), exact)
    return (a.astype(dt, copy=False) @ w.astype(dt).T).astype(np.int64)


def _conv(a: np.ndarray, l: QLayer, exact: str) -> np.ndarray:
    n, h, w, c = a.shape
    kh, kw = l.kernel
    sh, sw = l.stride
    ph, pw = l.padding
    if ph or pw:
        a = np.pad(a, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=l.zp_in)
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    cout = l.weight.shape[0]
    g = l.groups
    cin_g, cout_g = c // g, cout // g
    # im2col straight into the dtype the product is exact in (dot_dtype)
    dt = dot_dtype(kh * kw * cin_g, np.abs(a).max(initial=0), np.abs(l.weight).max(initial=0),
                   exact)
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=dt)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = a[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
    out = np.empty((n, ho, wo, cout), dtype=np.int64)
    for gi in range(g):
        colg = cols[..., gi * cin_g:(gi + 1) * cin_g].reshape(n * ho * wo, -1)
        wg = l.weight[gi * cout_g:(gi + 1) * cout_g].reshape(cout_g, -1)
        out[..., gi * cout_g:(gi + 1) * cout_g] = _dot(colg, wg, exact, dt).reshape(
            n, ho, wo, cout_g)
    return out


def int_forward(net: QNetwork, x: np.ndarray, *, exact: str = "auto", trace: list | None = None,
                stats: dict | None = None) -> np.ndarray:
    """Run the integer network on a float NCHW batch; return int64 logits ``(N, classes)``.

    Parameters
    ----------
    net : QNetwork
    x : numpy.ndarray
        Float NCHW input (quantized by :func:`quantize_input`).
    exact : str
        ``"auto"`` (float64 BLAS when provably exact, else int64) or ``"int64"``.
    trace : list, optional
        If given, receives each layer's integer output (HWC).
    stats : dict, optional
        If given, ``stats["wraps"]`` counts accumulators that wrapped around 32 bits.
    """
    if exact not in ("auto", "int64"):
        raise ValueError(f"exact={exact!r}; allowed values: ['auto', 'int64']")
    a0 = quantize_input(x, net)
    a = a0
    comp = net.compute_layers
    last = comp[-1]
    outs: list = []
    for i, l in enumerate(net.layers):
        if l.src is not None:
            ins = [a0 if s < 0 else outs[s] for s in l.src]
            a = ins[0]
        if l.kind == "add":
            if l.src is None or len(l.src) != 2 or ins[0].shape != ins[1].shape:
                raise ValueError(f"{l.name}: an add layer needs two sources of equal shape")
            acc = ins[0] * np.int64(l.mult[0]) + ins[1] * np.int64(l.mult[1])
            a = requant(acc, np.int64(1), l.shift, l.zp_out, l.out_bits, l.out_signed)
        elif l.kind == "concat":
            if l.src is None or len(l.src) < 2 or len({v.shape[:-1] for v in ins}) > 1:
                raise ValueError(f"{l.name}: a concat layer needs two or more sources of equal "
                                 "shape but for the channels, got "
                                 + ", ".join(str(v.shape[1:]) for v in ins))
            a = np.concatenate(ins, axis=-1)
        elif l.kind == "conv":
            acc = _conv(a, l, exact)
        elif l.kind == "linear":
            acc = _dot(a.reshape(a.shape[0], -1), l.weight, exact)
        elif l.kind == "maxpool":
            n, h, w, c = a.shape
            kh, kw = l.kernel
            ho, wo = h // kh, w // kw
            a = a[:, :ho * kh, :wo * kw, :].reshape(n, ho, kh, wo, kw, c).max(axis=(2, 4))
        elif l.kind == "flatten":
            a = a.reshape(a.shape[0], -1)
        else:
            raise ValueError(f"unknown layer kind {l.kind!r}; allowed: conv, linear, maxpool, "
                             "flatten, add, concat")
        if l.kind in ("conv", "linear"):
            full = acc + l.bias.astype(np.int64)
            acc = wrap32(wrap32(acc) + l.bias.astype(np.int64))
            if stats is not None:
                stats["wraps"] = stats.get("wraps", 0) + int((full != acc).sum())
            if l is last:
                a = acc
            else:
                a = requant(acc, l.mult, l.shift, l.zp_out, l.out_bits, l.out_signed)
        outs.append(a)
        if trace is not None:
            trace.append(a)
    return a.reshape(a.shape[0], -1)


def int_logits(net: QNetwork, x: np.ndarray) -> np.ndarray:
    """Integer logits scaled back to float (``logits * logit_scale``) for losses."""
    return int_forward(net, x).astype(np.float64) * net.logit_scale


def int_accuracy(net: QNetwork, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy (%) of the integer network (argmax of the int32 logits)."""
    return float((int_forward(net, x).argmax(1) == np.asarray(y)).mean() * 100)
