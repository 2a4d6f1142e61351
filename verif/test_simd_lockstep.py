"""Lockstep equivalence of the two descriptions of :class:`rvmpq.hw.simd.SimdMulUnit`.

``impl="tree"`` (the brick array, the hardware) and ``impl="words"`` (word-level arithmetic,
what the program runner simulates) are instantiated side by side in one Amaranth simulation
and fed the same random stimulus every cycle: a random ``i.valid``, a random mode (every
``op`` encoding including the reserved one, every width code, mismatched ``a_width`` /
``b_width``, all signedness), random operands and accumulator, random ``o.ready``
backpressure and occasional synchronous resets. Every cycle the outputs are compared:

* ``i.ready``, ``o.valid`` and ``o.payload.result`` always (valid or not: both load their
  registers on every advance, so the payload is a function of the same inputs);
* ``o.payload.hi`` when the operation in the output register was MULLO/MULHI (it is undefined
  in DOT mode, contracts.md section 1), and always when the unit has no RV32M (both give 0).

Seeds: the fixed CI seed plus one random seed per run (printed with the replay command, see
verif/conftest.py); ``RVMPQ_SEED=<n>`` replays one.
"""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from rvmpq.hw.modes import MulMode, MulOp
from rvmpq.hw.simd import IN_LAYOUT, OUT_LAYOUT, SimdMulUnit

MASK32 = 0xFFFF_FFFF

#: name -> SimdMulUnit keyword arguments (the configurations of verif/test_simd.py and more)
CONFIGS = {
    "full": {},
    "no-rv32m": {"with_rv32m": False},
    "w8-16": {"widths": (8, 16)},
    "w2-4": {"widths": (2, 4), "with_rv32m": False},
    "w4": {"widths": (4,)},
}

#: Cycles per lockstep run (the tree's Amaranth simulation runs ~15 cycles/s).
CYCLES = 500

_OPERANDS = (0, MASK32, 0x8000_0000, 0x7FFF_FFFF, 0xAAAA_AAAA, 0x5555_5555, 0x8888_8888,
             0x8080_8080, 0x8000_8000, 0x7F7F_7F7F, 1)


def _operand(rng: random.Random) -> int:
    return rng.choice(_OPERANDS) if rng.random() < 0.3 else rng.randrange(1 << 32)


def _mode(rng: random.Random) -> int:
    """A random MulMode bit pattern: any op encoding (0..3), any width codes, any signedness."""
    if rng.random() < 0.9:
        w = rng.randrange(4)
        fields = {"op": rng.choice([0, 0, 1, 2, 3]), "a_width": w, "b_width": w}
    else:  # mismatched widths (reserved; the unit reads a_width)
        fields = {"op": rng.randrange(4), "a_width": rng.randrange(4),
                  "b_width": rng.randrange(4)}
    value = 0
    for name, v in (("op", fields["op"]), ("a_width", fields["a_width"]),
                    ("b_width", fields["b_width"]), ("a_signed", rng.randrange(2)),
                    ("b_signed", rng.randrange(2))):
        f = MulMode._fields[name]
        value |= v << f.offset
    return value


def _op_of(mode: int) -> int:
    return (mode >> MulMode._fields["op"].offset) & 3


def lockstep(kwargs: dict, seed: int, cycles: int = CYCLES, words=None) -> dict:
    """Run both descriptions side by side for ``cycles`` cycles; raise AssertionError on the
    first difference. Returns counts of what was exercised (for coverage asserts).

    ``words`` replaces the words-side unit (the planted-bug test)."""
    rng = random.Random(seed)
    tree = SimdMulUnit(impl="tree", **kwargs)
    words = words if words is not None else SimdMulUnit(impl="words", **kwargs)
    rst = Signal()
    m = Module()
    m.submodules.tree = ResetInserter(rst)(tree)
    m.submodules.words = ResetInserter(rst)(words)
    units = (tree, words)
    stats = {"valid_out": 0, "stalls": 0, "full_hi_checked": 0, "resets": 0}

    async def bench(ctx):
        xm_full = out_full = False  # is the op in the xm / output register MULLO/MULHI?
        for cycle in range(cycles):
            reset = rng.random() < 0.005
            valid = int(rng.random() < 0.8)
            mode = _mode(rng)
            a, b, acc = _operand(rng), _operand(rng), _operand(rng)
            ready = int(rng.random() < 0.7)
            ctx.set(rst, reset)
            for u in units:
                ctx.set(u.i.valid, valid)
                ctx.set(u.i.payload.mode.as_value(), mode)
                ctx.set(u.i.payload.a, a)
                ctx.set(u.i.payload.b, b)
                ctx.set(u.i.payload.acc, acc)
                ctx.set(u.o.ready, ready)
            await ctx.delay(1e-9)
            got = [(ctx.get(u.i.ready), ctx.get(u.o.valid), ctx.get(u.o.payload.result),
                    ctx.get(u.o.payload.hi)) for u in units]
            where = (f"cycle {cycle} (seed {seed}, {kwargs}): mode={mode:#04x} a={a:#010x} "
                     f"b={b:#010x} acc={acc:#010x} valid={valid} ready={ready}")
            (t_rdy, t_val, t_res, t_hi), (w_rdy, w_val, w_res, w_hi) = got
            assert (t_rdy, t_val) == (w_rdy, w_val), \
                f"handshake differs at {where}: tree {t_rdy, t_val}, words {w_rdy, w_val}"
            assert t_res == w_res, \
                f"result differs at {where}: tree {t_res:#010x}, words {w_res:#010x}"
            if out_full or not tree.with_rv32m:
                assert t_hi == w_hi, f"hi differs at {where}: tree {t_hi:#010x}, words {w_hi:#010x}"
                stats["full_hi_checked"] += out_full
            stats["valid_out"] += t_val
            stats["stalls"] += t_val and not ready
            stats["resets"] += reset
            await ctx.tick()
            if reset:
                xm_full = out_full = False
            elif t_rdy:  # the pipeline advanced
                out_full, xm_full = xm_full, _op_of(mode) in (MulOp.MULLO.value, MulOp.MULHI.value)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return stats


@pytest.mark.parametrize("config", list(CONFIGS))
def test_lockstep(config, seed):
    """Both descriptions agree every cycle under random modes, idle cycles, backpressure, resets."""
    stats = lockstep(CONFIGS[config], seed)
    # the stimulus really exercised what it claims to
    assert stats["valid_out"] > CYCLES // 3 and stats["stalls"] > CYCLES // 20
    if CONFIGS[config].get("with_rv32m", True):
        assert stats["full_hi_checked"] > CYCLES // 10


def test_lockstep_catches_a_difference():
    """The lockstep check fails when the words side is wrong (a planted bug: ``a_signed``
    tied low, so signed MULHI and signed dot products differ)."""
    with pytest.raises(AssertionError, match="differs"):
        lockstep({}, seed=1, cycles=300, words=_UnsignedA())


class _UnsignedA(wiring.Component):
    """The words description with the ``a_signed`` input of its mode tied low (a planted bug)."""

    def __init__(self):
        self.with_rv32m = True
        super().__init__({"i": In(stream.Signature(IN_LAYOUT)),
                          "o": Out(stream.Signature(OUT_LAYOUT))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = SimdMulUnit(impl="words")
        m.d.comb += [
            inner.i.valid.eq(self.i.valid),
            inner.i.payload.eq(self.i.payload),
            inner.i.payload.mode.a_signed.eq(0),
            self.i.ready.eq(inner.i.ready),
            self.o.valid.eq(inner.o.valid),
            self.o.payload.eq(inner.o.payload),
            inner.o.ready.eq(self.o.ready),
        ]
        return m
