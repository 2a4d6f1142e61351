"""Differential random testing of the RTL: final registers and memory against Unicorn, the
retired-instruction trace against the ISS (rvmpq.sw.fuzz). A failure prints the replay command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "programs"))
import rvmpq_testprogs as tp  # noqa: E402

from rvmpq.sw import fuzz  # noqa: E402

pytestmark = pytest.mark.skipif(not tp.have_soc(), reason="rvmpq.hw.soc is not installed")


@pytest.mark.parametrize("config", ["mpq", "baseline"])
def test_rtl_matches_references(config):
    seeds = tp.pick_seeds(list(range(1000, 1030)), 2, f"RTL fuzz ({config})")
    fails = []
    for s in seeds:
        problems = fuzz.check_program(fuzz.generate(s, config, 200), rtl=True)
        if problems:
            fails.append(f"seed {s}: {problems[:4]}\n  replay: "
                         f"{fuzz.replay_command(s, config, 200, rtl=True)}")
    assert not fails, "\n".join(fails)


def test_fuzz_cli_runs_and_reports():
    assert fuzz.main(["--count", "2", "--seed", "7", "--config", "mpq"]) == 0
