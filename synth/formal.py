"""Formal proofs with Yosys ``sat``: each mode of the SIMD unit equals its reference for all inputs.

For one mode (held constant) a miter compares the design under test, a design with the flat
ports of :mod:`rvmpq.synth.designs` (``SimdMulUnit`` behind :class:`~rvmpq.synth.designs.SimdFlat`
by default), with a reference written here as plain Verilog expressions, independently of the
RTL: ``acc + sum_i $signed(lane_i(a)) * $signed(lane_i(b))`` with each lane widened by a sign bit
(or a zero bit when unsigned), ``a * b`` for MULLO and bits ``[63:32]`` of the 66-bit product
of the widened operands for MULHI. The reference result is delayed by the design's ``LATENCY``
and the proof is

    sat -seq LATENCY+1 -prove-skip LATENCY -prove ok 1

with a free initial state: whatever the pipeline held before, the result for the inputs of
step 1 must equal the reference at step ``LATENCY + 1``. A mode-specific proof on 16-bit lanes or
on the 32x32 product is often beyond SAT; every proof has a timeout and its outcome (``proved``,
``failed``, ``timeout``) and time go to ``formal.json``.

Sanity check: :func:`prove` with ``broken=True`` uses a reference that is off by one whenever
lane 0 of ``a`` is all ones; such a proof must come out ``failed`` (so a proof cannot pass
vacuously, e.g. with the output disconnected from the comparison).

Command line: ``python -m rvmpq.synth.formal [--design simd] [--proof dot4_ss ...]
[--timeout 60] [-o build/synth]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from rvmpq.hw.modes import WIDTHS, mode_const
from rvmpq.sw.tools import yosys_cmd
from rvmpq.synth.flow import write_if_changed

__all__ = ["ProofSpec", "ProofResult", "ALL_PROOFS", "FAST_PROOFS", "get_proof",
           "reference_verilog", "miter_verilog", "prove", "run_proofs", "main"]

OUTCOMES = ("proved", "failed", "timeout", "error")


@dataclasses.dataclass(frozen=True)
class ProofSpec:
    """One mode to prove.

    Attributes
    ----------
    op : str
        ``"dot"``, ``"mullo"`` or ``"mulhi"``.
    width : int
        Lane width for DOT (2, 4, 8, 16); ignored otherwise.
    a_signed, b_signed : bool
        Operand signedness (DOT lanes, MULHI operands).
    """

    op: str
    width: int = 8
    a_signed: bool = True
    b_signed: bool = True

    @property
    def name(self) -> str:
        """E.g. ``dot4_su`` (a signed, b unsigned), ``mulhi_uu``, ``mullo``."""
        sgn = ("s" if self.a_signed else "u") + ("s" if self.b_signed else "u")
        if self.op == "dot":
            return f"dot{self.width}_{sgn}"
        return "mullo" if self.op == "mullo" else f"mulhi_{sgn}"

    def mode_value(self) -> int:
        """The 8-bit ``MulMode`` pattern driven into the design."""
        return mode_const(self.op.upper(), self.width if self.op == "dot" else 8,
                          a_signed=self.a_signed, b_signed=self.b_signed)


def _all_proofs() -> list[ProofSpec]:
    sg = [(True, True), (True, False), (False, True), (False, False)]
    proofs = [ProofSpec("dot", w, sa, sb) for w in WIDTHS for sa, sb in sg]
    proofs.append(ProofSpec("mullo", 8, True, True))
    proofs += [ProofSpec("mulhi", 8, sa, sb) for sa, sb in [(True, True), (True, False),
                                                             (False, False)]]
    return proofs


#: Every mode: DOT for each width and signedness, MULLO, MULH / MULHSU / MULHU.
ALL_PROOFS: tuple[ProofSpec, ...] = tuple(_all_proofs())
#: Proofs that finish in seconds (run in CI).
FAST_PROOFS: tuple[ProofSpec, ...] = tuple(p for p in ALL_PROOFS if p.op == "dot" and p.width <= 4)


def get_proof(name: str) -> ProofSpec:
    """The proof called ``name``; ``KeyError`` naming the allowed names otherwise."""
    for p in ALL_PROOFS:
        if p.name == name:
            return p
    raise KeyError(f"unknown proof {name!r}; choose from {', '.join(p.name for p in ALL_PROOFS)}")


@dataclasses.dataclass
class ProofResult:
    """Outcome of one proof.

    Attributes
    ----------
    design, proof : str
        Design and proof names.
    outcome : str
        ``proved``, ``failed`` (counterexample found), ``timeout`` or ``error``.
    seconds : float
        Wall time of the Yosys run.
    timeout_s : float
        The time limit it ran under.
    broken_reference : bool
        True for the sanity check against a deliberately wrong reference.
    message : str
        Log file, and the counterexample or error text when there is one.
    """

    design: str
    proof: str
    outcome: str
    seconds: float
    timeout_s: float
    broken_reference: bool = False
    message: str = ""


# --------------------------------------------------------------------------------------------
# Verilog of the reference and the miter

def _ext(word: str, hi: int, signed: bool) -> str:
    return f"{word}[{hi}]" if signed else "1'b0"


def reference_verilog(p: ProofSpec, broken: bool = False, name: str = "ref_model") -> str:
    """The reference of one mode as a combinational Verilog module ``name(a, b, acc, result)``.

    Written from the contract (docs/contracts.md section 1), not from the RTL. With
    ``broken=True`` the result is off by one when ``a[1:0] == 2'b11`` (for the sanity check).
    """
    lines = [f"module {name}(input [31:0] a, input [31:0] b, input [31:0] acc, "
             "output [31:0] result);"]
    if p.op == "dot":
        w = p.width
        terms = []
        for i in range(32 // w):
            lo, hi = i * w, i * w + w - 1
            lines.append(f"  wire signed [31:0] p{i} = "
                         f"$signed({{{_ext('a', hi, p.a_signed)}, a[{hi}:{lo}]}}) * "
                         f"$signed({{{_ext('b', hi, p.b_signed)}, b[{hi}:{lo}]}});")
            terms.append(f"p{i}")
        lines.append(f"  wire [31:0] good = acc + {' + '.join(terms)};")
    elif p.op == "mullo":
        lines.append("  wire [31:0] good = a * b;")
    elif p.op == "mulhi":
        lines.append(f"  wire signed [65:0] prod = $signed({{{_ext('a', 31, p.a_signed)}, a}}) * "
                     f"$signed({{{_ext('b', 31, p.b_signed)}, b}});")
        lines.append("  wire [31:0] good = prod[63:32];")
    else:
        raise ValueError(f"operation {p.op!r} is not supported; choose dot, mullo or mulhi")
    if broken:
        lines.append("  assign result = (a[1:0] == 2'b11) ? good + 32'd1 : good;")
    else:
        lines.append("  assign result = good;")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def miter_verilog(dut_top: str, latency: int, mode_value: int) -> str:
    """Module ``miter(clk, a, b, acc, ok)``: ``ok`` = DUT result == reference delayed ``latency``.

    The DUT gets ``rst = 0`` and the constant ``mode``.
    """
    if latency < 1:
        raise ValueError(f"latency {latency} must be at least 1 (registered outputs)")
    lines = [
        "module miter(input clk, input [31:0] a, input [31:0] b, input [31:0] acc, output ok);",
        "  wire [31:0] dut_result, ref_result;",
        f"  {dut_top} dut(.clk(clk), .rst(1'b0), .mode(8'd{mode_value}), .a(a), .b(b), "
        ".acc(acc), .result(dut_result));",
        "  ref_model refm(.a(a), .b(b), .acc(acc), .result(ref_result));",
    ]
    prev = "ref_result"
    for i in range(1, latency + 1):
        lines.append(f"  reg [31:0] d{i};")
        lines.append(f"  always @(posedge clk) d{i} <= {prev};")
        prev = f"d{i}"
    lines.append(f"  assign ok = dut_result == {prev};")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# running proofs

def _design_verilog(spec, out: Path) -> tuple[Path, int]:
    """Write the DUT Verilog once per design; return (path, LATENCY)."""
    from rvmpq.synth.designs import emit_component_verilog
    if not spec.flat_ports:
        raise ValueError(f"design {spec.name!r} does not have the flat multiplier ports; "
                         "formal proofs need one of the multiplier designs")
    comp = spec.build()
    latency = int(comp.LATENCY)
    work = Path(out) / "formal" / spec.name
    path = work / "design.v"
    write_if_changed(path, emit_component_verilog(comp, spec.top))
    return path, latency


def prove(spec, proof: ProofSpec, out: Path, timeout: float = 60, broken: bool = False,
          _dut: tuple[Path, int] | None = None) -> ProofResult:
    """Prove one mode of one design.

    Parameters
    ----------
    spec : DesignSpec
        A design with flat ports (see :mod:`rvmpq.synth.designs`).
    proof : ProofSpec
        The mode.
    out : Path
        Output folder; files go to ``<out>/formal/<design>/<proof>[_broken].*``.
    timeout : float
        Seconds for the Yosys process (its ``sat -timeout`` is not enforced under WASI, so the
        process is killed).
    broken : bool
        Prove against a deliberately wrong reference (must come out ``failed``).

    Returns
    -------
    ProofResult
    """
    out = Path(out)
    dut_path, latency = _dut or _design_verilog(spec, out)
    work = dut_path.parent
    stem = proof.name + ("_broken" if broken else "")
    write_if_changed(work / f"{stem}_miter.v",
                     reference_verilog(proof, broken) + miter_verilog(spec.top, latency,
                                                                      proof.mode_value()))
    script = "\n".join([
        "read_verilog -sv design.v",
        f"read_verilog -sv {stem}_miter.v",
        "hierarchy -top miter",
        "proc; flatten; opt_clean",
        "dffunmap",
        "opt_expr; opt_clean",
        f"sat -seq {latency + 1} -prove-skip {latency} -prove ok 1 -timeout {int(timeout)} "
        "-show-inputs -show-outputs",
        "",
    ])
    write_if_changed(work / f"{stem}.ys", script)
    log = work / f"{stem}.log"
    if log.exists():
        log.unlink()
    t0 = time.monotonic()
    res = ProofResult(spec.name, proof.name, "error", 0.0, timeout, broken, str(log))
    try:
        proc = subprocess.run(yosys_cmd() + ["-q", "-l", f"{stem}.log", f"{stem}.ys"], cwd=work,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        res.outcome, res.seconds = "timeout", round(time.monotonic() - t0, 2)
        return res
    res.seconds = round(time.monotonic() - t0, 2)
    text = log.read_text(errors="replace") if log.exists() else ""
    if "TIMEOUT" in text:
        res.outcome = "timeout"
    elif re.search(r"SAT proof finished - no model found: SUCCESS", text):
        res.outcome = "proved"
    elif re.search(r"SAT proof finished - model found: FAIL", text):
        res.outcome = "failed"
        cex = text[text.index("SAT proof finished - model found"):]
        res.message = f"{log}\n{cex[:3000]}"
    else:
        errs = [ln for ln in text.splitlines() if "ERROR" in ln]
        res.message = f"{log}\n" + ("\n".join(errs[:5]) or text[-800:]) + proc.stderr[-500:]
    return res


def run_proofs(spec, proofs: Sequence[ProofSpec], out: Path, timeout: float = 60,
               jobs: int = 2, sanity: bool = True,
               progress: Callable[[str], None] | None = print) -> list[ProofResult]:
    """Run several proofs of one design in parallel and write ``<out>/formal.json``.

    Parameters
    ----------
    spec : DesignSpec
    proofs : sequence of ProofSpec
    out : Path
    timeout : float
        Per proof.
    jobs : int
        Yosys processes at the same time.
    sanity : bool
        Also run the first proof against a broken reference (expected outcome ``failed``).
    progress : callable, optional
        One line per finished proof.

    Returns
    -------
    list of ProofResult
        In the order of ``proofs`` (the sanity check last).
    """
    say = progress or (lambda _line: None)
    out = Path(out)
    dut = _design_verilog(spec, out)
    todo = [(p, False) for p in proofs]
    if sanity and proofs:
        todo.append((proofs[0], True))
    results: dict[int, ProofResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {pool.submit(prove, spec, p, out, timeout, broken, dut): i
                for i, (p, broken) in enumerate(todo)}
        for n, fut in enumerate(as_completed(futs), 1):
            r = fut.result()
            results[futs[fut]] = r
            tag = " (broken reference, must fail)" if r.broken_reference else ""
            say(f"[{n}/{len(todo)}] {r.design} {r.proof:<10} {r.outcome:<8} {r.seconds:7.1f} s{tag}")
    ordered = [results[i] for i in range(len(todo))]
    write_formal_json(ordered, out / "formal.json")
    return ordered


def write_formal_json(results: Iterable[ProofResult], path: Path) -> Path:
    """Write (atomically) the proof records, merged with those already in ``path``."""
    path = Path(path)
    old = []
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("proofs", [])
        except (ValueError, AttributeError):
            old = []
    new = [dataclasses.asdict(r) for r in results]
    keys = {(r["design"], r["proof"], r["broken_reference"]) for r in new}
    merged = [r for r in old if (r.get("design"), r.get("proof"), r.get("broken_reference"))
              not in keys] + new
    write_if_changed(path, json.dumps({"schema": 1, "proofs": merged}, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m rvmpq.synth.formal``: 0 when every proof is proved and the sanity check
    failed as it must, 1 otherwise (timeouts included), 2 on bad input."""
    from rvmpq.sw.tools import ToolNotFound, build_root
    from rvmpq.synth.designs import get_design

    ap = argparse.ArgumentParser(prog="python -m rvmpq.synth.formal",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--design", default="simd", help="design to prove (default: simd)")
    ap.add_argument("--proof", action="append", metavar="NAME",
                    help="proof to run (repeatable; default: all): "
                         + ", ".join(p.name for p in ALL_PROOFS))
    ap.add_argument("--fast", action="store_true", help="only the fast proofs (INT2 and INT4)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per proof (default 60)")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("-o", "--out", type=Path, default=None, help="default: build/synth")
    args = ap.parse_args(argv)
    try:
        spec = get_design(args.design)
        proofs = ([get_proof(n) for n in args.proof] if args.proof
                  else list(FAST_PROOFS if args.fast else ALL_PROOFS))
        results = run_proofs(spec, proofs, args.out or build_root() / "synth", args.timeout,
                             args.jobs)
    except (KeyError, ValueError) as exc:
        print(f"formal: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except ToolNotFound as exc:
        print(f"formal: {exc}", file=sys.stderr)
        return 2
    ok = all((r.outcome == "failed") if r.broken_reference else (r.outcome == "proved")
             for r in results)
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
