"""Operating modes of the shared multiplier / SIMD dot-product array.

One array serves the RV32M multiplies and the MPQ dot products. Its per-operation mode is a
:class:`MulMode` struct:

=============  =====  ==========================================================================
field          bits   meaning
=============  =====  ==========================================================================
``op``         2      :class:`MulOp`: ``DOT`` (acc + sum of lane products), ``MULLO`` (low 32 bits
                      of the 32x32 product), ``MULHI`` (high 32 bits of the 32x32 product)
``a_width``    2      :class:`ElemWidth` of the lanes of operand ``a`` (ignored by MULLO/MULHI)
``b_width``    2      :class:`ElemWidth` of the lanes of operand ``b`` (ignored by MULLO/MULHI)
``a_signed``   1      lanes of ``a`` (or the whole of ``a`` for MULHI) are two's complement
``b_signed``   1      lanes of ``b`` (or the whole of ``b`` for MULHI) are two's complement
=============  =====  ==========================================================================

The two width fields are separate so that mixed operand widths (e.g. 4-bit weights x 8-bit
activations) can be added without changing the encoding; today ``a_width`` must equal
``b_width`` (:func:`check_mode` enforces it for Python callers, and the decoder never emits
anything else).

RV32M mapping: MUL = MULLO (signedness irrelevant), MULH = MULHI s x s, MULHSU = MULHI s x u,
MULHU = MULHI u x u.
"""

from __future__ import annotations

from amaranth.lib import data, enum

__all__ = ["ElemWidth", "MulOp", "MulMode", "WIDTHS", "width_code", "check_mode", "mode_const"]

#: Supported SIMD element widths in bits.
WIDTHS = (2, 4, 8, 16)


class ElemWidth(enum.Enum, shape=2):
    """SIMD element width: a 32-bit word holds ``32 // bits`` lanes."""

    W2 = 0
    W4 = 1
    W8 = 2
    W16 = 3

    @property
    def bits(self) -> int:
        """Element width in bits."""
        return 2 << self.value

    @property
    def lanes(self) -> int:
        """Lanes per 32-bit word."""
        return 32 // self.bits


class MulOp(enum.Enum, shape=2):
    """What the array computes."""

    DOT = 0    #: acc + sum_i lane_i(a) * lane_i(b), wrapped to 32 bits
    MULLO = 1  #: low 32 bits of a * b
    MULHI = 2  #: high 32 bits of a * b (signedness from a_signed / b_signed)


#: The mode of one operation.
MulMode = data.StructLayout({
    "op": MulOp,
    "a_width": ElemWidth,
    "b_width": ElemWidth,
    "a_signed": 1,
    "b_signed": 1,
})


def width_code(bits: int) -> ElemWidth:
    """The :class:`ElemWidth` for an element width in bits; raises ``ValueError`` otherwise."""
    for w in ElemWidth:
        if w.bits == bits:
            return w
    raise ValueError(f"element width {bits!r} is not supported; choose one of {WIDTHS}")


def check_mode(op: MulOp | str, a_width: int = 8, b_width: int | None = None,
               a_signed: bool = True, b_signed: bool = True) -> dict:
    """Validate a mode given in plain Python values and return it as a dict of field values.

    Raises ``ValueError`` naming the allowed values when the mode is not supported.
    """
    if isinstance(op, str):
        try:
            op = MulOp[op.upper()]
        except KeyError:
            raise ValueError(f"operation {op!r} is not supported; choose one of "
                             f"{[o.name for o in MulOp]}") from None
    b_width = a_width if b_width is None else b_width
    aw, bw = width_code(a_width), width_code(b_width)
    if aw != bw:
        raise ValueError(f"mixed operand widths ({a_width} x {b_width}) are reserved in the "
                         "encoding but not implemented yet; use equal widths")
    return {"op": op, "a_width": aw, "b_width": bw,
            "a_signed": int(bool(a_signed)), "b_signed": int(bool(b_signed))}


def mode_const(op: MulOp | str, a_width: int = 8, b_width: int | None = None,
               a_signed: bool = True, b_signed: bool = True) -> int:
    """The mode as an integer bit pattern (for testbenches driving the Verilog port)."""
    return MulMode.const(check_mode(op, a_width, b_width, a_signed, b_signed)).as_value().value
