"""``rvmpq demo``: the main job on built-in defaults, one step after another with progress.

Each step is an ordinary ``rvmpq`` subcommand run in-process, so the demo does nothing a user
cannot do by hand; the step list in :func:`demo_steps` is the documentation of the flow:

1. generate the Verilog (SIMD unit, SoC in both configurations);
2. benchmark the SIMD unit on Verilator;
3. measure the per-layer cost table of the built-in model on the RTL;
4. train (or load) the model and run every search method under the demo budget;
5. deploy the chosen configuration: run it on the RTL, bit-exact against the integer model;
6. the Edge-MPQ kernel speedup benchmark (baseline core vs mpq core);
7. synthesize the unit, the reference multipliers and both core configurations;
8. assemble ``build/report/`` (Markdown + PNGs) with ``rvmpq report``.

Every step output lands under the build folder (``-o``; default :func:`rvmpq.sw.tools.build_root`:
``$RVMPQ_BUILD``, else the checkout's ``build/`` (``./build`` without a checkout), written ``build/`` below);
``build/demo/summary.md`` collects the step timings.

Caching: a step whose inputs did not change since its last successful run is skipped. Its key
is a hash of its argument vector and of the source files it depends on (``Step.deps``); the
key is stored in ``build/demo/stamps/`` when the step succeeds, and the step's outputs
(``Step.outputs``) must still exist. ``--force`` reruns everything.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rvmpq.sw.tools import BUILD_HELP, build_root

#: Repository root (the ``rvmpq`` package root).
ROOT = Path(__file__).resolve().parents[1]
#: The built-in model and budget of the demo.
DEMO_MODEL = "digits-cnn"
DEMO_BUDGET = "latency=0.5"
#: Source suffixes that make up a step's inputs.
_SRC_SUFFIXES = {".py", ".c", ".h", ".S", ".cpp", ".v", ".toml", ".ld"}


@dataclass(frozen=True)
class Step:
    """One demo step: a title, the ``rvmpq`` argument vector that performs it, the source
    folders/files (relative to the repository root) its result depends on, and the files it
    writes (checked before a cached step is skipped); ``always`` steps are never skipped."""

    title: str
    argv: tuple[str, ...]
    deps: tuple[str, ...] = ("hw", "sw", "synth", "pyproject.toml")
    outputs: tuple[Path, ...] = field(default_factory=tuple)
    always: bool = False

    def key(self) -> str:
        """Hash of the argument vector and the dependency sources."""
        h = hashlib.sha256("\0".join(self.argv).encode())
        for dep in self.deps:
            p = ROOT / dep
            files = sorted(f for f in p.rglob("*") if f.suffix in _SRC_SUFFIXES) \
                if p.is_dir() else [p]
            for f in files:
                if f.is_file() and "__pycache__" not in f.parts:
                    h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f).encode())
                    h.update(f.read_bytes())
        return h.hexdigest()


def demo_steps(build: Path, quick: bool = False) -> list[Step]:
    """The demo's steps, in order, writing under ``build``.

    ``quick`` keeps every step but skips ECP5 place-and-route and runs the kernel benchmark
    on the Edge-MPQ conv layer only.
    """
    cfg = build / "search" / "config.json"
    hw_only = ("hw", "sw/tools.py", "pyproject.toml")
    sim = hw_only + ("sw/runtime", "sw/golden.py", "sw/bench.py")
    kern = sim + ("sw/kernels", "sw/search/qnn.py", "sw/search/costs_api.py", "sw/costs.py")
    steps = [
        Step("generate Verilog (unit, SoC in both configurations)",
             ("verilog", "--all", "-o", str(build / "verilog")), deps=hw_only),
        Step("benchmark the SIMD unit on Verilator (ops/cycle per mode)",
             ("bench", "--only", "unit", "-o", str(build / "bench")), deps=sim,
             outputs=(build / "bench" / "unit.json",)),
        Step(f"measure the per-layer cost table of {DEMO_MODEL} on the RTL",
             ("costs", "--model", DEMO_MODEL, "--json", str(build / "costs" / f"{DEMO_MODEL}.json")),
             deps=kern, outputs=(build / "costs" / f"{DEMO_MODEL}.json",)),
        Step(f"train/load {DEMO_MODEL}, run every search method ({DEMO_BUDGET} of INT8)",
             ("search", "--model", DEMO_MODEL, "--costs", "rtl", "--method", "all",
              "--budget", DEMO_BUDGET, "-o", str(build / "search")),
             outputs=(cfg, build / "search" / "pareto.png")),
        Step("deploy the chosen configuration on the RTL (bit-exact vs the integer model)",
             ("deploy", str(cfg), "-o", str(build / "deploy")),
             outputs=(build / "deploy" / "deploy.json",)),
        Step("kernel speedup benchmark: baseline core vs mpq core"
             + (" (Edge-MPQ conv only)" if quick else ""),
             ("bench", "--only", "kernels", "-o", str(build / "bench"))
             + (("--quick",) if quick else ()), deps=kern,
             outputs=(build / "bench" / "kernels.json",)),
        Step("synthesize: unit vs plain and separate multipliers, both core configurations"
             + (" (generic gates only)" if quick else ""),
             ("synth", "--compare", "-o", str(build / "synth"))
             + (("--target", "generic") if quick else ()),
             deps=("hw", "synth", "sw/tools.py", "pyproject.toml"),
             outputs=(build / "synth" / "compare.json",)),
        Step("write the report (build/report/)",
             ("report", "-b", str(build), "-o", str(build / "report")), always=True),
    ]
    return steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rvmpq demo``."""
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help=f"build folder of the step outputs (default: <build>; {BUILD_HELP})")
    parser.add_argument("--quick", action="store_true",
                        help="skip the slow place-and-route runs; kernel benchmark on one layer")
    parser.add_argument("--keep-going", action="store_true",
                        help="run the remaining steps after a failed one")
    parser.add_argument("--force", action="store_true",
                        help="rerun every step, even those whose inputs did not change")


def main(args: argparse.Namespace) -> int:
    """Run the demo steps; return non-zero if any step failed."""
    from rvmpq.sw.cli import main as rvmpq_main

    build = (args.output or build_root()).resolve()
    steps = demo_steps(build, quick=args.quick)
    stamps = build / "demo" / "stamps"
    rows: list[tuple[str, str, float]] = []
    t_all = time.monotonic()
    failed = 0
    for n, step in enumerate(steps, 1):
        print(f"\n== [{n}/{len(steps)}] {step.title}\n   $ rvmpq {' '.join(step.argv)}", flush=True)
        stamp = stamps / f"{n}.key"
        key = step.key()
        if (not getattr(args, "force", False) and not step.always and stamp.exists() and stamp.read_text() == key
                and all(p.exists() for p in step.outputs)):
            print("   -> cached (inputs unchanged since the last successful run)", flush=True)
            rows.append((step.title, "cached", 0.0))
            continue
        t0 = time.monotonic()
        try:
            rc = rvmpq_main(list(step.argv))
        except SystemExit as exc:  # argparse errors exit; the demo goes on reporting
            rc = exc.code if isinstance(exc.code, int) else 1
        except Exception as exc:  # a failing step is reported, not hidden
            print(f"   step failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            rc = 1
        dt = time.monotonic() - t0
        rows.append((step.title, "ok" if rc == 0 else f"failed ({rc})", dt))
        print(f"   -> {'ok' if rc == 0 else 'FAILED'} in {dt:.1f} s", flush=True)
        if rc == 0:
            stamps.mkdir(parents=True, exist_ok=True)
            stamp.write_text(key)
        else:
            stamp.unlink(missing_ok=True)
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
