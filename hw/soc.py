"""Simulation SoC: the core, IMEM, DMEM, console/exit MMIO and a host load port.

Contract: docs/contracts.md section 5 (Verilog top module ``rvmpq_soc``, flat ports).

Memory map::

    0x0000_0000  IMEM  (imem_kib KiB, fetch only; written through the host port)
    0x1000_0000  DMEM  (dmem_kib KiB, loads and stores)
    0x2000_0000  MMIO  +0 CONSOLE (store: print the low byte), +4 EXIT (store: halt, exit code)

Loads outside DMEM and stores outside DMEM/MMIO raise access faults in the core.

Halting: ``halted`` is sticky until ``rst`` or ``host_en``. It is set by a store to EXIT
(exit code = the stored word) or by an ``ecall`` with a7 = 93, seen on the retire port with the
SoC's shadow copies of a0/a7 (exit code = a0). While ``host_en`` or ``halted`` is high the core
is held in reset.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from amaranth import Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .core.config import get_config
from .core.core import Core, MemMap
from .simd import SimdMulUnit

__all__ = ["SimSoC", "soc_memory_map", "write_soc_verilog", "ECALL_EXIT", "TOP_NAME",
           "exit_call_watch"]

#: ``a7`` value of the exit ecall (newlib / riscv-tests convention).
ECALL_EXIT = 93
#: Verilog top-module name.
TOP_NAME = "rvmpq_soc"
_ECALL = 0x00000073


def exit_call_watch(m: Module, core, enable=1):
    """Watch ``core``'s retire port for the exit call (``ecall`` with a7 =
    :data:`ECALL_EXIT`): shadow copies of a0 and a7, updated from retiring instructions while
    ``enable``, and the condition that the instruction retiring now is that call.

    Returns
    -------
    (Signal(32), Signal(32), Value)
        ``a0`` (the exit code), ``a7`` and ``ecall_exit``. A caller may reset the shadows with
        later ``m.d.sync`` statements.
    """
    a0 = Signal(32)
    a7 = Signal(32)
    with m.If(core.retire_valid & ~core.retire_trap & enable):
        with m.If(core.retire_rd == 10):
            m.d.sync += a0.eq(core.retire_wdata)
        with m.If(core.retire_rd == 17):
            m.d.sync += a7.eq(core.retire_wdata)
    ecall_exit = (core.retire_valid & core.retire_trap & (core.retire_insn == _ECALL) &
                  (a7 == ECALL_EXIT))
    return a0, a7, ecall_exit


class SimSoC(wiring.Component):
    """The simulation SoC (contracts.md section 5).

    Parameters
    ----------
    config : str
        Core configuration: ``"mpq"`` (default) or ``"baseline"``.
    imem_kib, dmem_kib : int
        Memory sizes in KiB (powers of two).
    mul_unit : callable, optional
        Multiplier factory passed to :class:`~rvmpq.hw.core.core.Core` (test benches only).
    simd_impl : {"tree", "words"}
        Description of the SIMD unit in configurations that have it
        (:class:`~rvmpq.hw.simd.SimdMulUnit` ``impl``): ``"tree"`` (default, the hardware) or
        ``"words"`` (word-level, equal results and timing, much faster to simulate; see
        docs/runner.md). Ignored by configurations without the SIMD unit and when
        ``mul_unit`` is given.

    Members
    -------
    host_en : In(1)
        1: the core is held in reset and the host port owns the memories.
    host_we : In(1)
        Write ``host_wdata`` at ``host_addr``.
    host_addr : In(32)
        Word-aligned byte address in IMEM or DMEM.
    host_wdata : In(32)
    host_rdata : Out(32)
        Word at the ``host_addr`` of the previous cycle.
    console_valid : Out(1)
    console_data : Out(8)
        A byte written to CONSOLE.
    halted : Out(1)
    exit_code : Out(32)
    retire_valid, retire_pc, retire_insn, retire_rd, retire_wdata, retire_trap : Out
        The core's retire trace.
    """

    def __init__(self, config: str = "mpq", imem_kib: int = 64, dmem_kib: int = 64,
                 mul_unit=None, simd_impl: str = "tree"):
        self.core_config = get_config(config)
        if simd_impl not in SimdMulUnit.IMPLS:
            raise ValueError(f"simd_impl = {simd_impl!r}; choose one of {SimdMulUnit.IMPLS}")
        if mul_unit is None and simd_impl != "tree" and self.core_config.mul_impl == "simd":
            mul_unit = functools.partial(SimdMulUnit, impl=simd_impl)
        self.simd_impl = simd_impl
        for name, kib in (("imem_kib", imem_kib), ("dmem_kib", dmem_kib)):
            if not isinstance(kib, int) or kib <= 0 or kib & (kib - 1):
                raise ValueError(f"{name} = {kib!r} must be a power of two (e.g. 16, 64)")
        self.imem_kib, self.dmem_kib = imem_kib, dmem_kib
        self.memmap = MemMap(imem_size=imem_kib << 10, dmem_size=dmem_kib << 10)
        self._mul_unit = mul_unit
        super().__init__({
            "host_en": In(1), "host_we": In(1), "host_addr": In(32), "host_wdata": In(32),
            "host_rdata": Out(32),
            "console_valid": Out(1), "console_data": Out(8),
            "halted": Out(1), "exit_code": Out(32),
            "retire_valid": Out(1), "retire_pc": Out(32), "retire_insn": Out(32),
            "retire_rd": Out(5), "retire_wdata": Out(32), "retire_trap": Out(1),
        })

    def elaborate(self, platform):
        """Amaranth elaboration: the core, IMEM, DMEM, the host port, console/exit MMIO and the
        exit-ecall watch; ``platform`` is unused."""
        m = Module()
        mm = self.memmap

        core = Core(self.core_config, memmap=mm, mul_unit=self._mul_unit)
        m.submodules.core = ResetInserter(self.host_en | self.halted)(core)

        imem = Memory(shape=32, depth=mm.imem_size // 4, init=[])
        dmem = Memory(shape=32, depth=mm.dmem_size // 4, init=[])
        m.submodules.imem = imem
        m.submodules.dmem = dmem
        iw = imem.write_port()
        ir = imem.read_port()
        dw = dmem.write_port(granularity=8)
        dr = dmem.read_port(transparent_for=(dw,))

        host_imem = MemMap.in_range(self.host_addr, mm.imem_base, mm.imem_size)
        host_dmem = MemMap.in_range(self.host_addr, mm.dmem_base, mm.dmem_size)
        live = ~self.host_en & ~self.halted

        # ---- IMEM: fetch port, host port ----
        m.d.comb += [
            ir.addr.eq(Mux(self.host_en, self.host_addr[2:], core.f_imem_addr[2:])),
            ir.en.eq(self.host_en | core.f_imem_en),
            core.d_imem_data.eq(ir.data),
            iw.addr.eq(self.host_addr[2:]),
            iw.data.eq(self.host_wdata),
            iw.en.eq(self.host_en & self.host_we & host_imem),
        ]

        # ---- DMEM: load port (X), store port (M), host port ----
        st_dmem = MemMap.in_range(core.m_dmem_addr, mm.dmem_base, mm.dmem_size)
        st_mmio = MemMap.in_range(core.m_dmem_addr, mm.mmio_base, mm.mmio_size)
        m.d.comb += [
            dr.addr.eq(Mux(self.host_en, self.host_addr[2:], core.x_dmem_addr[2:])),
            dr.en.eq(self.host_en | core.x_dmem_en),
            core.m_dmem_rdata.eq(dr.data),
        ]
        with m.If(self.host_en):
            m.d.comb += [dw.addr.eq(self.host_addr[2:]), dw.data.eq(self.host_wdata),
                         dw.en.eq(Mux(self.host_we & host_dmem, 0b1111, 0))]
        with m.Else():
            m.d.comb += [dw.addr.eq(core.m_dmem_addr[2:]), dw.data.eq(core.m_dmem_wdata),
                         dw.en.eq(Mux(live & st_dmem, core.m_dmem_wmask, 0))]

        # ---- host read-back: the word at the previous cycle's host_addr ----
        host_was_imem = Signal()
        m.d.sync += host_was_imem.eq(host_imem)
        m.d.comb += self.host_rdata.eq(Mux(host_was_imem, ir.data, dr.data))

        # ---- MMIO: console and exit ----
        store = live & st_mmio & (core.m_dmem_wmask != 0)
        m.d.sync += self.console_valid.eq(0)
        with m.If(store & (core.m_dmem_addr[2] == 0)):
            m.d.sync += [self.console_valid.eq(1), self.console_data.eq(core.m_dmem_wdata[:8])]

        # ---- shadow a0/a7 and halting ----
        a0, a7, ecall_exit = exit_call_watch(m, core)
        with m.If(self.host_en):
            m.d.sync += [self.halted.eq(0), self.exit_code.eq(0), a0.eq(0), a7.eq(0)]
        with m.Elif(~self.halted):
            with m.If(store & (core.m_dmem_addr[2] == 1)):
                m.d.sync += [self.halted.eq(1), self.exit_code.eq(core.m_dmem_wdata)]
            with m.Elif(ecall_exit):
                m.d.sync += [self.halted.eq(1), self.exit_code.eq(a0)]

        # ---- retire trace ----
        for name in ("retire_valid", "retire_pc", "retire_insn", "retire_rd", "retire_wdata",
                     "retire_trap"):
            m.d.comb += getattr(self, name).eq(getattr(core, name))
        return m


def soc_memory_map(soc: "SimSoC | str" = "mpq", imem_kib: int = 64, dmem_kib: int = 64) -> dict:
    """The memory map of ``soc`` as a JSON-ready dict (written beside the Verilog).

    ``soc`` may also be a configuration name; ``imem_kib``/``dmem_kib`` are then used. Keys
    ``imem_base``, ``imem_size``, ``dmem_base``, ``dmem_size``, ``mmio_base`` match
    :class:`rvmpq.sw.runtime.elf.MemoryMap`; ``mmio`` names the registers.
    """
    if isinstance(soc, str):
        soc = SimSoC(soc, imem_kib=imem_kib, dmem_kib=dmem_kib)
    # reading the map is not a use of the design: no "created but never used" warning for it
    soc._MustUse__silence = True
    mm = soc.memmap
    return {
        "top": TOP_NAME,
        "config": soc.core_config.name,
        "imem_base": mm.imem_base, "imem_size": mm.imem_size,
        "dmem_base": mm.dmem_base, "dmem_size": mm.dmem_size,
        "mmio_base": mm.mmio_base, "mmio_size": mm.mmio_size,
        "mmio": {"console": mm.mmio_base + 0, "exit": mm.mmio_base + 4},
        "exit_ecall_a7": ECALL_EXIT,
        "reset_pc": soc.core_config.reset_pc,
    }


def write_soc_verilog(out_dir: "str | Path", config: str = "mpq", imem_kib: int = 64,
                      dmem_kib: int = 64, simd_impl: str = "tree") -> tuple[Path, Path]:
    """Write ``rvmpq_soc_<config>.v`` and ``rvmpq_soc_<config>.json`` (memory map) to ``out_dir``.

    ``simd_impl`` picks the SIMD unit's description (:class:`SimSoC`). Files are rewritten
    only when their content changed. Returns both paths.
    """
    from amaranth.back import verilog

    soc = SimSoC(config, imem_kib=imem_kib, dmem_kib=dmem_kib, simd_impl=simd_impl)
    text = verilog.convert(soc, name=TOP_NAME, emit_src=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vpath = out / f"{TOP_NAME}_{soc.core_config.name}.v"
    jpath = out / f"{TOP_NAME}_{soc.core_config.name}.json"
    for path, content in ((vpath, text), (jpath, json.dumps(soc_memory_map(soc), indent=2) + "\n")):
        if not (path.exists() and path.read_text() == content):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(content)
            tmp.replace(path)
    return vpath, jpath
