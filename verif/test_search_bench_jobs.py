"""`rvmpq search --bench --bench-jobs N`: the models in child processes, merged into the same
search_bench.json / .md as a serial run. No model is trained or searched here: the per-model
function and the solver timing are replaced by fakes, and the children by tiny Python
processes that write (or fail to write) a fake part file."""

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from rvmpq.sw.cli import build_parser, main
from rvmpq.sw.search import cli

CM = SimpleNamespace(source="rtl-measured", version="hw-kernels")


def _part(model: str) -> dict:
    """A fake bench_model result: two rows, one with a test ceiling, one with a NaN SE."""
    def run(frac, acc, ceil):
        return {"model": model, "latency_budget": frac, "requested_budget": frac, "note": "",
                "float_accuracy": 97.5, "metric": "noise", "best": "dp", "best_accuracy": acc,
                "best_cycles_vs_int8": frac - 0.01, "target": "t", "figure": f"fig {model}",
                "target_met": acc > 97, "seconds": 1.5, "spearman": 0.8, "int8_cycles": 1000.0,
                "test_ceiling": ceil, "paired_se_pt": float("nan") if ceil else 0.25,
                "methods": {"dp": {"validated_accuracy": acc, "cycles_vs_int8": frac - 0.01},
                            "uniform-8": {"validated_accuracy": 97.2, "cycles_vs_int8": 1.0}}}
    return {"model": model, "test_samples": 360 if model == "m1" else 1000,
            "runs": [run(0.7, 97.25, None),
                     run(0.5, 96.5, {"accuracy": 96.75, "bits": [16, 2, 4], "configs": 12})]}


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setattr(cli, "bench_model", lambda m, cm, seed=0, fracs=None: _part(m))
    monkeypatch.setattr(cli, "_solver_timing", lambda cm, seed=0, log=None: {
        "layers": 53, "cost_source": "fake", "seconds": {"dp (1 budget)": 0.5},
        "target_met": True})


def _fake_children(monkeypatch, tmp_path, fail=None, slow=None, versions=None):
    """Children that copy the fake part of their model into place (``fail``: exits 3 instead;
    ``slow``: sleeps a minute first; ``versions``: model -> the cost version it reports, else
    ``CM.version``)."""
    def cmd(model, part_dir, seed, fracs, child_args):
        src = tmp_path / f"src-{model}.json"
        src.write_text(json.dumps(dict(_part(model), cost_source=CM.source,
                                       cost_version=(versions or {}).get(model, CM.version))))
        code = ("import pathlib, shutil, sys, time\n"
                "print('child of', sys.argv[3]); print('second line')\n"
                f"time.sleep({60 if model == slow else 0})\n"
                f"if sys.argv[3] == {fail!r}: sys.exit(3)\n"
                "d = pathlib.Path(sys.argv[2]); d.mkdir(parents=True, exist_ok=True)\n"
                "shutil.copy(sys.argv[1], d / 'part.json')\n")
        return [sys.executable, "-c", code, str(src), str(part_dir), model]
    monkeypatch.setattr(cli, "_child_cmd", cmd)


def _strip_timings(out: Path):
    doc = json.loads((out / "search_bench.json").read_text())
    assert doc.pop("seconds") >= 0
    md = [l for l in (out / "search_bench.md").read_text().splitlines()
          if not l.startswith("Total benchmark time")]
    return doc, md


def test_bench_jobs_merge_equals_serial(fakes, monkeypatch, tmp_path, capsys):
    models = ("m1", "m2", "m3")
    assert cli.bench(tmp_path / "serial", CM, models=models) == 0
    _fake_children(monkeypatch, tmp_path)
    assert cli.bench(tmp_path / "par", CM, models=models, jobs=2) == 0
    out = capsys.readouterr().out
    assert "[m2] child of m2" in out and "[m3] second line" in out   # prefixed child lines
    serial, par = _strip_timings(tmp_path / "serial"), _strip_timings(tmp_path / "par")
    assert json.dumps(serial[0]) == json.dumps(par[0])   # same keys, order and values (NaN too)
    assert serial[1] == par[1]
    doc = serial[0]
    assert [r["model"] for r in doc["runs"]] == ["m1", "m1", "m2", "m2", "m3", "m3"]
    assert list(doc) == ["cost_source", "final", "cost_version", "runs", "test_samples",
                         "mobilenetv2_solver"]
    assert math.isnan(doc["runs"][1]["paired_se_pt"])
    assert any(l.startswith("| m2 | 0.5 | 97.50 | 96.50 (0.49) |") for l in serial[1])
    assert "96.75 [16, 2, 4] of 12" in "\n".join(serial[1])
    assert not (tmp_path / "par" / "parts").exists()     # the part files are gone once merged


def test_bench_jobs_child_failure_writes_nothing(fakes, monkeypatch, tmp_path, capsys):
    _fake_children(monkeypatch, tmp_path, fail="bad", slow="slow")
    rc = cli.bench(tmp_path / "par", CM, models=("bad", "slow", "m3"), jobs=2)
    cap = capsys.readouterr()
    assert rc == 1
    assert "model bad failed" in cap.err and "exit status 3" in cap.err
    assert "stopped slow" in cap.err and "nothing written" in cap.err
    assert "[bad] child of bad" in cap.out
    assert not (tmp_path / "par" / "search_bench.json").exists()
    assert not (tmp_path / "par" / "search_bench.md").exists()
    assert not (tmp_path / "par" / "parts" / "m3").exists()   # never started


def test_bench_jobs_refuses_to_merge_other_cost_versions(fakes, monkeypatch, tmp_path, capsys):
    """A child that searched on another RTL-kernel version (hw/ or sw/kernels/ edited while
    the benchmark ran) makes the merge fail: nothing written, the parts kept."""
    _fake_children(monkeypatch, tmp_path, versions={"m2": "edited"})
    rc = cli.bench(tmp_path / "par", CM, models=("m1", "m2"), jobs=2)
    err = capsys.readouterr().err
    assert rc == 1 and "model m2 was searched on costs rtl-measured version edited" in err
    assert "nothing written" in err and "kept in" in err
    assert not (tmp_path / "par" / "search_bench.json").exists()
    assert (tmp_path / "par" / "parts" / "m2" / "part.json").exists()


def test_child_command_parses_as_a_bench_part(tmp_path):
    cmd = cli._child_cmd("mnist1d-cnn", tmp_path / "p", 3, (0.7, 0.45),
                         ["--costs", "stand-in", "--jobs", "1", "--threads", "2"])
    assert cmd[:3] == [sys.executable, "-m", "rvmpq"]
    a = build_parser("search").parse_args(cmd[3:])
    assert a.bench and a.bench_part and a.model == "mnist1d-cnn" and a.seed == 3
    assert a.out == tmp_path / "p" and a.bench_fracs == (0.7, 0.45)
    assert a.costs == "stand-in" and a.jobs == 1 and a.threads == 2 and a.bench_jobs is None


@pytest.mark.parametrize("argv, msg", [
    (["--bench", "--bench-jobs", "0"], "--bench-jobs 0: must be >= 1"),
    (["--bench", "--bench-jobs", "-2"], "--bench-jobs -2: must be >= 1"),
    (["--bench-jobs", "2"], "--bench-jobs 2: only with --bench"),
])
def test_bench_jobs_argument_errors(tmp_path, capsys, argv, msg):
    assert main(["search", *argv, "-o", str(tmp_path)]) == 2
    assert msg in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
