"""``rvmpq isa``: print or write the custom-instruction table as JSON, Markdown or a C header."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import isa
from .verilog import write_if_changed

FORMATS = {"json": isa.to_json, "md": isa.to_markdown, "c": isa.to_c_header}


def render(fmt: str) -> str:
    """The table in format ``fmt`` (``json``, ``md`` or ``c``); ``ValueError`` otherwise."""
    try:
        return FORMATS[fmt]()
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rvmpq isa``."""
    parser.add_argument("--format", "-f", choices=sorted(FORMATS), default="md",
                        help="output format (default: md)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="write to this file (only if its content changed) instead of stdout")


def main(args: argparse.Namespace) -> int:
    """Run ``rvmpq isa``."""
    text = render(args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        changed = write_if_changed(args.output, text)
        print(f"{args.output}: {'written' if changed else 'unchanged'}", file=sys.stderr)
    return 0
