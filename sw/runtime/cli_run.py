"""``rvmpq run PROG.elf``: run a program on the Verilator model of the RTL.

Prints the program's console output as it arrives, then one line
``exit=<code> cycles=<n> instret=<n>``; the process exit status is the program's exit code
(low 8 bits, as a shell sees it), 124 when ``--max-cycles`` is reached first, 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys

from rvmpq.sw.runtime.elf import ElfError
from rvmpq.sw.runtime.runner import CONFIGS, DEFAULT_UNIT, UNITS, RunnerError, run_elf

__all__ = ["add_arguments", "main", "TIMEOUT_STATUS"]

#: Exit status when the cycle limit is reached (as timeout(1) does).
TIMEOUT_STATUS = 124


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``rvmpq run`` options."""
    parser.add_argument("elf", metavar="PROG.elf")
    parser.add_argument("--config", default="mpq", choices=CONFIGS)
    parser.add_argument("--signature", metavar="FILE",
                        help="write begin_signature..end_signature, one hex word per line")
    parser.add_argument("--unit", default=DEFAULT_UNIT, choices=UNITS,
                        help="description of the SIMD unit to simulate: words (default, "
                        "word-level, faster) or tree (the synthesized brick array); results and "
                        "cycle counts are identical (docs/runner.md)")
    parser.add_argument("--max-cycles", type=int, default=100_000_000, metavar="N")
    parser.add_argument("--trace", metavar="FILE", help="retired-instruction trace")
    parser.add_argument("--waves", metavar="FILE", help="waveform, .fst or .vcd by the suffix (separate, slower model; "
                        ".fst needs lz4.h on the system)")


def main(args: argparse.Namespace) -> int:
    """Run ``rvmpq run``; returns the process exit status."""
    try:
        res = run_elf(args.elf, config=args.config, max_cycles=args.max_cycles,
                      signature=args.signature or False, trace=args.trace or False,
                      waves=args.waves, echo=True, unit=args.unit)
    except (FileNotFoundError, ElfError, ValueError) as exc:
        print(f"rvmpq run: {exc}", file=sys.stderr)
        return 2
    except RunnerError as exc:
        print(f"rvmpq run: {exc}", file=sys.stderr)
        return 3
    if res.console and not res.console.endswith(b"\n"):
        print()  # the status line starts a line of its own
    sys.stdout.flush()
    if res.timed_out:
        print(f"exit=none cycles={res.cycles} instret={res.instret}")
        print(f"rvmpq run: {args.elf} did not exit within --max-cycles {args.max_cycles} "
              "(raise the limit, or check that the program ends with exit/ecall a7=93)",
              file=sys.stderr)
        return TIMEOUT_STATUS
    print(f"exit={res.exit_code} cycles={res.cycles} instret={res.instret}")
    return res.exit_code & 0xFF if res.exit_code & 0xFF or not res.exit_code else 1


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(prog="rvmpq run")
    add_arguments(p)
    sys.exit(main(p.parse_args()))
