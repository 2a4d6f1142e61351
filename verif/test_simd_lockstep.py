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

The same check runs twice: in the Amaranth simulator (``test_lockstep``, a few hundred cycles:
the tree's Python simulation is slow) and on one Verilator model holding both units with a C++
main loop (``test_lockstep_verilator``, 300,000 cycles per configuration and seed). Each has a
planted-bug test showing it fails.

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
CYCLES = 300

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
        f = MulMode[name]
        value |= v << f.offset
    return value


def _op_of(mode: int) -> int:
    return (mode >> MulMode["op"].offset) & 3


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

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.with_rv32m = kwargs.get("with_rv32m", True)
        super().__init__({"i": In(stream.Signature(IN_LAYOUT)),
                          "o": Out(stream.Signature(OUT_LAYOUT))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = SimdMulUnit(impl="words", **self.kwargs)
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


# -- the same check on one Verilator model, for many more cycles ----------------------------------

#: Cycles per Verilator lockstep run (~1 s for the full configuration).
VERILATOR_CYCLES = 300_000


class LockstepPair(wiring.Component):
    """Both descriptions of one configuration side by side, with shared flat inputs.

    Members
    -------
    valid, mode, a, b, acc, ready : In
        Drive ``i.valid``, ``i.payload`` and ``o.ready`` of both units (``mode`` is the
        :data:`~rvmpq.hw.modes.MulMode` bit pattern).
    t_ready, t_valid, t_result, t_hi, w_ready, w_valid, w_result, w_hi : Out
        ``i.ready``, ``o.valid`` and ``o.payload`` of the tree (``t_``) and words (``w_``) unit.

    ``planted_bug=True`` puts :class:`_UnsignedA` on the words side (to show the check fails).
    """

    def __init__(self, planted_bug: bool = False, **kwargs):
        self.kwargs = kwargs
        self.planted_bug = planted_bug
        outs = {f"{p}_{n}": Out(w) for p in "tw" for n, w in
                (("ready", 1), ("valid", 1), ("result", 32), ("hi", 32))}
        super().__init__({"valid": In(1), "mode": In(MulMode.size), "a": In(32), "b": In(32),
                          "acc": In(32), "ready": In(1), **outs})

    def elaborate(self, platform):
        m = Module()
        for p, impl in (("t", "tree"), ("w", "words")):
            if impl == "words" and self.planted_bug:
                u = _UnsignedA(**self.kwargs)
            else:
                u = SimdMulUnit(impl=impl, **self.kwargs)
            m.submodules[impl] = u
            m.d.comb += [
                u.i.valid.eq(self.valid), u.i.payload.mode.eq(self.mode),
                u.i.payload.a.eq(self.a), u.i.payload.b.eq(self.b),
                u.i.payload.acc.eq(self.acc), u.o.ready.eq(self.ready),
                getattr(self, f"{p}_ready").eq(u.i.ready),
                getattr(self, f"{p}_valid").eq(u.o.valid),
                getattr(self, f"{p}_result").eq(u.o.payload.result),
                getattr(self, f"{p}_hi").eq(u.o.payload.hi),
            ]
        return m


# C++ main loop: the stimulus of lockstep() above (same distributions, its own xorshift
# generator), the outputs compared every cycle, the first difference printed.
_HARNESS = r"""
#include "Vlockstep.h"
#include "verilated.h"
#include <cstdint>
#include <cstdio>
#include <cstdlib>

static uint64_t s;
static uint64_t rnd() { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }
static uint32_t pick(int n) { return (uint32_t)(rnd() % (uint64_t)n); }
static const uint32_t OPS[] = {@OPERANDS@};

static uint32_t operand() {
    if (pick(10) < 3) return OPS[pick(sizeof OPS / sizeof OPS[0])];
    return (uint32_t)(rnd() >> 16);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s SEED CYCLES RV32M\n", argv[0]); return 2; }
    uint64_t seed = strtoull(argv[1], nullptr, 0);
    long n = atol(argv[2]);
    int rv32m = atoi(argv[3]);
    s = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    if (!s) s = 1;
    VerilatedContext ctx;
    Vlockstep top(&ctx);
    top.clk = 0; top.rst = 1; top.eval(); top.clk = 1; top.eval();
    bool xm_full = false, out_full = false;
    long valid_out = 0, stalls = 0, hi_checked = 0, resets = 0;
    for (long c = 0; c < n; c++) {
        int reset = pick(1000) < 5, valid = pick(10) < 8, ready = pick(10) < 7;
        uint32_t op, aw, bw;
        if (pick(10) < 9) { static const int o[] = {0, 0, 1, 2, 3}; op = o[pick(5)]; aw = bw = pick(4); }
        else { op = pick(4); aw = pick(4); bw = pick(4); }
        uint32_t mode = (op << @OP@) | (aw << @AW@) | (bw << @BW@) | (pick(2) << @SA@) | (pick(2) << @SB@);
        uint32_t a = operand(), b = operand(), acc = operand();
        top.clk = 0; top.rst = reset; top.valid = valid; top.mode = mode; top.a = a; top.b = b;
        top.acc = acc; top.ready = ready;
        top.eval();
        bool bad = top.t_ready != top.w_ready || top.t_valid != top.w_valid ||
                   top.t_result != top.w_result;
        if ((out_full || !rv32m) && top.t_hi != top.w_hi) bad = true;
        if (bad) {
            printf("MISMATCH cycle=%ld seed=%llu mode=0x%02x a=0x%08x b=0x%08x acc=0x%08x "
                   "valid=%d ready=%d rst=%d | tree ready=%d valid=%d result=0x%08x hi=0x%08x | "
                   "words ready=%d valid=%d result=0x%08x hi=0x%08x (hi compared: %d)\n",
                   c, (unsigned long long)seed, mode, a, b, acc, valid, ready, reset,
                   (int)top.t_ready, (int)top.t_valid, top.t_result, top.t_hi,
                   (int)top.w_ready, (int)top.w_valid, top.w_result, top.w_hi,
                   (int)(out_full || !rv32m));
            return 1;
        }
        valid_out += top.t_valid;
        stalls += top.t_valid && !ready;
        hi_checked += out_full;
        resets += reset;
        bool adv = top.t_ready;
        top.clk = 1; top.eval();
        if (reset) { xm_full = out_full = false; }
        else if (adv) { out_full = xm_full; xm_full = op == 1 || op == 2; }
    }
    printf("OK cycles=%ld valid_out=%ld stalls=%ld hi_checked=%ld resets=%ld\n",
           n, valid_out, stalls, hi_checked, resets);
    return 0;
}
"""


def _pair_model(config: str, planted_bug: bool = False):
    """Build (or reuse) the Verilator lockstep model of a configuration; its executable."""
    import hashlib  # noqa: PLC0415

    from rvmpq.hw.verilog import verilog_text  # noqa: PLC0415
    from rvmpq.sw.tools import (VERILATOR_LINT_FLAGS, VERILATOR_MAKE_FIXES,  # noqa: PLC0415
                                build_root, verilator_build_cached)

    verilog = verilog_text(LockstepPair(planted_bug, **CONFIGS[config]), "lockstep")
    offs = {f"@{k}@": str(MulMode[n].offset) for k, n in
            (("OP", "op"), ("AW", "a_width"), ("BW", "b_width"), ("SA", "a_signed"),
             ("SB", "b_signed"))}
    harness = _HARNESS.replace("@OPERANDS@", ", ".join(f"0x{v:08x}u" for v in _OPERANDS))
    for k, v in offs.items():
        harness = harness.replace(k, v)
    flags = ["--cc", "--exe", "--build", "-j", "2", "-O3", "--x-assign", "fast",
             "--x-initial", "fast", "--top-module", "lockstep", *VERILATOR_LINT_FLAGS,
             "-MAKEFLAGS", " ".join([*VERILATOR_MAKE_FIXES, "OPT_FAST=-O1 OPT_SLOW=-O1"])]
    key = hashlib.sha256("\0".join([verilog, harness, *flags]).encode()).hexdigest()[:12]
    d = build_root() / "sim" / f"simd-lockstep-{config}{'-bug' if planted_bug else ''}-{key}"
    return verilator_build_cached(d, {"lockstep.v": verilog, "lockstep.cpp": harness}, flags,
                                  "Vlockstep")


@pytest.mark.parametrize("config", list(CONFIGS))
def test_lockstep_verilator(config, seed):
    """The lockstep check of :func:`lockstep` on one Verilator model, 300k cycles per seed."""
    import subprocess  # noqa: PLC0415

    exe = _pair_model(config)
    rv32m = int(CONFIGS[config].get("with_rv32m", True))
    r = subprocess.run([str(exe), str(seed), str(VERILATOR_CYCLES), str(rv32m)],
                       capture_output=True, text=True, timeout=600)
    print(r.stdout.strip())
    assert r.returncode == 0 and r.stdout.startswith("OK"), \
        f"{config}, seed {seed}:\n{r.stdout}{r.stderr}"
    stats = dict(kv.split("=") for kv in r.stdout.split()[1:])
    assert int(stats["valid_out"]) > VERILATOR_CYCLES // 3
    assert int(stats["stalls"]) > VERILATOR_CYCLES // 20 and int(stats["resets"]) > 100
    if rv32m:
        assert int(stats["hi_checked"]) > VERILATOR_CYCLES // 10


def test_lockstep_verilator_catches_a_difference():
    """The Verilator lockstep fails, naming the cycle and inputs, on a planted bug."""
    import subprocess  # noqa: PLC0415

    exe = _pair_model("w4", planted_bug=True)
    r = subprocess.run([str(exe), "1", "10000", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and r.stdout.startswith("MISMATCH cycle="), r.stdout + r.stderr
