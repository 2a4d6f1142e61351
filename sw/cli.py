"""The ``rvmpq`` command line: a thin layer over the library.

Each subcommand lives in the module that implements it; that module provides
``add_arguments(parser)`` and ``main(args) -> int``. Modules are imported lazily so that
``rvmpq --help`` is fast and one broken subsystem does not take the others down.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "verilog": ("rvmpq.hw.cli_verilog", "generate Verilog for the unit, the core or the SoC"),
    "isa": ("rvmpq.hw.cli_isa", "print the custom-instruction table (json | md | c)"),
    "synth": ("rvmpq.synth.cli", "synthesize with Yosys/nextpnr and compare designs"),
    "cc": ("rvmpq.sw.runtime.cc", "compile C/asm for the core with zig cc"),
    "run": ("rvmpq.sw.runtime.cli_run", "run an ELF on the Verilator model of the RTL"),
    "bench": ("rvmpq.sw.bench", "benchmarks (unit throughput, kernels, runner speed)"),
    "costs": ("rvmpq.sw.costs", "per-layer cost table measured on the RTL"),
    "search": ("rvmpq.sw.search.cli", "mixed-precision search under hardware budgets"),
    "deploy": ("rvmpq.sw.deploy", "build and run a searched network on the RTL"),
    "fpga": ("rvmpq.synth.fpga", "build the SoC bitstream for an ECP5 board"),
    "report": ("rvmpq.sw.report", "assemble <build>/report (Markdown + PNGs) from the flow's JSON"),
    "demo": ("rvmpq.sw.demo", "the main job on built-in defaults (make demo)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="rvmpq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=modname)
        if name != command:
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name and modname.startswith(exc.name):
                p.set_defaults(_missing=f"`rvmpq {name}` is not available in this version")
                continue
            raise
        mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rvmpq`` console script; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"rvmpq: {args._missing}", file=sys.stderr)
        return 2
    mod = importlib.import_module(args._module)
    try:
        return int(mod.main(args) or 0)
    except KeyboardInterrupt:
        print("rvmpq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
