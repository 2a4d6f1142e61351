"""CoreSynthTop (hw/core/synth_top.py): the synthesis wrapper loads and runs a program.

Amaranth simulation of both configurations: a hand-encoded program is shifted in byte by byte
through the loader, then prints 'A' and the low byte of 0x41 * 0x41 (a MUL, stored to DMEM and
loaded back) on the console and halts through EXIT. Also checks the Verilog entry point and the
synth-flow provider hook.
"""

import pytest
from amaranth.sim import Simulator

from rvmpq.hw.core.synth_top import TOP_NAME, CoreSynthTop, core_synth_verilog, synth_designs


def _i(op, rd, f3, rs1, imm):
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op


def _s(f3, rs1, rs2, imm):
    return (((imm >> 5) & 0x7F) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | \
        ((imm & 0x1F) << 7) | 0x23


def _u(op, rd, imm20):
    return (imm20 << 12) | (rd << 7) | op


def _r(f7, rs2, rs1, f3, rd):
    return (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | 0x33


T0, T1, T2, T3, T4 = 5, 6, 7, 28, 29
PROGRAM = [
    _u(0x37, T0, 0x20000),          # lui  t0, 0x20000      MMIO
    _i(0x13, T1, 0, 0, 0x41),       # addi t1, x0, 'A'
    _s(2, T0, T1, 0),               # sw   t1, 0(t0)        console 'A'
    _r(1, T1, T1, 0, T2),           # mul  t2, t1, t1       0x1081
    _u(0x37, T3, 0x10000),          # lui  t3, 0x10000      DMEM
    _s(2, T3, T2, 8),               # sw   t2, 8(t3)
    _i(0x03, T4, 2, T3, 8),         # lw   t4, 8(t3)
    _s(0, T0, T4, 0),               # sb   t4, 0(t0)        console 0x81
    _s(2, T0, T4, 4),               # sw   t4, 4(t0)        exit
    0x0000006F,                     # j    .
]


@pytest.mark.parametrize("config", ["baseline", "mpq"])
def test_synth_top_runs_program(config):
    dut = CoreSynthTop(config, mem_kib=1)
    console = []

    async def bench(ctx):
        ctx.set(dut.load_en, 1)
        await ctx.tick().repeat(3)
        for word in PROGRAM:
            for k in range(4):
                ctx.set(dut.load_byte, (word >> (8 * k)) & 0xFF)
                ctx.set(dut.load_strobe, 1)
                await ctx.tick()
        ctx.set(dut.load_strobe, 0)
        await ctx.tick().repeat(3)
        ctx.set(dut.load_en, 0)
        traces = 0
        for _ in range(300):
            await ctx.tick()
            if ctx.get(dut.console_valid):
                console.append(ctx.get(dut.console_data))
            traces += ctx.get(dut.trace_valid)
            if ctx.get(dut.halted):
                break
        assert ctx.get(dut.halted), f"no EXIT store after 300 cycles; console {console}"
        # the 8 instructions before the EXIT store retire (it halts the core from M)
        assert traces >= 7, f"only {traces} retirements traced"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert console == [0x41, 0x81], f"console bytes {console}, expected [0x41, 0x81]"


def test_synth_top_rejects_bad_mem_size():
    with pytest.raises(ValueError, match="power of two"):
        CoreSynthTop("mpq", mem_kib=3)
    with pytest.raises(ValueError, match="baseline"):
        CoreSynthTop("nonesuch")


def test_synth_top_verilog_and_designs():
    text = core_synth_verilog("baseline", mem_kib=1)
    assert f"module {TOP_NAME}(" in text
    for port in ("load_byte", "console_data", "trace"):
        assert port in text
    specs = synth_designs()
    assert set(specs) == {"core-baseline", "core-mpq"}
    assert specs["core-mpq"].top == TOP_NAME and not specs["core-mpq"].flat_ports
