"""``rvmpq synth``: synthesize designs with Yosys / nextpnr and compare them.

Examples::

    rvmpq synth --compare -o build/synth                     # all designs, generic + ECP5
    rvmpq synth --compare --liberty ../shared/pdk/sky130_fd_sc_hd__tt_025C_1v80.lib.gz
    rvmpq synth --design mul16 --target generic
    rvmpq synth --list
    rvmpq synth --formal --fast                    # prove the INT2 modes (+ a must-fail check)

``--compare`` writes ``compare.json`` and ``compare.md`` into the output folder and prints the
Markdown table; ``--design NAME`` writes ``NAME.json`` / ``NAME.md``; ``--formal`` runs
:mod:`rvmpq.synth.formal` and writes ``formal.json`` / ``formal.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "main", "run"]

TARGET_CHOICES = ("generic", "ecp5", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``rvmpq synth`` options to ``parser``."""
    from rvmpq.sw.tools import BUILD_HELP

    what = parser.add_mutually_exclusive_group()
    what.add_argument("--compare", action="store_true",
                      help="synthesize every available design and print the comparison table")
    what.add_argument("--design", action="append", metavar="NAME",
                      help="synthesize this design (repeatable); see --list")
    what.add_argument("--config", action="append", metavar="NAME",
                      help="synthesize this core configuration (repeatable: baseline, mpq), "
                           "i.e. the design core-NAME; two give the side-by-side table")
    what.add_argument("--list", action="store_true", help="list the available designs")
    what.add_argument("--formal", action="store_true",
                      help="prove every mode of the SIMD unit equal to its reference "
                           "(writes formal.json / formal.md); see --proof, --formal-timeout")
    parser.add_argument("--target", choices=TARGET_CHOICES, default="all",
                        help="generic gates, ECP5 place-and-route, or both (default: all)")
    parser.add_argument("--liberty", type=Path, metavar="PATH",
                        help="Liberty file (.lib or .lib.gz) for the standard-cell area in um^2")
    parser.add_argument("--dsp", action="store_true",
                        help="let ECP5 use its DSP blocks (default: multipliers in LUTs, -nodsp)")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help=f"output folder (default: <build>/synth, {BUILD_HELP})")
    parser.add_argument("-j", "--jobs", type=int, default=2,
                        help="tool runs in parallel (default: 2)")
    formal = parser.add_argument_group("formal proofs (--formal)")
    formal.add_argument("--proof", action="append", metavar="NAME",
                        help="prove only this mode (repeatable), e.g. dot2_ss, dot4_su, mulhi_uu "
                             "(default: every mode)")
    formal.add_argument("--fast", action="store_true",
                        help="only the fast proofs (the INT2 modes, about 10 s of CPU each)")
    formal.add_argument("--formal-timeout", type=float, default=600, metavar="S",
                        help="seconds per proof before it is recorded as a timeout (default: 600)")
    formal.add_argument("--method", choices=("bdd", "cec", "sat"), default="bdd",
                        help="proof engine: ABC BDDs (default), ABC &cec, or Yosys sat")


def run(names: list[str] | None, out: Path, target: str = "all", liberty: Path | None = None,
        dsp: bool = False, jobs: int = 2, stem: str | None = None, progress=print):
    """Synthesize designs and write the reports; the library call behind ``rvmpq synth``.

    Parameters
    ----------
    names : list of str or None
        Design names; ``None`` for every available design.
    out : Path
        Output folder.
    target : {"generic", "ecp5", "all"}
    liberty : Path, optional
    dsp : bool
    jobs : int
    stem : str, optional
        Report file stem (default ``compare`` for all designs, else the joined names).

    Returns
    -------
    (list of SynthResult, Path, Path)
        The results and the JSON / Markdown report paths.
    """
    from rvmpq.synth.designs import available_designs, get_design
    from rvmpq.synth.flow import synthesize
    from rvmpq.synth.report import write_reports

    if target not in TARGET_CHOICES:
        raise ValueError(f"target {target!r} is not supported; choose one of {TARGET_CHOICES}")
    targets = ["generic", "ecp5"] if target == "all" else [target]
    specs = list(available_designs().values()) if names is None else [get_design(n) for n in names]
    if stem is None:
        stem = "compare" if names is None else "_".join(names)
    results = synthesize(specs, out, targets=targets, liberty=liberty, dsp=dsp, jobs=jobs,
                         progress=progress)
    js, md = write_reports(results, out, stem)
    return results, js, md


def main(args: argparse.Namespace) -> int:
    """Run ``rvmpq synth``; returns 0 when every step succeeded, 1 otherwise, 2 on bad input."""
    from rvmpq.sw.tools import ToolNotFound, build_root
    from rvmpq.synth.designs import available_designs

    if args.list:
        for name, spec in available_designs().items():
            print(f"{name:<12} {spec.description}")
        return 0
    if getattr(args, "formal", False):
        from rvmpq.synth.formal import run_cli
        return run_cli("simd", args.proof, args.fast, args.method, args.formal_timeout,
                       args.jobs, args.out or build_root() / "synth", "rvmpq synth --formal")
    configs = getattr(args, "config", None) or []
    if configs:
        from rvmpq.hw.core.config import CONFIGS
        bad = [c for c in configs if c not in CONFIGS]
        if bad:
            print(f"rvmpq synth: unknown core configuration {bad[0]!r}; choose one of "
                  f"{sorted(CONFIGS)}", file=sys.stderr)
            return 2
        args.design = [f"core-{c}" for c in configs]
    if not args.compare and not args.design:
        print("rvmpq synth: give --compare, --design NAME, --config NAME, --formal or --list",
              file=sys.stderr)
        return 2
    out = args.out or build_root() / "synth"
    names = None if args.compare else args.design
    n = len(available_designs()) if names is None else len(names)
    print(f"rvmpq synth: {n} design(s), target {args.target}"
          f"{', liberty ' + str(args.liberty) if args.liberty else ''} -> {out}", flush=True)
    try:
        results, js, md = run(names, out, args.target, args.liberty, args.dsp, args.jobs,
                              progress=lambda line: print(line, flush=True))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"rvmpq synth: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except ToolNotFound as exc:
        print(f"rvmpq synth: {exc}", file=sys.stderr)
        return 2
    print()
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 1 if any(r.errors for r in results) else 0
