"""``rvmpq bench``: benchmarks, written as JSON (for programs) and Markdown (for people).

Sections (``--only`` picks one; default: all that are available):

``unit``
    The SIMD unit on its own: a long back-to-back stream of random operations per mode through a
    Verilator model of ``SimdMulUnit`` (a C++ main loop, no Python per cycle), giving the
    measured operations accepted per cycle (the contract says 1.0 in every mode, i.e. 2/4/8/16
    MACs per cycle for INT16/8/4/2), the latency seen, and a check of every result against the
    golden model; plus the golden model's own throughput (vectors per second).
    Writes ``<out>/unit.json`` and ``<out>/unit.md``.
``kernels``
    Layer kernels on the ``baseline`` core (plain RV32IM C) against the ``mpq`` core (generated
    MPQ kernels): cycles, speedup, MACs/cycle against the unit's peak and the inner loop's share
    of peak, every output checked bit for bit (:mod:`rvmpq.sw.kernels.bench`; ``--quick``: the
    Edge-MPQ conv layer only). Writes ``<out>/kernels.json`` and ``<out>/kernels.md``.
``runner``
    Speed of ``rvmpq run``: ``verif/programs/bench_mix.c`` (an integer matrix product and a
    CRC, ~5.2 M cycles) on ``baseline`` and on ``mpq`` with each description of the SIMD unit
    (``--unit words`` / ``tree``), as simulated cycles per second of the whole
    :func:`~rvmpq.sw.runtime.runner.run_elf` call (ELF load, image file, the model process,
    result parsing; the model is built before timing, so build time is excluded and reported
    apart) and of the ``rvmpq run`` command (Python start-up included), against the target of
    :data:`RUNNER_TARGET` cycles/s. Also checks that both units give the same cycles, instret
    and signature. Writes ``<out>/runner.json`` and ``<out>/runner.md``.

Library use::

    from rvmpq.sw.bench import bench_unit
    report = bench_unit(n_ops=20000)
    print(report.markdown())
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rvmpq.sw import golden
from rvmpq.sw.tools import BUILD_HELP, build_root

__all__ = ["UnitModeResult", "UnitReport", "bench_unit", "golden_throughput", "RunnerRow",
           "RunnerReport", "bench_runner", "RUNNER_TARGET", "SECTIONS", "add_arguments", "main"]

TOP = "simd_mul_unit"

#: Modes measured: (label, op, width, a_signed, b_signed, MACs per operation).
UNIT_MODES: list[tuple[str, str, int, bool, bool, int]] = (
    [(f"DOT INT{w} {'s' if sa else 'u'}x{'s' if sb else 'u'}", "DOT", w, sa, sb, 32 // w)
     for w in (16, 8, 4, 2) for sa in (True, False) for sb in (True, False)]
    + [("MULLO (mul)", "MULLO", 8, True, True, 1),
       ("MULHI sxs (mulh)", "MULHI", 8, True, True, 1),
       ("MULHI sxu (mulhsu)", "MULHI", 8, True, False, 1),
       ("MULHI uxu (mulhu)", "MULHI", 8, False, False, 1),
       ("MULHI uxs", "MULHI", 8, False, True, 1)]
)

# C++ main loop: streams the operations of a file through the unit, one mode after the other,
# with o.ready held high, and reports per mode the cycles between the first and the last
# accepted operation, the latency of the first result and every result.
_HARNESS = r"""
#include <cstdio>
#include <cstdint>
#include <vector>
#include "V@TOP@.h"
#include "verilated.h"
// Verilator escapes "__" in port names: i__valid is the C++ member i___05Fvalid.
#define I_VALID i___05Fvalid
#define I_READY i___05Fready
#define I_PAYLOAD i___05Fpayload
#define O_VALID o___05Fvalid
#define O_READY o___05Fready
#define O_PAYLOAD o___05Fpayload

static void tick(V@TOP@* t) { t->clk = 1; t->eval(); t->clk = 0; t->eval(); }

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    if (argc < 3) { fprintf(stderr, "usage: %s IN OUT\n", argv[0]); return 2; }
    FILE* in = fopen(argv[1], "rb"); FILE* out = fopen(argv[2], "wb");
    if (!in || !out) { perror("open"); return 2; }
    uint32_t hdr[2];
    if (fread(hdr, 4, 2, in) != 2) return 2;
    const uint32_t n_modes = hdr[0], n = hdr[1];
    std::vector<uint32_t> ops((size_t)n * 4), res(n);
    V@TOP@* t = new V@TOP@;
    t->clk = 0; t->rst = 1; t->I_VALID = 0; t->O_READY = 1; t->eval();
    for (int k = 0; k < 3; k++) tick(t);
    t->rst = 0; t->eval(); tick(t);
    for (uint32_t m = 0; m < n_modes; m++) {
        if (fread(ops.data(), 4, ops.size(), in) != ops.size()) return 3;
        uint64_t cyc = 0, first_in = 0, last_in = 0, first_out = 0;
        size_t sent = 0, got = 0;
        while (got < n) {
            if (cyc > 20ull * n + 1000) { fprintf(stderr, "timeout in mode %u\n", m); return 4; }
            t->I_VALID = sent < n;
            if (sent < n) for (int w = 0; w < 4; w++) t->I_PAYLOAD[w] = ops[sent * 4 + w];
            t->O_READY = 1;
            t->eval();
            const bool in_fire = t->I_VALID && t->I_READY;
            const bool out_fire = t->O_VALID && t->O_READY;
            if (out_fire) { if (got == 0) first_out = cyc; res[got++] = t->O_PAYLOAD; }
            if (in_fire) { if (sent == 0) first_in = cyc; last_in = cyc; sent++; }
            tick(t);
            cyc++;
        }
        t->I_VALID = 0; t->eval();
        for (int k = 0; k < 8; k++) tick(t);   // drain
        fwrite(res.data(), 4, n, out);
        printf("%u %llu %llu %llu\n", m, (unsigned long long)(last_in - first_in + 1),
               (unsigned long long)(first_out - first_in), (unsigned long long)cyc);
    }
    fclose(out); delete t; return 0;
}
"""


@dataclasses.dataclass
class UnitModeResult:
    """One mode of the unit benchmark.

    Attributes
    ----------
    mode : str
        Label, e.g. ``"DOT INT8 sxu"``.
    ops : int
        Operations streamed.
    cycles : int
        Cycles from the first to the last accepted operation (inclusive).
    ops_per_cycle : float
        ``ops / cycles`` (1.0 when the unit accepts one operation per cycle).
    macs_per_cycle : float
        ``ops_per_cycle`` times the lanes of the mode (1 for MULLO/MULHI).
    latency : int
        Cycles from the first accepted operation to its result.
    results_ok : bool
        Every result matched :mod:`rvmpq.sw.golden`.
    """

    mode: str
    ops: int
    cycles: int
    ops_per_cycle: float
    macs_per_cycle: float
    latency: int
    results_ok: bool


@dataclasses.dataclass
class UnitReport:
    """The ``unit`` section: measured unit throughput plus golden-model throughput."""

    modes: list[UnitModeResult]
    golden: dict[str, float]
    unit_latency_attr: int | None
    verilator_model: str
    seed: int

    @property
    def ok(self) -> bool:
        """All results matched the golden model."""
        return all(m.results_ok for m in self.modes)

    def to_json(self) -> dict:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self) | {"ok": self.ok}

    def markdown(self) -> str:
        """Two Markdown tables: the unit per mode, and the golden model."""
        lines = ["## SIMD unit (Verilator, back-to-back stream, o.ready high)", "",
                 f"SimdMulUnit.LATENCY = {self.unit_latency_attr}; seed {self.seed}", "",
                 "| mode | ops | cycles | ops/cycle | MACs/cycle | latency | results |",
                 "|---|---:|---:|---:|---:|---:|---|"]
        for m in self.modes:
            lines.append(f"| {m.mode} | {m.ops} | {m.cycles} | {m.ops_per_cycle:.3f} | "
                         f"{m.macs_per_cycle:.2f} | {m.latency} | "
                         f"{'ok' if m.results_ok else 'MISMATCH'} |")
        lines += ["", "## Golden model (numpy) throughput", "",
                  "| function | vectors/s |", "|---|---:|"]
        for k, v in self.golden.items():
            lines.append(f"| {k} | {v:,.0f} |")
        return "\n".join(lines) + "\n"


# ---- the Verilator model --------------------------------------------------------------------

def _build_unit_model(verilog: str, quiet: bool) -> Path:
    """Build (or reuse) the benchmark model under ``<build>/sim/bench-unit-<hash>/``."""
    from rvmpq.sw.tools import (VERILATOR_LINT_FLAGS, VERILATOR_MAKE_FIXES,  # noqa: PLC0415
                                verilator_build_cached)

    harness = _HARNESS.replace("@TOP@", TOP)
    flags = ["--cc", "--exe", "--build", "-j", "2", "-O3", "--x-assign", "fast",
             "--x-initial", "fast", "--top-module", TOP, *VERILATOR_LINT_FLAGS,
             "-MAKEFLAGS", " ".join([*VERILATOR_MAKE_FIXES, "OPT_FAST=-O2 OPT_SLOW=-O1"])]
    key = hashlib.sha256("\0".join([verilog, harness, *flags]).encode()).hexdigest()[:12]
    d = build_root() / "sim" / f"bench-unit-{key}"
    return verilator_build_cached(d, {f"{TOP}.v": verilog, "bench_unit.cpp": harness}, flags,
                                  f"V{TOP}", None if quiet else
                                  f"bench: building the unit model in {d} ...")


def _payload_words(mode_value: int, a, b, acc) -> np.ndarray:
    """The 104-bit ``i.payload`` vectors as 4 little-endian 32-bit words per operation."""
    from amaranth.lib import data  # noqa: PLC0415

    from rvmpq.hw.modes import MulMode  # noqa: PLC0415

    lay = data.StructLayout({"mode": MulMode, "a": 32, "b": 32, "acc": 32})
    n = a.size
    bits = np.zeros((n, 128), dtype=np.uint8)
    for name, val, width in (("mode", np.full(n, mode_value, np.uint64), lay["mode"].shape.size),
                             ("a", a, 32), ("b", b, 32), ("acc", acc, 32)):
        off = lay[name].offset
        v = val.astype(np.uint64)
        bits[:, off:off + width] = ((v[:, None] >> np.arange(width, dtype=np.uint64)) & 1)
    weights = (np.uint64(1) << np.arange(32, dtype=np.uint64))
    return (bits.reshape(n, 4, 32).astype(np.uint64) * weights).sum(-1).astype(np.uint32)


def _expected(op: str, width: int, sa: bool, sb: bool, a, b, acc) -> np.ndarray:
    if op == "DOT":
        return golden.dot(a, b, width, sa, sb, acc=acc)
    if op == "MULLO":
        return golden.mul(a, b, "mul")
    if sa and sb:
        return golden.mul(a, b, "mulh")
    if sa:
        return golden.mul(a, b, "mulhsu")
    if sb:
        return golden.mul(b, a, "mulhsu")
    return golden.mul(a, b, "mulhu")


def golden_throughput(n: int = 1_000_000, repeat: int = 3) -> dict[str, float]:
    """Vectors (32-bit words) per second of the golden model, best of ``repeat`` runs.

    Parameters
    ----------
    n : int
        Vector length per call.
    repeat : int
        Timed calls per function (the best is kept).

    Returns
    -------
    dict of str to float
    """
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2 ** 32, n, dtype=np.uint32)
    b = rng.integers(0, 2 ** 32, n, dtype=np.uint32)
    calls = {f"dot INT{w}": (lambda w=w: golden.dot(a, b, w, True, False, acc=a))
             for w in (16, 8, 4, 2)}
    calls["mul mulhsu"] = lambda: golden.mul(a, b, "mulhsu")
    calls["requant 8-bit"] = lambda: golden.requant(a, b, 20, 3, 8, True)
    out = {}
    for name, fn in calls.items():
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = n / best
    return out


def bench_unit(n_ops: int = 20_000, seed: int = 1, quiet: bool = True,
               golden_n: int = 1_000_000) -> UnitReport:
    """Measure the SIMD unit in every mode and the golden model's throughput.

    Parameters
    ----------
    n_ops : int
        Operations streamed per mode (random operands).
    seed : int
        Operand seed.
    quiet : bool
        No progress messages on stderr.
    golden_n : int
        Vector length for :func:`golden_throughput`.

    Returns
    -------
    UnitReport
    """
    if n_ops < 1:
        raise ValueError(f"n_ops must be a positive number of operations, got {n_ops}")
    from rvmpq.hw.modes import mode_const  # noqa: PLC0415
    from rvmpq.hw.simd import SimdMulUnit  # noqa: PLC0415
    from rvmpq.hw.verilog import verilog_text  # noqa: PLC0415

    unit = SimdMulUnit()
    exe = _build_unit_model(verilog_text(unit, TOP, None), quiet)
    rng = np.random.default_rng(seed)
    operands = []
    with tempfile.TemporaryDirectory(prefix="rvmpq-bench-") as tmp:
        fin, fout = Path(tmp) / "ops.bin", Path(tmp) / "res.bin"
        with open(fin, "wb") as fh:
            fh.write(np.array([len(UNIT_MODES), n_ops], dtype="<u4").tobytes())
            for label, op, w, sa, sb, _ in UNIT_MODES:
                a, b, acc = (rng.integers(0, 2 ** 32, n_ops, dtype=np.uint32) for _ in range(3))
                operands.append((a, b, acc))
                words = _payload_words(mode_const(op, w, w, sa, sb), a, b, acc)
                fh.write(words.astype("<u4").tobytes())
        if not quiet:
            print(f"bench: streaming {n_ops} ops x {len(UNIT_MODES)} modes ...", file=sys.stderr)
        p = subprocess.run([str(exe), str(fin), str(fout)], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"unit benchmark model failed (exit {p.returncode}): "
                               f"{p.stderr[-2000:]}")
        results = np.fromfile(fout, dtype="<u4").reshape(len(UNIT_MODES), n_ops)
    rows = []
    for line, (label, op, w, sa, sb, macs), (a, b, acc), res in zip(
            p.stdout.split("\n"), UNIT_MODES, operands, results):
        _, cycles, latency, _total = (int(x) for x in line.split())
        ok = bool(np.array_equal(res, _expected(op, w, sa, sb, a, b, acc)))
        opc = n_ops / cycles
        rows.append(UnitModeResult(label, n_ops, cycles, opc, opc * macs, latency, ok))
    return UnitReport(modes=rows, golden=golden_throughput(golden_n),
                      unit_latency_attr=getattr(unit, "LATENCY", None),
                      verilator_model=str(exe), seed=seed)


# ---- runner speed ---------------------------------------------------------------------------

#: Target of the runner benchmark: simulated cycles per second of ``rvmpq run`` on the mpq SoC.
RUNNER_TARGET = 1_000_000
#: The benchmark program and the (config, unit) pairs measured.
RUNNER_PROGRAM = Path(__file__).resolve().parents[1] / "verif" / "programs" / "bench_mix.c"
RUNNER_CASES = (("baseline", "words"), ("mpq", "words"), ("mpq", "tree"))


@dataclasses.dataclass
class RunnerRow:
    """One (config, unit) of the runner benchmark.

    ``run_s`` are the wall times of the timed :func:`run_elf` calls; ``mcps_*`` are simulated
    millions of cycles per second (best and median of those calls, and of one ``rvmpq run``
    command including Python start-up); ``build_s`` is the time this run took to get the model
    ready, before any timing: elaborating the SoC to Verilog unless cached for the current
    ``hw/`` sources, and verilating it unless a model of that Verilog is cached.
    """

    config: str
    unit: str
    cycles: int
    instret: int
    exit_code: int | None
    signature: list
    build_s: float
    run_s: list
    cli_s: float
    mcps_best: float
    mcps_median: float
    mcps_cli: float


@dataclasses.dataclass
class RunnerReport:
    """The ``runner`` section."""

    program: str
    rows: list[RunnerRow]
    target_cycles_per_s: int
    load_before: list
    load_after: list
    cpus: int

    @property
    def ok(self) -> bool:
        """Every run exited 0, and both units gave the same cycles, instret and signature."""
        mpq = [r for r in self.rows if r.config == "mpq"]
        same = all((r.cycles, r.instret, r.signature) == (mpq[0].cycles, mpq[0].instret,
                                                          mpq[0].signature) for r in mpq)
        return same and all(r.exit_code == 0 for r in self.rows)

    def to_json(self) -> dict:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self) | {"ok": self.ok}

    def markdown(self) -> str:
        """A Markdown table: one row per (config, unit), with the ratio to the target."""
        t = self.target_cycles_per_s / 1e6
        lines = ["## Runner speed (`rvmpq run`, Verilator C++ main loop)", "",
                 f"Program `{self.program}`; model made ready beforehand (elaboration and "
                 f"Verilator build excluded from the speeds; their time in this run is shown "
                 f"as model prep, small when cached); {self.cpus} CPUs, load average "
                 f"{self.load_before[0]:.2f} before, {self.load_after[0]:.2f} after. "
                 f"Target: {t:g} M cycles/s on mpq.", "",
                 "| config | unit | cycles | instret | runs | M cycles/s best | median | "
                 "`rvmpq run` (with Python start-up) | vs target | model prep (s) |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r.config} | {r.unit if r.config == 'mpq' else '-'} | {r.cycles} | "
                         f"{r.instret} | {len(r.run_s)} | {r.mcps_best:.2f} | "
                         f"{r.mcps_median:.2f} | {r.mcps_cli:.2f} | "
                         f"{f'{r.mcps_best / t:.2f}x' if r.config == 'mpq' else '-'} | "
                         f"{r.build_s:.1f} |")
        lines += ["", "Both units give the same cycles, instret and signature: "
                  f"{'yes' if self.ok else 'NO'}."]
        return "\n".join(lines) + "\n"


def bench_runner(repeat: int = 3, cases=RUNNER_CASES, quiet: bool = True) -> RunnerReport:
    """Measure the simulated cycles per second of ``rvmpq run`` on ``bench_mix.c``.

    Parameters
    ----------
    repeat : int
        Timed :func:`run_elf` calls per case (best and median are reported).
    cases : iterable of (config, unit)
    quiet : bool
        No progress messages on stderr.
    """
    import statistics  # noqa: PLC0415

    from rvmpq.sw.runtime.cc import compile_program  # noqa: PLC0415
    from rvmpq.sw.runtime.runner import build_model, run_elf  # noqa: PLC0415

    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    if not RUNNER_PROGRAM.exists():
        raise NotImplementedError(f"{RUNNER_PROGRAM} is not in this installation (it ships with "
                                  "the source tree's verif/)")
    note = (lambda *_: None) if quiet else (lambda msg: print(f"bench runner: {msg}",
                                                                file=sys.stderr, flush=True))
    load_before = list(os.getloadavg())
    rows = []
    elfs = {}     # one compile per configuration (the two units run the same ELF)
    for config, unit in cases:
        if config not in elfs:
            elfs[config] = compile_program(
                [RUNNER_PROGRAM], build_root() / "bench" / "runner" / f"bench_mix-{config}.elf",
                opt="-O2", config=config)
        elf = elfs[config]
        t0 = time.perf_counter()
        build_model(config, unit=unit, quiet=quiet)
        build_s = time.perf_counter() - t0
        times, res = [], None
        for i in range(repeat):
            t0 = time.perf_counter()
            res = run_elf(elf, config=config, unit=unit, max_cycles=200_000_000, signature=True)
            times.append(time.perf_counter() - t0)
            note(f"{config}/{unit} run {i + 1}/{repeat}: {res.cycles} cycles in {times[-1]:.2f} s")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rvmpq.sw.cli", "run", str(elf), "--config",
                        config, "--unit", unit], check=False, capture_output=True)
        cli_s = time.perf_counter() - t0
        rows.append(RunnerRow(config=config, unit=unit, cycles=res.cycles, instret=res.instret,
                              exit_code=res.exit_code, signature=res.signature,
                              build_s=round(build_s, 1), run_s=[round(t, 3) for t in times],
                              cli_s=round(cli_s, 3), mcps_best=res.cycles / min(times) / 1e6,
                              mcps_median=res.cycles / statistics.median(times) / 1e6,
                              mcps_cli=res.cycles / cli_s / 1e6))
    return RunnerReport(program=str(RUNNER_PROGRAM.relative_to(RUNNER_PROGRAM.parents[2])),
                        rows=rows, target_cycles_per_s=RUNNER_TARGET, load_before=load_before,
                        load_after=list(os.getloadavg()), cpus=os.cpu_count() or 0)


# ---- sections and CLI -----------------------------------------------------------------------

def _section_unit(args) -> tuple[dict, str, bool]:
    rep = bench_unit(n_ops=args.ops, seed=args.seed, quiet=args.quiet)
    return rep.to_json(), rep.markdown(), rep.ok


def _section_kernels(args) -> tuple[dict, str, bool]:
    """Kernel speedup benchmark (baseline vs mpq core), from :mod:`rvmpq.sw.kernels.bench`."""
    from rvmpq.sw.kernels.bench import bench_kernels

    out = args.out or (build_root() / "bench")
    result = bench_kernels(out, quick=getattr(args, "quick", False))
    md_path = Path(out) / "kernels.md"
    md = md_path.read_text() if md_path.exists() else ""
    return result, md, True


def _section_runner(args) -> tuple[dict, str, bool]:
    rep = bench_runner(repeat=args.repeat, quiet=args.quiet)
    return rep.to_json(), rep.markdown(), rep.ok


#: section name -> function(args) -> (json dict, markdown, ok). Add kernels here.
SECTIONS = {"unit": _section_unit, "kernels": _section_kernels, "runner": _section_runner}


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rvmpq bench``."""
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help=f"output folder (default: <build>/bench, {BUILD_HELP})")
    parser.add_argument("--only", choices=list(SECTIONS), default=None,
                        help="run one section only (default: every available section)")
    parser.add_argument("--ops", type=int, default=20_000,
                        help="operations streamed per mode in the unit benchmark (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="operand seed (default 1)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    parser.add_argument("--quick", action="store_true",
                        help="kernel benchmark on the Edge-MPQ conv layer only")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs per case in the runner benchmark (default 3)")


def main(args: argparse.Namespace) -> int:
    """Run the selected sections; write ``<out>/<section>.json`` and ``.md``; print the tables.

    Returns 0 when every result matched the golden model (runner: every run exited 0 and both
    SIMD-unit descriptions gave the same cycles, instret and signature), 1 otherwise.
    """
    out = args.out or (build_root() / "bench")
    out.mkdir(parents=True, exist_ok=True)
    names = [args.only] if args.only else list(SECTIONS)
    status = 0
    for name in names:
        try:
            data, md, ok = SECTIONS[name](args)
        except NotImplementedError as exc:
            if args.only:
                print(f"rvmpq bench: {exc}", file=sys.stderr)
                return 2
            print(f"rvmpq bench: skipping section {name!r}: {exc}", file=sys.stderr)
            continue
        _write_if_changed(out / f"{name}.json", json.dumps(data, indent=2) + "\n")
        _write_if_changed(out / f"{name}.md", md)
        print(md)
        print(f"(written: {out / (name + '.json')}, {out / (name + '.md')})")
        if not ok:
            what = ("the SIMD-unit descriptions disagree or a run failed" if name == "runner"
                    else "results differ from the golden model")
            print(f"rvmpq bench: {name}: {what}", file=sys.stderr)
            status = 1
    return status
