"""A Python instruction-set simulator of the rvmpq core, written independently of the RTL.

It executes RV32IM, the Zicsr instructions, the Zicntr counters and the machine-mode CSRs the
core implements, plus the custom MPQ extension (encodings from :mod:`rvmpq.hw.isa`, arithmetic
from :mod:`rvmpq.sw.golden`), on the SimSoC memory map (contracts.md section 5):

* IMEM (fetch only) at ``0x0000_0000``, DMEM (load/store) at ``0x1000_0000``;
* MMIO at ``0x2000_0000``: ``+0`` CONSOLE (a store prints its low byte), ``+4`` EXIT (a store
  halts with that exit code); MMIO is store only (a load faults);
* any other data access raises an access fault; ``ecall`` with ``a7 = 93`` halts with
  exit code ``a0``.

Traps (machine mode only, ``mtvec`` direct mode):

=========================  ======  ======================================
cause                      mcause  mtval
=========================  ======  ======================================
fetch misaligned           0       target address (raised by the jump)
fetch access fault         1       pc
illegal instruction        2       the instruction word
ebreak                     3       pc
load misaligned / fault    4 / 5   data address
store misaligned / fault   6 / 7   data address
ecall (M-mode)             11      0
=========================  ======  ======================================

On a trap: ``mepc = pc``, ``mcause``, ``mtval``, ``mstatus.MPIE = MIE``, ``MIE = 0``,
``MPP = 3``, ``pc = mtvec``. ``mret`` undoes it. Each retired or trapped instruction yields a
:class:`Retire` record ``(pc, insn, rd, wdata, trap)``, the same fields as the SoC's retire port
and the runner's trace file (:func:`format_trace_line`).

Speed is not a goal (about 0.2-0.5 M instructions/s); correctness and readability are.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rvmpq.sw.runtime.elf import DEFAULT_MAP, ElfImage, MemoryMap, load_elf

__all__ = [
    "Retire",
    "IssResult",
    "Trap",
    "Iss",
    "run_elf",
    "run_words",
    "format_trace_line",
    "parse_trace_line",
    "same_retire",
    "reads_timing_csr",
    "CONFIGS",
]

CONFIGS = ("mpq", "baseline")
MASK = 0xFFFF_FFFF

# CSR addresses
MSTATUS, MISA, MIE, MTVEC = 0x300, 0x301, 0x304, 0x305
MSCRATCH, MEPC, MCAUSE, MTVAL, MIP = 0x340, 0x341, 0x342, 0x343, 0x344
MCYCLE, MINSTRET, MCYCLEH, MINSTRETH = 0xB00, 0xB02, 0xB80, 0xB82
CYCLE, TIME, INSTRET, CYCLEH, TIMEH, INSTRETH = 0xC00, 0xC01, 0xC02, 0xC80, 0xC81, 0xC82
MVENDORID, MARCHID, MIMPID, MHARTID = 0xF11, 0xF12, 0xF13, 0xF14
CSR_MPQ_RQ_DEFAULT = 0x7C0

# trap causes
FETCH_MISALIGNED, FETCH_FAULT, ILLEGAL, BREAKPOINT = 0, 1, 2, 3
LOAD_MISALIGNED, LOAD_FAULT, STORE_MISALIGNED, STORE_FAULT, ECALL_M = 4, 5, 6, 7, 11


def sext(value: int, bits: int) -> int:
    """Sign-extend the low ``bits`` of ``value`` to a Python int."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def s32(value: int) -> int:
    """A 32-bit word as a signed int."""
    return sext(value, 32)


@dataclass(frozen=True)
class Retire:
    """One retired (or trapped) instruction, as on the SoC's retire port."""

    pc: int
    insn: int
    rd: int
    wdata: int
    trap: bool = False


def format_trace_line(r: Retire) -> str:
    """Trace line ``PC INSN RD WDATA TRAP``: hex, hex, decimal, hex, 0/1 (wdata 0 when rd = 0)."""
    return f"{r.pc:08x} {r.insn:08x} {r.rd} {r.wdata if r.rd else 0:08x} {int(r.trap)}"


#: CSRs whose value depends on timing (the ISS has no cycle model): their reads are not compared.
TIMING_CSRS = frozenset({0xC00, 0xC80, 0xB00, 0xB80})


def reads_timing_csr(insn: int) -> bool:
    """True for a CSR instruction reading ``cycle``/``mcycle`` (or their high halves)."""
    return (insn & 0x7F) == 0x73 and ((insn >> 12) & 3) != 0 and (insn >> 20) in TIMING_CSRS


def same_retire(ref: Retire, dut: Retire) -> bool:
    """Whether two retire records agree: pc, insn, rd, trap, and wdata when rd != 0, except
    for reads of the cycle counters (timing-dependent)."""
    if ref.trap and ref.insn == 0 and dut.trap and ref.pc == dut.pc and ref.rd == dut.rd == 0:
        return True  # fetch fault: no instruction word was fetched (the RTL shows any value)
    if (ref.pc, ref.insn, ref.rd, ref.trap) != (dut.pc, dut.insn, dut.rd, dut.trap):
        return False
    if ref.rd == 0 or reads_timing_csr(ref.insn):
        return True
    return ref.wdata == dut.wdata


def parse_trace_line(line: str) -> Retire:
    """Inverse of :func:`format_trace_line`."""
    pc, insn, rd, wdata, trap = line.split()
    return Retire(int(pc, 16), int(insn, 16), int(rd), int(wdata, 16), trap == "1")


class Trap(Exception):
    """Raised inside :meth:`Iss.step` to take a synchronous trap."""

    def __init__(self, cause: int, tval: int = 0):
        super().__init__(cause, tval)
        self.cause = cause
        self.tval = tval & MASK


@dataclass
class IssResult:
    """Outcome of :meth:`Iss.run`."""

    exit_code: int | None
    instret: int
    console: bytes
    halted: bool
    timed_out: bool
    trace: list[Retire] = field(default_factory=list)
    regs: list[int] = field(default_factory=list)


class CustomExt:
    """The custom MPQ extension: decoding from :mod:`rvmpq.hw.isa`, arithmetic from
    :mod:`rvmpq.sw.golden` (neither is re-implemented here).

    Attributes
    ----------
    csr_addr : int
        Address of the ``mpq_rq`` CSR.
    csr_reset : int
        Its value after reset.
    """

    def __init__(self):
        from rvmpq.hw import isa  # noqa: PLC0415
        from rvmpq.sw import golden  # noqa: PLC0415
        self.isa = isa
        self.golden = golden
        #: The internal accumulators of ``mpq.ldot`` (``ACC[0..NUM_ACC-1]``), 32-bit words.
        self.acc = [0] * int(getattr(isa, "NUM_ACC", 0))
        #: Their bias copies ``ACCB`` (set by ``mpq.accld``; a read re-arms ``ACC[k] = ACCB[k]``).
        self.accb = [0] * int(getattr(isa, "NUM_ACC", 0))
        self.csr_addr = int(getattr(isa, "CSR_MPQ_RQ", CSR_MPQ_RQ_DEFAULT))
        self.csr_reset = int(getattr(isa, "CSR_MPQ_RQ_RESET", 0))
        self.opcodes = tuple(getattr(isa, "CUSTOM_OPCODES", ())) or \
            tuple(sorted({d.opcode for d in isa.CUSTOM_INSTRUCTIONS}))

    def csr_write_mask(self, value: int) -> int:
        """Value the CSR holds after writing ``value``."""
        fn = getattr(self.isa, "rq_config_mask", None)
        return fn(value) if callable(fn) else value

    def execute(self, insn: int, x: list[int], csr_rq: int,
                load_word: Callable[[int], int] | None = None) -> tuple[int, int] | None:
        """Execute custom instruction ``insn``: ``(rd, value)`` to write (rd = 0: nothing), or
        None if it is not defined.

        ``load_word(addr)`` reads a data word as ``lw`` does (raising :class:`Trap` on a
        misaligned or faulting address); the memory-operand rows need it. A faulting
        ``mpq.ldot``/``mpq.accld`` leaves the accumulators unchanged (the load raises first).
        """
        dec = self.isa.decode(insn)
        if dec is None:
            return None
        desc, rd, rs1, rs2 = dec
        if desc.kind in ("ldot", "accld"):
            if load_word is None:
                raise ValueError(f"{desc.name} reads memory: pass load_word")
            addr = (x[rs1] + 4 * self.isa.decode_off(insn)) & MASK
            word = load_word(addr)
            if desc.kind == "accld":
                self.acc[rd] = self.accb[rd] = word
            else:
                self.acc[rd] = self.isa_semantics(desc, self.acc[rd], x[rs2], word, csr_rq)
            return 0, 0
        if desc.kind == "rqpa":
            rqp = self.isa.BY_NAME["mpq.rqp"]
            value = self.isa_semantics(rqp, x[rd], self.acc[rs2], x[rs1], csr_rq)
            self.acc[rs2] = self.accb[rs2]
            return rd, value
        if desc.kind == "accrd":
            value = self.acc[rs2]
            self.acc[rs2] = self.accb[rs2]
            return rd, value
        return rd, self.isa_semantics(desc, x[rd], x[rs1], x[rs2], csr_rq)

    def isa_semantics(self, desc, rd_val: int, a: int, b: int, csr_rq: int) -> int:
        """Apply one instruction's semantics through the golden model."""
        import numpy as np  # noqa: PLC0415
        g = self.golden
        u = np.uint32
        if desc.kind in ("dot", "ldot"):
            return int(g.dot(u(a), u(b), desc.width, desc.a_signed, desc.b_signed,
                             acc=u(rd_val))) & MASK
        cfg = self.isa.rq_config_unpack(csr_rq)
        if desc.kind == "rq":
            return int(g.requant(np.int64(s32(a)), np.int64(s32(b)), cfg.shift, cfg.zp,
                                 cfg.bits, cfg.out_signed)) & MASK
        if desc.kind == "rqp":
            return int(g.rqpack(u(rd_val), np.int64(s32(a)), np.int64(s32(b)), cfg.shift,
                                cfg.zp, cfg.bits, cfg.out_signed)) & MASK
        raise NotImplementedError(f"ISS: custom instruction kind {desc.kind!r} ({desc.name})")


class Iss:
    """The instruction-set simulator.

    Parameters
    ----------
    config : {"mpq", "baseline"}
        ``"baseline"``: custom instructions and the ``mpq_rq`` CSR are illegal.
    memory_map : MemoryMap
        Memory map (default: the SimSoC default).
    console : callable(bytes), optional
        Called with each console byte as it is written.

    Attributes
    ----------
    x : list of int
        Registers x0..x31 (unsigned 32-bit values).
    pc : int
    csr : dict of int to int
        Writable CSR state.
    dmem, imem : bytearray
    """

    def __init__(self, config: str = "mpq", memory_map: MemoryMap = DEFAULT_MAP,
                 console: Callable[[bytes], None] | None = None):
        if config not in CONFIGS:
            raise ValueError(f"unknown config {config!r}; allowed: {', '.join(CONFIGS)}")
        self.config = config
        self.mm = memory_map
        self.imem = bytearray(memory_map.imem_size)
        self.dmem = bytearray(memory_map.dmem_size)
        self.x = [0] * 32
        self.pc = memory_map.imem_base
        self.csr = {MSTATUS: 0x1800, MTVEC: 0, MSCRATCH: 0, MEPC: 0, MCAUSE: 0, MTVAL: 0,
                    MIE: 0, MIP: 0}
        self.instret = 0
        self.halted = False
        self.exit_code: int | None = None
        self.console_out = bytearray()
        self._console_cb = console
        self.custom = None
        self.csr_mpq_rq = None
        if config == "mpq":
            self.custom = CustomExt()
            self.csr_mpq_rq = self.custom.csr_addr
            self.csr[self.csr_mpq_rq] = self.custom.csr_reset

    # ---- loading --------------------------------------------------------------------------

    def load_elf(self, elf: ElfImage | str | Path) -> None:
        """Copy an ELF's segments into IMEM/DMEM and set pc to its entry."""
        img = elf if isinstance(elf, ElfImage) else load_elf(elf, self.mm)
        for seg in img.segments:
            self.write_bytes(seg.addr, seg.data)
        self.pc = img.entry

    def load_words(self, words, base: int | None = None) -> None:
        """Write 32-bit words (instructions) starting at ``base`` (default IMEM base); pc = base."""
        base = self.mm.imem_base if base is None else base
        self.write_bytes(base, b"".join((w & MASK).to_bytes(4, "little") for w in words))
        self.pc = base

    def write_bytes(self, addr: int, data: bytes) -> None:
        """Backdoor write into IMEM or DMEM (the host port)."""
        mm = self.mm
        if mm.imem_base <= addr and addr + len(data) <= mm.imem_base + mm.imem_size:
            o = addr - mm.imem_base
            self.imem[o:o + len(data)] = data
        elif mm.dmem_base <= addr and addr + len(data) <= mm.dmem_base + mm.dmem_size:
            o = addr - mm.dmem_base
            self.dmem[o:o + len(data)] = data
        else:
            raise ValueError(f"0x{addr:08x}+{len(data)} is outside IMEM and DMEM")

    def read_bytes(self, addr: int, n: int) -> bytes:
        """Backdoor read of IMEM or DMEM (the host port)."""
        mm = self.mm
        if mm.imem_base <= addr and addr + n <= mm.imem_base + mm.imem_size:
            o = addr - mm.imem_base
            return bytes(self.imem[o:o + n])
        if mm.dmem_base <= addr and addr + n <= mm.dmem_base + mm.dmem_size:
            o = addr - mm.dmem_base
            return bytes(self.dmem[o:o + n])
        raise ValueError(f"0x{addr:08x}+{n} is outside IMEM and DMEM")

    # ---- memory as the program sees it ----------------------------------------------------

    def _load(self, addr: int, size: int, signed: bool) -> int:
        if addr % size:
            raise Trap(LOAD_MISALIGNED, addr)
        mm = self.mm
        if mm.dmem_base <= addr and addr + size <= mm.dmem_base + mm.dmem_size:
            o = addr - mm.dmem_base
            v = int.from_bytes(self.dmem[o:o + size], "little")
        else:  # IMEM is fetch only, MMIO store only
            raise Trap(LOAD_FAULT, addr)
        return sext(v, 8 * size) & MASK if signed else v

    def _store(self, addr: int, size: int, value: int) -> None:
        if addr % size:
            raise Trap(STORE_MISALIGNED, addr)
        mm = self.mm
        if mm.dmem_base <= addr and addr + size <= mm.dmem_base + mm.dmem_size:
            o = addr - mm.dmem_base
            self.dmem[o:o + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif mm.mmio_base <= addr < mm.mmio_base + 4:
            b = bytes([value & 0xFF])
            self.console_out += b
            if self._console_cb:
                self._console_cb(b)
        elif mm.mmio_base + 4 <= addr < mm.mmio_base + 8:
            self.halted = True
            self.exit_code = value & MASK
        else:
            raise Trap(STORE_FAULT, addr)

    def _fetch(self, pc: int) -> int:
        mm = self.mm
        if pc % 4:
            raise Trap(FETCH_MISALIGNED, pc)
        if not (mm.imem_base <= pc and pc + 4 <= mm.imem_base + mm.imem_size):
            raise Trap(FETCH_FAULT, pc)
        o = pc - mm.imem_base
        return int.from_bytes(self.imem[o:o + 4], "little")

    # ---- CSRs -----------------------------------------------------------------------------

    def _csr_read(self, a: int, insn: int) -> int:
        if a in (CYCLE, MCYCLE, INSTRET, MINSTRET):
            return self.instret & MASK  # the ISS has no cycle model: cycle = instret
        if a in (CYCLEH, MCYCLEH, INSTRETH, MINSTRETH):
            return (self.instret >> 32) & MASK
        if a in (MVENDORID, MARCHID, MIMPID, MHARTID):
            return 0
        if a == MISA:
            return (1 << 30) | (1 << 8) | (1 << 12) | ((1 << 23) if self.custom else 0)
        if a in self.csr:
            return self.csr[a]
        raise Trap(ILLEGAL, insn)

    def _csr_write(self, a: int, v: int, insn: int) -> None:
        if (a >> 10) == 3:  # read-only space
            raise Trap(ILLEGAL, insn)
        if a in (MCYCLE, MCYCLEH, MINSTRET, MINSTRETH):
            # writable on hardware; the ISS models writes as ignored (documented difference)
            return
        if a in (MVENDORID, MARCHID, MIMPID, MHARTID, MISA):
            if (a >> 10) == 3:
                raise Trap(ILLEGAL, insn)
            return
        if a not in self.csr:
            raise Trap(ILLEGAL, insn)
        if a == MEPC:
            v &= ~3
        elif a == MTVEC:
            v &= ~3
        elif a == MSTATUS:
            v = (v & 0x88) | 0x1800  # MIE, MPIE; MPP hard-wired to M
        elif a in (MIE, MIP):
            v = 0
        elif self.custom and a == self.csr_mpq_rq:
            v = self.custom.csr_write_mask(v)
        self.csr[a] = v & MASK

    # ---- execution ------------------------------------------------------------------------

    def _trap(self, pc: int, insn: int, t: Trap) -> Retire:
        st = self.csr[MSTATUS]
        mie = (st >> 3) & 1
        self.csr[MSTATUS] = (st & ~0x88) | (mie << 7) | 0x1800
        self.csr[MEPC] = pc
        self.csr[MCAUSE] = t.cause
        self.csr[MTVAL] = t.tval
        self.pc = self.csr[MTVEC]
        return Retire(pc, insn, 0, 0, True)

    def step(self) -> Retire:
        """Execute one instruction (or take one trap); returns its retire record."""
        pc = self.pc
        insn = 0
        try:
            insn = self._fetch(pc)
            rd, val, npc = self._execute(pc, insn)
        except Trap as t:
            if t.cause == ECALL_M and self.x[17] == 93:
                self.halted = True
                self.exit_code = self.x[10]
                self.instret += 1
                return Retire(pc, insn, 0, 0, True)
            r = self._trap(pc, insn, t)
            self.instret += 1  # the retire port reports it; minstret counts it too
            return r
        if rd:
            self.x[rd] = val & MASK
        self.pc = npc & MASK
        self.instret += 1
        return Retire(pc, insn, rd, (val & MASK) if rd else 0, False)

    def _execute(self, pc: int, insn: int) -> tuple[int, int, int]:
        """Returns ``(rd, value, next_pc)``; rd = 0 when nothing is written."""
        x = self.x
        op = insn & 0x7F
        rd = (insn >> 7) & 31
        f3 = (insn >> 12) & 7
        rs1 = (insn >> 15) & 31
        rs2 = (insn >> 20) & 31
        f7 = insn >> 25
        a, b = x[rs1], x[rs2]
        npc = (pc + 4) & MASK
        i_imm = sext(insn >> 20, 12)

        if op == 0x37:  # LUI
            return rd, insn & 0xFFFFF000, npc
        if op == 0x17:  # AUIPC
            return rd, pc + (insn & 0xFFFFF000), npc
        if op == 0x6F:  # JAL
            imm = sext(((insn >> 31) << 20) | (((insn >> 12) & 0xFF) << 12)
                       | (((insn >> 20) & 1) << 11) | (((insn >> 21) & 0x3FF) << 1), 21)
            t = (pc + imm) & MASK
            if t % 4:
                raise Trap(FETCH_MISALIGNED, t)
            return rd, npc, t
        if op == 0x67 and f3 == 0:  # JALR
            t = (a + i_imm) & ~1 & MASK
            if t % 4:
                raise Trap(FETCH_MISALIGNED, t)
            return rd, npc, t
        if op == 0x63:  # branches
            imm = sext(((insn >> 31) << 12) | (((insn >> 7) & 1) << 11)
                       | (((insn >> 25) & 0x3F) << 5) | (((insn >> 8) & 0xF) << 1), 13)
            if f3 == 0:
                take = a == b
            elif f3 == 1:
                take = a != b
            elif f3 == 4:
                take = s32(a) < s32(b)
            elif f3 == 5:
                take = s32(a) >= s32(b)
            elif f3 == 6:
                take = a < b
            elif f3 == 7:
                take = a >= b
            else:
                raise Trap(ILLEGAL, insn)
            if take:
                t = (pc + imm) & MASK
                if t % 4:
                    raise Trap(FETCH_MISALIGNED, t)
                return 0, 0, t
            return 0, 0, npc
        if op == 0x03:  # loads
            addr = (a + i_imm) & MASK
            if f3 == 0:
                v = self._load(addr, 1, True)
            elif f3 == 1:
                v = self._load(addr, 2, True)
            elif f3 == 2:
                v = self._load(addr, 4, False)
            elif f3 == 4:
                v = self._load(addr, 1, False)
            elif f3 == 5:
                v = self._load(addr, 2, False)
            else:
                raise Trap(ILLEGAL, insn)
            return rd, v, npc
        if op == 0x23:  # stores
            imm = sext(((insn >> 25) << 5) | ((insn >> 7) & 31), 12)
            addr = (a + imm) & MASK
            if f3 > 2:
                raise Trap(ILLEGAL, insn)
            self._store(addr, 1 << f3, b)
            return 0, 0, npc
        if op == 0x13:  # OP-IMM
            sh = rs2
            if f3 == 0:
                v = a + i_imm
            elif f3 == 2:
                v = int(s32(a) < i_imm)
            elif f3 == 3:
                v = int(a < (i_imm & MASK))
            elif f3 == 4:
                v = a ^ (i_imm & MASK)
            elif f3 == 6:
                v = a | (i_imm & MASK)
            elif f3 == 7:
                v = a & (i_imm & MASK)
            elif f3 == 1:
                if f7 != 0:
                    raise Trap(ILLEGAL, insn)
                v = a << sh
            else:  # f3 == 5
                if f7 == 0:
                    v = a >> sh
                elif f7 == 0x20:
                    v = s32(a) >> sh
                else:
                    raise Trap(ILLEGAL, insn)
            return rd, v & MASK, npc
        if op == 0x33:  # OP
            if f7 == 0:
                v = {0: lambda: a + b, 1: lambda: a << (b & 31), 2: lambda: int(s32(a) < s32(b)),
                     3: lambda: int(a < b), 4: lambda: a ^ b, 5: lambda: a >> (b & 31),
                     6: lambda: a | b, 7: lambda: a & b}[f3]()
            elif f7 == 0x20 and f3 in (0, 5):
                v = a - b if f3 == 0 else s32(a) >> (b & 31)
            elif f7 == 1:
                v = self._muldiv(f3, a, b)
            else:
                raise Trap(ILLEGAL, insn)
            return rd, v & MASK, npc
        if op == 0x0F:  # FENCE / FENCE.I: no-ops on this core
            if f3 in (0, 1):
                return 0, 0, npc
            raise Trap(ILLEGAL, insn)
        if op == 0x73:  # SYSTEM
            if f3 == 0:
                if insn == 0x00000073:
                    raise Trap(ECALL_M, 0)
                if insn == 0x00100073:
                    raise Trap(BREAKPOINT, pc)
                if insn == 0x30200073:  # MRET
                    st = self.csr[MSTATUS]
                    mpie = (st >> 7) & 1
                    self.csr[MSTATUS] = (st & ~0x88) | (mpie << 3) | 0x80 | 0x1800
                    return 0, 0, self.csr[MEPC]
                if insn == 0x10500073:  # WFI: no-op
                    return 0, 0, npc
                raise Trap(ILLEGAL, insn)
            if f3 == 4:
                raise Trap(ILLEGAL, insn)
            csr = insn >> 20
            src = rs1 if f3 & 4 else a  # immediate forms use the rs1 field as a zimm
            kind = f3 & 3
            writes = kind == 1 or rs1 != 0
            reads = kind != 1 or rd != 0
            old = self._csr_read(csr, insn) if reads else 0
            if writes:
                if (csr >> 10) == 3:
                    raise Trap(ILLEGAL, insn)
                if not reads:
                    self._csr_read(csr, insn)  # existence check
                new = src if kind == 1 else (old | src) if kind == 2 else (old & ~src)
                self._csr_write(csr, new & MASK, insn)
            return rd, old, npc
        if self.custom is not None and op in self.custom.opcodes:
            res = self.custom.execute(insn, x, self.csr[self.csr_mpq_rq],
                                      load_word=lambda addr: self._load(addr, 4, False))
            if res is None:
                raise Trap(ILLEGAL, insn)
            return res[0], res[1], npc
        raise Trap(ILLEGAL, insn)

    @staticmethod
    def _muldiv(f3: int, a: int, b: int) -> int:
        sa, sb = s32(a), s32(b)
        if f3 == 0:
            return a * b
        if f3 == 1:
            return (sa * sb) >> 32
        if f3 == 2:
            return (sa * b) >> 32
        if f3 == 3:
            return (a * b) >> 32
        if f3 == 4:  # DIV
            if b == 0:
                return MASK
            if sa == -(1 << 31) and sb == -1:
                return a
            q = abs(sa) // abs(sb)
            return -q if (sa < 0) != (sb < 0) else q
        if f3 == 5:  # DIVU
            return MASK if b == 0 else a // b
        if f3 == 6:  # REM
            if b == 0:
                return a
            if sa == -(1 << 31) and sb == -1:
                return 0
            r = abs(sa) % abs(sb)
            return -r if sa < 0 else r
        return a if b == 0 else a % b  # REMU

    def run(self, max_steps: int = 10_000_000, trace: bool = False) -> IssResult:
        """Run until halted or ``max_steps`` instructions.

        Parameters
        ----------
        max_steps : int
            Instruction budget; exceeding it sets ``timed_out``.
        trace : bool
            Keep every :class:`Retire` record in the result.
        """
        recs: list[Retire] = []
        n = 0
        while not self.halted and n < max_steps:
            r = self.step()
            n += 1
            if trace:
                recs.append(r)
        return IssResult(self.exit_code, self.instret, bytes(self.console_out), self.halted,
                         not self.halted, recs, list(self.x))

    def read_signature(self, img: ElfImage) -> list[int]:
        """Words between ``begin_signature`` and ``end_signature`` (empty if absent)."""
        rng = img.signature_range()
        if rng is None:
            return []
        b, e = rng
        data = self.read_bytes(b, e - b)
        return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data) - 3, 4)]


def run_elf(elf, config: str = "mpq", max_steps: int = 10_000_000, trace: bool = False,
            memory_map: MemoryMap = DEFAULT_MAP) -> IssResult:
    """Run an ELF (path or :class:`ElfImage`) on the ISS; the result has ``signature`` added."""
    img = elf if isinstance(elf, ElfImage) else load_elf(elf, memory_map)
    iss = Iss(config, memory_map)
    iss.load_elf(img)
    res = iss.run(max_steps, trace)
    res.signature = iss.read_signature(img)  # type: ignore[attr-defined]
    return res


def run_words(words, config: str = "mpq", max_steps: int = 100_000, trace: bool = True,
              dmem: bytes | None = None, memory_map: MemoryMap = DEFAULT_MAP) -> tuple[Iss, IssResult]:
    """Run raw instruction words placed at the IMEM base; returns the ISS and its result."""
    iss = Iss(config, memory_map)
    iss.load_words(words)
    if dmem:
        iss.write_bytes(memory_map.dmem_base, dmem)
    return iss, iss.run(max_steps, trace)


def main(argv: list[str] | None = None) -> int:
    """``python -m rvmpq.sw.iss PROG.elf [--config] [--trace FILE]``: run an ELF on the ISS."""
    p = argparse.ArgumentParser(prog="python -m rvmpq.sw.iss", description=main.__doc__)
    p.add_argument("elf")
    p.add_argument("--config", default="mpq", choices=CONFIGS)
    p.add_argument("--max-steps", type=int, default=10_000_000)
    p.add_argument("--trace", metavar="FILE")
    a = p.parse_args(argv)
    res = run_elf(a.elf, a.config, a.max_steps, trace=bool(a.trace))
    sys.stdout.write(res.console.decode("latin-1"))
    if a.trace:
        Path(a.trace).write_text("".join(format_trace_line(r) + "\n" for r in res.trace))
    if res.timed_out:
        print(f"iss: no exit after {a.max_steps} instructions", file=sys.stderr)
        return 124
    print(f"exit={res.exit_code} instret={res.instret}")
    return res.exit_code & 0xFF if res.exit_code else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
