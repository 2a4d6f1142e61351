"""Directed self-checking programs (verif/programs) on the ISS and on the RTL.

Each program is checked for its exit code on both configurations (custom instructions trap as
illegal on ``baseline``); on the RTL its retired-instruction trace must also equal the ISS's,
instruction by instruction.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "programs"))
import rvmpq_testprogs as tp  # noqa: E402

from rvmpq.sw import iss  # noqa: E402

CASES = [(name, cfg) for name in tp.DIRECTED for cfg in ("mpq", "baseline")]
#: Programs whose cycle-counter readings flow into later register values (the ISS has no
#: cycle model): only their exit code / signature is compared.
NO_TRACE_COMPARE = {"c_smoke"}
needs_soc = pytest.mark.skipif(not tp.have_soc(), reason="rvmpq.hw.soc is not installed")


@pytest.mark.parametrize("name,config", CASES)
def test_program_on_iss(name, config):
    res = iss.run_elf(tp.compiled(name, config), config=config, max_steps=2_000_000)
    assert not res.timed_out, f"{name} did not exit on the ISS"
    assert res.exit_code == tp.expected_exit(name, config), (
        f"{name} on the ISS ({config}): exit {res.exit_code}, console {res.console!r}")


@needs_soc
@pytest.mark.parametrize("name,config", CASES)
def test_program_on_rtl(name, config):
    from rvmpq.sw.runtime.runner import run_elf
    elf = tp.compiled(name, config)
    res = run_elf(elf, config=config, max_cycles=2_000_000, trace=True)
    assert not res.timed_out, f"{name} did not halt on the RTL within 2M cycles"
    assert res.exit_code == tp.expected_exit(name, config), (
        f"{name} on the RTL ({config}): exit {res.exit_code} (check number), console "
        f"{res.console!r}")
    if name in NO_TRACE_COMPARE:
        return
    ref = iss.run_elf(elf, config=config, max_steps=2_000_000, trace=True)
    assert len(res.trace) == res.instret
    for i, (r, d) in enumerate(zip(ref.trace, res.trace)):
        assert iss.same_retire(r, d), (
            f"{name} ({config}) retire #{i}: ISS {iss.format_trace_line(r)} "
            f"RTL {iss.format_trace_line(d)}")
    assert len(ref.trace) == len(res.trace)


def test_c_smoke_console_and_signature_iss():
    res = iss.run_elf(tp.compiled("c_smoke", "mpq"), config="mpq")
    assert res.console == b"hello from rvmpq\n"
    assert res.signature[:6] == [610, 0xDEADBEEF, 0xFFFFFFF9 // 3, (-2) & 0xFFFFFFFF, 2, 8]


@needs_soc
def test_c_smoke_console_and_signature_rtl():
    from rvmpq.sw.runtime.runner import run_elf
    res = run_elf(tp.compiled("c_smoke", "mpq"), config="mpq", signature=True)
    assert res.exit_code == 0
    assert res.console == b"hello from rvmpq\n"
    assert res.signature[:6] == [610, 0xDEADBEEF, 0xFFFFFFF9 // 3, (-2) & 0xFFFFFFFF, 2, 8]
    assert res.cycles >= res.instret > 1000


def test_illegal_words_are_undefined_in_the_isa_table():
    """The words mpq_illegal.S expects to trap must be undefined in rvmpq.hw.isa."""
    from rvmpq.hw import isa
    text = (tp.PROGRAMS_DIR / "mpq_illegal.S").read_text()
    words = [int(w, 16) for w in re.findall(r"EXPECT_ILLEGAL\(\d+,\s*(0x[0-9a-fA-F]+)\)", text)]
    assert len(words) >= 6
    for w in words:
        assert (w & 0x7F) in isa.CUSTOM_OPCODES, f"0x{w:08x} is not in a custom opcode"
        assert isa.decode(w) is None, f"0x{w:08x} is defined: {isa.decode(w)}"


def test_every_custom_instruction_is_exercised():
    """Each row of the ISA table appears in a directed program."""
    from rvmpq.hw import isa
    text = "".join((tp.PROGRAMS_DIR / f).read_text()
                   for f in ("mpq_dot.S", "mpq_rq.S", "mpq_acc.S"))
    for d in isa.CUSTOM_INSTRUCTIONS:
        macro = d.name.replace(".", "_").upper()
        assert re.search(rf"\b{macro}\b", text), f"{d.name} ({macro}) is not tested"
