"""Numpy golden model of the MPQ arithmetic (docs/contracts.md sections 2 and 3).

This module is the one executable definition of what the SIMD unit, the ISS, the kernels and
the integer network model compute. It is written from the contract alone, independently of the
RTL in :mod:`rvmpq.hw`, imports nothing but numpy, and is vectorised: every function takes
scalars or arrays (broadcast against each other) and handles millions of words per second.

Conventions
-----------
* A *word* is a 32-bit register value. Inputs may be any integer dtype (or Python ints) holding
  values in ``[-2**31, 2**32)``; negative values are taken as their two's-complement bit
  pattern. Word results are ``np.uint32``.
* Signed lane / requantization results are ``np.int64``.
* Scalar inputs give numpy scalars, array inputs give arrays.
* Lane ``i`` of a word in ``width``-bit mode is bits ``[i*width, (i+1)*width)``; there are
  ``32 // width`` lanes.

Functions
---------
unpack_lanes, pack_lanes
    Words <-> lane values.
dot
    ``acc + sum_i lane_i(a) * lane_i(b)`` wrapped to 32 bits (the DOT mode of the unit).
mul
    RV32M ``mul`` / ``mulh`` / ``mulhsu`` / ``mulhu`` (the MULLO / MULHI modes).
requant, rqpack
    Requantization of a 32-bit accumulator to ``bits`` bits and the packing variant that pushes
    the result into the top lane of a word.
"""

from __future__ import annotations

import numpy as np

__all__ = ["WIDTHS", "MUL_OPS", "unpack_lanes", "pack_lanes", "dot", "mul", "requant",
           "rqpack", "to_signed32"]

#: Supported SIMD element widths in bits.
WIDTHS = (2, 4, 8, 16)
#: Supported RV32M multiply operations of :func:`mul`.
MUL_OPS = ("mul", "mulh", "mulhsu", "mulhu")

_MASK32 = 0xFFFFFFFF


# ---- input checking ---------------------------------------------------------------------

def _check_width(width) -> int:
    try:
        w = int(width)
    except (TypeError, ValueError):
        w = None
    if w not in WIDTHS or w != width:
        raise ValueError(f"element width {width!r} is not supported; choose one of {WIDTHS}")
    return w


def _as_int64(x, name: str) -> np.ndarray:
    """``x`` as an int64 array; rejects non-integer data and uint64 values that do not fit."""
    arr = np.asarray(x)
    if arr.dtype == object:  # Python ints beyond int64
        try:
            arr = arr.astype(np.int64)
        except OverflowError:
            raise ValueError(f"{name}: value out of range of a 32-bit word") from None
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64:
        if arr.size and arr.max() > _MASK32:
            raise ValueError(f"{name}: values must lie in [-2**31, 2**32), got {int(arr.max())}")
    return arr.astype(np.int64, copy=False)


def _word_bits(x, name: str) -> np.ndarray:
    """The 32-bit pattern of ``x`` as int64 in ``[0, 2**32)``; range-checked."""
    arr = np.asarray(x)
    if arr.dtype == np.uint32:
        return arr.astype(np.int64)
    arr = _as_int64(x, name)
    if arr.size and (arr.min() < -(1 << 31) or arr.max() > _MASK32):
        bad = arr.min() if arr.min() < -(1 << 31) else arr.max()
        raise ValueError(f"{name}: values must lie in [-2**31, 2**32) (a 32-bit word), "
                         f"got {int(bad)}")
    return arr & _MASK32


def _ret(arr: np.ndarray, dtype):
    """Cast and turn 0-d arrays into numpy scalars."""
    arr = np.asarray(arr).astype(dtype, copy=False)
    return arr[()] if arr.ndim == 0 else arr


def to_signed32(words):
    """Two's-complement value of 32-bit words.

    Parameters
    ----------
    words : int or array_like of int
        Words in ``[-2**31, 2**32)``.

    Returns
    -------
    numpy.int64 or ndarray of int64
        Values in ``[-2**31, 2**31)``.
    """
    w = _word_bits(words, "words")
    return _ret(w - ((w & (1 << 31)) << 1), np.int64)


# ---- lanes ------------------------------------------------------------------------------

def unpack_lanes(words, width: int, signed: bool):
    """Split 32-bit words into their ``32 // width`` lanes.

    Parameters
    ----------
    words : int or array_like of int
        Words (any shape), values in ``[-2**31, 2**32)``.
    width : {2, 4, 8, 16}
        Lane width in bits.
    signed : bool
        Lanes are two's complement (``True``) or unsigned (``False``).

    Returns
    -------
    ndarray of int64, shape ``words.shape + (32 // width,)``
        Lane ``i`` (last axis) is bits ``[i*width, (i+1)*width)`` of the word.

    Raises
    ------
    ValueError
        ``width`` is not one of :data:`WIDTHS`, or a word is out of range.
    """
    w = _check_width(width)
    words = _word_bits(words, "words")
    shifts = np.arange(0, 32, w, dtype=np.int64)
    lanes = (words[..., None] >> shifts) & ((1 << w) - 1)
    if signed:
        sign = 1 << (w - 1)
        lanes = (lanes ^ sign) - sign
    return lanes


def pack_lanes(values, width: int):
    """Pack lane values into 32-bit words (inverse of :func:`unpack_lanes`).

    Parameters
    ----------
    values : array_like of int, shape ``(..., 32 // width)``
        Lane values; each wraps to ``width`` bits (so signed and unsigned both work).
    width : {2, 4, 8, 16}
        Lane width in bits.

    Returns
    -------
    numpy.uint32 or ndarray of uint32, shape ``values.shape[:-1]``

    Raises
    ------
    ValueError
        Unsupported ``width`` or a last axis of the wrong length.
    """
    w = _check_width(width)
    v = _as_int64(values, "values")
    n = 32 // w
    if v.ndim == 0 or v.shape[-1] != n:
        raise ValueError(f"pack_lanes: the last axis must hold {n} lanes for width {w}, "
                         f"got shape {v.shape}")
    shifts = np.arange(0, 32, w, dtype=np.int64)
    # disjoint bit fields: the sum is the bitwise OR
    return _ret(((v & ((1 << w) - 1)) << shifts).sum(axis=-1), np.uint32)


# ---- arithmetic -------------------------------------------------------------------------

def dot(a, b, width: int, a_signed: bool, b_signed: bool, acc=0):
    """SIMD dot product with accumulate: ``acc + sum_i lane_i(a) * lane_i(b)`` mod ``2**32``.

    Parameters
    ----------
    a, b : int or array_like of int
        Operand words (broadcast against each other and ``acc``).
    width : {2, 4, 8, 16}
        Lane width; 16, 8, 4 or 2 lanes per word.
    a_signed, b_signed : bool
        Whether the lanes of ``a`` / ``b`` are two's complement.
    acc : int or array_like of int, optional
        Accumulator word (default 0).

    Returns
    -------
    numpy.uint32 or ndarray of uint32
        The wrapped 32-bit result.

    Notes
    -----
    Each lane product is at most ``(2**16 - 1)**2 < 2**32`` in magnitude and there are at most
    16 lanes, so the int64 sum is exact before the final wrap.
    """
    la = unpack_lanes(a, width, a_signed)
    lb = unpack_lanes(b, width, b_signed)
    s = (la * lb).sum(axis=-1)
    return _ret((s + _word_bits(acc, "acc")) & _MASK32, np.uint32)


def mul(a, b, op: str):
    """RV32M multiply: ``mul``, ``mulh``, ``mulhsu`` or ``mulhu``.

    Parameters
    ----------
    a, b : int or array_like of int
        Operand words (``rs1``, ``rs2``), broadcast against each other.
    op : {"mul", "mulh", "mulhsu", "mulhu"}
        ``mul``: low 32 bits of the product; ``mulh``: high 32 bits of signed x signed;
        ``mulhsu``: signed ``a`` x unsigned ``b``; ``mulhu``: unsigned x unsigned.

    Returns
    -------
    numpy.uint32 or ndarray of uint32

    Raises
    ------
    ValueError
        ``op`` is not one of :data:`MUL_OPS`.

    Notes
    -----
    The full products are exact without splitting: unsigned x unsigned is below ``2**64`` and
    computed in uint64; signed x signed lies in ``(-2**62, 2**62]`` and signed x unsigned in
    ``(-2**63, 2**63)``, both representable in int64.
    """
    if op not in MUL_OPS:
        raise ValueError(f"multiply op {op!r} is not supported; choose one of {MUL_OPS}")
    ua = _word_bits(a, "a")
    ub = _word_bits(b, "b")
    if op in ("mul", "mulhu"):
        p = ua.astype(np.uint64) * ub.astype(np.uint64)
        r = p & np.uint64(_MASK32) if op == "mul" else p >> np.uint64(32)
        return _ret(r, np.uint32)
    sa = ua - ((ua & (1 << 31)) << 1)
    sb = ub - ((ub & (1 << 31)) << 1) if op == "mulh" else ub
    return _ret(((sa * sb) >> 32) & _MASK32, np.uint32)


def _check_bits(bits) -> int:
    try:
        b = int(bits)
    except (TypeError, ValueError):
        b = None
    if b not in WIDTHS or b != bits:
        raise ValueError(f"requant: bits {bits!r} is not supported; choose one of {WIDTHS}")
    return b


def requant(acc, mult, shift, zp, bits: int, out_signed: bool):
    """Requantize a 32-bit accumulator (contract section 3).

    ``y = clamp(round_half_up(acc * mult / 2**shift) + zp, lo, hi)`` with the rounding done as
    ``(p >> shift) + ((p >> (shift - 1)) & 1)`` (``p`` itself when ``shift == 0``).

    Parameters
    ----------
    acc : int or array_like of int
        Accumulator, a signed 32-bit value (words in ``[2**31, 2**32)`` are read as negative).
    mult : int or array_like of int
        Multiplier, a signed 32-bit value (same convention), e.g. one per output channel.
    shift : int or array_like of int
        Right shift in ``0..63``.
    zp : int or array_like of int
        Output zero point, a signed 16-bit value in ``[-2**15, 2**15)``.
    bits : {2, 4, 8, 16}
        Output width.
    out_signed : bool
        Clamp to ``[-2**(bits-1), 2**(bits-1) - 1]`` if true, else to ``[0, 2**bits - 1]``.

    Returns
    -------
    numpy.int64 or ndarray of int64
        The clamped output value (broadcast shape of the array arguments).

    Raises
    ------
    ValueError
        ``bits``, ``shift`` or ``zp`` out of range, or a 32-bit input out of range.
    """
    b = _check_bits(bits)
    p = to_signed32(acc) * np.asarray(to_signed32(mult))   # |p| <= 2**62: exact in int64
    sh = _as_int64(shift, "shift")
    if sh.size and (sh.min() < 0 or sh.max() > 63):
        bad = int(sh.min() if sh.min() < 0 else sh.max())
        raise ValueError(f"requant: shift must lie in 0..63, got {bad}")
    z = _as_int64(zp, "zp")
    if z.size and (z.min() < -(1 << 15) or z.max() >= (1 << 15)):
        raise ValueError("requant: zp must be a signed 16-bit value in [-32768, 32767], got "
                         f"{int(z.min() if z.min() < -(1 << 15) else z.max())}")
    half = (p >> np.maximum(sh - 1, 0)) & 1
    r = np.where(sh == 0, p, (p >> sh) + half)
    if out_signed:
        lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
    else:
        lo, hi = 0, (1 << b) - 1
    # |r| <= 2**62 and |zp| <= 2**15: r + zp cannot overflow int64
    return _ret(np.clip(r + z, lo, hi), np.int64)


def rqpack(rd, acc, mult, shift, zp, bits: int, out_signed: bool):
    """Requantize and push the result into the top lane of ``rd``.

    ``(rd >> bits) | ((requant(...) & (2**bits - 1)) << (32 - bits))`` with a logical shift, so
    after ``32 // bits`` pushes lane 0 holds the first value pushed.

    Parameters
    ----------
    rd : int or array_like of int
        The destination word before the push.
    acc, mult, shift, zp, bits, out_signed
        As for :func:`requant`.

    Returns
    -------
    numpy.uint32 or ndarray of uint32
    """
    b = _check_bits(bits)
    y = np.asarray(requant(acc, mult, shift, zp, b, out_signed))
    word = _word_bits(rd, "rd")
    return _ret((word >> b) | ((y & ((1 << b) - 1)) << (32 - b)), np.uint32)
