"""Smoke tests of the synthesis flow (rvmpq.synth): generic gates for every design, one ECP5
place-and-route, a Liberty area when the SKY130 library is present, reports and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rvmpq.synth import cli as synth_cli
from rvmpq.synth.designs import available_designs, get_design
from rvmpq.synth.flow import synthesize
from rvmpq.synth.report import markdown_table, results_from_json, write_reports

PDK_LIB = (Path(__file__).resolve().parents[1] / ".." / "shared" / "pdk"
           / "sky130_fd_sc_hd__tt_025C_1v80.lib.gz").resolve()


def test_registry_has_reference_designs():
    names = available_designs()
    for n in ("mul16", "mul33", "separate"):
        assert n in names
    with pytest.raises(KeyError, match="available"):
        get_design("no_such_design")


def test_generic_all_designs(tmp_path):
    specs = list(available_designs().values())
    results = synthesize([s for s in specs if s.flat_ports], tmp_path, targets=["generic"],
                         progress=None)
    for r in results:
        assert not r.errors, r.errors
        g = r.generic
        assert g.gates > 0 and g.transistors > 0 and g.depth > 0 and g.flip_flops > 0
    by = {r.design: r.generic for r in results}
    # registered I/O: 16+16 input bits + 32 output bits for the 16x16 multiplier
    assert by["mul16"].flip_flops == 64
    assert by["mul16"].gates < by["mul33"].gates < by["separate"].gates
    js, md = write_reports(results, tmp_path)
    back = results_from_json(js.read_text())
    assert [r.design for r in back] == [r.design for r in results]
    assert back[0].generic == results[0].generic
    assert "| mul33 |" in md.read_text() and "Ratios vs `mul33`" in md.read_text()


def test_ecp5_one_design(tmp_path):
    (r,) = synthesize([get_design("mul16")], tmp_path, targets=["ecp5"], progress=None)
    assert not r.errors, r.errors
    e = r.ecp5
    assert e.lut4 > 0 and e.ff == 64 and e.dsp == 0 and e.fmax_mhz > 10
    rep = json.loads((tmp_path / "mul16" / "ecp5_report.json").read_text())
    assert "fmax" in rep


@pytest.mark.skipif(not PDK_LIB.exists(), reason=f"SKY130 Liberty not found at {PDK_LIB}")
def test_liberty_area(tmp_path):
    (r,) = synthesize([get_design("mul16")], tmp_path, targets=[], liberty=PDK_LIB,
                      progress=None)
    assert not r.errors, r.errors
    # DESIGN.md: a registered 16x16 multiplier is about 13,400 um^2 in SKY130 HD
    assert 8_000 < r.liberty.area_um2 < 20_000


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="generic"):
        synthesize([get_design("mul16")], tmp_path, targets=["asic"], progress=None)
    with pytest.raises(FileNotFoundError, match="Liberty"):
        synthesize([get_design("mul16")], tmp_path, targets=[], liberty=tmp_path / "x.lib",
                   progress=None)


def test_cli_design_generic(tmp_path, capsys):
    import argparse
    p = argparse.ArgumentParser()
    synth_cli.add_arguments(p)
    args = p.parse_args(["--design", "mul16", "--target", "generic", "-o", str(tmp_path)])
    assert synth_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "| mul16 |" in out
    assert (tmp_path / "mul16.json").exists() and (tmp_path / "mul16.md").exists()
    args = p.parse_args(["--design", "nope", "-o", str(tmp_path)])
    assert synth_cli.main(args) == 2


def test_cli_config_names_core_designs(tmp_path, capsys):
    """``--config NAME`` is the design ``core-NAME``; an unknown configuration is refused."""
    import argparse
    p = argparse.ArgumentParser()
    synth_cli.add_arguments(p)
    args = p.parse_args(["--config", "nope", "-o", str(tmp_path)])
    assert synth_cli.main(args) == 2
    assert "unknown core configuration 'nope'" in capsys.readouterr().err
    args = p.parse_args(["--config", "baseline", "--target", "generic", "-o", str(tmp_path)])
    assert synth_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "| core-baseline |" in out
    assert (tmp_path / "core-baseline.json").exists()


def test_markdown_marks_failures():
    from rvmpq.synth.flow import SynthResult
    md = markdown_table([SynthResult("x", "x", errors={"generic": "SynthError: boom"})])
    assert "boom" in md


_MEM_V = """
module memtop(input clk, input we, input [7:0] wa, input [7:0] ra, input [7:0] d,
              output reg [7:0] q, output reg [7:0] r);
  reg [7:0] big [0:255];     // 2048 bits: stays a RAM macro
  reg [7:0] small [0:15];    // 128 bits: a register file, mapped to flip-flops
  always @(posedge clk) begin
    if (we) big[wa] <= d;
    if (we) small[wa[3:0]] <= d;
    q <= big[ra];
    r <= small[ra[3:0]];
  end
endmodule
"""


def test_generic_keeps_large_memories_as_macros(tmp_path):
    from rvmpq.synth.flow import prepare_design, synth_generic

    work = prepare_design("memtop", _MEM_V, "memtop", tmp_path)
    st = synth_generic(work, "memtop")
    assert st.memory_bits == 256 * 8
    # the 16x8 file is flip-flops (128 of them, plus the 8 output registers of `r`)
    assert 128 <= st.flip_flops <= 128 + 16
    assert not any(k.startswith("$mem") for k in st.cells_by_type)
