"""Formal proofs: each mode of the SIMD unit equals its reference for all inputs.

For one mode a miter compares the design under test (``SimdMulUnit`` behind
:class:`~rvmpq.synth.designs.SimdFlat` by default) with a reference written here as plain
Verilog expressions, independently of the RTL: ``acc + sum_i lane_i(a) * lane_i(b)`` with each
lane widened by a sign bit (or a zero bit when unsigned), ``a * b`` for MULLO and bits ``[63:32]``
of the 66-bit product of the widened operands for MULHI.

How a proof runs (:func:`prove`):

1. **Cut the pipeline** (:func:`cut_registers`, once per design). The design is flattened with
   ``rst = 0``, the always-true enables fold away, and a register-depth check walks the netlist:
   every cell must see inputs that crossed the same number of registers, and every ``result``
   bit exactly ``LATENCY``. A design that passes is a balanced feed-forward pipeline, so its
   result at cycle ``t + LATENCY`` is one combinational function of the inputs of cycle ``t``;
   the registers are then replaced by wires (``dut_comb.json``). A pipeline skew (a stage that
   reads a value one cycle too early or late) fails this check instead of slipping through.
2. **Tie the mode**: the miter drives the mode as a constant and Yosys ``opt; memory; opt``
   removes the logic of every other mode, so each proof sees one mode's logic only.
3. **Prove** the single miter output ``bad = dut != ref`` is 0 for all 96 input bits, with one of
   :data:`METHODS`:

   ``bdd`` (default)
       ABC ``collapse`` builds the global BDD of ``bad`` (canonical, so ``bad`` is proved 0 exactly
       when the result is the constant-0 AIG that ABC writes back; any other result is a
       counterexample and ``failed``). The initial variable order is the miter's port order,
       lane ``i`` of ``a`` and ``b`` together, then ``acc`` (:func:`miter_verilog`), with ABC's
       dynamic reordering on. BDDs handle the INT2 adder trees in seconds, where SAT and ABC
       ``&cec`` time out; the carry-save trees of the wider lanes blow them up.
   ``cec``
       ABC ``&cec -m`` (SAT sweeping) on the miter.
   ``sat``
       Yosys ``sat -prove bad 0`` (MiniSat) on the miter.

Every proof has a timeout; its outcome (``proved``, ``failed``, ``timeout``, ``error``), method and
time go to ``formal.json`` and ``formal.md``.

Sanity check: :func:`prove` with ``broken=True`` uses a reference that is off by one whenever
``a[1:0] == 2'b11``; such a proof must come out ``failed`` (so a proof cannot pass vacuously).

Command line: ``rvmpq synth --formal [--proof dot4_ss ...] [--formal-timeout 600]`` or
``python -m rvmpq.synth.formal [--proof NAME ...] [--timeout S] [--method bdd]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from rvmpq.hw.modes import WIDTHS, mode_const
from rvmpq.sw.tools import BUILD_HELP, yosys_cmd
from rvmpq.synth.flow import write_if_changed

__all__ = ["ProofSpec", "ProofResult", "ALL_PROOFS", "FAST_PROOFS", "METHODS", "get_proof",
           "reference_verilog", "miter_verilog", "cut_registers", "prove", "run_proofs",
           "write_formal_json", "write_formal_md", "main"]

OUTCOMES = ("proved", "failed", "timeout", "error")
#: Proof engines (see the module docstring).
METHODS = ("bdd", "cec", "sat")


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
#: Proofs that finish in well under a minute each on one core (run by ``make test``).
FAST_PROOFS: tuple[ProofSpec, ...] = tuple(p for p in ALL_PROOFS if p.op == "dot" and p.width == 2)


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
        Wall time of the proof (cutting the registers, once per design, not included).
    timeout_s : float
        The time limit it ran under.
    broken_reference : bool
        True for the sanity check against a deliberately wrong reference.
    message : str
        Log file, and the counterexample or error text when there is one.
    method : str
        Proof engine, one of :data:`METHODS`.
    cpu_s : float or None
        CPU seconds of the Yosys process (None on timeout); on a busy machine a fairer figure
        than the wall time.
    """

    design: str
    proof: str
    outcome: str
    seconds: float
    timeout_s: float
    broken_reference: bool = False
    message: str = ""
    method: str = "bdd"
    cpu_s: float | None = None


# --------------------------------------------------------------------------------------------
# Verilog of the reference and the miter

def _ext(word: str, hi: int, signed: bool) -> str:
    return f"{word}[{hi}]" if signed else "1'b0"


def reference_verilog(p: ProofSpec, broken: bool = False, name: str = "ref_model") -> str:
    """The reference of one mode as a combinational Verilog module ``name(a, b, acc, result)``.

    Written from the contract (docs/contracts.md section 1), not from the RTL. Each lane product
    is computed at its exact width (``(w+1) x (w+1) -> 2w+2`` bits, signed) and sign-extended
    into the 32-bit sum. With ``broken=True`` the result is off by one when ``a[1:0] == 2'b11``
    (for the sanity check).
    """
    lines = [f"module {name}(input [31:0] a, input [31:0] b, input [31:0] acc, "
             "output [31:0] result);"]
    if p.op == "dot":
        w = p.width
        terms = []
        for i in range(32 // w):
            lo, hi = i * w, i * w + w - 1
            lines.append(f"  wire signed [{2 * w + 1}:0] p{i} = "
                         f"$signed({{{_ext('a', hi, p.a_signed)}, a[{hi}:{lo}]}}) * "
                         f"$signed({{{_ext('b', hi, p.b_signed)}, b[{hi}:{lo}]}});")
            terms.append(f"p{i}")
        # all operands signed: each product is sign-extended to the (>= 32-bit) sum width
        lines.append(f"  wire [31:0] good = $signed(acc) + {' + '.join(terms)};")
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


def _lane_width(p: ProofSpec) -> int:
    """Bits per operand group in the miter's input order: the lane width for DOT, 1 (``a`` and
    ``b`` bits interleaved) for the 32x32 products."""
    return p.width if p.op == "dot" else 1


def miter_verilog(dut_module: str, mode_value: int, lane_width: int = 1) -> str:
    """Module ``miter(a0, b0, a1, b1, ..., acc, bad)``: ``bad`` = DUT result != reference.

    The operands come in as ``32 // lane_width`` slices per operand, lane ``i`` of ``a`` next to
    lane ``i`` of ``b`` and ``acc`` last: the port order is the BDD variable order of the
    ``bdd`` method (each lane's product is built before the next lane is read, the sum never
    has to remember more than a partial sum). ``dut_module`` is the register-cut design (ports
    ``clk``, ``mode``, ``a``, ``b``, ``acc``, ``result``, see :func:`cut_registers`); it gets the
    constant ``mode``.
    """
    if not 0 <= mode_value < 256:
        raise ValueError(f"mode value {mode_value} must be an 8-bit MulMode pattern (0..255)")
    if lane_width not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"lane width {lane_width} must divide 32 (1, 2, 4, 8, 16 or 32)")
    n = 32 // lane_width
    ports = [f"input [{lane_width - 1}:0] {x}{i}" for i in range(n) for x in "ab"]
    cat = {x: "{" + ", ".join(f"{x}{i}" for i in reversed(range(n))) + "}" for x in "ab"}
    return "\n".join([
        f"module miter({', '.join(ports)}, input [31:0] acc, output bad);",
        f"  wire [31:0] a = {cat['a']};",
        f"  wire [31:0] b = {cat['b']};",
        "  wire [31:0] dut_result, ref_result;",
        f"  {dut_module} dut(.clk(1'b0), .mode(8'd{mode_value}), .a(a), .b(b), .acc(acc), "
        ".result(dut_result));",
        "  ref_model refm(.a(a), .b(b), .acc(acc), .result(ref_result));",
        "  assign bad = dut_result != ref_result;",
        "endmodule",
    ]) + "\n"


# --------------------------------------------------------------------------------------------
# cutting the pipeline registers

class CutError(ValueError):
    """The design is not a balanced feed-forward pipeline, so its registers cannot be cut."""


_CPU_WRAPPER = ("import resource, subprocess, sys\n"
                "r = subprocess.run(sys.argv[1:])\n"
                "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
                "print(f'RVMPQ_CPU_S {u.ru_utime + u.ru_stime:.2f}', file=sys.stderr)\n"
                "sys.exit(r.returncode)\n")


def _run_yosys(args: list[str], cwd: Path, timeout: float | None = None):
    """Run Yosys in its own process group (killed whole on timeout); the returned object has
    ``returncode``, ``stdout``, ``stderr`` and ``cpu_s`` (CPU seconds of Yosys, or None)."""
    import os
    import signal
    cmd = [sys.executable, "-c", _CPU_WRAPPER] + yosys_cmd() + args
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()
        raise
    except BaseException:          # e.g. Ctrl-C: leave no Yosys behind
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise
    m = re.search(r"RVMPQ_CPU_S ([0-9.]+)", err)
    return argparse.Namespace(returncode=p.returncode, stdout=out, stderr=err,
                              cpu_s=float(m.group(1)) if m else None)


def _check_depths(mod: dict, latency: int) -> None:
    """Raise :class:`CutError` unless every cell's inputs crossed the same number of registers
    and every ``result`` bit crossed ``latency`` of them (constants match any depth)."""
    inputs = {b for p in mod["ports"].values() if p["direction"] == "input" for b in p["bits"]}
    driver: dict[int, tuple[str, dict]] = {}
    for cname, cell in mod["cells"].items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if dirs.get(port) == "output":
                for i, b in enumerate(bits):
                    if isinstance(b, int):
                        driver[b] = (cname, cell, port, i)
    depth: dict[int, int | None] = {b: 0 for b in inputs}
    visiting: set[int] = set()

    def cell_inputs(cell: dict) -> list:
        dirs = cell.get("port_directions", {})
        return [b for port, bits in cell["connections"].items() if dirs.get(port) == "input"
                for b in bits if isinstance(b, int)]

    def solve(root: int) -> int | None:
        stack = [root]
        while stack:
            b = stack[-1]
            if b in depth:
                stack.pop()
                continue
            if b not in driver:           # undriven (x)
                depth[b] = None
                stack.pop()
                continue
            cname, cell, port, idx = driver[b]
            if cell["type"] == "$dff":
                deps = [cell["connections"]["D"][idx]]
                deps = [d for d in deps if isinstance(d, int)]
            else:
                deps = cell_inputs(cell)
            todo = [d for d in deps if d not in depth]
            if todo:
                if b in visiting:
                    raise CutError(f"combinational or register loop through cell {cname}")
                visiting.add(b)
                stack.extend(todo)
                continue
            visiting.discard(b)
            ds = {depth[d] for d in deps} - {None}
            if len(ds) > 1:
                raise CutError(f"cell {cname} ({cell['type']}) mixes values that crossed "
                               f"{sorted(ds)} registers: the pipeline is not balanced")
            d = ds.pop() if ds else None
            if cell["type"] == "$dff" and d is not None:
                d += 1
            depth[b] = d
            stack.pop()
        return depth[root]

    for b in mod["ports"]["result"]["bits"]:
        if isinstance(b, int):
            d = solve(b)
            if d is not None and d != latency:
                raise CutError(f"a result bit crossed {d} registers, LATENCY is {latency}")
    # every register must be on a balanced path too (not only those feeding result)
    for cell in mod["cells"].values():
        if cell["type"] == "$dff":
            for b in cell["connections"]["Q"]:
                if isinstance(b, int):
                    solve(b)


def cut_registers(design_v: Path, top: str, latency: int, out_json: Path,
                  module: str = "dut_comb") -> int:
    """Turn the pipelined design into one combinational module (registers replaced by wires).

    The design is flattened with ``rst = 0``; its enables must fold to constants (the flat
    wrappers hold ``valid``/``ready`` at 1). Then :func:`_check_depths` proves that the netlist
    is a balanced pipeline of ``latency`` stages, which makes the cut sound.

    Parameters
    ----------
    design_v : Path
        Verilog of the design (top ``top`` with ports ``clk``, ``rst``, ``mode``, ``a``, ``b``,
        ``acc``, ``result``).
    top : str
        Its top module.
    latency : int
        The design's ``LATENCY``.
    out_json : Path
        Where the Yosys JSON netlist of module ``module`` goes.

    Returns
    -------
    int
        The number of register bits removed.

    Raises
    ------
    CutError
        When a register has an enable or reset left, or the pipeline is not balanced.
    """
    work = Path(design_v).parent
    wrap = work / "cutwrap.v"
    write_if_changed(wrap, "\n".join([
        "module cutwrap(input clk, input [7:0] mode, input [31:0] a, input [31:0] b, "
        "input [31:0] acc, output [31:0] result);",
        f"  {top} dut(.clk(clk), .rst(1'b0), .mode(mode), .a(a), .b(b), .acc(acc), "
        ".result(result));",
        "endmodule", ""]))
    raw = work / "cut_in.json"
    script = (f"read_verilog -sv {Path(design_v).name}; read_verilog -sv cutwrap.v; "
              "hierarchy -top cutwrap; proc; flatten; opt; dffunmap; opt_clean; "
              "write_json cut_in.json")
    proc = _run_yosys(["-q", "-l", "cut.log", "-p", script], work)
    if proc.returncode != 0 or not raw.exists():
        raise RuntimeError(f"yosys failed cutting {design_v} (see {work / 'cut.log'}): "
                           f"{proc.stderr[-500:]}")
    net = json.loads(raw.read_text())
    mod = net["modules"]["cutwrap"]
    left = sorted({c["type"] for c in mod["cells"].values()
                   if re.match(r"\$_?(s?dff|adff|dffe|sdff|aldff|dffsr|ff|dlatch)", c["type"])
                   and c["type"] != "$dff"})
    if left:
        raise CutError(f"registers with enable/reset remain after rst=0 ({', '.join(left)}); "
                       "the flat wrapper must hold the handshake so the pipeline always advances")
    _check_depths(mod, latency)
    alias: dict[int, object] = {}
    for cname in [n for n, c in mod["cells"].items() if c["type"] == "$dff"]:
        c = mod["cells"].pop(cname)
        for q, d in zip(c["connections"]["Q"], c["connections"]["D"]):
            alias[q] = d

    def res(b):
        while isinstance(b, int) and b in alias:
            b = alias[b]
        return b

    for c in mod["cells"].values():
        for k, v in c["connections"].items():
            c["connections"][k] = [res(b) for b in v]
    for n in mod["netnames"].values():
        n["bits"] = [res(b) for b in n["bits"]]
        n.get("attributes", {}).pop("init", None)
    for p in mod["ports"].values():
        p["bits"] = [res(b) for b in p["bits"]]
    write_if_changed(out_json, json.dumps({"creator": net.get("creator", ""),
                                           "modules": {module: mod}}))
    raw.unlink()
    return len(alias)


# --------------------------------------------------------------------------------------------
# running proofs

def _design_comb(spec, out: Path) -> tuple[Path, int]:
    """Write the design's Verilog and its register-cut netlist once; return (json, LATENCY)."""
    from rvmpq.synth.designs import emit_component_verilog
    if not spec.flat_ports:
        raise ValueError(f"design {spec.name!r} does not have the flat multiplier ports; "
                         "formal proofs need one of the multiplier designs")
    comp = spec.build()
    latency = int(comp.LATENCY)
    work = Path(out) / "formal" / spec.name
    path = work / "design.v"
    changed = write_if_changed(path, emit_component_verilog(comp, spec.top))
    comb = work / "dut_comb.json"
    if changed or not comb.exists():
        if comb.exists():
            comb.unlink()
        cut_registers(path, spec.top, latency, comb)
    return comb, latency


_PROVE_TAIL = "sat -prove bad 0 -show-inputs -show-outputs"
_DUMMY = "module formal_dummy(input x, output y);\n  assign y = ~x;\nendmodule\n"


def _prove_script(method: str, stem: str, timeout: float) -> tuple[str, str | None]:
    """(Yosys script, ABC script or None) for one method."""
    head = ["read_json dut_comb.json", f"read_verilog -sv {stem}_miter.v",
            "hierarchy -top miter", "flatten", "opt", "memory", "opt", "wreduce", "opt_clean"]
    if method == "sat":
        return "\n".join(head + [f"{_PROVE_TAIL} -timeout {int(timeout)}", ""]), None
    if method == "cec":
        return "\n".join(head + ["techmap", "opt -fast", f"abc -nocleanup -script {stem}.abc",
                                 "opt_clean", "stat", _PROVE_TAIL, ""]), \
            "strash\n&get -n\n&cec -m\n&put\n"
    # bdd: ABC reads the miter as BLIF, whose input order is the miter's port order (the BDD
    # variable order), collapses it to its global BDD and writes the result as AIGER. The
    # `abc` pass runs on a dummy module whose network the script saves and restores.
    return "\n".join(head + ["techmap", "opt -fast", "opt_clean", "write_blif miter.blif",
                             "design -reset", "read_verilog dummy.v",
                             "hierarchy -top formal_dummy", "techmap",
                             f"abc -nocleanup -script {stem}.abc", ""]), \
        ("write_blif dummy_keep.blif\nread_blif miter.blif\nstrash\ncollapse\nstrash\n"
         "write_aiger bdd.aig\nread_blif dummy_keep.blif\n")


def _aiger_constant(path: Path) -> int | None:
    """0 or 1 when the single output of the AIGER file is that constant, None otherwise."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n", 2)
    head = lines[0].split()
    if len(head) < 6 or head[0] not in (b"aig", b"aag"):
        raise ValueError(f"{path} is not an AIGER file")
    _m, _i, latches, outputs, ands = (int(x) for x in head[1:6])
    if outputs != 1 or latches != 0:
        raise ValueError(f"{path}: expected one output and no latches")
    out = int(lines[1].split()[0])
    return out if ands == 0 and out in (0, 1) else None


def prove(spec, proof: ProofSpec, out: Path, timeout: float = 60, broken: bool = False,
          method: str = "bdd", _dut: tuple[Path, int] | None = None) -> ProofResult:
    """Prove one mode of one design.

    Parameters
    ----------
    spec : DesignSpec
        A design with flat ports (see :mod:`rvmpq.synth.designs`).
    proof : ProofSpec
        The mode.
    out : Path
        Output folder; files go to ``<out>/formal/<design>/<proof>[_broken][_method].*``.
    timeout : float
        Seconds for the proof (the Yosys process is killed then: ``sat -timeout`` is not
        enforced under WASI).
    broken : bool
        Prove against a deliberately wrong reference (must come out ``failed``).
    method : str
        One of :data:`METHODS`.

    Returns
    -------
    ProofResult
    """
    if method not in METHODS:
        raise ValueError(f"proof method {method!r} is not supported; choose one of {METHODS}")
    out = Path(out)
    comb, _latency = _dut or _design_comb(spec, out)
    work = comb.parent
    stem = proof.name + ("_broken" if broken else "") + ("" if method == "bdd" else f"_{method}")
    write_if_changed(work / f"{stem}_miter.v",
                     reference_verilog(proof, broken)
                     + miter_verilog("dut_comb", proof.mode_value(), _lane_width(proof)))
    write_if_changed(work / "dummy.v", _DUMMY)
    ys, abc = _prove_script(method, stem, timeout)
    write_if_changed(work / f"{stem}.ys", ys)
    if abc is not None:
        write_if_changed(work / f"{stem}.abc", abc)
    log = work / f"{stem}.log"
    for stale in (log, work / f"{stem}_bdd.aig"):
        if stale.exists():
            stale.unlink()
    res = ProofResult(spec.name, proof.name, "error", 0.0, timeout, broken, str(log), method)
    t0 = time.monotonic()
    tmp = work / f"{stem}.run"       # own working folder: ABC's temporary files land in it
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for f in ("dut_comb.json", f"{stem}_miter.v", f"{stem}.ys", f"{stem}.abc", "dummy.v"):
            if (work / f).exists():
                shutil.copyfile(work / f, tmp / f)
        proc = _run_yosys(["-q", "-l", f"{stem}.log", f"{stem}.ys"], tmp, timeout)
    except subprocess.TimeoutExpired:
        res.outcome, res.seconds = "timeout", round(time.monotonic() - t0, 2)
        if (tmp / f"{stem}.log").exists():
            shutil.copyfile(tmp / f"{stem}.log", log)
        shutil.rmtree(tmp, ignore_errors=True)
        return res
    res.seconds = round(time.monotonic() - t0, 2)
    res.cpu_s = proc.cpu_s
    if (tmp / f"{stem}.log").exists():
        shutil.copyfile(tmp / f"{stem}.log", log)
    bdd = tmp / "bdd.aig"
    const = None
    if method == "bdd" and bdd.exists():
        const = _aiger_constant(bdd)
        shutil.copyfile(bdd, work / f"{stem}_bdd.aig")
    shutil.rmtree(tmp, ignore_errors=True)
    text = log.read_text(errors="replace") if log.exists() else ""
    if method == "bdd":
        if const == 0:
            res.outcome = "proved"
        elif (work / f"{stem}_bdd.aig").exists():
            res.outcome = "failed"
            res.message = (f"{log}\nthe BDD of `bad` is not constant 0: some input gives a wrong "
                           f"result; the collapsed miter is {work / (stem + '_bdd.aig')}")
        else:
            errs = [ln for ln in text.splitlines() if "ERROR" in ln]
            res.message = f"{log}\n" + ("\n".join(errs[:5]) or text[-800:]) + proc.stderr[-500:]
        return res
    if "SAT proof finished - no model found: SUCCESS" in text:
        res.outcome = "proved"
    elif "SAT proof finished - model found: FAIL" in text:
        res.outcome = "failed"
        cex = text[text.index("SAT proof finished - model found"):]
        res.message = f"{log}\n{cex[:3000]}"
    elif "TIMEOUT" in text:
        res.outcome = "timeout"
    else:
        errs = [ln for ln in text.splitlines() if "ERROR" in ln]
        res.message = f"{log}\n" + ("\n".join(errs[:5]) or text[-800:]) + proc.stderr[-500:]
    return res


def run_proofs(spec, proofs: Sequence[ProofSpec], out: Path, timeout: float = 60,
               jobs: int = 1, sanity: bool = True, method: str = "bdd",
               progress: Callable[[str], None] | None = print) -> list[ProofResult]:
    """Run several proofs of one design and write ``<out>/formal.json`` and ``formal.md``.

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
    method : str
        One of :data:`METHODS`.
    progress : callable, optional
        One line per started and finished proof.

    Returns
    -------
    list of ProofResult
        In the order of ``proofs`` (the sanity check last).
    """
    if method not in METHODS:
        raise ValueError(f"proof method {method!r} is not supported; choose one of {METHODS}")
    say = progress or (lambda _line: None)
    out = Path(out)
    say(f"formal: {spec.name}: cutting the pipeline registers ...")
    dut = _design_comb(spec, out)
    todo = [(p, False) for p in proofs]
    if sanity and proofs:
        todo.append((proofs[0], True))
    say(f"formal: {spec.name}: {len(todo)} proof(s), method {method}, timeout {timeout:g} s "
        f"each, {jobs} at a time")
    results: dict[int, ProofResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {pool.submit(prove, spec, p, out, timeout, broken, method, dut): i
                for i, (p, broken) in enumerate(todo)}
        for n, fut in enumerate(as_completed(futs), 1):
            r = fut.result()
            results[futs[fut]] = r
            tag = " (broken reference, must fail)" if r.broken_reference else ""
            cpu = f" (cpu {r.cpu_s:.1f} s)" if r.cpu_s is not None else ""
            say(f"[{n}/{len(todo)}] {r.design} {r.proof:<10} {r.method:<4} {r.outcome:<8} "
                f"{r.seconds:7.1f} s{cpu}{tag}")
    ordered = [results[i] for i in range(len(todo))]
    write_formal_json(ordered, out / "formal.json")
    write_formal_md(out / "formal.json", out / "formal.md")
    return ordered


def write_formal_json(results: Iterable[ProofResult], path: Path) -> Path:
    """Write (atomically) the proof records, merged with those already in ``path``.

    A record replaces an older one of the same design, proof, method and reference kind.
    """
    path = Path(path)
    old = []
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("proofs", [])
        except (ValueError, AttributeError):
            old = []
    new = [dataclasses.asdict(r) for r in results]

    def key(r):
        return (r.get("design"), r.get("proof"), r.get("method", "sat"), r.get("broken_reference"))

    keys = {key(r) for r in new}
    merged = [r for r in old if key(r) not in keys] + new
    order = {p.name: i for i, p in enumerate(ALL_PROOFS)}
    merged.sort(key=lambda r: (r.get("design", ""), bool(r.get("broken_reference")),
                               order.get(r.get("proof"), 99), r.get("method", "")))
    write_if_changed(path, json.dumps({"schema": 2, "proofs": merged}, indent=2) + "\n")
    return path


def write_formal_md(json_path: Path, md_path: Path) -> Path:
    """Write the Markdown table of every record in ``json_path`` (see :func:`write_formal_json`)."""
    recs = json.loads(Path(json_path).read_text()).get("proofs", [])
    lines = ["# Formal proofs (rvmpq synth --formal)", "",
             "Each mode of the design equals its reference for all 2^96 inputs (a, b, acc).",
             "The broken-reference row must read `failed` (the check can fail).", "",
             "| design | mode | method | result | wall s | CPU s | timeout s | note |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for r in recs:
        note = "broken reference (must fail)" if r.get("broken_reference") else ""
        outcome = r["outcome"].upper()
        cpu = "" if r.get("cpu_s") is None else f"{r['cpu_s']:.1f}"
        if r.get("broken_reference"):
            outcome += " (ok)" if r["outcome"] == "failed" else " (WRONG)"
        lines.append(f"| {r['design']} | {r['proof']} | {r.get('method', 'sat')} | {outcome} | "
                     f"{r['seconds']:.1f} | {cpu} | {r['timeout_s']:g} | {note} |")
    write_if_changed(md_path, "\n".join(lines) + "\n")
    return Path(md_path)


def all_ok(results: Iterable[ProofResult]) -> bool:
    """True when every proof is proved and every broken-reference check failed as it must."""
    return all((r.outcome == "failed") if r.broken_reference else (r.outcome == "proved")
               for r in results)


def main(argv: list[str] | None = None) -> int:
    """``python -m rvmpq.synth.formal``: 0 when every proof is proved and the sanity check
    failed as it must, 1 otherwise (timeouts included), 2 on bad input."""
    from rvmpq.sw.tools import build_root

    ap = argparse.ArgumentParser(prog="python -m rvmpq.synth.formal",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--design", default="simd", help="design to prove (default: simd)")
    ap.add_argument("--proof", action="append", metavar="NAME",
                    help="proof to run (repeatable; default: all): "
                         + ", ".join(p.name for p in ALL_PROOFS))
    ap.add_argument("--fast", action="store_true", help="only the fast proofs (INT2)")
    ap.add_argument("--method", default="bdd", help=f"proof engine, one of {METHODS} (default bdd)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per proof (default 600)")
    ap.add_argument("-j", "--jobs", type=int, default=1)
    ap.add_argument("-o", "--out", type=Path, default=None,
                    help=f"default: <build>/synth, {BUILD_HELP}")
    args = ap.parse_args(argv)
    return run_cli(args.design, args.proof, args.fast, args.method, args.timeout, args.jobs,
                   args.out or build_root() / "synth", "formal")


def run_cli(design: str, proof_names: list[str] | None, fast: bool, method: str,
            timeout: float, jobs: int, out: Path, prog: str) -> int:
    """Shared body of ``rvmpq synth --formal`` and ``python -m rvmpq.synth.formal``."""
    from rvmpq.sw.tools import ToolNotFound
    from rvmpq.synth.designs import get_design
    try:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        spec = get_design(design)
        proofs = ([get_proof(n) for n in proof_names] if proof_names
                  else list(FAST_PROOFS if fast else ALL_PROOFS))
        results = run_proofs(spec, proofs, out, timeout, jobs, method=method,
                             progress=lambda line: print(line, flush=True))
    except (KeyError, ValueError) as exc:
        print(f"{prog}: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except ToolNotFound as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print()
    print((out / "formal.md").read_text())
    print(f"wrote {out / 'formal.json'} and {out / 'formal.md'}")
    return 0 if all_ok(results) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
