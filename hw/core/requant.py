"""Requantization unit for ``mpq.rq`` / ``mpq.rqp`` (contracts.md section 3).

::

    p = acc * mult                (exact, 64-bit signed; 8 bits of mult per cycle)
    r = p                         if shift == 0
      = (p >> shift) + ((p >> (shift - 1)) & 1)   otherwise (arithmetic shifts)
    y = clamp(r' + zp, lo, hi)    with r' = r saturated to about +-2**21

Saturating ``r`` first keeps ``r + zp`` narrow without changing the result: every output range
lies within +-2**16 and ``|zp| < 2**15``. ``mpq.rq`` returns ``y`` sign-extended; ``mpq.rqp`` returns
``(rd >> bits) | ((y & (2**bits - 1)) << (32 - bits))``.

The multiply is digit-serial (a 32x9 signed multiplier used :attr:`MUL_STEPS` times) to keep the
unit small; the rounding shift takes one cycle and round/clamp/pack another (for Fmax).

The core's pipelined requantization (the product from the SIMD unit) uses the same arithmetic in
two pieces: :func:`requant_round` (rounding shift, saturation, zero point) in W and
:func:`clamp_pack` in the stage after it; :func:`requant_comb` is the two in one cycle.
"""


from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..isa import RqConfigLayout
from ..modes import ElemWidth

__all__ = ["RequantUnit", "requant_comb", "requant_round", "clamp_pack", "requant_above"]


def requant_above(shift):
    """The thermometer mask of a shift amount that :func:`requant_comb` uses: bit ``i - 21``
    (for ``i`` in 21..62) is ``i >= shift + 21``.

    It depends on the ``mpq_rq`` CSR only, so a core can keep it in a register written with the
    CSR (off the path from the product to the result).

    Parameters
    ----------
    shift : Value
        The 6-bit ``shift`` field.

    Returns
    -------
    Value(42)
    """
    return Cat(*[shift <= i - 21 for i in range(21, 63)])


def requant_round(m: Module, p, cfg, name: str = "rq", above=None):
    """The first half of :func:`requant_comb`: the rounding shift of a 64-bit product,
    saturated, plus the zero point (``s = r' + zp``, before the clamp).

    A pipelined core registers ``s`` here and finishes with :func:`clamp_pack` one stage later.

    Parameters
    ----------
    m : Module
        Where the logic goes.
    p : Value
        ``acc * mult``, 64 bits, two's complement.
    cfg : View of :data:`~rvmpq.hw.isa.RqConfigLayout`
        The ``mpq_rq`` CSR (``shift`` and ``zp`` are read).
    name : str
        Prefix of the signal names.
    above : Value(42), optional
        :func:`requant_above` of ``cfg.shift``, e.g. from a register (default: computed here).

    Returns
    -------
    Signal(signed(24))
        ``s``, the input of :func:`clamp_pack`.
    """
    # Organised for a short path: q = (p << 1) >> shift is p >> (shift - 1) for shift >= 1 and
    # p << 1 for shift == 0, and only its low 23 bits are needed; whether q fits 23 bits (every
    # bit of p from shift + 21 up equals the sign) is found from p and a thermometer mask of
    # shift, beside the shifter instead of after it; the rounding increment rides on the
    # zero-point adder's carry: s = (q >> 1) + zp + q[0].
    ps = Signal(signed(64), name=f"{name}_p")
    m.d.comb += ps.eq(p)
    shift = cfg.shift
    q = Signal(23, name=f"{name}_q")
    m.d.comb += q.eq(((ps << 1) >> shift)[:23])
    differs = ps[:63] ^ ps[63].replicate(63)           # bit i differs from the sign
    if above is None:
        above = requant_above(shift)      # bit i - 21: i >= shift + 21
    fits = ~(differs[21:] & above).any()
    qs = Signal(signed(23), name=f"{name}_qs")
    m.d.comb += qs.eq(Mux(fits, q.as_signed(), Mux(ps[63], -(1 << 22), (1 << 22) - 1)))
    s = Signal(signed(24), name=f"{name}_s")
    two_a1 = Cat(Const(1, 1), qs[1:]).as_signed()      # 2 * (qs >> 1) + 1
    two_bc = Cat(qs[0], cfg.zp).as_signed()            # 2 * zp + qs[0]
    m.d.comb += s.eq((two_a1 + two_bc) >> 1)
    return s


def requant_comb(m: Module, p, cfg, rd, pack, name: str = "rq", above=None):
    """Combinational requantize-and-pack of a 64-bit product (the same arithmetic as
    :class:`RequantUnit` after its multiply, in one cycle): :func:`requant_round` then
    :func:`clamp_pack`.

    Parameters
    ----------
    m : Module
        Where the logic goes.
    p : Value
        ``acc * mult``, 64 bits, two's complement.
    cfg : View of :data:`~rvmpq.hw.isa.RqConfigLayout`
        The ``mpq_rq`` CSR.
    rd : Value
        The packing register (``mpq.rqp``/``mpq.rqpa``).
    pack : Value
        1: return ``(rd >> bits) | (y << (32 - bits))``; 0: ``y`` sign-extended.
    above : Value(42), optional
        :func:`requant_above` of ``cfg.shift``, e.g. from a register (default: computed here).

    Returns
    -------
    Signal(32)
        The result.
    """
    s = requant_round(m, p, cfg, name, above)
    return clamp_pack(m, s, cfg.bits, cfg.out_signed, rd, pack, name)


def clamp_pack(m: Module, s, bits, out_signed, rd, pack, name: str = "rq"):
    """The tail shared by :func:`requant_comb` and :class:`RequantUnit`: clamp the signed value
    ``s`` (zero point added) to ``bits`` signed or unsigned, then either pack it into ``rd``
    (``pack`` = 1: ``(rd >> bits) | (y << (32 - bits))``) or sign-extend it.

    Parameters
    ----------
    m : Module
        Where the logic goes.
    s : Value
        The value to clamp, signed, at most 24 bits (:func:`requant_round`).
    bits : Value of :class:`~rvmpq.hw.modes.ElemWidth`
        The output width (``mpq_rq.bits``).
    out_signed : Value(1)
        Signed output range (``mpq_rq.out_signed``).
    rd, pack : Value
        As in :func:`requant_comb`.
    name : str
        Prefix of the signal names.

    Returns
    -------
    Signal(32)
        The result.
    """
    lo = Signal(signed(18), name=f"{name}_lo")
    hi = Signal(signed(18), name=f"{name}_hi")
    packed = Signal(32, name=f"{name}_packed")
    y = Signal(signed(18), name=f"{name}_y")
    with m.Switch(bits):
        for w in ElemWidth:
            with m.Case(w):
                m.d.comb += [
                    lo.eq(Mux(out_signed, -(1 << (w.bits - 1)), 0)),
                    hi.eq(Mux(out_signed, (1 << (w.bits - 1)) - 1, (1 << w.bits) - 1)),
                    packed.eq(Cat(rd[w.bits:], y[:w.bits])),
                ]
    m.d.comb += y.eq(Mux(s < lo, lo, Mux(s > hi, hi, s[:18].as_signed())))
    out = Signal(32, name=f"{name}_result")
    m.d.comb += out.eq(Mux(pack, packed, y.as_signed()))
    return out


class RequantUnit(wiring.Component):
    """Multi-cycle requantize (and pack) unit in the execute stage.

    Same protocol as :class:`~rvmpq.hw.core.divider.Divider`: ``x_start`` while ``x_idle``,
    ``x_done`` / ``x_result`` until ``x_ack`` or ``x_abort``.

    Members
    -------
    x_start : In(1)
    x_pack : In(1)
        1: ``mpq.rqp`` (shift-pack into ``x_rd``), 0: ``mpq.rq``.
    x_acc, x_mult, x_rd : In(32)
        ``rs1``, ``rs2`` and the old ``rd`` value.
    x_cfg : In(RqConfigLayout)
        The ``mpq_rq`` CSR.
    x_ack, x_abort : In(1)
    x_idle, x_done : Out(1)
    x_result : Out(32)
    """

    #: Bits of ``mult`` consumed per cycle.
    DIGIT = 8
    #: Multiply cycles.
    MUL_STEPS = 32 // DIGIT
    #: Cycles from ``x_start`` to ``x_done``.
    LATENCY = MUL_STEPS + 3

    x_start: In(1)
    x_pack: In(1)
    x_acc: In(32)
    x_mult: In(32)
    x_rd: In(32)
    x_cfg: In(RqConfigLayout)
    x_ack: In(1)
    x_abort: In(1)
    x_idle: Out(1)
    x_done: Out(1)
    x_result: Out(32)

    def elaborate(self, platform):
        """Amaranth elaboration: the digit-serial requantizer (``DIGIT`` bits of ``mult`` per
        cycle); ``platform`` is unused."""
        m = Module()
        D = self.DIGIT
        busy = Signal()
        done = Signal()
        step = Signal(range(self.MUL_STEPS + 2))
        acc = Signal(signed(32))
        mult = Signal(32)
        rd = Signal(32)
        pack = Signal()
        cfg = Signal(RqConfigLayout)
        p = Signal(signed(64))
        result = Signal(32)

        m.d.comb += [self.x_idle.eq(~busy & ~done), self.x_done.eq(done),
                     self.x_result.eq(result)]

        # ---- digit-serial multiply: p += acc * digit_i << (D * i); the top digit is signed ----
        digit = Signal(signed(D + 1))
        last = step == self.MUL_STEPS - 1
        m.d.comb += digit.eq(Mux(last, mult[:D].as_signed(), Cat(mult[:D], Const(0, 1))))
        partial = Signal(signed(32 + D + 1))
        m.d.comb += partial.eq(acc * digit)
        shifted = Signal(signed(64))
        with m.Switch(step):
            for i in range(self.MUL_STEPS):
                with m.Case(i):
                    m.d.comb += shifted.eq(partial << (D * i))

        # ---- rounding shift (one cycle), then round/clamp/pack (one cycle) ----
        # q = p >> (shift - 1), or p << 1 when shift == 0, so that r = (q >> 1) + q[0] in both
        # cases. q is saturated to 23 signed bits: |q| >= 2**22 means |r| > 2**20, which clamps
        # to the same output as the exact value.
        shift = cfg.shift
        q = Signal(signed(65))
        m.d.comb += q.eq(Mux(shift == 0, p << 1, p >> (shift - 1)[:6]))
        fits = (q[22:] == 0) | (q[22:] == (1 << 43) - 1)
        qs = Signal(signed(23))
        qs_next = Mux(fits, q[:23].as_signed(), Mux(q[64], -(1 << 22), (1 << 22) - 1))
        r = Signal(signed(23))
        m.d.comb += r.eq((qs >> 1) + qs[0])
        s = Signal(signed(24))
        m.d.comb += s.eq(r + cfg.zp)
        final = clamp_pack(m, s, cfg.bits, cfg.out_signed, rd, pack, "rq")

        with m.If(self.x_abort):
            m.d.sync += [busy.eq(0), done.eq(0)]
        with m.Elif(self.x_start & ~busy & ~done):
            m.d.sync += [busy.eq(1), step.eq(0), p.eq(0),
                         acc.eq(self.x_acc), mult.eq(self.x_mult), rd.eq(self.x_rd),
                         pack.eq(self.x_pack), cfg.eq(self.x_cfg)]
        with m.Elif(busy):
            with m.If(step == self.MUL_STEPS):
                m.d.sync += [qs.eq(qs_next), step.eq(step + 1)]
            with m.Elif(step == self.MUL_STEPS + 1):
                m.d.sync += [busy.eq(0), done.eq(1), result.eq(final)]
            with m.Else():
                m.d.sync += [p.eq(p + shifted), step.eq(step + 1), mult.eq(mult >> D)]
        with m.Elif(done & self.x_ack):
            m.d.sync += done.eq(0)
        return m
