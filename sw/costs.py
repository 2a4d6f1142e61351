"""``rvmpq costs``: per-layer costs measured on the RTL, cached, with a fitted analytic model.

For a :class:`~rvmpq.sw.search.costs_api.LayerShape` and a precision the generated MPQ kernel
(:mod:`rvmpq.sw.kernels`) runs on random data on the Verilator model of the ``mpq`` SoC and its
``rdcycle`` count is the cost. A shape marked ``logits`` (the network's last layer) is costed
as deploy runs it: raw int32 output (``out_bits = 32``, no requantization, no ReLU); every
other layer with a ReLU output requantized to its own precision. Measurements are cached as
JSON under ``<build>/costs/<rtl-hash>-<kernel-hash>/`` (``<build>`` is
:func:`rvmpq.sw.tools.build_root`; the RTL hash covers ``hw/**/*.py``, the kernel hash the
generator), keyed by shape and precision, so a change of the RTL or of the
kernels re-measures; cache misses run in parallel (``jobs``) behind a progress bar.

Metrics (:class:`~rvmpq.sw.search.costs_api.LayerCost`):

``cycles``
    measured kernel cycles (or, for shapes not measured, the analytic model fitted to the
    measurements of the same kernel variant and precision; ``rvmpq costs --validate`` reports
    its error on held-out shapes).
``weight_bytes``
    packed weight words x 4 + 8 bytes per output channel (int32 bias and mult).
``act_bytes``
    the packed input feature map (without the padding halo).
``energy``
    a proxy in units of one INT16 ``mpq.dot``: ``n_dot * E_DOT[bits] + (instret - n_dot) *
    E_INSTR + bytes_touched * E_BYTE`` where ``E_DOT[bits]`` is proportional to the partial-product
    bits active in the hierarchical multiplier (``lanes * bits**2 = 32 * bits``: 1, 1/2, 1/4, 1/8
    for INT16/8/4/2), ``E_INSTR = 0.25`` (fetch/decode/regfile of any instruction) and
    ``E_BYTE = 0.05`` per byte of weights, input and output moved once.

Analytic model
--------------
One non-negative least-squares fit per generated kernel and precision (:func:`fit_group`:
``gemm`` for conv, pointwise and linear layers, which run the same ``mpq.ldot`` kernel, and
``depthwise``), of cycles (and of retired instructions, for the energy proxy of unmeasured
shapes) on *counts read off the kernel plan* (:func:`plan_counts` from
:func:`rvmpq.sw.kernels.gen.plan_layer`), level by level of the kernel's loop nest (channel
blocks, output rows, output pixels, kernel rows, input words): the iterations of each loop
that exists (a loop of one trip is compiled away), taken back-edges, ``ldot``, activation
loads, requantized / raw outputs, output words, and the compiled code shapes that change the
per-pixel cost: the register allocation of a one-block pixel loop (up to kernel generator k6
its multipliers were constants that the compiler re-materialised per pixel; since k7 they are
read once through an opaque pointer) or of a multi-block one (multipliers loaded per block and
held in registers), and two-pixel rows. No instruction cost is written down here: when the
ISA or the kernel generator changes, the cache key changes, the shapes are re-measured and
the same features are re-fitted. Rows are weighted by ``1 / cycles`` so the fit minimises
relative error. The fit set and the held-out validation set (:func:`fit_shapes`,
:func:`held_out_shapes`) are drawn from one seeded generator per variant and are disjoint;
``rvmpq costs --validate`` reports the error per variant and precision.

Mixed widths (``w_bits != a_bits``): ``mpq.dot`` needs equal lane widths, so the kernel runs at
``max(w_bits, a_bits)`` and stores both operands at that width; the cost says so.

Whole-program cost (:meth:`RtlCostModel.in_network_cycles`)
-----------------------------------------------------------
In a deployed network (``rvmpq deploy``) layer ``K`` requantizes to layer ``K+1``'s activation
bits, not to its own, and *glue* code (max pooling on the packed lanes, the copy into the next
layer's pre-padded input buffer) runs between layers. Both depend only on the consumer's
precision, so they are charged to the consumer and the search stays separable. With
``T(b, o)`` a layer's measured cycles at kernel precision ``b`` and output precision ``o``,
``R(o) = T(2, o) - T(2, 2)`` its output-side delta (:data:`REF_OUT_BITS` = 2) and ``G(b)`` the
glue in front of a layer at its bits, layer ``K`` is charged::

    T_K(b_K, b_K) - R_K(b_K) + R_{K-1}(b_K) + G_K(b_K)

which sums over the network to ``sum_K T_K(b_K, b_{K+1}) + G_K(b_K)``: exact where ``T`` is
additive in ``b`` and ``o`` (the ``mpq.ldot`` kernels' output side, 16 ``mpq.rqpa`` and
``16 / lanes`` stores per pixel and block, does not depend on ``b``), and exactly so for uniform
configurations (the ``R`` terms cancel) and producers at INT2. ``G`` is measured by running
deploy's own program on :func:`glue_network` (a minimal producer with the same output layout,
the pooling, a consumer with the same input layout), cached under
``<cache>/glue-<deploy hash>/``; ``T(2, o)`` like any layer (``-o<bits>`` in the file name).
The one place the split is far off: a depthwise layer whose output is narrower than its input
runs another kernel (``mpq.dot``, 1.3-2.7x slower), which no per-layer cost can see coming.
A linear layer behind a conv is costed as deploy runs it (:func:`deployed_shape`: it reads the
producer's padded channels). Residual adds: a layer behind an add (its
:class:`~rvmpq.sw.search.costs_api.LayerLink` has the add as producer) is charged the add
stage, the glue behind it and the output side of the layers whose outputs only adds read
(``feeds``: they are requantized to its bits), all at its own bits; the add stage is measured
with everything at that precision (:func:`glue_network`). An add input that a compute layer
reads too (an identity block's skip) is at *that* layer's bits: the part of the add that
depends on it, ``U_j(s)`` (:meth:`RtlCostModel.add_in_delta`: the add measured with input
``j`` at ``s`` against all at a reference precision, averaged over the references), is
charged to that layer (``LayerLink.unpacks``, term ``add_in``) and taken out of the add's
consumer (``LayerLink.external``: ``A(o, o, o) - U_j(o)``), so the two cancel where the input
is at the add's output bits (uniform configurations stay exact). The add's code is not exactly
separable in its input and output precisions: on a measured grid of skips at other bits than
the add's branch and output the split is off by a median 2.8 %, at worst 10.7 % of the add
(charging the whole add at its output's bits: 5.9 % / 17.9 %; docs/costs.md, "Residual
adds"). Channel concats: a layer behind a ``concat`` (its link's producer is a ``"concat"``
shape, its parts the ``feeds``) is charged the glue that gathers the parts into its input
buffer (measured on :func:`glue_network`'s program with parts of the same output layouts)
and the parts' output side at its bits (``sum_f R_f(b)``, each part paid by one link); it is
costed as deploy runs it, reading every part padded to whole words of lanes
(:func:`deployed_shape`). Nothing here is a constant: every term is an RTL measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rvmpq.sw.search.costs_api import (BITS, LayerCost, LayerLink, LayerShape, check_bits,
                                       consumer_linked)
from rvmpq.sw.tools import BUILD_HELP, build_root

__all__ = ["E_DOT", "E_INSTR", "E_BYTE", "VARIANTS", "REF_OUT_BITS", "Measurement",
           "GlueMeasurement", "RtlCostModel", "glue_network", "glue_hash", "glue_source_hash",
           "network_prediction", "add_split_grid",
           "shape_variant", "shape_layer", "shape_plan", "plan_counts", "fit_group", "features",
           "fit_shapes", "held_out_shapes", "validation_report", "model_shapes", "model_network",
           "deployed_shape",
           "default_cost_model", "fitted_cost_model", "Progress", "add_arguments", "main"]

#: Energy of one mpq.dot per precision, relative to INT16 (active partial-product bits).
E_DOT = {16: 1.0, 8: 0.5, 4: 0.25, 2: 0.125}
#: Energy of any other instruction (relative units).
E_INSTR = 0.25
#: Energy per byte of weights / activations moved.
E_BYTE = 0.05
#: Input shapes (C, H, W) of the built-in models.
MODEL_INPUTS = {"digits-cnn": (1, 8, 8), "mnist1d-cnn": (1, 1, 40),
                "mnist1d-cnn-l": (1, 1, 40), "mnist1d-resnet": (1, 1, 40)}
#: Kernel variants, each with its own fitted model.
VARIANTS = ("conv", "pointwise", "depthwise", "linear")
#: Seed of the fit / held-out shape sets (fixed: the validation is reproducible).
SHAPE_SEED = 20240
#: Shapes per variant in the fit set and in the held-out set.
N_FIT, N_HELD = 40, 15
#: Kernel precision at which a layer's output-side work is measured, as a delta between output
#: precisions (:meth:`RtlCostModel.out_delta`). INT2 inputs have the most lanes, so every
#: output precision runs the ``mpq.ldot`` kernel there (depthwise too, which at wider inputs
#: switches kernels for narrower outputs); measured on 60 held-out shapes this reference
#: predicts ``T(b, o)`` better than INT8 or INT16 (docs/costs.md).
REF_OUT_BITS = 2
#: Version of what the glue cache holds, part of :func:`glue_hash`: ``add-split-1``: add
#: stages also measured with their inputs at other bits than their output
#: (``GlueMeasurement.in_bits``, :meth:`RtlCostModel.add_in_delta`); ``concat-1``: links
#: from a channel concat (the glue gathering its parts, keyed by the parts' shapes).
GLUE_FORMAT = "concat-1"
#: Longest glue cache file name stem taken from a link's key as it is; a longer one is cut
#: and ends in a hash of the whole key (:meth:`RtlCostModel._glue_path`).
GLUE_NAME_MAX = 180
#: Largest number of INT16 dot instructions of a generated fit/validation shape (keeps each
#: RTL run under about a second).
MAX_DOTS = 60_000


def shape_variant(shape: LayerShape) -> str:
    """Kernel variant of a shape; ``ValueError`` naming the supported ones otherwise."""
    if shape.kind == "linear":
        return "linear"
    if shape.groups == 1:
        return "pointwise" if (shape.kh, shape.kw) == (1, 1) and shape.padding == (0, 0) \
            else "conv"
    if shape.groups == shape.cin == shape.cout:
        return "depthwise"
    raise ValueError(f"{shape.key()}: groups={shape.groups} is not supported; supported layers: "
                     "conv (groups 1, any KxK), depthwise (groups == cin == cout), linear")


def _out_bits(shape: LayerShape, bits: int, out_bits: int | None) -> int:
    """The output bits a measurement of ``shape`` uses: 32 for logits, else ``out_bits`` (default
    the layer's own ``bits``)."""
    if shape.logits:
        if out_bits not in (None, 32):
            raise ValueError(f"{shape.key()}: a logits layer outputs int32, not out_bits="
                             f"{out_bits}")
        return 32
    return bits if out_bits is None else check_bits(out_bits, "out_bits")


def _random_layer(shape: LayerShape, bits: int, rng, out_bits: int | None = None):
    from rvmpq.sw.kernels.layer import random_layer

    return random_layer(shape_variant(shape), bits, shape.cin, shape.cout, shape.h_in,
                        shape.w_in, (shape.kh, shape.kw), shape.stride, shape.padding, rng=rng,
                        out_bits=_out_bits(shape, bits, out_bits), a_signed=False,
                        relu=not shape.logits)


def shape_layer(shape: LayerShape, bits: int, seed: int = 0, out_bits: int | None = None):
    """A random :class:`~rvmpq.sw.search.qnn.QLayer` of ``shape`` at ``bits`` and its input.

    ReLU output requantized to ``out_bits`` (default ``bits``), or the raw int32 logits for a
    ``logits`` shape.
    """
    from rvmpq.sw.kernels.layer import random_input

    check_bits(bits)
    ob = _out_bits(shape, bits, out_bits)
    key = [seed, bits, zlib.crc32(shape.key().encode())]
    if not shape.logits and ob != bits:          # the default keeps its historical seed
        key.append(ob)
    rng = np.random.default_rng(key)
    layer = _random_layer(shape, bits, rng, ob)
    return layer, random_input(layer, rng)


def shape_plan(shape: LayerShape, bits: int):
    """The MPQ :class:`~rvmpq.sw.kernels.gen.KernelPlan` of ``shape`` at ``bits``."""
    from rvmpq.sw.kernels.gen import plan_layer

    check_bits(bits)
    return plan_layer(_random_layer(shape, bits, np.random.default_rng(0)), "mpq")


def _ldot_kernel(pl) -> bool:
    """True if the generator emits the ``mpq.ldot`` kernel for this plan (the default,
    :data:`rvmpq.sw.kernels.gen.MPQ_GEMM` ``= "ldot"``), the kernel :func:`plan_counts` models."""
    from rvmpq.sw.kernels import gen

    if gen.MPQ_GEMM != "ldot":
        return False
    if pl.variant == "depthwise":
        return pl.out_bits == 32 or pl.la >= pl.lo
    return pl.nb == gen.LDOT_NB and pl.p == 1


def plan_counts(pl) -> dict[str, float]:
    """Counts of one layer's kernel work, read off its plan (no instruction costs).

    Both ``mpq.ldot`` kernels (:mod:`rvmpq.sw.kernels.gen`) have the same loop nest: channel
    blocks (``nb = 16`` output channels for conv / pointwise / linear; one channel word of
    ``la`` channels for depthwise, whose one-hot weights make it a block of ``la``), then output
    rows, then output pixels; per pixel the kernel rows (``kh``, unrolled while the code is
    small) of ``krow`` input words (depthwise: ``kh * kw`` taps of one word), each one
    activation ``lw`` and ``nb`` ``mpq.ldot``; then ``nb`` ``mpq.rqpa`` and the packed stores
    (or ``mpq.accrd`` and int32 stores for a logits layer). A loop whose trip count is 1 is
    removed by the compiler, so each loop level counts only where it exists.

    ``blocks`` (block-loop iterations: bias ``mpq.accld`` and multiplier set-up),
    ``mult_loads`` (multipliers loaded per iteration of the block loop; 0 with one block, which
has no block loop: its multipliers are read once, like the rest of the set-up),
    ``rows`` (row-loop iterations), ``pixels`` (pixel bodies), ``px_loop`` (pixel-loop
    iterations), ``branches`` (taken loop back-edges), ``row_walks`` (kernel rows walked),
    ``ky_loop`` (iterations of a kernel-row loop that was not unrolled), ``iters`` (activation
    loads), ``dots`` (``mpq.ldot``), ``wbases`` (weight base pointers formed per pixel: the
    ``ldot`` offset reaches 8 input words), ``krow_groups`` (those bases, formed once),
    ``requant`` (``mpq.rqpa``), ``raw_out`` (int32 outputs of a logits layer), ``out_words``
    (output words stored), ``cmult`` (pixels x live multipliers of a one-block layer: its
    loop's register allocation differs; since kernel generator k7 the multipliers are read
    through an opaque pointer, so their values no longer change the code), ``px_multi`` (pixels of a multi-block layer, whose
    multipliers live in registers), ``wo2`` / ``wo2_regs`` (pixels of a two-pixel row, and
    those x live multipliers: the compiler turns that loop into a flag-driven one and
    recomputes addresses in it).
    """
    if not _ldot_kernel(pl):
        raise ValueError(f"plan_counts models the mpq.ldot kernels (gen.MPQ_GEMM = 'ldot'); "
                         f"this {pl.variant} plan (nb={pl.nb}, p={pl.p}) is for another kernel")
    from rvmpq.sw.kernels.gen import LDOT_UNROLL_BYTES

    raw = pl.out_bits == 32
    if pl.variant == "depthwise":
        nblk, nb, kh, krow = pl.cw, pl.la, pl.kh * pl.kw, 1
        unroll, real = True, pl.cin
    else:
        nblk, nb, kh, krow = pl.cout_pad // pl.nb, pl.nb, pl.kh, pl.kw * pl.cw
        unroll, real = kh * krow * (nb + 1) * 4 <= LDOT_UNROLL_BYTES, pl.cout
    words = nb if raw else nb // pl.lo              # output words stored per pixel
    live = 0 if raw else (min(real, nb) if nblk == 1 else nb)   # multipliers in the pixel loop
    bp = nblk * pl.ho * pl.wo
    kyl = not unroll and kh > 1
    groups = 0 if pl.variant == "depthwise" else kh * -(-krow // 8)
    c = {"blocks": nblk if nblk > 1 else 0,
         "mult_loads": nblk * nb if nblk > 1 and not raw else 0,
         "rows": nblk * pl.ho if pl.ho > 1 else 0,
         "pixels": bp,
         "px_loop": bp if pl.wo > 1 else 0,
         "branches": (nblk - 1) + nblk * (pl.ho - 1) + nblk * pl.ho * (pl.wo - 1)
                     + (bp * (kh - 1) if kyl else 0),
         "row_walks": bp * kh,
         "ky_loop": bp * kh if kyl else 0,
         "iters": bp * kh * krow,
         "dots": bp * kh * krow * nb,
         "wbases": bp * groups,
         "krow_groups": groups,
         "requant": 0 if raw else bp * nb,
         "raw_out": bp * nb if raw else 0,
         "out_words": bp * words,
         "cmult": bp * live if nblk == 1 else 0,
         "px_multi": bp if nblk > 1 else 0,
         "wo2": bp if pl.wo == 2 else 0,
         "wo2_regs": bp * live if pl.wo == 2 else 0}
    return {k: float(v) for k, v in c.items()}


def fit_group(shape: LayerShape, bits: int) -> str:
    """Which fitted model costs ``shape`` at ``bits``: one per generated kernel and precision.
    conv, pointwise and linear layers run the same ``mpq.ldot`` GEMM kernel (a linear layer is
    a 1x1 map, a pointwise one a 1x1 kernel), so they share one fit (``gemm-<bits>``): each
    variant's shapes then teach the others the loop shapes they rarely have (two-pixel rows,
    single blocks, long rows); depthwise has its own kernel (``depthwise-<bits>``)."""
    v = shape_variant(shape)
    return f"{'depthwise' if v == 'depthwise' else 'gemm'}-{check_bits(bits)}"


def features(shape: LayerShape, bits: int) -> np.ndarray:
    """Feature vector of the analytic model: a constant 1, then :func:`plan_counts` in order."""
    return np.array([1.0, *plan_counts(shape_plan(shape, bits)).values()], dtype=np.float64)


@dataclasses.dataclass
class Measurement:
    """One RTL measurement (the cache entry)."""

    shape: str
    bits: int
    cycles: int
    instret: int
    n_dot: int
    weight_bytes: int
    act_bytes: int
    out_bytes: int
    exact: bool


@dataclasses.dataclass
class GlueMeasurement:
    """One RTL measurement of the glue in front of a layer (a cache entry): ``link`` is the
    :meth:`~rvmpq.sw.search.costs_api.LayerLink.key`, ``bits`` the consumer's input precision,
    ``glue`` what deploy emits (``copy``: a glue function, ``alias``: none, 0 cycles);
    ``add_cycles`` the residual-add stage in front of it when the link's producer is an add
    (measured in the same program, output at ``bits``, inputs at ``in_bits``: skip, branch;
    ``None``: both at ``bits``; 0 otherwise)."""

    link: str
    bits: int
    cycles: int
    glue: str
    exact: bool
    add_cycles: int = 0
    in_bits: list | None = None


@functools.lru_cache(maxsize=1)
def glue_hash() -> str:
    """Hash of the deploy program generator (``sw/deploy.py``: the glue and add code) and of
    the harness that measures them (:func:`glue_network`, :meth:`RtlCostModel.measure_glue`),
    part of the glue cache folder name so that a change of either re-measures. Computed once
    per process (:func:`glue_source_hash` reads the files again)."""
    return glue_source_hash()


def glue_source_hash() -> str:
    """:func:`glue_hash` from the files as they are now (not cached): for a check that the
    sources did not change during a run."""
    import hashlib
    import inspect

    h = hashlib.sha256((Path(__file__).parent / "deploy.py").read_bytes())
    h.update(GLUE_FORMAT.encode())
    h.update(inspect.getsource(glue_network).encode())
    h.update(inspect.getsource(RtlCostModel.measure_glue).encode())
    return h.hexdigest()[:12]


def glue_network(link: LayerLink, bits: int, seed: int = 0,
                 in_bits: tuple[int, int] | None = None):
    """The smallest network whose deploy program has ``link``'s glue, at ``bits``, and an
    input: ``(QNetwork, xq)`` with ``xq`` an ``(1, H, W, C)`` integer batch.

    A producer with the same output layout as ``link.producer`` (channels, output map, channel
    padding of its kernel variant: a 1x1 conv / depthwise / linear from a minimal input; for a
    residual add, a 1x1 conv's ReLU output plus a 1x1 conv of it without ReLU, added with a
    ReLU: the add stage is timed in the same run), its ReLU output requantized to ``bits``,
    the max pooling, a flatten before a linear
    consumer, and the consumer with the same input geometry as ``link.consumer`` (channels,
    map, padding) but a single output channel (depthwise: all of them) as the logits layer.
    The glue depends only on the two layouts, so it is the same code as in the network.

    For a concat producer (``link.feeds`` its parts), one producer per part with the part's
    output layout (a 1x1 conv / depthwise / linear of its variant, channels and map, ReLU
    output at ``bits``): the first reads the network input, the later ones the first part
    (a depthwise part of other channels through a 1x1 helper conv), then the concat: its
    gathering glue is the same C code as in the network.

    ``in_bits``: for an add producer, the precisions of its two inputs (the skip, input 0,
    and the branch, input 1; default both ``bits``, the add's output precision): the add
    stage of :meth:`RtlCostModel.add_in_delta` (an input unpacked at other bits).
    """
    from rvmpq.sw.kernels.layer import random_input, random_layer
    from rvmpq.sw.search.qnn import QLayer, QNetwork

    check_bits(bits)
    p, c = link.producer, link.consumer
    s0, s1 = (bits, bits) if in_bits is None else (check_bits(b, "in_bits") for b in in_bits)
    if (s0, s1) != (bits, bits) and p.kind != "add":
        raise ValueError(f"in_bits={in_bits}: only an add producer has input precisions")
    key = [seed, bits, zlib.crc32(link.glue_key().encode())]
    if (s0, s1) != (bits, bits):                 # the default keeps its historical seed
        key += [s0, s1]
    rng = np.random.default_rng(key)
    pv = p.kind if p.kind in ("add", "concat") else shape_variant(p)
    ho, wo, ch = p.h_out, p.w_out, p.cout
    if pv == "concat":
        layers, idx = [], []
        c0 = link.feeds[0].cout
        for j, f in enumerate(link.feeds):
            v, cj = shape_variant(f), f.cout
            if (f.h_out, f.w_out) != (ho, wo):
                raise ValueError(f"{link.glue_key()}: part {j} ({f.key()}) has a {f.h_out}x"
                                 f"{f.w_out} output, the concat {ho}x{wo}")
            src, cin = ((-1, cj if v == "depthwise" else 1) if j == 0 else (idx[0], c0))
            if v == "depthwise" and cin != cj:
                hl = random_layer("pointwise", bits, cin, cj, ho, wo, rng=rng, out_bits=bits,
                                  a_signed=False, relu=True)
                hl.name, hl.src = f"helper{j}", (src,)
                layers.append(hl)
                src, cin = len(layers) - 1, cj
            if v == "linear":
                lj = random_layer("linear", bits, cin, cj, rng=rng, out_bits=bits,
                                  a_signed=False, relu=True)
            elif v == "depthwise":
                lj = random_layer("depthwise", bits, cj, cj, ho, wo, 1, 1, 0, rng=rng,
                                  out_bits=bits, a_signed=False, relu=True)
            else:
                lj = random_layer("pointwise", bits, cin, cj, ho, wo, rng=rng, out_bits=bits,
                                  a_signed=False, relu=True)
            lj.name, lj.src = f"part{j}", (src,)
            idx.append(len(layers))
            layers.append(lj)
        layers.append(QLayer("concat", "concat", (ho, wo, ch), (ho, wo, ch), out_bits=bits,
                             out_signed=False, relu=True, src=tuple(idx)))
        l0 = layers[0]
    elif pv == "add":
        # a residual block's add: the skip (a 1x1 conv's ReLU output, unsigned, at ``s0``)
        # plus a 1x1 conv of it without ReLU (signed, at ``s1``), ReLU after the add, output
        # at ``bits``; the add stage and the glue behind it are deploy's code for these
        # layouts
        l0 = random_layer("pointwise", s0, 1, ch, ho, wo, rng=rng, out_bits=s0,
                          a_signed=False, relu=True)
        lb = random_layer("pointwise", s0, ch, ch, ho, wo, rng=rng, out_bits=s1,
                          a_signed=False, relu=False)
        lb.out_signed = True
        hi = 1 << max(bits, s0, s1)
        mult = rng.integers(1, max(2, (1 << 30) // (2 * hi)), size=2)
        shift = max(0, int(np.ceil(np.log2(2 * int(mult.max()) + 1))))
        add = QLayer("add", "add", (ho, wo, ch), (ho, wo, ch), 0, bits, True, 0,
                     mult=np.asarray(mult, dtype=np.int64), shift=shift, out_bits=bits,
                     out_signed=False, relu=True, src=(0, 1))
        l0.name, lb.name = "skip", "branch"
        layers = [l0, lb, add]
    elif pv == "linear":
        l0 = random_layer("linear", bits, 1, ch, rng=rng, out_bits=bits, a_signed=False,
                          relu=True)
    elif pv == "depthwise":
        l0 = random_layer("depthwise", bits, ch, ch, ho, wo, 1, 1, 0, rng=rng, out_bits=bits,
                          a_signed=False, relu=True)
    else:
        l0 = random_layer("pointwise", bits, 1, ch, ho, wo, rng=rng, out_bits=bits,
                          a_signed=False, relu=True)
    if pv not in ("add", "concat"):
        l0.name = "producer"
        layers = [l0]
    kh, kw = link.pool
    if (kh, kw) != (1, 1):
        layers.append(QLayer("maxpool", "pool", (ho, wo, ch), (ho // kh, wo // kw, ch),
                             kernel=(kh, kw), stride=(kh, kw)))
    cv = shape_variant(c)
    if cv == "linear":
        if pv != "linear":
            n = (ho // kh) * (wo // kw) * ch
            layers.append(QLayer("flatten", "flat", (ho // kh, wo // kw, ch), (1, 1, n)))
        l1 = random_layer("linear", bits, c.cin, 1, rng=rng, out_bits=32, a_signed=False)
    else:
        cout = c.cout if cv == "depthwise" else 1
        l1 = random_layer("depthwise" if cv == "depthwise" else "conv", bits, c.cin, cout,
                          c.h_in, c.w_in, (c.kh, c.kw), c.stride, c.padding, rng=rng,
                          out_bits=32, a_signed=False)
    l1.name = "consumer"
    layers.append(l1)
    net = QNetwork(1.0, 0, s0, False, layers)
    return net, random_input(l0, rng)[None]


def _add_probe_link(add: LayerShape) -> LayerLink:
    """The link whose :func:`glue_network` measures ``add``'s stage for
    :meth:`RtlCostModel.add_in_delta`: the add and a 1x1 conv reading it (the add stage is a
    function of its own, timed alone: the consumer does not change it)."""
    return LayerLink(add, LayerShape("conv", add.cout, add.cout, add.h_out, add.w_out))


def deployed_shape(shape: LayerShape, link: LayerLink | None, bits: int) -> LayerShape:
    """The shape ``rvmpq deploy`` runs for ``shape`` behind ``link`` at ``bits``.

    A linear layer behind a conv reads the conv's (pooled) packed output as it is
    (:func:`rvmpq.sw.deploy.plan_network` folds the flatten into its weights): each pixel
    contributes all of the producer's *padded* output channels (zero weights for the padding),
    so its input features are pooled pixels x padded channels: ``Cout`` rounded up to the
    GEMM kernel's 16-channel blocks, or for a depthwise producer or a residual add to whole
    words of lanes at ``bits`` (exact when the producer runs at ``bits`` too; an add always
    writes at its consumer's bits). Behind a channel concat every part lies padded to whole
    words of lanes at ``bits`` (:func:`rvmpq.sw.deploy.plan_network`): a conv reads
    ``sum_j ceil(c_j / lanes) * lanes`` channels (a linear that many per pooled pixel); a
    depthwise conv runs as it is (deploy takes it only where the parts fill whole words).
    Every other layer runs as it is.
    """
    if link is not None and link.producer.kind == "concat":
        lanes = 32 // check_bits(bits)
        per = sum(-(-f.cout // lanes) * lanes for f in link.feeds)
        p = link.producer
        if shape.kind == "linear":
            cin = (p.h_out // link.pool[0]) * (p.w_out // link.pool[1]) * per
        elif shape_variant(shape) == "depthwise":
            return shape
        else:
            cin = per
        return shape if cin == shape.cin else dataclasses.replace(shape, cin=cin)
    if link is None or shape.kind != "linear" or link.producer.kind == "linear":
        return shape
    from rvmpq.sw.kernels.gen import LDOT_NB

    p = link.producer
    lanes = (LDOT_NB if p.kind == "conv" and shape_variant(p) != "depthwise"
             else 32 // check_bits(bits))
    per = -(-p.cout // lanes) * lanes
    cin = (p.h_out // link.pool[0]) * (p.w_out // link.pool[1]) * per
    return shape if cin == shape.cin else dataclasses.replace(shape, cin=cin)


def network_prediction(cm, shapes: list[LayerShape], links: list, bits: list[int]) -> dict:
    """The cycles a cost model predicts for a whole network at per-layer kernel precisions
    ``bits`` (what the search sums), also split as the deploy program's stages.

    Returns ``{"layers": [cycles charged to each layer], "kernels": [predicted kernel stage
    cycles: the layer at its bits, output at the next layer's (a concat part's: at its
    concat's reader's)], "glue": [predicted glue in
    front of each layer], "adds": [predicted residual-add stages in front of each layer, as
    the program runs them: an input another layer decides unpacked at that layer's bits, which
    "layers" charges to that layer], "terms": [in_network_terms per layer], "total",
    "kernel_total", "glue_total", "add_total"}``. A model without
    :meth:`RtlCostModel.in_network_terms` gives the layers alone (no glue, no adds, outputs at
    their own bits) and says so in ``"note"``.
    """
    n = len(shapes)
    if not (len(links) == len(bits) == n):
        raise ValueError(f"{n} shapes, {len(links)} links, {len(bits)} bits: give one per layer")
    if not hasattr(cm, "in_network_terms"):
        ks = [float(cm.layer_cost(s, b, b).cycles) for s, b in zip(shapes, bits)]
        return {"layers": ks, "kernels": ks, "glue": [0.0] * n, "adds": [0.0] * n,
                "terms": [], "total": sum(ks), "kernel_total": sum(ks), "glue_total": 0.0,
                "add_total": 0.0, "note": "kernels alone: this cost model has no in-network "
                "terms (no glue, no residual-add stages)"}
    terms = [cm.in_network_terms(s, b, ln, consumer_linked(links, i))
             for i, (s, b, ln) in enumerate(zip(shapes, bits, links))]
    layers = [float(sum(t.values())) for t in terms]
    # each kernel with its output at its reader's bits: the next layer pays it (a chain), a
    # concat's reader pays each of its parts' (shown with the part's kernel, where the
    # model splits it: out_delta and the link's sources)
    out = [0.0] * n
    for c, (t, ln) in enumerate(zip(terms, links)):
        split = (ln is not None and ln.producer.kind == "concat" and not ln.shared
                 and ln.sources is not None and hasattr(cm, "out_delta"))
        if split:
            paid = [f for k, f in enumerate(ln.feeds) if k not in ln.unpaid]
            for j, f in zip(ln.sources, paid):
                out[j] += cm.out_delta(f, bits[c])
        elif c > 0:
            out[c - 1] += t["producer_out"]
    kernels = [t["kernel"] + t["own_out"] + out[i] for i, t in enumerate(terms)]
    glue = [t["glue"] for t in terms]
    # the add stages as the program runs them: an add input decided by another layer is
    # unpacked at that layer's bits (charged to it as "add_in", shown here with its add)
    adds = []
    for i, (t, ln) in enumerate(zip(terms, links)):
        a = t.get("add", 0.0)
        if ln is not None and ln.external and hasattr(cm, "add_in_delta"):
            pa = (ln.producer, *ln.adds)
            a += sum(cm.add_in_delta(pa[k], j, bits[i if d is None else d])
                     for k, j, d in ln.external)
        adds.append(a)
    return {"layers": layers, "kernels": kernels, "glue": glue, "adds": adds, "terms": terms,
            "total": float(sum(layers)), "kernel_total": float(sum(kernels)),
            "glue_total": float(sum(glue)), "add_total": float(sum(adds))}


def add_split_grid(cm: "RtlCostModel", adds: list[LayerShape]) -> dict:
    """How far the per-input split of a residual add (:meth:`RtlCostModel.add_in_delta`) is
    from the measured add: every add stage ``A(s0, s1, o)`` of ``adds`` (``kind "add"``
    shapes) for all input and output precisions in :data:`BITS`, measured (cached) with
    :func:`glue_network`, against the charge ``A(o, o, o) + U_0(s0) - U_0(o) + U_1(s1) -
    U_1(o)`` and against the whole add at its output's bits ``A(o, o, o)``.

    Returns ``{"grid": {add key: {"s0,s1,o": cycles}}, "error": {"split" | "whole": {"skip" |
    "all": {"median", "p90", "worst", "n"}}}}`` (relative errors; ``skip``: ``s1 = o != s0``,
    an identity block's skip at other bits; ``all``: every point off the diagonal)."""
    import itertools

    pts = list(itertools.product(BITS, BITS, BITS))
    items = [(_add_probe_link(a), o, (s0, s1)) for a in adds for s0, s1, o in pts]
    ms = iter(cm.measure_many(items))
    grid = {a.key(): {f"{s0},{s1},{o}": next(ms).add_cycles for s0, s1, o in pts} for a in adds}
    err: dict = {"split": {"skip": [], "all": []}, "whole": {"skip": [], "all": []}}
    for a in adds:
        g = grid[a.key()]

        def A(s0, s1, o):
            return g[f"{s0},{s1},{o}"]
        for s0, s1, o in pts:
            if s0 == s1 == o:
                continue
            split = (A(o, o, o) + cm.add_in_delta(a, 0, s0) - cm.add_in_delta(a, 0, o)
                     + cm.add_in_delta(a, 1, s1) - cm.add_in_delta(a, 1, o))
            for name, v in (("split", split), ("whole", A(o, o, o))):
                e = abs(v - A(s0, s1, o)) / A(s0, s1, o)
                err[name]["all"].append(e)
                if s1 == o:
                    err[name]["skip"].append(e)
    summary = {k: {sub: {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
                         "worst": float(np.max(v)), "n": len(v)} for sub, v in d.items()}
               for k, d in err.items()}
    return {"grid": grid, "error": summary}


def _read_entry(p: Path, cls):
    """A cache entry read back as ``cls`` (:class:`Measurement`, :class:`GlueMeasurement`), or
    None when it is missing or corrupt (it is then measured again)."""
    if not p.exists():
        return None
    try:
        return cls(**json.loads(p.read_text()))
    except (ValueError, TypeError):
        return None


def _write_json(p: Path, d: dict) -> None:
    """Write a cache entry atomically (threads and processes may measure at once)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(d))
    os.replace(tmp, p)


def _n_dot(pl) -> int:
    """Dot instructions of a plan's kernel (``plan_counts(pl)["dots"]`` for the ldot kernels;
    this form also holds for the register-blocked ``mpq.dot`` ones): one per output pixel,
    tap, input word and output channel (depthwise: lane of a channel word, one-hot weights)."""
    per = pl.cw * pl.la if pl.variant == "depthwise" else pl.cout_pad * pl.cw
    return pl.ho * pl.wo * pl.kh * pl.kw * per


def _bytes(pl) -> tuple[int, int, int]:
    """(weight, activation, output) bytes of a plan (see the module docstring)."""
    return 4 * pl.weight_words + 8 * pl.cout, 4 * pl.h * pl.w * pl.cw, 4 * pl.out_words


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per step otherwise.

    Parameters
    ----------
    total : int
        Number of steps.
    label : str
        Prefix of the line.
    enabled : bool
        False: print nothing.
    """

    def __init__(self, total: int, label: str = "costs", enabled: bool = True, stream=None):
        self.total, self.label, self.enabled = total, label, enabled and total > 0
        self.stream = stream or sys.stderr
        self.done = 0
        self.t0 = time.time()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._lock = threading.Lock()

    def step(self, what: str = "") -> None:
        """Count one finished step and redraw."""
        with self._lock:
            self.done += 1
            if not self.enabled:
                return
            n = 24
            fill = n * self.done // self.total
            el = time.time() - self.t0
            eta = el / self.done * (self.total - self.done)
            line = (f"{self.label}: [{'#' * fill}{'.' * (n - fill)}] {self.done}/{self.total} "
                    f"{el:.0f} s, ~{eta:.0f} s left  {what}")
            if self.tty:
                end = "\n" if self.done == self.total else ""
                print("\r" + line[:150].ljust(150), end=end, file=self.stream, flush=True)
            else:
                print(line, file=self.stream, flush=True)


@functools.lru_cache(maxsize=1)
def _dmem_size() -> int:
    from rvmpq.sw.runtime.cc import memory_map

    return memory_map("mpq").dmem_size


class RtlCostModel:
    """Cost model measured on the RTL (implements the search's ``CostModel`` protocol).

    Parameters
    ----------
    cache_dir : path, optional
        Default ``build_root() / "costs"`` (resolved when the model is created).
    measure_missing : bool
        Measure a shape/precision that is not cached (True), or use the fitted analytic model
        for it (False; needs :meth:`fit` first).
    jobs : int
        Parallel RTL runs in :meth:`measure_many` (default: 2, or the CPU count if smaller).
    max_cycles : int
        Per-run cycle limit; overrunning it raises ``KernelRunError``.
    verbose : bool
        Show the progress bar of :meth:`measure_many`.
    """

    source = "rtl-measured"

    def __init__(self, cache_dir=None, measure_missing: bool = True, jobs: int | None = None,
                 max_cycles: int = 50_000_000, verbose: bool = True):
        from rvmpq.sw.kernels.gen import kernel_hash
        from rvmpq.sw.kernels.run import rtl_hash

        if jobs is not None and int(jobs) < 1:
            raise ValueError(f"jobs={jobs}: must be >= 1")
        self.root = Path(cache_dir) if cache_dir else build_root() / "costs"
        self.version = f"{rtl_hash()}-{kernel_hash()}"
        self.dir = self.root / self.version
        self.measure_missing = measure_missing
        self.jobs = int(jobs or min(2, os.cpu_count() or 1))
        self.max_cycles = max_cycles
        self.verbose = verbose
        self.coef: dict[str, np.ndarray] = {}
        self.coef_instret: dict[str, np.ndarray] = {}

    # ---- measurement ------------------------------------------------------------------
    def _path(self, shape: LayerShape, bits: int, out_bits: int | None = None) -> Path:
        ob = _out_bits(shape, bits, out_bits)
        tail = "" if shape.logits or ob == bits else f"-o{ob}"
        return self.dir / f"{shape.key().replace(':', '_')}-b{bits}{tail}.json"

    def cached(self, shape: LayerShape, bits: int,
               out_bits: int | None = None) -> Measurement | None:
        """The cached measurement (of ``shape`` at ``bits``, output requantized to ``out_bits``,
        default ``bits``), or None."""
        return _read_entry(self._path(shape, bits, out_bits), Measurement)

    def measure(self, shape: LayerShape, bits: int, out_bits: int | None = None) -> Measurement:
        """Measure ``shape`` at ``bits`` on the RTL (cached), its output requantized to
        ``out_bits`` (default ``bits``; a logits shape always outputs int32). Raises
        ``KernelLayerError`` for a layer that does not fit memory, ``KernelRunError`` for a run
        that fails or overruns."""
        from rvmpq.sw.kernels.layer import reference_output
        from rvmpq.sw.kernels.run import run_layer

        check_bits(bits)
        m = self.cached(shape, bits, out_bits)
        if m is not None:
            return m
        layer, a = shape_layer(shape, bits, out_bits=out_bits)
        self._check_version()
        r = run_layer(layer, a, "mpq", max_cycles=self.max_cycles)
        self._check_version()     # the RTL / kernels used must be the ones of the cache key
        exact = bool(np.array_equal(r.output, reference_output(layer, a)))
        if not exact:
            raise RuntimeError(f"{shape.key()} INT{bits}: kernel output differs from the integer "
                               f"model ({r.elf}); refusing to record its cost")
        wb, ab, ob = _bytes(r.plan)
        m = Measurement(shape=shape.key(), bits=bits, cycles=r.cycles, instret=r.instret,
                        n_dot=_n_dot(r.plan), weight_bytes=wb, act_bytes=ab, out_bytes=ob,
                        exact=exact)
        _write_json(self._path(shape, bits, out_bits), dataclasses.asdict(m))
        return m

    def _check_version(self) -> None:
        from rvmpq.sw.kernels.gen import kernel_hash
        from rvmpq.sw.kernels.run import rtl_hash

        now = f"{rtl_hash()}-{kernel_hash()}"
        if now != self.version:
            raise RuntimeError(f"the RTL or kernel sources changed while measuring (cache key "
                               f"{self.version}, now {now}); refusing to mix versions: start "
                               "again when hw/ and sw/kernels/ are stable")

    def measure_many(self, items: list[tuple]) -> list:
        """Measure many items; cache misses run ``jobs`` at a time behind a progress bar.
        Returns the measurements in ``items`` order.

        An item is ``(shape, bits)``, ``(shape, bits, out_bits)`` (:meth:`measure`) or
        ``(link, bits)`` with a :class:`~rvmpq.sw.search.costs_api.LayerLink` (the glue in
        front of a layer, :meth:`measure_glue`)."""
        from rvmpq.sw.kernels.run import soc_verilog_cached

        def one(it, cached: bool):
            if isinstance(it[0], LayerLink):
                return (self.cached_glue if cached else self.measure_glue)(*it)
            return (self.cached if cached else self.measure)(*it)

        todo = list(dict.fromkeys(it for it in items if one(it, True) is None))
        if todo:
            soc_verilog_cached("mpq")
            bar = Progress(len(todo), f"costs (RTL, {self.jobs} jobs)", self.verbose)

            def work(it):
                m = one(it, False)
                glue = isinstance(it[0], LayerLink)
                what = ("glue -> " + it[0].consumer.key() if glue else it[0].key()) + \
                    f" INT{it[1]}" + ("" if len(it) < 3 else f" -> INT{it[2]}" if not glue
                                      else " (add inputs INT{}, INT{})".format(*it[2]))
                bar.step(f"{what}: {m.cycles} cycles")
                return m
            with ThreadPoolExecutor(max_workers=self.jobs) as ex:
                list(ex.map(work, todo))
        return [one(it, False) for it in items]

    # ---- whole-program terms (a layer inside a deployed network) -----------------------
    def _glue_path(self, link: LayerLink, bits: int,
                   in_bits: tuple[int, int] | None = None) -> Path:
        name = link.glue_key().replace(":", "_").replace("|", "__")
        if len(name) > GLUE_NAME_MAX:
            # a long key (a concat of many parts): file names have 255 bytes at most, and the
            # atomic write adds ~30 (the entry keeps the whole key in its "link" field)
            import hashlib
            h = hashlib.sha256(name.encode()).hexdigest()[:16]
            name = f"{name[:GLUE_NAME_MAX - 17]}-{h}"
        tail = "" if in_bits is None or tuple(in_bits) == (bits, bits) else \
            f"-i{in_bits[0]}x{in_bits[1]}"
        return self.dir / f"glue-{glue_hash()}" / f"{name}-b{bits}{tail}.json"

    def cached_glue(self, link: LayerLink, bits: int,
                    in_bits: tuple[int, int] | None = None) -> GlueMeasurement | None:
        """The cached glue measurement of ``link`` at ``bits`` (add inputs at ``in_bits``,
        default ``bits``), or None."""
        return _read_entry(self._glue_path(link, check_bits(bits), in_bits), GlueMeasurement)

    def measure_glue(self, link: LayerLink, bits: int,
                     in_bits: tuple[int, int] | None = None) -> GlueMeasurement:
        """Measure the glue in front of ``link.consumer`` (max pooling, copy into its padded
        input buffer) with the consumer's input at ``bits`` (cached): :func:`glue_network`
        run by :func:`rvmpq.sw.deploy.run_network`, i.e. the deploy program's own glue code
        and timed window; zero cycles where deploy needs no glue (the consumer reads the
        producer's output in place). With an add producer, the add stage too, its inputs at
        ``in_bits`` (skip, branch; default ``bits``)."""
        import tempfile

        from rvmpq.sw.deploy import plan_network, run_network
        from rvmpq.sw.search.qnn import int_forward

        if in_bits is not None:
            in_bits = tuple(check_bits(b, "in_bits") for b in in_bits)
            if in_bits == (bits, bits):
                in_bits = None
        m = self.cached_glue(link, bits, in_bits)
        if m is not None:
            return m
        net, xq = glue_network(link, bits, in_bits=in_bits)
        kind = plan_network(net, "mpq")[-1].glue
        if kind != "copy" and link.producer.kind != "add":
            m = GlueMeasurement(link.glue_key(), bits, 0, kind, True)
        else:
            self._check_version()
            with tempfile.TemporaryDirectory(prefix="rvmpq-glue-") as d:
                run = run_network(net, xq, "mpq", d, "glue", self.max_cycles)
            self._check_version()
            ref = int_forward(net, xq.transpose(0, 3, 1, 2).astype(np.float64), exact="int64")
            if not np.array_equal(run.logits, ref):
                raise RuntimeError(f"glue harness of {link.key()} INT{bits}: the network's "
                                   "output differs from the integer model; refusing to record "
                                   "its cost")
            # the glue in front of the consumer (the last stage) and the add stage; not the
            # glue between the add harness's own producers
            cyc = list(run.stage_cycles.values())
            glue = cyc[-2] if len(cyc) > 1 and run.stage_kinds[-2] == "glue" else 0.0
            m = GlueMeasurement(link.glue_key(), bits, int(round(glue)), kind, True,
                                int(round(run.add_cycles)),
                                None if in_bits is None else list(in_bits))
        _write_json(self._glue_path(link, bits, in_bits), dataclasses.asdict(m))
        return m

    def _cycles(self, shape: LayerShape, bits: int, out_bits: int | None = None) -> float | None:
        m = self.cached(shape, bits, out_bits)
        if m is None and self.measure_missing:
            m = self.measure(shape, bits, out_bits)
        return None if m is None else float(m.cycles)

    def out_delta(self, shape: LayerShape, out_bits: int) -> float:
        """``R(out_bits)``: cycles ``shape``'s kernel spends more when its output is requantized
        to ``out_bits`` than to :data:`REF_OUT_BITS`, measured with the kernel at
        :data:`REF_OUT_BITS` (``T(2, out_bits) - T(2, 2)``). The output side of the ``mpq.ldot``
        kernels (16 ``mpq.rqpa`` per pixel and block, ``16 / lanes`` packed stores) does not
        depend on the input precision, so this delta holds at other kernel precisions too (up
        to about 1 % of a layer's cycles, docs/costs.md). 0 for a logits layer (always int32
        out) and for a shape that is neither cached nor measurable (``measure_missing=False``).
        """
        if shape.logits or check_bits(out_bits, "out_bits") == REF_OUT_BITS:
            return 0.0
        a = self._cycles(shape, REF_OUT_BITS, out_bits)
        b = self._cycles(shape, REF_OUT_BITS)
        return 0.0 if a is None or b is None else a - b

    def _glue_entry(self, link: LayerLink, bits: int,
                    in_bits: tuple[int, int] | None = None) -> GlueMeasurement | None:
        m = self.cached_glue(link, bits, in_bits)
        if m is None and self.measure_missing:
            m = self.measure_glue(link, bits, in_bits)
        return m

    def glue_cycles(self, link: LayerLink | None, bits: int) -> float:
        """Measured glue cycles in front of ``link.consumer`` at ``bits`` (0 without a link, or
        when neither cached nor measurable)."""
        if link is None:
            return 0.0
        m = self._glue_entry(link, bits)
        return 0.0 if m is None else float(m.cycles)

    def add_cycles(self, link: LayerLink | None, bits: int) -> float:
        """Cycles of the residual-add stages charged to ``link.consumer`` at ``bits``: the add
        that produces its input and the adds of ``link.adds``, each measured in the program
        of :func:`glue_network` with its inputs and output at ``bits``, less the unpacking of
        the inputs that other layers decide (``link.external``: ``add_in_delta(add, j,
        bits)``, which those layers pay at their own bits, :meth:`unpack_cycles`); 0 without
        an add producer, and for a ``shared`` link (another reader of the add pays it)."""
        if link is None or link.producer.kind != "add" or link.shared:
            return 0.0
        tot = 0.0
        adds = (link.producer, *link.adds)
        for a in adds:
            ln = link if a is link.producer else LayerLink(a, link.consumer, link.pool)
            m = self._glue_entry(ln, bits)
            tot += 0.0 if m is None else float(m.add_cycles)
        for k, j, _ in link.external:
            tot -= self.add_in_delta(adds[k], j, bits)
        return tot

    def add_in_delta(self, add: LayerShape, j: int, bits: int) -> float:
        """``U_j(bits)``: cycles the add stage of ``add`` (a ``kind "add"`` shape) spends more
        when its input ``j`` (0: the skip, 1: the branch, as :func:`glue_network` builds
        them) is at ``bits`` than at the precision of the rest of the add, averaged over that
        reference precision ``r`` in :data:`BITS` (the other input and the output at ``r``:
        ``mean_r A(bits, r, r) - A(r, r, r)`` for ``j = 0``): the unpacking of that input's
        lanes, charged to the layer that decides its bits (the consumer of the add is charged
        ``A(o, o, o) - U_j(o)``, so the two cancel where the input is at the add's output
        bits). The add's code is not exactly separable (the input's loads and lane shifts are
        scheduled with the output's packing chains): the mean over references is the
        separable charge closest to the measured grid of docs/costs.md ("Residual adds"),
        within a few % of an add. 0 where a measurement is neither cached nor measurable."""
        if add.kind != "add" or j not in (0, 1):
            raise ValueError(f"add_in_delta({add.key()}, {j}): needs an add shape and input "
                             "index 0 or 1")
        check_bits(bits)
        ln, d = _add_probe_link(add), []
        for r in BITS:
            if r == bits:
                d.append(0.0)
                continue
            a = self._glue_entry(ln, r, (bits, r) if j == 0 else (r, bits))
            b = self._glue_entry(ln, r)
            if a is None or b is None:
                return 0.0
            d.append(float(a.add_cycles - b.add_cycles))
        return float(np.mean(d))

    def unpack_cycles(self, link: LayerLink | None, bits: int) -> float:
        """The unpacking, at ``bits``, of the add inputs that ``link.consumer`` decides the
        bits of but other layers' links pay the add stages of (``link.unpacks``:
        :meth:`add_in_delta` of each); 0 without a link."""
        if link is None:
            return 0.0
        return float(sum(self.add_in_delta(a, j, bits) for a, j in link.unpacks))

    def _producer_out(self, link: LayerLink | None, bits: int) -> float:
        """``R(bits)`` of the layers whose output is requantized to the consumer's ``bits``:
        the producer, or with a residual add producer the ``feeds``, with a concat producer its
        parts (``feeds``) but those another link pays (``unpaid``); 0 for a ``shared`` link
        (another reader of the same tensor pays it)."""
        if link is None or link.shared:
            return 0.0
        if link.producer.kind == "add":
            return float(sum(self.out_delta(f, bits) for f in link.feeds))
        if link.producer.kind == "concat":
            return float(sum(self.out_delta(f, bits) for k, f in enumerate(link.feeds)
                             if k not in link.unpaid))
        return self.out_delta(link.producer, bits)

    def in_network_terms(self, shape: LayerShape, bits: int, link: LayerLink | None,
                         consumer_linked: bool = True) -> dict[str, float]:
        """The terms of :meth:`in_network_cycles` at kernel precision ``bits``: ``kernel``
        (the layer alone as deploy runs it, :func:`deployed_shape`, output at its own bits:
        :meth:`layer_cost`), ``own_out`` (``-R(bits)``:
        its own output-side work taken out, the consumer pays it; 0 when ``consumer_linked`` is
        false, i.e. the next layer has no link (it reads the network input) and so does not
        pay it),
        ``producer_out`` (the producer's ``R(bits)``: its output requantized to this layer's
        bits; with a residual add or a concat producer: its ``feeds``), ``glue`` (with a
        concat: the gathering of its parts) and ``add`` (the
        residual-add stages in front of it, :meth:`add_cycles`), and, only where the link
        has ``unpacks``, ``add_in`` (the unpacking of the add inputs this layer decides,
        :meth:`unpack_cycles`)."""
        t = {"kernel": float(self.layer_cost(deployed_shape(shape, link, bits), bits,
                                             bits).cycles),
             "own_out": -self.out_delta(shape, bits) if consumer_linked else 0.0,
             "producer_out": self._producer_out(link, bits),
             "glue": self.glue_cycles(link, bits),
             "add": self.add_cycles(link, bits)}
        if link is not None and link.unpacks:
            t["add_in"] = self.unpack_cycles(link, bits)
        return t

    def in_network_cycles(self, shape: LayerShape, w_bits: int, a_bits: int,
                          link: LayerLink | None, consumer_linked: bool = True) -> float:
        """Cycles of ``shape`` at ``w_bits`` / ``a_bits`` inside a deployed network, with the
        work in front of it charged to it (the search's cost; see the module docstring):
        ``T(b, b) - R_self(b) + R_producer(b) + glue(b)``. Summed over a network this is the
        whole program: ``sum T_K(b_K, b_K+1) + glue``, exact where the producer runs at
        :data:`REF_OUT_BITS` or at its consumer's bits, else up to the kernels' separability
        error. ``consumer_linked``: see :meth:`in_network_terms`."""
        bits = max(check_bits(w_bits, "w_bits"), check_bits(a_bits, "a_bits"))
        return float(sum(self.in_network_terms(shape, bits, link, consumer_linked).values()))

    def network_items(self, shapes: list[LayerShape], links: list,
                      bits_options: list[int]) -> list[tuple]:
        """The measurement items (:meth:`measure_many`) the whole-program terms of a network
        need at these kernel precisions."""
        items = []
        for s, ln in zip(shapes, links):
            for b in bits_options:
                items.append((deployed_shape(s, ln, b), b))
                if not s.logits:
                    items += [(s, REF_OUT_BITS), (s, REF_OUT_BITS, b)]
                if ln is not None:
                    for p in (ln.feeds if ln.producer.kind in ("add", "concat")
                              else (ln.producer,)):
                        items += [(p, REF_OUT_BITS), (p, REF_OUT_BITS, b)]
                    items.append((ln, b))
                    items += [(LayerLink(a, ln.consumer, ln.pool), b) for a in ln.adds]
                    adds = (ln.producer, *ln.adds)
                    for a, j in (*ln.unpacks, *((adds[k], j) for k, j, _ in ln.external)):
                        pr = _add_probe_link(a)
                        items += [(pr, r) for r in BITS]
                        items += [(pr, r, (b, r) if j == 0 else (r, b)) for r in BITS
                                  if r != b]
        return list(dict.fromkeys(items))

    # ---- analytic model ---------------------------------------------------------------
    def fit(self, shapes: list[LayerShape]) -> dict:
        """Fit the analytic model (NNLS of cycles and of retired instructions on
        :func:`features`, one per :func:`fit_group`, rows weighted by 1/cycles)
        to the measurements of ``shapes`` x :data:`BITS` (measured if needed)."""
        from scipy.optimize import nnls

        items = [(s, b) for s in shapes for b in BITS]
        ms = self.measure_many(items)
        groups: dict[str, list] = {}
        for (s, b), m in zip(items, ms):
            groups.setdefault(fit_group(s, b), []).append(
                (features(s, b), m.cycles, m.instret))
        for k, rows in groups.items():
            X = np.array([r[0] for r in rows])
            y = np.array([r[1] for r in rows], dtype=np.float64)
            yi = np.array([r[2] for r in rows], dtype=np.float64)
            wgt = 1.0 / y    # relative error: small layers count as much as big ones
            self.coef[k], _ = nnls(X * wgt[:, None], y * wgt, maxiter=50 * X.shape[1])
            self.coef_instret[k], _ = nnls(X * wgt[:, None], yi * wgt, maxiter=50 * X.shape[1])
        return {k: v.tolist() for k, v in self.coef.items()}

    def predict_cycles(self, shape: LayerShape, bits: int) -> float:
        """Cycles from the fitted model (``RuntimeError`` if that variant was never fitted)."""
        return float(features(shape, bits) @ self._coef(self.coef, shape, bits))

    def predict_instret(self, shape: LayerShape, bits: int) -> float:
        """Retired instructions from the fitted model."""
        return float(features(shape, bits) @ self._coef(self.coef_instret, shape, bits))

    @staticmethod
    def _coef(table, shape, bits):
        k = fit_group(shape, bits)
        if k not in table:
            raise RuntimeError(f"no fitted model for {k}; call fit() with shapes of that kind")
        return table[k]

    def validate(self, held_out: list[LayerShape]) -> dict:
        """Relative error of the analytic model against RTL measurements of held-out shapes.

        Returns ``{"median_rel_err", "max_rel_err", "n", "per_variant": {variant:
        {"median_rel_err", "max_rel_err", "n", "per_bits": {bits: {...}}}}, "rows": [...]}``.
        """
        items = [(s, b) for s in held_out for b in BITS]
        ms = self.measure_many(items)
        rows = []
        for (s, b), m in zip(items, ms):
            p = self.predict_cycles(s, b)
            rows.append({"variant": shape_variant(s), "shape": s.key(), "bits": b,
                         "measured": m.cycles, "predicted": round(p, 1),
                         "rel_err": round(abs(p - m.cycles) / m.cycles, 5)})

        def summary(rs):
            e = [r["rel_err"] for r in rs]
            return {"median_rel_err": float(np.median(e)), "max_rel_err": float(np.max(e)),
                    "n": len(e)}
        per = {}
        for v in dict.fromkeys(r["variant"] for r in rows):
            rv = [r for r in rows if r["variant"] == v]
            per[v] = dict(summary(rv), per_bits={b: summary([r for r in rv if r["bits"] == b])
                                                 for b in BITS})
        return dict(summary(rows), per_variant=per, rows=rows)

    # ---- CostModel protocol ------------------------------------------------------------
    def prefetch(self, shapes: list[LayerShape], options: list[tuple[int, int]],
                 links: list | None = None) -> None:
        """Measure every (shape, option) not cached yet, in parallel with a progress bar (the
        search calls this before building its cost table); with ``links`` (one
        :class:`~rvmpq.sw.search.costs_api.LayerLink` or None per shape) also the
        whole-program terms of :meth:`in_network_cycles`."""
        if self.measure_missing:
            bits = list(dict.fromkeys(max(check_bits(w, "w_bits"), check_bits(a, "a_bits"))
                                      for w, a in options))
            items = [(s, b) for s in shapes for b in bits]
            if links is not None:
                items += self.network_items(shapes, links, bits)
            self.measure_many(list(dict.fromkeys(items)))

    def layer_cost(self, shape: LayerShape, w_bits: int, a_bits: int) -> LayerCost:
        """Cost of ``shape`` at ``w_bits`` / ``a_bits`` (the kernel runs at the wider one)."""
        bits = max(check_bits(w_bits, "w_bits"), check_bits(a_bits, "a_bits"))
        shape_variant(shape)
        m = self.cached(shape, bits)
        if m is None and (self.measure_missing or not self.coef):
            m = self.measure(shape, bits)
        if m is not None:
            cycles, instret, n_dot = m.cycles, m.instret, m.n_dot
            wb, ab, ob = m.weight_bytes, m.act_bytes, m.out_bytes
        else:
            pl = shape_plan(shape, bits)
            cycles = self.predict_cycles(shape, bits)
            instret = self.predict_instret(shape, bits)
            n_dot = _n_dot(pl)
            wb, ab, ob = _bytes(pl)
        energy = n_dot * E_DOT[bits] + max(instret - n_dot, 0) * E_INSTR + (wb + ab + ob) * E_BYTE
        return LayerCost(float(cycles), float(wb), float(ab), float(energy))


def default_cost_model(jobs: int | None = None, verbose: bool = True) -> RtlCostModel:
    """The RTL-measured cost model with the default cache (``rvmpq search --costs rtl``)."""
    return RtlCostModel(jobs=jobs, verbose=verbose)


# ---- fit / held-out shape sets ----------------------------------------------------------

def _fits(shape: LayerShape) -> bool:
    """True if ``shape`` runs at every precision within DMEM and :data:`MAX_DOTS`."""
    from rvmpq.sw.kernels.gen import estimate_dmem_bytes
    from rvmpq.sw.kernels.layer import KernelLayerError

    try:
        pl = shape_plan(shape, 16)
        if _n_dot(pl) > MAX_DOTS or _n_dot(pl) < 1:
            return False
        return all(estimate_dmem_bytes(shape_plan(shape, b)) <= _dmem_size() for b in BITS)
    except (KernelLayerError, ValueError):
        return False


def _draw(variant: str, rng) -> LayerShape:
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    if variant == "conv":
        k = [(3, 3), (3, 3), (5, 5), (1, 3), (1, 5), (3, 1)][r(0, 5)]
        st = 2 if rng.random() < 0.35 else 1
        h = 1 if k[0] == 1 else r(3, 12)
        w = r(3, 24) if h == 1 else r(3, 12)
        return LayerShape("conv", r(1, 40), r(1, 40), h, w, k[0], k[1], (st if h > 1 else 1, st),
                          (k[0] // 2, k[1] // 2), logits=rng.random() < 0.25)
    if variant == "pointwise":
        st = 2 if rng.random() < 0.2 else 1
        return LayerShape("conv", r(1, 96), r(1, 96), r(1, 10), r(1, 10), 1, 1, (st, st))
    if variant == "depthwise":
        # every code path well covered: 30 % few channels (2..8: one channel word, weights
        # folded into immediates, at most precisions), else log-uniform 2..96 (1 would be a
        # plain conv)
        c = r(2, 8) if rng.random() < 0.3 else int(np.exp(rng.uniform(np.log(2), np.log(97))))
        st = 2 if rng.random() < 0.35 else 1
        return LayerShape("conv", c, c, r(2, 12), r(2, 12), 3, 3, (st, st), (1, 1), groups=c)
    if variant == "linear":
        return LayerShape("linear", r(4, 640), r(1, 64), logits=rng.random() < 0.5)
    raise ValueError(f"variant {variant!r}; allowed values: {list(VARIANTS)}")


@functools.lru_cache(maxsize=4)
def _shape_sets(seed: int) -> tuple[tuple, tuple]:
    fit, held = [], []
    for i, v in enumerate(VARIANTS):
        rng = np.random.default_rng([seed, i])
        seen: set = set()
        out: list = []
        while len(out) < N_FIT + N_HELD:
            s = _draw(v, rng)
            if s.key() in seen or not _fits(s):
                continue
            seen.add(s.key())
            out.append(s)
        fit += out[:N_FIT]
        held += out[N_FIT:]
    return tuple(fit), tuple(held)


def fit_shapes(seed: int = SHAPE_SEED) -> list[LayerShape]:
    """The fit set: :data:`N_FIT` random shapes per variant (seeded; disjoint from
    :func:`held_out_shapes`, drawn from the same distribution, which covers every code path
    of the generator). conv: 3x3, 5x5, 1x3, 1x5, 3x1 kernels, stride 1 or 2, a quarter of them
    logits; pointwise: stride 1 or 2; depthwise 3x3, stride 1 or 2, 30 % with 2..8 channels;
    linear: half of them logits."""
    return list(_shape_sets(seed)[0])


def held_out_shapes(seed: int = SHAPE_SEED) -> list[LayerShape]:
    """The held-out validation set: :data:`N_HELD` shapes per variant (see :func:`fit_shapes`)."""
    return list(_shape_sets(seed)[1])


def fitted_cost_model(cache_dir=None, jobs: int | None = None, verbose: bool = True,
                      seed: int = SHAPE_SEED) -> RtlCostModel:
    """An :class:`RtlCostModel` fitted on :func:`fit_shapes` (measured if not cached) that
    predicts shapes it has not measured instead of running them (``measure_missing=False``):
    for cost tables of networks too large for the simulated SoC's memory."""
    cm = RtlCostModel(cache_dir, measure_missing=False, jobs=jobs, verbose=verbose)
    cm.fit(fit_shapes(seed))
    return cm


def validation_report(cache_dir=None, jobs: int | None = None, out_dir=None,
                      verbose: bool = True, seed: int = SHAPE_SEED) -> dict:
    """Fit on :func:`fit_shapes`, validate on :func:`held_out_shapes` at every precision and
    write ``validation.json`` and ``validation.md`` to ``out_dir`` (default
    ``build_root() / "costs"``).

    Target (issue 4): median relative error <= 5 %, worst <= 15 %.
    """
    cm = RtlCostModel(cache_dir, jobs=jobs, verbose=verbose)
    fit, held = fit_shapes(seed), held_out_shapes(seed)
    assert not {s.key() for s in fit} & {s.key() for s in held}
    t0 = time.time()
    cm.fit(fit)
    rep = cm.validate(held)
    rep = {"format": "rvmpq-costs-validation-1", "cache": str(cm.dir), "seed": seed,
           "n_fit_shapes": len(fit), "n_held_out_shapes": len(held), "bits": list(BITS),
           "target": {"median_rel_err": 0.05, "max_rel_err": 0.15},
           "target_met": bool(rep["median_rel_err"] <= 0.05 and rep["max_rel_err"] <= 0.15),
           "features": {v: ["const", *plan_counts(shape_plan(
               next(s for s in fit if shape_variant(s) == v), 8)).keys()] for v in VARIANTS},
           "seconds": round(time.time() - t0, 1), **rep,
           "coef": {k: v.tolist() for k, v in cm.coef.items()},
           "fit_shapes": [s.key() for s in fit], "held_out": [s.key() for s in held]}
    out = Path(out_dir) if out_dir else build_root() / "costs"
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / "validation.json", json.dumps(rep, indent=1) + "\n")
    _atomic(out / "validation.md", validation_markdown(rep))
    return rep


def validation_markdown(rep: dict) -> str:
    """The Markdown table of a :func:`validation_report` result."""
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    md = ["# Analytic cost model vs RTL on held-out shapes", "",
          f"Fit: {rep['n_fit_shapes']} shapes, held out: {rep['n_held_out_shapes']} shapes "
          f"(disjoint, seed {rep['seed']}), each at INT{'/'.join(map(str, rep['bits']))}. "
          "Relative cycle error |predicted - measured| / measured. Target: median <= 5 %, "
          "worst <= 15 %.", "",
          "| variant | n | median | worst | " + " | ".join(
              f"INT{b} median / worst" for b in rep["bits"]) + " |",
          "|---|---|---|---|" + "---|" * len(rep["bits"])]
    for v, s in rep["per_variant"].items():
        pb = s["per_bits"]
        md.append(f"| {v} | {s['n']} | {pct(s['median_rel_err'])} | {pct(s['max_rel_err'])} | "
                  + " | ".join(f"{pct(pb[b]['median_rel_err'])} / {pct(pb[b]['max_rel_err'])}"
                               for b in rep["bits"]) + " |")
    md += [f"| **all** | {rep['n']} | {pct(rep['median_rel_err'])} | {pct(rep['max_rel_err'])} |"
           + " |" * len(rep["bits"]), "",
           f"Target met: **{'yes' if rep['target_met'] else 'NO'}**. Features (counts from the "
           "kernel plan, `rvmpq.sw.costs.plan_counts`): " + "; ".join(
               f"{v}: {', '.join(f)}" for v, f in rep["features"].items()) + ".", ""]
    worst = sorted(rep["rows"], key=lambda r: -r["rel_err"])[:5]
    md += ["Worst held-out rows:", "", "| shape | bits | measured | predicted | error |",
           "|---|---|---|---|---|"]
    md += [f"| `{r['shape']}` | {r['bits']} | {r['measured']} | {r['predicted']:.0f} | "
           f"{pct(r['rel_err'])} |" for r in worst]
    return "\n".join(md) + "\n"


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def model_shapes(name: str) -> list[LayerShape]:
    """Compute-layer shapes of a built-in model (a key of :data:`MODEL_INPUTS`); the last
    one is marked ``logits``."""
    return model_network(name)[0]


def model_network(name: str) -> tuple[list[LayerShape], list]:
    """Compute-layer shapes of a built-in model and the
    :class:`~rvmpq.sw.search.costs_api.LayerLink` in front of each (None for the first): those
    of :func:`~rvmpq.sw.search.pipeline.layer_links` (the INT8 export of the untrained
    model), so residual adds get the links the search builds (the shapes and links
    depend on the architecture only, not on the weights or the calibration)."""
    if name not in MODEL_INPUTS:
        raise ValueError(f"unknown model {name!r}; allowed values: {sorted(MODEL_INPUTS)}")
    import torch

    from rvmpq.sw.search.models import build_model, trace_model
    from rvmpq.sw.search.pipeline import layer_links
    from rvmpq.sw.search.quantizer import Quantizer

    torch.manual_seed(0)
    x = np.random.default_rng(0).uniform(0, 1, (8, *MODEL_INPUTS[name]))
    return layer_links(Quantizer(trace_model(build_model(name)), x))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rvmpq costs``."""
    parser.add_argument("--model", choices=sorted(MODEL_INPUTS),
                        help="built-in model whose layers to cost (measured on the RTL)")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, metavar="FILE",
                        help="write the model's cost table (format rvmpq-costs-1) here")
    parser.add_argument("--validate", action="store_true",
                        help="fit the analytic model and report its error on held-out conv/"
                             "pointwise/depthwise/linear shapes at every precision "
                             "(writes validation.json and validation.md to -o)")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help=f"folder of the --validate report (default: <build>/costs, "
                             f"{BUILD_HELP})")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="parallel RTL runs (default 2)")


def main(args: argparse.Namespace) -> int:
    """Run ``rvmpq costs``."""
    from rvmpq.sw.kernels.layer import KernelLayerError
    from rvmpq.sw.search.costs_api import JsonCostTable

    if not args.model and not args.validate:
        print("rvmpq costs: give --model NAME (allowed values: "
              f"{sorted(MODEL_INPUTS)}) and/or --validate", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"rvmpq costs: --jobs {args.jobs}: must be >= 1", file=sys.stderr)
        return 2
    if args.validate:
        rep = validation_report(jobs=args.jobs, out_dir=args.out)
        print(validation_markdown(rep))
        print(f"wrote {(args.out or build_root() / 'costs')}/validation.json, validation.md",
              file=sys.stderr)
        if not args.model:
            return 0
    try:
        shapes, links = model_network(args.model)
        cm = RtlCostModel(jobs=args.jobs)
        cm.measure_many([(s, b) for s in shapes for b in BITS]
                        + cm.network_items(shapes, links, list(BITS)))
    except (ValueError, KernelLayerError) as exc:
        print(f"rvmpq costs: {exc}", file=sys.stderr)
        return 1
    opts = [(w, a) for w in BITS for a in BITS]
    head = f"{'layer':<56} " + " ".join(f"{'INT' + str(b):>9}" for b in BITS)
    print("alone (the layer's own program, output at its own bits):")
    print(head)
    for s in shapes:
        print(f"{s.key():<56} " + " ".join(f"{cm.layer_cost(s, b, b).cycles:>9.0f}" for b in BITS))
    print("\nin the network (what the search charges: output-side work at the next layer's bits "
          "and the glue in front of the layer charged to it):")
    print(head)
    for i, (s, ln) in enumerate(zip(shapes, links)):
        c = consumer_linked(links, i)
        print(f"{s.key():<56} " + " ".join(f"{cm.in_network_cycles(s, b, b, ln, c):>9.0f}"
                                           for b in BITS))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        JsonCostTable.write(args.json_out, cm, shapes, opts, links)
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 0
