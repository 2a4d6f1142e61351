"""Verilog emission for every rvmpq component (one place, shared by the CLI, tests and synthesis).

>>> from rvmpq.hw.simd import SimdMulUnit
>>> from rvmpq.hw.verilog import emit_verilog
>>> emit_verilog(SimdMulUnit(), "rvmpq_simd", "build/verilog/simd.v")  # doctest: +SKIP
PosixPath('build/verilog/simd.v')
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from amaranth.back import verilog as _verilog

__all__ = ["emit_verilog", "verilog_text", "verilog_hash", "write_if_changed"]


def verilog_text(component, name: str, ports=None) -> str:
    """Verilog source of ``component`` with top module ``name``.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component or Elaboratable
        The design. A ``wiring.Component`` needs no ``ports`` (its signature names them:
        ``i.payload.a`` becomes port ``i__payload__a``).
    name : str
        Top-level module name.
    ports : list of Signal, optional
        Ports of a plain ``Elaboratable``.

    Returns
    -------
    str
        The Verilog text (without source-location attributes, so it is stable across checkouts).
    """
    if not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise ValueError(f"module name {name!r} is not a Verilog identifier "
                         "(letters, digits and '_', not starting with a digit)")
    kwargs = {} if ports is None else {"ports": ports}
    return _verilog.convert(component, name=name, emit_src=False, **kwargs)


def verilog_hash(text: str) -> str:
    """Short content hash (first 16 hex digits of SHA-256) of Verilog text, for build stamps."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_if_changed(path, text: str) -> bool:
    """Write ``text`` to ``path`` (creating folders) unless it already holds exactly that.

    Returns True when the file was written. The write goes through a temporary file and a
    rename, so a reader never sees half a file.
    """
    from rvmpq.sw.tools import write_if_changed as _write  # noqa: PLC0415  (the one copy)

    return _write(path, text)


def emit_verilog(component, name: str, path, ports=None) -> Path:
    """Convert ``component`` to Verilog and write it to ``path`` if its content changed.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component or Elaboratable
        The design.
    name : str
        Top-level module name.
    path : str or Path
        Output file; parent folders are created.
    ports : list of Signal, optional
        Ports of a plain ``Elaboratable`` (not needed for a ``wiring.Component``).

    Returns
    -------
    Path
        ``path``. Its modification time changes only when the Verilog did, so make-style
        consumers (Verilator builds) rebuild only when needed.
    """
    path = Path(path)
    write_if_changed(path, verilog_text(component, name, ports))
    return path
