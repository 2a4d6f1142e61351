"""Differential random testing: the RTL against Unicorn and the ISS.

A seeded generator writes a straight-line-ish program of random RV32IM instructions (every
format, dependent back-to-back ops, load-use pairs, taken and not-taken forward branches, JAL /
JALR forward jumps, loads and stores into a scratch DMEM area, MUL/DIV corner values) and, for
config ``mpq``, the custom instructions and writes of the ``mpq_rq`` CSR. The program ends by
dumping x1..x31 into DMEM and exiting with ``ecall`` (a7 = 93).

References:

* **Unicorn** (RISCV32) for RV32IM; a custom instruction raises ``UC_HOOK_INTR`` (intno 2, pc + 4
  reported) and is emulated there with the ISS's custom extension (golden model), as is the
  ``mpq_rq`` CSR that Unicorn does not know;
* **the ISS** (:mod:`rvmpq.sw.iss`) for everything, including the retired-instruction trace.

The RTL (unless ``--no-rtl``; through :mod:`rvmpq.sw.runtime.runner`) is compared on its final registers and
scratch memory (signature dump) against Unicorn and on its retire trace against the ISS.

::

    python -m rvmpq.sw.fuzz --count 200 [--seed S] [--config mpq|baseline] [--no-rtl]

Each program's seed is ``seed + i``; a mismatch prints the command that replays exactly it.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from dataclasses import dataclass, field

from rvmpq.sw.iss import MASK, Iss, Retire, s32, same_retire
from rvmpq.sw.runtime.elf import DEFAULT_MAP, ElfImage, Segment

__all__ = [
    "FuzzProgram",
    "generate",
    "run_unicorn",
    "run_iss",
    "run_rtl",
    "check_program",
    "fuzz",
    "main",
]

# ---- a tiny independent RV32 assembler --------------------------------------------------------


def r_type(f7, rs2, rs1, f3, rd, op):
    """R-type word."""
    return (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op


def i_type(imm, rs1, f3, rd, op):
    """I-type word (12-bit signed immediate)."""
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op


def s_type(imm, rs2, rs1, f3, op=0x23):
    """S-type word."""
    imm &= 0xFFF
    return ((imm >> 5) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((imm & 31) << 7) | op


def b_type(imm, rs2, rs1, f3):
    """B-type word (byte offset, even)."""
    imm &= 0x1FFF
    return (((imm >> 12) & 1) << 31) | (((imm >> 5) & 0x3F) << 25) | (rs2 << 20) | (rs1 << 15) \
        | (f3 << 12) | (((imm >> 1) & 0xF) << 8) | (((imm >> 11) & 1) << 7) | 0x63


def u_type(imm20, rd, op):
    """U-type word (upper 20 bits)."""
    return ((imm20 & 0xFFFFF) << 12) | (rd << 7) | op


def j_type(imm, rd):
    """JAL word (byte offset, even)."""
    imm &= 0x1FFFFF
    return (((imm >> 20) & 1) << 31) | (((imm >> 1) & 0x3FF) << 21) | (((imm >> 11) & 1) << 20) \
        | (((imm >> 12) & 0xFF) << 12) | (rd << 7) | 0x6F


def li(rd, value):
    """``lui`` + ``addi`` loading a 32-bit value."""
    value &= MASK
    lo = s32(value << 20) >> 20  # sign-extended low 12 bits
    hi = ((value - lo) >> 12) & 0xFFFFF
    return [u_type(hi, rd, 0x37), i_type(lo, rd, 0, rd, 0x13)]


def csrrw(rd, csr, rs1):
    """``csrrw rd, csr, rs1``."""
    return (csr << 20) | (rs1 << 15) | (1 << 12) | (rd << 7) | 0x73


ECALL = 0x00000073
NOP = 0x00000013

CORNERS = [0, 1, 2, 3, MASK, MASK - 1, 0x8000_0000, 0x7FFF_FFFF, 0x8000_0001, 0xFFFF_0000,
           0x0000_FFFF, 0x5555_5555, 0xAAAA_AAAA, 0x0001_0000, 0xFFFF_8000, 0x0000_7FFF]

#: register reserved as the scratch-area base (never a random destination)
BASE = 27
SCRATCH_OFF = 0x400   # scratch area inside DMEM (offset from the DMEM base)
SCRATCH_LEN = 0x400
DUMP_OFF = 0x100      # x1..x31 are dumped here at the end
DMEM_INIT_LEN = SCRATCH_OFF + SCRATCH_LEN

R_OPS = [(0, 0), (0x20, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0x20, 5), (0, 6), (0, 7)]
M_OPS = [(1, f3) for f3 in range(8)]
I_OPS = [0, 2, 3, 4, 6, 7]


@dataclass
class FuzzProgram:
    """A generated program: instruction words at the IMEM base and initial DMEM bytes."""

    seed: int
    config: str
    words: list[int]
    dmem: bytes
    ecall_pc: int
    mm: object = DEFAULT_MAP
    notes: list[str] = field(default_factory=list)

    def elf_image(self) -> ElfImage:
        """The program as an :class:`ElfImage` with the dump + scratch area as signature."""
        code = b"".join(struct.pack("<I", w) for w in self.words)
        img = ElfImage(entry=self.mm.imem_base, path=f"<fuzz seed {self.seed}>")
        img.segments = [Segment(self.mm.imem_base, code, 5), Segment(self.mm.dmem_base, self.dmem, 6)]
        img.symbols = {"begin_signature": self.mm.dmem_base + DUMP_OFF,
                       "end_signature": self.mm.dmem_base + SCRATCH_OFF + SCRATCH_LEN}
        return img


def _custom_ops():
    """``(encode, names, rq_pack_random)`` for the custom extension, or None."""
    from rvmpq.hw import isa  # noqa: PLC0415
    names = [d.name for d in isa.CUSTOM_INSTRUCTIONS]
    return isa, names


def _custom_words(isa, rng: random.Random, name: str, dst, src) -> list[int]:
    """Words for one random use of custom instruction ``name``.

    Register-format rows get random registers. The memory-operand rows (``mpq.ldot``,
    ``mpq.accld``) address the scratch area through the reserved base register ``BASE`` with a
    random word offset, often as a burst into one accumulator (back-to-back accumulation),
    sometimes followed at once by a read of that accumulator (the read interlock).
    """
    d = isa.BY_NAME[name]
    fmt = getattr(d, "fmt", "R")
    nacc = int(getattr(isa, "NUM_ACC", 16))
    max_off = min(128, SCRATCH_LEN // 4)
    if fmt == "L":
        k = rng.randrange(nacc)
        out = [int(isa.encode(name, k, BASE, src(), off=rng.randrange(max_off)))
               for _ in range(rng.choice((1, 1, 2, 4)))]
        if rng.random() < 0.3:
            out.append(int(isa.encode("mpq.accrd", dst(), 0, k)))
        return out
    if fmt == "LA":
        return [int(isa.encode(name, rng.randrange(nacc), BASE, 0, off=rng.randrange(max_off)))]
    if fmt == "K":
        return [int(isa.encode(name, dst(), src(), rng.randrange(nacc)))]
    if fmt == "KR":
        return [int(isa.encode(name, dst(), 0, rng.randrange(nacc)))]
    return [int(isa.encode(name, dst(), src(), src()))]


def _random_rq_config(isa, rng: random.Random) -> int:
    """A random ``mpq_rq`` CSR value through the ISA's own packer."""
    import inspect  # noqa: PLC0415
    params = inspect.signature(isa.rq_config_pack).parameters
    vals = {"shift": rng.randrange(64), "zp": rng.randrange(-(1 << 15), 1 << 15),
            "bits": rng.choice((2, 4, 8, 16)), "out_signed": rng.random() < 0.5}
    return int(isa.rq_config_pack(**{k: v for k, v in vals.items() if k in params}))


def generate(seed: int, config: str = "mpq", length: int = 200) -> FuzzProgram:
    """Generate one random program.

    Parameters
    ----------
    seed : int
        Everything is derived from it.
    config : {"mpq", "baseline"}
        ``"mpq"`` mixes in custom instructions.
    length : int
        Approximate number of random instructions.
    """
    rng = random.Random(seed)
    mm = DEFAULT_MAP
    w: list[int] = []
    regs = [r for r in range(1, 32) if r != BASE]

    def val():
        return rng.choice(CORNERS) if rng.random() < 0.4 else rng.getrandbits(32)

    # initial register state
    for r in regs:
        w += li(r, val())
    w += li(BASE, mm.dmem_base + SCRATCH_OFF)
    custom = None
    if config == "mpq":
        try:
            custom = _custom_ops()
        except ImportError:
            custom = None
    recent: list[int] = []

    def src():
        if recent and rng.random() < 0.5:
            return rng.choice(recent)  # back-to-back dependency
        return rng.choice(regs + [0])

    def dst():
        r = rng.choice(regs + [0] if rng.random() < 0.05 else regs)
        recent.append(r)
        del recent[:-3]
        return r

    while len(w) < length + 70:
        k = rng.random()
        if k < 0.25:
            f7, f3 = rng.choice(R_OPS)
            w.append(r_type(f7, src(), src(), f3, dst(), 0x33))
        elif k < 0.37:
            f7, f3 = rng.choice(M_OPS)
            if rng.random() < 0.4:  # corner operands
                a, b = rng.choice(regs), rng.choice(regs)
                w += li(a, rng.choice(CORNERS)) + li(b, rng.choice(CORNERS))
                w.append(r_type(f7, b, a, f3, dst(), 0x33))
            else:
                w.append(r_type(f7, src(), src(), f3, dst(), 0x33))
        elif k < 0.52:
            f3 = rng.choice(I_OPS + [1, 5, 5])
            if f3 == 1:
                w.append(i_type(rng.randrange(32), src(), 1, dst(), 0x13))
            elif f3 == 5:
                w.append(i_type(rng.randrange(32) | (0x400 if rng.random() < 0.5 else 0),
                                src(), 5, dst(), 0x13))
            else:
                w.append(i_type(rng.randrange(-2048, 2048), src(), f3, dst(), 0x13))
        elif k < 0.56:
            w.append(u_type(rng.getrandbits(20), dst(), rng.choice((0x37, 0x17))))
        elif k < 0.68:  # load (+ a use right after)
            f3, size = rng.choice([(0, 1), (1, 2), (2, 4), (4, 1), (5, 2)])
            off = rng.randrange(0, SCRATCH_LEN, size)
            rd = dst()
            w.append(i_type(off, BASE, f3, rd, 0x03))
            if rng.random() < 0.5:
                w.append(r_type(0, src(), rd, rng.choice((0, 4, 6)), dst(), 0x33))
        elif k < 0.78:  # store
            f3, size = rng.choice([(0, 1), (1, 2), (2, 4)])
            w.append(s_type(rng.randrange(0, SCRATCH_LEN, size), src(), BASE, f3))
        elif k < 0.86:  # forward branch over 1..3 instructions
            skip = rng.randint(1, 3)
            w.append(b_type(4 * (skip + 1), src(), src(), rng.choice((0, 1, 4, 5, 6, 7))))
            for _ in range(skip):
                w.append(i_type(rng.randrange(-2048, 2048), src(), 0, dst(), 0x13))
        elif k < 0.89:  # jal forward
            skip = rng.randint(0, 2)
            w.append(j_type(4 * (skip + 1), dst()))
            for _ in range(skip):
                w.append(i_type(1, src(), 0, dst(), 0x13))
        elif k < 0.91:  # auipc + jalr forward
            t = rng.choice(regs)
            rd = dst()
            skip = rng.randint(0, 2)
            w += [u_type(0, t, 0x17), i_type(4 * (skip + 2), t, 0, rd, 0x67)]
            for _ in range(skip):
                w.append(i_type(1, src(), 0, dst(), 0x13))
        elif custom is not None:
            isa, names = custom
            if rng.random() < 0.1:
                t = rng.choice(regs)
                w += li(t, _random_rq_config(isa, rng)) + [csrrw(0, int(isa.CSR_MPQ_RQ), t)]
            else:
                w += _custom_words(isa, rng, rng.choice(names), dst, src)
        else:
            f7, f3 = rng.choice(R_OPS + M_OPS)
            w.append(r_type(f7, src(), src(), f3, dst(), 0x33))
    # dump x1..x31, exit(0)
    for r in range(1, 32):
        w.append(s_type(DUMP_OFF - SCRATCH_OFF + 4 * (r - 1), r, BASE, 2))
    w += li(17, 93) + li(10, 0)
    ecall_pc = mm.imem_base + 4 * len(w)
    w += [ECALL, NOP]
    dmem = bytes(SCRATCH_OFF) + rng.randbytes(SCRATCH_LEN)
    return FuzzProgram(seed, config, w, dmem, ecall_pc, mm)


# ---- references -------------------------------------------------------------------------------


@dataclass
class RefState:
    """Final architectural state of one run."""

    regs: list[int]
    dmem: bytes                       # DMEM from DUMP_OFF to the end of the scratch area
    trace: list[Retire] | None = None
    exit_code: int | None = None


def run_unicorn(prog: FuzzProgram, max_insns: int = 200_000) -> RefState:
    """Run ``prog`` on Unicorn; custom instructions / the mpq_rq CSR are emulated in the hook."""
    from unicorn import UC_ARCH_RISCV, UC_HOOK_INTR, UC_MODE_RISCV32, Uc, UcError  # noqa: PLC0415
    from unicorn import riscv_const as rc  # noqa: PLC0415

    mm = prog.mm
    uc = Uc(UC_ARCH_RISCV, UC_MODE_RISCV32)
    uc.mem_map(mm.imem_base, mm.imem_size)
    uc.mem_map(mm.dmem_base, mm.dmem_size)
    uc.mem_write(mm.imem_base, b"".join(struct.pack("<I", w) for w in prog.words))
    uc.mem_write(mm.dmem_base, prog.dmem)
    xregs = [getattr(rc, f"UC_RISCV_REG_X{i}") for i in range(32)]
    helper = Iss(prog.config) if prog.config == "mpq" else None
    errors: list[str] = []

    def on_intr(uc_, intno, _ud):
        pc = uc_.reg_read(rc.UC_RISCV_REG_PC) - 4
        insn = struct.unpack("<I", uc_.mem_read(pc, 4))[0]
        if intno != 2 or helper is None:
            errors.append(f"unicorn: exception {intno} at pc 0x{pc:08x} insn 0x{insn:08x}")
            uc_.emu_stop()
            return
        # emulate the instruction on the helper ISS with Unicorn's registers
        helper.x = [uc_.reg_read(r) & MASK for r in xregs]
        helper.x[0] = 0
        helper.pc = pc
        # memory-operand custom instructions read DMEM: give the helper Unicorn's word
        ea = (helper.x[(insn >> 15) & 31] + 4 * (insn >> 25)) & MASK
        if (insn & 0x7F) in (helper.custom.isa.OPCODE_CUSTOM2, helper.custom.isa.OPCODE_CUSTOM3) \
                and ea % 4 == 0 and \
                mm.dmem_base <= ea <= mm.dmem_base + mm.dmem_size - 4:
            helper.write_bytes(ea, bytes(uc_.mem_read(ea, 4)))
        try:
            rd, value, npc = helper._execute(pc, insn)  # noqa: SLF001
        except Exception as exc:  # noqa: BLE001
            errors.append(f"unicorn hook: 0x{insn:08x} at 0x{pc:08x}: {exc!r}")
            uc_.emu_stop()
            return
        if rd:
            uc_.reg_write(xregs[rd], value & MASK)
        uc_.reg_write(rc.UC_RISCV_REG_PC, npc)

    uc.hook_add(UC_HOOK_INTR, on_intr)
    try:
        uc.emu_start(mm.imem_base, prog.ecall_pc, count=max_insns)
    except UcError as exc:
        errors.append(f"unicorn: {exc}")
    if errors:
        raise RuntimeError("; ".join(errors))
    pc = uc.reg_read(rc.UC_RISCV_REG_PC)
    if pc != prog.ecall_pc:
        raise RuntimeError(f"unicorn stopped at 0x{pc:08x}, not at the final ecall")
    regs = [0] + [uc.reg_read(r) & MASK for r in xregs[1:]]
    mem = bytes(uc.mem_read(mm.dmem_base + DUMP_OFF, SCRATCH_OFF + SCRATCH_LEN - DUMP_OFF))
    return RefState(regs, mem, None, regs[10])


def run_iss(prog: FuzzProgram, max_insns: int = 200_000) -> RefState:
    """Run ``prog`` on the ISS, keeping the trace."""
    iss = Iss(prog.config, prog.mm)
    iss.load_words(prog.words)
    iss.write_bytes(prog.mm.dmem_base, prog.dmem)
    res = iss.run(max_insns, trace=True)
    if not res.halted:
        raise RuntimeError(f"ISS did not reach the ecall in {max_insns} instructions")
    mem = iss.read_bytes(prog.mm.dmem_base + DUMP_OFF, SCRATCH_OFF + SCRATCH_LEN - DUMP_OFF)
    return RefState(list(iss.x), mem, res.trace, res.exit_code)


def run_rtl(prog: FuzzProgram, max_cycles: int = 2_000_000) -> RefState:
    """Run ``prog`` on the Verilator model of the SoC (needs rvmpq.hw.soc)."""
    from rvmpq.sw.runtime.runner import run_elf  # noqa: PLC0415
    res = run_elf(prog.elf_image(), config=prog.config, max_cycles=max_cycles,
                  signature=True, trace=True)
    if res.timed_out:
        raise RuntimeError(f"RTL did not halt in {max_cycles} cycles")
    mem = b"".join(struct.pack("<I", v) for v in res.signature)
    regs = [0] + [int.from_bytes(mem[4 * i:4 * i + 4], "little") for i in range(31)]
    # registers x10/x17 were overwritten by the exit sequence after the dump: the dump is what
    # we compare; take the live value of a0 from the exit code
    return RefState(regs, mem, res.trace, res.exit_code)


def _diff_state(name_a: str, a: RefState, name_b: str, b: RefState, regs: bool = True) -> list[str]:
    out = []
    if regs:
        for i in range(1, 32):
            if a.regs[i] != b.regs[i]:
                out.append(f"x{i}: {name_a}=0x{a.regs[i]:08x} {name_b}=0x{b.regs[i]:08x}")
    if a.dmem != b.dmem:
        for i in range(0, len(a.dmem), 4):
            if a.dmem[i:i + 4] != b.dmem[i:i + 4]:
                addr = DEFAULT_MAP.dmem_base + DUMP_OFF + i
                out.append(f"mem[0x{addr:08x}]: {name_a}={a.dmem[i:i + 4].hex()} "
                           f"{name_b}={b.dmem[i:i + 4].hex()}")
                if len(out) > 12:
                    break
    return out


def _diff_trace(ref: list[Retire], dut: list[Retire]) -> list[str]:
    for i, (r, d) in enumerate(zip(ref, dut)):
        rw = r.wdata if r.rd else 0
        dw = d.wdata if d.rd else 0
        if not same_retire(r, d):
            return [f"trace #{i}: iss pc=0x{r.pc:08x} insn=0x{r.insn:08x} rd=x{r.rd} "
                    f"wdata=0x{rw:08x} trap={int(r.trap)} | rtl pc=0x{d.pc:08x} "
                    f"insn=0x{d.insn:08x} rd=x{d.rd} wdata=0x{dw:08x} trap={int(d.trap)}"]
    if len(ref) != len(dut):
        return [f"trace length: iss {len(ref)} rtl {len(dut)}"]
    return []


def check_program(prog: FuzzProgram, rtl: bool = True, unicorn: bool = True) -> list[str]:
    """Run one program on the references (and the RTL); return the mismatches (empty = pass)."""
    iss = run_iss(prog)
    problems = []
    if unicorn:
        uni = run_unicorn(prog)
        problems += _diff_state("unicorn", uni, "iss", iss)
    if rtl:
        dut = run_rtl(prog)
        # the dump holds x1..x31 as they were before the exit sequence
        ref_dump = RefState(iss.regs, iss.dmem)
        problems += _diff_state("iss", ref_dump, "rtl", dut, regs=False)
        problems += _diff_trace(iss.trace or [], dut.trace or [])
    return problems


def replay_command(seed: int, config: str, length: int, rtl: bool) -> str:
    """The command line that re-runs exactly one program."""
    return (f"python -m rvmpq.sw.fuzz --count 1 --seed {seed} --config {config} "
            f"--length {length}{'' if rtl else ' --no-rtl'}")


def fuzz(count: int, seed: int, config: str = "mpq", length: int = 200, rtl: bool = True,
         unicorn: bool = True, log=print) -> list[tuple[int, list[str]]]:
    """Run ``count`` programs with seeds ``seed .. seed+count-1``; returns the failures."""
    fails = []
    t0 = time.monotonic()
    for i in range(count):
        s = seed + i
        prog = generate(s, config, length)
        try:
            problems = check_program(prog, rtl=rtl, unicorn=unicorn)
        except RuntimeError as exc:
            problems = [str(exc)]
        if problems:
            fails.append((s, problems))
            log(f"MISMATCH seed={s} config={config}:")
            for p in problems[:12]:
                log(f"  {p}")
            log(f"  replay: {replay_command(s, config, length, rtl)}")
        if count >= 20 and (i + 1) % max(1, count // 10) == 0:
            log(f"  {i + 1}/{count} programs, {len(fails)} failing, "
                f"{time.monotonic() - t0:.1f} s")
    return fails


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m rvmpq.sw.fuzz --count N [--seed S] [--config mpq]``."""
    p = argparse.ArgumentParser(prog="python -m rvmpq.sw.fuzz",
                                description="differential random testing of the core")
    p.add_argument("--count", type=int, default=100, help="number of programs")
    p.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    p.add_argument("--config", default="mpq", choices=("mpq", "baseline"))
    p.add_argument("--length", type=int, default=200, help="random instructions per program")
    p.add_argument("--no-rtl", action="store_true", help="ISS vs Unicorn only (no Verilator)")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"fuzz: {a.count} programs, seeds {seed}..{seed + a.count - 1}, config {a.config}, "
          f"{'ISS vs Unicorn' if a.no_rtl else 'RTL vs Unicorn + ISS'}")
    fails = fuzz(a.count, seed, a.config, a.length, rtl=not a.no_rtl)
    print(f"fuzz: {a.count - len(fails)}/{a.count} passed")
    return 1 if fails else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
