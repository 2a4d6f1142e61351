"""The Python ISS against Unicorn (an independent RV32IM implementation) on random programs,
plus directed checks of the ISS's trap behaviour on raw instruction words."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "programs"))
import rvmpq_testprogs as tp  # noqa: E402

from rvmpq.sw import fuzz  # noqa: E402
from rvmpq.sw.iss import Iss, format_trace_line, parse_trace_line, run_words  # noqa: E402


@pytest.mark.parametrize("config", ["baseline", "mpq"])
def test_iss_matches_unicorn_on_random_programs(config):
    seeds = tp.pick_seeds(list(range(1, 41)), 10, f"ISS vs Unicorn ({config})")
    fails = []
    for s in seeds:
        problems = fuzz.check_program(fuzz.generate(s, config, 200), rtl=False)
        if problems:
            fails.append(f"seed {s}: {problems[:4]}; replay: "
                         f"{fuzz.replay_command(s, config, 200, rtl=False)}")
    assert not fails, "\n".join(fails)


def test_unicorn_comparison_detects_a_wrong_iss(monkeypatch):
    """The comparison is not vacuous: an ISS with a broken DIV is caught."""
    from rvmpq.sw import iss as iss_mod
    orig = iss_mod.Iss._muldiv
    monkeypatch.setattr(iss_mod.Iss, "_muldiv",
                        staticmethod(lambda f3, a, b: orig(f3, a, b) ^ (f3 == 4)))
    bad = [s for s in range(1, 30) if fuzz.check_program(fuzz.generate(s, "baseline"), rtl=False)]
    assert bad, "a wrong DIV went unnoticed in 29 programs"


def _trap(words, config="mpq"):
    iss, _ = run_words(words + [0x0000006F], config=config, max_steps=len(words))
    return iss


def test_iss_traps():
    addi_a7_1 = 0x00100893
    # ecall with a7 != 93: mcause 11, mepc = its pc
    iss = _trap([addi_a7_1, 0x00000073])
    assert iss.csr[0x342] == 11 and iss.csr[0x341] == 4 and iss.pc == 0
    # illegal (all zeros): mcause 2, mtval = the word
    iss = _trap([0x00000000])
    assert iss.csr[0x342] == 2
    # lw from 0x30000000: load access fault, mtval = address
    iss = _trap(fuzz.li(1, 0x30000000) + [0x0000A103])
    assert iss.csr[0x342] == 5 and iss.csr[0x343] == 0x30000000
    # misaligned sw in DMEM
    iss = _trap(fuzz.li(1, 0x10000002) + [0x0020A023])
    assert iss.csr[0x342] == 6 and iss.csr[0x343] == 0x10000002
    # custom instruction on baseline: illegal
    from rvmpq.hw import isa
    iss = _trap([isa.encode("mpq.dot.w8.ss", 1, 2, 3)], config="baseline")
    assert iss.csr[0x342] == 2


def test_iss_exit_and_console():
    words = fuzz.li(5, 0x20000000) + [0x04100313, 0x00628023]  # li t1,'A'; sb t1,0(t0)
    words += fuzz.li(17, 93) + fuzz.li(10, 7) + [0x00000073]
    iss, res = run_words(words, config="baseline")
    assert res.halted and res.exit_code == 7 and res.console == b"A"
    assert res.trace[-1].trap and res.instret == len(words)


def test_trace_line_roundtrip():
    iss, res = run_words(fuzz.li(3, 0xDEADBEEF) + [0x00000073], config="baseline")
    for r in res.trace:
        assert parse_trace_line(format_trace_line(r)) == r


def test_bad_config_names_allowed_values():
    with pytest.raises(ValueError, match="mpq, baseline"):
        Iss("fast")
