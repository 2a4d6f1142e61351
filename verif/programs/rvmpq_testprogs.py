"""Shared helpers of the program-level tests (imported by verif/test_*.py through sys.path).

Directed programs live next to this file; each exits 0 on success and otherwise with the
number of the failing check (see ``test_macros.h``).
"""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

from rvmpq.sw.runtime.cc import compile_program
from rvmpq.sw.tools import build_root

PROGRAMS_DIR = Path(__file__).resolve().parent

#: Directed programs: name -> source file.
DIRECTED = {p.stem: p for p in sorted(PROGRAMS_DIR.glob("*.S"))}
DIRECTED["c_smoke"] = PROGRAMS_DIR / "c_smoke.c"

#: Exit code the default trap handler of crt0 gives an illegal instruction (128 + mcause 2).
ILLEGAL_EXIT = 130

#: Expected exit code per (program, config) where it is not 0. On the baseline core the custom
#: instructions and the mpq_rq CSR are illegal: the default handler exits with 130, and
#: mpq_illegal.S's own handler turns its "defined neighbour" check (number 10) into a failure
#: (mpq_acc.S's its first check).
EXPECTED_EXIT = {
    ("mpq_dot", "baseline"): ILLEGAL_EXIT,
    ("mpq_rq", "baseline"): ILLEGAL_EXIT,
    # mpq_acc.S installs its own handler (it checks traps of mpq.ldot): on the baseline core
    # it skips the illegal instructions, so check number 1 fails
    ("mpq_acc", "baseline"): 1,
    ("mpq_illegal", "baseline"): 10,
}


def expected_exit(name: str, config: str) -> int:
    """Exit code ``name`` must give on ``config``."""
    return EXPECTED_EXIT.get((name, config), 0)


def have_soc() -> bool:
    """True when the SoC generator (rvmpq.hw.soc) is installed, i.e. the RTL can be run."""
    return importlib.util.find_spec("rvmpq.hw.soc") is not None


def compiled(name: str, config: str, opt: str = "-O2") -> Path:
    """Compile directed program ``name`` for ``config`` into build/verif/programs/<config>/."""
    out = build_root() / "verif" / "programs" / config / f"{name}.elf"
    return compile_program([DIRECTED[name]], out, opt=opt, config=config)


def pick_seeds(fixed: list[int], n_random: int, label: str) -> list[int]:
    """Fixed seeds plus ``n_random`` fresh ones (``$RVMPQ_SEED`` replays one); prints them."""
    env = os.environ.get("RVMPQ_SEED")
    if env:
        seeds = [int(env)]
    else:
        sr = random.SystemRandom()
        seeds = list(fixed) + [sr.randrange(1 << 31) for _ in range(n_random)]
    print(f"{label}: seeds {seeds} (replay one with RVMPQ_SEED=<seed>)")
    return seeds
