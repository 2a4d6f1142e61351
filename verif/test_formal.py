"""Formal proofs (rvmpq.synth.formal): the register cut rejects an unbalanced pipeline, the
miter catches a wrong reference, and the INT2 proofs of SimdMulUnit hold.

``make test`` runs the four INT2 proofs and the broken-reference check (about 40 s of CPU). The
wider modes do not finish (the INT4 BDDs ran > 10 min), so they have no test here; ``rvmpq synth
--formal`` runs every mode under a timeout and records outcome and time in formal.json/.md."""

from __future__ import annotations

import importlib.util
import json

import pytest

from rvmpq.synth.designs import get_design
from rvmpq.synth.formal import (ALL_PROOFS, FAST_PROOFS, CutError, ProofResult, _design_comb,
                                cut_registers, get_proof, miter_verilog, prove, reference_verilog,
                                write_formal_json, write_formal_md)

HAVE_SIMD = importlib.util.find_spec("rvmpq.hw.simd") is not None
needs_simd = pytest.mark.skipif(not HAVE_SIMD, reason="rvmpq.hw.simd (SimdMulUnit) is missing")


def test_reference_text():
    v = reference_verilog(get_proof("dot4_su"))
    assert v.count("wire signed [9:0] p") == 8          # exact (w+1)x(w+1) -> 2w+2 products
    assert "$signed({a[7], a[7:4]})" in v and "$signed({1'b0, b[7:4]})" in v
    assert "2'b11" in reference_verilog(get_proof("dot4_su"), broken=True)
    assert "2'b11" not in v
    assert "prod[63:32]" in reference_verilog(get_proof("mulhi_su"))
    assert "{1'b0, b}" in reference_verilog(get_proof("mulhi_su"))
    m = miter_verilog("dut_comb", 84, 4)
    assert ".mode(8'd84)" in m and "dut_result != ref_result" in m
    assert "input [3:0] a0, input [3:0] b0, input [3:0] a1" in m     # lane-major BDD order
    assert "wire [31:0] a = {a7, a6, a5, a4, a3, a2, a1, a0};" in m
    with pytest.raises(ValueError, match="0..255"):
        miter_verilog("dut_comb", 300)
    with pytest.raises(KeyError, match="dot2_ss"):
        get_proof("dot3")
    assert len({p.name for p in ALL_PROOFS}) == 20


_PIPE = """
module top(input clk, input rst, input [7:0] mode, input [31:0] a, input [31:0] b,
           input [31:0] acc, output reg [31:0] result);
  reg [31:0] ra, rb;
  always @(posedge clk) begin
    ra <= a; rb <= b;
    result <= ra + {SECOND};
  end
endmodule
"""


def test_cut_registers(tmp_path):
    """A balanced 2-stage pipeline is cut; a skewed one (reads ``b`` a cycle early) is refused."""
    good = tmp_path / "good" / "design.v"
    good.parent.mkdir()
    good.write_text(_PIPE.replace("{SECOND}", "rb"))
    n = cut_registers(good, "top", 2, good.parent / "dut_comb.json")
    assert n == 96
    cells = json.loads((good.parent / "dut_comb.json").read_text())["modules"]["dut_comb"]["cells"]
    assert not [c for c in cells.values() if "dff" in c["type"]]
    skew = tmp_path / "skew" / "design.v"
    skew.parent.mkdir()
    skew.write_text(_PIPE.replace("{SECOND}", "b"))
    with pytest.raises(CutError, match="not balanced"):
        cut_registers(skew, "top", 2, skew.parent / "dut_comb.json")
    with pytest.raises(CutError, match="LATENCY is 3"):
        cut_registers(good, "top", 3, good.parent / "other.json")


def test_reports(tmp_path):
    rs = [ProofResult("simd", "dot2_ss", "proved", 12.5, 60, method="bdd", cpu_s=10.25),
          ProofResult("simd", "dot2_ss", "failed", 3.0, 60, broken_reference=True, method="bdd")]
    js = write_formal_json(rs, tmp_path / "formal.json")
    write_formal_json([ProofResult("simd", "dot16_ss", "timeout", 60, 60)], js)  # merged
    md = write_formal_md(js, tmp_path / "formal.md").read_text()
    assert "| simd | dot2_ss | bdd | PROVED | 12.5 | 10.2 | 60 |" in md
    assert "FAILED (ok)" in md and "| dot16_ss | bdd | TIMEOUT |" in md
    assert len(json.loads(js.read_text())["proofs"]) == 3


@pytest.fixture(scope="module")
def simd_comb(tmp_path_factory):
    out = tmp_path_factory.mktemp("formal")
    spec = get_design("simd")
    return spec, out, _design_comb(spec, out)


@needs_simd
def test_broken_reference_fails(simd_comb):
    """The proof must find a counterexample against a wrong reference (not pass vacuously)."""
    spec, out, dut = simd_comb
    r = prove(spec, get_proof("dot2_ss"), out, timeout=300, broken=True, _dut=dut)
    assert r.outcome == "failed", r
    assert "not constant 0" in r.message


@needs_simd
@pytest.mark.parametrize("proof", [p.name for p in FAST_PROOFS])
def test_simd_fast_proofs(simd_comb, proof):
    """The INT2 modes (each signedness), about 5 s of CPU each."""
    spec, out, dut = simd_comb
    r = prove(spec, get_proof(proof), out, timeout=300, _dut=dut)
    assert r.outcome == "proved", r
