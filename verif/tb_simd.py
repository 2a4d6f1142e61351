"""cocotb testbench of ``SimdMulUnit`` (docs/contracts.md section 1).

Run through ``verif/test_simd.py`` (pytest), which builds one Verilator model per DUT
configuration and passes the configuration as JSON in ``$RVMPQ_SIMD_CONFIG``::

    {"latency": 2, "widths": [2, 4, 8, 16], "mul": true}

Structure (cocotb ``examples/matrix_multiplier`` style):

* :class:`Op` / :class:`Traffic` - a batch of operations (mode fields + a, b, acc) as numpy arrays;
* :class:`SimdModel` - the expected results from :mod:`rvmpq.sw.golden` (vectorised);
* :class:`StreamDriver` - drives ``i`` (valid/payload), optional random idle cycles, holds the
  payload until accepted, drives junk while idle;
* :class:`StreamMonitor` - samples ``o`` transfers, drives random ``o.ready`` backpressure,
  checks the stream rules (``i.ready == ~o.valid | o.ready``, ``o`` held while stalled);
* :class:`Scoreboard` - in-order comparison with the model, readable mismatch reports;
* :class:`SimdTB` - wires them to the DUT; the tests only generate traffic.

Signals are sampled right after the rising edge (they hold the values of the cycle that just
ended) and written for the next cycle; one coroutine per cycle keeps ~60k ops/s.
The random seed comes from ``$RVMPQ_SEED`` (see ``cocotb_util.tb_seed``).
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from amaranth.lib import data

from cocotb_util import tb_seed
from rvmpq.hw.modes import MulMode, mode_const
from rvmpq.sw import golden

#: The unit's input payload layout, per the contract (testbench copy of the struct).
PAYLOAD = data.StructLayout({"mode": MulMode, "a": 32, "b": 32, "acc": 32})
OFF = {name: PAYLOAD[name].offset for name in ("mode", "a", "b", "acc")}

DOT, MULLO, MULHI = 0, 1, 2
OP_NAMES = {DOT: "DOT", MULLO: "MULLO", MULHI: "MULHI"}
CORNER_WORDS = np.array([0, 1, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x80008000, 0x7FFF7FFF,
                         0x80808080, 0x7F7F7F7F, 0x88888888, 0x77777777, 0xAAAAAAAA,
                         0x55555555, 0x0000FFFF, 0xFFFF0000, 0x00000080, 0x00008000],
                        dtype=np.uint32)


def config() -> dict:
    """The DUT configuration passed by the pytest runner."""
    cfg = json.loads(os.environ.get("RVMPQ_SIMD_CONFIG", "{}"))
    cfg.setdefault("latency", None)
    cfg.setdefault("widths", list(golden.WIDTHS))
    cfg.setdefault("mul", True)
    return cfg


# ---- traffic ----------------------------------------------------------------------------------

@dataclass
class Traffic:
    """A batch of operations, one array entry per operation.

    Attributes
    ----------
    op, width, a_signed, b_signed : ndarray of int
        Mode fields (``op`` is 0 DOT, 1 MULLO, 2 MULHI; ``width`` in bits, ignored by MULLO /
        MULHI but still encoded).
    a, b, acc : ndarray of uint32
        Operands.
    """

    op: np.ndarray
    width: np.ndarray
    a_signed: np.ndarray
    b_signed: np.ndarray
    a: np.ndarray
    b: np.ndarray
    acc: np.ndarray

    def __len__(self) -> int:
        return int(self.op.size)

    @staticmethod
    def make(op, width, a_signed, b_signed, a, b, acc) -> "Traffic":
        """Broadcast the fields to one common length."""
        arrs = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x)) for x in
                                     (op, width, a_signed, b_signed)),
                                   np.atleast_1d(np.asarray(a, dtype=np.uint32)),
                                   np.atleast_1d(np.asarray(b, dtype=np.uint32)),
                                   np.atleast_1d(np.asarray(acc, dtype=np.uint32)))
        return Traffic(*(np.array(x) for x in arrs))

    @staticmethod
    def concat(parts: list["Traffic"]) -> "Traffic":
        """The operations of ``parts``, one after another."""
        return Traffic(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                         ("op", "width", "a_signed", "b_signed", "a", "b", "acc")))

    def shuffled(self, rng: np.random.Generator) -> "Traffic":
        """The same operations in a random order drawn from ``rng``."""
        idx = rng.permutation(len(self))
        return Traffic(*(getattr(self, f)[idx] for f in
                         ("op", "width", "a_signed", "b_signed", "a", "b", "acc")))

    def payloads(self) -> list[int]:
        """Bit patterns of the ``i.payload`` vector (mode in the low bits, then a, b, acc)."""
        codes = {}
        modes = []
        for key in zip(self.op.tolist(), self.width.tolist(), self.a_signed.tolist(),
                       self.b_signed.tolist()):
            if key not in codes:
                op, w, sa, sb = key
                codes[key] = mode_const(OP_NAMES[op], w, w, bool(sa), bool(sb))
            modes.append(codes[key])
        return [m << OFF["mode"] | a << OFF["a"] | b << OFF["b"] | c << OFF["acc"]
                for m, a, b, c in zip(modes, self.a.tolist(), self.b.tolist(),
                                      self.acc.tolist())]

    def describe(self, k: int) -> str:
        """Operation ``k`` as text (op, width, signedness, operands) for error messages."""
        op = OP_NAMES[int(self.op[k])]
        s = "su"[0 if self.a_signed[k] else 1] + "x" + "su"[0 if self.b_signed[k] else 1]
        w = f"INT{int(self.width[k])} " if op == "DOT" else ""
        return (f"{op} {w}{s} a=0x{int(self.a[k]):08x} b=0x{int(self.b[k]):08x} "
                f"acc=0x{int(self.acc[k]):08x}")


class SimdModel:
    """Expected results of a :class:`Traffic` batch, from the golden model.

    Operations the configuration was not built for (a DOT width outside ``widths``, MULLO /
    MULHI without ``mul``) give 0, as ``SimdMulUnit`` documents.
    """

    @staticmethod
    def expected(t: Traffic, widths=golden.WIDTHS, mul: bool = True) -> np.ndarray:
        """uint32 results in issue order."""
        out = np.zeros(len(t), dtype=np.uint32)
        for w in widths:
            for sa in (0, 1):
                for sb in (0, 1):
                    sel = (t.op == DOT) & (t.width == w) & (t.a_signed == sa) & (t.b_signed == sb)
                    if sel.any():
                        out[sel] = golden.dot(t.a[sel], t.b[sel], w, bool(sa), bool(sb),
                                              acc=t.acc[sel])
        if not mul:
            return out
        sel = t.op == MULLO
        if sel.any():
            out[sel] = golden.mul(t.a[sel], t.b[sel], "mul")
        for sa, sb, name, swap in [(1, 1, "mulh", False), (1, 0, "mulhsu", False),
                                   (0, 0, "mulhu", False), (0, 1, "mulhsu", True)]:
            sel = (t.op == MULHI) & (t.a_signed == sa) & (t.b_signed == sb)
            if sel.any():
                x, y = (t.b[sel], t.a[sel]) if swap else (t.a[sel], t.b[sel])
                out[sel] = golden.mul(x, y, name)   # u x s = s x u with operands swapped
        return out


# ---- bus-functional components ----------------------------------------------------------

class StreamDriver:
    """Drives the ``i`` stream; holds valid and payload until the DUT accepts."""

    def __init__(self, dut, rng: np.random.Generator, p_idle: float = 0.0):
        self.dut, self.rng, self.p_idle = dut, rng, p_idle
        self.queue: deque[int] = deque()
        self.valid = 0
        self.accepted = 0

    def load(self, payloads: list[int]) -> None:
        """Queue ``payloads`` for the ``i`` stream."""
        self.queue.extend(payloads)

    def step(self, transfer: bool) -> None:
        """Called once per edge with whether ``i`` transferred at that edge."""
        if transfer:
            self.queue.popleft()
            self.accepted += 1
            self.valid = 0
        if not self.valid and self.queue and (self.p_idle == 0.0
                                              or self.rng.random() >= self.p_idle):
            self.valid = 1
            self.dut.i__payload.value = self.queue[0]
        elif not self.valid and self.p_idle:
            # junk while idle: the DUT must ignore the payload when valid is low
            self.dut.i__payload.value = int(self.rng.integers(0, 2 ** 63))
        self.dut.i__valid.value = self.valid


class StreamMonitor:
    """Samples ``o`` transfers and drives ``o.ready`` (random backpressure)."""

    def __init__(self, dut, rng: np.random.Generator, p_stall: float = 0.0):
        self.dut, self.rng, self.p_stall = dut, rng, p_stall
        self.ready = 1
        self.results: list[int] = []
        self._held: int | None = None   # payload of o while it is stalled

    def step(self, o_valid: int, o_payload: int | None) -> None:
        """Called once per edge with the sampled ``o.valid`` (and payload when valid)."""
        if o_valid:
            if self._held is not None:
                assert o_payload == self._held, (
                    f"o.payload changed while stalled: 0x{self._held:08x} -> 0x{o_payload:08x}")
            if self.ready:
                self.results.append(o_payload)
                self._held = None
            else:
                self._held = o_payload
        else:
            assert self._held is None, "o.valid dropped while stalled (o.ready low)"
        self.ready = 0 if (self.p_stall and self.rng.random() < self.p_stall) else 1
        self.dut.o__ready.value = self.ready


class Scoreboard:
    """In-order check of the results against the model."""

    def __init__(self, traffic: Traffic, expected: np.ndarray, log):
        self.t, self.exp, self.log = traffic, expected, log

    def check(self, results: list[int], max_report: int = 10) -> None:
        """Assert ``results`` equal the expected values in order; log the first
        ``max_report`` differences."""
        got = np.array(results, dtype=np.uint64)
        assert got.size == len(self.t), f"{got.size} results for {len(self.t)} operations"
        bad = np.flatnonzero(got != self.exp.astype(np.uint64))
        for k in bad[:max_report]:
            self.log.error(f"op #{k}: {self.t.describe(k)}: got 0x{int(got[k]):08x}, "
                           f"expected 0x{int(self.exp[k]):08x}")
        assert bad.size == 0, f"{bad.size} of {got.size} results differ (first {max_report} logged)"


class SimdTB:
    """The testbench: clock, reset, driver, monitor, model and scoreboard around the DUT."""

    def __init__(self, dut, p_idle: float = 0.0, p_stall: float = 0.0, salt: int = 0):
        self.dut = dut
        self.cfg = config()
        self.seed = tb_seed() + salt
        self.rng = np.random.default_rng(self.seed)
        self.driver = StreamDriver(dut, self.rng, p_idle)
        self.monitor = StreamMonitor(dut, self.rng, p_stall)
        self.cycles = 0
        self.first_out_cycle: int | None = None
        self.first_in_cycle: int | None = None

    async def reset(self) -> None:
        """Start the clock; hold ``rst`` for three cycles with ``i`` idle and ``o.ready`` high."""
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.rst.value = 1
        self.dut.i__valid.value = 0
        self.dut.i__payload.value = 0
        self.dut.o__ready.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def run(self, traffic: Traffic, max_cycles: int | None = None) -> None:
        """Stream ``traffic`` through the DUT and check every result in order."""
        dut = self.dut
        self.dut._log.info(f"seed {self.seed}: {len(traffic)} operations")
        expected = SimdModel.expected(traffic, self.cfg["widths"], self.cfg["mul"])
        self.driver.load(traffic.payloads())
        # values for the coming cycle consistent with this driver/monitor (a previous run may
        # have left o.ready low)
        dut.i__valid.value = 0
        dut.o__ready.value = self.monitor.ready
        n = len(traffic)
        limit = max_cycles or (n * 20 + 100)
        mon, drv = self.monitor, self.driver
        clk = dut.clk
        i_valid, i_ready, o_valid, o_payload = dut.i__valid, dut.i__ready, dut.o__valid, \
            dut.o__payload
        while len(mon.results) < n:
            await RisingEdge(clk)
            self.cycles += 1
            assert self.cycles <= limit, (f"timeout: {len(mon.results)} of {n} results after "
                                          f"{limit} cycles")
            ov = int(o_valid.value)
            ir = int(i_ready.value)
            # contract: i.ready == ~o.valid | o.ready
            assert ir == int((not ov) or mon.ready), (
                f"cycle {self.cycles}: i.ready={ir} but o.valid={ov}, o.ready={mon.ready}")
            transfer = bool(drv.valid and ir)
            if transfer and self.first_in_cycle is None:
                self.first_in_cycle = self.cycles
            if ov and self.first_out_cycle is None:
                self.first_out_cycle = self.cycles
            mon.step(ov, int(o_payload.value) if ov else None)
            drv.step(transfer)
        # o.payload = {result, hi}: result in the low 32 bits
        Scoreboard(traffic, expected, dut._log).check([r & 0xFFFF_FFFF for r in mon.results])
        # hi: the high half of the 64-bit product in MULLO / MULHI modes (Python integers)
        for i, r in enumerate(mon.results):
            if self.cfg["mul"] and int(traffic.op[i]) in (1, 2):
                a, b = int(traffic.a[i]), int(traffic.b[i])
                a -= (1 << 32) if traffic.a_signed[i] and a >> 31 else 0
                b -= (1 << 32) if traffic.b_signed[i] and b >> 31 else 0
                want = ((a * b) >> 32) & 0xFFFF_FFFF
                assert r >> 32 == want, (f"op #{i}: hi = {r >> 32:#010x}, want {want:#010x} "
                                         f"(a={traffic.a[i]:#x} b={traffic.b[i]:#x})")
        # nothing extra comes out afterwards
        for _ in range(int(self.cfg["latency"] or 4) + 2):
            await RisingEdge(clk)
            assert not int(o_valid.value), "o.valid without a pending operation"
        dut.i__valid.value = 0


# ---- traffic generators ---------------------------------------------------------------------

SIGN_COMBOS = [(sa, sb) for sa in (0, 1) for sb in (0, 1)]


def exhaustive_lane_pairs(width: int, rng: np.random.Generator) -> Traffic:
    """Every (a, b) lane-value pair, in every lane position, all four signedness combos."""
    n = 32 // width
    vals = np.arange(1 << width)
    pa, pb = (x.ravel() for x in np.meshgrid(vals, vals, indexing="ij"))
    npairs = pa.size
    # word k holds pair (k + i) mod npairs in lane i: over all k every pair visits every lane
    idx = (np.arange(npairs)[:, None] + np.arange(n)) % npairs
    a = golden.pack_lanes(pa[idx], width)
    b = golden.pack_lanes(pb[idx], width)
    parts = []
    for sa, sb in SIGN_COMBOS:
        acc = rng.integers(0, 2 ** 32, a.size, dtype=np.uint32)
        parts.append(Traffic.make(DOT, width, sa, sb, a, b, acc))
    return Traffic.concat(parts)


def corner_and_random(rng: np.random.Generator, widths, n_random: int, mul: bool) -> Traffic:
    """Corner operands x corner operands, plus random ones, for DOT (given widths) and MUL*."""
    ca, cb = (x.ravel() for x in np.meshgrid(CORNER_WORDS, CORNER_WORDS, indexing="ij"))
    acc_c = np.resize(np.array([0, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF], np.uint32), ca.size)
    parts = []
    ops = [(DOT, w) for w in widths] + ([(MULLO, 8), (MULHI, 8)] if mul else [])
    for op, w in ops:
        for sa, sb in SIGN_COMBOS:
            parts.append(Traffic.make(op, w, sa, sb, ca, cb, acc_c))
            ra = rng.integers(0, 2 ** 32, n_random, dtype=np.uint32)
            rb = rng.integers(0, 2 ** 32, n_random, dtype=np.uint32)
            rc = rng.integers(0, 2 ** 32, n_random, dtype=np.uint32)
            parts.append(Traffic.make(op, w, sa, sb, ra, rb, rc))
    return Traffic.concat(parts)


def random_mode_mix(rng: np.random.Generator, n: int, widths, mul: bool) -> Traffic:
    """Random operands with a random mode every operation (so the mode changes every cycle)."""
    n_ops = 3 if mul else 1
    op = rng.integers(0, n_ops, n)
    width = rng.choice(np.array(widths), n)
    sa, sb = rng.integers(0, 2, n), rng.integers(0, 2, n)
    # the mode changes every cycle: where a mode repeats, flip a_signed (part of every mode)
    for k in range(1, n):
        if (op[k], width[k], sa[k], sb[k]) == (op[k - 1], width[k - 1], sa[k - 1], sb[k - 1]):
            sa[k] ^= 1
    a = rng.integers(0, 2 ** 32, n, dtype=np.uint32)
    b = rng.integers(0, 2 ** 32, n, dtype=np.uint32)
    # a share of corner operands
    k = rng.random(n) < 0.2
    a[k] = rng.choice(CORNER_WORDS, int(k.sum()))
    k = rng.random(n) < 0.2
    b[k] = rng.choice(CORNER_WORDS, int(k.sum()))
    acc = rng.integers(0, 2 ** 32, n, dtype=np.uint32)
    return Traffic.make(op, width, sa, sb, a, b, acc)


# ---- tests ----------------------------------------------------------------------------------

@cocotb.test()
async def test_latency_and_single_op(dut):
    """One DOT with o.ready high: o.valid exactly LATENCY cycles after the transfer."""
    tb = SimdTB(dut, salt=1)
    await tb.reset()
    t = Traffic.make(DOT, 8, 1, 1, 0x01FF7F80, 0x80FF7F01, 0x12345678)
    await tb.run(t)
    lat = tb.first_out_cycle - tb.first_in_cycle
    dut._log.info(f"measured latency {lat}")
    if tb.cfg["latency"] is not None:
        assert lat == tb.cfg["latency"], f"latency {lat}, SimdMulUnit.LATENCY = {tb.cfg['latency']}"


@cocotb.test()
async def test_exhaustive_int2_int4(dut):
    """Every INT2 and INT4 lane pair in every lane, all signedness combos, back to back."""
    tb = SimdTB(dut, salt=2)
    await tb.reset()
    widths = [w for w in (2, 4) if w in tb.cfg["widths"]]
    await tb.run(Traffic.concat([exhaustive_lane_pairs(w, tb.rng) for w in widths]))


@cocotb.test()
async def test_exhaustive_int8_pairs(dut):
    """All 65536 INT8 pairs x 4 signedness combos (combo j on lane j), one op per cycle."""
    tb = SimdTB(dut, salt=3)
    await tb.reset()
    if 8 not in tb.cfg["widths"]:
        return
    vals = np.arange(256, dtype=np.uint32)
    pa, pb = (x.ravel() for x in np.meshgrid(vals, vals, indexing="ij"))
    parts = []
    for j, (sa, sb) in enumerate(SIGN_COMBOS):
        acc = tb.rng.integers(0, 2 ** 32, pa.size, dtype=np.uint32)
        parts.append(Traffic.make(DOT, 8, sa, sb, pa << np.uint32(8 * j), pb << np.uint32(8 * j),
                                  acc))
    t = Traffic.concat(parts)
    await tb.run(t)
    # one operation per cycle: the stream never waited (o.ready is always high here)
    assert tb.cycles <= len(t) + int(tb.cfg["latency"] or 4) + 2, (
        f"{len(t)} back-to-back ops took {tb.cycles} cycles")


@cocotb.test()
async def test_corners_random(dut):
    """Corner x corner operands and random ones for every width, MULLO and MULHI (4 combos)."""
    tb = SimdTB(dut, salt=4)
    await tb.reset()
    await tb.run(corner_and_random(tb.rng, tb.cfg["widths"], 500, tb.cfg["mul"]))


@cocotb.test()
async def test_mode_mix_back_to_back(dut):
    """A random mode every cycle at full rate; also checks one op per cycle."""
    tb = SimdTB(dut, salt=5)
    await tb.reset()
    t = random_mode_mix(tb.rng, 20_000, tb.cfg["widths"], tb.cfg["mul"])
    await tb.run(t)
    assert tb.cycles <= len(t) + int(tb.cfg["latency"] or 4) + 2, (
        f"{len(t)} back-to-back ops took {tb.cycles} cycles")


@cocotb.test()
async def test_mode_mix_idle_backpressure(dut):
    """The same mix with random idle cycles on i.valid and random o.ready backpressure."""
    for k, (p_idle, p_stall) in enumerate([(0.3, 0.3), (0.0, 0.5), (0.5, 0.0), (0.1, 0.8)]):
        tb = SimdTB(dut, p_idle=p_idle, p_stall=p_stall, salt=6 + k)
        if k == 0:
            await tb.reset()
        dut._log.info(f"p_idle={p_idle} p_stall={p_stall}")
        await tb.run(random_mode_mix(tb.rng, 5_000, tb.cfg["widths"], tb.cfg["mul"]))


@cocotb.test()
async def test_unsupported_modes_return_zero(dut):
    """Modes a reduced configuration lacks return 0 (mixed with supported ones)."""
    tb = SimdTB(dut, salt=20)
    await tb.reset()
    t = random_mode_mix(tb.rng, 3_000, list(golden.WIDTHS), True)
    await tb.run(t)   # the model zeroes what cfg lacks
