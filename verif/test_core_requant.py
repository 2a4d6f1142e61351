"""The core's requantization arithmetic (:func:`rvmpq.hw.core.requant.requant_comb`: the
``requant_round`` that the pipelined ``mpq.rq``/``mpq.rqp``/``mpq.rqpa`` use in W followed by
the ``clamp_pack`` they use in R) against the golden model, in the Amaranth
simulator: random and corner products, every shift 0..63, every output width, zero points,
signed and unsigned outputs, pack and no pack (seeded)."""


import random

import numpy as np
from amaranth import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from rvmpq.hw import isa
from rvmpq.hw.core.requant import requant_comb
from rvmpq.sw import golden


class _Dut(wiring.Component):
    p: In(signed(64))
    cfg: In(isa.RqConfigLayout)
    rd: In(32)
    pack: In(1)
    result: Out(32)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.result.eq(requant_comb(m, self.p, self.cfg, self.rd, self.pack))
        return m


def test_requant_comb_matches_golden(seed):
    rng = random.Random(seed)
    cases = []
    corners = [0, 1, -1, (1 << 31) - 1, -(1 << 31), (1 << 62), -(1 << 62), -(1 << 62) + (1 << 31)]
    for i in range(600):
        acc = rng.choice([rng.randrange(-(1 << 31), 1 << 31), rng.randrange(-300, 300),
                          rng.choice(corners[:5])])
        mult = rng.choice([rng.randrange(-(1 << 31), 1 << 31), rng.randrange(0, 1 << 20), 1,
                           -(1 << 31)])
        shift = i % 64 if i < 256 else rng.randrange(64)
        bits = rng.choice((2, 4, 8, 16))
        zp = rng.choice([0, rng.randrange(-8, 8), rng.randrange(-32768, 32768)])
        cases.append((acc, mult, shift, zp, bits, rng.random() < 0.5, rng.getrandbits(32),
                      rng.random() < 0.5))
    dut = _Dut()
    bad = []

    async def bench(ctx):
        for acc, mult, shift, zp, bits, sgn, rd, pack in cases:
            ctx.set(dut.p, acc * mult)
            ctx.set(dut.cfg.as_value(), isa.rq_config_pack(shift, zp, bits, sgn))
            ctx.set(dut.rd, rd)
            ctx.set(dut.pack, pack)
            got = ctx.get(dut.result)
            if pack:
                want = int(golden.rqpack(np.uint32(rd), np.int64(acc), np.int64(mult), shift,
                                         zp, bits, sgn))
            else:
                want = int(golden.requant(np.int64(acc), np.int64(mult), shift, zp, bits,
                                          sgn)) & 0xFFFF_FFFF
            if got != want:
                bad.append((acc, mult, shift, zp, bits, sgn, pack, hex(got), hex(want)))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, f"{len(bad)} of {len(cases)} differ, e.g. {bad[:3]}"
