"""Formal proofs (rvmpq.synth.formal): the miter must catch a wrong reference, and the fast
proofs of SimdMulUnit must hold (skipped until rvmpq.hw.simd exists)."""

from __future__ import annotations

import importlib.util

import pytest

from rvmpq.synth.designs import get_design
from rvmpq.synth.formal import FAST_PROOFS, get_proof, miter_verilog, prove, reference_verilog

HAVE_SIMD = importlib.util.find_spec("rvmpq.hw.simd") is not None


def test_reference_text():
    v = reference_verilog(get_proof("dot4_su"))
    assert v.count("wire signed [31:0] p") == 8
    assert "$signed({a[7], a[7:4]})" in v and "$signed({1'b0, b[7:4]})" in v
    assert "2'b11" in reference_verilog(get_proof("dot4_su"), broken=True)
    assert "prod[63:32]" in reference_verilog(get_proof("mulhi_su"))
    m = miter_verilog("top", 3, 84)
    assert "d3" in m and ".mode(8'd84)" in m
    with pytest.raises(KeyError, match="dot2_ss"):
        get_proof("dot3")


def test_broken_reference_fails(tmp_path):
    """The proof must find a counterexample against a wrong reference (not pass vacuously)."""
    r = prove(get_design("separate"), get_proof("dot2_ss"), tmp_path, timeout=240, broken=True)
    assert r.outcome == "failed", r
    assert "FAIL" in r.message


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SIMD, reason="rvmpq.hw.simd (SimdMulUnit) is not written yet")
@pytest.mark.parametrize("proof", [p.name for p in FAST_PROOFS[:2]])
def test_simd_fast_proofs(tmp_path, proof):
    r = prove(get_design("simd"), get_proof(proof), tmp_path, timeout=300)
    assert r.outcome == "proved", r
