"""``rvmpq verilog``: write the Verilog of the SIMD unit and of the simulation SoCs.

``rvmpq verilog [--all] [--target simd|soc-mpq|soc-baseline ...] [-o DIR]`` writes
``DIR/<target>.v`` and, for the SoC targets, the memory map ``DIR/<target>.json``
(:func:`rvmpq.hw.soc.soc_memory_map`, the dict ``rvmpq cc`` generates its linker script from; the
toolchain and the program runner call it directly and do not read this file). A file is
rewritten only when its content changed. ``DIR`` defaults to ``<build>/verilog``, ``<build>``
being :func:`rvmpq.sw.tools.build_root` (``$RVMPQ_BUILD``, else the checkout's ``build/``, or
``./build`` without a checkout).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rvmpq.sw.tools import BUILD_HELP, build_root

from .verilog import emit_verilog, write_if_changed

__all__ = ["TARGETS", "build_target", "add_arguments", "main"]

#: target -> (top module name, one-line description)
TARGETS: dict[str, tuple[str, str]] = {
    "simd": ("rvmpq_simd", "SimdMulUnit with every width and RV32M (docs/contracts.md 1)"),
    "soc-mpq": ("rvmpq_soc", "simulation SoC with the MPQ core (docs/contracts.md 5)"),
    "soc-baseline": ("rvmpq_soc", "simulation SoC with the baseline RV32IM core"),
}


class TargetUnavailable(RuntimeError):
    """A target's generator is not importable in this checkout."""


def build_target(target: str):
    """The component for a target name; raises ``ValueError`` for an unknown one."""
    if target == "simd":
        from .simd import SimdMulUnit
        return SimdMulUnit()
    if target in ("soc-mpq", "soc-baseline"):
        try:
            from rvmpq.hw.soc import SimSoC  # lazy: written separately, may be missing
        except ImportError as exc:
            raise TargetUnavailable(f"{target}: rvmpq.hw.soc is not available ({exc})") from exc
        return SimSoC(config=target.split("-", 1)[1])
    raise ValueError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``rvmpq verilog``."""
    parser.add_argument("--target", "-t", action="append", choices=sorted(TARGETS),
                        help="a design to write (repeatable)")
    parser.add_argument("--all", action="store_true",
                        help="every target (SoC targets are skipped with a note when "
                             "rvmpq.hw.soc cannot be imported)")
    # resolved when the parser is built (each `rvmpq verilog` run): follows $RVMPQ_BUILD
    parser.add_argument("-o", "--output", type=Path, default=build_root() / "verilog",
                        help=f"output folder (default: <build>/verilog, {BUILD_HELP})")


def main(args: argparse.Namespace) -> int:
    """Run ``rvmpq verilog``; returns the exit status."""
    targets = list(TARGETS) if args.all else list(dict.fromkeys(args.target or []))
    if not targets:
        print("rvmpq verilog: name a --target or use --all "
              f"(targets: {', '.join(TARGETS)})", file=sys.stderr)
        return 2
    status = 0
    for t in targets:
        try:
            top = build_target(t)
        except TargetUnavailable as exc:
            print(f"rvmpq verilog: skipping {exc}", file=sys.stderr)
            if not args.all:
                status = 1
            continue
        path = emit_verilog(top, TARGETS[t][0], args.output / f"{t}.v")
        print(path)
        if t.startswith("soc-"):
            from rvmpq.hw.soc import soc_memory_map
            mpath = args.output / f"{t}.json"
            write_if_changed(mpath, json.dumps(soc_memory_map(top), indent=2) + "\n")
            print(mpath)
    return status
