"""``rvmpq demo``: the main job on built-in defaults, one step after another with progress.

Each step is an ordinary ``rvmpq`` subcommand run in-process, so the demo does nothing a user
cannot do by hand; the step list below is the documentation of the flow. Every output lands
under ``build/``; ``build/demo/summary.md`` collects the step timings.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rvmpq.sw.tools import build_root


@dataclass(frozen=True)
class Step:
    """One demo step: a title and the ``rvmpq`` argument vector that performs it."""

    title: str
    argv: tuple[str, ...]


def demo_steps(build: Path, quick: bool = False) -> list[Step]:
    """The demo's steps, in order, writing under ``build``."""
    steps = [
        Step("generate Verilog (unit, SoC in both configurations)",
             ("verilog", "--all", "-o", str(build / "verilog"))),
        Step("benchmark the SIMD unit on Verilator (ops/cycle per mode)",
             ("bench", "--only", "unit", "-o", str(build / "bench"))),
        Step("synthesize and compare: our unit vs plain and separate multipliers",
             ("synth", "--compare", "-o", str(build / "synth"))
             + (("--target", "generic") if quick else ())),
    ]
    return steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rvmpq demo``."""
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="build folder (default: build/ or $RVMPQ_BUILD)")
    parser.add_argument("--quick", action="store_true",
                        help="skip the slow place-and-route runs")
    parser.add_argument("--keep-going", action="store_true",
                        help="run the remaining steps after a failed one")


def main(args: argparse.Namespace) -> int:
    """Run the demo steps; return non-zero if any step failed."""
    from rvmpq.sw.cli import main as rvmpq_main

    build = (args.output or build_root()).resolve()
    steps = demo_steps(build, quick=args.quick)
    rows: list[tuple[str, str, float]] = []
    t_all = time.monotonic()
    failed = 0
    for n, step in enumerate(steps, 1):
        print(f"\n== [{n}/{len(steps)}] {step.title}\n   $ rvmpq {' '.join(step.argv)}", flush=True)
        t0 = time.monotonic()
        try:
            rc = rvmpq_main(list(step.argv))
        except Exception as exc:  # a failing step is reported, not hidden
            print(f"   step failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            rc = 1
        dt = time.monotonic() - t0
        rows.append((step.title, "ok" if rc == 0 else f"failed ({rc})", dt))
        print(f"   -> {'ok' if rc == 0 else 'FAILED'} in {dt:.1f} s", flush=True)
        if rc != 0:
            failed += 1
            if not args.keep_going:
                break
    total = time.monotonic() - t_all
    out = build / "demo"
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# rvmpq demo", "", "| step | result | seconds |", "|---|---|---:|"]
    lines += [f"| {t} | {r} | {s:.1f} |" for t, r, s in rows]
    lines += ["", f"Total: {total:.1f} s"]
    tmp = out / "summary.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "summary.md")
    print("\n" + "\n".join(lines))
    return 1 if failed else 0
