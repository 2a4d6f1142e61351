"""Hierarchical ("brick", after BitFusion) 32x32 multiplier array for INT2/4/8/16 dot products.

The array is built recursively from 2-bit x 2-bit leaf products. A node of size ``n`` multiplies
an ``n``-bit slice of ``a`` by an ``n``-bit slice of ``b``; it splits both slices in halves of
``h = n // 2`` bits and has four children::

                 a[off+h : off+n]     a[off : off+h]
                +------------------+------------------+
    b[off+h:+n] |  HH  (diagonal)  |  LH  (off-diag)  |     HH, LL: same lanes of a and b
                +------------------+------------------+     HL, LH: a and b from different
    b[off:+h]   |  HL  (off-diag)  |  LL  (diagonal)  |             halves of the node
                +------------------+------------------+

    full product   (w >= n):  (HH << n) + ((HL + LH) << h) + LL
    dot product    (w <  n):   HH + LL              (HL, LH belong to no lane: gated off)

    32 ─┬─ 16 ─┬─ 8 ─┬─ 4 ─┬─ 2 (leaf: 2-bit digit x 2-bit digit = 4 partial-product bits)
        │      │     │     └─ 2
        ...    ...   ...

``w`` is the lane width of the operation (2/4/8/16 for DOT, 32 for MULLO/MULHI). Only diagonal
nodes (``HH``/``LL`` chains, the same bit offset in ``a`` and ``b``) ever need the dot-product
form; off-diagonal blocks are always plain products (a block that lies inside a lane) or zero (a
block that straddles lanes), so they are built as pure multipliers fed by an ``a`` slice that is
AND-gated once per block.

Signedness: digit ``i`` of an operand is signed (its top bit has weight ``-2**(2i+1)``) iff the
operand is signed and the digit is the top digit of its lane. Instead of sign-extending, every
partial-product bit ``a_p & b_q`` of negative weight is stored inverted, ``(a_p & b_q) ^ 1``, and
the constant that this adds (:func:`correction`) is subtracted once at the very end. Every
intermediate value is therefore a non-negative number that fits in ``2n`` bits at a node of size
``n``: no sign extension anywhere, so Yosys sees only unsigned multi-operand sums.

Adders: the builder does not add node by node. Each node yields a *bit heap* (partial-product bits
by weight); a heap is only turned into a binary number (:meth:`BrickArray.materialize`, one
multi-operand ``+`` that Yosys ``alumacc``/``maccmap`` turns into a single compressor tree and one
carry-propagate adder) where the dot/full choice needs a mode-dependent shift (the ``HH`` child of
a diagonal node that may run in dot mode) or where the caller places a pipeline register.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from amaranth.hdl import Cat, Const, Module, Signal, Value

from .modes import WIDTHS

__all__ = ["LOG_WIDTHS", "ModeSignals", "BrickArray", "correction"]

#: log2 of the lane widths the array knows: 1..4 are the SIMD widths 2/4/8/16, 5 is the full
#: 32x32 (33x33 with signedness) product used by MULLO/MULHI.
LOG_WIDTHS = (1, 2, 3, 4, 5)


def _log2(x: int) -> int:
    return x.bit_length() - 1


def _trailing_ones(p: int) -> int:
    t = 0
    while p & 1:
        p >>= 1
        t += 1
    return t


def correction(width: int, a_signed: bool, b_signed: bool) -> int:
    """Sum of the weights of the inverted (negative) partial-product bits of one operation.

    The array's raw sum ``U`` equals ``sum_lanes a_i * b_i + correction(...)``, so the result is
    ``U - correction(...)`` (modulo the word size).

    Parameters
    ----------
    width : int
        Lane width in bits: 2, 4, 8, 16, or 32 for the full product (MULLO/MULHI).
    a_signed, b_signed : bool
        Whether the lanes of ``a`` / ``b`` are two's complement.

    Returns
    -------
    int
        The correction, ``0 <= C < 2**64``.
    """
    if width not in WIDTHS + (32,):
        raise ValueError(f"lane width {width!r} is not supported; choose one of {WIDTHS + (32,)}")
    lanes = 32 // width
    top = width - 1
    lane = 0
    for p in range(width):
        for q in range(width):
            sp = a_signed and p == top
            sq = b_signed and q == top
            if sp != sq:
                lane += 1 << (p + q)
    return lanes * lane


@dataclasses.dataclass
class ModeSignals:
    """Decoded mode, shared by the whole array.

    Attributes
    ----------
    ge : dict[int, Value]
        ``ge[j]`` is 1 when the operation's lane width is at least ``2**j`` (``j`` in 1..5).
    le : dict[int, Value]
        ``le[j]`` is 1 when the lane width is at most ``2**j`` (``j`` in 0..5).
    a_signed, b_signed : Value
        Operand signedness.
    supported : frozenset[int]
        The log2 lane widths this array is built for (a subset of :data:`LOG_WIDTHS`); the
        builder constant-folds every choice that no supported mode can make.
    """

    ge: dict
    le: dict
    a_signed: Value
    b_signed: Value
    supported: frozenset


class BrickArray:
    """Builder of the recursive brick multiplier inside an Amaranth :class:`Module`.

    Parameters
    ----------
    m : Module
        The module the logic is added to.
    a, b : Value
        32-bit operands.
    ms : ModeSignals
        The decoded mode.
    name : str
        Prefix of the signals it creates.
    """

    def __init__(self, m: Module, a: Value, b: Value, ms: ModeSignals, name: str = "brick"):
        self.m, self.a, self.b, self.ms, self.name = m, a, b, ms, name
        self._cache: dict = {}
        self._gated: dict = {}
        self.carry_save = False

    # -- mode helpers -------------------------------------------------------------------------

    def full(self, j: int) -> Value:
        """1 when a node of size ``2**j`` computes a full product (lane width >= ``2**j``).

        Constant when every supported mode agrees.
        """
        if all(k >= j for k in self.ms.supported):
            return Const(1, 1)
        if all(k < j for k in self.ms.supported):
            return Const(0, 1)
        return self.ms.ge[j]

    def _neg(self, p: int, q: int) -> Value:
        """1 when partial-product bit ``a_p & b_q`` has negative weight in the current mode."""
        tp, tq = min(_trailing_ones(p), 5), min(_trailing_ones(q), 5)
        j = _log2(p ^ q) + 1 if p != q else 0          # smallest node holding both bits
        key = (tp, tq, j)
        if key not in self._cache:
            # the bit only exists in modes with lane width >= 2**j (else its block is gated
            # off and en = 0): decide "p is a lane top" among those modes only, so that bits
            # that are never negative get no XOR at all
            active = [k for k in self.ms.supported if k >= j]
            sp = self.ms.a_signed & self._le(tp, active)
            sq = self.ms.b_signed & self._le(tq, active)
            en = self.full(j) if j >= 2 else Const(1, 1)
            s = Signal(name=f"{self.name}_neg_{tp}{tq}{j}")
            self.m.d.comb += s.eq((sp ^ sq) & en)
            self._cache[key] = s
        return self._cache[key]

    def _le(self, t: int, modes=None) -> Value:
        # bit p is the top of its lane iff lane width <= 2**trailing_ones(p); constant when all
        # of ``modes`` (log2 widths, default: the supported ones) agree
        modes = self.ms.supported if modes is None else modes
        if all(k <= t for k in modes):
            return Const(1, 1)
        if all(k > t for k in modes):
            return Const(0, 1)
        return self.ms.le[t]

    # -- heaps --------------------------------------------------------------------------------

    @staticmethod
    def shift(heap: dict, s: int) -> dict:
        """The bit heap ``heap`` with every weight raised by ``s``."""
        return {w + s: bits for w, bits in heap.items()}

    @staticmethod
    def merge(*heaps: dict) -> dict:
        """The union of bit heaps (their sum)."""
        out: dict = defaultdict(list)
        for h in heaps:
            for w, bits in h.items():
                out[w].extend(bits)
        return out

    @staticmethod
    def heap_of(value: Value, shift: int = 0) -> dict:
        """The bit heap of a binary number ``value << shift``."""
        return {shift + i: [value[i]] for i in range(len(value))}

    def materialize(self, heap: dict, width: int, name: str) -> Signal:
        """Sum a bit heap into a ``width``-bit signal with one multi-operand addition.

        The heap's bits are packed into as few rows as the tallest column needs, so Yosys
        sees one ``$add`` chain (one ``$macc``, one compressor tree, one final adder).
        """
        cols = {w: list(bits) for w, bits in heap.items() if w < width and bits}
        rows = []
        while cols:
            lo, hi = min(cols), max(cols)
            row = []
            for w in range(lo, hi + 1):
                bits = cols.get(w)
                if bits:
                    row.append(bits.pop())
                    if not bits:
                        del cols[w]
                else:
                    row.append(Const(0, 1))
            rows.append(Cat(*row) << lo if lo else Cat(*row))
        s = Signal(width, name=name)
        if rows:
            total = rows[0]
            for r in rows[1:]:
                total = (total + r)[:width]
            self.m.d.comb += s.eq(total)
        return s

    # -- recursion ----------------------------------------------------------------------------

    def _a_bits(self, lo: int, n: int, gate: Value | None):
        """Bits ``a[lo:lo+n]``, AND-gated by ``gate`` (one gate per bit, shared per block)."""
        if gate is None or (isinstance(gate, Const) and gate.value == 1):
            return [self.a[lo + i] for i in range(n)]
        if isinstance(gate, Const) and gate.value == 0:
            return None
        key = (lo, n)
        if key not in self._gated:
            s = Signal(n, name=f"{self.name}_ag_{lo}_{lo + n}")
            self.m.d.comb += s.eq(self.a[lo:lo + n] & gate.replicate(n))
            self._gated[key] = s
        g = self._gated[key]
        return [g[i] for i in range(n)]

    def block(self, n: int, ao: int, bo: int, a_bits: list) -> dict:
        """Bit heap of the full product of an ``n x n`` block (always in full mode).

        ``a_bits`` are the (possibly gated) bits ``a[ao:ao+n]``; weights are relative to
        ``a[ao] * b[bo]``.
        """
        if n == 2:  # leaf: 2-bit digit x 2-bit digit
            heap: dict = defaultdict(list)
            for i in range(2):
                for j in range(2):
                    pp = a_bits[i] & self.b[bo + j]
                    heap[i + j].append(pp ^ self._neg(ao + i, bo + j))
            return heap
        h = n // 2
        return self.merge(
            self.block(h, ao, bo, a_bits[:h]),
            self.shift(self.block(h, ao + h, bo, a_bits[h:]), h),
            self.shift(self.block(h, ao, bo + h, a_bits[:h]), h),
            self.shift(self.block(h, ao + h, bo + h, a_bits[h:]), n),
        )

    def off_diagonal(self, n: int, off: int) -> dict:
        """Heap of ``HL + LH`` of the diagonal node ``(n, off)`` (unshifted), gated off in dot mode."""
        h = n // 2
        gate = self.full(_log2(n))
        a_hi = self._a_bits(off + h, h, gate)
        a_lo = self._a_bits(off, h, gate)
        if a_hi is None:
            return {}
        return self.merge(self.block(h, off + h, off, a_hi),
                           self.block(h, off, off + h, a_lo))

    def diagonal(self, n: int, off: int, force: bool = False):
        """The diagonal node of size ``n`` at bit ``off``: a heap, or a materialized signal.

        Returns ``(heap, signal)``: ``signal`` is the node's value as a ``2n``-bit number when the
        node had to be summed (it may run in dot mode, or ``force`` is set), else ``None``.
        """
        j = _log2(n)
        dot_capable = any(k < j for k in self.ms.supported)
        if n == 2:
            heap = self.block(2, off, off, [self.a[off], self.a[off + 1]])
            return heap, None
        if not dot_capable and not force:
            return self.block(n, off, off, [self.a[off + i] for i in range(n)]), None
        h = n // 2
        ll, _ = self.diagonal(h, off)
        hh, _ = self.diagonal(h, off + h)
        full = self.full(j)
        hh_heap = self.place_hh(hh, n, full)
        heap = self.merge(ll, hh_heap, self.shift(self.off_diagonal(n, off), h))
        sig = self.materialize(heap, 2 * n, f"{self.name}_d{n}_{off}")
        return self.heap_of(sig), sig

    def place_hh(self, hh: dict, n: int, full: Value) -> dict:
        """``HH << n`` in full mode, ``HH`` in dot mode (bits AND-gated into both places)."""
        if isinstance(full, Const):
            return self.shift(hh, n) if full.value else hh
        out: dict = defaultdict(list)
        for w, bits in hh.items():
            for bit in bits:
                out[w + n].append(bit & full)
                out[w].append(bit & ~full)
        return out

    # -- heap-form recursion (only mode-shifted children are summed) --------------------------

    def dot_capable(self, n: int) -> bool:
        """Whether a diagonal node of size ``n`` may run in dot mode in some supported mode."""
        return any(k < _log2(n) for k in self.ms.supported)

    def diag_heap(self, n: int, off: int) -> dict:
        """Bit heap of the diagonal node ``(n, off)`` with dot/full semantics.

        Unlike :meth:`diagonal`, the node itself is never summed: its ``LL`` child stays a heap
        (it sits at weight 0 in both modes) and only its ``HH`` child, which the mode shifts, is
        summed first (:meth:`diag_value`). This halves the number of carry-propagate adders.
        """
        if n == 2 or not self.dot_capable(n):
            return self.block(n, off, off, [self.a[off + i] for i in range(n)])
        h = n // 2
        ll = self.diag_heap(h, off)
        hh = self.diag_value(h, off + h)
        return self.merge(ll, self.place_hh(hh, n, self.full(_log2(n))),
                          self.shift(self.off_diagonal(n, off), h))

    def diag_value(self, n: int, off: int, force: bool = False) -> dict:
        """Heap of the diagonal node ``(n, off)``, summed into one ``2n``-bit row when the node
        may run in dot mode (or ``force``), so that a mode-dependent shift moves one row only."""
        heap = self.diag_heap(n, off)
        if (n == 2 or not self.dot_capable(n)) and not force:
            return heap
        if self.carry_save:
            # the node's value is below 2**(2n) in every mode, so the two rows are exact
            s, c = self.compress(heap, 2 * n, f"{self.name}_v{n}_{off}")
            return self.merge(self.heap_of(s), self.heap_of(c))
        return self.heap_of(self.materialize(heap, 2 * n, f"{self.name}_v{n}_{off}"))

    def compress(self, heap: dict, width: int, name: str) -> tuple:
        """Reduce a bit heap to two rows (carry-save form) with a Dadda tree of full/half adders.

        Bits of weight ``>= width`` are dropped, so the rows' sum equals the heap's sum modulo
        ``2**width`` (exactly, where the heap's sum is known to be below ``2**width``). No
        carry-propagate adder is built: the caller adds the two rows later, typically inside a
        bigger sum.

        Returns
        -------
        (Signal, Signal)
            Two ``width``-bit rows whose sum is the heap's sum modulo ``2**width``.
        """
        cols = [list(heap.get(w, [])) for w in range(width)]
        maxh = max((len(c) for c in cols), default=0)
        targets = [2]
        while targets[-1] < maxh:
            targets.append(targets[-1] * 3 // 2)
        for target in reversed(targets[:-1]):
            out = [[] for _ in range(width)]
            for w in range(width):
                avail = cols[w]
                h = len(avail) + len(out[w])
                while h > target and len(avail) >= 2:
                    if h - target >= 2 and len(avail) >= 3:
                        x, y, z = avail.pop(), avail.pop(), avail.pop()
                        t = x ^ y
                        out[w].append(t ^ z)
                        if w + 1 < width:
                            out[w + 1].append((x & y) | (t & z))
                        h -= 2
                    else:
                        x, y = avail.pop(), avail.pop()
                        out[w].append(x ^ y)
                        if w + 1 < width:
                            out[w + 1].append(x & y)
                        h -= 1
                out[w].extend(avail)
            # one signal per stage keeps the expressions flat (the simulator and the
            # Verilog stay linear in the tree size)
            flat = [b for c in out for b in c]
            st = Signal(len(flat), name=f"{name}_t{target}")
            self.m.d.comb += st.eq(Cat(*flat))
            it = iter(range(len(flat)))
            cols = [[st[next(it)] for _ in c] for c in out]
        rows = []
        for r in range(2):
            s = Signal(width, name=f"{name}_{'sc'[r]}")
            self.m.d.comb += s.eq(Cat(*[c[r] if len(c) > r else Const(0, 1) for c in cols]))
            rows.append(s)
        return tuple(rows)
