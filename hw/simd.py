"""The shared RV32M multiplier / SIMD dot-product unit (contract: docs/contracts.md section 1).

Pipeline (``LATENCY = 2``)::

    stage X (i accepted)                        stage M                       o
    ┌──────────────────────────────────┐  xm   ┌──────────────────────┐  mw
    │ decode mode                       │ ───▶ │ LL16 + HH16 (shifted │ ───▶ result
    │ diagonal 16-bit nodes LL16, HH16  │ regs │ by 32 in full mode)  │ regs
    │ MID = HL16 + LH16 (gated)         │      │ + MID << 16 + acc    │
    │ (recursive brick array, hw/mul.py)│      │ - correction(mode)   │
    └──────────────────────────────────┘       └──────────────────────┘

The ``xm`` register sits after the 16-bit level of the recursion (two 32-bit diagonal sums, one
33-bit off-diagonal sum, the gated accumulator and the decoded mode); the ``mw`` register is the
output. Both advance together (global stall) when ``~o.valid | o.ready``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .modes import WIDTHS, MulMode, MulOp
from .mul import BrickArray, ModeSignals, correction

__all__ = ["SimdMulUnit", "IN_LAYOUT", "OUT_LAYOUT"]

#: Payload of the ``i`` stream.
IN_LAYOUT = data.StructLayout({"mode": MulMode, "a": 32, "b": 32, "acc": 32})
#: Payload of the ``o`` stream.
OUT_LAYOUT = data.StructLayout({"result": 32})


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
        Results: ``payload.result`` (32 bits), in issue order.
    """

    LATENCY = 2

    def __init__(self, *, widths=WIDTHS, with_rv32m: bool = True):
        try:
            self._check_params(widths, with_rv32m)
        except ValueError:
            self._MustUse__silence = True  # a rejected object is not an unused elaboratable
            raise
        self.widths = tuple(sorted(set(int(w) for w in widths)))
        self.with_rv32m = with_rv32m
        super().__init__({
            "i": In(stream.Signature(IN_LAYOUT)),
            "o": Out(stream.Signature(OUT_LAYOUT)),
        })

    @staticmethod
    def _check_params(widths, with_rv32m):
        try:
            widths = tuple(sorted(set(int(w) for w in widths)))
        except (TypeError, ValueError):
            raise ValueError(f"widths must be a subset of {WIDTHS}, got {widths!r}") from None
        bad = [w for w in widths if w not in WIDTHS]
        if bad or not widths:
            raise ValueError(f"widths must be a non-empty subset of {WIDTHS}, got {widths!r}")
        if not isinstance(with_rv32m, bool):
            raise ValueError(f"with_rv32m must be True or False, got {with_rv32m!r}")

    def elaborate(self, platform):
        m = Module()
        supported = frozenset([w.bit_length() - 1 for w in self.widths]
                              + ([5] if self.with_rv32m else []))

        # -- handshake: global stall ------------------------------------------------------
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
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

        # -- stage X: the array up to the 16-bit level --------------------------------------
        arr = BrickArray(m, p.a, p.b, ms, name="x")
        _, x_ll = arr.diagonal(16, 0, force=True)
        _, x_hh = arr.diagonal(16, 16, force=True)
        top_full = arr.full(5)
        mid_heap = arr.off_diagonal(32, 0)
        x_mid = arr.materialize(mid_heap, 33, "x_mid") if mid_heap else None

        # -- xm pipeline register ------------------------------------------------------------
        xm_ll = Signal(32)
        xm_hh = Signal(32)
        xm_acc = Signal(32)
        xm_ok = Signal()
        xm_hi = Signal()
        xm_k = Signal(3)
        xm_sa = Signal()
        xm_sb = Signal()
        with m.If(adv):
            m.d.sync += [
                xm_valid.eq(self.i.valid),
                xm_ll.eq(x_ll),
                xm_hh.eq(x_hh),
                xm_acc.eq(Mux(is_dot, p.acc, 0)),
                xm_ok.eq(x_ok),
                xm_hi.eq(mode.op == MulOp.MULHI),
                xm_k.eq(x_k),
                xm_sa.eq(mode.a_signed),
                xm_sb.eq(mode.b_signed),
            ]
        if x_mid is not None:
            xm_mid = Signal(33)
            with m.If(adv):
                m.d.sync += xm_mid.eq(x_mid)

        # -- stage M: final sum ------------------------------------------------------------
        width = 64 if self.with_rv32m else 32
        # two's complement of the correction, selected by the (registered) mode
        m_negc = Signal(width)
        with m.Switch(Cat(xm_sb, xm_sa, xm_k)):
            for k in sorted(supported):
                for sa in (0, 1):
                    for sb in (0, 1):
                        c = (-correction(1 << k, bool(sa), bool(sb))) % (1 << 64)
                        if k != 5 and self.with_rv32m:
                            # upper half unused in dot mode: share the full mode's bits
                            c_full = (-correction(32, bool(sa), bool(sb))) % (1 << 64)
                            c = (c & 0xFFFF_FFFF) | (c_full & ~0xFFFF_FFFF)
                        with m.Case(sb | (sa << 1) | (k << 2)):
                            m.d.comb += m_negc.eq(c & ((1 << width) - 1))
        if isinstance(top_full, Const):
            hh_heap = arr.place_hh(arr.heap_of(xm_hh), 32, top_full)
        else:
            m_full = Signal()
            m.d.comb += m_full.eq(xm_k == 5)
            hh_heap = arr.place_hh(arr.heap_of(xm_hh), 32, m_full)
        heap = arr.merge(arr.heap_of(xm_ll), hh_heap, arr.heap_of(xm_acc),
                          arr.heap_of(m_negc))
        if x_mid is not None:
            heap = arr.merge(heap, arr.heap_of(xm_mid, 16))
        m_sum = arr.materialize(heap, width, "m_sum")
        m_result = Signal(32)
        hi = m_sum[32:64] if self.with_rv32m else Const(0, 32)
        m.d.comb += m_result.eq(Mux(xm_ok, Mux(xm_hi, hi, m_sum[:32]), 0))

        # -- mw register = output ----------------------------------------------------------
        with m.If(adv):
            m.d.sync += [
                self.o.valid.eq(xm_valid),
                self.o.payload.result.eq(m_result),
            ]
        return m
