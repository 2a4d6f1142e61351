"""Synthesis top of the core configurations: the core with small memories and narrow IO.

The bare :class:`~rvmpq.hw.core.core.Core` has ~300 port bits, more than the 25k CABGA381 ECP5
has pins, and its timing into and out of unregistered ports is not the timing of a real
system. :class:`CoreSynthTop` wraps it the way a small FPGA system would::

            load_* (byte-serial, registered)
                  │
                  ▼
    ┌─────────── loader: 32-bit word assembler + word address counter ────────────┐
    │                                                                               │
    │  IMEM (mem_kib KiB, DP16KD) ──▶ Core ◀──▶ DMEM (mem_kib KiB, byte enables)   │
    │                                   │                                           │
    │             MMIO: CONSOLE (+0), EXIT (+4)      retire trace fold              │
    └───────────────────────────────────┬───────────────────────┬──────────────────┘
                                         ▼                       ▼
                        console_valid/data, halted      trace_valid, trace (8 bits)

Every output is a register and every input is registered once, so the paths measured by
nextpnr are the core's own. The retire trace is XOR-folded into 8 bits so that no core logic
is optimised away while the pin count stays small (~30 pins).

Loading (the core is held in reset while ``load_en`` is high): each ``load_strobe`` shifts
``load_byte`` into a word register (little endian: the first byte of four ends in bits 7:0);
every fourth strobe writes the word to IMEM (``load_dmem = 0``) or DMEM (``load_dmem = 1``) at
the word address counter and increments it; the counter restarts at 0 when ``load_en`` rises.

:func:`core_synth_verilog` returns the Verilog text (top module :data:`TOP_NAME`) for the
synthesis flow; :func:`synth_designs` is the ``synth/designs.py`` provider hook
(``core-baseline``, ``core-mpq``).
"""



from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import CONFIGS, CoreConfig, get_config
from .core import Core, MemMap

__all__ = ["CoreSynthTop", "core_synth_verilog", "synth_designs", "TOP_NAME"]

#: Verilog top-module name of :func:`core_synth_verilog`.
TOP_NAME = "rvmpq_core_top"


class CoreSynthTop(wiring.Component):
    """The core with ``mem_kib`` KiB of IMEM and DMEM, console/exit MMIO and narrow registered IO.

    Memory map as contracts.md section 5 (IMEM at 0, DMEM at ``0x1000_0000``, MMIO at
    ``0x2000_0000``: ``+0`` CONSOLE, ``+4`` EXIT), with ``mem_kib`` KiB memories.

    Parameters
    ----------
    config : str or CoreConfig
        Core configuration (``"baseline"`` or ``"mpq"``).
    mem_kib : int
        Size of IMEM and of DMEM in KiB, a power of two (default 4: 2 + 2 DP16KD blocks).
    mul_unit : callable, optional
        Multiplier factory passed to :class:`~rvmpq.hw.core.core.Core` (experiments only).

    Members
    -------
    load_en : In(1)
        1: the core is held in reset and the loader owns the memories.
    load_strobe : In(1)
        Shift ``load_byte`` into the word register; every fourth strobe writes the word.
    load_byte : In(8)
        Program/data byte.
    load_dmem : In(1)
        0: the word goes to IMEM, 1: to DMEM.
    console_valid : Out(1)
        A byte was written to CONSOLE (registered).
    console_data : Out(8)
        That byte.
    halted : Out(1)
        Sticky: a word was stored to EXIT (cleared by ``load_en``).
    trace_valid : Out(1)
        An instruction retired or trapped (registered ``retire_valid``).
    trace : Out(8)
        XOR fold of its pc, encoding, destination, written value and trap flag.
    """

    load_en: In(1)
    load_strobe: In(1)
    load_byte: In(8)
    load_dmem: In(1)
    console_valid: Out(1)
    console_data: Out(8)
    halted: Out(1)
    trace_valid: Out(1)
    trace: Out(8)

    def __init__(self, config: "str | CoreConfig" = "mpq", mem_kib: int = 4, mul_unit=None):
        try:
            self.core_config = get_config(config)
            if not isinstance(mem_kib, int) or isinstance(mem_kib, bool) or mem_kib <= 0 or \
                    mem_kib & (mem_kib - 1):
                raise ValueError(f"mem_kib = {mem_kib!r} must be a power of two (e.g. 1, 4, 16)")
        except ValueError:
            self._MustUse__silence = True  # a rejected object is not an unused elaboratable
            raise
        self.mem_kib = mem_kib
        self.memmap = MemMap(imem_size=mem_kib << 10, dmem_size=mem_kib << 10)
        self._mul_unit = mul_unit
        super().__init__()

    def elaborate(self, platform):
        """Amaranth elaboration: the core with its memories and registered byte-wide IO;
        ``platform`` is unused."""
        m = Module()
        mm = self.memmap
        depth = mm.imem_size // 4

        # ---- registered inputs ----
        en = Signal()
        strobe = Signal()
        byte = Signal(8)
        to_dmem = Signal()
        m.d.sync += [en.eq(self.load_en), strobe.eq(self.load_strobe), byte.eq(self.load_byte),
                     to_dmem.eq(self.load_dmem)]

        core = Core(self.core_config, memmap=mm, mul_unit=self._mul_unit)
        m.submodules.core = ResetInserter(en | self.halted)(core)

        imem = Memory(shape=32, depth=depth, init=[])
        dmem = Memory(shape=32, depth=depth, init=[])
        m.submodules.imem = imem
        m.submodules.dmem = dmem
        iw = imem.write_port()
        ir = imem.read_port()
        dw = dmem.write_port(granularity=8)
        dr = dmem.read_port(transparent_for=(dw,))

        # ---- loader: byte-serial word assembly, auto-incrementing word address ----
        word = Signal(32)
        nbyte = Signal(2)
        waddr = Signal(range(depth))
        wr = Signal()
        was_en = Signal()
        m.d.sync += [was_en.eq(en), wr.eq(0)]
        with m.If(en & ~was_en):
            m.d.sync += [waddr.eq(0), nbyte.eq(0)]
        with m.Elif(en & strobe):
            m.d.sync += [word.eq(Cat(word[8:], byte)), nbyte.eq(nbyte + 1),
                         wr.eq(nbyte == 3)]
        with m.If(wr):
            m.d.sync += waddr.eq(waddr + 1)

        live = ~en & ~self.halted
        m.d.comb += [
            ir.addr.eq(core.f_imem_addr[2:]),
            ir.en.eq(core.f_imem_en),
            core.d_imem_data.eq(ir.data),
            iw.addr.eq(waddr), iw.data.eq(word), iw.en.eq(en & wr & ~to_dmem),
            dr.addr.eq(core.x_dmem_addr[2:]),
            dr.en.eq(core.x_dmem_en),
            core.m_dmem_rdata.eq(dr.data),
        ]
        st_dmem = MemMap.in_range(core.m_dmem_addr, mm.dmem_base, mm.dmem_size)
        st_mmio = MemMap.in_range(core.m_dmem_addr, mm.mmio_base, mm.mmio_size)
        with m.If(en):
            m.d.comb += [dw.addr.eq(waddr), dw.data.eq(word),
                         dw.en.eq(Mux(wr & to_dmem, 0b1111, 0))]
        with m.Else():
            m.d.comb += [dw.addr.eq(core.m_dmem_addr[2:]), dw.data.eq(core.m_dmem_wdata),
                         dw.en.eq(Mux(live & st_dmem, core.m_dmem_wmask, 0))]

        # ---- MMIO: console and exit ----
        store = live & st_mmio & (core.m_dmem_wmask != 0)
        m.d.sync += self.console_valid.eq(0)
        with m.If(store & (core.m_dmem_addr[2] == 0)):
            m.d.sync += [self.console_valid.eq(1), self.console_data.eq(core.m_dmem_wdata[:8])]
        with m.If(en):
            m.d.sync += self.halted.eq(0)
        with m.Elif(store & (core.m_dmem_addr[2] == 1)):
            m.d.sync += self.halted.eq(1)

        # ---- retire trace, folded to 8 bits ----
        h = Signal(32)
        m.d.comb += h.eq(core.retire_pc ^ core.retire_insn ^ core.retire_wdata ^
                         Cat(core.retire_rd, core.retire_trap))
        m.d.sync += [self.trace_valid.eq(core.retire_valid),
                     self.trace.eq(h[:8] ^ h[8:16] ^ h[16:24] ^ h[24:])]
        return m


def core_synth_verilog(config: "str | CoreConfig" = "mpq", mem_kib: int = 4) -> str:
    """Verilog text of :class:`CoreSynthTop` for ``config``, top module :data:`TOP_NAME`.

    Parameters
    ----------
    config : str or CoreConfig
        ``"baseline"`` or ``"mpq"`` (``ValueError`` naming the known ones otherwise).
    mem_kib : int
        IMEM and DMEM size in KiB (power of two).

    Returns
    -------
    str
        Verilog (ports ``clk``, ``rst`` and the members of :class:`CoreSynthTop`).
    """
    from amaranth.back import verilog
    return verilog.convert(CoreSynthTop(config, mem_kib=mem_kib), name=TOP_NAME, emit_src=False)


def synth_designs() -> dict:
    """Provider hook for :mod:`rvmpq.synth.designs`: ``core-<config>`` for every named
    configuration, each a :class:`CoreSynthTop` with 4 KiB memories (top :data:`TOP_NAME`)."""
    from ...synth.designs import DesignSpec
    return {
        f"core-{name}": DesignSpec(
            f"core-{name}",
            f"rvmpq core, {name} configuration, 4 KiB IMEM/DMEM, registered byte-wide IO",
            (lambda name=name: CoreSynthTop(name)), TOP_NAME, flat_ports=False)
        for name in CONFIGS
    }
