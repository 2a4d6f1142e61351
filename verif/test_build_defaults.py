"""Every default output / cache folder is under ``build_root()`` ($RVMPQ_BUILD, else the
checkout's build/, or ./build for an install without a checkout), read when the command runs;
an explicit ``-o PATH`` stays relative to the current folder; the Makefile hands its BUILD to
every recipe as $RVMPQ_BUILD. Nothing is trained, simulated or synthesized here."""

import inspect
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rvmpq.sw.cli import build_parser


@pytest.fixture
def build(tmp_path, monkeypatch):
    """$RVMPQ_BUILD set to a tmp folder, run from another tmp folder (not the repo root)."""
    b = tmp_path / "rvmpq-build"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.setenv("RVMPQ_BUILD", str(b))
    monkeypatch.chdir(cwd)
    return b.resolve()


@pytest.mark.parametrize("argv, dest, sub", [
    (["search"], "out", "search"),
    (["search", "--bench"], "out", "search"),
    (["deploy", "cfg/config.json"], "out", "deploy"),
    (["verilog", "--all"], "output", "verilog"),
    (["bench"], "out", None),   # None defaults: resolved with build_root() in main
    (["synth", "--compare"], "out", None),
    (["costs", "--validate"], "out", None),
])
def test_cli_output_defaults_follow_rvmpq_build(build, argv, dest, sub):
    args = build_parser(argv[0]).parse_args(argv)
    got = getattr(args, dest)
    assert (got is None) if sub is None else Path(got) == build / sub
    explicit = build_parser(argv[0]).parse_args(argv + ["-o", "rel/out"])
    assert Path(getattr(explicit, dest)) == Path("rel/out")   # relative to the cwd, untouched


def test_cli_help_names_build(build, capsys):
    with pytest.raises(SystemExit):
        build_parser("search").parse_args(["search", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "<build>/search" in out and "$RVMPQ_BUILD" in out


def test_model_cache_follows_rvmpq_build(build, monkeypatch):
    """get_trained_model caches under <build>/models (training replaced by a no-op), and
    prepare / _load_model pass the default through instead of a cwd-relative folder."""
    from rvmpq.sw.search import models, pipeline

    monkeypatch.setattr(models, "train", lambda *a, **k: 0.0)
    models.get_trained_model("digits-cnn", recipe={"epochs": 1, "lr": 0.123456})
    assert len(list((build / "models").glob("digits-cnn-*.pt"))) == 1
    assert not Path("build").exists()

    seen = {}

    def fake(name, cache_dir=None, **kw):
        seen["cache_dir"] = cache_dir
        raise LookupError("stop")

    monkeypatch.setattr(pipeline, "get_trained_model", fake)
    with pytest.raises(LookupError):
        pipeline.prepare("digits-cnn", log=None)
    assert seen["cache_dir"] is None


def test_deploy_defaults_follow_rvmpq_build(build):
    from rvmpq.sw.deploy import DeployError, deploy, load_config

    assert inspect.signature(deploy).parameters["out"].default is None
    with pytest.raises(DeployError, match=str(build / "search") + "/config.json"):
        load_config("no/config.json")


def test_build_root_outside_a_checkout(tmp_path, monkeypatch):
    """Without $RVMPQ_BUILD: the checkout's build/ wherever the command runs from; installed
    without a checkout (``pip install .``: no project pyproject.toml beside the package, which
    lives in site-packages), ./build in the current folder instead."""
    from rvmpq.sw import tools

    monkeypatch.delenv("RVMPQ_BUILD", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tools, "is_source_checkout", lambda root=None: True)
    assert tools.build_root() == tools.repo_root() / "build"
    monkeypatch.setattr(tools, "is_source_checkout", lambda root=None: False)
    assert tools.build_root() == tmp_path.resolve() / "build"
    args = build_parser("search").parse_args(["search"])
    assert Path(args.out) == tmp_path.resolve() / "build" / "search"
    monkeypatch.setenv("RVMPQ_BUILD", str(tmp_path / "b"))   # the variable still wins
    assert tools.build_root() == (tmp_path / "b").resolve()


@pytest.mark.parametrize("text, expect", [
    ('[project]\nname = "rvmpq"\n', True),
    ('[project]\nname = "other"\n', False),
    ("not toml [", False),
    (None, False),
])
def test_is_source_checkout(tmp_path, text, expect):
    from rvmpq.sw.tools import is_source_checkout

    if text is not None:
        (tmp_path / "pyproject.toml").write_text(text)
    assert is_source_checkout(tmp_path) is expect


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_makefile_exports_build(tmp_path):
    """`make BUILD=x TARGET` runs TARGET's recipe with RVMPQ_BUILD = the absolute path of x
    (so `make BUILD=x demo`, which takes no -o, writes there too); BUILD defaults to
    $RVMPQ_BUILD, else build/."""
    from rvmpq.sw.tools import repo_root

    root = repo_root()
    if not (root / "Makefile").exists():
        pytest.skip("no Makefile: not a source checkout")
    show = ["make", "-s", "-C", str(root), "--eval",
            'rvmpq-show-build: ; @echo "$$RVMPQ_BUILD|$(BUILD)"', "rvmpq-show-build"]

    # not what a `make test` around this test exports (its own RVMPQ_BUILD, MAKEFLAGS)
    base = {k: v for k, v in os.environ.items()
            if k not in ("RVMPQ_BUILD", "BUILD", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def run(*extra, env=None):
        return subprocess.run(show + list(extra), capture_output=True, text=True, check=True,
                              env={**base, **(env or {})}).stdout.strip()

    assert run(f"BUILD={tmp_path}/x") == f"{tmp_path}/x|{tmp_path}/x"
    assert run("BUILD=rel") == f"{root}/rel|rel"
    assert run() == f"{root}/build|build"
    assert run(env={"RVMPQ_BUILD": str(tmp_path / "e")}) == f"{tmp_path}/e|{tmp_path}/e"
    dry = subprocess.run(["make", "-n", "-C", str(root), f"BUILD={tmp_path}/x", "clean"],
                         capture_output=True, text=True, check=True, env=base).stdout
    assert f"rm -rf {tmp_path}/x " in dry
