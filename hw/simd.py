"""The shared RV32M multiplier / SIMD dot-product unit (contract: docs/contracts.md section 1).

Pipeline (``LATENCY = 2``)::

    stage X (i accepted)                           stage M                          o
    ┌─────────────────────────────────────┐  xm  ┌───────────────────────────┐  mw
    │ decode mode, correction(mode)       │ ───▶ │ place HH8 values and the  │ ───▶ result
    │ T_lo = LL8_0 + OFF16_0<<8 + acc     │ regs │ HH16 heap by mode (<<16,  │ regs
    │        + correction[31:0]  (2 rows) │      │ <<32 in full mode), + MID │
    │ T_hi = LL8_16 + OFF16_16<<8 (2 rows)│      │ + correction[63:32]:      │
    │ HH8_8, HH8_24 (binary, 16 bits)     │      │ one compressor tree and   │
    │ MID = HL16 + LH16 (2 rows, gated)   │      │ one 64-bit adder          │
    └─────────────────────────────────────┘      └───────────────────────────┘

The ``xm`` register sits after the 8-bit level of the recursion. Only values that the mode
shifts (the HH children) are summed to binary before the shift; everything else stays a bit
heap, and the big sums of stage X are registered in carry-save form (two rows, Dadda trees,
:meth:`~rvmpq.hw.mul.BrickArray.compress`), so stage X has one short carry-propagate adder
(HH8) and stage M one (the final 64-bit sum). Both registers advance together (global stall)
when ``~o.valid | o.ready``. Measured (build/mularea/results.txt): generic gates 1.16x a plain
registered 33x33 multiplier, ECP5 (no DSP) ~76-79 MHz vs 57-60 MHz for the plain one.

That is the ``impl="tree"`` description (the default, the hardware). ``impl="words"`` describes
the same unit with word arithmetic per lane, for fast simulation (the program runner's default);
docs/runner.md says how the two are kept equal.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .modes import WIDTHS, MulMode, MulOp
from .mul import BrickArray, ModeSignals, correction

__all__ = ["SimdMulUnit", "IN_LAYOUT", "OUT_LAYOUT"]

# Implementation choices measured in build/mularea (keep the defaults unless re-measured):
SUM_HH16 = False  #: sum HH16 to binary in M before its mode shift (slower, smaller)
CS_X = True       #: register stage X's big sums as two carry-save rows (no CPA in X)
CS_INNER = True   #: keep mode-shifted inner node values (HH4) in carry-save form

#: Payload of the ``i`` stream.
IN_LAYOUT = data.StructLayout({"mode": MulMode, "a": 32, "b": 32, "acc": 32})
#: Payload of the ``o`` stream: ``result`` as the contract says; ``hi`` is the high half of the
#: 64-bit sum in MULLO/MULHI modes (so MULLO gives the full product ``Cat(result, hi)``, used by the
#: core's pipelined requantization); undefined in DOT mode.
OUT_LAYOUT = data.StructLayout({"result": 32, "hi": 32})


class SimdMulUnit(wiring.Component):
    """Hierarchical INT2/4/8/16 SIMD dot-product unit that also does the RV32M multiplies.

    One operation per cycle in every mode; the mode may change every cycle. Results come out
    in issue order :attr:`LATENCY` cycles after the operation is accepted when ``o`` is never
    stalled. The whole pipeline stalls while ``o.valid & ~o.ready``.

    Results (32 bits, wrapping):

    * DOT: ``acc + sum_i lane_i(a) * lane_i(b)``, lanes of ``w = a_width`` bits, two's
      complement where ``a_signed`` / ``b_signed``;
    * MULLO: low 32 bits of ``a * b`` (``acc`` ignored);
    * MULHI: high 32 bits of the 64-bit ``a * b``, each operand signed or unsigned per
      ``a_signed`` / ``b_signed`` (MULH, MULHSU, MULHU).

    An operation the unit was not built for (a DOT width not in ``widths``, MULLO/MULHI with
    ``with_rv32m=False``, or the reserved op encoding 3) returns 0.

    Parameters
    ----------
    widths : tuple of int
        SIMD lane widths to support, a non-empty subset of ``(2, 4, 8, 16)`` (default all).
        Leaving widths out removes the dot-mode logic of the array levels only they need.
    with_rv32m : bool
        Support MULLO/MULHI (the full 32x32 product). Without it the off-diagonal 16x16 blocks
        of the top level are not built.
    impl : {"tree", "words"}
        Which description to elaborate (docs/runner.md). ``"tree"`` (default) is the
        hierarchical brick array above: the hardware, used for synthesis, area and Fmax.
        ``"words"`` computes the same results with word-level arithmetic per lane (Amaranth
        ``*`` and ``+``), with the same ports, ``LATENCY``, handshake and register timing; it
        is what the program runner simulates by default, because Verilator evaluates a few
        dozen word operations per cycle instead of thousands of single-bit signals. The two are
        kept equal by lockstep tests (verif/test_simd_lockstep.py). ``o.payload.hi`` agrees in
        MULLO/MULHI modes only (it is undefined in DOT mode).

    Attributes
    ----------
    LATENCY : int
        Cycles from an accepted ``i`` transfer to the matching ``o.valid`` (2).

    Members
    -------
    i : In(stream.Signature(IN_LAYOUT))
        Operations: ``payload.mode`` (:data:`~rvmpq.hw.modes.MulMode`), ``payload.a``,
        ``payload.b`` (32-bit operands), ``payload.acc`` (32-bit accumulator, DOT only).
        ``i.ready`` is ``~o.valid | o.ready``.
    o : Out(stream.Signature(OUT_LAYOUT))
        Results: ``payload.result`` (32 bits), in issue order; ``payload.hi``: the high 32 bits
        of the 64-bit product in MULLO/MULHI modes (``Cat(result, hi)`` is the full product of a
        MULLO), undefined in DOT mode.
    """

    LATENCY = 2

    #: The descriptions :class:`SimdMulUnit` can elaborate (``impl``).
    IMPLS = ("tree", "words")

    def __init__(self, *, widths=WIDTHS, with_rv32m: bool = True, impl: str = "tree"):
        try:
            self._check_params(widths, with_rv32m, impl)
        except ValueError:
            self._MustUse__silence = True  # a rejected object is not an unused elaboratable
            raise
        self.widths = tuple(sorted(set(int(w) for w in widths)))
        self.with_rv32m = with_rv32m
        self.impl = impl
        super().__init__({
            "i": In(stream.Signature(IN_LAYOUT)),
            "o": Out(stream.Signature(OUT_LAYOUT)),
        })

    @staticmethod
    def _check_params(widths, with_rv32m, impl="tree"):
        try:
            widths = tuple(sorted(set(int(w) for w in widths)))
        except (TypeError, ValueError):
            raise ValueError(f"widths must be a subset of {WIDTHS}, got {widths!r}") from None
        bad = [w for w in widths if w not in WIDTHS]
        if bad or not widths:
            raise ValueError(f"widths must be a non-empty subset of {WIDTHS}, got {widths!r}")
        if not isinstance(with_rv32m, bool):
            raise ValueError(f"with_rv32m must be True or False, got {with_rv32m!r}")
        if impl not in SimdMulUnit.IMPLS:
            raise ValueError(f"impl must be one of {SimdMulUnit.IMPLS}, got {impl!r}")

    def elaborate(self, platform):
        """Amaranth elaboration: the ``tree`` description (the brick array), or the ``words`` one
        when ``impl == "words"``; ``platform`` is unused."""
        if self.impl == "words":
            return self._elaborate_words()
        m = Module()
        supported = frozenset([w.bit_length() - 1 for w in self.widths]
                              + ([5] if self.with_rv32m else []))

        adv = self._handshake(m)
        xm_valid = Signal()

        # -- stage X: decode the mode ------------------------------------------------------
        p = self.i.payload
        mode = p.mode
        is_dot = Signal()
        is_full = Signal()
        x_k = Signal(3)      # log2 of the lane width; 5 for MULLO/MULHI
        x_ok = Signal()      # the unit was built for this mode
        m.d.comb += [
            is_dot.eq(mode.op == MulOp.DOT),
            is_full.eq((mode.op == MulOp.MULLO) | (mode.op == MulOp.MULHI)),
            x_k.eq(Mux(is_dot, mode.a_width.as_value() + 1, 5)),
        ]
        ok_terms = [is_full] if self.with_rv32m else []
        ok_terms += [is_dot & (x_k == (w.bit_length() - 1)) for w in self.widths]
        m.d.comb += x_ok.eq(Cat(*ok_terms).any())
        ge = {j: Signal(name=f"x_ge{j}") for j in range(1, 6)}
        le = {j: Signal(name=f"x_le{j}") for j in range(0, 6)}
        for j, s in ge.items():
            m.d.comb += s.eq(x_k >= j)
        for j, s in le.items():
            m.d.comb += s.eq(x_k <= j)
        ms = ModeSignals(ge=ge, le=le, a_signed=mode.a_signed, b_signed=mode.b_signed,
                         supported=supported)

        # -- stage X: the array up to the 8-bit level -----------------------------------------
        # Top node (32) = LL16 + place(HH16, 32) + MID << 16; LL16 = LL8_0 + place(HH8_8, 16) +
        # OFF16_0 << 8, HH16 = LL8_16 + place(HH8_24, 16) + OFF16_16 << 8. Everything that is
        # not moved by the mode (the LL8 heaps, the 16-bit off-diagonal blocks, acc and the low
        # half of the correction) is summed in X into T_lo / T_hi; the HH8 values and MID too.
        arr = BrickArray(m, p.a, p.b, ms, name="x")
        arr.carry_save = CS_INNER
        width = 64 if self.with_rv32m else 32
        x_negc = Signal(width)
        with m.Switch(Cat(mode.b_signed, mode.a_signed, x_k)):
            for k in sorted(supported):
                for sa in (0, 1):
                    for sb in (0, 1):
                        c = (-correction(1 << k, bool(sa), bool(sb))) % (1 << 64)
                        with m.Case(sb | (sa << 1) | (k << 2)):
                            m.d.comb += x_negc.eq(c & ((1 << width) - 1))
        x_acc = Signal(32)
        m.d.comb += x_acc.eq(Mux(is_dot, p.acc, 0))
        lo_heap = arr.merge(arr.diag_heap(8, 0), arr.shift(arr.off_diagonal(16, 0), 8),
                            arr.heap_of(x_acc), arr.heap_of(x_negc[:32]))
        hi_heap = arr.merge(arr.diag_heap(8, 16), arr.shift(arr.off_diagonal(16, 16), 8))
        h8_heap, h24_heap = arr.diag_heap(8, 8), arr.diag_heap(8, 24)
        x_h8 = arr.materialize(h8_heap, 16, "x_h8")
        x_h24 = arr.materialize(h24_heap, 16, "x_h24")
        mid_heap = arr.off_diagonal(32, 0)
        lo_w = 33 if self.with_rv32m else 32
        if CS_X:
            x_tlo = arr.compress(lo_heap, lo_w, "x_tlo")
            x_thi = arr.compress(hi_heap, 32, "x_thi")
            x_mid = arr.compress(mid_heap, 33, "x_mid") if mid_heap else None
        else:
            x_tlo = (arr.materialize(lo_heap, lo_w, "x_tlo"),)
            x_thi = (arr.materialize(hi_heap, 32, "x_thi"),)
            x_mid = (arr.materialize(mid_heap, 33, "x_mid"),) if mid_heap else None

        # -- xm pipeline register ------------------------------------------------------------
        xm_tlo = [Signal(len(r), name=f"xm_tlo{i}") for i, r in enumerate(x_tlo)]
        xm_thi = [Signal(32, name=f"xm_thi{i}") for i, _ in enumerate(x_thi)]
        xm_h8 = Signal(16)
        xm_h24 = Signal(16)
        xm_ok = Signal()
        xm_hi = Signal()
        xm_k = Signal(3)
        xm_sa = Signal()
        xm_sb = Signal()
        with m.If(adv):
            m.d.sync += [
                xm_valid.eq(self.i.valid),
                *[r.eq(x) for r, x in zip(xm_tlo, x_tlo)],
                *[r.eq(x) for r, x in zip(xm_thi, x_thi)],
                xm_h8.eq(x_h8),
                xm_h24.eq(x_h24),
                xm_ok.eq(x_ok),
                xm_hi.eq(mode.op == MulOp.MULHI),
                xm_k.eq(x_k),
                xm_sa.eq(mode.a_signed),
                xm_sb.eq(mode.b_signed),
            ]
        if x_mid is not None:
            xm_mid = [Signal(33, name=f"xm_mid{i}") for i, _ in enumerate(x_mid)]
            with m.If(adv):
                m.d.sync += [r.eq(x) for r, x in zip(xm_mid, x_mid)]

        # -- stage M: place the HH values by mode, final sum -------------------------------
        def m_full(j):
            f = arr.full(j)
            if isinstance(f, Const):
                return f
            s = Signal(name=f"m_full{j}")
            m.d.comb += s.eq(xm_k >= j)
            return s

        f4, f5 = m_full(4), m_full(5)
        hh16 = arr.merge(*[arr.heap_of(r) for r in xm_thi], arr.place_hh(arr.heap_of(xm_h24), 16, f4))
        if SUM_HH16:
            hh16 = arr.heap_of(arr.materialize(hh16, 32, "m_hh16"))
        heap = arr.merge(*[arr.heap_of(r) for r in xm_tlo], arr.place_hh(arr.heap_of(xm_h8), 16, f4),
                         arr.place_hh(hh16, 32, f5))
        if self.with_rv32m:
            # upper half of the correction: only MULHI reads it, so only full mode matters
            m_negc_hi = Signal(32)
            with m.Switch(Cat(xm_sb, xm_sa)):
                for sa in (0, 1):
                    for sb in (0, 1):
                        c = (-correction(32, bool(sa), bool(sb))) % (1 << 64)
                        with m.Case(sb | (sa << 1)):
                            m.d.comb += m_negc_hi.eq(c >> 32)
            heap = arr.merge(heap, arr.heap_of(m_negc_hi, 32))
        if x_mid is not None:
            heap = arr.merge(heap, *[arr.heap_of(r, 16) for r in xm_mid])
        m_sum = arr.materialize(heap, width, "m_sum")
        m_result = Signal(32)
        hi = m_sum[32:64] if self.with_rv32m else Const(0, 32)
        m.d.comb += m_result.eq(Mux(xm_ok, Mux(xm_hi, hi, m_sum[:32]), 0))

        self._output(m, adv, xm_valid, m_result, hi)
        return m

    def _handshake(self, m: Module) -> Signal:
        """The global stall both descriptions share: every register advances on ``adv`` =
        ``~o.valid | o.ready``, which is also ``i.ready``. Returns ``adv``."""
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        return adv

    def _output(self, m: Module, adv, valid, result, hi) -> None:
        """The output register (stage ``mw``) both descriptions share: ``o`` loads ``valid``,
        ``result`` and ``hi`` on ``adv``."""
        with m.If(adv):
            m.d.sync += [
                self.o.valid.eq(valid),
                self.o.payload.result.eq(result),
                self.o.payload.hi.eq(hi),
            ]

    def _elaborate_words(self):
        """The word-level description (``impl="words"``): same ports, timing and results.

        Stage X only registers the operation (operands, accumulator, decoded mode); stage M
        computes the result from the ``xm`` register with one product per lane, a sum, and a
        32x32 unsigned product with the usual signedness fix-up of its high half::

            hi(a*b) = hi(a_u * b_u) - (a_signed & a[31] ? b : 0) - (b_signed & b[31] ? a : 0)

        Like the tree, the registers load on every advance whether or not ``i.valid`` is set,
        and ``result`` is a function of the ``xm`` register alone, so ``o.payload.result``
        matches the tree in every cycle, not only when ``o.valid``.
        """
        m = Module()

        adv = self._handshake(m)

        # -- stage X: decode, register the operation ----------------------------------------
        p = self.i.payload
        mode = p.mode
        is_dot = mode.op == MulOp.DOT
        is_full = (mode.op == MulOp.MULLO) | (mode.op == MulOp.MULHI)
        x_k = Signal(3)      # log2 of the lane width; 5 for MULLO/MULHI (and the reserved op)
        m.d.comb += x_k.eq(Mux(is_dot, mode.a_width.as_value() + 1, 5))
        xm_valid = Signal()
        xm_a = Signal(32)
        xm_b = Signal(32)
        xm_acc = Signal(32)
        xm_k = Signal(3)
        xm_full = Signal()
        xm_hi = Signal()
        xm_sa = Signal()
        xm_sb = Signal()
        with m.If(adv):
            m.d.sync += [
                xm_valid.eq(self.i.valid),
                xm_a.eq(p.a),
                xm_b.eq(p.b),
                xm_acc.eq(p.acc),
                xm_k.eq(x_k),
                xm_full.eq(is_full),
                xm_hi.eq(mode.op == MulOp.MULHI),
                xm_sa.eq(mode.a_signed),
                xm_sb.eq(mode.b_signed),
            ]

        # -- stage M: one dot product per built width, the full product ------------------
        def lane(x, i, w, s):
            # lane i of x as a (w+1)-bit two's complement number, sign-extended when s
            v = x[i * w:(i + 1) * w]
            return Cat(v, v[-1] & s).as_signed()

        m_dot = Signal(32)
        dots = {}
        for w in self.widths:
            d = Signal(32, name=f"m_dot{w}")
            terms = [lane(xm_a, i, w, xm_sa) * lane(xm_b, i, w, xm_sb) for i in range(32 // w)]
            total = xm_acc.as_signed()
            for t in terms:
                total = total + t
            m.d.comb += d.eq(total[:32])
            dots[w.bit_length() - 1] = d
        with m.Switch(xm_k):     # a width the unit was not built for (or k = 5): 0
            for k, d in dots.items():
                with m.Case(k):
                    m.d.comb += m_dot.eq(d)
            with m.Default():
                m.d.comb += m_dot.eq(0)

        hi = Signal(32)
        m_result = Signal(32)
        if self.with_rv32m:
            m_prod = Signal(64)
            m.d.comb += [
                m_prod.eq(xm_a * xm_b),
                hi.eq(m_prod[32:] - Mux(xm_sa & xm_a[31], xm_b, 0)
                      - Mux(xm_sb & xm_b[31], xm_a, 0)),
            ]
            m_full = Mux(xm_hi, hi, m_prod[:32])
            m.d.comb += m_result.eq(Mux(xm_full, m_full, m_dot))
        else:
            m.d.comb += m_result.eq(m_dot)

        self._output(m, adv, xm_valid, m_result, hi)
        return m
