"""Tie groups: layers that read one tensor must share one precision.

A residual block with a projection shortcut reads its input with a 3x3 conv and a 1x1
projection conv; the integer export refuses different ``a_bits`` for the two, so the search
must return one option for both. Random problems print their seed; replay with
RVMPQ_SEED=<seed> pytest verif/test_search_ties.py.
"""

import itertools
import json
import os
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from rvmpq.sw.search.costs_api import COST_METRICS
from rvmpq.sw.search.solvers import (InfeasibleBudget, Problem, closest_feasible,
                                     feasible_configs, freebits_heuristic,
                                     prefer_free_precision, solve_dp, solve_greedy, solve_ilp,
                                     solve_ilp_kbest, solve_random, solve_scored)

SEED = int(os.environ.get("RVMPQ_SEED", random.randrange(1 << 30)))
OPTS = [(16, 16), (8, 8), (4, 4), (2, 2)]


class ProjBlock(nn.Module):
    """conv-BN-ReLU stem; a block whose input is read by conv3x3(stride 2)-BN-ReLU-conv3x3-BN
    and by the projection conv1x1(stride 2)-BN; add, ReLU; flatten; linear (digits 8x8)."""

    def __init__(self):
        super().__init__()
        self.c0, self.b0 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c1, self.b1 = nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.cs, self.bs = nn.Conv2d(4, 8, 1, stride=2), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        h = torch.relu(self.b0(self.c0(x)))
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(h)))))
        h = torch.relu(y + self.bs(self.cs(h)))
        return self.fc(torch.flatten(h, 1))


def _trained_block():
    """:class:`ProjBlock` trained briefly on the digits training split (seeded)."""
    from rvmpq.sw.search.models import load_dataset

    torch.manual_seed(0)
    m = ProjBlock()
    ds = load_dataset("digits")
    x, y = torch.from_numpy(ds.x_train.astype(np.float32)), torch.from_numpy(ds.y_train)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(8):
        for i in range(0, len(y), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    return m.eval()


def test_quantizer_finds_the_projection_tie():
    """The block input's two readers form the one tie group, and they export at equal bits
    whatever their weight bits (one input grid, also where 16-bit headroom applies)."""
    from rvmpq.sw.search.models import load_dataset, trace_model
    from rvmpq.sw.search.quantizer import Quantizer

    torch.manual_seed(0)
    layers = trace_model(ProjBlock().eval())
    qz = Quantizer(layers, load_dataset("digits").x_val[:64])
    names = [l.name for l in layers if l.is_compute]
    assert [[names[k] for k in g] for g in qz.tie_groups()] == [["c1", "cs"]]
    k1, ks = names.index("c1"), names.index("cs")
    for w1, ws in [(16, 16), (16, 2), (2, 16)]:
        wb = [16] * len(names)
        wb[k1], wb[ks] = w1, ws
        qz.export(wb, [16] * len(names))      # raises if the two readers disagree
    with pytest.raises(ValueError, match="equal a_bits"):
        ab = [8] * len(names)
        ab[ks] = 4
        qz.export([8] * len(names), ab)


def test_merge_and_expand():
    """merged() sums impacts and costs over a group per option, keeps singletons as they
    are; expand/contract are inverse; a problem without ties merges to itself."""
    rng = np.random.default_rng(0)
    imp, costs = rng.random((5, 4)), rng.random((5, 4, 4))
    p = Problem(imp, costs, COST_METRICS, {}, OPTS, list("abcde"), ties=[[3, 1]])
    assert p.ties == [[1, 3]] and p.groups() == [[0], [1, 3], [2], [4]]
    m = p.merged()
    assert m.n_layers == 4 and m.ties is None and m.layer_names == ["a", "b+d", "c", "e"]
    np.testing.assert_allclose(m.impact[1], imp[1] + imp[3])
    np.testing.assert_allclose(m.costs[1], costs[1] + costs[3])
    np.testing.assert_array_equal(m.impact[[0, 2, 3]], imp[[0, 2, 4]])
    np.testing.assert_array_equal(m.costs[[0, 2, 3]], costs[[0, 2, 4]])
    assert p.expand([0, 2, 1, 3]) == [0, 2, 1, 2, 3]
    assert p.contract([0, 2, 1, 2, 3]) == [0, 2, 1, 3]
    assert p.is_tied([0, 2, 1, 2, 3]) and not p.is_tied([0, 2, 1, 1, 3])
    with pytest.raises(ValueError, match="tied"):
        p.contract([0, 2, 1, 1, 3])
    assert p.contract([0, 2, 1, 1, 3], strict=False) == [0, 1, 1, 3]   # most precise member
    s = m.evaluate([0, 2, 1, 3])
    e = p.expand_solution(s)
    assert e.choice == [0, 2, 1, 2, 3] and e.impact == pytest.approx(s.impact)
    assert e.costs == pytest.approx(s.costs)
    q = Problem(imp, costs, COST_METRICS, {}, OPTS)
    assert q.merged() is q and q.groups() == [[l] for l in range(5)]
    with pytest.raises(ValueError, match="disjoint"):
        Problem(imp, costs, COST_METRICS, {}, OPTS, ties=[[0, 1], [1, 2]])


def _tied_problem(rng, n_budgets):
    L = int(rng.integers(3, 7))
    imp = np.sort(rng.random((L, 4)) * rng.random((L, 1)) * 3, axis=1)
    costs = np.ascontiguousarray(np.sort(rng.random((L, 4, 4)) * 100, axis=1)[:, ::-1, :])
    perm = [int(v) for v in rng.permutation(L)]
    ties = [perm[:2]] + ([perm[2:5]] if L >= 5 and rng.random() < 0.5 else [])
    hi, lo = costs[:, 0].sum(0), costs[:, -1].sum(0)
    budgets = {COST_METRICS[m]: lo[m] + rng.random() * (hi[m] - lo[m]) for m in range(n_budgets)}
    return Problem(imp, costs, COST_METRICS, budgets, OPTS, ties=ties)


def _tied_bruteforce(p):
    """The optimum over every per-layer configuration that ties its groups (independent of
    the merge: enumerates the untied space and filters)."""
    idx, lim = p.budget_vector()
    r = np.arange(p.n_layers)
    best = None
    for ch in itertools.product(range(len(OPTS)), repeat=p.n_layers):
        if not p.is_tied(ch):
            continue
        if np.all(p.costs[r, list(ch)][:, idx].sum(0) <= lim * (1 + 1e-9) + 1e-9):
            imp = float(p.impact[r, list(ch)].sum())
            if best is None or imp < best - 1e-12:
                best = imp
    return best


@pytest.mark.parametrize("n_budgets", [1, 2, 3])
def test_dp_and_ilp_reach_the_tied_optimum(n_budgets):
    """DP (vanishing step) and ILP reach the brute-force optimum of the tied problem; every
    solver's answer ties its groups and meets the budgets; an infeasible tied problem names a
    tied closest configuration."""
    rng = np.random.default_rng(SEED + n_budgets)
    print(f"seed {SEED + n_budgets} (replay: RVMPQ_SEED={SEED} pytest {__file__})")
    checked = 0
    for _ in range(20):
        p = _tied_problem(rng, n_budgets)
        bf = _tied_bruteforce(p)
        if bf is None:
            with pytest.raises(InfeasibleBudget) as ei:
                solve_ilp(p)
            assert p.is_tied(ei.value.closest.choice)
            assert len(ei.value.closest.choice) == p.n_layers
            continue
        checked += 1
        for s in (solve_dp(p, step=1e-12), solve_ilp(p)):
            assert s.feasible and p.is_tied(s.choice), s
            assert s.impact == pytest.approx(bf, abs=1e-9), (s.method, s, bf)
        others = [solve_greedy(p), solve_random(p, seed=1), *solve_ilp_kbest(p, 3),
                  freebits_heuristic(p, list(rng.integers(0, 4, p.n_layers))),
                  *solve_scored(p, lambda ch: -float(np.sum(ch)), top=2)]
        for s in others:
            assert s.feasible and p.is_tied(s.choice) and len(s.choice) == p.n_layers, s
            assert s.impact >= bf - 1e-9
        assert p.is_tied(prefer_free_precision(p, solve_ilp(p).choice))
        space = feasible_configs(p)
        assert all(p.is_tied(t) for t in space)
        assert min(float(p.impact[np.arange(p.n_layers), list(t)].sum()) for t in space) \
            == pytest.approx(bf, abs=1e-9)
    assert checked >= 5


def test_tied_infeasible_closest_is_tied():
    p = Problem([[0.0, 1.0]] * 3, [[[4.0], [1.0]], [[1.0], [4.0]], [[2.0], [2.0]]],
                ("cycles",), {"cycles": 2.0}, [(8, 8), (4, 4)], ties=[[0, 1]])
    with pytest.raises(InfeasibleBudget, match="closest one is") as ei:
        solve_dp(p)
    assert p.is_tied(ei.value.closest.choice)
    assert p.is_tied(closest_feasible(p).choice)


def test_projection_shortcut_search_end_to_end(tmp_path, capsys):
    """`rvmpq search --method all` on a saved model with a projection shortcut: every method
    and baseline returns a configuration that exports, with the block input's two readers at
    equal bits; config.json lists the tie group and the members with their own bits."""
    from rvmpq.sw.cli import main
    from rvmpq.sw.search.qnn import QNetwork

    path = tmp_path / "proj.pt"
    torch.save(_trained_block(), path)
    rc = main(["search", "--model", str(path), "--data", "digits", "--budget", "latency=0.7",
               "--method", "all", "--no-qat", "--configs", "4", "--costs", "stand-in",
               "-o", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["tie_groups"] == [["c1", "cs"]]
    methods = ["dp", "ilp", "greedy", "diff", "rerank", "local", "hawq-ilp", "random",
               "uniform-2"]
    assert set(methods) <= set(cfg["all_methods"])
    for m, r in cfg["all_methods"].items():
        by = {l["name"]: l for l in r["layers"]}
        assert len(by) == 5
        assert by["c1"]["a_bits"] == by["cs"]["a_bits"] == by["c1"]["w_bits"] \
            == by["cs"]["w_bits"], (m, r["bits"])
        if m in methods:
            assert r["feasible"], m
    assert cfg["validated_accuracy"] > 50          # a trained network, not chance
    net = QNetwork.load(tmp_path / "out" / "qnet.json")
    qb = {l.name: l for l in net.layers}
    assert qb["c1"].a_bits == qb["cs"].a_bits
    assert "tie groups" in (tmp_path / "out" / "report.md").read_text()


def test_metrics_count_a_shared_input_once(monkeypatch):
    """noise and mqe charge the tie group's one input to its first member only (the solvers
    add the members' impacts up); every other layer keeps its own input's share."""
    from rvmpq.sw.search import sensitivity as sens
    from rvmpq.sw.search.models import load_dataset, trace_model
    from rvmpq.sw.search.quantizer import Quantizer

    torch.manual_seed(0)
    layers = trace_model(ProjBlock().eval())
    x = load_dataset("digits").x_val[:64]
    qz = Quantizer(layers, x)
    (first, second), = qz.tie_groups()
    bits = [8, 4, 2]
    nsr, _ = sens.metric_noise(qz, bits)
    for k in range(qz.n_compute):
        w = sens._layer_weights(qz, k)
        a = qz._acts[k]
        for j, b in enumerate(bits):
            ew = np.mean(sens._wq_error(qz, k, b) ** 2) / np.mean(w ** 2)
            ea = np.mean((sens._aq(qz, k, a, b) - a) ** 2) / np.mean(a ** 2)
            assert ea > 0
            assert nsr[k, j] == pytest.approx(ew if k == second else ew + ea, rel=1e-9), (k, b)

    # mqe: replace the input quantizer by a gross perturbation; only the layers that own
    # their input see it (the random draws are the same in both runs)
    base = sens.metric_mqe(qz, x, bits, draws=2, max_samples=32)
    monkeypatch.setattr(sens, "_aq", lambda qz, k, a, b: a + 1.0)
    loud = sens.metric_mqe(qz, x, bits, draws=2, max_samples=32)
    np.testing.assert_array_equal(loud[second], base[second])
    for k in range(qz.n_compute):
        if k != second:
            assert np.all(loud[k] > base[k] + 1e-6), k


class PoolPair(nn.Module):
    """A tensor and its max pooling read by two convs whose outputs are added: ``a`` reads
    ``h`` (8x8) through a 3x3 conv and a stride-2 conv, ``b`` reads ``max_pool2d(h, 2)``
    (4x4) through a 1x1 conv. One tie group whose members read different tensors of one
    grid (the pooled values are a subset of ``h``'s)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.d = nn.Conv2d(4, 4, 2, stride=2)
        self.b = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.c(x))
        a = self.d(torch.relu(self.a(h)))
        b = self.b(nn.functional.max_pool2d(h, 2))
        return self.fc(torch.flatten(torch.relu(a + b), 1))


def test_tensor_and_its_pooling_share_one_calibrated_grid():
    """The readers of a tensor and of its max pooling are one tie group calibrated on both
    inputs' values: every uniform precision exports (each member calibrated on its own input
    alone would give the one grid two scales, and the export would be refused), the two share
    one scale, and the integer model tracks the float one."""
    from rvmpq.sw.search.models import float_forward, trace_model
    from rvmpq.sw.search.qnn import int_logits
    from rvmpq.sw.search.quantizer import Quantizer

    torch.manual_seed(0)
    layers = trace_model(PoolPair().eval(), example=np.zeros((2, 1, 8, 8), np.float32))
    x = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    qz = Quantizer(layers, x)
    names = [l.name for l in layers if l.is_compute]
    ka, kb = names.index("a"), names.index("b")
    assert [[names[k] for k in g] for g in qz.tie_groups()] == [["a", "b"]]
    # the members' own inputs differ (the pooled tensor is smaller), the group grid covers h
    assert qz._acts[ka].size == 4 * qz._acts[kb].size
    ref = float_forward(layers, x)
    for bits in (16, 8, 4):
        n = len(names)
        qnet = qz.export([bits] * n, [bits] * n)
        assert qz.act_scale(ka, bits) == qz.act_scale(kb, bits)
        err = np.abs(int_logits(qnet, x) - ref).max() / np.abs(ref).max()
        print(f"INT{bits}: largest logit error {err:.4f} of the largest logit")
        assert err < {16: 1e-3, 8: 0.03, 4: 0.3}[bits], (bits, err)
    with pytest.raises(ValueError, match="equal a_bits"):
        ab = [8] * len(names)
        ab[kb] = 4
        qz.export([8] * len(names), ab)
