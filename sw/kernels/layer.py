"""Layer descriptions for the kernels: validation, random test layers and the numpy reference.

A kernel computes one compute layer of :class:`rvmpq.sw.search.qnn.QLayer` (the bit-exact
integer model's layer): ``acc = wrap32(sum(w * a) + bias)`` over an HWC input whose spatial
padding value is ``zp_in``, then ``requant`` to ``out_bits`` (or the raw int32 ``acc`` when
``out_bits == 32``, the logits layer). The reference here runs the *public* integer model
(:func:`rvmpq.sw.search.qnn.int_forward`) on a one-layer network, so the kernels are checked
against exactly the code the search validates accuracy with.
"""

from __future__ import annotations

import math

import numpy as np

from rvmpq.sw.search.qnn import QLayer, QNetwork, int_forward

__all__ = ["BITS", "KINDS", "KernelLayerError", "layer_variant", "check_layer", "random_layer",
           "random_input", "reference_output"]

#: Precisions the kernels support (weights = activations per layer).
BITS = (2, 4, 8, 16)
#: Kernel variants (see :func:`layer_variant`).
KINDS = ("conv", "pointwise", "depthwise", "linear")


class KernelLayerError(ValueError):
    """A layer the kernels cannot run; the message names what is supported."""


def layer_variant(layer: QLayer) -> str:
    """The kernel variant of a layer: ``"conv"`` (KxK, groups 1), ``"pointwise"`` (1x1, stride
    1, no padding), ``"depthwise"`` (groups == Cin == Cout) or ``"linear"``."""
    if layer.kind == "linear":
        return "linear"
    if layer.kind != "conv":
        raise KernelLayerError(f"layer kind {layer.kind!r} has no kernel; supported kinds: "
                               "conv, linear")
    cin = layer.in_shape[2]
    if layer.groups == 1:
        if tuple(layer.kernel) == (1, 1) and tuple(layer.padding) == (0, 0):
            return "pointwise"
        return "conv"
    if layer.groups == cin and layer.weight.shape[0] == cin:
        return "depthwise"
    raise KernelLayerError(f"conv with groups={layer.groups} (Cin={cin}, "
                           f"Cout={layer.weight.shape[0]}) is not supported; supported: "
                           "groups=1 or depthwise (groups == Cin == Cout)")


def check_layer(layer: QLayer) -> str:
    """Validate ``layer`` for the kernels; return its variant.

    Raises :class:`KernelLayerError` naming the supported values for unsupported precisions,
    mixed weight/activation widths, layer kinds or geometry.
    """
    v = layer_variant(layer)
    if layer.w_bits not in BITS or layer.a_bits not in BITS:
        raise KernelLayerError(f"w_bits={layer.w_bits}, a_bits={layer.a_bits}: supported "
                               f"precisions are {list(BITS)}")
    if layer.w_bits != layer.a_bits:
        raise KernelLayerError(
            f"mixed precision inside a layer (w_bits={layer.w_bits}, a_bits={layer.a_bits}) is "
            "not supported by the kernels: mpq.dot needs equal lane widths (contracts.md 1); "
            "use w_bits == a_bits")
    if layer.out_bits not in BITS + (32,):
        raise KernelLayerError(f"out_bits={layer.out_bits}; supported: {list(BITS) + [32]}")
    if v != "linear" and layer.stride[0] != layer.stride[1]:
        pass  # different strides are fine: both are compile-time constants
    return v


def _range(bits: int, signed: bool) -> tuple[int, int]:
    return ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1))


def random_layer(variant: str, bits: int, cin: int, cout: int, h: int = 1, w: int = 1,
                 k: int = 3, stride: int = 1, padding: int | None = None, *,
                 rng: np.random.Generator, out_bits: int | None = None,
                 a_signed: bool | None = None, relu: bool | None = None) -> QLayer:
    """A random layer of the given variant with requantization parameters that spread the
    outputs over the output range (so clamping and rounding are both exercised).

    Parameters
    ----------
    variant : {"conv", "pointwise", "depthwise", "linear"}
    bits : {2, 4, 8, 16}
        Weight and input activation bits.
    cin, cout : int
        Channels (features for linear); depthwise needs ``cin == cout``.
    h, w : int
        Input map size (ignored for linear).
    k, stride, padding : int or (int, int)
        Kernel, stride, padding as (height, width) or one int for both (default padding
        ``k // 2``); pointwise forces a 1x1 kernel without padding.
    rng : numpy.random.Generator
    out_bits : int, optional
        Output bits (2/4/8/16, or 32 for a logits layer); default ``bits``.
    a_signed, relu : bool, optional
        Input signedness and ReLU output (unsigned, zp 0); random by default.
    """
    if variant not in KINDS:
        raise KernelLayerError(f"variant {variant!r}; supported: {list(KINDS)}")
    if bits not in BITS:
        raise KernelLayerError(f"bits={bits}; supported: {list(BITS)}")
    out_bits = bits if out_bits is None else out_bits
    a_signed = bool(rng.integers(2)) if a_signed is None else a_signed
    relu = bool(rng.integers(2)) if relu is None else relu
    kh, kw = (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))
    sh, sw = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
    if variant == "linear":
        h = w = kh = kw = sh = sw = 1
        padding = 0
    if variant == "pointwise":
        kh = kw = 1
        padding = 0
    if padding is None:
        padding = (kh // 2, kw // 2)
    ph, pw = (padding, padding) if isinstance(padding, int) else (int(padding[0]),
                                                                  int(padding[1]))
    groups = 1
    if variant == "depthwise":
        if cin != cout:
            raise KernelLayerError(f"depthwise needs cin == cout, got {cin}, {cout}")
        groups = cin
    wmax = (1 << (bits - 1)) - 1
    cin_g = cin // groups
    shape_w = (cout, cin) if variant == "linear" else (cout, kh, kw, cin_g)
    weight = rng.integers(-wmax, wmax + 1, size=shape_w).astype(np.int64)
    lo, hi = _range(bits, a_signed)
    zp_in = int(rng.integers(lo, hi + 1)) if rng.integers(2) else 0
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise KernelLayerError(f"output map {ho}x{wo} is empty (input {h}x{w}, kernel {kh}x{kw}, "
                               f"stride {sh}x{sw}, padding {ph}x{pw})")
    dot_len = cin_g * kh * kw
    acc_std = math.sqrt(dot_len) * max(1.0, wmax / 1.7) * max(1.0, (hi - lo) / 3.5)
    bias = rng.integers(-int(2 * acc_std) - 1, int(2 * acc_std) + 2, size=cout).astype(np.int64)
    mult = rng.integers(1 << 14, 1 << 15, size=cout).astype(np.int64)
    shift, zp_out, out_signed = 0, 0, True
    if out_bits != 32:
        target = 1 << max(out_bits - 2, 0)
        shift = int(np.clip(math.ceil(math.log2(acc_std * (1 << 15) / target)), 0, 63))
        out_signed = not relu
        if out_signed:
            zp_out = int(rng.integers(-2, 3)) if out_bits > 2 else 0
    kind = "linear" if variant == "linear" else "conv"
    in_shape = (1, 1, cin) if variant == "linear" else (h, w, cin)
    out_shape = (1, 1, cout) if variant == "linear" else (ho, wo, cout)
    return QLayer(kind=kind, name=f"{variant}-w{bits}", in_shape=in_shape, out_shape=out_shape,
                  w_bits=bits, a_bits=bits, a_signed=a_signed, zp_in=zp_in, weight=weight,
                  bias=bias, mult=mult, shift=shift, zp_out=zp_out, out_bits=out_bits,
                  out_signed=out_signed, relu=relu and out_bits != 32,
                  stride=(sh, sw), padding=(ph, pw), kernel=(kh, kw),
                  groups=groups)


def random_input(layer: QLayer, rng: np.random.Generator) -> np.ndarray:
    """A random integer HWC input in the layer's activation range (int64, shape in_shape)."""
    lo, hi = _range(layer.a_bits, layer.a_signed)
    return rng.integers(lo, hi + 1, size=layer.in_shape).astype(np.int64)


def reference_output(layer: QLayer, a: np.ndarray) -> np.ndarray:
    """The layer's output from the integer network model (``qnn.int_forward``).

    Parameters
    ----------
    layer : QLayer
    a : numpy.ndarray
        Integer HWC input of shape ``layer.in_shape``.

    Returns
    -------
    numpy.ndarray
        int64 HWC output ``layer.out_shape`` (requantized, or int32 accumulators when
        ``out_bits == 32``).
    """
    a = np.asarray(a, dtype=np.int64)
    if a.shape != tuple(layer.in_shape):
        raise ValueError(f"input shape {a.shape} != layer.in_shape {tuple(layer.in_shape)}")
    x = a.transpose(2, 0, 1)[None].astype(np.float64)   # NCHW, exact integers
    layers = [layer]
    if layer.out_bits != 32:
        n = int(np.prod(layer.out_shape))
        layers.append(QLayer(kind="linear", name="sink", in_shape=(1, 1, n), out_shape=(1, 1, 1),
                             w_bits=layer.out_bits, a_bits=layer.out_bits,
                             weight=np.zeros((1, n), np.int64), bias=np.zeros(1, np.int64),
                             mult=np.zeros(1, np.int64)))
    net = QNetwork(input_scale=1.0, input_zp=0, input_bits=layer.a_bits,
                   input_signed=layer.a_signed, layers=layers)
    trace: list = []
    int_forward(net, x, exact="int64", trace=trace)
    return np.asarray(trace[0], dtype=np.int64).reshape(layer.out_shape)
