"""Checks of the numpy golden model (:mod:`rvmpq.sw.golden`) against brute-force references.

The references here are written differently from the model on purpose: lanes are extracted
bit by bit with Python ints, products use Python's arbitrary precision, rounding uses exact
fractions, and large random checks go through numpy's int8/int16 views of the word bytes
instead of shifts and masks.

Random tests take the ``seed`` fixture (verif/conftest.py): a fixed seed plus one random seed
per run, printed; replay a failure with ``RVMPQ_SEED=<seed> pytest verif/test_golden.py``.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
import math

import numpy as np
import pytest

from rvmpq.sw import golden as g

M32 = (1 << 32) - 1
SIGNS = list(itertools.product([False, True], repeat=2))


# ---- brute-force references (Python ints) ------------------------------------------------

def ref_lane(word: int, i: int, width: int, signed: bool) -> int:
    """Lane ``i``, assembled one bit at a time."""
    v = 0
    for k in range(width):
        if (word >> (i * width + k)) & 1:
            v += 2 ** k
    if signed and v >= 2 ** (width - 1):
        v -= 2 ** width
    return v


def ref_dot(a: int, b: int, width: int, sa: bool, sb: bool, acc: int) -> int:
    total = acc
    for i in range(32 // width):
        total += ref_lane(a, i, width, sa) * ref_lane(b, i, width, sb)
    return total % 2 ** 32


def s32(x: int) -> int:
    return x - 2 ** 32 if x >= 2 ** 31 else x


def ref_mul(a: int, b: int, op: str) -> int:
    if op == "mul":
        return (a * b) % 2 ** 32
    x = s32(a) if op in ("mulh", "mulhsu") else a
    y = s32(b) if op == "mulh" else b
    return math.floor(Fraction(x * y, 2 ** 32)) % 2 ** 32


def ref_requant(acc, mult, shift, zp, bits, out_signed) -> int:
    p = s32(acc % 2 ** 32) * s32(mult % 2 ** 32)
    r = p if shift == 0 else math.floor(Fraction(p, 2 ** shift) + Fraction(1, 2))
    lo, hi = ((-2 ** (bits - 1), 2 ** (bits - 1) - 1) if out_signed else (0, 2 ** bits - 1))
    return min(max(r + zp, lo), hi)


CORNERS = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFF, 0xFFFFFFFE, 0x55555555,
           0xAAAAAAAA, 0x0000FFFF, 0xFFFF0000, 0x7FFF7FFF, 0x80008000, 0x7F7F7F7F, 0x80808080,
           0x77777777, 0x88888888, 0x12345678]


# ---- lanes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("width", g.WIDTHS)
@pytest.mark.parametrize("signed", [False, True])
def test_unpack_pack_roundtrip(width, signed, seed):
    rng = np.random.default_rng(seed)
    words = np.concatenate([np.array(CORNERS, dtype=np.uint32),
                            rng.integers(0, 2 ** 32, 500, dtype=np.uint32)])
    lanes = g.unpack_lanes(words, width, signed)
    assert lanes.shape == (words.size, 32 // width) and lanes.dtype == np.int64
    for w, row in zip(words[:60].tolist(), lanes[:60].tolist()):
        assert row == [ref_lane(w, i, width, signed) for i in range(32 // width)]
    back = g.pack_lanes(lanes, width)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, words)


def test_pack_wraps_and_scalars():
    assert g.pack_lanes([-1, 0, 0, 0], 8) == 0xFF
    assert g.pack_lanes([256 + 5, 0, 0, 0], 8) == 5
    assert g.pack_lanes([1, -1], 16) == 0xFFFF0001
    assert isinstance(g.pack_lanes([1, 2], 16), np.uint32)
    assert g.unpack_lanes(0x8001, 16, True).tolist() == [-32767, 0]
    assert g.unpack_lanes(-1, 2, True).tolist() == [-1] * 16  # negative word = its bit pattern


def test_views_agree_with_unpack(seed):
    """Independent route for 8/16 bits: numpy's little-endian int8/int16 views."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2 ** 32, 10_000, dtype=np.uint32).astype("<u4")
    for width, dt in [(8, np.int8), (16, np.int16)]:
        for signed in (False, True):
            view = words.view(dt if signed else np.dtype(dt).str.replace("i", "u"))
            np.testing.assert_array_equal(g.unpack_lanes(words, width, signed),
                                          view.reshape(words.size, 32 // width))


# ---- dot ------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("sa,sb", SIGNS)
def test_dot_exhaustive_lane_pairs(width, sa, sb):
    """Every pair of lane values, in every lane position (INT2: 16 pairs, INT4: 256 pairs)."""
    n = 32 // width
    vals = range(2 ** width)
    pairs = list(itertools.product(vals, vals))
    a_words, b_words = [], []
    # rotate the pair list through the lanes so each pair visits every lane position
    for start in range(0, len(pairs) * n, n):
        idx = [(start + i) % len(pairs) for i in range(n)]
        for rot in range(n):
            sel = [pairs[idx[(i + rot) % n]] for i in range(n)]
            a_words.append(sum(p[0] << (i * width) for i, p in enumerate(sel)))
            b_words.append(sum(p[1] << (i * width) for i, p in enumerate(sel)))
    # and one lane at a time (other lanes zero): isolates each product
    for lane in range(n):
        for x, y in pairs:
            a_words.append(x << (lane * width))
            b_words.append(y << (lane * width))
    a = np.array(a_words, dtype=np.uint32)
    b = np.array(b_words, dtype=np.uint32)
    acc = np.arange(a.size, dtype=np.uint32) * np.uint32(2654435761)
    got = g.dot(a, b, width, sa, sb, acc=acc)
    want = [ref_dot(x, y, width, sa, sb, c) for x, y, c in
            zip(a_words, b_words, acc.tolist())]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.uint32))


@pytest.mark.parametrize("sa,sb", SIGNS)
def test_dot_int8_all_pairs_one_lane(sa, sb):
    """All 65536 INT8 pairs on lane 0 against Python products of int8/uint8 values."""
    x, y = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    x, y = x.ravel(), y.ravel()
    got = g.dot(x.astype(np.uint32), y.astype(np.uint32), 8, sa, sb)
    xs = x.astype(np.uint8).view(np.int8) if sa else x
    ys = y.astype(np.uint8).view(np.int8) if sb else y
    want = [(int(p) * int(q)) % 2 ** 32 for p, q in zip(xs.tolist(), ys.tolist())]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.uint32))


@pytest.mark.parametrize("width", g.WIDTHS)
@pytest.mark.parametrize("sa,sb", SIGNS)
def test_dot_random_and_corners(width, sa, sb, seed):
    rng = np.random.default_rng(seed)
    a = [int(v) for v in rng.integers(0, 2 ** 32, 300)] + CORNERS * len(CORNERS)
    b = [int(v) for v in rng.integers(0, 2 ** 32, 300)] + [c for c in CORNERS
                                                             for _ in CORNERS]
    acc = [int(v) for v in rng.integers(0, 2 ** 32, len(a))]
    got = g.dot(np.array(a, np.uint32), np.array(b, np.uint32), width, sa, sb,
                acc=np.array(acc, np.uint32))
    want = [ref_dot(x, y, width, sa, sb, c) for x, y, c in zip(a, b, acc)]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.uint32))


def test_dot_wraps_and_broadcasts():
    # 16 lanes of (-2)*(-2) = 64 added to 0xFFFFFFF0 wraps to 48
    assert g.dot(0xAAAAAAAA, 0xAAAAAAAA, 2, True, True, acc=0xFFFFFFF0) == 48
    # a signed accumulator given as a negative int is its bit pattern
    assert g.dot(0, 0, 8, True, True, acc=-1) == M32
    out = g.dot(np.uint32(0x01010101), np.arange(4, dtype=np.uint32), 8, False, False)
    assert out.tolist() == [0, 1, 2, 3]
    assert isinstance(g.dot(1, 1, 16, True, True), np.uint32)


# ---- mul ------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", g.MUL_OPS)
def test_mul_random_and_corners(op, seed):
    rng = np.random.default_rng(seed)
    a = [int(v) for v in rng.integers(0, 2 ** 32, 2000)] + [c for c in CORNERS for _ in CORNERS]
    b = [int(v) for v in rng.integers(0, 2 ** 32, 2000)] + CORNERS * len(CORNERS)
    got = g.mul(np.array(a, np.uint32), np.array(b, np.uint32), op)
    want = [ref_mul(x, y, op) for x, y in zip(a, b)]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.uint32))


def test_mul_known_values():
    # RISC-V spec style examples
    assert g.mul(0x80000000, 0x80000000, "mulh") == 0x40000000
    assert g.mul(0x80000000, 0xFFFFFFFF, "mulhsu") == 0x80000000
    assert g.mul(0xFFFFFFFF, 0xFFFFFFFF, "mulhu") == 0xFFFFFFFE
    assert g.mul(0xFFFFFFFF, 0xFFFFFFFF, "mulh") == 0
    assert g.mul(0xFFFFFFFF, 0xFFFFFFFF, "mulhsu") == 0xFFFFFFFF
    assert g.mul(0x0000FFFF, 0x00010001, "mul") == 0xFFFFFFFF


# ---- requant --------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", g.WIDTHS)
@pytest.mark.parametrize("out_signed", [False, True])
def test_requant_random(bits, out_signed, seed):
    rng = np.random.default_rng(seed)
    n = 400
    # mix of scales so that a useful share of results lands inside the clamp range
    acc = rng.integers(-2 ** 31, 2 ** 31, n) >> rng.integers(0, 31, n)
    mult = rng.integers(-2 ** 31, 2 ** 31, n) >> rng.integers(0, 31, n)
    shift = rng.integers(0, 64, n)
    zp = rng.integers(-2 ** 15, 2 ** 15, n)
    got = g.requant(acc, mult, shift, zp, bits, out_signed)
    want = [ref_requant(int(a), int(m), int(s), int(z), bits, out_signed)
            for a, m, s, z in zip(acc, mult, shift, zp)]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.int64))
    assert got.dtype == np.int64


CORNER_ACC = [0, 1, -1, 2, -2, 3, -3, 2 ** 31 - 1, -2 ** 31, 0x80000000, 0xFFFFFFFF, 12345]
CORNER_MULT = [0, 1, -1, 2 ** 31 - 1, -2 ** 31, 3, -3]


@pytest.mark.parametrize("shift", [0, 1, 2, 31, 32, 62, 63])
def test_requant_corners(shift):
    for bits, out_signed in itertools.product(g.WIDTHS, [False, True]):
        for zp in (0, 1, -1, 2 ** 15 - 1, -2 ** 15):
            acc, mult = np.meshgrid(np.array(CORNER_ACC, np.int64), np.array(CORNER_MULT))
            got = g.requant(acc.ravel(), mult.ravel(), shift, zp, bits, out_signed)
            want = [ref_requant(int(a), int(m), shift, zp, bits, out_signed)
                    for a, m in zip(acc.ravel(), mult.ravel())]
            assert got.tolist() == want, (bits, out_signed, zp)


def test_requant_rounding_and_saturation():
    # round half up (towards +inf) on both signs
    assert g.requant(3, 1, 1, 0, 8, True) == 2      # 1.5 -> 2
    assert g.requant(-3, 1, 1, 0, 8, True) == -1    # -1.5 -> -1
    assert g.requant(-5, 1, 2, 0, 8, True) == -1    # -1.25 -> -1
    assert g.requant(-6, 1, 2, 0, 8, True) == -1    # -1.5 -> -1
    assert g.requant(-7, 1, 2, 0, 8, True) == -2    # -1.75 -> -2
    # saturation at both ends, signed and unsigned
    assert g.requant(2 ** 31 - 1, 2 ** 31 - 1, 0, 0, 16, True) == 2 ** 15 - 1
    assert g.requant(-2 ** 31, 2 ** 31 - 1, 0, 0, 16, True) == -2 ** 15
    assert g.requant(-2 ** 31, -2 ** 31, 0, 0, 2, False) == 3
    assert g.requant(-5, 1, 0, 0, 4, False) == 0     # ReLU
    assert g.requant(0, 0, 0, -2 ** 15, 8, True) == -128
    # mult = -2**31, acc = -2**31: p = 2**62, shift 63 -> 0.5 rounds up to 1
    assert g.requant(-2 ** 31, -2 ** 31, 63, 0, 8, True) == 1
    assert g.requant(-2 ** 31, 2 ** 31 - 1, 63, 0, 8, True) == 0   # p ~ -2**62 -> -0.5 -> 0
    # per-channel mult broadcast against acc
    out = g.requant(np.array([[10, 20]]), np.array([1, 2]), 0, 0, 8, True)
    assert out.tolist() == [[10, 40]]


def test_rqpack():
    # four pushes of 8-bit values: lane 0 holds the first value pushed
    rd = 0
    for v in (1, -2, 3, -4):
        rd = g.rqpack(rd, v, 1, 0, 0, 8, True)
    assert int(rd) == 0xFC03FE01
    assert g.unpack_lanes(rd, 8, True).tolist() == [1, -2, 3, -4]
    rd = np.uint32(0xFFFFFFFF)
    assert g.rqpack(rd, 1, 1, 0, 0, 2, False) == 0x7FFFFFFF   # logical shift
    assert g.rqpack(rd, 0, 1, 0, 0, 16, False) == 0x0000FFFF
    accs = np.arange(16)
    rd = 0
    for v in accs:
        rd = g.rqpack(rd, int(v), 1, 0, 0, 2, True)   # 0,1 then saturates at 1
    assert g.unpack_lanes(rd, 2, True).tolist() == [0] + [1] * 15


# ---- errors and speed -----------------------------------------------------------------------

def test_errors_name_allowed_values():
    with pytest.raises(ValueError, match=r"\(2, 4, 8, 16\)"):
        g.dot(1, 1, 3, True, True)
    with pytest.raises(ValueError, match=r"\(2, 4, 8, 16\)"):
        g.unpack_lanes(1, 32, True)
    with pytest.raises(ValueError, match="mulhsu"):
        g.mul(1, 1, "mulsu")
    with pytest.raises(ValueError, match=r"\(2, 4, 8, 16\)"):
        g.requant(1, 1, 0, 0, 3, True)
    with pytest.raises(ValueError, match="0..63"):
        g.requant(1, 1, 64, 0, 8, True)
    with pytest.raises(ValueError, match="zp"):
        g.requant(1, 1, 0, 2 ** 15, 8, True)
    with pytest.raises(ValueError, match="32-bit word"):
        g.dot(2 ** 32, 0, 8, True, True)
    with pytest.raises(ValueError, match="lanes"):
        g.pack_lanes([1, 2, 3], 8)
    with pytest.raises(TypeError, match="integers"):
        g.dot(1.5, 0, 8, True, True)


def test_vectorised_million_words():
    """A million-word dot in every width runs vectorised (no time asserted: shared machines)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2 ** 32, 1_000_000, dtype=np.uint32)
    b = rng.integers(0, 2 ** 32, 1_000_000, dtype=np.uint32)
    for width in g.WIDTHS:
        out = g.dot(a, b, width, True, False, acc=a)
        assert out.shape == a.shape and out.dtype == np.uint32
        k = 12345
        assert int(out[k]) == ref_dot(int(a[k]), int(b[k]), width, True, False, int(a[k]))
    assert g.mul(a, b, "mulhsu").shape == a.shape
