"""``rvmpq fpga``: the SoC bitstream for a real ECP5 board (ULX3S or OrangeCrab).

::

    rvmpq fpga --board ulx3s                          # ULX3S 85F, mpq core, built-in hello program
    rvmpq fpga --board orangecrab --device 25F --config baseline
    rvmpq fpga --board ulx3s --program build/prog.elf --imem-kib 32 --dmem-kib 64

The design (:class:`FpgaSoC`, wrapped for a board by :class:`FpgaTop`)::

      board clock ──▶ sync domain (GSR reset from the board's button)

      IMEM (EBR, ELF .text) ──▶ Core ◀──▶ DMEM (EBR, ELF .rodata/.data, stack)
                                  │ stores to MMIO 0x2000_0000
                 ┌────────────────┴─────────────────┐
           +0 CONSOLE: byte ─▶ FIFO ─▶ UartTx ─▶ uart TX pin (8N1, 115200 baud)
           +4 EXIT / ecall a7=93: halt, exit code latched onto the LEDs

The memory map is contracts.md section 5 with the FPGA's memory sizes. When the console FIFO is
full, a console store holds the whole core (clock enable) until the UART has taken a byte, so no
output is lost. ``halted`` holds the core in reset until the board's reset button (ULX3S: FIRE1,
OrangeCrab: the user button) restarts the program. Memories are initialised from the ELF in the
bitstream; a restart does not reload ``.data``, so a program meant to be rerun should not depend
on initialised writable globals.

LEDs: ULX3S LED7 = halted, LED6..0 = exit code bits 6..0 (exit 0: only LED7 lit). OrangeCrab RGB
LED: blue while running, green after exit 0, red after a non-zero exit.
The OrangeCrab has no USB-UART: TX is on Feather pin ``1`` (M18), RX (unused) on pin ``0`` (N17).

The build goes through amaranth-boards and the YoWASP tools (``YOSYS``, ``NEXTPNR_ECP5``,
``ECPPACK`` point at the ``yowasp-*`` console scripts; the programmers ``OPENFPGALOADER`` and
``DFU_SUFFIX`` are set to ``true``: nothing is programmed). Everything is built in a scratch
folder and renamed to ``<build>/fpga/<board>/`` at the end (``<build>`` =
:func:`rvmpq.sw.tools.build_root`: ``$RVMPQ_BUILD`` or the repository's ``build/``; bitstream,
nextpnr report, logs, the program, ``fpga.json`` and ``fpga.md``); a failed build leaves its
logs in ``<build>/fpga/.failed-<board>/`` and the previous output untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth import Cat, Elaboratable, EnableInserter, Module, Mux, ResetInserter, Signal
from amaranth.lib import fifo, io, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rvmpq.hw.core.config import CONFIGS, get_config
from rvmpq.hw.core.core import Core, MemMap
from rvmpq.hw.soc import exit_call_watch
from rvmpq.sw.runtime.elf import ElfError, MemoryMap, load_elf
from rvmpq.sw.tools import (BUILD_HELP, ToolNotFound, build_root, ecppack_cmd, nextpnr_ecp5_cmd,
                            yosys_cmd)

__all__ = [
    "BOARDS", "BAUD", "BoardSpec", "FpgaError", "UartTx", "FpgaSoC", "FpgaTop", "ProgramImage",
    "FpgaReport", "DEFAULT_PROGRAM", "ebr_for", "default_memory", "resolve_board",
    "compile_default_program", "load_program", "build_fpga", "add_arguments", "main",
]

#: UART baud rate (8N1).
BAUD = 115200

#: Embedded block RAMs (DP16KD, 18 Kbit = 2 KiB of 32-bit data each) per ECP5 device.
DEVICE_EBR = {"LFE5U-12F": 32, "LFE5U-25F": 56, "LFE5U-45F": 108, "LFE5U-85F": 208}
#: Default (IMEM KiB, DMEM KiB) per device: 64 + 64 KiB (the `rvmpq cc` default map, so programs
#: built by `rvmpq cc` / `rvmpq deploy` run unchanged) where it fits, else the largest powers of
#: two that fit, DMEM first (it holds the stack at the top of the `rvmpq cc` map).
DEFAULT_MEM_KIB = {"LFE5U-12F": (16, 32), "LFE5U-25F": (32, 64), "LFE5U-45F": (64, 64),
                   "LFE5U-85F": (64, 64)}


class FpgaError(ValueError):
    """Bad input for ``rvmpq fpga``: unknown board or device, a program that does not fit."""


@dataclasses.dataclass(frozen=True)
class BoardSpec:
    """An ECP5 board ``rvmpq fpga`` can build for.

    Attributes
    ----------
    name : str
        Board name on the command line.
    platforms : dict[str, str]
        Device suffix (``"85F"``) -> amaranth-boards platform, as ``module:Class``.
    default_device : str
        Device when ``--device`` is not given.
    clk_hz : float
        Board oscillator (the core runs at it).
    reset : str
        Platform resource of the reset button.
    uart_note : str
        Where the UART TX pin is.
    """

    name: str
    platforms: dict
    default_device: str
    clk_hz: float
    reset: str
    uart_note: str

    @property
    def devices(self) -> list[str]:
        """Device suffixes, smallest first."""
        return list(self.platforms)


BOARDS: dict[str, BoardSpec] = {
    "ulx3s": BoardSpec(
        "ulx3s",
        {"12F": "amaranth_boards.ulx3s:ULX3S_12F_Platform",
         "25F": "amaranth_boards.ulx3s:ULX3S_25F_Platform",
         "45F": "amaranth_boards.ulx3s:ULX3S_45F_Platform",
         "85F": "amaranth_boards.ulx3s:ULX3S_85F_Platform"},
        "85F", 25e6, "button_fire", "USB-UART (FTDI, the US1 port)"),
    "orangecrab": BoardSpec(
        "orangecrab",
        {"25F": "amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_25FPlatform",
         "85F": "amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_85FPlatform"},
        "85F", 48e6, "button", "Feather pin 1 (M18) TX, pin 0 (N17) RX, 3.3 V"),
}


def resolve_board(board: str, device: str | None = None) -> tuple[BoardSpec, str, str]:
    """Check ``board`` / ``device`` and return ``(spec, device suffix, ECP5 part)``.

    Raises
    ------
    FpgaError
        Naming the known boards, or the devices of that board.
    """
    spec = BOARDS.get(str(board).lower())
    if spec is None:
        raise FpgaError(f"unknown board {board!r}; allowed: {', '.join(BOARDS)}")
    dev = spec.default_device if device is None else str(device).upper()
    if dev not in spec.platforms:
        raise FpgaError(f"board {spec.name} has no device {device!r}; allowed: "
                        f"{', '.join(spec.devices)} (default {spec.default_device})")
    return spec, dev, f"LFE5U-{dev}"


def ebr_for(imem_kib: int, dmem_kib: int) -> int:
    """DP16KD blocks IMEM and DMEM take (2 KiB of 32-bit words each)."""
    return math.ceil(imem_kib / 2) + math.ceil(dmem_kib / 2)


def default_memory(part: str) -> tuple[int, int]:
    """Default ``(imem_kib, dmem_kib)`` for an ECP5 part such as ``"LFE5U-25F"``."""
    return DEFAULT_MEM_KIB[part]


def _check_kib(name: str, kib) -> int:
    if isinstance(kib, bool) or not isinstance(kib, int) or kib <= 0 or kib & (kib - 1):
        raise FpgaError(f"--{name.replace('_', '-')} {kib!r} must be a power of two KiB "
                        "(1, 2, 4, ..., 64, 128)")
    return kib


def check_memory_fits(part: str, imem_kib: int, dmem_kib: int) -> int:
    """Check that IMEM + DMEM fit the part's block RAM; return the EBR they need.

    The core's register file and the console FIFO go to LUT RAM. Yosys may need fewer EBR
    than this for IMEM: it is a ROM, and bit columns that are 0 in every word are dropped.

    Raises
    ------
    FpgaError
        With the sizes, the EBR needed and the EBR the part has.
    """
    _check_kib("imem_kib", imem_kib)
    _check_kib("dmem_kib", dmem_kib)
    need = ebr_for(imem_kib, dmem_kib)
    have = DEVICE_EBR[part]
    if need > have:
        raise FpgaError(
            f"IMEM {imem_kib} KiB + DMEM {dmem_kib} KiB need {need} EBR but {part} has {have} "
            f"EBR ({have * 2} KiB of 32-bit words); use smaller --imem-kib/--dmem-kib or a "
            "larger --device")
    return need


# --------------------------------------------------------------------------------------------
# gateware

class UartTx(wiring.Component):
    """UART transmitter, 8 data bits, no parity, 1 stop bit, LSB first.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (``round(clk_hz / baud)``), at least 2.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; ``ready`` while the line is idle or in the last cycle of a stop bit
        (back-to-back bytes take exactly 10 bit times each).
    tx : Out(1)
        The serial line (registered, idle high).
    """

    def __init__(self, divisor: int):
        if not isinstance(divisor, int) or divisor < 2:
            self._MustUse__silence = True  # a rejected object is not an unused elaboratable
            raise ValueError(f"UART divisor {divisor!r} must be an integer >= 2")
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        """Amaranth elaboration: the 8N1 transmitter's shift register and bit counter."""
        m = Module()
        busy = Signal()
        shreg = Signal(9)                       # data bits then the stop bit, LSB first
        left = Signal(range(10))                # bits still to put on the line after this one
        cnt = Signal(range(self.divisor))       # cycles left in the current bit
        done = Signal()                         # last cycle of the stop bit
        m.d.comb += [done.eq(busy & (cnt == 0) & (left == 0)),
                     self.i.ready.eq(~busy | done)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [busy.eq(1), self.tx.eq(0), shreg.eq(Cat(self.i.payload, 1)),
                         left.eq(9), cnt.eq(self.divisor - 1)]
        with m.Elif(done):
            m.d.sync += busy.eq(0)
        with m.Elif(busy & (cnt != 0)):
            m.d.sync += cnt.eq(cnt - 1)
        with m.Elif(busy):
            m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg >> 1), left.eq(left - 1),
                         cnt.eq(self.divisor - 1)]
        return m


@dataclasses.dataclass
class ProgramImage:
    """A program laid out for the FPGA memories.

    Attributes
    ----------
    imem, dmem : list[int]
        Initial 32-bit words from word 0 of IMEM / DMEM (shorter than the memories).
    imem_bytes, dmem_bytes : int
        Bytes of IMEM / DMEM the ELF occupies (``.bss`` included; the stack is not).
    path : str
        The ELF.
    """

    imem: list
    dmem: list
    imem_bytes: int
    dmem_bytes: int
    path: str = "<built-in>"


class FpgaSoC(wiring.Component):
    """The board-independent FPGA SoC: core, ELF-initialised IMEM/DMEM, UART console, exit.

    Parameters
    ----------
    config : str
        Core configuration, ``"mpq"`` or ``"baseline"``.
    imem_kib, dmem_kib : int
        Memory sizes (powers of two).
    program : ProgramImage, optional
        Initial memory contents (default: zeros).
    clk_hz : float
        Clock frequency; sets the UART divisor.
    baud : int
        UART baud rate (default :data:`BAUD`).
    fifo_depth : int
        Console bytes buffered before a console store stalls the core.

    Members
    -------
    uart_tx : Out(1)
        UART TX line (idle high).
    halted : Out(1)
        Sticky: the program exited (EXIT store or ``ecall`` with a7 = 93).
    exit_code : Out(32)
        The exit code (valid while ``halted``).
    """

    def __init__(self, config: str = "mpq", imem_kib: int = 64, dmem_kib: int = 64,
                 program: ProgramImage | None = None, clk_hz: float = 25e6, baud: int = BAUD,
                 fifo_depth: int = 16):
        try:
            self.core_config = get_config(config)
            self.imem_kib = _check_kib("imem_kib", imem_kib)
            self.dmem_kib = _check_kib("dmem_kib", dmem_kib)
            self.program = program or ProgramImage([], [], 0, 0)
            if len(self.program.imem) > imem_kib << 8 or len(self.program.dmem) > dmem_kib << 8:
                raise FpgaError(
                    f"program image ({len(self.program.imem) * 4} bytes IMEM, "
                    f"{len(self.program.dmem) * 4} bytes DMEM) larger than the memories "
                    f"({imem_kib} KiB, {dmem_kib} KiB)")
        except ValueError:
            self._MustUse__silence = True  # a rejected object is not an unused elaboratable
            raise
        self.memmap = MemMap(imem_size=imem_kib << 10, dmem_size=dmem_kib << 10)
        self.clk_hz, self.baud = clk_hz, baud
        self.divisor = round(clk_hz / baud)
        self.fifo_depth = fifo_depth
        super().__init__({"uart_tx": Out(1, init=1), "halted": Out(1), "exit_code": Out(32)})

    def elaborate(self, platform):
        """Amaranth elaboration: the core, the block-RAM memories, the console FIFO and UART, and
        the halt/exit logic."""
        m = Module()
        mm = self.memmap

        # ---- console path: FIFO then UART ----
        m.submodules.console_fifo = cfifo = fifo.SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        m.submodules.uart = uart = UartTx(self.divisor)
        wiring.connect(m, cfifo.r_stream, uart.i)
        m.d.comb += self.uart_tx.eq(uart.tx)

        # ---- core: held in reset once halted, frozen while a console store waits ----
        core = Core(self.core_config, memmap=mm)
        stall = Signal()
        m.submodules.core = ResetInserter(self.halted)(EnableInserter(~stall)(core))

        imem = Memory(shape=32, depth=mm.imem_size // 4, init=self.program.imem)
        dmem = Memory(shape=32, depth=mm.dmem_size // 4, init=self.program.dmem)
        m.submodules.imem, m.submodules.dmem = imem, dmem
        ir = imem.read_port()
        dw = dmem.write_port(granularity=8)
        dr = dmem.read_port(transparent_for=(dw,))

        live = ~self.halted
        st_dmem = MemMap.in_range(core.m_dmem_addr, mm.dmem_base, mm.dmem_size)
        st_mmio = MemMap.in_range(core.m_dmem_addr, mm.mmio_base, mm.mmio_size)
        store = live & st_mmio & (core.m_dmem_wmask != 0)
        to_console = store & (core.m_dmem_addr[2] == 0)
        m.d.comb += [
            stall.eq(to_console & ~cfifo.w_rdy),
            cfifo.w_en.eq(to_console & cfifo.w_rdy),
            cfifo.w_data.eq(core.m_dmem_wdata[:8]),
            # read data holds while the core is frozen, as after a cycle with en = 0
            ir.addr.eq(core.f_imem_addr[2:]), ir.en.eq(core.f_imem_en & ~stall),
            core.d_imem_data.eq(ir.data),
            dr.addr.eq(core.x_dmem_addr[2:]), dr.en.eq(core.x_dmem_en & ~stall),
            core.m_dmem_rdata.eq(dr.data),
            dw.addr.eq(core.m_dmem_addr[2:]), dw.data.eq(core.m_dmem_wdata),
            dw.en.eq(Mux(live & st_dmem & ~stall, core.m_dmem_wmask, 0)),
        ]

        # ---- exit: EXIT store or ecall a7 = 93 (shadow a0/a7 from the retire port) ----
        a0, _, ecall_exit = exit_call_watch(m, core, ~stall)
        with m.If(~self.halted):
            with m.If(store & (core.m_dmem_addr[2] == 1)):
                m.d.sync += [self.halted.eq(1), self.exit_code.eq(core.m_dmem_wdata)]
            with m.Elif(ecall_exit):
                m.d.sync += [self.halted.eq(1), self.exit_code.eq(a0)]
        return m


class FpgaTop(Elaboratable):
    """Board wrapper of :class:`FpgaSoC`: UART pin, LEDs (the platform provides clock/reset).

    A platform top has no ports of its own, so it is a plain ``Elaboratable``.

    Parameters
    ----------
    soc : FpgaSoC
        The SoC to place on the board.
    board : str
        ``"ulx3s"`` or ``"orangecrab"`` (selects the LED mapping).
    """

    def __init__(self, soc: FpgaSoC, board: str):
        self.soc, self.board = soc, board

    def elaborate(self, platform):
        """Amaranth elaboration: the SoC with the board's UART TX pin and LEDs requested from
        ``platform``."""
        m = Module()
        m.submodules.soc = soc = self.soc
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += tx.o.eq(soc.uart_tx)
        if self.board == "ulx3s":
            for i in range(8):
                led = io.Buffer("o", platform.request("led", i, dir="-"))
                m.submodules[f"led{i}"] = led
                m.d.comb += led.o.eq(soc.halted & (soc.exit_code[i] if i < 7 else 1))
        else:
            rgb = platform.request("rgb_led", 0, dir="-")
            ok = soc.exit_code == 0
            for name, value in (("r", soc.halted & ~ok), ("g", soc.halted & ok),
                                ("b", ~soc.halted)):
                m.submodules[f"led_{name}"] = led = io.Buffer("o", getattr(rgb, name))
                m.d.comb += led.o.eq(value)
        return m


# --------------------------------------------------------------------------------------------
# the program

#: The built-in program: prints over the console and exits 0 when its checks pass.
DEFAULT_PROGRAM = r"""/* rvmpq fpga built-in program: prints on the UART, exits 0 on PASS */
#include <stdint.h>
#if RVMPQ_CONFIG_MPQ
#include "rvmpq_isa.h"
#endif
static void put(const char *s) { while (*s) *(volatile uint8_t *)0x20000000 = (uint8_t)*s++; }
int main(void) {
    volatile uint32_t a = 1234, b = 5678;
    int ok = a * b == 7006652u;
#if RVMPQ_CONFIG_MPQ
    put("rvmpq: hello from the mpq core\n");
    /* four INT8 lanes: (1,2,3,4) . (5,6,7,8) = 70 */
    uint32_t acc = mpq_dot_w8_ss(0, 0x04030201u, 0x08070605u);
    ok = ok && acc == 70;
    put(acc == 70 ? "dot ok\n" : "dot WRONG\n");
#else
    put("rvmpq: hello from the baseline core\n");
#endif
    put(ok ? "PASS\n" : "FAIL\n");
    return ok ? 0 : 1;
}
"""


def _fpga_map(imem_kib: int, dmem_kib: int) -> MemoryMap:
    return MemoryMap(imem_size=imem_kib << 10, dmem_size=dmem_kib << 10)


def compile_default_program(config: str, imem_kib: int, dmem_kib: int, out: Path) -> Path:
    """Compile :data:`DEFAULT_PROGRAM` for ``config`` and the FPGA memory map into ``out``."""
    from rvmpq.sw.runtime.cc import compile_program
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_name("fpga_hello.c")
    src.write_text(DEFAULT_PROGRAM)
    return compile_program([src], out, config=config, opt="-O2",
                           memory_map_=_fpga_map(imem_kib, dmem_kib))


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def load_program(elf: str | Path, imem_kib: int, dmem_kib: int) -> ProgramImage:
    """Read an ELF and lay it out for IMEM / DMEM of the given sizes.

    Raises
    ------
    FileNotFoundError
        No such file.
    FpgaError
        Not a RISC-V ELF32 program, a segment outside IMEM/DMEM, a program larger than a
        memory (says by how much), or a stack linked above the end of the FPGA's DMEM.
    """
    mm = _fpga_map(imem_kib, dmem_kib)
    try:
        img = load_elf(elf, memory_map=None)
    except ElfError as exc:
        raise FpgaError(str(exc)) from None
    ends = {"imem": mm.imem_base, "dmem": mm.dmem_base}
    for seg in img.segments:
        if mm.imem_base <= seg.addr < mm.dmem_base:
            region = "imem"
        elif mm.dmem_base <= seg.addr < mm.mmio_base:
            region = "dmem"
        else:
            raise FpgaError(f"{elf}: segment at 0x{seg.addr:08x} is neither in IMEM "
                            f"(0x{mm.imem_base:08x}) nor in DMEM (0x{mm.dmem_base:08x})")
        ends[region] = max(ends[region], seg.addr + len(seg.data))
    imem_bytes, dmem_bytes = ends["imem"] - mm.imem_base, ends["dmem"] - mm.dmem_base
    for name, used, kib in (("IMEM", imem_bytes, imem_kib), ("DMEM", dmem_bytes, dmem_kib)):
        if used > kib << 10:
            need = 1 << max(0, math.ceil(math.log2(used / 1024)))
            raise FpgaError(
                f"{elf}: the program needs {used} bytes ({_kib(used)}) of {name} but the FPGA "
                f"{name} is {kib} KiB: {used - (kib << 10)} bytes ({_kib(used - (kib << 10))}) "
                f"too large; use --{name.lower()}-kib {need} (if the device has the block RAM) "
                "or shrink the program")
    stack = img.symbols.get("__stack_top")
    if stack is not None and stack > mm.dmem_base + mm.dmem_size:
        linked = (stack - mm.dmem_base) >> 10
        raise FpgaError(
            f"{elf}: linked for a {linked} KiB DMEM (stack top 0x{stack:08x}) but the FPGA DMEM "
            f"is {dmem_kib} KiB (ends at 0x{mm.dmem_base + mm.dmem_size:08x}); use --dmem-kib "
            f"{linked} or relink for the FPGA map")
    words = img.words()
    imem = [0] * (imem_bytes + 3 >> 2)
    dmem = [0] * (dmem_bytes + 3 >> 2)
    for addr, w in words.items():
        if addr < mm.dmem_base:
            imem[(addr - mm.imem_base) >> 2] = w
        else:
            dmem[(addr - mm.dmem_base) >> 2] = w
    return ProgramImage(imem, dmem, imem_bytes, dmem_bytes, str(elf))


# --------------------------------------------------------------------------------------------
# build

@dataclasses.dataclass
class FpgaReport:
    """Figures of one bitstream build (``fpga.json``).

    Attributes
    ----------
    board, device, part, config : str
        Board, device suffix, ECP5 part, core configuration.
    clk_mhz : float
        The clock constraint (the board oscillator).
    fmax_mhz : float
        Fmax nextpnr achieved for it.
    timing_met : bool
        ``fmax_mhz >= clk_mhz``.
    utilization : dict[str, dict]
        ``LUT4``, ``FF``, ``EBR``, ``DSP`` (and the raw nextpnr cells): ``{"used", "available"}``.
    imem_kib, dmem_kib : int
        Memory sizes.
    program : str
        The ELF (``<built-in>`` for the default program).
    program_imem_bytes, program_dmem_bytes : int
        What it occupies.
    uart_baud, uart_divisor : int
        The console UART.
    seconds : dict[str, float]
        Wall time per step and in total.
    bitstream : str
        File name of the bitstream in the output folder.
    """

    board: str
    device: str
    part: str
    config: str
    clk_mhz: float
    fmax_mhz: float
    timing_met: bool
    utilization: dict
    imem_kib: int
    dmem_kib: int
    program: str
    program_imem_bytes: int
    program_dmem_bytes: int
    uart_baud: int
    uart_divisor: int
    seconds: dict
    bitstream: str

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    def markdown(self) -> str:
        """The report as Markdown (``fpga.md``)."""
        u = self.utilization
        rows = []
        for key in ("LUT4", "FF", "EBR", "DSP"):
            used, avail = u[key]["used"], u[key]["available"]
            rows.append(f"| {key} | {used} | {avail} | {100 * used / max(avail, 1):.1f} % |")
        s = self.seconds
        return "\n".join([
            f"# rvmpq on {self.board} ({self.part}), {self.config} core",
            "",
            f"Bitstream: `{self.bitstream}`. Clock: {self.clk_mhz:g} MHz (board oscillator); "
            f"Fmax {self.fmax_mhz:.2f} MHz: timing {'met' if self.timing_met else 'NOT met'}.",
            "",
            "LUT4 counts the TRELLIS_COMB slots (logic, carry halves, LUT RAM); EBR the DP16KD "
            "block RAMs.",
            "",
            "| resource | used | available | use |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            f"Memories: IMEM {self.imem_kib} KiB, DMEM {self.dmem_kib} KiB (block RAM, initialised "
            f"from the program). Program `{self.program}`: {self.program_imem_bytes} bytes IMEM, "
            f"{self.program_dmem_bytes} bytes DMEM.",
            f"Console: UART 8N1 {self.uart_baud} baud (divisor {self.uart_divisor}).",
            "",
            f"Build time: {s.get('total', 0):.0f} s (elaborate {s.get('elaborate', 0):.0f} s, "
            f"yosys {s.get('yosys', 0):.0f} s, nextpnr {s.get('nextpnr', 0):.0f} s, ecppack "
            f"{s.get('ecppack', 0):.0f} s).",
            "",
        ])


#: Tool name in amaranth's build plan -> (environment variable, command finder).
_TOOLS = {"yosys": ("YOSYS", yosys_cmd), "nextpnr-ecp5": ("NEXTPNR_ECP5", nextpnr_ecp5_cmd),
          "ecppack": ("ECPPACK", ecppack_cmd)}


def tool_env() -> dict[str, str]:
    """Environment for the amaranth ECP5 build: YoWASP tools, no-op programmers.

    Raises
    ------
    rvmpq.sw.tools.ToolNotFound
        Naming the PyPI package that provides a missing tool.
    """
    env = dict(os.environ)
    for var, finder in _TOOLS.values():
        env[var] = finder()[0]
    env["OPENFPGALOADER"] = "true"
    env["DFU_SUFFIX"] = "true"
    env.pop("AMARANTH_ENV_TRELLIS", None)
    return env


def _platform(spec: BoardSpec, dev: str):
    import importlib
    from amaranth.build import Attrs
    from amaranth_boards.resources import UARTResource
    modname, cls = spec.platforms[dev].split(":")
    base = getattr(importlib.import_module(modname), cls)
    plat = type(f"Rvmpq{cls}", (base,), {"default_rst": spec.reset})()
    if spec.name == "orangecrab":
        plat.add_resources([UARTResource(0, rx="0", tx="1", conn=("io", 0),
                                         attrs=Attrs(IO_TYPE="LVCMOS33"))])
    return plat


def _utilization(rep: dict) -> dict:
    util = rep.get("utilization", {})

    def get(name):
        d = util.get(name, {})
        return {"used": int(d.get("used", 0)), "available": int(d.get("available", 0))}

    out = {"LUT4": get("TRELLIS_COMB"), "FF": get("TRELLIS_FF"), "EBR": get("DP16KD"),
           "DSP": get("MULT18X18D")}
    out["cells"] = {k: get(k) for k in sorted(util) if get(k)["used"]}
    return out


def _run_step(label: str, cmd: list[str], cwd: Path, env: dict, log: Path, say,
              heartbeat: float = 30.0) -> float:
    """Run one tool, printing a line with the last log line every ``heartbeat`` seconds."""
    t0 = time.monotonic()
    say(f"[fpga] {label} ...")
    with open(cwd / f"{label}.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        last = t0
        while True:
            try:
                rc = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now - last >= heartbeat:
                last = now
                tail = ""
                if log.exists():
                    lines = [ln for ln in log.read_text(errors="replace").splitlines()
                             if ln.strip()]
                    tail = lines[-1][:100] if lines else ""
                say(f"[fpga]   {label}: {now - t0:5.0f} s  {tail}")
    secs = time.monotonic() - t0
    if rc != 0:
        text = (cwd / f"{label}.out").read_text(errors="replace")
        if log.exists():
            text += log.read_text(errors="replace")
        raise RuntimeError(f"{label} failed (exit {rc}):\n{text[-2500:]}")
    say(f"[fpga] {label} done in {secs:.0f} s")
    return secs


def _print_flush(line: str) -> None:
    print(line, flush=True)


def build_fpga(board: str, device: str | None = None, config: str = "mpq",
               program: str | Path | None = None, imem_kib: int | None = None,
               dmem_kib: int | None = None, out: str | Path | None = None, seed: int = 1,
               progress=_print_flush) -> FpgaReport:
    """Build the SoC bitstream for a board; the library call behind ``rvmpq fpga``.

    Parameters
    ----------
    board : str
        ``"ulx3s"`` or ``"orangecrab"``.
    device : str, optional
        Device suffix (ULX3S ``12F|25F|45F|85F``, OrangeCrab ``25F|85F``; default 85F).
    config : str
        Core configuration, ``"mpq"`` (default) or ``"baseline"``.
    program : path, optional
        ELF to put into the memories (default: the built-in :data:`DEFAULT_PROGRAM`, compiled
        for this configuration and memory map).
    imem_kib, dmem_kib : int, optional
        Memory sizes (default: :data:`DEFAULT_MEM_KIB` of the part).
    out : path, optional
        Output folder (default ``build_root() / "fpga" / <board>``); replaced only when the
        build succeeds.
    seed : int
        nextpnr placement seed.
    progress : callable or None
        Receives progress lines (default: print them, flushed).

    Returns
    -------
    FpgaReport
        Also written to ``<out>/fpga.json`` and ``<out>/fpga.md``.

    Raises
    ------
    FpgaError
        Unknown board/device/config, memories larger than the block RAM, a program that does
        not fit.
    rvmpq.sw.tools.ToolNotFound
        A tool is missing (the message names its PyPI package).
    RuntimeError
        A tool failed; the message holds the end of its log and where the logs are.
    """
    say = progress or (lambda _line: None)
    t_start = time.monotonic()
    spec, dev, part = resolve_board(board, device)
    if config not in CONFIGS:
        raise FpgaError(f"unknown core configuration {config!r}; allowed: {', '.join(CONFIGS)}")
    d_imem, d_dmem = default_memory(part)
    imem_kib = d_imem if imem_kib is None else imem_kib
    dmem_kib = d_dmem if dmem_kib is None else dmem_kib
    check_memory_fits(part, imem_kib, dmem_kib)
    if program is not None and not Path(program).is_file():
        raise FileNotFoundError(f"{program}: no such ELF file (--program)")
    env = tool_env()  # fail early on a missing tool

    final = Path(out) if out is not None else build_root() / "fpga" / spec.name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    work = tmp / "work"
    work.mkdir()
    failed = final.parent / f".failed-{final.name}"
    try:
        seconds = {}
        t0 = time.monotonic()
        if program is None:
            say(f"[fpga] compiling the built-in program for {config} "
                f"(IMEM {imem_kib} KiB, DMEM {dmem_kib} KiB)")
            elf = compile_default_program(config, imem_kib, dmem_kib, tmp / "program.elf")
            image = load_program(elf, imem_kib, dmem_kib)
            image.path = "<built-in>"
        else:
            image = load_program(program, imem_kib, dmem_kib)
            shutil.copyfile(program, tmp / "program.elf")
        say(f"[fpga] {spec.name} {part}, {config} core, {spec.clk_hz / 1e6:g} MHz, IMEM "
            f"{imem_kib} KiB + DMEM {dmem_kib} KiB ({ebr_for(imem_kib, dmem_kib)} of "
            f"{DEVICE_EBR[part]} EBR); program {image.imem_bytes} + {image.dmem_bytes} bytes")

        soc = FpgaSoC(config, imem_kib, dmem_kib, image, clk_hz=spec.clk_hz)
        plat = _platform(spec, dev)
        say("[fpga] elaborating (Amaranth -> RTLIL)")
        plan = plat.build(FpgaTop(soc, spec.name), name="top", do_build=False,
                          nextpnr_opts=f"--report report.json --timing-allow-fail --seed {seed}")
        plan.extract(str(work))
        seconds["elaborate"] = round(time.monotonic() - t0, 1)

        commands = json.loads((work / "build_top.json").read_text())["commands"]
        logs = {"yosys": work / "top.rpt", "nextpnr-ecp5": work / "top.tim"}
        for cmd in commands:
            tool = cmd[0]
            if tool not in _TOOLS:
                continue  # programmer post-processing (dfu-suffix): not needed for the .bit
            full = [env[_TOOLS[tool][0]], *cmd[1:]]
            key = tool.split("-")[0]
            seconds[key] = round(_run_step(key, full, work, env, logs.get(tool, work / "x"),
                                           say), 1)

        rep = json.loads((work / "report.json").read_text())
        fmax = [(v["achieved"], v.get("constraint", spec.clk_hz / 1e6))
                for v in rep.get("fmax", {}).values()]
        if not fmax:
            raise RuntimeError(f"nextpnr report {work / 'report.json'} has no Fmax entry")
        achieved, _constraint = min(fmax)
        bit = f"rvmpq_{spec.name}_{dev}_{config}.bit"
        shutil.copyfile(work / "top.bit", tmp / bit)
        shutil.copyfile(work / "report.json", tmp / "nextpnr_report.json")
        shutil.copyfile(work / "top.rpt", tmp / "yosys.log")
        shutil.copyfile(work / "top.tim", tmp / "nextpnr.log")
        shutil.copyfile(work / "top.lpf", tmp / "top.lpf")
        seconds["total"] = round(time.monotonic() - t_start, 1)
        clk_mhz = spec.clk_hz / 1e6
        report = FpgaReport(
            board=spec.name, device=dev, part=part, config=config, clk_mhz=clk_mhz,
            fmax_mhz=round(achieved, 2), timing_met=achieved >= clk_mhz,
            utilization=_utilization(rep), imem_kib=imem_kib, dmem_kib=dmem_kib,
            program=image.path, program_imem_bytes=image.imem_bytes,
            program_dmem_bytes=image.dmem_bytes, uart_baud=BAUD, uart_divisor=soc.divisor,
            seconds=seconds, bitstream=bit)
        (tmp / "fpga.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        (tmp / "fpga.md").write_text(report.markdown())
        shutil.rmtree(work)
    except BaseException as exc:
        if failed.exists():
            shutil.rmtree(failed)
        if work.exists() and not isinstance(exc, (FpgaError, KeyboardInterrupt)):
            os.replace(work, failed)
            if isinstance(exc, RuntimeError):
                exc.args = (f"{exc.args[0]}\n(logs kept in {failed})",)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # swap the new folder in
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if failed.exists():
        shutil.rmtree(failed, ignore_errors=True)
    u = report.utilization
    say(f"[fpga] {final / bit}: {u['LUT4']['used']}/{u['LUT4']['available']} LUT4, "
        f"{u['FF']['used']} FF, {u['EBR']['used']}/{u['EBR']['available']} EBR, "
        f"{u['DSP']['used']} DSP; Fmax {report.fmax_mhz} MHz vs {clk_mhz:g} MHz clock "
        f"({'met' if report.timing_met else 'NOT MET'}); {seconds['total']:.0f} s")
    return report


# --------------------------------------------------------------------------------------------
# CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``rvmpq fpga`` options."""
    parser.add_argument("--board", required=True, metavar="BOARD",
                        help=f"target board: {' | '.join(BOARDS)}")
    parser.add_argument("--device", default=None, metavar="SIZE",
                        help="FPGA size: ulx3s 12F|25F|45F|85F, orangecrab 25F|85F (default 85F)")
    parser.add_argument("--config", default="mpq", metavar="CONFIG",
                        help=f"core configuration: {' | '.join(CONFIGS)} (default mpq)")
    parser.add_argument("--program", type=Path, default=None, metavar="PROG.elf",
                        help="program for the block RAM (default: a built-in hello program)")
    parser.add_argument("--imem-kib", type=int, default=None, metavar="KIB",
                        help="IMEM size in KiB (default 64; 32 on 25F, 16 on 12F)")
    parser.add_argument("--dmem-kib", type=int, default=None, metavar="KIB",
                        help="DMEM size in KiB (default 64; 32 on 12F)")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help=f"output folder (default: <build>/fpga/<board>, {BUILD_HELP})")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr seed (default 1)")


def main(args: argparse.Namespace) -> int:
    """Run ``rvmpq fpga``; returns the process exit status (0 built, 2 bad input, 1 a missing
    tool or a failed build)."""
    try:
        build_fpga(args.board, args.device, args.config, args.program, args.imem_kib,
                   args.dmem_kib, args.out, seed=args.seed)
    except (FpgaError, FileNotFoundError, ToolNotFound) as exc:
        print(f"rvmpq fpga: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ToolNotFound) else 2
    except RuntimeError as exc:
        print(f"rvmpq fpga: build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(prog="rvmpq fpga")
    add_arguments(p)
    sys.exit(main(p.parse_args()))
