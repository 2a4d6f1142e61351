"""cocotb testbench of the core inside ``rvmpq_soc``: what programs cannot see.

Stalls and flushes are measured on the retire port (cycle of each retirement), traps through
the trace and the CSRs the handler copies into registers, halting/console on the SoC ports.
Programs are hand-assembled with :class:`Asm` (a tiny RV32I/M/Zicsr encoder) plus
:func:`rvmpq.hw.isa.encode` for the custom instructions.

Environment: ``RVMPQ_CORE_CONFIG`` = ``mpq`` | ``baseline`` (the configuration the Verilog was
built for), ``RVMPQ_SEED`` (random tests).
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, ReadOnly

from rvmpq.hw import isa
from rvmpq.hw.core.core import TAKEN_BRANCH_BUBBLES

DMEM = 0x1000_0000
MMIO = 0x2000_0000
ECALL = 0x00000073
CONFIG = os.environ.get("RVMPQ_CORE_CONFIG", "mpq")

REGS = {f"x{i}": i for i in range(32)}
REGS.update({n: i for i, n in enumerate(
    "zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 "
    "t3 t4 t5 t6".split())})


def _r(x):
    return REGS[x] if isinstance(x, str) else x


class Asm:
    """A tiny RV32IM/Zicsr assembler: one word per instruction method (``li``, ``la`` and
    ``exit`` append short sequences); labels for branches, jumps and ``la``.

    The one-line mnemonic methods (``addi`` ... ``accrd``) encode the instruction they are
    named after from the operands their parameters name (registers by number or ABI name) and
    return the address of the word they append; ``ldot``/``accld``/``rqpa``/``accrd`` put the
    accumulator number ``k`` where :data:`rvmpq.hw.isa.FORMATS` says (``ldot`` takes the full
    mnemonic, e.g. ``"mpq.ldot.w2.us"``, as ``name``)."""

    def __init__(self, base=0):
        self.base = base
        self.words = []
        self.labels = {}
        self.fixups = []

    @property
    def pc(self):
        """Address of the next word to be appended."""
        return self.base + 4 * len(self.words)

    def label(self, name):
        """Define label ``name`` at the current address; return it."""
        self.labels[name] = self.pc
        return self.pc

    def word(self, w):
        """Append a 32-bit word; return its address."""
        self.words.append(w & 0xFFFF_FFFF)
        return self.pc - 4

    # encoders
    def _i(self, op, f3, rd, rs1, imm):
        assert -2048 <= imm < 2048, imm
        return self.word(((imm & 0xFFF) << 20) | (_r(rs1) << 15) | (f3 << 12) | (_r(rd) << 7) | op)

    def _rr(self, op, f3, f7, rd, rs1, rs2):
        return self.word(isa.r_type(op, f3, f7, _r(rd), _r(rs1), _r(rs2)))

    def _s(self, f3, rs2, rs1, imm):
        return self.word((((imm >> 5) & 0x7F) << 25) | (_r(rs2) << 20) | (_r(rs1) << 15) |
                         (f3 << 12) | ((imm & 31) << 7) | 0x23)

    def _b_enc(self, f3, rs1, rs2, off):
        assert off % 2 == 0 and -4096 <= off < 4096
        return ((((off >> 12) & 1) << 31) | (((off >> 5) & 0x3F) << 25) | (_r(rs2) << 20) |
                (_r(rs1) << 15) | (f3 << 12) | (((off >> 1) & 0xF) << 8) |
                (((off >> 11) & 1) << 7) | 0x63)

    def _j_enc(self, rd, off):
        return ((((off >> 20) & 1) << 31) | (((off >> 1) & 0x3FF) << 21) |
                (((off >> 11) & 1) << 20) | (((off >> 12) & 0xFF) << 12) | (_r(rd) << 7) | 0x6F)

    def addi(self, rd, rs1, imm): return self._i(0x13, 0, rd, rs1, imm)
    def andi(self, rd, rs1, imm): return self._i(0x13, 7, rd, rs1, imm)
    def nop(self): return self.addi(0, 0, 0)
    def lui(self, rd, imm20): return self.word(((imm20 & 0xFFFFF) << 12) | (_r(rd) << 7) | 0x37)
    def add(self, rd, a, b): return self._rr(0x33, 0, 0, rd, a, b)
    def sub(self, rd, a, b): return self._rr(0x33, 0, 0x20, rd, a, b)
    def mul(self, rd, a, b): return self._rr(0x33, 0, 1, rd, a, b)
    def mulh(self, rd, a, b): return self._rr(0x33, 1, 1, rd, a, b)
    def mulhsu(self, rd, a, b): return self._rr(0x33, 2, 1, rd, a, b)
    def mulhu(self, rd, a, b): return self._rr(0x33, 3, 1, rd, a, b)
    def div(self, rd, a, b): return self._rr(0x33, 4, 1, rd, a, b)
    def divu(self, rd, a, b): return self._rr(0x33, 5, 1, rd, a, b)
    def rem(self, rd, a, b): return self._rr(0x33, 6, 1, rd, a, b)
    def remu(self, rd, a, b): return self._rr(0x33, 7, 1, rd, a, b)
    def lw(self, rd, rs1, imm): return self._i(0x03, 2, rd, rs1, imm)
    def lb(self, rd, rs1, imm): return self._i(0x03, 0, rd, rs1, imm)
    def lh(self, rd, rs1, imm): return self._i(0x03, 1, rd, rs1, imm)
    def lbu(self, rd, rs1, imm): return self._i(0x03, 4, rd, rs1, imm)
    def lhu(self, rd, rs1, imm): return self._i(0x03, 5, rd, rs1, imm)
    def sw(self, rs2, rs1, imm): return self._s(2, rs2, rs1, imm)
    def sh(self, rs2, rs1, imm): return self._s(1, rs2, rs1, imm)
    def sb(self, rs2, rs1, imm): return self._s(0, rs2, rs1, imm)
    def jalr(self, rd, rs1, imm): return self._i(0x67, 0, rd, rs1, imm)
    def ecall(self): return self.word(ECALL)
    def ebreak(self): return self.word(0x00100073)
    def mret(self): return self.word(0x30200073)
    def csrrw(self, rd, csr, rs1):
        """``csrrw rd, csr, rs1``."""
        return self.word((csr << 20) | (_r(rs1) << 15) | (1 << 12) | (_r(rd) << 7) | 0x73)
    def csrr(self, rd, csr): return self.word((csr << 20) | (2 << 12) | (_r(rd) << 7) | 0x73)
    def csrw(self, csr, rs1): return self.csrrw(0, csr, rs1)
    def custom(self, name, rd, rs1, rs2, off=0):
        """A custom instruction from the ISA table (:func:`rvmpq.hw.isa.encode`) by name."""
        return self.word(isa.encode(name, _r(rd), _r(rs1), _r(rs2), off=off))
    def ldot(self, name, k, act, off, base): return self.custom(name, k, base, act, off)
    def accld(self, k, off, base): return self.custom("mpq.accld", k, base, 0, off)
    def rqpa(self, rd, mult, k): return self.custom("mpq.rqpa", rd, mult, k)
    def accrd(self, rd, k): return self.custom("mpq.accrd", rd, 0, k)

    def li(self, rd, value):
        """Load a 32-bit constant (lui + addi)."""
        value &= 0xFFFF_FFFF
        lo = value & 0xFFF
        if lo >= 0x800:
            lo -= 0x1000
        hi = ((value - lo) >> 12) & 0xFFFFF
        if hi:
            self.lui(rd, hi)
            if lo:
                self.addi(rd, rd, lo)
        else:
            self.addi(rd, 0, lo)

    def branch(self, kind, rs1, rs2, label):
        """``kind`` (beq, bne, blt, bge, bltu, bgeu) to ``label``, fixed up by :meth:`assemble`."""
        f3 = {"beq": 0, "bne": 1, "blt": 4, "bge": 5, "bltu": 6, "bgeu": 7}[kind]
        self.fixups.append((len(self.words), "b", f3, rs1, rs2, label))
        return self.word(0)

    def jal(self, rd, label):
        """``jal rd, label``, fixed up by :meth:`assemble`."""
        self.fixups.append((len(self.words), "j", 0, rd, 0, label))
        return self.word(0)

    def la(self, rd, label):
        """Absolute address of a label (lui + addi, fixed up later)."""
        self.fixups.append((len(self.words), "la", 0, rd, 0, label))
        self.word(0)
        self.word(0)

    def exit(self, code_reg="a0"):
        """ecall with a7 = 93 (a0 = exit code)."""
        if _r(code_reg) != 10:
            self.addi("a0", code_reg, 0)
        self.addi("a7", 0, 93)
        self.ecall()

    def assemble(self):
        """Resolve the branch, jump and ``la`` fixups; return the program as a list of words."""
        for idx, kind, f3, ra, rb, label in self.fixups:
            target = self.labels[label]
            pc = self.base + 4 * idx
            if kind == "b":
                self.words[idx] = self._b_enc(f3, ra, rb, target - pc)
            elif kind == "j":
                self.words[idx] = self._j_enc(ra, target - pc)
            else:
                lo = target & 0xFFF
                if lo >= 0x800:
                    lo -= 0x1000
                hi = ((target - lo) >> 12) & 0xFFFFF
                self.words[idx] = (hi << 12) | (_r(ra) << 7) | 0x37
                self.words[idx + 1] = ((lo & 0xFFF) << 20) | (_r(ra) << 15) | (_r(ra) << 7) | 0x13
        return list(self.words)


class SocTB:
    """Drives ``rvmpq_soc``: host loads, reset, run, retire/console monitor."""

    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0
        self.retired = []     # (cycle, pc, insn, rd, wdata, trap)
        self.console = bytearray()

    async def start(self):
        """Start the clock, reset, and leave the core held (``host_en = 1``) for loading."""
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        d = self.dut
        d.rst.value = 1
        d.host_en.value = 1
        d.host_we.value = 0
        d.host_addr.value = 0
        d.host_wdata.value = 0
        await ClockCycles(d.clk, 2)
        d.rst.value = 0
        await RisingEdge(d.clk)

    async def load(self, words, base=0):
        """Write ``words`` through the host port from byte address ``base`` (core held)."""
        d = self.dut
        d.host_en.value = 1
        for i, w in enumerate(words):
            d.host_addr.value = base + 4 * i
            d.host_wdata.value = w
            d.host_we.value = 1
            await RisingEdge(d.clk)
        d.host_we.value = 0

    async def read_word(self, addr):
        """Read the word at byte address ``addr`` through the host port (core held)."""
        d = self.dut
        d.host_en.value = 1
        d.host_we.value = 0
        d.host_addr.value = addr
        await RisingEdge(d.clk)
        await ReadOnly()
        v = int(d.host_rdata.value)
        await RisingEdge(d.clk)
        return v

    async def run(self, program, max_cycles=2000, data=None):
        """Load ``program`` (and ``{addr: word}`` data), release the core, run until halted."""
        await self.load(program, 0)
        for addr, w in (data or {}).items():
            await self.load([w], addr)
        d = self.dut
        self.retired.clear()
        self.console.clear()
        d.host_en.value = 0
        for cyc in range(max_cycles):
            await RisingEdge(d.clk)
            await ReadOnly()
            if int(d.retire_valid.value):
                self.retired.append((cyc, int(d.retire_pc.value), int(d.retire_insn.value),
                                     int(d.retire_rd.value), int(d.retire_wdata.value),
                                     int(d.retire_trap.value)))
            if int(d.console_valid.value):
                self.console.append(int(d.console_data.value))
            if int(d.halted.value):
                await RisingEdge(d.clk)
                d.host_en.value = 1
                return int(d.exit_code.value)
        raise AssertionError(f"program did not halt within {max_cycles} cycles; last retired: "
                             f"{[(c, hex(p)) for c, p, *_ in self.retired[-5:]]}")

    def regs(self):
        """Architectural register values reconstructed from the retire trace."""
        r = [0] * 32
        for _c, _pc, _i, rd, wdata, trap in self.retired:
            if not trap and rd:
                r[rd] = wdata
        return r

    def cycle_of(self, pc):
        """Retire cycles of the instruction(s) at ``pc``."""
        return [c for c, p, *_ in self.retired if p == pc]


async def _tb(dut):
    tb = SocTB(dut)
    await tb.start()
    return tb


# ---------------------------------------------------------------------------------------------

@cocotb.test()
async def test_alu_halt_console(dut):
    """ALU results, console output and halting by ecall a7 = 93 with a0 as exit code."""
    tb = await _tb(dut)
    a = Asm()
    a.li("t0", 0x12345678)
    a.li("t1", -5)
    a.add("s0", "t0", "t1")
    a.sub("s1", "t0", "t1")
    a.li("t2", MMIO)
    for ch in b"ok\n":
        a.addi("t3", 0, ch)
        a.sb("t3", "t2", 0)
    a.addi("a0", 0, 42)
    a.exit()
    a.addi("s2", 0, 1)  # must not execute
    code = await tb.run(a.assemble())
    regs = tb.regs()
    assert code == 42, code
    assert regs[8] == (0x12345678 - 5) & 0xFFFFFFFF, hex(regs[8])
    assert regs[9] == 0x12345678 + 5, hex(regs[9])
    assert regs[18] == 0
    assert bytes(tb.console) == b"ok\n", tb.console
    assert tb.retired[-1][5] == 1 and tb.retired[-1][2] == ECALL


@cocotb.test()
async def test_exit_mmio(dut):
    """A store to EXIT halts with the stored word."""
    tb = await _tb(dut)
    a = Asm()
    a.li("t0", MMIO)
    a.li("t1", 0xCAFE)
    a.sw("t1", "t0", 4)
    a.sw("t1", "t0", 0)  # after EXIT: must not reach the console
    a.jal(0, "end")
    a.label("end")
    a.jal(0, "end")
    code = await tb.run(a.assemble())
    assert code == 0xCAFE
    assert bytes(tb.console) == b""


@cocotb.test()
async def test_load_use_one_bubble(dut):
    """A word load followed by a dependent instruction costs exactly one bubble, a byte load
    (sign-extended in W) two; forwarding works."""
    tb = await _tb(dut)
    a = Asm()
    a.li("s0", DMEM)
    a.li("t0", 0x11223344)
    a.sw("t0", "s0", 8)
    a.nop(); a.nop()
    p_ld1 = a.lw("t1", "s0", 8)
    p_use = a.add("t2", "t1", "t1")        # dependent: one bubble
    p_ld2 = a.lw("t3", "s0", 8)
    p_ind = a.add("t4", "t0", "t0")        # independent: no bubble
    p_ld3 = a.lb("t5", "s0", 11)
    p_acc = a.add("t6", "t5", "t5")        # dependent through a byte load: two bubbles
    a.lhu("a1", "s0", 10)
    a.exit("zero")
    await tb.run(a.assemble())
    regs = tb.regs()
    assert regs[7] == 0x22446688, hex(regs[7])
    assert regs[29] == 0x22446688
    assert regs[30] == 0x11 and regs[31] == 0x22
    assert regs[11] == 0x1122
    (c1,), (cu,) = tb.cycle_of(p_ld1), tb.cycle_of(p_use)
    (c2,), (ci,) = tb.cycle_of(p_ld2), tb.cycle_of(p_ind)
    (c3,), (ca,) = tb.cycle_of(p_ld3), tb.cycle_of(p_acc)
    assert cu - c1 == 2, f"dependent add retired {cu - c1} cycles after the load (want 2)"
    assert ci - c2 == 1, f"independent add retired {ci - c2} cycles after the load (want 1)"
    assert ca - c3 == 3, f"dependent of lb retired {ca - c3} cycles after it (want 3)"


@cocotb.test()
async def test_subword_load_use(dut):
    """lb/lh are sign-extended in W, so their dependents wait until then: the extended value
    reaches every source (rs1, rs2, store data, branch operands, jalr base) with any gap;
    lbu/lhu results are ready in M (one bubble, as lw)."""
    tb = await _tb(dut)
    a = Asm()
    a.li("s0", DMEM)
    a.li("t0", 0x80F1_82F3)           # bytes F3 82 F1 80: every byte and half negative
    a.sw("t0", "s0", 12)
    a.nop(); a.nop()
    p_lb = a.lb("t1", "s0", 12)
    p_d0 = a.add("t2", "t1", "zero")     # gap 0 through rs1: two bubbles
    p_lh = a.lh("t3", "s0", 14)
    a.addi("a2", 0, 5)                   # independent
    p_d1 = a.sub("t4", "zero", "t3")     # gap 1 through rs2: one bubble
    a.lb("t5", "s0", 13)
    a.nop(); a.nop()
    a.add("t6", "zero", "t5")            # gap 2: no bubble
    a.lh("a3", "s0", 12)
    a.sw("zero", "s0", 20)
    a.sh("a3", "s0", 20)                 # store data from lh
    a.lw("a4", "s0", 20)
    a.lh("a5", "s0", 20)
    a.li("s1", 0)
    a.lb("a1", "s0", 15)
    a.branch("blt", "a1", "zero", "neg")  # taken only on the sign-extended value
    a.addi("s1", 0, 1)
    a.label("neg")
    p_lbu = a.lbu("a6", "s0", 13)
    p_d2 = a.add("s6", "a6", "zero")     # lbu: one bubble
    a.lhu("s2", "s0", 14)
    a.add("s3", "s2", "s2")
    a.lh("s4", "s0", 14)
    a.branch("bne", "s4", "t3", "bad")
    a.li("s5", 7)
    a.jal(0, "end")
    a.label("bad")
    a.li("s5", 1)
    a.label("end")
    a.exit("zero")
    await tb.run(a.assemble())
    regs = tb.regs()
    assert regs[7] == 0xFFFF_FFF3, f"lb -> rs1, gap 0: {regs[7]:#x}"
    assert regs[29] == 0x0000_7F0F, f"lh -> rs2, gap 1: {regs[29]:#x}"
    assert regs[31] == 0xFFFF_FF82, f"lb -> rs2, gap 2: {regs[31]:#x}"
    assert regs[14] == 0x0000_82F3 and regs[15] == 0xFFFF_82F3, \
        f"lh -> store data: {regs[14]:#x} {regs[15]:#x}"
    assert regs[9] == 0, "blt on a sign-extended lb result was not taken"
    assert regs[22] == 0x82 and regs[19] == 0x1_01E2, f"lbu/lhu: {regs[22]:#x} {regs[19]:#x}"
    assert regs[21] == 7, "lh result differs between two loads of the same half"
    (c0,), (d0,) = tb.cycle_of(p_lb), tb.cycle_of(p_d0)
    (c1,), (d1,) = tb.cycle_of(p_lh), tb.cycle_of(p_d1)
    (c2,), (d2,) = tb.cycle_of(p_lbu), tb.cycle_of(p_d2)
    assert d0 - c0 == 3, f"dependent of lb retired {d0 - c0} cycles after it (want 3)"
    assert d1 - c1 == 3, f"dependent of lh, one instruction between, retired {d1 - c1} cycles " \
        "after it (want 3)"
    assert d2 - c2 == 2, f"dependent of lbu retired {d2 - c2} cycles after it (want 2)"


@cocotb.test()
async def test_branch_flush(dut):
    """Taken branches flush the three younger instructions (3 bubbles); not-taken cost nothing."""
    tb = await _tb(dut)
    a = Asm()
    a.addi("t0", 0, 1)
    a.nop(); a.nop()
    a.word(a._b_enc(1, "zero", "zero", 6))   # not taken, misaligned target: no trap
    p_nt = a.branch("beq", "t0", "zero", "never")
    p_nt_next = a.addi("t1", 0, 7)
    p_tk = a.branch("bne", "t0", "zero", "target")
    a.addi("s1", 0, 1)   # shadow: flushed
    a.addi("s2", 0, 1)   # shadow: flushed
    a.label("never")
    a.addi("s3", 0, 1)
    a.label("target")
    p_tgt = a.addi("t2", 0, 9)
    p_j = a.jal("ra", "after")
    a.addi("s4", 0, 1)   # shadow of jal
    a.label("after")
    p_after = a.addi("t3", "ra", 0)
    a.exit("zero")
    await tb.run(a.assemble())
    regs = tb.regs()
    assert regs[9] == regs[18] == regs[19] == regs[20] == 0, "a flushed instruction retired"
    assert not any(r[5] for r in tb.retired[:-1]), "a not-taken branch trapped"
    assert regs[6] == 7 and regs[7] == 9 and regs[28] == p_j + 4
    (cn,), (cnn,) = tb.cycle_of(p_nt), tb.cycle_of(p_nt_next)
    (ct,), (ctg,) = tb.cycle_of(p_tk), tb.cycle_of(p_tgt)
    (cj,), (ca,) = tb.cycle_of(p_j), tb.cycle_of(p_after)
    assert cnn - cn == 1, f"not-taken branch: next retired after {cnn - cn} cycles"
    assert ctg - ct == 4, f"taken branch: target retired after {ctg - ct} cycles (want 4)"
    assert ca - cj == 4
    assert TAKEN_BRANCH_BUBBLES == 3, "the documented penalty differs from the measured one"


@cocotb.test()
async def test_branch_shadow_no_effect(dut):
    """The three instructions behind a taken branch or jump are still in F2, D and X in the
    cycle after the redirect and are flushed then (``f_redir``): none of them retires, starts
    the divider, issues to the multiplier, stores, writes a CSR, traps, redirects or stalls
    fetch; the target still retires 4 cycles after the branch."""
    tb = await _tb(dut)
    a = Asm()
    a.li("s0", DMEM)
    a.addi("t0", 0, 1)
    a.li("t1", 0x1234)
    a.sw("t1", "s0", 16)
    a.csrw(0x340, "t1")                  # mscratch
    a.addi("t2", 0, 3)
    a.nop(); a.nop(); a.nop()
    pairs = []
    # shadow 1: a load in X and a dependent of it in D (a stall there would delay the target
    # fetch), then a store
    p_b = a.branch("bne", "t0", "zero", "t_1")
    a.lw("s1", "s0", 16)
    a.add("s2", "s1", "s1")
    a.sw("t0", "s0", 16)
    a.label("t_1")
    pairs.append(("load / dependent / store", p_b, a.addi("a1", 0, 1)))
    # shadow 2: a divide (would freeze the pipeline), a jump, a CSR write
    p_b = a.jal("ra", "t_2")
    a.div("s3", "t2", "t0")
    a.jal(0, "bad")
    a.csrw(0x340, "t0")
    a.label("t_2")
    pairs.append(("div / jal / csrw", p_b, a.addi("a2", 0, 2)))
    # shadow 3: a multiply (its result would be handed to the next one), a taken branch, ecall
    a.la("t3", "t_3")
    a.nop(); a.nop()
    p_b = a.jalr(0, "t3", 0)
    a.mul("s4", "t2", "t2")
    a.branch("beq", "zero", "zero", "bad")
    a.ecall()
    a.label("t_3")
    pairs.append(("mul / beq / ecall", p_b, a.addi("a3", 0, 3)))
    # shadow 4: a jump right behind (in X in the cycle after the redirect)
    p_b = a.branch("bge", "t0", "zero", "t_4")
    a.jal(0, "bad")
    a.jal(0, "bad")
    a.jal(0, "bad")
    a.label("t_4")
    pairs.append(("jal / jal / jal", p_b, a.addi("a4", 0, 4)))
    a.mul("s5", "t2", "t1")              # the next multiply gets its own product
    a.lw("s6", "s0", 16)
    a.csrr("s7", 0x340)
    a.jal(0, "end")
    a.label("bad")
    a.addi("s8", 0, 1)
    a.label("end")
    a.exit("zero")
    await tb.run(a.assemble())
    regs = tb.regs()
    assert regs[9] == regs[18] == regs[19] == regs[20] == 0, "a flushed instruction retired"
    assert regs[24] == 0, "a flushed jump or branch redirected"
    assert regs[21] == 3 * 0x1234, f"mul after a flushed mul: {regs[21]:#x}"
    assert regs[22] == 0x1234, "a flushed store wrote memory"
    assert regs[23] == 0x1234, "a flushed CSR write happened"
    assert regs[11] == 1 and regs[12] == 2 and regs[13] == 3 and regs[14] == 4
    assert not any(r[5] for r in tb.retired[:-1]), "a flushed instruction trapped"
    for what, p_b, p_t in pairs:
        (cb,), (ct,) = tb.cycle_of(p_b), tb.cycle_of(p_t)
        assert ct - cb == 1 + TAKEN_BRANCH_BUBBLES, (
            f"shadow {what}: the target retired {ct - cb} cycles after the branch (want 4)")


def _handler(a):
    """Trap handler at label 'handler': s-regs <- mcause/mepc/mtval, mepc += 4, mret."""
    a.label("handler")
    a.csrr("s2", 0x342)
    a.csrr("s3", 0x341)
    a.csrr("s4", 0x343)
    a.addi("s5", "s5", 1)
    a.addi("t6", "s3", 4)
    a.csrw(0x341, "t6")
    a.mret()


@cocotb.test()
async def test_traps(dut):
    """Trap entry (mepc/mcause/mtval), mret return, no side effects of the trapping instruction."""
    undefined = isa.r_type(isa.OPCODE_CUSTOM0, 4, 0, 5, 1, 2)  # funct3[2] = 1: undefined
    cases = [
        ("illegal custom", lambda a: a.word(undefined), 2, lambda pc: undefined),
        ("ecall a7!=93", lambda a: a.ecall(), 11, lambda pc: 0),
        ("ebreak", lambda a: a.ebreak(), 3, lambda pc: pc),
        ("load misaligned", lambda a: a.lw("t1", "s0", 2), 4, lambda pc: DMEM + 2),
        ("load access", lambda a: a.lw("t1", "zero", 16), 5, lambda pc: 16),
        ("store misaligned", lambda a: a.sh("t1", "s0", 1), 6, lambda pc: DMEM + 1),
        ("store access", lambda a: a.sw("t1", "zero", 0), 7, lambda pc: 0),
        ("fetch misaligned", lambda a: a.jalr("t1", "s1", 2), 0, lambda pc: 0x102),
        # bit 1 of the target from a carry out of bit 0 (0x5555 + 1)
        ("jalr carry misaligned", lambda a: a.jalr("t1", "t1", 1), 0, lambda pc: 0x5556),
        ("branch misaligned", lambda a: a.word(a._b_enc(0, "zero", "zero", 6)), 0,
         lambda pc: pc + 6),
        ("jal misaligned", lambda a: a.word(a._j_enc(0, 6)), 0, lambda pc: pc + 6),
        ("bad csr", lambda a: a.csrw(0xC00, "t0"), 2, None),
    ]
    tb = await _tb(dut)
    for name, emit, cause, tval in cases:
        a = Asm()
        a.la("t0", "handler")
        a.csrw(0x305, "t0")
        a.li("s0", DMEM)
        a.li("s1", 0x100)
        a.li("t1", 0x5555)
        a.li("s5", 0)
        a.sw("t1", "s0", 0)
        pc = emit(a)
        a.lw("t2", "s0", 0)        # executes after mret
        a.li("a7", 0)
        a.exit("zero")
        _handler(a)
        await tb.run(a.assemble())
        regs = tb.regs()
        trapped = [r for r in tb.retired[:-1] if r[5]]  # the last one is the exit ecall
        assert len(trapped) == 1 and trapped[0][1] == pc, f"{name}: trap trace {trapped}"
        assert regs[18] == cause, f"{name}: mcause {regs[18]} (want {cause})"
        assert regs[19] == pc, f"{name}: mepc {regs[19]:#x} (want {pc:#x})"
        if tval is not None:
            assert regs[20] == tval(pc), f"{name}: mtval {regs[20]:#x} (want {tval(pc):#x})"
        assert regs[21] == 1 and regs[7] == 0x5555, f"{name}: did not return after mret"
        assert regs[6] == 0x5555, f"{name}: trapping instruction wrote its rd"
        dut._log.info("trap %s: ok", name)


@cocotb.test()
async def test_counters_and_csrs(dut):
    """rdcycle/rdinstret advance, mscratch read/write, misa and mhartid."""
    tb = await _tb(dut)
    a = Asm()
    a.csrr("s0", 0xC02)
    a.nop()
    a.nop()
    a.csrr("s1", 0xC02)
    a.csrr("s2", 0xC00)
    a.li("t0", 0xABCD)
    a.csrrw("s3", 0x340, "t0")
    a.csrr("s4", 0x340)
    a.csrr("s5", 0x301)
    a.csrr("s6", 0xF14)
    if CONFIG == "mpq":
        a.li("t0", 0xFFFFFFFF)
        a.csrw(isa.CSR_MPQ_RQ, "t0")
        a.csrr("s7", isa.CSR_MPQ_RQ)
    a.exit("zero")
    await tb.run(a.assemble())
    r = tb.regs()
    if CONFIG == "mpq":
        assert r[23] == isa.rq_config_mask(0xFFFFFFFF), hex(r[23])
    assert r[9] - r[8] == 3, f"instret advanced by {r[9] - r[8]} over 3 instructions"
    assert r[18] > 0 and r[20] == 0xABCD
    assert r[21] >> 30 == 1 and r[21] & (1 << 12) and r[21] & (1 << 8)
    assert bool(r[21] & (1 << 23)) == (CONFIG == "mpq")
    assert r[22] == 0


@cocotb.test()
async def test_muldiv(dut):
    """MUL*/DIV*/REM* incl. corner cases, with the dependent instruction right after."""
    import numpy as np

    from rvmpq.sw import golden

    seed = int(os.environ.get("RVMPQ_SEED", "1"), 0)
    rng = random.Random(seed)
    dut._log.info("seed %d (replay: RVMPQ_SEED=%d)", seed, seed)
    pairs = [(0x80000000, 0xFFFFFFFF), (7, 0), (0x80000000, 0), (-7 & 0xFFFFFFFF, 2),
             (7, -2 & 0xFFFFFFFF)] + [(rng.getrandbits(32), rng.getrandbits(32)) for _ in range(4)]
    ops = ["mul", "mulh", "mulhsu", "mulhu", "div", "divu", "rem", "remu"]

    def ref(op, x, y):
        if op.startswith("mul"):
            return int(golden.mul(np.uint32(x), np.uint32(y), op))
        sx = x - (1 << 32) if x >> 31 else x
        sy = y - (1 << 32) if y >> 31 else y
        if y == 0:
            return {"div": 0xFFFFFFFF, "divu": 0xFFFFFFFF, "rem": x, "remu": x}[op]
        if op == "divu":
            return x // y
        if op == "remu":
            return x % y
        q = abs(sx) // abs(sy) * (1 if (sx < 0) == (sy < 0) else -1)
        return (q if op == "div" else sx - q * sy) & 0xFFFFFFFF

    a = Asm()
    expect = {}
    for x, y in pairs:
        for op in ops:
            a.li("t0", x)
            a.li("t1", y)
            getattr(a, op)("t2", "t0", "t1")
            pc = a.add("t3", "t2", "zero")   # dependent right after
            expect[pc] = (op, x, y, ref(op, x, y))
    a.exit("zero")
    await tb_run(dut, a, expect)


async def tb_run(dut, a, expect, max_cycles=20000):
    """Run ``a``'s program; check the ``wdata`` retired at each pc of ``expect`` against
    the last item of its entry. Returns the :class:`SocTB`."""
    tb = await _tb(dut)
    await tb.run(a.assemble(), max_cycles=max_cycles)
    got = {pc: wdata for _c, pc, _i, rd, wdata, trap in tb.retired if pc in expect}
    bad = [(hex(pc), e[:-1], hex(e[-1]), hex(got.get(pc, -1))) for pc, e in expect.items()
           if got.get(pc) != e[-1]]
    assert not bad, f"{len(bad)} wrong results, e.g. {bad[:4]}"
    return tb


@cocotb.test(skip=CONFIG != "mpq")
async def test_mpq_instructions(dut):
    """mpq.dot.* (rd as accumulator, dependent right after), mpq.rq and mpq.rqp vs the golden."""
    import numpy as np

    from rvmpq.sw import golden

    seed = int(os.environ.get("RVMPQ_SEED", "1"), 0)
    rng = random.Random(seed)
    dut._log.info("seed %d (replay: RVMPQ_SEED=%d)", seed, seed)
    a = Asm()
    expect = {}
    for row in isa.CUSTOM_INSTRUCTIONS:
        if row.kind != "dot":
            continue
        x, y, acc = rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32)
        a.li("t0", x)
        a.li("t1", y)
        a.li("t2", acc)
        a.custom(row.name, "t2", "t0", "t1")
        pc = a.add("t3", "t2", "zero")
        want = int(golden.dot(np.uint32(x), np.uint32(y), row.width, row.a_signed,
                              row.b_signed, acc=np.uint32(acc)))
        expect[pc] = (row.name, x, y, want)
        # back-to-back chain through rd
        a.custom(row.name, "t2", "t0", "t1")
        pc = a.custom(row.name, "t2", "t0", "t1")
        want2 = int(golden.dot(np.uint32(x), np.uint32(y), row.width, row.a_signed,
                               row.b_signed, acc=np.uint32(want)))
        want3 = int(golden.dot(np.uint32(x), np.uint32(y), row.width, row.a_signed,
                               row.b_signed, acc=np.uint32(want2)))
        expect[pc] = (row.name + " chained", x, y, want3)
    for _ in range(12):
        bits = rng.choice([2, 4, 8, 16])
        signed_ = rng.random() < 0.5
        shift = rng.choice([0, 1, rng.randrange(64)])
        zp = rng.randrange(-32768, 32768) if rng.random() < 0.3 else rng.randrange(-8, 8)
        accv = rng.getrandbits(32) >> rng.randrange(32)
        accv = accv if rng.random() < 0.5 else (-accv) & 0xFFFFFFFF
        mult = rng.getrandbits(32) >> rng.randrange(32)
        cfg = isa.rq_config_pack(shift, zp, bits, signed_)
        rd0 = rng.getrandbits(32)
        a.li("t0", cfg)
        a.csrw(isa.CSR_MPQ_RQ, "t0")
        a.li("t1", accv)
        a.li("t2", mult)
        a.li("t4", rd0)
        a.custom("mpq.rq", "t3", "t1", "t2")
        sacc = accv - (1 << 32) if accv >> 31 else accv
        smult = mult - (1 << 32) if mult >> 31 else mult
        y = int(golden.requant(np.int64(sacc), np.int64(smult), shift, zp, bits, signed_))
        pc = a.add("t5", "t3", "zero")
        expect[pc] = ("mpq.rq", (sacc, smult, shift, zp, bits, signed_), 0, y & 0xFFFFFFFF)
        pc = a.custom("mpq.rqp", "t4", "t1", "t2")
        p = int(golden.rqpack(np.uint32(rd0), np.int64(sacc), np.int64(smult), shift, zp, bits,
                              signed_))
        expect[pc] = ("mpq.rqp", (rd0, sacc, smult, shift, zp, bits, signed_), 0, p)
    a.exit("zero")
    await tb_run(dut, a, expect)


@cocotb.test(skip=CONFIG != "mpq")
async def test_mpq_timing(dut):
    """The latencies in the ISA table match the pipeline (dependent instruction right after)."""
    tb = await _tb(dut)
    a = Asm()
    a.li("t0", isa.rq_config_pack(3, 0, 8, True))
    a.csrw(isa.CSR_MPQ_RQ, "t0")
    a.li("t1", 1000)
    a.li("t2", 3)
    a.nop(); a.nop(); a.nop()
    pairs = []
    for row in (isa.BY_NAME["mpq.dot.w8.ss"], isa.BY_NAME["mpq.rq"], isa.BY_NAME["mpq.rqp"]):
        # a long operation in X freezes the whole pipeline, also the two older instructions in
        # M and W: measure from the third instruction before it
        p0 = a.nop()
        a.nop(); a.nop()
        a.custom(row.name, "t3", "t1", "t2")
        p1 = a.add("t4", "t3", "t3")
        pairs.append((row, p0, p1))
        a.nop(); a.nop(); a.nop()
    # accumulator rows: an ldot / accld, then a read of the same accumulator
    a.li("s0", DMEM)
    for row in (isa.BY_NAME["mpq.ldot.w8.ss"], isa.BY_NAME["mpq.accld"]):
        p0 = a.nop()
        a.nop(); a.nop()
        if row.kind == "ldot":
            a.ldot(row.name, 5, "t1", 0, "s0")
        else:
            a.accld(5, 0, "s0")
        p1 = a.accrd("t4", 5)
        pairs.append((row, p0, p1))
        a.nop(); a.nop(); a.nop()
    # mpq.rq, its result used at once as the accumulator of a dot product (the same latency)
    p0 = a.nop()
    a.nop(); a.nop()
    a.custom("mpq.rq", "t3", "t1", "t2")
    p1 = a.custom("mpq.dot.w8.ss", "t3", "t1", "t2")
    pairs.append((isa.BY_NAME["mpq.rq"], p0, p1))
    a.nop(); a.nop(); a.nop()
    # mpq.rqpa, its result used at once
    p0 = a.nop()
    a.nop(); a.nop()
    a.rqpa("t3", "t2", 5)
    p1 = a.add("t4", "t3", "t3")
    pairs.append((isa.BY_NAME["mpq.rqpa"], p0, p1))
    a.nop(); a.nop(); a.nop()
    # one per cycle: a chain of mpq.rqp / mpq.rqpa into one rd, ldots into one accumulator
    streams = []
    for kind in ("rqp", "rqpa", "ldot"):
        a.nop(); a.nop(); a.nop()
        first = a.pc
        for i in range(6):
            if kind == "rqp":
                a.custom("mpq.rqp", "t3", "t1", "t2")
            elif kind == "rqpa":
                a.rqpa("t3", "t2", i)   # distinct accumulators: a re-read would wait for the re-arm
            else:
                a.ldot("mpq.ldot.w8.us", 7, "t1", i, "s0")
        streams.append((kind, first, a.pc - 4))
    p_ind0 = a.custom("mpq.dot.w8.ss", "t3", "t1", "t2")
    p_ind1 = a.add("t4", "t1", "t1")
    a.exit("zero")
    await tb.run(a.assemble())
    for row, p0, p1 in pairs:
        (c0,), (c1,) = tb.cycle_of(p0), tb.cycle_of(p1)
        assert c1 - c0 - 3 == row.latency, (
            f"{row.name}: it and a dependent instruction took {c1 - c0 - 2} cycles; the ISA "
            f"table says latency {row.latency} (+1 for the dependent instruction)")
    (c0,), (c1,) = tb.cycle_of(p_ind0), tb.cycle_of(p_ind1)
    assert c1 - c0 == 1, "an independent instruction after a dot product should not wait"
    for kind, first, last in streams:
        (c0,), (c1,) = tb.cycle_of(first), tb.cycle_of(last)
        assert c1 - c0 == 5, f"6 x {kind} back to back took {c1 - c0 + 1} cycles (want 6)"


@cocotb.test(skip=CONFIG != "mpq")
async def test_mpq_acc_pipeline(dut):
    """Accumulator updates only for committed mpq.ldot/accld: one in X when an older
    instruction traps in M, one in the shadow of a taken branch and one that faults itself do
    not change ACC; an ldot just ahead of a trapping instruction (in the unit when the trap is
    taken) does; a read of ACC right after an ldot waits for it (interlock), and a second read
    right after the first sees the re-armed bias."""
    tb = await _tb(dut)
    a = Asm()
    a.la("t0", "handler")
    a.csrw(0x305, "t0")
    a.li("s0", DMEM)
    a.li("s5", 0)
    a.li("t1", 0x01010101)          # u8 lanes 1; the weights word at DMEM holds 4, 3, 2, 1
    a.accld(1, 1, "s0")             # ACC1..4 = 100 (DMEM word 1)
    a.accld(2, 1, "s0")
    a.accld(3, 1, "s0")
    a.accld(4, 1, "s0")
    # 1. an older load traps in M while the ldot is in X: flushed (the handler returns to it,
    #    so it executes exactly once: ACC1 = 110)
    a.lw("t2", "s0", 2)             # misaligned -> trap
    a.ldot("mpq.ldot.w8.us", 1, "t1", 0, "s0")
    # 2. an ldot in the shadow of a taken branch
    a.branch("beq", "zero", "zero", "over")
    a.ldot("mpq.ldot.w8.us", 2, "t1", 0, "s0")
    a.ldot("mpq.ldot.w8.us", 2, "t1", 0, "s0")
    a.label("over")
    # 3. an ldot that faults itself (outside DMEM), then a good one: ACC3 = 110
    a.ldot("mpq.ldot.w8.us", 3, "t1", 0, "zero")
    a.ldot("mpq.ldot.w8.us", 3, "t1", 0, "s0")
    # 4. ldots right before a trapping instruction: committed, ACC4 = 120
    a.ldot("mpq.ldot.w8.us", 4, "t1", 0, "s0")
    a.ldot("mpq.ldot.w8.us", 4, "t1", 0, "s0")
    a.ebreak()
    # read-outs, each right after the last write of its accumulator in 5.
    p1 = a.accrd("a1", 1)
    p2 = a.accrd("a2", 2)
    p3 = a.accrd("a3", 3)
    p4 = a.accrd("a4", 4)
    # 5. interlock: ldot then an immediate read (ACC5 = 100 + 10 + 10)
    a.accld(5, 1, "s0")
    a.ldot("mpq.ldot.w8.us", 5, "t1", 0, "s0")
    pl = a.ldot("mpq.ldot.w8.us", 5, "t1", 0, "s0")
    p5 = a.accrd("a5", 5)
    # 6. the read re-armed ACC5 with its bias: a second read right after returns 100
    p6 = a.accrd("a6", 5)
    a.li("a7", 0)
    a.exit("zero")
    _handler(a)
    await tb.run(a.assemble(), data={DMEM: 0x01020304, DMEM + 4: 100})
    regs = tb.regs()
    got = {pc: wd for _c, pc, _i, rd, wd, trap in tb.retired if rd}
    assert got[p1] == 110, f"ACC1 = {got[p1]}: an ldot flushed by an older trap updated it"
    assert got[p2] == 100, f"ACC2 = {got[p2]}: an ldot in a branch shadow updated it"
    assert got[p3] == 110, f"ACC3 = {got[p3]}: a faulting ldot changed it (or the next did not)"
    assert got[p4] == 120, f"ACC4 = {got[p4]}: ldots before a trap were lost"
    assert got[p5] == 120, f"ACC5 = {got[p5]}: the read did not wait for the ldot"
    assert got[p6] == 100, f"ACC5 = {got[p6]} after a read: not re-armed with its bias (100)"
    assert regs[21] == 3, f"{regs[21]} traps taken (want 3: lw, faulting ldot, ebreak)"
    (cl,), (cr,) = tb.cycle_of(pl), tb.cycle_of(p5)
    assert cr - cl == isa.LDOT_LATENCY, (
        f"accrd after ldot retired {cr - cl} cycles later; the table says {isa.LDOT_LATENCY}")


@cocotb.test(skip=CONFIG != "baseline")
async def test_baseline_custom_illegal(dut):
    """On the baseline core every MPQ instruction and the mpq_rq CSR trap as illegal."""
    tb = await _tb(dut)
    a = Asm()
    a.la("t0", "handler")
    a.csrw(0x305, "t0")
    a.li("s5", 0)
    words = [isa.encode(row.name, 7, 5, 6) for row in isa.CUSTOM_INSTRUCTIONS[:3]]
    words += [isa.encode("mpq.rq", 7, 5, 6), isa.encode("mpq.rqp", 7, 5, 6),
              isa.encode("mpq.ldot.w8.us", 3, 5, 6, off=1), isa.encode("mpq.accld", 3, 5, 0),
              isa.encode("mpq.rqpa", 7, 5, 3), isa.encode("mpq.accrd", 7, 0, 3)]
    for w in words:
        a.word(w)
    a.csrr("t3", isa.CSR_MPQ_RQ)
    a.exit("zero")
    _handler(a)
    await tb.run(a.assemble())
    traps = [r for r in tb.retired if r[5]]
    assert len(traps) == len(words) + 2, len(traps)  # + the CSR read + the final ecall
    assert tb.regs()[21] == len(words) + 1
