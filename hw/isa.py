"""The MPQ instruction-set extension, defined once.

Every custom instruction is one :class:`InstrDesc` row of :data:`CUSTOM_INSTRUCTIONS`. The core's
decoder, the C intrinsics header, the Markdown documentation and the JSON read by the host tools
are all generated from that table (``rvmpq isa --format json|md|c``).

Encoding (all rows are R-type, ``funct7 | rs2 | rs1 | funct3 | rd | opcode``)::

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
=================================  ========  =======  ===========================  ==============

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

Every other encoding in the custom-0 and custom-1 major opcodes is illegal (it traps with
mcause = 2, like any undefined instruction).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import NamedTuple

from amaranth import signed
from amaranth.lib import data

from .modes import WIDTHS, ElemWidth, width_code

__all__ = [
    "OPCODE_CUSTOM0", "OPCODE_CUSTOM1", "CUSTOM_OPCODES", "CSR_MPQ_RQ",
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
#: Both custom major opcodes: every encoding in them that is not a table row is illegal.
CUSTOM_OPCODES = (OPCODE_CUSTOM0, OPCODE_CUSTOM1)

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


#: Latency (see :attr:`InstrDesc.latency`) of a dot product on the 5-stage core.
DOT_LATENCY = _dot_latency()
#: Cycles a requantization occupies the execute stage (digit-serial 32x32 multiply, 8 bits per
#: cycle, then shift and round/clamp cycles; see :mod:`rvmpq.hw.core.requant`): the next instruction, dependent
#: or not, retires this many cycles after it. Checked against the RTL by verif/tb_core.py.
RQ_LATENCY = 8


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
        Encoding format; ``"R"`` for every row today.
    reads_rd : bool
        ``rd`` is also a source operand (accumulator / packing register).
    writes_rd : bool
        The instruction writes ``rd``.
    kind : str
        Execution unit / operation: ``"dot"`` (SIMD dot product on the shared multiplier),
        ``"rq"`` (requantize) or ``"rqp"`` (requantize and shift-pack into ``rd``).
    width : int or None
        SIMD element width in bits for ``"dot"`` rows (2, 4, 8, 16).
    a_signed, b_signed : bool
        Signedness of the ``rs1`` / ``rs2`` lanes for ``"dot"`` rows.
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

    #: Bits of the word that are fixed by the row (opcode, funct3, funct7).
    MASK = 0xFE00707F

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
    return rows


#: The custom instructions, one row each.
CUSTOM_INSTRUCTIONS: list[InstrDesc] = _build_table()
#: Rows by mnemonic.
BY_NAME: dict[str, InstrDesc] = {d.name: d for d in CUSTOM_INSTRUCTIONS}
_BY_MATCH: dict[int, InstrDesc] = {d.match: d for d in CUSTOM_INSTRUCTIONS}
assert len(_BY_MATCH) == len(CUSTOM_INSTRUCTIONS), "two rows share an encoding"


def encode(name: str, rd: int, rs1: int, rs2: int) -> int:
    """The 32-bit encoding of custom instruction ``name`` with the given register numbers.

    Raises ``ValueError`` for an unknown mnemonic (naming the known ones) or a register number
    outside 0..31.
    """
    try:
        d = BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown custom instruction {name!r}; choose one of "
                         f"{sorted(BY_NAME)}") from None
    for fname, r in (("rd", rd), ("rs1", rs1), ("rs2", rs2)):
        if not isinstance(r, int) or not 0 <= r < 32:
            raise ValueError(f"{fname} = {r!r} is not a register number 0..31")
    return r_type(d.opcode, d.funct3, d.funct7, rd, rs1, rs2)


def decode(word: int) -> tuple[InstrDesc, int, int, int] | None:
    """Decode a 32-bit word: ``(row, rd, rs1, rs2)``, or ``None`` if it is no custom instruction.

    ``None`` is returned both for words outside custom-0/custom-1 and for undefined encodings
    inside them (which the core treats as illegal instructions).
    """
    word &= 0xFFFF_FFFF
    d = _BY_MATCH.get(word & InstrDesc.MASK)
    if d is None:
        return None
    return d, (word >> 7) & 31, (word >> 15) & 31, (word >> 20) & 31


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
        "opcodes": {"custom0": OPCODE_CUSTOM0, "custom1": OPCODE_CUSTOM1},
        "undefined_custom_encodings": "illegal instruction (mcause 2)",
        "instructions": [dict(asdict(d), match=d.match, mask=InstrDesc.MASK)
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
        "All rows are R-type (`funct7 | rs2 | rs1 | funct3 | rd | opcode`). Every other encoding "
        f"in custom-0 (`{OPCODE_CUSTOM0:#04x}`) and custom-1 (`{OPCODE_CUSTOM1:#04x}`) is an "
        "illegal instruction.",
        "",
        "| instruction | opcode | funct3 | funct7 | match | reads rd | latency | semantics |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in CUSTOM_INSTRUCTIONS:
        lines.append(f"| `{d.name} rd, rs1, rs2` | `{d.opcode:#04x}` | {d.funct3} | "
                     f"`{d.funct7:07b}` | `{d.match:#010x}` | {'yes' if d.reads_rd else 'no'} | "
                     f"{d.latency} | `{d.semantics}` |")
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
        else:  # pragma: no cover - a new kind needs its C signature here
            raise NotImplementedError(f"no C intrinsic template for kind {d.kind!r}")
        out.append("")
    out += ["#endif /* RVMPQ_ISA_H */", ""]
    return "\n".join(out)
