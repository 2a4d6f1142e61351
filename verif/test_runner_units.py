"""Program-level equivalence of the two SIMD-unit descriptions in the runner.

Each program runs on the ``mpq`` SoC twice, with ``unit="words"`` (the runner's default) and
``unit="tree"`` (the synthesized brick array). Everything observable must be identical: exit
code, cycles, retired instructions, console bytes, signature and the whole retired-instruction
trace (pc, instruction, rd and the value written, in order). The programs: the directed tests
that use the unit (RV32M multiplies, dot products, requantization, accumulators, their traps)
plus one generated kernel program per precision (a conv layer through ``mpq.ldot`` /
``mpq.rqpa``, the code path the cost tables and deployments measure).

The lockstep test of the unit itself is verif/test_simd_lockstep.py; why two descriptions exist
is in docs/runner.md.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "programs"))
import rvmpq_testprogs as tp  # noqa: E402

needs_soc = pytest.mark.skipif(not tp.have_soc(), reason="rvmpq.hw.soc is not installed")

#: Directed programs that exercise the SIMD unit (and c_smoke: C code, console, signature).
PROGRAMS = ("rv32m", "mpq_dot", "mpq_rq", "mpq_acc", "mpq_illegal", "c_smoke")


def _both(elf, max_cycles=2_000_000):
    from rvmpq.sw.runtime.elf import load_elf  # noqa: PLC0415
    from rvmpq.sw.runtime.runner import run_elf  # noqa: PLC0415

    sig = load_elf(elf).signature_range() is not None
    return [run_elf(elf, config="mpq", max_cycles=max_cycles, trace=True, signature=sig,
                    unit=unit) for unit in ("words", "tree")]


def _assert_same(what, words, tree):
    assert not words.timed_out and not tree.timed_out, f"{what}: did not halt"
    for field in ("exit_code", "cycles", "instret", "console", "signature"):
        w, t = getattr(words, field), getattr(tree, field)
        assert w == t, f"{what}: {field} differs: words {w!r}, tree {t!r}"
    assert len(words.trace) == len(tree.trace) == words.instret
    for i, (w, t) in enumerate(zip(words.trace, tree.trace)):
        assert w == t, f"{what}: retire #{i} differs: words {w}, tree {t}"


@needs_soc
@pytest.mark.parametrize("name", PROGRAMS)
def test_directed_program_same_on_both_units(name):
    words, tree = _both(tp.compiled(name, "mpq"))
    _assert_same(name, words, tree)
    assert words.exit_code == tp.expected_exit(name, "mpq")


@needs_soc
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_kernel_program_same_on_both_units(bits):
    from rvmpq.sw.kernels import random_input, random_layer  # noqa: PLC0415
    from rvmpq.sw.kernels.run import build_layer_program  # noqa: PLC0415

    rng = np.random.default_rng(100 + bits)
    layer = random_layer("conv", bits, 8, 8, 5, 5, 3, 1, rng=rng)
    elf, _ = build_layer_program(layer, random_input(layer, rng), "mpq")
    words, tree = _both(elf, max_cycles=20_000_000)
    _assert_same(f"conv INT{bits} kernel", words, tree)
    assert words.exit_code == 0 and words.signature


def test_unit_choice_is_part_of_the_model_name():
    """The two descriptions give different Verilog, so different cached models."""
    from rvmpq.sw.runtime.runner import model_tag, soc_verilog  # noqa: PLC0415

    assert model_tag("mpq", "words") != model_tag("mpq", "tree")
    assert model_tag("baseline", "words") == model_tag("baseline", "tree") == "baseline"
    assert soc_verilog("mpq", "words") != soc_verilog("mpq", "tree")
    with pytest.raises(ValueError, match="unknown unit"):
        model_tag("mpq", "fast")


@needs_soc
def test_cli_unit_flag(tmp_path):
    """``rvmpq run --unit words|tree`` give the same status line; a bad unit is refused."""
    import subprocess  # noqa: PLC0415

    elf = tp.compiled("mpq_dot", "mpq")
    out = {}
    for unit in ("words", "tree"):
        r = subprocess.run([sys.executable, "-m", "rvmpq.sw.cli", "run", str(elf), "--unit", unit],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out[unit] = r.stdout.splitlines()[-1]
    assert out["words"] == out["tree"] and out["words"].startswith("exit=0 cycles=")
    r = subprocess.run([sys.executable, "-m", "rvmpq.sw.cli", "run", str(elf), "--unit", "fast"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--unit" in r.stderr


@needs_soc
def test_bench_runner_section():
    """``rvmpq bench --only runner`` machinery on one case (the full benchmark takes ~1 min)."""
    from rvmpq.sw.bench import RUNNER_TARGET, bench_runner  # noqa: PLC0415

    rep = bench_runner(repeat=1, cases=(("mpq", "words"),))
    (row,) = rep.rows
    assert row.exit_code == 0 and row.cycles > 4_000_000 and row.instret > 3_000_000
    assert row.mcps_best == pytest.approx(row.cycles / row.run_s[0] / 1e6, rel=0.01)
    assert rep.ok and rep.target_cycles_per_s == RUNNER_TARGET
    md = rep.markdown()
    assert "| mpq | words |" in md and "vs target" in md
    # the consistency check really compares the units
    tree = dataclasses.replace(row, unit="tree", cycles=row.cycles + 1)
    assert not dataclasses.replace(rep, rows=[row, tree]).ok
