"""pytest runners of the SimdMulUnit cocotb testbench (verif/tb_simd.py) on Verilator.

One test per DUT configuration (``CONFIGS``), description (``impl``: ``tree``, the synthesized
brick array, and ``words``, the word-level one the program runner simulates; docs/runner.md)
and seed; each configuration is verilated once (``build/sim/simd-<config>-<impl>-<hash>/``) and
reused by every seed and by later runs. The full
configuration runs every cocotb test of ``tb_simd``; the reduced ones run the cheaper tests
plus the check that operations they were not built for return 0.

Replay a random seed with ``RVMPQ_SEED=<seed> python -m pytest verif/test_simd.py``;
``WAVES=1`` records a VCD per run (its path is printed).
"""

from __future__ import annotations

import json

import pytest

from cocotb_util import run_cocotb, verilator_build

#: name -> (SimdMulUnit keyword arguments, cocotb tests to run or None for all)
CONFIGS: dict[str, tuple[dict, str | None]] = {
    "full": ({}, None),
    "no-rv32m": ({"with_rv32m": False},
                 "test_latency_and_single_op,test_exhaustive_int2_int4,test_corners_random,"
                 "test_mode_mix_idle_backpressure,test_unsupported_modes_return_zero"),
    "w8-16": ({"widths": (8, 16)},
              "test_latency_and_single_op,test_exhaustive_int8_pairs,test_corners_random,"
              "test_mode_mix_back_to_back,test_unsupported_modes_return_zero"),
}

TOP = "simd_mul_unit"


#: The descriptions of the unit (``SimdMulUnit(impl=...)``); both must pass every test.
IMPLS = ("tree", "words")


def simd_build(name: str, impl: str = "tree"):
    """Verilator build of ``SimdMulUnit(**CONFIGS[name][0], impl=impl)`` (cached) and its tb
    config."""
    simd = pytest.importorskip("rvmpq.hw.simd", reason="rvmpq.hw.simd is not available yet")
    from rvmpq.hw.verilog import verilog_text  # noqa: PLC0415

    kwargs = CONFIGS[name][0]
    dut = simd.SimdMulUnit(**kwargs, impl=impl)
    sim = verilator_build(f"simd-{name}-{impl}", verilog_text(dut, TOP, None), TOP)
    cfg = {"latency": dut.LATENCY, "widths": list(dut.widths),
           "mul": bool(kwargs.get("with_rv32m", True))}
    return sim, cfg


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_simd(config, impl, seed):
    sim, cfg = simd_build(config, impl)
    run_cocotb(sim, "tb_simd", testcase=CONFIGS[config][1], seed=seed,
               extra_env={"RVMPQ_SIMD_CONFIG": json.dumps(cfg)})
