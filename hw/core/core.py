"""The rvmpq core: RV32IM + Zicsr + Zicntr + the MPQ extension, in-order pipeline: the five
classic stages with fetch split in two (F, F2), and, with the pipelined requantization (the
``mpq`` configuration), a register-write stage R after W.

Pipeline::

     F        F2       D               X                   M                  W
    f_pc ──▶ ff ──▶ fd ──▶ decode ──▶ dx ──▶ ALU/branch ──▶ xm ──▶ load/CSR ──▶ mw ──▶ regfile
    IMEM     IMEM      regfile rd       fwd from M, W       trap/mret          retire port
    address  word      (3 ports)        SimdMulUnit issue   store, mul (L=1)   mul result (L>=2)
    (f_redir           ACC[k] read      (mul, dot, rq*)     ldot/accld word    rounding shift and
     after a           fwd from M, W    div (stall)         registered (lw)    zero point of rq*
     redirect)         (and R)          M's result selects  lb/lh zero-ext.    SimdMulUnit issue
                       X's selects      (one-hot)           (one-hot)          (ldot, accld)
                       (one-hot)                                               lb/lh sign ext.
                                                                 unit stages ──▶ ACC[k] (+=)

    with R (mpq):  ... W ──▶ wr ──▶ regfile and retire port in R; clamp/pack of rq* in R

Without R (``baseline``, or a unit of ``LATENCY == 1``) the register file and the retire port
are in W. With R they are in R, where every result is written one cycle after W.

* **Fetch**: the IMEM read port is addressed with ``f_pc`` in F; its (registered) output is
  the word of ``ff`` in F2, which is registered into ``fd`` for D (for Fmax: the block RAM's
  clock-to-output does not reach the decoder, the hazard checks and the stall).
* **Decode**: D registers the decoded fields as decoded, plus two flags: an illegal word and a
  fetch fault. X's view ``dxd`` turns a flagged instruction into a trap with no side effects,
  so the override is off the path from the instruction memory through the decoder.
* **Branches**: static not-taken. Branches and jumps (JAL included) resolve in X, with a
  comparator of their own beside the ALU adder; a taken one is registered (``f_redir``,
  ``f_redir_pc``; F fetches the target in the next cycle) and costs 3 bubbles. For Fmax the
  late branch decision reaches one flop, ``f_redir``: not the ``f_pc`` flops, not the valid
  bits, not the exception flag. The three younger instructions enter F2, D and X at the
  redirect's edge and are flushed in the next cycle by ``f_redir`` (``x_kill`` in X; D does not
  stall; their valid bits load as cleared). A taken branch with a misaligned target traps
  through a flop of its own (``xm.br_exc``).
* **Forwarding**: X takes operands from M (ALU/divider results) and W (everything but a
  pipelined requantization's result, which is finished in R, see below, and the sign extension
  of ``lb``/``lh``); D takes them from W and, with R, from R. X's selects are decided in D and
  registered one-hot (``dx.fm``/``fw``/``fwm``/``frf``: M, W, W's multiplier result, the value
  read in D), so X selects with an AND-OR of flops; the ALU operands (``dx.sa``/``sb``: M, W,
  W's multiplier result, or a value chosen in D, ``dx.ra``/``rb``, with pc, 0, the immediate and
  4 for a link folded in) and X's result (``dx.rsel``) have one-hot selects too, and so has M's
  result (``xm.msel``, decided in X: the DMEM byte lanes of a load, the CSR read, X's result).
  Results that appear only in M (loads, CSR reads, multiplies/dot products) cannot be forwarded
  from M: an instruction in D that needs such a result from the instruction in X waits one
  cycle (the load-use interlock: exactly one bubble). ``lb``/``lh`` are zero-extended in M and
  sign-extended in W, for Fmax, and not forwarded into X: their dependent waits in D while they
  are in M too (``dep_ld``: two bubbles right behind, one with one instruction between;
  ``lbu``/``lhu``/``lw`` as any load). The checks compare the raw rs1/rs2
  fields (and rd in the custom opcodes) without decoding, for Fmax: an I-type immediate that
  happens to match costs a needless bubble, never a wrong result.
* **Multiplier**: MUL* and ``mpq.dot.*`` issue to the shared :class:`~rvmpq.hw.simd.SimdMulUnit`
  from X; the result is taken in M when ``LATENCY == 1`` and in W otherwise (W waits for
  ``o.valid`` if ``LATENCY > 2``). With the SIMD unit its ``a``/``b`` operands come from
  the ``dx`` register, forwarded in D (no muxes in front of the array): a multiply in D waits
  while a source is produced in X, or by a multiply in M. ``baseline`` uses
  :class:`Rv32mMulUnit` (a DSP-mapped 33x33 product, four partial products registered in its
  first stage and added in its second) instead, fed from X's forwarded operands.
* **Requantization** (``mpq.rq``/``mpq.rqp``/``mpq.rqpa``) is pipelined, one per cycle: the
  product ``acc * mult`` issues to the SIMD unit from X as a signed MULLO whose full 64 bits
  come back (``o.payload.hi``) in W, where the rounding shift, saturation and zero point
  happen (:func:`~rvmpq.hw.core.requant.requant_round`, reading ``mpq_rq`` there, after any
  older CSR write); the clamp and pack (:func:`~rvmpq.hw.core.requant.clamp_pack`) happen in
  R, from the registered sum and the output width and signedness registered beside it (for
  Fmax: the requantization ends in a register instead of the register-file write and the
  forwarding). The result is never forwarded to X, nor from W: a dependent (through
  ``rs1``/``rs2``, or ``rd`` as a dot accumulator) waits in D while the producer is in X, M or
  W (``dep``, ``dep_m``, ``dep_w``) and takes it from R (latency 4, ``isa.RQ_LATENCY``). The
  packing operand (old ``rd``) travels with the instruction and is completed on the way: in D
  from the register file, R and W (W's value without the requantization), in M from R and
  from ``rp`` (the result that left R one cycle earlier: the instruction three ahead, which D
  saw unfinished in W), and into ``wr`` from R (the instruction just ahead), so a chain of
  ``mpq.rqp``/``mpq.rqpa`` into one ``rd`` runs one per cycle. ``mpq_rq``'s shift compares
  are kept in a register written with the CSR. With a unit of ``LATENCY == 1`` the
  digit-serial :class:`~rvmpq.hw.core.requant.RequantUnit` is used instead (it freezes X).
* **Accumulators** (``mpq.ldot``, ``mpq.accld``, ``mpq.rqpa``, ``mpq.accrd``): 16 x 32-bit
  ``ACC`` and bias copies ``ACCB`` (LUT memories). ``ldot``/``accld`` compute their address in
  X like ``lw`` (same checks and causes), read DMEM in M, and issue to the SIMD unit from W
  (the register ``lw``, so the block RAM output does not feed the unit's first stage: for
  Fmax), with the memory word as ``b`` and the activation (``rs2``, carried in ``xm.sdata``; 1
  for ``accld``) as ``a`` and ``acc = 0``. Only a committing instruction (M is the commit
  point: no exception) is loaded into ``lw``, so a flushed or faulting ``ldot`` never reaches
  ``ACC`` and one in ``lw`` or the unit when a younger instruction traps still completes. A tag
  pipeline beside the unit (``u_tag``, advancing with it) marks those results; as they leave
  the unit ``ACC[k] += result`` (``accld``: ``ACC[k] = ACCB[k] = result``), always accepted,
  so back-to-back ``ldot`` into one ``k`` never wait and there is no second register-file write
  port. ``rqpa``/``accrd`` read ``ACC[k]`` in D into the ``rs2`` operand (interlocked while any
  write of ``ACC[k]`` is in X, M, ``lw`` or the unit) and re-arm it (``ACC[k] = ACCB[k]``) through the
  unit's tag when their unit operation leaves it. An instruction that would issue to the unit
  from X in the same cycle as an ``ldot``/``accld`` from ``lw`` (two behind it) waits one cycle
  in D (the unit takes one operation per cycle).
* **Long operations**: DIV*/REM* occupy X until the divider is done; the whole pipeline is
  frozen meanwhile (``freeze``).
* **Traps** are precise and taken in M: the instruction in M does not commit, younger ones in
  F/D/X are flushed, ``mepc``/``mcause``/``mtval`` are written and fetch restarts at ``mtvec``
  (direct mode). The trapping instruction goes on to W (and R, in the ``mpq`` configuration) as a
  bubble and appears on the retire port with ``retire_trap``. ``mret`` redirects from M to ``mepc``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import isa
from ..modes import ElemWidth, MulMode, MulOp
from .config import CoreConfig, get_config
from .divider import Divider
from .requant import RequantUnit, clamp_pack, requant_above, requant_round

__all__ = ["Core", "Unit", "AluOp", "Cause", "CSR_ADDRS", "MemMap", "Rv32mMulUnit",
           "TAKEN_BRANCH_BUBBLES"]

#: Cycles lost to a taken branch or jump: it resolves in X and flushes F, F2 and D.
TAKEN_BRANCH_BUBBLES = 3


class Unit(enum.Enum, shape=3):
    """Which unit produces the result of an instruction."""

    ALU = 0
    LOAD = 1
    STORE = 2
    MUL = 3
    DIV = 4
    RQ = 5
    CSR = 6
    ACC = 7     # mpq.ldot / mpq.accld: memory word in M -> SIMD unit -> accumulator


class AluOp(enum.Enum, shape=4):
    """ALU operations (RV32I)."""

    ADD = 0
    SUB = 1
    SLL = 2
    SLT = 3
    SLTU = 4
    XOR = 5
    SRL = 6
    SRA = 7
    OR = 8
    AND = 9


class Cause(enum.Enum, shape=4):
    """Synchronous exception causes (``mcause``)."""

    FETCH_MISALIGNED = 0
    FETCH_ACCESS = 1
    ILLEGAL = 2
    BREAKPOINT = 3
    LOAD_MISALIGNED = 4
    LOAD_ACCESS = 5
    STORE_MISALIGNED = 6
    STORE_ACCESS = 7
    ECALL_M = 11


class MemMap:
    """Address ranges the core checks for access faults.

    Parameters
    ----------
    imem_base, imem_size : int
        Fetch range (instruction access fault outside it).
    dmem_base, dmem_size : int
        Load/store range.
    mmio_base, mmio_size : int
        Store-only range (console, exit).
    """

    def __init__(self, imem_base=0x0000_0000, imem_size=64 << 10, dmem_base=0x1000_0000,
                 dmem_size=64 << 10, mmio_base=0x2000_0000, mmio_size=8):
        for name, size in (("imem_size", imem_size), ("dmem_size", dmem_size),
                           ("mmio_size", mmio_size)):
            if size <= 0 or size & (size - 1):
                raise ValueError(f"{name} = {size} must be a power of two")
        for name, base, size in (("imem", imem_base, imem_size), ("dmem", dmem_base, dmem_size),
                                 ("mmio", mmio_base, mmio_size)):
            if base % size:
                raise ValueError(f"{name}_base {base:#x} must be aligned to its size {size:#x}")
        self.imem_base, self.imem_size = imem_base, imem_size
        self.dmem_base, self.dmem_size = dmem_base, dmem_size
        self.mmio_base, self.mmio_size = mmio_base, mmio_size

    @staticmethod
    def in_range(addr, base, size):
        """Amaranth expression: ``addr`` lies in ``[base, base + size)`` (size a power of two)."""
        bits = size.bit_length() - 1
        return addr[bits:] == (base >> bits)


#: CSR addresses.
CSR_ADDRS = {
    "mstatus": 0x300, "misa": 0x301, "mie": 0x304, "mtvec": 0x305, "mscratch": 0x340,
    "mepc": 0x341, "mcause": 0x342, "mtval": 0x343, "mip": 0x344,
    "mcycle": 0xB00, "minstret": 0xB02, "mcycleh": 0xB80, "minstreth": 0xB82,
    "cycle": 0xC00, "time": 0xC01, "instret": 0xC02, "cycleh": 0xC80, "timeh": 0xC81,
    "instreth": 0xC82,
    "mvendorid": 0xF11, "marchid": 0xF12, "mimpid": 0xF13, "mhartid": 0xF14,
    "mpq_rq": isa.CSR_MPQ_RQ,
}

# Zicntr: ``time`` has no separate timer on this core and reads as ``cycle``.
_COUNTER_CSRS = ("mcycle", "minstret", "mcycleh", "minstreth", "cycle", "time", "instret",
                 "cycleh", "timeh", "instreth")

# Decoded instruction (the D -> X payload besides pc/insn/operands).
Decoded = data.StructLayout({
    "unit": Unit,
    "alu_op": AluOp,
    "a_pc": 1,          # operand a = pc
    "a_zero": 1,        # operand a = 0 (LUI)
    "b_imm": 1,         # operand b = imm
    "imm": 32,
    "link": 1,          # result = pc + 4 (JAL/JALR; on the ALU adder: a = pc, b = 4)
    "branch": 1,
    "jal": 1,
    "jalr": 1,
    "f3": 3,            # branch condition / memory size / CSR op / divide op
    "we": 1,
    "rd": 5,
    "rs1": 5,
    "rs2": 5,
    "use_rs1": 1,
    "use_rs2": 1,
    "use_rd": 1,        # rd is a source (mpq.dot accumulator, mpq.rqp packing register)
    "mul_mode": MulMode,
    "rq_pack": 1,
    "acc_rd": 1,        # rs2 operand = ACC[acc_k] (mpq.rqpa, mpq.accrd)
    "acc_init": 1,      # mpq.accld: ACC[k] = word (instead of +=)
    "acc_k": 4,
    "csr_addr": 12,
    "csr_write": 1,
    "mret": 1,
    "exc": 1,
    "cause": Cause,
})

ECALL = 0x00000073
EBREAK = 0x00100073
MRET = 0x30200073


class Rv32mMulUnit(wiring.Component):
    """RV32M-only multiplier with the :class:`~rvmpq.hw.simd.SimdMulUnit` interface, for
    configurations without the MPQ extension.

    A 33x33 signed product (operands sign- or zero-extended per ``a_signed`` / ``b_signed``)
    as four partial products, which synthesis maps onto DSP blocks (4 MULT18X18D on ECP5).
    Stage 1 multiplies the operands as they arrive and registers the partial products; stage 2
    adds them into the output register (for Fmax: the DSP blocks and the adders behind them
    are in different cycles). DOT and the reserved op return 0 (contracts.md section 1: an
    operation the unit was not built for). ::

        a = a_hi * 2**17 + a_lo       a_hi = a[17:33] (signed 16), a_lo = a[0:17] (unsigned 17)
        a * b = ll + (lh + hl) * 2**17 + hh * 2**34
              = Cat(ll, hh) + (lh + hl) * 2**17   (ll < 2**34: the two do not overlap)

    Attributes
    ----------
    LATENCY : int
        2, as the SIMD unit.

    Members
    -------
    i : In(stream.Signature(IN_LAYOUT))
        ``payload.mode`` (:data:`~rvmpq.hw.modes.MulMode`; MULLO / MULHI), ``payload.a``,
        ``payload.b``; ``payload.acc`` is ignored. ``i.ready`` is ``~o.valid | o.ready``.
    o : Out(stream.Signature(OUT_LAYOUT))
        ``payload.result``: low (MULLO) or high (MULHI) 32 bits of the product, in issue order.
    """

    LATENCY = 2

    def __init__(self):
        from ..simd import IN_LAYOUT, OUT_LAYOUT
        super().__init__({"i": In(stream.Signature(IN_LAYOUT)),
                          "o": Out(stream.Signature(OUT_LAYOUT))})

    def elaborate(self, platform):
        """Amaranth elaboration: the two-stage 33x33 multiplier (four partial products registered
        in stage 1, summed in stage 2); ``platform`` is unused."""
        m = Module()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        p = self.i.payload
        a = Cat(p.a, p.mode.a_signed & p.a[31]).as_signed()    # 33 bits
        b = Cat(p.b, p.mode.b_signed & p.b[31]).as_signed()
        a_lo, a_hi = a[:17], a[17:].as_signed()
        b_lo, b_hi = b[:17], b[17:].as_signed()
        s1_valid = Signal()
        s1_ll = Signal(34)              # a_lo * b_lo
        s1_lh = Signal(signed(33))      # a_lo * b_hi
        s1_hl = Signal(signed(33))      # a_hi * b_lo
        s1_hh = Signal(signed(32))      # a_hi * b_hi
        s1_hi = Signal()
        s1_ok = Signal()
        mid = Signal(signed(34))
        prod = Signal(66)
        m.d.comb += [mid.eq(s1_lh + s1_hl),
                     prod.eq(Cat(s1_ll, s1_hh) + (mid.as_signed() << 17))]
        with m.If(adv):
            m.d.sync += [
                s1_valid.eq(self.i.valid),
                s1_ll.eq(a_lo * b_lo), s1_lh.eq(a_lo * b_hi), s1_hl.eq(a_hi * b_lo),
                s1_hh.eq(a_hi * b_hi),
                s1_hi.eq(p.mode.op == MulOp.MULHI),
                s1_ok.eq(p.mode.op.as_value().matches(MulOp.MULLO, MulOp.MULHI)),
                self.o.valid.eq(s1_valid),
                self.o.payload.result.eq(Mux(s1_ok, Mux(s1_hi, prod[32:64], prod[:32]), 0)),
            ]
        return m


class Core(wiring.Component):
    """RV32IM + Zicsr + Zicntr core with the MPQ extension (machine mode only).

    Parameters
    ----------
    config : str or CoreConfig
        ``"mpq"`` (default) or ``"baseline"``; see :mod:`rvmpq.hw.core.config`.
    memmap : MemMap, optional
        Address ranges for access-fault checks (default: contracts.md section 5).
    mul_unit : callable, optional
        Factory for the multiplier; default :class:`rvmpq.hw.simd.SimdMulUnit`. Test benches
        may pass a behavioural stand-in with the same signature.

    Members
    -------
    f_imem_addr : Out(32)
        Byte address of the instruction to fetch (IMEM read port, registered read).
    f_imem_en : Out(1)
        Read enable; the read data holds while it is low.
    d_imem_data : In(32)
        Instruction word read in the previous cycle with ``f_imem_en``.
    x_dmem_addr : Out(32)
        Load byte address (DMEM read port, registered read, transparent for the write port).
    x_dmem_en : Out(1)
        Read enable; the read data holds while it is low.
    m_dmem_rdata : In(32)
        The word read.
    m_dmem_addr : Out(32)
        Store byte address (DMEM or MMIO; the word containing it).
    m_dmem_wdata : Out(32)
        Store data, already shifted to its byte lanes.
    m_dmem_wmask : Out(4)
        Byte write enables; non-zero means a store commits this cycle.
    retire_valid, retire_pc, retire_insn, retire_rd, retire_wdata, retire_trap : Out
        Retire trace (contracts.md section 5); ``retire_rd`` is 0 when nothing is written.
    """

    def __init__(self, config: "str | CoreConfig" = "mpq", memmap: MemMap | None = None,
                 mul_unit=None):
        self.config = get_config(config)
        self.memmap = memmap or MemMap()
        self._mul_unit = mul_unit
        super().__init__({
            "f_imem_addr": Out(32), "f_imem_en": Out(1), "d_imem_data": In(32),
            "x_dmem_addr": Out(32), "x_dmem_en": Out(1), "m_dmem_rdata": In(32),
            "m_dmem_addr": Out(32), "m_dmem_wdata": Out(32), "m_dmem_wmask": Out(4),
            "retire_valid": Out(1), "retire_pc": Out(32), "retire_insn": Out(32),
            "retire_rd": Out(5), "retire_wdata": Out(32), "retire_trap": Out(1),
        })

    # ---- decoder -------------------------------------------------------------------------

    def _csr_known(self):
        cfg = self.config
        names = ["mstatus", "misa", "mie", "mtvec", "mscratch", "mepc", "mcause", "mtval", "mip",
                 "mvendorid", "marchid", "mimpid", "mhartid"]
        if cfg.with_counters:
            names += list(_COUNTER_CSRS)
        if cfg.with_mpq:
            names.append("mpq_rq")
        return {n: CSR_ADDRS[n] for n in names}

    def _decode_custom(self, m, insn, d, illegal):
        """Custom-0..custom-3 rows, one ``Case`` per :data:`rvmpq.hw.isa.CUSTOM_INSTRUCTIONS`
        row (its fixed bits as a pattern: a parallel match, no priority chain); other encodings
        are illegal."""
        full_ss = MulMode.const({"op": MulOp.MULLO, "a_width": ElemWidth.W16,
                                 "b_width": ElemWidth.W16, "a_signed": 1, "b_signed": 1})
        with m.Switch(insn):
            for row in isa.CUSTOM_INSTRUCTIONS:
                with m.Case(row.pattern):
                    m.d.comb += [d.we.eq(int(row.writes_rd)), d.use_rs1.eq(1),
                                 d.use_rs2.eq(1), d.use_rd.eq(int(row.reads_rd))]
                    if row.kind == "dot":
                        w = ElemWidth(isa.width_code(row.width).value)
                        m.d.comb += [d.unit.eq(Unit.MUL),
                                     d.mul_mode.eq(MulMode.const({
                                         "op": MulOp.DOT, "a_width": w, "b_width": w,
                                         "a_signed": int(row.a_signed),
                                         "b_signed": int(row.b_signed)}))]
                    elif row.kind in ("rq", "rqp", "rqpa"):
                        # the product acc * mult on the SIMD unit (full 64 bits, s x s)
                        m.d.comb += [d.unit.eq(Unit.RQ), d.rq_pack.eq(row.kind != "rq"),
                                     d.mul_mode.eq(full_ss)]
                        if row.kind == "rqpa":   # rs2 field = k: the operand is ACC[k]
                            m.d.comb += [d.acc_rd.eq(1), d.acc_k.eq(insn[20:24]), d.rs2.eq(0)]
                    elif row.kind in ("ldot", "accld"):
                        # address rs1 + 4*off like a load; activation rs2 like store data
                        m.d.comb += [d.unit.eq(Unit.ACC), d.b_imm.eq(1), d.alu_op.eq(AluOp.ADD),
                                     d.imm.eq(Cat(Const(0, 2), insn[25:32])),
                                     d.use_rs2.eq(row.kind == "ldot")]
                        if row.kind == "ldot":
                            w = ElemWidth(isa.width_code(row.width).value)
                            m.d.comb += d.mul_mode.eq(MulMode.const({
                                "op": MulOp.DOT, "a_width": w, "b_width": w,
                                "a_signed": int(row.a_signed), "b_signed": 1}))
                        else:   # ACC[k] = 1 * word, through the unit (keeps ACC writes in order)
                            m.d.comb += [d.acc_init.eq(1), d.rs2.eq(0), d.mul_mode.eq(
                                MulMode.const({"op": MulOp.MULLO, "a_width": ElemWidth.W16,
                                               "b_width": ElemWidth.W16, "a_signed": 0,
                                               "b_signed": 0}))]
                    elif row.kind == "accrd":
                        # rd = 0 + ACC[k] on the ALU
                        m.d.comb += [d.unit.eq(Unit.ALU), d.alu_op.eq(AluOp.ADD), d.a_zero.eq(1),
                                     d.acc_rd.eq(1), d.acc_k.eq(insn[20:24]), d.rs2.eq(0),
                                     d.rs1.eq(0), d.use_rs1.eq(0), d.mul_mode.eq(full_ss)]
                    else:  # pragma: no cover - a new kind needs its unit wired here
                        raise NotImplementedError(f"no unit for instruction kind {row.kind!r}")
            with m.Default():
                m.d.comb += illegal.eq(1)

    def _decode(self, m, insn, d, illegal_out):
        """Drive the :data:`Decoded` view ``d`` from instruction word ``insn``.

        The decoder does not override ``d`` for an illegal word; it drives ``illegal_out`` and
        the caller applies :meth:`_squash` later (for Fmax: the override is then off the path
        from the instruction memory to the ``dx`` register)."""
        cfg = self.config
        opcode = insn[0:7]
        f3 = insn[12:15]
        f7 = insn[25:32]
        rd, rs1, rs2 = insn[7:12], insn[15:20], insn[20:25]
        imm_i = insn[20:32].as_signed()
        imm_s = Cat(insn[7:12], insn[25:32]).as_signed()
        imm_b = Cat(Const(0, 1), insn[8:12], insn[25:31], insn[7], insn[31]).as_signed()
        imm_u = Cat(Const(0, 12), insn[12:32])
        imm_j = Cat(Const(0, 1), insn[21:31], insn[20], insn[12:20], insn[31]).as_signed()
        illegal = Signal()

        m.d.comb += [d.rd.eq(rd), d.rs1.eq(rs1), d.rs2.eq(rs2), d.f3.eq(f3),
                     d.csr_addr.eq(insn[20:32])]

        def rtype_alu():
            ops = {0: AluOp.ADD, 1: AluOp.SLL, 2: AluOp.SLT, 3: AluOp.SLTU, 4: AluOp.XOR,
                   5: AluOp.SRL, 6: AluOp.OR, 7: AluOp.AND}
            with m.Switch(f3):
                for k, op in ops.items():
                    with m.Case(k):
                        m.d.comb += d.alu_op.eq(op)

        with m.Switch(opcode):
            with m.Case(0b0110111):  # LUI
                m.d.comb += [d.a_zero.eq(1), d.b_imm.eq(1), d.imm.eq(imm_u), d.we.eq(1)]
            with m.Case(0b0010111):  # AUIPC
                m.d.comb += [d.a_pc.eq(1), d.b_imm.eq(1), d.imm.eq(imm_u), d.we.eq(1)]
            with m.Case(0b1101111):  # JAL
                m.d.comb += [d.jal.eq(1), d.link.eq(1), d.a_pc.eq(1), d.imm.eq(imm_j),
                             d.we.eq(1)]
            with m.Case(0b1100111):  # JALR
                m.d.comb += [d.jalr.eq(1), d.link.eq(1), d.a_pc.eq(1), d.imm.eq(imm_i),
                             d.we.eq(1),
                             d.use_rs1.eq(1), illegal.eq(f3 != 0)]
            with m.Case(0b1100011):  # branches
                m.d.comb += [d.branch.eq(1), d.imm.eq(imm_b), d.use_rs1.eq(1), d.use_rs2.eq(1),
                             illegal.eq((f3 == 2) | (f3 == 3))]
            with m.Case(0b0000011):  # loads
                m.d.comb += [d.unit.eq(Unit.LOAD), d.b_imm.eq(1), d.imm.eq(imm_i), d.we.eq(1),
                             d.use_rs1.eq(1),
                             illegal.eq((f3 == 3) | (f3 == 6) | (f3 == 7))]
            with m.Case(0b0100011):  # stores
                m.d.comb += [d.unit.eq(Unit.STORE), d.b_imm.eq(1), d.imm.eq(imm_s),
                             d.use_rs1.eq(1), d.use_rs2.eq(1), illegal.eq(f3 > 2)]
            with m.Case(0b0010011):  # OP-IMM
                m.d.comb += [d.b_imm.eq(1), d.imm.eq(imm_i), d.we.eq(1), d.use_rs1.eq(1)]
                rtype_alu()
                with m.If(f3 == 1):
                    m.d.comb += illegal.eq(f7 != 0)
                with m.If(f3 == 5):
                    m.d.comb += illegal.eq((f7 != 0) & (f7 != 0b0100000))
                    with m.If(f7[5]):
                        m.d.comb += d.alu_op.eq(AluOp.SRA)
            with m.Case(0b0110011):  # OP
                m.d.comb += [d.we.eq(1), d.use_rs1.eq(1), d.use_rs2.eq(1)]
                with m.If(f7 == 0):
                    rtype_alu()
                with m.Elif(f7 == 0b0100000):
                    with m.Switch(f3):
                        with m.Case(0):
                            m.d.comb += d.alu_op.eq(AluOp.SUB)
                        with m.Case(5):
                            m.d.comb += d.alu_op.eq(AluOp.SRA)
                        with m.Default():
                            m.d.comb += illegal.eq(1)
                with m.Elif((f7 == 1) & cfg.with_muldiv):
                    with m.If(f3[2]):
                        m.d.comb += d.unit.eq(Unit.DIV)
                    with m.Else():
                        m.d.comb += d.unit.eq(Unit.MUL)
                        # MUL, MULH (s x s), MULHSU (s x u), MULHU (u x u)
                        m.d.comb += [
                            d.mul_mode.op.eq(Mux(f3 == 0, MulOp.MULLO, MulOp.MULHI)),
                            d.mul_mode.a_width.eq(ElemWidth.W16),
                            d.mul_mode.b_width.eq(ElemWidth.W16),
                            d.mul_mode.a_signed.eq((f3 == 1) | (f3 == 2)),
                            d.mul_mode.b_signed.eq(f3 == 1),
                        ]
                with m.Else():
                    m.d.comb += illegal.eq(1)
            with m.Case(0b0001111):  # FENCE, FENCE.I: no-ops on this core
                m.d.comb += illegal.eq(f3 > 1)
            with m.Case(0b1110011):  # SYSTEM
                with m.If(f3 == 0):
                    with m.If(insn == ECALL):
                        m.d.comb += [d.exc.eq(1), d.cause.eq(Cause.ECALL_M)]
                    with m.Elif(insn == EBREAK):
                        m.d.comb += [d.exc.eq(1), d.cause.eq(Cause.BREAKPOINT)]
                    with m.Elif(insn == MRET):
                        m.d.comb += d.mret.eq(1)
                    with m.Elif(insn == 0x10500073):  # WFI: a no-op
                        pass
                    with m.Else():
                        m.d.comb += illegal.eq(1)
                with m.Elif(f3 == 4):
                    m.d.comb += illegal.eq(1)
                with m.Else():
                    # CSRRW/S/C (f3[2] = 0: rs1 source, 1: zero-extended uimm in rs1 field)
                    writes = Mux(f3[0:2] == 1, 1, rs1 != 0)
                    m.d.comb += [d.unit.eq(Unit.CSR), d.we.eq(1), d.use_rs1.eq(~f3[2]),
                                 d.csr_write.eq(writes)]
                    known = self._csr_known()
                    csr = insn[20:32]
                    ok = Signal()
                    with m.Switch(csr):
                        for name, addr in known.items():
                            with m.Case(addr):
                                read_only = (addr >> 10) == 3
                                m.d.comb += ok.eq(~writes if read_only else 1)
                    m.d.comb += illegal.eq(~ok)
            if cfg.with_mpq:
                with m.Case(*isa.CUSTOM_OPCODES):
                    self._decode_custom(m, insn, d, illegal)
            with m.Default():
                m.d.comb += illegal.eq(1)

        m.d.comb += illegal_out.eq(illegal)

    @staticmethod
    def _squash(m, d, cause):
        """Turn the decoded view ``d`` into a trap with ``cause`` and no side effects."""
        m.d.comb += [d.exc.eq(1), d.cause.eq(cause), d.unit.eq(Unit.ALU), d.we.eq(0),
                     d.mret.eq(0), d.branch.eq(0), d.jal.eq(0), d.jalr.eq(0),
                     d.csr_write.eq(0), d.acc_rd.eq(0)]

    # ---- the pipeline --------------------------------------------------------------------

    def elaborate(self, platform):
        """Amaranth elaboration: the pipeline, its register file, CSRs, multiplier/SIMD unit,
        divider and (mpq) accumulators and requantizer; ``platform`` is unused."""
        m = Module()
        cfg = self.config
        mm = self.memmap

        # shared multiplier / SIMD unit
        if self._mul_unit is not None:
            mul = self._mul_unit()
        elif cfg.mul_impl == "rv32m":
            mul = Rv32mMulUnit()
        else:
            from ..simd import SimdMulUnit
            mul = SimdMulUnit()
        m.submodules.mul = mul
        latency = int(mul.LATENCY)
        if latency < 1:
            raise ValueError(f"SimdMulUnit.LATENCY = {latency}: the core needs a registered "
                             "unit (LATENCY >= 1)")
        mul_at_m = latency == 1   # where the core takes the result: M, or W (waiting if needed)
        # pipelined requantization: the product on the SIMD unit, taken in W (needs the unit's
        # ``hi`` output and a result in W); a unit of LATENCY 1 keeps the digit-serial unit
        rq_pipe = cfg.with_mpq and not mul_at_m
        # units that hold X until done and give X's result (the divider; the digit-serial
        # requantization)
        long_units = [Unit.DIV] + ([Unit.RQ] if cfg.with_mpq and not rq_pipe else [])

        m.submodules.div = div = Divider()
        if cfg.with_mpq and not rq_pipe:
            m.submodules.rq = rqu = RequantUnit()

        # ---- pipeline registers ----
        # F2 (``ff``): the IMEM output is this instruction's word; D (``fd``) holds it registered
        ff = Signal(data.StructLayout({"valid": 1, "pc": 32, "fault": 1}), name="ff")
        fd = Signal(data.StructLayout({"valid": 1, "pc": 32, "fault": 1, "insn": 32}), name="fd")
        dx = Signal(data.StructLayout({"valid": 1, "pc": 32, "insn": 32, "d": Decoded,
                                       "r1": 32, "r2": 32, "r3": 32, "fm": 3, "fw": 3,
                                       "fwm": 3, "frf": 3, "sa": 4, "sb": 4,
                                       "ra": 32, "rb": 32,
                                       "rsel": 9, "long": 1,
                                       "illegal": 1, "fault": 1}),
                    name="dx")
        xm = Signal(data.StructLayout({
            "valid": 1, "pc": 32, "insn": 32, "unit": Unit, "rd": 5, "we": 1,
            "result": 32, "late": 1, "f3": 3, "addr": 32, "sdata": 32, "smask": 4, "csr_addr": 12,
            "csr_write": 1, "csr_src": 32, "mret": 1, "exc": 1, "cause": Cause, "tval": 32,
            "mode": MulMode, "acc_init": 1, "rq_pack": 1, "acc_rd": 1, "acc_k": 4, "br_exc": 1,
            "msel": 10,
        }), name="xm")
        mw = Signal(data.StructLayout({
            "valid": 1, "pc": 32, "insn": 32, "rd": 5, "wen": 1, "result": 32, "trap": 1,
            "mul": 1, "rq": 1, "rq_pack": 1, "lb": 1, "lh": 1,
        }), name="mw")

        # mpq.ldot / mpq.accld in W: the memory word read in M, registered (for Fmax: the block
        # RAM output does not feed the SIMD unit's first stage), with the unit's other operands
        lw = Signal(data.StructLayout({"valid": 1, "mode": MulMode, "a": 32, "b": 32, "k": 4,
                                       "init": 1}), name="lw")

        # X's view of the decoded instruction: an illegal word or a fetch fault (registered
        # apart in D) turns into a trap with no side effects here
        dxd = Signal(Decoded, name="dxd")
        m.d.comb += dxd.eq(dx.d)
        with m.If(dx.fault):
            self._squash(m, dxd, Cause.FETCH_ACCESS)
        with m.Elif(dx.illegal):
            self._squash(m, dxd, Cause.ILLEGAL)

        f_pc = Signal(32, init=cfg.reset_pc)

        # ---- CSR state ----
        mstatus_mie = Signal()
        mstatus_mpie = Signal()
        mtvec = Signal(32)
        mscratch = Signal(32)
        mepc = Signal(32)
        mcause = Signal(32)
        mtval = Signal(32)
        mcycle = Signal(64)
        minstret = Signal(64)
        mpq_rq = Signal(isa.RqConfigLayout)
        # requant_above(mpq_rq.shift), kept in a register written with the CSR (for Fmax: the
        # shift compares are off the requantization path in W)
        rq_above = Signal(42, init=sum(1 << (i - 21) for i in range(21, 63)))

        # ---- control ----
        freeze = Signal()          # the whole pipeline holds
        stall_d = Signal()         # D waits (bubble into X)
        m_redirect = Signal()      # M takes a trap or mret (raw, before freeze)
        m_redirect_pc = Signal(32)
        x_redirect = Signal()      # X resolves a taken branch/jump (raw)
        x_target = Signal(32)
        redirect_take = Signal()   # a redirect happens at this clock edge
        x_fwd_next = Signal()      # X's instruction, in M next, forwards its result from there
        m_wen_next = Signal()      # M's instruction, in W next, writes rd != 0
        m_mul_next = Signal()      # ... with a result from the multiplier (``mw.mul``)
        redirect_pc = Signal(32)
        f_redir = Signal()         # a redirect happened at the last edge: F fetches its target

        m.d.comb += [
            redirect_take.eq(~freeze & (m_redirect | (x_redirect & dx.valid & ~f_redir))),
            redirect_pc.eq(Mux(m_redirect, m_redirect_pc, x_target)),
        ]

        # =============================== F ===============================
        f_adv = Signal()
        m.d.comb += [
            f_adv.eq(~freeze & ~stall_d),
            self.f_imem_en.eq(f_adv),
        ]
        # two fetch stages that move together: F addresses the IMEM, F2 (``ff``) has its output,
        # which is registered into ``fd`` (for Fmax: the block RAM's slow clock-to-output does
        # not reach the decoder and the hazard logic)
        #
        # A redirect is registered (``f_redir``, ``f_redir_pc``) and F fetches from it in the next
        # cycle: for Fmax the late branch decision (``redirect_take``) only sets ``f_redir`` (one
        # flop), instead of selecting and enabling the 32 ``f_pc`` flops or clearing the valid
        # bits of F2, D and X. The three instructions that enter F2, D and X at the redirect's
        # edge are flushed in the next cycle by ``f_redir`` itself (``x_kill`` in X, no stall
        # from D), and their valid bits load as cleared when the pipeline moves on. The target
        # is fetched in the cycle after the redirect, as before (3 bubbles). No redirect can
        # happen while ``f_redir`` is set: X is flushed (and M is empty after a trap), and the
        # branch that redirected, now in M, neither traps nor returns, so ``f_redir_pc`` holds
        # until F takes it.
        f_redir_pc = Signal(32)
        f_pc_now = Signal(32)      # the address fetched in this cycle
        m.d.comb += f_pc_now.eq(Mux(f_redir, f_redir_pc, f_pc))
        m.d.comb += self.f_imem_addr.eq(f_pc_now)
        with m.If(~f_redir):
            m.d.sync += f_redir_pc.eq(redirect_pc)
        with m.If(redirect_take):
            m.d.sync += f_redir.eq(1)
        with m.Elif(f_adv):
            m.d.sync += f_redir.eq(0)
        with m.If(f_adv):
            m.d.sync += [ff.valid.eq(1), fd.valid.eq(ff.valid & ~f_redir)]
        # the payload loads whenever fetch advances (only ``valid`` sees the redirect)
        with m.If(f_adv):
            m.d.sync += [
                f_pc.eq(f_pc_now + 4), ff.pc.eq(f_pc_now),
                ff.fault.eq(~MemMap.in_range(f_pc_now, mm.imem_base, mm.imem_size)),
                fd.pc.eq(ff.pc), fd.fault.eq(ff.fault), fd.insn.eq(self.d_imem_data),
            ]

        # =============================== D ===============================
        d_insn = fd.insn
        # the decoded fields go into ``dx`` as decoded; an illegal word or a fetch fault is
        # applied after the register (``dxd``): the override is off the long path from the
        # instruction memory through the decoder
        d_dec = Signal(Decoded)
        d_illegal = Signal()
        self._decode(m, d_insn, d_dec, illegal_out=d_illegal)

        # register file: 1 write port (W), 3 asynchronous read ports (rs1, rs2, rd)
        m.submodules.rf = rf = Memory(shape=32, depth=32, init=[])
        rf_w = rf.write_port()
        rf_r = [rf.read_port(domain="comb") for _ in range(3)]
        w_we = Signal()
        w_rd = Signal(5)
        w_fwd = Signal(32)     # W's result for X: no requantization, no lb/lh sign extension
        w_result = Signal(32)  # ... for D (and R): with the sign extension
        # with the pipelined requantization the register file is written one stage after W, in
        # R (``wr``), where the clamp and pack of a requantization happen: R's write
        r_we = Signal()
        r_rd = Signal(5)
        r_result = Signal(32)
        # the read addresses are the raw instruction fields, not the decoder's (IMEM -> decode
        # -> register read is the long path): where the decoder zeroes a field (mpq.rqpa /
        # mpq.accld / mpq.accrd) the value read is unused or replaced by ACC[k] below, and X
        # forwards by the decoded fields
        d_regs = [d_insn[15:20], d_insn[20:25], d_insn[7:12]]
        d_vals = [Signal(32, name=f"d_r{i + 1}") for i in range(3)]
        # With the SIMD unit, its ``a``/``b`` operands come straight from ``dx`` (no forwarding
        # muxes in front of the array, for Fmax): rs1/rs2 are forwarded here from M (``m_value``,
        # the result M hands to W) and W, and a multiplier instruction in D waits while a source
        # is still being produced in X, or by a multiply in M whose result only appears in W.
        # The X stage still forwards (for every unit); for these operands it finds the same value.
        early_mul = cfg.mul_impl == "simd"
        m_value = Signal(32)      # M's result (driven in M)
        m_value_ok = Signal()     # M writes a register and m_value holds it
        # the accumulators of mpq.ldot: written by the SIMD unit's last stage (see below), read
        # in D by mpq.rqpa / mpq.accrd into the rs2 operand
        if cfg.with_mpq:
            m.submodules.accf = accf = Memory(shape=32, depth=isa.NUM_ACC, init=[])
            acc_w = accf.write_port()
            acc_r_d = accf.read_port(domain="comb")    # D: mpq.rqpa / mpq.accrd
            acc_r_u = accf.read_port(domain="comb")    # unit output: the accumulate
            # the bias copies ACCB[k] (written by mpq.accld): a read of ACC[k] re-arms it
            m.submodules.accb = accb = Memory(shape=32, depth=isa.NUM_ACC, init=[])
            accb_w = accb.write_port()
            accb_r = accb.read_port(domain="comb")
            # raw fields, not the decoder (IMEM -> D is a long path): an illegal custom-3 word
            # that matches reads an accumulator for nothing and traps
            d_acc_k = d_insn[20:24]
            d_acc_rd = (d_insn[2:7] == isa.OPCODE_CUSTOM3 >> 2) & d_insn[12:15].matches(1, 2)
            m.d.comb += acc_r_d.addr.eq(d_acc_k)
        for i, (port, reg, val) in enumerate(zip(rf_r, d_regs, d_vals)):
            m.d.comb += port.addr.eq(reg)
            # a pipelined requantization never feeds the ``a``/``b`` operands of the SIMD unit or
            # the ALU combinationally from its rounding shift
            # from R (any result, requantized ones too: R's clamp/pack is a short path into
            # ``dx``) and from W without the requantization (``w_result``: a requantization in W
            # is not finished; its dependents wait, ``dep_w``, except a packing operand, which M
            # takes from ``rp`` later)
            v = port.data
            if rq_pipe:
                v = Mux(r_we & (r_rd == reg), r_result, v)
            v = Mux(w_we & (w_rd == reg), w_result, v)
            if early_mul and i < 2:
                v = Mux(m_value_ok & (xm.rd == reg), m_value, v)
            v = Mux(reg == 0, 0, v)
            if cfg.with_mpq and i == 1:
                v = Mux(d_acc_rd, acc_r_d.data, v)
            m.d.comb += val.eq(v)

        # hazard: the instruction in X produces its result late (load, CSR, multiplier). For
        # Fmax the check uses the raw register fields (rs1, rs2; rd only in the custom opcodes)
        # instead of the decoded "uses" flags: an unused field that happens to match costs a
        # needless bubble, never a wrong result.
        late_units = [Unit.LOAD, Unit.CSR, Unit.MUL] + ([Unit.RQ] if rq_pipe else [])
        dx_late = dxd.unit.as_value().matches(*late_units)
        raw_rs1, raw_rs2, raw_rd = d_insn[15:20], d_insn[20:25], d_insn[7:12]
        # opcode bits [6:2] only (a word whose bits [1:0] are not 0b11 is illegal and traps: a
        # hazard found for it costs a bubble, never a wrong result)
        raw_op, raw_f3 = d_insn[2:7], d_insn[12:15]
        C0, C1, C3 = isa.OPCODE_CUSTOM0 >> 2, isa.OPCODE_CUSTOM1 >> 2, isa.OPCODE_CUSTOM3 >> 2
        raw_custom = Const(0, 1)   # rd is a source: mpq.dot (accumulator), mpq.rqp/rqpa (pack)
        raw_pack = Const(0, 1)     # rd is only the packing operand (needed in W)
        raw_rs2_used = Const(1, 1)  # custom-3 has no rs2 register (an accumulator number, or 0)
        raw_rqpa = Const(0, 1)
        if cfg.with_mpq:
            raw_rqpa = (raw_op == C3) & (raw_f3 == 1)
            raw_custom = raw_op.matches(C0, C1) | raw_rqpa
            raw_pack = ((raw_op == C1) & (raw_f3 == 1)) | raw_rqpa
            raw_rs2_used = raw_op != C3
        if not rq_pipe:
            raw_pack = Const(0, 1)
        rs1_x = raw_rs1 == dxd.rd
        rs2_x = raw_rs2_used & (raw_rs2 == dxd.rd)
        dep = Signal()
        # a requantization's packing operand is forwarded to M and W, so a chain of mpq.rqp /
        # mpq.rqpa into the same rd does not wait
        m.d.comb += dep.eq(dx.valid & dxd.we & (dxd.rd != 0) & dx_late & (
            rs1_x | rs2_x | (raw_custom & (raw_rd == dxd.rd) &
                             ~(raw_pack & (dxd.unit == Unit.RQ)))))
        dep_m = Const(0, 1)
        if rq_pipe:
            # a pipelined requantization's result appears in W only (never forwarded to X)
            dep_m = (xm.valid & xm.we & (xm.rd != 0) & (xm.unit == Unit.RQ) & (
                (raw_rs1 == xm.rd) | (raw_rs2_used & (raw_rs2 == xm.rd)) |
                (raw_custom & ~raw_pack & (raw_rd == xm.rd))))
        dep_w = Const(0, 1)
        if rq_pipe:
            # ... and it is finished in R, one stage after W: a source (rs1, rs2, or rd as the
            # dot accumulator) waits while the producer is in W and is forwarded from R; only
            # the packing operand does not wait (R forwards it into W and M, see ``rp``)
            dep_w = w_we & mw.rq & ((raw_rs1 == mw.rd) | (raw_rs2_used & (raw_rs2 == mw.rd)) |
                                    (raw_custom & ~raw_pack & (raw_rd == mw.rd)))
        # the digit-serial requantization reads mpq_rq in X: wait for CSR instructions ahead of
        # it (the pipelined one reads it in W, after any older CSR write)
        raw_rq = Const(0, 1)
        if cfg.with_mpq and not rq_pipe:
            raw_rq = (raw_op == C1) | raw_rqpa
        csr_hazard = raw_rq & (
            (dx.valid & (dxd.unit == Unit.CSR)) | (xm.valid & (xm.unit == Unit.CSR)))
        mul_hazard = Const(0, 1)
        raw_mul = (raw_op == 0b0110011 >> 2) & d_insn[25]    # RV32M (DIV* too: harmless)
        if cfg.with_mpq:
            # mpq.rqpa / mpq.accrd issue to the unit from X too (the re-arm of ACC[k])
            raw_mul = raw_mul | (raw_op == C0) | (
                (raw_op == C3) & raw_f3.any())
            if rq_pipe:
                raw_mul = raw_mul | (raw_op == C1)
        if early_mul:
            x_writes = dx.valid & dxd.we & (dxd.rd != 0)
            m_late_units = [Unit.MUL] + ([Unit.RQ] if rq_pipe else [])
            m_mul_late = (xm.valid & xm.we & xm.unit.as_value().matches(*m_late_units) &
                          (xm.rd != 0)) if not mul_at_m else Const(0, 1)
            mul_hazard = raw_mul & (
                (x_writes & (rs1_x | rs2_x)) |
                (m_mul_late & ((raw_rs1 == xm.rd) | (raw_rs2_used & (raw_rs2 == xm.rd)))))
        acc_hazard = Const(0, 1)
        if cfg.with_mpq:
            # structural: mpq.ldot/accld issue to the unit from W (``lw``, the registered memory
            # word), so an instruction that would issue from X two behind one waits a cycle
            acc_hazard = raw_mul & xm.valid & (xm.unit == Unit.ACC)
            # reading ACC[k] (D) waits while a write of ACC[k] is in flight: an mpq.ldot/accld
            # or the re-arm of an mpq.rqpa/accrd, in X, in M, or in the unit's stages (tags
            # ``u_tag``, below)
            # (for Fmax, a vector of the pending accumulators is formed from the pipeline
            # registers and indexed by the raw k field, instead of comparing k with each)
            pend = [(dx.valid & (dxd.unit == Unit.ACC), dxd.rd[:4]),
                    (dx.valid & dxd.acc_rd, dxd.acc_k),
                    (xm.valid & (xm.unit == Unit.ACC), xm.rd[:4]),
                    (xm.valid & xm.acc_rd, xm.acc_k),
                    (lw.valid, lw.k)]
            u_tag_v = [Signal(name=f"u_tag{i}_v") for i in range(latency)]
            u_tag_k = [Signal(4, name=f"u_tag{i}_k") for i in range(latency)]
            u_tag_init = [Signal(name=f"u_tag{i}_init") for i in range(latency)]
            u_tag_rearm = [Signal(name=f"u_tag{i}_rearm") for i in range(latency)]
            pend += [(v | r, kk) for v, r, kk in zip(u_tag_v, u_tag_rearm, u_tag_k)]
            pend_vec = Signal(isa.NUM_ACC)
            m.d.comb += pend_vec.eq(Cat(*[Cat(*[c & (kk == j) for c, kk in pend]).any()
                                          for j in range(isa.NUM_ACC)]))
            acc_hazard = acc_hazard | (d_acc_rd & pend_vec.bit_select(d_acc_k, 1))
        # lb/lh are sign-extended in W only (for Fmax), and X does not forward that: a source
        # produced by one in M waits in D and takes the extended value from W (one more bubble
        # than a word load; lbu/lhu/lw are ready in M). The rd field counts where rd is a source.
        dep_ld = Signal()
        m.d.comb += dep_ld.eq(xm.valid & (xm.unit == Unit.LOAD) & ~xm.f3[1] & ~xm.f3[2] &
                              (xm.rd != 0) & ((raw_rs1 == xm.rd) |
                                              (raw_rs2_used & (raw_rs2 == xm.rd)) |
                                              (raw_custom & (raw_rd == xm.rd))))
        m.d.comb += stall_d.eq(fd.valid & ~f_redir & (dep | dep_m | dep_w | dep_ld | csr_hazard |
                                           mul_hazard | acc_hazard))

        # the payload loads whenever the pipeline moves (a bubble carries junk): only ``valid``
        # depends on the late branch/stall decisions, which keeps them off ~200 clock enables
        with m.If(~freeze):
            m.d.sync += [dx.valid.eq(fd.valid & ~f_redir & ~stall_d), dx.pc.eq(fd.pc),
                         dx.insn.eq(d_insn), dx.d.eq(d_dec), dx.illegal.eq(d_illegal),
                         dx.fault.eq(fd.fault), dx.r1.eq(d_vals[0]),
                         dx.r2.eq(d_vals[1]), dx.r3.eq(d_vals[2])]
            # X's forwarding selects, decided here and registered whole (for Fmax: each is one
            # flop in X, with the valid and write-enable bits that ``xm`` / ``mw`` receive at
            # this same edge). The whole pipeline moves or holds together (``freeze``), so the
            # instruction now in X is in M when this one is in X, and the one now in M is in W.
            # Decoded fields: where the decoder zeroes a field (its value unused, or replaced by
            # ACC[k]) nothing is forwarded into it.
            # One-hot per operand: ``fm`` (M's result), ``fw`` (W's ``mw.result``), ``fwm`` (W's
            # result from the multiplier), ``frf`` (the value read here), so that X selects
            # with an AND-OR of flops. The ALU operands ``a``/``b`` get their own one-hot
            # selects (``sa``, ``sb``: M, W, W multiplier, ``ra``/``rb``) and values of their own
            # (``ra``: pc, 0 or the value read; ``rb``: the immediate, 4 for a link, or the
            # value read), chosen here, so that X selects among four sources per operand (for
            # Fmax). ``rsel``: X's result (adder, slt, sltu, xor, or, and, sll, srl/sra, long
            # operation), one-hot.
            d_srcs = [d_dec.rs1, d_dec.rs2, d_dec.rd]
            fm = [x_fwd_next & (dxd.rd == r) for r in d_srcs]
            fw = [~fm[i] & m_wen_next & (xm.rd == r) for i, r in enumerate(d_srcs)]
            fwr = [f & ~m_mul_next for f in fw]
            fwm = [f & m_mul_next for f in fw]
            frf = [~fm[i] & ~fw[i] for i in range(3)]
            a_op = ~d_dec.a_pc & ~d_dec.a_zero
            b_op = ~d_dec.b_imm & ~d_dec.link
            aop = d_dec.alu_op.as_value()
            d_long = d_dec.unit.as_value().matches(*long_units)
            rsel = [aop.matches(AluOp.ADD, AluOp.SUB)] + [
                aop == o for o in (AluOp.SLT, AluOp.SLTU, AluOp.XOR, AluOp.OR, AluOp.AND,
                                   AluOp.SLL)] + [aop.matches(AluOp.SRL, AluOp.SRA)]
            m.d.sync += [dx.fm.eq(Cat(*fm)), dx.fw.eq(Cat(*fwr)), dx.fwm.eq(Cat(*fwm)),
                         dx.frf.eq(Cat(*frf)),
                         dx.sa.eq(Cat(fm[0] & a_op, fwr[0] & a_op, fwm[0] & a_op,
                                      frf[0] | ~a_op)),
                         dx.sb.eq(Cat(fm[1] & b_op, fwr[1] & b_op, fwm[1] & b_op,
                                      frf[1] | ~b_op)),
                         dx.ra.eq(Mux(d_dec.a_pc, fd.pc, Mux(d_dec.a_zero, 0, d_vals[0]))),
                         dx.rb.eq(Mux(d_dec.link, 4, Mux(d_dec.b_imm, d_dec.imm, d_vals[1]))),
                         dx.rsel.eq(Cat(*[r & ~d_long for r in rsel], d_long)),
                         # a long operation that will not trap (for Fmax: X's hold, ``freeze``,
                         # starts from flops: this one, the unit's done flag and M's trap)
                         dx.long.eq(d_long & ~d_illegal & ~fd.fault)]

        # =============================== X ===============================
        d = dxd

        # the forwarding selects of operand i (rs1, rs2, rd), registered in D, one-hot (``dx.fm``:
        # the instruction in M is valid, writes rd != 0 with a result ready in X, and rd
        # matches; ``dx.fw`` / ``dx.fwm``: the same for W's register write, without the
        # requantization (never forwarded to X, see dep_m) or the lb/lh sign extension (see
        # dep_ld); ``dx.frf``: none of them)
        def onehot(sel, vals):
            # the OR of the values whose select bit is set (narrower values are zero-extended),
            # written on whole words: the same AND-OR for synthesis, and word operations (not
            # 32 one-bit reductions) for Verilator, which runs it about 2x faster
            out = Const(0, 32)
            for s, v in zip(sel, vals):
                out = out | (s.replicate(32) & v.as_unsigned())
            return out

        w_srcs = [xm.result, mw.result, mul.o.payload.result]
        x_r1 = Signal(32)
        x_r2 = Signal(32)
        x_r3 = Signal(32)
        for i, (x_r, r) in enumerate(zip([x_r1, x_r2, x_r3], [dx.r1, dx.r2, dx.r3])):
            m.d.comb += x_r.eq(onehot([dx.fm[i], dx.fw[i], dx.fwm[i], dx.frf[i]], w_srcs + [r]))

        # ALU
        a = Signal(32)
        b = Signal(32)
        m.d.comb += [a.eq(onehot(dx.sa, w_srcs + [dx.ra])),
                     b.eq(onehot(dx.sb, w_srcs + [dx.rb]))]
        alu = Signal(32)
        shamt = b[0:5]
        op = d.alu_op.as_value()
        # one adder for ADD/SUB/SLT/SLTU and the load/store address (the branch comparisons
        # have their own carry chain, below)
        sub = op.matches(AluOp.SUB, AluOp.SLT, AluOp.SLTU)
        sum_ = Signal(33)
        m.d.comb += sum_.eq(a + (b ^ sub.replicate(32)) + sub)
        ltu = ~sum_[32]
        lt = Mux(a[31] == b[31], sum_[31], a[31])
        # a left and a right shifter (for Fmax: no operand and result reversal for SLL)
        shl = Signal(32)
        shr = Signal(32)
        m.d.comb += [shl.eq(a << shamt),
                     shr.eq(Cat(a, (op == AluOp.SRA) & a[31]).as_signed() >> shamt)]

        # branches (static not-taken, resolved here). A comparator of their own beside the ALU
        # adder (for Fmax: the forwarded operands go straight into its carry chain, without the
        # ALU's operand muxes). Signed compares flip the sign bits and compare unsigned; the
        # borrow out of rs1 - rs2 is "less than". funct3: BEQ 0, BNE 1, BLT 4, BGE 5, BLTU 6,
        # BGEU 7 (bit 0 inverts, bit 2 picks less-than over equal); 2 and 3 are illegal.
        br_flip = Cat(Const(0, 31), ~d.f3[1])
        br_diff = Signal(33)
        m.d.comb += br_diff.eq(Cat(x_r1 ^ br_flip, Const(0, 1)) - Cat(x_r2 ^ br_flip, Const(0, 1)))
        eq = x_r1 == x_r2
        cond = Mux(d.f3[2], br_diff[32], eq) ^ d.f3[0]
        taken = ~d.exc & (d.jal | d.jalr | (d.branch & cond))
        m.d.comb += x_target.eq(Mux(d.jalr, (x_r1 + d.imm) & ~1, dx.pc + d.imm))
        # a misaligned target (bit 1 set), from the low two bits only (for Fmax: not through the
        # target adders): jalr (rs1 + imm) & ~1, else pc + imm
        t_bit1 = Mux(d.jalr, x_r1[1] ^ d.imm[1] ^ (x_r1[0] & d.imm[0]), dx.pc[1] ^ d.imm[1])
        # a jump with a misaligned target always traps; a conditional branch only when taken,
        # and that trap has a flop of its own (``xm.br_exc``, for Fmax: the comparator does not
        # go through the exception logic into ``xm.exc``, nor into the cause, which is
        # FETCH_MISALIGNED for any branch or jump with a misaligned target)
        jump_bad = ~d.exc & (d.jal | d.jalr) & t_bit1
        x_br_exc = ~d.exc & d.branch & t_bit1 & cond

        # memory address checks
        addr = sum_[:32]  # rs1 + imm for loads and stores (the adder, not the ALU result mux)
        f3 = d.f3
        is_accop = d.unit == Unit.ACC    # mpq.ldot / mpq.accld: a word load
        misaligned = Mux((f3[0:2] == 0) & ~is_accop, 0,
                         Mux((f3[0:2] == 1) & ~is_accop, addr[0], addr[0:2] != 0))
        in_dmem = MemMap.in_range(addr, mm.dmem_base, mm.dmem_size)
        in_mmio = MemMap.in_range(addr, mm.mmio_base, mm.mmio_size)
        is_load = d.unit.as_value().matches(Unit.LOAD, Unit.ACC)
        is_store = d.unit == Unit.STORE

        # Exceptions found in X. For Fmax nothing wide depends on them here: only ``x_exc``
        # (one flop; ``xm.br_exc`` for a taken branch, above) and the cause; ``mtval`` is chosen
        # in M from the cause (the instruction, its pc, or ``xm.tval`` = the jump target / the
        # memory address); the instruction's side effects (rd write, store, mret) are
        # suppressed in M by ``xm.exc``.
        x_exc = Signal()
        x_cause = Signal(Cause)
        x_tval = Signal(32)
        with m.If(d.exc):
            m.d.comb += x_cause.eq(d.cause)
        with m.Elif((d.jal | d.jalr | d.branch) & t_bit1):
            m.d.comb += x_cause.eq(Cause.FETCH_MISALIGNED)
        with m.Else():
            # LOAD_MISALIGNED 4 / LOAD_ACCESS 5 / STORE_MISALIGNED 6 / STORE_ACCESS 7
            m.d.comb += x_cause.eq(Cat(~misaligned, is_store, Const(1, 2)))
        m.d.comb += [
            x_exc.eq(d.exc | jump_bad | (is_load & (misaligned | ~in_dmem)) |
                     (is_store & (misaligned | (~in_dmem & ~in_mmio)))),
            x_tval.eq(Mux(d.unit.as_value().matches(Unit.LOAD, Unit.STORE, Unit.ACC), addr,
                          x_target)),
        ]
        m.d.comb += x_redirect.eq(taken & ~t_bit1)

        # DMEM read port (registered: the data is there in M)
        m.d.comb += [self.x_dmem_addr.eq(addr), self.x_dmem_en.eq(~freeze)]

        # store data and byte mask
        sdata = Signal(32)
        smask = Signal(4)
        with m.Switch(f3[0:2]):
            with m.Case(0):
                m.d.comb += [sdata.eq(x_r2[0:8].replicate(4)),
                             smask.eq(Const(1, 4) << addr[0:2])]
            with m.Case(1):
                m.d.comb += [sdata.eq(x_r2[0:16].replicate(2)),
                             smask.eq(Mux(addr[1], 0b1100, 0b0011))]
            with m.Default():
                m.d.comb += [sdata.eq(x_r2), smask.eq(0b1111)]
        with m.If(is_accop):   # the unit's a operand in M: the activation, or 1 for mpq.accld
            m.d.comb += sdata.eq(Mux(d.acc_init, 1, x_r2))

        # shared multiplier issue: from X (MUL*, mpq.dot, pipelined mpq.rq*), or from W
        # (mpq.ldot / mpq.accld in ``lw``, whose second operand is the memory word read in M)
        # the instruction in X is flushed by a trap/mret in M, or in the cycle after a redirect
        # (``f_redir``: it entered X at the redirect's edge)
        x_kill = m_redirect | f_redir
        x_mul_units = [Unit.MUL] + ([Unit.RQ] if rq_pipe else [])
        # (mpq.accrd issues too: its re-arm of ACC[k] travels through the unit, in order)
        x_issue = dx.valid & (d.unit.as_value().matches(*x_mul_units) | d.acc_rd) & ~freeze & \
            ~x_kill
        m_accop = Signal()     # xm holds an mpq.ldot / mpq.accld
        w_accop = Signal()     # lw holds one (selects the unit's operands)
        w_acc_issue = Signal()
        m.d.comb += [
            m_accop.eq(xm.valid & (xm.unit == Unit.ACC)) if cfg.with_mpq else m_accop.eq(0),
            w_accop.eq(lw.valid) if cfg.with_mpq else w_accop.eq(0),
            w_acc_issue.eq(w_accop & ~freeze),
            mul.i.valid.eq(x_issue | w_acc_issue),
            mul.i.payload.mode.eq(Mux(w_accop, lw.mode, d.mul_mode)),
            mul.i.payload.a.eq(Mux(w_accop, lw.a, dx.r1 if early_mul else x_r1)),
            mul.i.payload.b.eq(Mux(w_accop, lw.b, dx.r2 if early_mul else x_r2)),
            mul.i.payload.acc.eq(Mux(w_accop, 0, x_r3)),
        ]
        if cfg.with_mpq:
            # only a committing mpq.ldot/accld (no exception in M) goes on to the unit
            with m.If(~freeze):
                m.d.sync += [lw.valid.eq(m_accop & ~xm.exc), lw.mode.eq(xm.mode),
                             lw.a.eq(xm.sdata), lw.b.eq(self.m_dmem_rdata), lw.k.eq(xm.rd[:4]),
                             lw.init.eq(xm.acc_init)]

        # long operations: divider and requantization hold X until done
        x_long_busy = Signal()
        m.d.comb += [
            div.x_start.eq(dx.valid & (d.unit == Unit.DIV) & ~x_kill),
            div.x_op.as_value().eq(d.f3[0:2]),
            div.x_a.eq(x_r1), div.x_b.eq(x_r2),
            div.x_ack.eq(~freeze), div.x_abort.eq(x_kill & ~freeze),
        ]
        long_busy = ~div.x_done
        long_result = div.x_result
        if cfg.with_mpq and not rq_pipe:
            m.d.comb += [
                rqu.x_start.eq(dx.valid & (d.unit == Unit.RQ) & ~x_kill),
                rqu.x_pack.eq(d.rq_pack),
                rqu.x_acc.eq(x_r1), rqu.x_mult.eq(x_r2), rqu.x_rd.eq(x_r3),
                rqu.x_cfg.eq(mpq_rq),
                rqu.x_ack.eq(~freeze), rqu.x_abort.eq(x_kill & ~freeze),
            ]
            long_busy = Mux(dx.d.unit == Unit.RQ, ~rqu.x_done, ~div.x_done)
            long_result = Mux(d.unit == Unit.RQ, rqu.x_result, div.x_result)
        m.d.comb += x_long_busy.eq(dx.valid & dx.long & long_busy & ~x_kill)

        m.d.comb += x_fwd_next.eq(dx.valid & ~x_kill & d.we & ~dx_late & (d.rd != 0))
        # X's result, selected one-hot (``dx.rsel``, decided in D); a link (pc + 4) is the sum
        m.d.comb += alu.eq(onehot(dx.rsel, [sum_[:32], lt, ltu, a ^ b, a | b, a & b, shl, shr,
                                            long_result]))
        x_result = alu
        if rq_pipe:
            # pipelined requantization: carry the packing operand (old rd) to R. Nothing is
            # forwarded into it here: the results of the three instructions ahead, which D did
            # not see finished, are taken from R (and ``rp``) in M and W
            x_result = Mux(d.unit == Unit.RQ, dx.r3, x_result)

        # M's result, selected one-hot there (for Fmax: the block RAM output goes through one
        # AND-OR into ``mw``); the selects are decided here from the unit, the size and the
        # two low address bits (early bits of the adder). A load is zero-extended: bits 0-7
        # from the byte lane of the address (0-3), bits 8-15 from lane 1 (lh/lhu/lw at offset
        # 0) or lane 3 (lh/lhu at offset 2), bits 16-31 from lanes 2-3 (lw); a misaligned load
        # traps, so its result does not matter.
        x_ld = d.unit == Unit.LOAD
        x_lo = addr[0:2]
        x_mulm = (d.unit == Unit.MUL) if mul_at_m else Const(0, 1)
        x_msel = Cat(x_ld & (x_lo == 0), x_ld & (x_lo == 1), x_ld & (x_lo == 2),
                     x_ld & (x_lo == 3),
                     x_ld & (d.f3[0:2] != 0) & ~x_lo[1], x_ld & (d.f3[0:2] == 1) & x_lo[1],
                     x_ld & d.f3[1],
                     d.unit == Unit.CSR, ~x_ld & (d.unit != Unit.CSR) & ~x_mulm, x_mulm)

        with m.If(~freeze):
            m.d.sync += [
                    xm.msel.eq(x_msel),
                    xm.valid.eq(dx.valid & ~x_kill),
                    xm.pc.eq(dx.pc), xm.insn.eq(dx.insn), xm.unit.eq(d.unit),
                    xm.rd.eq(d.rd), xm.we.eq(d.we), xm.result.eq(x_result),
                    xm.late.eq(dx_late), xm.f3.eq(d.f3), xm.addr.eq(addr),
                    xm.sdata.eq(sdata), xm.smask.eq(Mux(is_store, smask, 0)),
                    xm.csr_addr.eq(d.csr_addr), xm.csr_write.eq(d.csr_write),
                    xm.csr_src.eq(Mux(d.f3[2], d.rs1, x_r1)),
                    xm.mret.eq(d.mret), xm.exc.eq(x_exc), xm.br_exc.eq(x_br_exc),
                    xm.cause.eq(x_cause),
                    xm.tval.eq(x_tval), xm.mode.eq(d.mul_mode), xm.acc_init.eq(d.acc_init),
                    xm.rq_pack.eq(d.rq_pack), xm.acc_rd.eq(dx.valid & ~x_kill & d.acc_rd),
                    xm.acc_k.eq(d.acc_k),
                ]

        # =============================== M ===============================
        # ``xm.br_exc``: a taken branch with a misaligned target (it writes no register, stores
        # nothing and reads no CSR, so only the trap itself needs it)
        m_exc = xm.valid & (xm.exc | xm.br_exc)
        m.d.comb += m_wen_next.eq(xm.valid & xm.we & ~xm.exc & (xm.rd != 0))
        m.d.comb += [
            m_redirect.eq(xm.valid & (xm.exc | xm.br_exc | xm.mret)),
            # (an mret never has an exception: the squash in ``dxd`` clears it)
            m_redirect_pc.eq(Mux(xm.mret, mepc, Cat(Const(0, 2), mtvec[2:]))),
        ]

        # stores (DMEM or MMIO), committed when M advances
        m.d.comb += [
            self.m_dmem_addr.eq(xm.addr),
            self.m_dmem_wdata.eq(xm.sdata),
            self.m_dmem_wmask.eq(Mux(xm.valid & ~xm.exc & ~freeze, xm.smask, 0)),
        ]

        # load alignment, zero-extended: lb/lh are sign-extended in W (for Fmax: the sign bit
        # of the block RAM output does not fan out to 24 result bits here), so their result is
        # not forwarded from M or from W into X; a dependent waits in D (``dep_ld``)
        # (the byte lanes, one-hot by ``xm.msel``, below)
        m_lb = (xm.unit == Unit.LOAD) & (xm.f3 == 0)
        m_lh = (xm.unit == Unit.LOAD) & (xm.f3 == 1)

        # CSR read / modify / write
        csr_r = Signal(32)
        # an instruction is counted in W (not a trap; the retire port is in R where there is
        # one), without ``freeze`` (late): a CSR read is discarded when frozen and the
        # increment below is enabled by ~freeze, so the 64-bit sum starts from early signals
        w_retire_raw = Signal()
        m.d.comb += w_retire_raw.eq(mw.valid & ~mw.trap)
        instret_now = Signal(64)
        m.d.comb += instret_now.eq(minstret + w_retire_raw)
        misa = (1 << 30) | (1 << 8) | ((1 << 12) if cfg.with_muldiv else 0) | \
            ((1 << 23) if cfg.with_mpq else 0)
        reads = {
            "mstatus": Cat(Const(0, 3), mstatus_mie, Const(0, 3), mstatus_mpie, Const(0, 3),
                           Const(3, 2)),
            "misa": Const(misa, 32), "mtvec": mtvec, "mscratch": mscratch, "mepc": mepc,
            "mcause": mcause, "mtval": mtval,
            "mcycle": mcycle[:32], "mcycleh": mcycle[32:], "cycle": mcycle[:32],
            "cycleh": mcycle[32:], "time": mcycle[:32], "timeh": mcycle[32:], "minstret": instret_now[:32], "minstreth": instret_now[32:64],
            "instret": instret_now[:32], "instreth": instret_now[32:64],
            "mpq_rq": mpq_rq.as_value(),
        }
        with m.Switch(xm.csr_addr):
            for name, addr_ in self._csr_known().items():
                if name in reads:
                    with m.Case(addr_):
                        m.d.comb += csr_r.eq(reads[name])
        csr_new = Signal(32)
        with m.Switch(xm.f3[0:2]):
            with m.Case(1):
                m.d.comb += csr_new.eq(xm.csr_src)
            with m.Case(2):
                m.d.comb += csr_new.eq(csr_r | xm.csr_src)
            with m.Default():
                m.d.comb += csr_new.eq(csr_r & ~xm.csr_src)
        csr_we = xm.valid & ~xm.exc & (xm.unit == Unit.CSR) & xm.csr_write & ~freeze

        # counters
        if cfg.with_counters:
            m.d.sync += mcycle.eq(mcycle + 1)
            with m.If(~freeze):
                m.d.sync += minstret.eq(instret_now)

        with m.If(csr_we):
            with m.Switch(xm.csr_addr):
                with m.Case(CSR_ADDRS["mstatus"]):
                    m.d.sync += [mstatus_mie.eq(csr_new[3]), mstatus_mpie.eq(csr_new[7])]
                with m.Case(CSR_ADDRS["mtvec"]):
                    m.d.sync += mtvec.eq(Cat(Const(0, 2), csr_new[2:]))
                with m.Case(CSR_ADDRS["mscratch"]):
                    m.d.sync += mscratch.eq(csr_new)
                with m.Case(CSR_ADDRS["mepc"]):
                    m.d.sync += mepc.eq(Cat(Const(0, 2), csr_new[2:]))
                with m.Case(CSR_ADDRS["mcause"]):
                    m.d.sync += mcause.eq(csr_new)
                with m.Case(CSR_ADDRS["mtval"]):
                    m.d.sync += mtval.eq(csr_new)
                if cfg.with_counters:
                    with m.Case(CSR_ADDRS["mcycle"]):
                        m.d.sync += mcycle[:32].eq(csr_new)
                    with m.Case(CSR_ADDRS["mcycleh"]):
                        m.d.sync += mcycle[32:].eq(csr_new)
                    with m.Case(CSR_ADDRS["minstret"]):
                        m.d.sync += minstret[:32].eq(csr_new)
                    with m.Case(CSR_ADDRS["minstreth"]):
                        m.d.sync += minstret[32:].eq(csr_new)
                if cfg.with_mpq:
                    with m.Case(isa.CSR_MPQ_RQ):
                        m.d.sync += [mpq_rq.eq(csr_new & isa.RQ_CONFIG_WRITABLE),
                                     rq_above.eq(requant_above(csr_new[:6]))]

        # trap entry / mret
        with m.If(~freeze & m_exc):
            m_tval = Mux(xm.cause == Cause.ILLEGAL, xm.insn,
                         Mux(xm.cause.as_value().matches(Cause.BREAKPOINT, Cause.FETCH_ACCESS,
                                                         Cause.ECALL_M),
                             Mux(xm.cause == Cause.ECALL_M, 0, xm.pc), xm.tval))
            m.d.sync += [mepc.eq(xm.pc), mcause.eq(xm.cause), mtval.eq(m_tval),
                         mstatus_mpie.eq(mstatus_mie), mstatus_mie.eq(0)]
        with m.Elif(~freeze & xm.valid & xm.mret):
            m.d.sync += [mstatus_mie.eq(mstatus_mpie), mstatus_mpie.eq(1)]

        m_rq = (xm.unit == Unit.RQ) if rq_pipe else Const(0, 1)
        m.d.comb += m_mul_next.eq(((xm.unit == Unit.MUL) | m_rq) & ~mul_at_m)
        rdata, ms = self.m_dmem_rdata, xm.msel
        m_other = onehot(ms[7:10], [csr_r, xm.result, mul.o.payload.result])
        m_result = Signal(32)
        m.d.comb += m_result.eq(m_other | Cat(
            onehot(ms[0:4], [rdata[0:8], rdata[8:16], rdata[16:24], rdata[24:32]])[:8],
            onehot(ms[4:6], [rdata[8:16], rdata[24:32]])[:8],
            onehot(ms[6:7], [rdata[16:32]])[:16]))
        m.d.comb += [
            m_value.eq(m_result),
            m_value_ok.eq(xm.valid & xm.we & ~xm.exc & (xm.rd != 0) &
                          ~((xm.unit == Unit.MUL) & ~mul_at_m) & ~m_rq),
        ]
        if rq_pipe:
            # the packing operand of a requantization, forwarded from R (the instruction two
            # ahead), else from ``rp`` (the one three ahead, which was in R while this one was
            # in X, and in W while this one was in D, where D took W's value without the
            # requantization). The whole pipeline moves or holds together, so ``rp`` is always
            # the instruction that left R when this one left X. The instruction just ahead
            # (e.g. the previous mpq.rqp of a chain into the same rd) is forwarded from R into
            # ``wr`` when this one is in W.
            rp = Signal(data.StructLayout({"we": 1, "rd": 5, "result": 32}), name="rp")
            with m.If(~freeze):
                m.d.sync += [rp.we.eq(r_we), rp.rd.eq(r_rd), rp.result.eq(r_result)]
            m_result = Mux(m_rq & r_we & (r_rd == xm.rd), r_result,
                           Mux(m_rq & rp.we & (rp.rd == xm.rd), rp.result, m_result))
        with m.If(~freeze):
            m.d.sync += [
                mw.valid.eq(xm.valid), mw.pc.eq(xm.pc), mw.insn.eq(xm.insn), mw.rd.eq(xm.rd),
                mw.result.eq(m_result), mw.trap.eq(m_exc),
                # W's register write, decided here (for Fmax: one flop drives X's forwarding)
                mw.wen.eq(m_wen_next),
                mw.mul.eq(m_mul_next),
                mw.rq.eq(m_rq), mw.rq_pack.eq(xm.rq_pack), mw.lb.eq(m_lb), mw.lh.eq(m_lh),
            ]

        # =============================== W ===============================
        m.d.comb += w_fwd.eq(Mux(mw.mul, mul.o.payload.result, mw.result))
        # lb/lh: the sign extension (their result is never forwarded to X from here, see dep_ld)
        m.d.comb += [w_result.eq(Mux(mw.lb, mw.result[:8].as_signed(),
                                     Mux(mw.lh, mw.result[:16].as_signed(), w_fwd))),
                     w_we.eq(mw.wen), w_rd.eq(mw.rd)]
        if rq_pipe:
            # requantization of the unit's 64-bit product: the rounding shift, saturation and
            # zero point here (mpq_rq is read here, after every older CSR write), registered in
            # ``wr``; the clamp and pack in R, with the output width and signedness registered
            # beside it
            w_s = requant_round(m, Cat(mul.o.payload.result, mul.o.payload.hi), mpq_rq,
                                name="w_rq", above=rq_above)
            wr = Signal(data.StructLayout({
                "valid": 1, "pc": 32, "insn": 32, "trap": 1, "wen": 1, "rd": 5, "rq": 1,
                "rq_pack": 1, "value": 32, "rdold": 32, "bits": ElemWidth, "out_signed": 1,
            }), name="wr")
            with m.If(~freeze):
                m.d.sync += [
                    wr.valid.eq(mw.valid), wr.pc.eq(mw.pc), wr.insn.eq(mw.insn),
                    wr.trap.eq(mw.trap), wr.wen.eq(mw.wen), wr.rd.eq(mw.rd), wr.rq.eq(mw.rq),
                    wr.rq_pack.eq(mw.rq_pack), wr.value.eq(Mux(mw.rq, w_s, w_result)),
                    # the packing operand, with the result of the instruction just ahead (in R)
                    wr.rdold.eq(Mux(r_we & (r_rd == mw.rd), r_result, mw.result)),
                    wr.bits.eq(mpq_rq.bits), wr.out_signed.eq(mpq_rq.out_signed),
                ]
            # =============================== R ===============================
            r_rq = clamp_pack(m, wr.value[:24].as_signed(), wr.bits, wr.out_signed, wr.rdold,
                              wr.rq_pack, name="r_rq")
            m.d.comb += [r_result.eq(Mux(wr.rq, r_rq, wr.value)), r_we.eq(wr.wen),
                         r_rd.eq(wr.rd)]
            # the register file write and the retire port are in R
            fin_valid, fin_pc, fin_insn, fin_trap = wr.valid, wr.pc, wr.insn, wr.trap
            fin_we, fin_rd, fin_result = r_we, r_rd, r_result
        else:
            fin_valid, fin_pc, fin_insn, fin_trap = mw.valid, mw.pc, mw.insn, mw.trap
            fin_we, fin_rd, fin_result = w_we, mw.rd, w_result
        m.d.comb += [
            rf_w.addr.eq(fin_rd), rf_w.data.eq(fin_result), rf_w.en.eq(fin_we & ~freeze),
        ]
        m.d.comb += [
            self.retire_valid.eq(fin_valid & ~freeze),
            self.retire_pc.eq(fin_pc), self.retire_insn.eq(fin_insn),
            self.retire_rd.eq(Mux(fin_we, fin_rd, 0)),
            self.retire_wdata.eq(Mux(fin_we, fin_result, 0)),
            self.retire_trap.eq(fin_trap),
        ]

        # multiplier result hand-off and the freeze
        if mul_at_m:
            take = xm.valid & (xm.unit == Unit.MUL)
        else:
            take = mw.valid & mw.mul
        o_acc = Const(0, 1)
        if cfg.with_mpq:
            # accumulate stage: results of mpq.ldot / mpq.accld (tagged by ``u_tag``, which
            # advances with the unit) go into ACC[k] as they leave the unit; only committed
            # instructions were issued (from ``lw``, loaded without a trap in M), so this never
            # waits for the pipeline and two ldots into the same k in a row need no stall
            u_adv = ~mul.o.valid | mul.o.ready
            # ``v``: the result is the accumulator's (always taken here); ``rearm``: when the
            # result leaves the unit (taken by W for a pipelined mpq.rqpa), ACC[k] = ACCB[k]
            x_rearm = x_issue & d.acc_rd
            x_rearm_v = x_rearm & ~((d.unit == Unit.RQ) if rq_pipe else Const(0, 1))
            with m.If(u_adv):
                m.d.sync += [u_tag_v[0].eq(w_acc_issue | x_rearm_v),
                             u_tag_k[0].eq(Mux(w_accop, lw.k, d.acc_k)),
                             u_tag_init[0].eq(w_accop & lw.init),
                             u_tag_rearm[0].eq(x_rearm)]
                for i in range(1, latency):
                    m.d.sync += [u_tag_v[i].eq(u_tag_v[i - 1]), u_tag_k[i].eq(u_tag_k[i - 1]),
                                 u_tag_init[i].eq(u_tag_init[i - 1]),
                                 u_tag_rearm[i].eq(u_tag_rearm[i - 1])]
            o_acc = u_tag_v[-1]
            o_taken = mul.o.valid & (o_acc | (take & ~freeze))
            m.d.comb += [
                acc_r_u.addr.eq(u_tag_k[-1]),
                accb_r.addr.eq(u_tag_k[-1]),
                acc_w.addr.eq(u_tag_k[-1]),
                acc_w.data.eq(Mux(u_tag_rearm[-1], accb_r.data,
                                  Mux(u_tag_init[-1], 0, acc_r_u.data) + mul.o.payload.result)),
                acc_w.en.eq(o_taken & (o_acc | u_tag_rearm[-1])),
                accb_w.addr.eq(u_tag_k[-1]),
                accb_w.data.eq(mul.o.payload.result),
                accb_w.en.eq(mul.o.valid & o_acc & u_tag_init[-1]),
            ]
        m.d.comb += [
            mul.o.ready.eq(o_acc | (take & ~freeze)),
            freeze.eq((take & ~mul.o.valid) | x_long_busy),
        ]
        return m
