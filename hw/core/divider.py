"""Iterative RV32M divider (DIV, DIVU, REM, REMU), one quotient bit per cycle."""


from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DivOp", "Divider"]


class DivOp(enum.Enum, shape=2):
    """The RV32M division operations (= funct3[1:0] of the instruction)."""

    DIV = 0
    DIVU = 1
    REM = 2
    REMU = 3


class Divider(wiring.Component):
    """Restoring divider on magnitudes with the RISC-V corner cases.

    Divide by zero gives quotient ``-1`` (all ones) and remainder = dividend; signed overflow
    (``-2**31 / -1``) gives quotient ``-2**31`` and remainder 0, as the ISA requires.

    Protocol (execute stage): ``x_start`` for one cycle latches the operands while the unit is
    idle (``x_idle``); ``x_done`` rises after :attr:`LATENCY` cycles and stays high with
    ``x_result`` until ``x_ack`` (the instruction leaves X) or ``x_abort`` (it is flushed).

    Members
    -------
    x_start : In(1)
        Start a division with ``x_op``, ``x_a`` (dividend), ``x_b`` (divisor).
    x_op : In(DivOp)
    x_a, x_b : In(32)
    x_ack : In(1)
        The result was consumed: return to idle.
    x_abort : In(1)
        Drop the operation in progress.
    x_idle : Out(1)
    x_done : Out(1)
    x_result : Out(32)
    """

    #: Cycles from ``x_start`` to ``x_done``.
    LATENCY = 34

    x_start: In(1)
    x_op: In(DivOp)
    x_a: In(32)
    x_b: In(32)
    x_ack: In(1)
    x_abort: In(1)
    x_idle: Out(1)
    x_done: Out(1)
    x_result: Out(32)

    def elaborate(self, platform):
        """Amaranth elaboration: the restoring divider (one quotient bit per cycle); ``platform``
        is unused."""
        m = Module()
        busy = Signal()
        count = Signal(range(34))
        quo = Signal(32)       # dividend magnitude shifting out, quotient shifting in
        rem = Signal(33)
        div = Signal(32)
        neg_q = Signal()
        neg_r = Signal()
        want_rem = Signal()
        special = Signal()
        special_val = Signal(32)
        result = Signal(32)
        done = Signal()

        a_neg = self.x_a[31] & ((self.x_op == DivOp.DIV) | (self.x_op == DivOp.REM))
        b_neg = self.x_b[31] & ((self.x_op == DivOp.DIV) | (self.x_op == DivOp.REM))
        is_rem = (self.x_op == DivOp.REM) | (self.x_op == DivOp.REMU)

        m.d.comb += [self.x_idle.eq(~busy & ~done), self.x_done.eq(done),
                     self.x_result.eq(result)]

        # ---- one restoring step per cycle ----
        trial = Signal(33)
        shifted = Cat(quo[31], rem[:32])
        m.d.comb += trial.eq(shifted - div)

        with m.If(self.x_abort):
            m.d.sync += [busy.eq(0), done.eq(0)]
        with m.Elif(self.x_start & ~busy & ~done):
            m.d.sync += [
                busy.eq(1), count.eq(0), rem.eq(0),
                quo.eq(Mux(a_neg, -self.x_a, self.x_a)),
                div.eq(Mux(b_neg, -self.x_b, self.x_b)),
                neg_q.eq(a_neg ^ b_neg), neg_r.eq(a_neg), want_rem.eq(is_rem),
                special.eq(self.x_b == 0),
                special_val.eq(Mux(is_rem, self.x_a, Const(0xFFFF_FFFF, 32))),
            ]
        with m.Elif(busy):
            with m.If(count == 32):
                # sign fix-up and corner cases
                q = Mux(neg_q, -quo, quo)[:32]
                r = Mux(neg_r, -rem[:32], rem[:32])[:32]
                m.d.sync += [busy.eq(0), done.eq(1),
                             result.eq(Mux(special, special_val, Mux(want_rem, r, q)))]
            with m.Else():
                m.d.sync += count.eq(count + 1)
                with m.If(~trial[32]):
                    m.d.sync += [rem.eq(trial), quo.eq(Cat(1, quo[:31]))]
                with m.Else():
                    m.d.sync += [rem.eq(shifted), quo.eq(Cat(0, quo[:31]))]
        with m.Elif(done & self.x_ack):
            m.d.sync += done.eq(0)
        return m
