"""``rvmpq costs``: per-layer costs measured on the RTL, cached, with a fitted analytic model.

For a :class:`~rvmpq.sw.search.costs_api.LayerShape` and a precision the generated MPQ kernel
(:mod:`rvmpq.sw.kernels`) runs on random data on the Verilator model of the ``mpq`` SoC and its
``rdcycle`` count is the cost. Measurements are cached as JSON under
``build/costs/<rtl-hash>-<kernel-hash>/`` (the RTL hash covers ``hw/**/*.py``, the kernel hash
the generator), keyed by shape and precision; cache misses run in parallel (``jobs``) with one
progress line each.

Metrics (:class:`~rvmpq.sw.search.costs_api.LayerCost`):

``cycles``
    measured kernel cycles (or, for shapes not measured, the analytic model fitted to the
    measurements of the same kernel variant; :meth:`RtlCostModel.validate` reports its error on
    held-out shapes).
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

Mixed widths (``w_bits != a_bits``): ``mpq.dot`` needs equal lane widths, so the kernel runs at
``max(w_bits, a_bits)`` and stores both operands at that width; the cost says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from rvmpq.sw.search.costs_api import BITS, LayerCost, LayerShape, check_bits
from rvmpq.sw.tools import build_root

__all__ = ["E_DOT", "E_INSTR", "E_BYTE", "Measurement", "RtlCostModel", "shape_variant",
           "shape_layer", "features", "model_shapes", "default_cost_model", "add_arguments",
           "main"]

#: Energy of one mpq.dot per precision, relative to INT16 (active partial-product bits).
E_DOT = {16: 1.0, 8: 0.5, 4: 0.25, 2: 0.125}
#: Energy of any other instruction (relative units).
E_INSTR = 0.25
#: Energy per byte of weights / activations moved.
E_BYTE = 0.05
#: Input shapes (C, H, W) of the built-in models.
MODEL_INPUTS = {"digits-cnn": (1, 8, 8), "mnist1d-cnn": (1, 1, 40)}


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


def shape_layer(shape: LayerShape, bits: int, seed: int = 0):
    """A random :class:`~rvmpq.sw.search.qnn.QLayer` of ``shape`` at ``bits`` and its input."""
    from rvmpq.sw.kernels.layer import random_input, random_layer

    check_bits(bits)
    v = shape_variant(shape)
    rng = np.random.default_rng([seed, bits, zlib.crc32(shape.key().encode())])
    layer = random_layer(v, bits, shape.cin, shape.cout, shape.h_in, shape.w_in,
                         (shape.kh, shape.kw), shape.stride, shape.padding, rng=rng,
                         a_signed=False, relu=True)
    return layer, random_input(layer, rng)


def features(shape: LayerShape, bits: int) -> np.ndarray:
    """Features of the analytic cycle model (from the kernel plan; see :func:`_fit`).

    conv / pointwise / linear: ``[1, inner iterations, inner iterations x pixels, kernel-row
    walks, requantized outputs, pixel groups, block calls, output words stored]``;
    depthwise: ``[1, channel words, dots, pixels, outputs, rows]``.
    """
    from rvmpq.sw.kernels.gen import plan_layer
    from rvmpq.sw.kernels.layer import random_layer

    v = shape_variant(shape)
    rng = np.random.default_rng(0)
    layer = random_layer(v, bits, shape.cin, shape.cout, shape.h_in, shape.w_in,
                         (shape.kh, shape.kw), shape.stride, shape.padding, rng=rng,
                         a_signed=False, relu=True)
    pl = plan_layer(layer, "mpq")
    if pl.variant == "depthwise":
        pix = pl.ho * pl.wo
        return np.array([1.0, pix * pl.cw, pix * pl.cw * pl.la * pl.kh * pl.kw, pix,
                         pix * pl.cout_pad, pl.ho], dtype=np.float64)
    nblk = pl.cout_pad // pl.nb
    f = np.zeros(8)
    f[0] = 1.0
    groups = [pl.p] * (pl.wo // pl.p) + ([pl.wo % pl.p] if pl.wo % pl.p else [])
    for p in groups:
        it = nblk * pl.kh * pl.kw * pl.cw
        f[1] += it * pl.ho
        f[2] += it * p * pl.ho
        f[3] += nblk * pl.kh * pl.ho
        f[4] += nblk * pl.nb * p * pl.ho
        f[5] += pl.ho
        f[6] += nblk * pl.ho
        f[7] += pl.ocw * p * pl.ho
    return f


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


def _n_dot(pl) -> int:
    if pl.variant == "depthwise":
        return pl.ho * pl.wo * pl.cw * pl.la * pl.kh * pl.kw
    return pl.ho * pl.wo * pl.cout_pad * pl.kh * pl.kw * pl.cw


class RtlCostModel:
    """Cost model measured on the RTL (implements the search's ``CostModel`` protocol).

    Parameters
    ----------
    cache_dir : path, optional
        Default ``build/costs``.
    measure_missing : bool
        Measure a shape/precision that is not cached (True), or use the fitted analytic model
        for it (False; needs :meth:`fit` first).
    jobs : int
        Parallel RTL runs in :meth:`measure_many`.
    max_cycles : int
        Per-run cycle limit; overrunning it raises ``KernelRunError``.
    """

    source = "rtl-measured"

    def __init__(self, cache_dir=None, measure_missing: bool = True, jobs: int | None = None,
                 max_cycles: int = 50_000_000, verbose: bool = True):
        from rvmpq.sw.kernels.gen import kernel_hash
        from rvmpq.sw.kernels.run import rtl_hash

        self.root = Path(cache_dir) if cache_dir else build_root() / "costs"
        self.dir = self.root / f"{rtl_hash()}-{kernel_hash()}"
        self.measure_missing = measure_missing
        self.jobs = jobs or min(2, os.cpu_count() or 1)
        self.max_cycles = max_cycles
        self.verbose = verbose
        self.coef: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    # ---- measurement ------------------------------------------------------------------
    def _path(self, shape: LayerShape, bits: int) -> Path:
        return self.dir / f"{shape.key().replace(':', '_')}-b{bits}.json"

    def cached(self, shape: LayerShape, bits: int) -> Measurement | None:
        """The cached measurement, or None."""
        p = self._path(shape, bits)
        if p.exists():
            return Measurement(**json.loads(p.read_text()))
        return None

    def measure(self, shape: LayerShape, bits: int) -> Measurement:
        """Measure ``shape`` at ``bits`` on the RTL (cached). Raises ``KernelLayerError`` for a
        layer that does not fit memory, ``KernelRunError`` for a run that fails or overruns."""
        from rvmpq.sw.kernels.layer import reference_output
        from rvmpq.sw.kernels.run import run_layer

        check_bits(bits)
        m = self.cached(shape, bits)
        if m is not None:
            return m
        layer, a = shape_layer(shape, bits)
        r = run_layer(layer, a, "mpq", max_cycles=self.max_cycles)
        exact = bool(np.array_equal(r.output, reference_output(layer, a)))
        if not exact:
            raise RuntimeError(f"{shape.key()} INT{bits}: kernel output differs from the integer "
                               f"model ({r.elf}); refusing to record its cost")
        pl = r.plan
        m = Measurement(shape=shape.key(), bits=bits, cycles=r.cycles, instret=r.instret,
                        n_dot=_n_dot(pl), weight_bytes=4 * pl.weight_words + 8 * pl.cout,
                        act_bytes=4 * pl.h * pl.w * pl.cw, out_bytes=4 * pl.out_words,
                        exact=exact)
        p = self._path(shape, bits)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(m)))
        os.replace(tmp, p)
        return m

    def measure_many(self, items: list[tuple[LayerShape, int]]) -> list[Measurement]:
        """Measure many (shape, bits) pairs, cache misses in parallel, one progress line each."""
        from rvmpq.sw.kernels.run import soc_verilog_cached

        todo = [(s, b) for s, b in items if self.cached(s, b) is None]
        if todo:
            soc_verilog_cached("mpq")
        done = [0]
        t0 = time.time()

        def work(sb):
            m = self.measure(*sb)
            with self._lock:
                done[0] += 1
                if self.verbose:
                    print(f"costs: [{done[0]}/{len(todo)}] {sb[0].key()} INT{sb[1]}: "
                          f"{m.cycles} cycles ({time.time() - t0:.0f} s)", file=sys.stderr,
                          flush=True)
            return m
        with ThreadPoolExecutor(max_workers=self.jobs) as ex:
            list(ex.map(work, todo))
        return [self.measure(s, b) for s, b in items]

    # ---- analytic model ---------------------------------------------------------------
    def fit(self, shapes: list[LayerShape]) -> dict:
        """Fit the analytic cycle model (non-negative least squares, one per kernel variant
        and precision) to the measurements of ``shapes`` x :data:`BITS` (measured if needed)."""
        from scipy.optimize import nnls

        ms = self.measure_many([(s, b) for s in shapes for b in BITS])
        groups: dict[str, list] = {}
        for s, m in zip([s for s in shapes for _ in BITS], ms):
            groups.setdefault(f"{shape_variant(s)}-{m.bits}", []).append((features(s, m.bits),
                                                                          m.cycles))
        for k, rows in groups.items():
            X = np.array([r[0] for r in rows])
            y = np.array([r[1] for r in rows], dtype=np.float64)
            # relative-error weighting: small layers count as much as big ones
            wgt = 1.0 / y
            self.coef[k], _ = nnls(X * wgt[:, None], y * wgt)
        return {k: v.tolist() for k, v in self.coef.items()}

    def predict_cycles(self, shape: LayerShape, bits: int) -> float:
        """Cycles from the fitted model (``RuntimeError`` if that variant was never fitted)."""
        k = f"{shape_variant(shape)}-{bits}"
        if k not in self.coef:
            raise RuntimeError(f"no fitted model for {k}; call fit() with shapes of that kind")
        return float(features(shape, bits) @ self.coef[k])

    def validate(self, held_out: list[LayerShape]) -> dict:
        """Relative error of the analytic model against RTL measurements of held-out shapes."""
        ms = self.measure_many([(s, b) for s in held_out for b in BITS])
        errs = []
        rows = []
        for (s, b), m in zip([(s, b) for s in held_out for b in BITS], ms):
            p = self.predict_cycles(s, b)
            e = abs(p - m.cycles) / m.cycles
            errs.append(e)
            rows.append({"shape": s.key(), "bits": b, "measured": m.cycles,
                         "predicted": round(p, 1), "rel_err": round(e, 4)})
        return {"median_rel_err": float(np.median(errs)), "max_rel_err": float(np.max(errs)),
                "n": len(errs), "rows": rows}

    # ---- CostModel protocol ------------------------------------------------------------
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
            cycles = self.predict_cycles(shape, bits)
            layer, _ = shape_layer(shape, bits)
            from rvmpq.sw.kernels.gen import plan_layer
            pl = plan_layer(layer, "mpq")
            n_dot = _n_dot(pl)
            instret = cycles * 0.9
            wb, ab, ob = 4 * pl.weight_words + 8 * pl.cout, 4 * pl.h * pl.w * pl.cw, \
                4 * pl.out_words
        energy = n_dot * E_DOT[bits] + max(instret - n_dot, 0) * E_INSTR + (wb + ab + ob) * E_BYTE
        return LayerCost(float(cycles), float(wb), float(ab), float(energy))


def default_cost_model() -> RtlCostModel:
    """The RTL-measured cost model with default cache (used by ``rvmpq search --costs rtl``)."""
    return RtlCostModel()


def model_shapes(name: str) -> list[LayerShape]:
    """Compute-layer shapes of a built-in model (``digits-cnn`` | ``mnist1d-cnn``)."""
    if name not in MODEL_INPUTS:
        raise ValueError(f"unknown model {name!r}; allowed values: {sorted(MODEL_INPUTS)}")
    from rvmpq.sw.search.models import build_model, trace_model

    c, h, w = MODEL_INPUTS[name]
    out = []
    for l in trace_model(build_model(name)):
        if l.kind == "conv":
            cout = l.weight.shape[0]
            s = LayerShape("conv", c, cout, h, w, l.kernel[0], l.kernel[1], l.stride, l.padding,
                           l.groups)
            out.append(s)
            c, h, w = cout, s.h_out, s.w_out
        elif l.kind == "maxpool":
            h, w = h // l.kernel[0], w // l.kernel[1]
        elif l.kind == "flatten":
            c, h, w = c * h * w, 1, 1
        elif l.kind == "linear":
            out.append(LayerShape("linear", l.weight.shape[1], l.weight.shape[0]))
            c, h, w = l.weight.shape[0], 1, 1
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rvmpq costs``."""
    parser.add_argument("--model", required=True, choices=sorted(MODEL_INPUTS),
                        help="built-in model whose layers to cost")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, metavar="FILE",
                        help="write the cost table (format rvmpq-costs-1) here")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="parallel RTL runs (default 2)")


def main(args: argparse.Namespace) -> int:
    """Run ``rvmpq costs``."""
    from rvmpq.sw.kernels.layer import KernelLayerError
    from rvmpq.sw.search.costs_api import JsonCostTable

    try:
        shapes = model_shapes(args.model)
        cm = RtlCostModel(jobs=args.jobs)
        cm.measure_many([(s, b) for s in shapes for b in BITS])
    except (ValueError, KernelLayerError) as exc:
        print(f"rvmpq costs: {exc}", file=sys.stderr)
        return 1
    opts = [(w, a) for w in BITS for a in BITS]
    print(f"{'layer':<48} " + " ".join(f"{'INT' + str(b):>9}" for b in BITS))
    for s in shapes:
        print(f"{s.key():<48} " + " ".join(f"{cm.layer_cost(s, b, b).cycles:>9.0f}" for b in BITS))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        JsonCostTable.write(args.json_out, cm, shapes, opts)
        print(f"wrote {args.json_out}", file=sys.stderr)
    return 0
