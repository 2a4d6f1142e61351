"""Build a layer kernel program, run it on the RTL (or the ISS), decode the output.

>>> from rvmpq.sw.kernels import random_layer, random_input, run_layer   # doctest: +SKIP
>>> res = run_layer(layer, a, impl="mpq")                                  # doctest: +SKIP
>>> res.cycles, res.output.shape                                           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from rvmpq.sw.search.qnn import QLayer
from rvmpq.sw.tools import build_root

from .gen import KernelPlan, decode_output, emit_program, estimate_dmem_bytes, plan_layer
from .layer import KernelLayerError

__all__ = ["KernelRun", "KernelRunError", "rtl_hash", "soc_verilog_cached", "build_layer_program",
           "layer_dmem_kib", "run_layer", "CONFIG_OF", "DEFAULT_MAX_CYCLES", "LAYER_DMEM_KIB_MAX"]

#: The SoC configuration each implementation runs on.
CONFIG_OF = {"mpq": "mpq", "baseline": "baseline"}
#: Cycle limit of one kernel run.
DEFAULT_MAX_CYCLES = 50_000_000
#: Compiler optimisation for every kernel (mpq and baseline alike).
OPT = "-O3"
#: Extra compiler flags (one more allocatable register for the accumulators).
CFLAGS = ("-fomit-frame-pointer",)


def rtl_hash() -> str:
    """Hash of the hardware generator sources (``hw/**/*.py``) as they are on disk now: names
    the RTL version in the cost-cache key (:func:`rvmpq.sw.runtime.runner.hw_source_hash`)."""
    from rvmpq.sw.runtime.runner import hw_source_hash

    return hw_source_hash()


def soc_verilog_cached(config: str, dmem_kib: int = 64) -> str:
    """The SoC Verilog of ``config`` with a ``dmem_kib`` KiB DMEM (default 64, the SoC every
    kernel and cost measurement runs on) (:func:`rvmpq.sw.runtime.runner.soc_verilog`: cached
    per process and on disk by the hash of ``hw/``, one file per memory size)."""
    from rvmpq.sw.runtime.runner import soc_verilog

    return soc_verilog(config, dmem_kib=dmem_kib)


class KernelRunError(RuntimeError):
    """A kernel program did not finish cleanly (trap, timeout, bad exit code)."""


@dataclasses.dataclass
class KernelRun:
    """One kernel run.

    Attributes
    ----------
    output : numpy.ndarray
        int64 HWC output, shape ``layer.out_shape``.
    cycles, instret : int
        ``rdcycle`` / ``rdinstret`` deltas around the kernel call.
    total_cycles : int
        Cycles of the whole program (start-up and exit included).
    plan : KernelPlan
    elf : Path
    """

    output: np.ndarray
    cycles: int
    instret: int
    total_cycles: int
    plan: KernelPlan
    elf: Path


#: The DMEM size (KiB) of the SoC a one-layer program runs on when the default 64 KiB does
#: not hold it, at most (the largest ``rvmpq deploy`` builds too).
LAYER_DMEM_KIB_MAX = 1024


def layer_dmem_kib(layer: QLayer, impl: str = "mpq", grow: bool = True) -> int:
    """The DMEM size (KiB) the program of ``layer`` runs on: the SoC's 64 KiB, or, with
    ``grow``, where the kernel's weights, input and output do not fit in it, the smallest
    power of two up to :data:`LAYER_DMEM_KIB_MAX` that holds them (the cycles do not depend on
    the DMEM size: the core has no cache). Raises :class:`KernelLayerError` when none does."""
    from rvmpq.sw.runtime.cc import memory_map

    pl = plan_layer(layer, impl)
    size = memory_map(CONFIG_OF[impl]).dmem_size
    need = estimate_dmem_bytes(pl)
    kib = size >> 10
    while grow and need > kib << 10 and kib < LAYER_DMEM_KIB_MAX:
        kib <<= 1
    if need > kib << 10:
        raise KernelLayerError(
            f"{layer.name}: {impl} kernel needs ~{need} bytes of DMEM (input {pl.h}x{pl.w}x"
            f"{pl.cin}, output {pl.ho}x{pl.wo}x{pl.cout}, {pl.bits}-bit) but the SoC has "
            f"{kib << 10}; use a smaller map or fewer channels")
    return kib


def build_layer_program(layer: QLayer, a: np.ndarray, impl: str = "mpq",
                        out_dir: Path | None = None, dmem_kib: int = 64
                        ) -> tuple[Path, KernelPlan]:
    """Generate and compile the program for ``layer`` on input ``a`` for the SoC with a
    ``dmem_kib`` KiB DMEM (:func:`layer_dmem_kib`); return (ELF, plan).

    The ELF is named by the hash of the generated source (and the DMEM size where it is not
    64 KiB; reused when it already exists). Raises :class:`KernelLayerError` when the layer
    does not fit that DMEM.
    """
    from rvmpq.sw.runtime.cc import compile_program, memory_map, write_if_changed

    pl = plan_layer(layer, impl)
    mm = memory_map(CONFIG_OF[impl], dmem_kib=dmem_kib)
    need = estimate_dmem_bytes(pl)
    if need > mm.dmem_size:
        raise KernelLayerError(
            f"{layer.name}: {impl} kernel needs ~{need} bytes of DMEM (input {pl.h}x{pl.w}x"
            f"{pl.cin}, output {pl.ho}x{pl.wo}x{pl.cout}, {pl.bits}-bit) but the SoC has "
            f"{mm.dmem_size}; use a smaller map or fewer channels")
    src, pl = emit_program(layer, a, impl)
    key = hashlib.sha256((src + OPT + " ".join(CFLAGS)).encode()).hexdigest()[:16]
    if dmem_kib != 64:
        key = f"d{dmem_kib}-{key}"
    d = Path(out_dir) if out_dir else build_root() / "kernels" / "progs"
    c = write_if_changed(d / f"{impl}-{key}.c", src)
    elf = d / f"{impl}-{key}.elf"
    if not elf.exists():
        compile_program([c], elf, opt=OPT, config=CONFIG_OF[impl], extra_flags=CFLAGS,
                        memory_map_=mm)
    return elf, pl


def run_layer(layer: QLayer, a: np.ndarray, impl: str = "mpq", *, backend: str = "rtl",
              max_cycles: int = DEFAULT_MAX_CYCLES, out_dir: Path | None = None) -> KernelRun:
    """Run ``layer`` on input ``a`` with kernel ``impl`` and return the decoded output.

    Parameters
    ----------
    layer : QLayer
    a : numpy.ndarray
        Integer HWC input, shape ``layer.in_shape``.
    impl : {"mpq", "baseline"}
    backend : {"rtl", "iss"}
        The Verilator model of the SoC (the regression of record; with a larger DMEM where
        the layer does not fit 64 KiB, :func:`layer_dmem_kib`) or the Python ISS.
    max_cycles : int
        Limit; a run that reaches it raises :class:`KernelRunError`.

    Raises
    ------
    KernelRunError
        The program trapped, timed out or exited with a non-zero code.
    """
    if backend not in ("rtl", "iss"):
        raise ValueError(f"backend={backend!r}; allowed: rtl, iss")
    kib = layer_dmem_kib(layer, impl, grow=backend == "rtl")
    elf, pl = build_layer_program(layer, a, impl, out_dir, kib)
    config = CONFIG_OF[impl]
    if backend == "rtl":
        from rvmpq.sw.runtime.runner import run_elf
        res = run_elf(elf, config=config, max_cycles=max_cycles, signature=True,
                      verilog=soc_verilog_cached(config, kib), dmem_kib=kib)
        exit_code, total, sig, timed_out, console = (res.exit_code, res.cycles, res.signature,
                                                     res.timed_out, res.console)
    else:
        from rvmpq.sw import iss
        res = iss.run_elf(elf, config=config, max_steps=max_cycles)
        exit_code = getattr(res, "exit_code", None)
        total = getattr(res, "cycles", getattr(res, "instret", 0))
        sig = list(getattr(res, "signature", []) or [])
        timed_out = exit_code is None
        console = getattr(res, "console", b"")
    if timed_out:
        raise KernelRunError(f"{layer.name} ({impl}) overran max_cycles={max_cycles} "
                             f"({elf}); raise the limit or shrink the layer")
    if exit_code != 0:
        raise KernelRunError(f"{layer.name} ({impl}) exited with code {exit_code} ({elf}); "
                             f"console: {bytes(console).decode(errors='replace')!r}")
    out = decode_output(layer, pl, sig[2:])
    return KernelRun(output=out, cycles=int(sig[0]), instret=int(sig[1]), total_cycles=int(total),
                     plan=pl, elf=elf)
