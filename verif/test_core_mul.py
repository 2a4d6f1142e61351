"""Amaranth-simulator test of :class:`rvmpq.hw.core.core.Rv32mMulUnit` (the baseline core's
multiplier: four registered partial products, added in stage 2).

The expected values come from :func:`rvmpq.sw.golden.mul` (numpy, independent of the partial
product split). Operands are random with corner values mixed in; the consumer stalls at random
(backpressure) and the producer leaves idle cycles. Replay a seed with
``RVMPQ_SEED=<seed> pytest verif/test_core_mul.py``.
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rvmpq.hw.core.core import Rv32mMulUnit
from rvmpq.hw.modes import ElemWidth, MulMode, MulOp
from rvmpq.sw import golden

CORNERS = [0, 1, 0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, 0x0001_FFFF, 0x0002_0000, 0xFFFE_0000,
           0x0001_0000, 0xAAAA_AAAA, 0x5555_5555]
# RV32M op -> (MulOp, a_signed, b_signed)
OPS = {"mul": (MulOp.MULLO, 0, 0), "mulh": (MulOp.MULHI, 1, 1),
       "mulhsu": (MulOp.MULHI, 1, 0), "mulhu": (MulOp.MULHI, 0, 0)}


def _operand(rng):
    return rng.choice(CORNERS) if rng.random() < 0.3 else rng.randrange(1 << 32)


def test_rv32m_mul_unit_random():
    """Every RV32M multiply, in issue order, with idle cycles and backpressure."""
    seed = int(os.environ.get("RVMPQ_SEED", random.randrange(1 << 32)))
    print(f"seed={seed} (replay: RVMPQ_SEED={seed})")
    rng = random.Random(seed)
    jobs = []
    for _ in range(400):
        op = rng.choice(list(OPS))
        jobs.append((op, _operand(rng), _operand(rng)))
    # MULLO with signed operands gives the same low word: cover those modes too
    jobs += [("mul", a, b) for a, b in [(0xFFFF_FFFF, 0x8000_0000), (0x8000_0000, 0x8000_0000)]]
    expected = [int(golden.mul(a, b, op)) for op, a, b in jobs]
    dut = Rv32mMulUnit()
    got = []

    async def producer(ctx):
        for op, a, b in jobs:
            mop, sa, sb = OPS[op]
            if op == "mul":
                sa = sb = rng.randrange(2)
            while rng.random() < 0.2:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload.a, a)
            ctx.set(dut.i.payload.b, b)
            ctx.set(dut.i.payload.mode, MulMode.const({
                "op": mop, "a_width": ElemWidth.W16, "b_width": ElemWidth.W16,
                "a_signed": sa, "b_signed": sb}))
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while len(got) < len(jobs):
            ready = rng.random() < 0.7
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            if ready and ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload.result))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(1e-6 * 10 * len(jobs))
    assert len(got) == len(jobs), f"{len(got)} results for {len(jobs)} operations"
    for (op, a, b), e, g in zip(jobs, expected, got):
        assert g == e, f"{op} {a:#010x} {b:#010x}: got {g:#010x}, want {e:#010x} (seed {seed})"
