"""Amaranth-simulator tests of :class:`rvmpq.hw.simd.SimdMulUnit` (fast tier, no Verilator).

The expected values come from a small reference written here with Python integers, independent
of the RTL's recursive structure. Every test that simulates runs on both descriptions of the unit
(``impl``: ``tree``, the synthesized brick array, and ``words``, the word-level one the program
runner simulates; docs/runner.md). Random tests print their seed; replay one with
``RVMPQ_SEED=<seed> pytest verif/test_simd_amaranth.py -k <test>``.
"""

from __future__ import annotations

import os
import random

import pytest
from amaranth.sim import Simulator

from rvmpq.hw.modes import WIDTHS, MulMode, MulOp, check_mode
from rvmpq.hw.simd import SimdMulUnit

MASK32 = 0xFFFF_FFFF


@pytest.fixture(params=SimdMulUnit.IMPLS)
def impl(request):
    """The description of the unit under test (``SimdMulUnit(impl=...)``)."""
    return request.param


# -- reference (plain Python ints) ---------------------------------------------------------

def _lane(x: int, i: int, w: int, signed: bool) -> int:
    v = (x >> (i * w)) & ((1 << w) - 1)
    return v - (1 << w) if signed and v >> (w - 1) else v


def ref(op: str, w: int, sa: bool, sb: bool, a: int, b: int, acc: int) -> int:
    """Expected 32-bit result of one operation."""
    if op == "DOT":
        s = acc + sum(_lane(a, i, w, sa) * _lane(b, i, w, sb) for i in range(32 // w))
        return s & MASK32
    p = _lane(a, 0, 32, sa) * _lane(b, 0, 32, sb)
    return (p & MASK32) if op == "MULLO" else (p >> 32) & MASK32


def _seed() -> int:
    seed = int(os.environ.get("RVMPQ_SEED", random.randrange(1 << 32)))
    print(f"seed={seed} (replay: RVMPQ_SEED={seed})")
    return seed


def _operand(rng: random.Random) -> int:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice([0, MASK32, 0x8000_0000, 0x7FFF_FFFF, 0xAAAA_AAAA, 0x5555_5555,
                           0x8888_8888, 0x8080_8080, 0x8000_8000, 1])
    return rng.randrange(1 << 32)


def random_op(rng: random.Random, widths=WIDTHS, rv32m=True):
    ops = ["DOT"] * 3 + (["MULLO", "MULHI"] if rv32m else [])
    op = rng.choice(ops)
    w = rng.choice(widths)
    sa, sb = rng.random() < 0.5, rng.random() < 0.5
    return op, w, sa, sb, _operand(rng), _operand(rng), _operand(rng)


def mode_value(op, w, sa, sb):
    return MulMode.const(check_mode(op, w, w, sa, sb))


# -- bench ---------------------------------------------------------------------------------

def run_ops(dut: SimdMulUnit, ops, rng: random.Random, p_valid=1.0, p_ready=1.0,
            expect=None):
    """Drive ``ops`` into ``dut`` with random idle cycles and backpressure; check in order."""
    expect = expect or (lambda o: ref(*o))
    results = []

    async def driver(ctx):
        for op in ops:
            while rng.random() >= p_valid:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"mode": mode_value(*op[:4]), "a": op[4], "b": op[5],
                                    "acc": op[6]})
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def monitor(ctx):
        rrng = random.Random(rng.randrange(1 << 32))
        cycles = 0
        while len(results) < len(ops):
            ready = int(rrng.random() < p_ready)
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)  # let combinational settle before sampling the handshake
            if ctx.get(dut.o.valid) and ready:
                results.append(ctx.get(dut.o.payload.result))
            await ctx.tick()
            cycles += 1
            assert cycles < 20 * len(ops) + 100, "unit stopped producing results"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor)
    sim.run()
    for n, (op, got) in enumerate(zip(ops, results)):
        want = expect(op)
        assert got == want, (f"op #{n} {op[0]} w={op[1]} a_signed={op[2]} b_signed={op[3]} "
                             f"a={op[4]:#010x} b={op[5]:#010x} acc={op[6]:#010x}: "
                             f"got {got:#010x}, want {want:#010x}")
    return results


# -- tests ---------------------------------------------------------------------------------

def test_reference_self_check():
    """The inline reference agrees with hand-computed values."""
    assert ref("DOT", 8, True, True, 0x00_00_02_FF, 0x00_00_03_05, 10) == (10 - 5 + 6)
    assert ref("DOT", 2, False, False, MASK32, MASK32, 0) == 16 * 9
    assert ref("DOT", 2, True, True, MASK32, MASK32, 0) == 16
    assert ref("MULHI", 32, True, True, MASK32, MASK32, 0) == 0
    assert ref("MULHI", 32, False, False, MASK32, MASK32, 0) == 0xFFFF_FFFE
    assert ref("MULHI", 32, True, False, MASK32, MASK32, 0) == MASK32
    assert ref("MULLO", 32, True, True, 0x1234_5678, 0x10, 0) == 0x2345_6780


def test_directed_corners(impl):
    """Extreme lane values in every mode and signedness, one operation per cycle."""
    ops = []
    for op in ("DOT", "MULLO", "MULHI"):
        for w in (WIDTHS if op == "DOT" else (8,)):
            for sa in (False, True):
                for sb in (False, True):
                    for a in (0, MASK32, 0x8000_0000, 0x7FFF_FFFF, 0xAAAA_AAAA, 0x5555_5555):
                        for b in (MASK32, 0x8888_8888, 0x7777_7777, 0x8000_8000):
                            ops.append((op, w, sa, sb, a, b, 0xDEAD_BEEF))
    run_ops(SimdMulUnit(impl=impl), ops, random.Random(0))


def test_random_back_to_back(impl):
    """Random operations, mode changing every cycle, no idle cycles, no backpressure."""
    rng = random.Random(_seed())
    ops = [random_op(rng) for _ in range(600)]
    run_ops(SimdMulUnit(impl=impl), ops, rng)


def test_random_backpressure(impl):
    """Random operations with idle input cycles and ``o.ready`` backpressure."""
    rng = random.Random(_seed())
    ops = [random_op(rng) for _ in range(300)]
    run_ops(SimdMulUnit(impl=impl), ops, rng, p_valid=0.7, p_ready=0.5)


def test_latency(impl):
    """``o.valid`` rises exactly LATENCY cycles after the accepted transfer."""
    dut = SimdMulUnit(impl=impl)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, {"mode": mode_value("MULLO", 8, False, False), "a": 6, "b": 7,
                                "acc": 0})
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for cycle in range(1, 6):
            if ctx.get(dut.o.valid):
                seen["cycle"] = cycle
                seen["result"] = ctx.get(dut.o.payload.result)
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {"cycle": SimdMulUnit.LATENCY, "result": 42}


@pytest.mark.parametrize("widths,rv32m", [((8, 16), True), ((2, 4), False), ((4,), True),
                                          ((16,), False)])
def test_feature_flags(widths, rv32m, impl):
    """Reduced configurations: supported modes are exact, unsupported modes give 0."""
    rng = random.Random(_seed())
    dut = SimdMulUnit(widths=widths, with_rv32m=rv32m, impl=impl)
    ops = [random_op(rng, WIDTHS, True) for _ in range(200)]

    def expect(o):
        ok = (o[0] == "DOT" and o[1] in widths) or (o[0] != "DOT" and rv32m)
        return ref(*o) if ok else 0

    run_ops(dut, ops, rng, expect=expect)


@pytest.mark.parametrize("kwargs,match", [
    ({"widths": (3,)}, r"subset of \(2, 4, 8, 16\)"),
    ({"widths": ()}, "non-empty"),
    ({"widths": "x"}, "subset"),
    ({"with_rv32m": 1}, "True or False"),
    ({"impl": "fast"}, r"impl must be one of \('tree', 'words'\)"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimdMulUnit(**kwargs)


def test_mulop_values_cover_contract():
    """The unit handles every MulOp the mode encoding defines."""
    assert {o.name for o in MulOp} == {"DOT", "MULLO", "MULHI"}
