"""Tests of ``rvmpq report`` (sw/report.py) and of the demo's step caching (sw/demo.py).

The report inputs below are written by hand (not by the commands under test), with figures
chosen so that every number the report prints can be checked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rvmpq.sw import demo, report


def _write(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _fake_build(build: Path) -> None:
    _write(build / "search" / "config.json", {
        "model": "digits-cnn", "cost_source": "rtl-measured", "budgets": {"cycles": 1000},
        "metric": "mqe", "method": "dp", "float_accuracy": 97.5,
        "layers": [{"name": "c1", "w_bits": 8}, {"name": "c2", "w_bits": 4}, {"name": "fc", "w_bits": 2}],
        "validated_accuracy": 96.25, "cycles_vs_int8": 0.4875,
        "all_methods": {"dp": {"bits": [8, 4, 2], "validated_accuracy": 96.25,
                               "cycles_vs_int8": 0.4875, "feasible": True},
                        "uniform-8": {"bits": [8, 8, 8], "validated_accuracy": 97.0,
                                      "cycles_vs_int8": 1.0, "feasible": False}}})
    _write(build / "bench" / "kernels.json", {
        "rows": [{"layer": "edge-conv3x3", "bits": 2, "baseline_cycles": 1_000_000,
                  "mpq_cycles": 40_000, "speedup": 25.0, "macs_per_cycle": 7.5,
                  "peak_share": 0.46875, "inner_peak_share": 0.8, "baseline_exact": True,
                  "mpq_exact": True}],
        "summary": {"edge_speedup": {"2": 25.0}}})
    _write(build / "synth" / "compare.json", {"schema": 1, "designs": [
        {"design": "core-baseline", "generic": {"gates": 1000, "flip_flops": 10, "transistors": 4000,
                                                "depth": 50}, "ecp5": {"lut4": 900, "ff": 10, "dsp": 4,
                                                                       "fmax_mhz": 60.0}},
        {"design": "core-mpq", "generic": {"gates": 1250, "flip_flops": 12, "transistors": 5000,
                                           "depth": 55}, "ecp5": {"lut4": 1800, "ff": 12, "dsp": 0,
                                                                  "fmax_mhz": 57.0}}]})


def test_report_from_hand_written_inputs(tmp_path):
    build = tmp_path / "build"
    _fake_build(build)
    out = report.write_report(build)
    md = (out / "report.md").read_text()
    assert "| dp **(chosen)** | [8, 4, 2] | 96.25 | 0.487 | True |" in md
    assert "| edge-conv3x3 | 2 | 1,000,000 | 40,000 | 25.0x | 7.50 | 47 | 80 | yes |" in md
    assert "`core-mpq` / `core-baseline`: generic gates 1.25x, ECP5 Fmax 0.95x" in md
    assert "not run (`rvmpq deploy`)" in md          # missing input: reported, not fatal
    assert (out / "bits.png").stat().st_size > 1000
    assert (out / "speedup.png").stat().st_size > 1000
    lines = report.summary_lines(report.collect(build))
    assert any("96.25%" in l and "0.487x INT8" in l for l in lines)
    assert any("core-mpq / core-baseline generic gates 1.25x" in l for l in lines)


def test_report_corrupt_input_is_a_clear_error(tmp_path):
    build = tmp_path / "build"
    (build / "bench").mkdir(parents=True)
    (build / "bench" / "kernels.json").write_text("{not json")
    with pytest.raises(ValueError, match="kernels.json: not valid JSON"):
        report.write_report(build)
    assert not (build / "report").exists()           # nothing half-written


def test_demo_skips_unchanged_steps(tmp_path, monkeypatch):
    calls = []

    def fake_main(argv):
        calls.append(argv[0])
        return 0

    monkeypatch.setattr("rvmpq.sw.cli.main", fake_main)
    src = tmp_path / "src.py"
    src.write_text("x = 1\n")
    steps = [demo.Step("one", ("verilog",), deps=(str(src),)),
             demo.Step("two", ("report",), deps=(str(src),), always=True)]
    monkeypatch.setattr(demo, "demo_steps", lambda build, quick=False: steps)
    args = argparse.Namespace(output=tmp_path / "b", quick=False, keep_going=False, force=False)
    assert demo.main(args) == 0 and calls == ["verilog", "report"]
    assert demo.main(args) == 0 and calls[2:] == ["report"]          # "one" cached
    src.write_text("x = 2\n")                                         # a dependency changed
    assert demo.main(args) == 0 and calls[3:] == ["verilog", "report"]
    summary = (tmp_path / "b" / "demo" / "summary.md").read_text()
    assert "| one | ok |" in summary


def test_demo_failed_step_is_not_cached(tmp_path, monkeypatch):
    rcs = iter([3, 0])
    monkeypatch.setattr("rvmpq.sw.cli.main", lambda argv: next(rcs))
    steps = [demo.Step("one", ("verilog",), deps=())]
    monkeypatch.setattr(demo, "demo_steps", lambda build, quick=False: steps)
    args = argparse.Namespace(output=tmp_path / "b", quick=False, keep_going=False, force=False)
    assert demo.main(args) == 1
    assert demo.main(args) == 0                       # ran again, did not claim "cached"
