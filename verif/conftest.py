"""pytest glue for verif/: makes the shared helpers importable and provides the ``seed`` fixture.

``seed`` runs a random test once per seed of :func:`cocotb_util.seed_list` (a fixed CI seed
plus one random seed per run, or only ``$RVMPQ_SEED``). The seed is printed, and a failing test
gets a "replay" section with the command that reruns it with the same seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cocotb_util import replay_hint, seed_list  # noqa: E402


def pytest_generate_tests(metafunc):
    """Parametrize every test that takes ``seed`` over :func:`cocotb_util.seed_list`."""
    if "seed" in metafunc.fixturenames:
        pairs = seed_list()
        metafunc.parametrize("seed", [s for _, s in pairs], ids=[i for i, _ in pairs],
                            indirect=True)


@pytest.fixture
def seed(request):
    """The random seed of this test instance (parametrized; printed)."""
    s = request.param
    print(f"seed = {s}  ({replay_hint(s, request.node.nodeid)})")
    return s


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Add a "replay" section (the command with the same seed) to a failed seeded test."""
    report = yield
    if report.when == "call" and report.failed and "seed" in getattr(item, "funcargs", {}):
        report.sections.append(("replay", replay_hint(item.funcargs["seed"], item.nodeid)))
    return report
