"""The MPQ instruction-set extension, defined once.

Every custom instruction is one :class:`InstrDesc` row of :data:`CUSTOM_INSTRUCTIONS`. The core's
decoder, the C intrinsics header, the Markdown documentation and the JSON read by the host tools
are all generated from that table (``rvmpq isa --format json|md|c``).

Encoding (every row uses the R-type fields ``funct7 | rs2 | rs1 | funct3 | rd | opcode``)::

    31      25 24  20 19  15 14  12 11   7 6      0
    +---------+------+------+------+------+--------+
    | funct7  | rs2  | rs1  |funct3|  rd  | opcode |
    +---------+------+------+------+------+--------+

=================================  ========  =======  ===========================  ==============
instruction                        opcode    funct3   funct7                       semantics
=================================  ========  =======  ===========================  ==============
``mpq.dot.w{2,4,8,16}.{ss..uu}``   custom-0  0ww      ``00000 b a``                rd += sum lanes
                                   (0x0B)    (ww =    (a = rs1 signed,
                                             width)   b = rs2 signed)
``mpq.rq``                         custom-1  000      ``0000000``                  rd = requant(rs1, rs2)
                                   (0x2B)
``mpq.rqp``                        custom-1  001      ``0000000``                  rd = rqpack(rd, rs1, rs2)
                                   (0x2B)
``mpq.ldot.w{2,4,8,16}.{us,ss}``   custom-2  ``s ww``  ``off`` (word offset)       ACC[k] += dot(rs2,
``k, rs2, off(rs1)``               (0x5B)    (s = rs2                              MEM32[rs1+4*off])
                                             signed)
``mpq.accld k, off(rs1)``          custom-3  000      ``off``                      ACC[k] = ACCB[k]
                                   (0x7B)                                          = MEM32[rs1+4*off]
``mpq.rqpa rd, rs1, k``            custom-3  001      ``0000000``                  rd = rqpack(rd,
                                   (0x7B)                                          ACC[k], rs1);
                                                                                   ACC[k] = ACCB[k]
``mpq.accrd rd, k``                custom-3  010      ``0000000``                  rd = ACC[k];
                                   (0x7B)                                          ACC[k] = ACCB[k]
=================================  ========  =======  ===========================  ==============

The fields keep their R-type places; where a row puts an accumulator number ``k`` (0..15) or a
word offset ``off`` (0..127) instead of a register is given by its format (:data:`FORMATS`):
``k`` sits in the ``rd`` field of ``mpq.ldot``/``mpq.accld`` and in the ``rs2`` field of
``mpq.rqpa``/``mpq.accrd`` (its top bit must be 0), ``off`` in ``funct7``.

Memory-operand dot products into internal accumulators (custom-2/custom-3): the core holds
:data:`NUM_ACC` 32-bit accumulators ``ACC[0..15]``, written only by the SIMD unit's last stage,
and as many bias copies ``ACCB[0..15]``. ``mpq.accld`` loads both; reading an accumulator
(``mpq.rqpa``, ``mpq.accrd``) *re-arms* it: ``ACC[k] = ACCB[k]`` afterwards, so an
output-stationary kernel loads its biases once per block of output channels and then, per
output pixel, only accumulates and reads out. The base register is ``rs1`` as for RISC-V loads
and stores and the activation word is ``rs2`` (the place of store data), so the address comes
from the same adder as for ``lw`` and the activation is forwarded like store data.
``mpq.ldot``/``mpq.accld`` access memory like ``lw`` (word-aligned, DMEM only: misaligned ->
mcause 4, outside DMEM -> mcause 5, mtval = the address); a faulting one does not change
``ACC``. ``ldot`` takes the weights from memory (always signed) and the activations from
``rs2`` (unsigned ``us`` for post-ReLU activations, or signed ``ss``).

Why (issue 4): with ``mpq.dot`` a register-blocked conv inner loop needs per input word ``P``
activation loads, ``NB`` weight loads and ``P*NB`` dots, with all ``P*NB`` accumulators in
registers (at most 16/27 of the slots are dots); with ``mpq.ldot`` it is one activation ``lw``
and 16 ``mpq.ldot`` (16/17), measured in ``rvmpq bench --only kernels``.

The dot products read ``rd`` as their accumulator (like PULP's ``pv.sdotsp``), so the register
file has a third read port used only by rows with ``reads_rd``. In the suffix ``.su`` the first
letter is the signedness of ``rs1`` (``u`` for post-ReLU activations) and the second that of
``rs2`` (``s`` for weights).

Requantization (``mpq.rq`` / ``mpq.rqp``, contracts.md section 3) takes ``shift``, ``zp``,
``bits`` and ``out_signed`` from the machine-mode custom CSR ``mpq_rq`` (0x7C0):

=========  =======  ==========================================================
field      bits     meaning
=========  =======  ==========================================================
shift      [5:0]    rounding right shift 0..63
out_signed [6]      1: clamp to the signed ``bits`` range, 0: unsigned range
bits       [9:8]    output width code (:class:`~rvmpq.hw.modes.ElemWidth`)
zp         [31:16]  zero point, signed 16-bit
=========  =======  ==========================================================

Every other encoding in the custom-0..custom-3 major opcodes is illegal (it traps with
mcause = 2, like any undefined instruction), as is an accumulator number above 15.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import NamedTuple

from amaranth import signed
from amaranth.lib import data

from .modes import WIDTHS, ElemWidth, width_code

__all__ = [
    "OPCODE_CUSTOM0", "OPCODE_CUSTOM1", "OPCODE_CUSTOM2", "OPCODE_CUSTOM3", "CUSTOM_OPCODES",
    "CSR_MPQ_RQ", "NUM_ACC", "FORMATS", "decode_off", "LDOT_LATENCY",
    "InstrDesc", "CUSTOM_INSTRUCTIONS", "BY_NAME",
    "encode", "decode", "r_type",
    "RqConfig", "RqConfigLayout", "rq_config_pack", "rq_config_unpack", "rq_config_mask",
    "RQ_CONFIG_WRITABLE",
    "to_json", "to_markdown", "to_c_header", "DOT_LATENCY", "RQ_LATENCY",
]

#: RISC-V major opcode custom-0 (the dot products).
OPCODE_CUSTOM0 = 0x0B
#: RISC-V major opcode custom-1 (requantization).
OPCODE_CUSTOM1 = 0x2B
#: RISC-V major opcode custom-2 (memory-operand dot products into the accumulators).
OPCODE_CUSTOM2 = 0x5B
#: RISC-V major opcode custom-3 (accumulator load, requantize-and-pack, read).
OPCODE_CUSTOM3 = 0x7B
#: The custom major opcodes: every encoding in them that is not a table row is illegal.
CUSTOM_OPCODES = (OPCODE_CUSTOM0, OPCODE_CUSTOM1, OPCODE_CUSTOM2, OPCODE_CUSTOM3)
#: Internal accumulators ``ACC[0..NUM_ACC-1]`` of the memory-operand dot products.
NUM_ACC = 16

#: Encoding formats: ``fmt -> (mask of the fixed bits, assembler operand syntax)``. ``R``: all
#: of funct7/rs2/rs1 are operands' fields as in R-type; ``L``: ``k`` in rd (bit 11 fixed 0),
#: ``off`` in funct7; ``LA``: as ``L`` with rs2 fixed 0; ``K``: ``k`` in rs2 (bit 24 fixed 0);
#: ``KR``: as ``K`` with rs1 fixed 0.
FORMATS: dict[str, tuple[int, str]] = {
    "R": (0xFE00707F, "rd, rs1, rs2"),
    "L": (0x0000787F, "k, rs2, off(rs1)"),
    "LA": (0x01F0787F, "k, off(rs1)"),
    "K": (0xFF00707F, "rd, rs1, k"),
    "KR": (0xFF0FF07F, "rd, k"),
}

#: Machine-mode custom read/write CSR holding the requantization configuration.
CSR_MPQ_RQ = 0x7C0

def _dot_latency() -> int:
    """Latency of a dot product on the core, from the shared unit's ``LATENCY``.

    The core takes the unit's result in W (in M when ``LATENCY == 1``), so an instruction that
    uses it right after waits ``max(2, LATENCY) - 1`` cycles (like a load when ``LATENCY <= 2``).
    Back-to-back dot products chaining through ``rd`` wait as well; interleave accumulators to
    issue one per cycle.
    """
    try:
        from .simd import SimdMulUnit
    except ImportError:  # pragma: no cover - the unit is part of the package
        return 2
    return max(2, int(SimdMulUnit.LATENCY))


#: Latency (see :attr:`InstrDesc.latency`) of a dot product on the core.
DOT_LATENCY = _dot_latency()
#: Latency of a requantization for a dependent that reads ``rd`` through ``rs1``/``rs2`` or as
#: the accumulator of a ``mpq.dot``: the 32x32 product comes from the shared SIMD unit (issued in
#: X, taken in W like a multiply), the rounding shift and zero point happen in W and the clamp
#: and pack in R, the register-write stage after W (for Fmax), so the result is forwarded only
#: from R into D: such a dependent waits 3 cycles. A following ``mpq.rqp``/``mpq.rqpa`` into the
#: same ``rd`` does not wait (its packing operand is forwarded from R into M and W): one
#: requantization per cycle. Checked against the RTL by verif/tb_core.py.
RQ_LATENCY = 4
#: Latency of ``mpq.ldot``/``mpq.accld`` for a following ``mpq.rqpa``/``mpq.accrd`` of the same
#: accumulator (memory read in M, the word registered for issue from W, the SIMD unit's stages,
#: the accumulate, then the read in D): ``4 + LATENCY`` of the unit. Consecutive ``mpq.ldot``
#: into the same accumulator never wait.
LDOT_LATENCY = 4 + max(2, DOT_LATENCY)


@dataclass(frozen=True)
class InstrDesc:
    """One custom instruction.

    Parameters
    ----------
    name : str
        Assembler mnemonic, e.g. ``"mpq.dot.w8.us"``.
    opcode, funct3, funct7 : int
        The fixed fields of the R-type encoding.
    fmt : str
        Encoding format, a key of :data:`FORMATS` (which fields are fixed, the operand syntax).
    reads_rd : bool
        ``rd`` is also a source operand (accumulator / packing register).
    writes_rd : bool
        The instruction writes ``rd``.
    kind : str
        Execution unit / operation: ``"dot"`` (SIMD dot product on the shared multiplier),
        ``"rq"`` (requantize), ``"rqp"`` (requantize and shift-pack into ``rd``), ``"ldot"``
        (memory-operand dot product into ``ACC[k]``), ``"accld"`` (``ACC[k] =`` a memory word),
        ``"rqpa"`` (requantize ``ACC[k]`` and shift-pack into ``rd``), ``"accrd"``
        (``rd = ACC[k]``).
    width : int or None
        SIMD element width in bits for ``"dot"`` rows (2, 4, 8, 16).
    a_signed, b_signed : bool
        Signedness of the ``rs1`` / ``rs2`` lanes for ``"dot"`` rows; for ``"ldot"`` rows
        ``a_signed`` is that of the activation (``rs2``) and ``b_signed`` that of the weights
        (the memory word, always signed).
    latency : int
        Cycles the instruction costs when its result is used by the very next instruction:
        retire(dependent) - retire(third instruction before it) - 3 (1 = like an ALU instruction;
        measured on the RTL by verif/tb_core.py).
    semantics : str
        One-line pseudo-code of the result.
    """

    name: str
    opcode: int
    funct3: int
    funct7: int
    fmt: str
    reads_rd: bool
    writes_rd: bool
    kind: str
    width: int | None
    a_signed: bool
    b_signed: bool
    latency: int
    semantics: str

    @property
    def match(self) -> int:
        """The fixed bits of the encoding (register fields zero)."""
        return r_type(self.opcode, self.funct3, self.funct7, 0, 0, 0)

    #: Bits fixed by an R-format row (opcode, funct3, funct7); see :attr:`mask` for any row.
    MASK = 0xFE00707F

    @property
    def mask(self) -> int:
        """Bits of the word that are fixed by this row (:data:`FORMATS`)."""
        return FORMATS[self.fmt][0]

    @property
    def operands(self) -> str:
        """Assembler operand syntax, e.g. ``"k, rs2, off(rs1)"``."""
        return FORMATS[self.fmt][1]

    @property
    def pattern(self) -> str:
        """The encoding as a 32-character bit pattern, ``-`` for operand bits (MSB first)."""
        return "".join(("1" if (self.match >> i) & 1 else "0") if (self.mask >> i) & 1 else "-"
                       for i in range(31, -1, -1))

    @property
    def c_name(self) -> str:
        """Name of the C intrinsic: ``mpq.dot.w8.us`` -> ``mpq_dot_w8_us``."""
        return self.name.replace(".", "_")


def r_type(opcode: int, funct3: int, funct7: int, rd: int, rs1: int, rs2: int) -> int:
    """Assemble an R-type instruction word.

    Raises ``ValueError`` when a field does not fit.
    """
    for fname, v, bits in (("opcode", opcode, 7), ("funct3", funct3, 3), ("funct7", funct7, 7),
                           ("rd", rd, 5), ("rs1", rs1, 5), ("rs2", rs2, 5)):
        if not isinstance(v, int) or not 0 <= v < (1 << bits):
            raise ValueError(f"{fname} = {v!r} does not fit in {bits} bits (0..{(1 << bits) - 1})")
    return (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _sign_letter(signed: bool) -> str:
    return "s" if signed else "u"


def _build_table() -> list[InstrDesc]:
    rows = []
    for w in WIDTHS:
        code = width_code(w).value
        for a_signed in (True, False):
            for b_signed in (True, False):
                suffix = _sign_letter(a_signed) + _sign_letter(b_signed)
                rows.append(InstrDesc(
                    name=f"mpq.dot.w{w}.{suffix}", opcode=OPCODE_CUSTOM0, funct3=code,
                    funct7=(int(b_signed) << 1) | int(a_signed), fmt="R",
                    reads_rd=True, writes_rd=True, kind="dot", width=w,
                    a_signed=a_signed, b_signed=b_signed, latency=DOT_LATENCY,
                    semantics=(f"rd = rd + sum_{{i<{32 // w}}} "
                               f"{'s' if a_signed else 'u'}{w}(rs1[i]) * "
                               f"{'s' if b_signed else 'u'}{w}(rs2[i])  (mod 2**32)")))
    rows.append(InstrDesc(
        name="mpq.rq", opcode=OPCODE_CUSTOM1, funct3=0, funct7=0, fmt="R",
        reads_rd=False, writes_rd=True, kind="rq", width=None, a_signed=True, b_signed=True,
        latency=RQ_LATENCY,
        semantics="rd = sext(requant(acc=rs1, mult=rs2, shift, zp, bits, out_signed from mpq_rq))"))
    rows.append(InstrDesc(
        name="mpq.rqp", opcode=OPCODE_CUSTOM1, funct3=1, funct7=0, fmt="R",
        reads_rd=True, writes_rd=True, kind="rqp", width=None, a_signed=True, b_signed=True,
        latency=RQ_LATENCY,
        semantics=("rd = (rd >> bits) | ((requant(rs1, rs2, ...) & (2**bits - 1)) << (32 - bits))"
                   "  (logical shift; bits from mpq_rq)")))
    for w in WIDTHS:
        code = width_code(w).value
        for a_signed in (False, True):
            suffix = _sign_letter(a_signed) + "s"
            rows.append(InstrDesc(
                name=f"mpq.ldot.w{w}.{suffix}", opcode=OPCODE_CUSTOM2,
                funct3=code | (int(a_signed) << 2), funct7=0, fmt="L", reads_rd=False,
                writes_rd=False, kind="ldot", width=w, a_signed=a_signed, b_signed=True,
                latency=LDOT_LATENCY,
                semantics=(f"ACC[k] = ACC[k] + sum_{{i<{32 // w}}} "
                           f"{'s' if a_signed else 'u'}{w}(rs2[i]) * s{w}(MEM32[rs1 + 4*off][i])"
                           "  (mod 2**32)")))
    rows.append(InstrDesc(
        name="mpq.accld", opcode=OPCODE_CUSTOM3, funct3=0, funct7=0, fmt="LA", reads_rd=False,
        writes_rd=False, kind="accld", width=None, a_signed=True, b_signed=True,
        latency=LDOT_LATENCY, semantics="ACC[k] = ACCB[k] = MEM32[rs1 + 4*off]"))
    rows.append(InstrDesc(
        name="mpq.rqpa", opcode=OPCODE_CUSTOM3, funct3=1, funct7=0, fmt="K", reads_rd=True,
        writes_rd=True, kind="rqpa", width=None, a_signed=True, b_signed=True,
        latency=RQ_LATENCY,
        semantics=("rd = (rd >> bits) | ((requant(ACC[k], rs1, ...) & (2**bits - 1)) << (32 - bits))"
                   "  (mult = rs1; bits from mpq_rq); then ACC[k] = ACCB[k]")))
    rows.append(InstrDesc(
        name="mpq.accrd", opcode=OPCODE_CUSTOM3, funct3=2, funct7=0, fmt="KR", reads_rd=False,
        writes_rd=True, kind="accrd", width=None, a_signed=True, b_signed=True,
        latency=1, semantics="rd = ACC[k]; then ACC[k] = ACCB[k]"))
    return rows


#: The custom instructions, one row each.
CUSTOM_INSTRUCTIONS: list[InstrDesc] = _build_table()
#: Rows by mnemonic.
BY_NAME: dict[str, InstrDesc] = {d.name: d for d in CUSTOM_INSTRUCTIONS}
_BY_MATCH: dict[tuple[int, int], InstrDesc] = {(d.mask, d.match): d for d in CUSTOM_INSTRUCTIONS}
assert len(_BY_MATCH) == len(CUSTOM_INSTRUCTIONS), "two rows share an encoding"
_MASKS = sorted({d.mask for d in CUSTOM_INSTRUCTIONS})


def _check_overlap():
    rows = CUSTOM_INSTRUCTIONS
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            common = a.mask & b.mask
            assert (a.match & common) != (b.match & common), f"{a.name} overlaps {b.name}"


_check_overlap()


def encode(name: str, rd: int = 0, rs1: int = 0, rs2: int = 0, off: int = 0) -> int:
    """The 32-bit encoding of custom instruction ``name``.

    ``rd``, ``rs1``, ``rs2`` are the values of those fields: register numbers 0..31, or the
    accumulator number ``k`` (0..15) where the row's format puts it (``rd`` for ``L``/``LA``,
    ``rs2`` for ``K``/``KR``); ``off`` is the word offset 0..127 of the ``L``/``LA`` formats.
    Fields the format fixes must be 0.

    Raises ``ValueError`` for an unknown mnemonic (naming the known ones) or a field out of range.
    """
    try:
        d = BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown custom instruction {name!r}; choose one of "
                         f"{sorted(BY_NAME)}") from None
    for fname, r in (("rd", rd), ("rs1", rs1), ("rs2", rs2)):
        if not isinstance(r, int) or not 0 <= r < 32:
            raise ValueError(f"{fname} = {r!r} is not a register number 0..31")
    has_off = d.fmt in ("L", "LA")
    if not isinstance(off, int) or not 0 <= off < 128 or (off and not has_off):
        raise ValueError(f"off = {off!r}: {d.name} takes " +
                         ("a word offset 0..127" if has_off else "no offset (0)"))
    word = r_type(d.opcode, d.funct3, off if has_off else d.funct7, rd, rs1, rs2)
    if word & d.mask != d.match:
        raise ValueError(f"{d.name} {d.operands}: a field is out of range (accumulator k must "
                         f"be 0..{NUM_ACC - 1}; fields the format fixes must be 0): rd={rd}, "
                         f"rs1={rs1}, rs2={rs2}")
    return word


def decode(word: int) -> tuple[InstrDesc, int, int, int] | None:
    """Decode a 32-bit word: ``(row, rd, rs1, rs2)`` (the raw fields), or ``None`` if it is no
    custom instruction. The word offset of ``L``/``LA`` rows is :func:`decode_off`.

    ``None`` is returned both for words outside the custom opcodes and for undefined encodings
    inside them (which the core treats as illegal instructions).
    """
    word &= 0xFFFF_FFFF
    for mask in _MASKS:
        d = _BY_MATCH.get((mask, word & mask))
        if d is not None:
            return d, (word >> 7) & 31, (word >> 15) & 31, (word >> 20) & 31
    return None


def decode_off(word: int) -> int:
    """The word offset (``funct7``) of an ``L``/``LA`` format instruction word."""
    return (word >> 25) & 0x7F


# ---- the mpq_rq CSR ------------------------------------------------------------------------

#: Bit layout of the ``mpq_rq`` CSR (used by the core's CSR file).
RqConfigLayout = data.StructLayout({
    "shift": 6,
    "out_signed": 1,
    "_pad0": 1,
    "bits": ElemWidth,
    "_pad1": 6,
    "zp": signed(16),
})


class RqConfig(NamedTuple):
    """Requantization parameters held in the ``mpq_rq`` CSR."""

    shift: int
    zp: int
    bits: int
    out_signed: bool


def rq_config_pack(shift: int, zp: int = 0, bits: int = 8, out_signed: bool = True) -> int:
    """The ``mpq_rq`` CSR value for the given requantization parameters.

    Parameters
    ----------
    shift : int
        Rounding right shift, 0..63.
    zp : int
        Zero point, a signed 16-bit integer (-32768..32767).
    bits : int
        Output width: 2, 4, 8 or 16.
    out_signed : bool
        Clamp to the signed (True) or unsigned (False) ``bits``-bit range.

    Raises ``ValueError`` naming the allowed values for out-of-range arguments.
    """
    if not isinstance(shift, int) or not 0 <= shift <= 63:
        raise ValueError(f"shift = {shift!r} is out of range; allowed 0..63")
    if not isinstance(zp, int) or not -32768 <= zp <= 32767:
        raise ValueError(f"zp = {zp!r} is out of range; allowed -32768..32767 (signed 16-bit)")
    code = width_code(bits).value
    return (shift | (int(bool(out_signed)) << 6) | (code << 8) | ((zp & 0xFFFF) << 16))


#: Bits of ``mpq_rq`` that hold state; the reserved bits read as zero.
RQ_CONFIG_WRITABLE = 0xFFFF_037F


def rq_config_mask(value: int) -> int:
    """The value ``mpq_rq`` holds after ``csrw`` of ``value`` (reserved bits cleared)."""
    return value & RQ_CONFIG_WRITABLE


def rq_config_unpack(word: int) -> RqConfig:
    """Inverse of :func:`rq_config_pack` (reserved bits are ignored)."""
    word &= 0xFFFF_FFFF
    zp = (word >> 16) & 0xFFFF
    if zp & 0x8000:
        zp -= 0x10000
    return RqConfig(shift=word & 63, zp=zp, bits=ElemWidth((word >> 8) & 3).bits,
                    out_signed=bool((word >> 6) & 1))


# ---- generators ----------------------------------------------------------------------------

def to_json() -> str:
    """The table, the CSR and the encoding rules as JSON (read by the host tools)."""
    doc = {
        "extension": "mpq",
        "opcodes": {"custom0": OPCODE_CUSTOM0, "custom1": OPCODE_CUSTOM1,
                    "custom2": OPCODE_CUSTOM2, "custom3": OPCODE_CUSTOM3},
        "undefined_custom_encodings": "illegal instruction (mcause 2)",
        "accumulators": NUM_ACC,
        "formats": {k: {"mask": m, "operands": o} for k, (m, o) in FORMATS.items()},
        "instructions": [dict(asdict(d), match=d.match, mask=d.mask, operands=d.operands)
                         for d in CUSTOM_INSTRUCTIONS],
        "csrs": [{"name": "mpq_rq", "address": CSR_MPQ_RQ, "access": "rw",
                  "fields": [{"name": "shift", "lsb": 0, "width": 6},
                             {"name": "out_signed", "lsb": 6, "width": 1},
                             {"name": "bits", "lsb": 8, "width": 2,
                              "encoding": {str(w.bits): w.value for w in ElemWidth}},
                             {"name": "zp", "lsb": 16, "width": 16, "signed": True}]}],
    }
    return json.dumps(doc, indent=2) + "\n"


def to_markdown() -> str:
    """Human-readable documentation of the extension (Markdown)."""
    lines = [
        "# rvmpq custom instructions",
        "",
        "Generated by `rvmpq isa --format md` from `rvmpq.hw.isa` (do not edit).",
        "",
        "All rows use the R-type fields (`funct7 | rs2 | rs1 | funct3 | rd | opcode`). Every "
        f"other encoding in custom-0 (`{OPCODE_CUSTOM0:#04x}`), custom-1 "
        f"(`{OPCODE_CUSTOM1:#04x}`), custom-2 (`{OPCODE_CUSTOM2:#04x}`) and custom-3 "
        f"(`{OPCODE_CUSTOM3:#04x}`) is an illegal instruction.",
        "",
        f"`k` is an internal accumulator `ACC[0..{NUM_ACC - 1}]` (in the `rd` field of "
        "`mpq.ldot`/`mpq.accld`, in the `rs2` field of `mpq.rqpa`/`mpq.accrd`); `off` is a word "
        "offset 0..127 in `funct7`. `mpq.ldot`/`mpq.accld` access memory like `lw` (aligned, "
        "DMEM; a faulting one leaves `ACC` unchanged). `mpq.accld` also sets the bias copy "
        "`ACCB[k]`; `mpq.rqpa`/`mpq.accrd` re-arm the accumulator they read (`ACC[k] = ACCB[k]`).",
        "",
        "| instruction | opcode | funct3 | funct7 | match | mask | reads rd | latency | semantics |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in CUSTOM_INSTRUCTIONS:
        f7 = "`off`" if d.fmt in ("L", "LA") else f"`{d.funct7:07b}`"
        lines.append(f"| `{d.name} {d.operands}` | `{d.opcode:#04x}` | {d.funct3} | "
                     f"{f7} | `{d.match:#010x}` | `{d.mask:#010x}` | "
                     f"{'yes' if d.reads_rd else 'no'} | {d.latency} | `{d.semantics}` |")
    lines += [
        "",
        f"## CSR `mpq_rq` ({CSR_MPQ_RQ:#05x}, machine read/write)",
        "",
        "| field | bits | meaning |",
        "|---|---|---|",
        "| shift | [5:0] | rounding right shift 0..63 (round half up) |",
        "| out_signed | [6] | 1: signed output range, 0: unsigned |",
        "| bits | [9:8] | output width code: " +
        ", ".join(f"{w.value} = {w.bits}" for w in ElemWidth) + " |",
        "| zp | [31:16] | zero point, signed 16-bit |",
        "",
        "Requantization (contracts.md section 3): `p = acc * mult` (exact); "
        "`r = p` if `shift == 0` else `(p >> shift) + ((p >> (shift-1)) & 1)`; "
        "`y = clamp(r + zp, lo, hi)`.",
        "",
    ]
    return "\n".join(lines)


def to_c_header() -> str:
    """A C header with one ``static inline`` intrinsic per instruction and the CSR helpers."""
    out = [
        "/* rvmpq custom instructions: generated by `rvmpq isa --format c` from rvmpq.hw.isa.",
        " * Do not edit. Compile with zig cc -target riscv32-freestanding-none -mcpu=generic_rv32+m",
        " */",
        "#ifndef RVMPQ_ISA_H",
        "#define RVMPQ_ISA_H",
        "",
        "#include <stdint.h>",
        "",
        f"#define MPQ_CSR_RQ {CSR_MPQ_RQ:#x}",
        "",
        "/* mpq_rq CSR fields */",
        "#define MPQ_RQ_SHIFT_LSB 0",
        "#define MPQ_RQ_OUT_SIGNED_LSB 6",
        "#define MPQ_RQ_BITS_LSB 8",
        "#define MPQ_RQ_ZP_LSB 16",
    ]
    for w in ElemWidth:
        out.append(f"#define MPQ_BITS_CODE_{w.bits} {w.value}")
    out += [
        "/* bits must be one of 2, 4, 8, 16 */",
        "#define MPQ_BITS_CODE(bits) ((bits) == 2 ? 0 : (bits) == 4 ? 1 : (bits) == 8 ? 2 : 3)",
        "#define MPQ_RQ_CONFIG(shift, zp, bits, out_signed) \\",
        "    ((uint32_t)(((uint32_t)(shift) & 63u) | (((uint32_t)(out_signed) & 1u) << 6) | \\",
        "     ((uint32_t)MPQ_BITS_CODE(bits) << 8) | (((uint32_t)(zp) & 0xffffu) << 16)))",
        "",
        "static inline void mpq_rq_config_write(uint32_t cfg) {",
        f"    __asm__ volatile (\"csrw {CSR_MPQ_RQ:#x}, %0\" :: \"r\"(cfg));",
        "}",
        "",
        "static inline uint32_t mpq_rq_config_read(void) {",
        "    uint32_t v;",
        f"    __asm__ volatile (\"csrr %0, {CSR_MPQ_RQ:#x}\" : \"=r\"(v));",
        "    return v;",
        "}",
        "",
    ]
    for d in CUSTOM_INSTRUCTIONS:
        insn = f".insn r {d.opcode:#04x}, {d.funct3}, {d.funct7}, %0, %1, %2"
        out.append(f"/* {d.name}: {d.semantics} */")
        if d.kind == "dot":
            out += [
                f"static inline uint32_t {d.c_name}(uint32_t acc, uint32_t a, uint32_t b) {{",
                f"    __asm__ (\"{insn}\" : \"+r\"(acc) : \"r\"(a), \"r\"(b));",
                "    return acc;",
                "}",
            ]
        elif d.kind == "rq":
            out += [
                f"static inline int32_t {d.c_name}(int32_t acc, int32_t mult) {{",
                "    int32_t y;",
                f"    __asm__ volatile (\"{insn}\" : \"=r\"(y) : \"r\"(acc), \"r\"(mult));",
                "    return y;",
                "}",
            ]
        elif d.kind == "rqp":
            out += [
                f"static inline uint32_t {d.c_name}(uint32_t packed, int32_t acc, int32_t mult) {{",
                f"    __asm__ volatile (\"{insn}\" : \"+r\"(packed) : \"r\"(acc), \"r\"(mult));",
                "    return packed;",
                "}",
            ]
        elif d.kind == "ldot":
            # k and off are encoding fields: they must be integer literals (macro arguments)
            out += [
                "/* k: accumulator 0..15, off: word offset 0..127, both integer literals. The",
                " * weights at base + 4*off must not be written by the program (no memory clobber,",
                " * so that the compiler may schedule the activation loads around it). */",
                f"#define {d.c_name}(k, act, base, off) __asm__ volatile ( \\",
                f"    \".insn r {d.opcode:#04x}, {d.funct3}, \" #off \", x\" #k \", %0, %1\" \\",
                "    :: \"r\"(base), \"r\"(act))",
            ]
        elif d.kind == "accld":
            out += [
                "/* k: accumulator 0..15, off: word offset 0..127, both integer literals */",
                f"#define {d.c_name}(k, base, off) __asm__ volatile ( \\",
                f"    \".insn r {d.opcode:#04x}, {d.funct3}, \" #off \", x\" #k \", %0, x0\" \\",
                "    :: \"r\"(base))",
            ]
        elif d.kind == "rqpa":
            out += [
                "/* k: accumulator 0..15, an integer literal; returns the new packed word */",
                f"#define {d.c_name}(packed, mult, k) ({{ uint32_t _p = (packed); \\",
                f"    __asm__ volatile (\".insn r {d.opcode:#04x}, {d.funct3}, {d.funct7}, %0, %1, x\" #k \\",
                "                      : \"+r\"(_p) : \"r\"((int32_t)(mult))); _p; })",
            ]
        elif d.kind == "accrd":
            out += [
                "/* k: accumulator 0..15, an integer literal; returns ACC[k] */",
                f"#define {d.c_name}(k) ({{ uint32_t _v; \\",
                f"    __asm__ volatile (\".insn r {d.opcode:#04x}, {d.funct3}, {d.funct7}, %0, x0, x\" #k \\",
                "                      : \"=r\"(_v)); _v; })",
            ]
        else:  # pragma: no cover - a new kind needs its C signature here
            raise NotImplementedError(f"no C intrinsic template for kind {d.kind!r}")
        out.append("")
    out += ["#endif /* RVMPQ_ISA_H */", ""]
    return "\n".join(out)
