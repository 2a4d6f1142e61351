"""MPQ solvers: DP and ILP reach the brute-force optimum; budgets; speed on a 53-layer table.

Random problems print their seed; replay with RVMPQ_SEED=<seed> pytest verif/test_search_solvers.py.
"""

import os
import random
import time

import numpy as np
import pytest

from rvmpq.sw.search.costs_api import (COST_METRICS, AnalyticStandIn, cost_table,
                                       mobilenetv2_shapes)
from rvmpq.sw.search.solvers import (InfeasibleBudget, Problem, freebits_heuristic,
                                     prefer_free_precision, solve, solve_bruteforce, solve_dp,
                                     solve_greedy, solve_ilp, solve_random, solve_uniform)

SEED = int(os.environ.get("RVMPQ_SEED", random.randrange(1 << 30)))
OPTS = [(16, 16), (8, 8), (4, 4), (2, 2)]


def random_problem(rng, n_budgets):
    L = int(rng.integers(2, 7))
    imp = np.sort(rng.random((L, 4)) * rng.random((L, 1)) * 3, axis=1)
    costs = np.ascontiguousarray(np.sort(rng.random((L, 4, 4)) * 100, axis=1)[:, ::-1, :])
    hi, lo = costs[:, 0].sum(0), costs[:, -1].sum(0)
    budgets = {}
    for m in range(n_budgets):
        budgets[COST_METRICS[m]] = lo[m] + rng.random() * (hi[m] - lo[m])
    return Problem(imp, costs, COST_METRICS, budgets, OPTS)


@pytest.mark.parametrize("n_budgets", [1, 2, 3])
def test_dp_and_ilp_reach_bruteforce_optimum(n_budgets):
    rng = np.random.default_rng(SEED + n_budgets)
    print(f"seed {SEED + n_budgets} (replay: RVMPQ_SEED={SEED} pytest {__file__})")
    checked = 0
    for _ in range(25):
        p = random_problem(rng, n_budgets)
        try:
            bf = solve_bruteforce(p)
        except InfeasibleBudget:
            with pytest.raises(InfeasibleBudget):
                solve_ilp(p)
            continue
        checked += 1
        # DP with a vanishing impact step is exact; with the default 0.001-point step it is
        # optimal up to L * step
        for s in (solve_dp(p, step=1e-12), solve_ilp(p)):
            assert s.feasible, s
            assert s.impact == pytest.approx(bf.impact, abs=1e-9), (s.method, s, bf)
        d = solve_dp(p)
        assert d.feasible and bf.impact - 1e-9 <= d.impact <= bf.impact + p.n_layers * 1e-3
        g = solve_greedy(p)
        assert g.feasible and g.impact >= bf.impact - 1e-9
    assert checked >= 5


def test_no_budget_picks_lowest_impact():
    p = Problem([[0.0, 1.0], [2.0, 0.5]], np.ones((2, 2, 1)), ("cycles",), {}, [(8, 8), (4, 4)])
    for f in (solve_dp, solve_ilp):
        assert f(p).choice == [0, 1]
    # greedy only lowers precision while a budget is violated: with none it keeps the top option
    assert solve_greedy(p).choice == [0, 0]


def test_prefer_free_precision_widens_only_free_layers():
    """A layer with zero impact and the same cost at every option (a blind spot of the
    objective) is moved to its widest option; a layer where wider costs more is not; the
    result stays within budget and its objective does not grow."""
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    for _ in range(50):
        p = random_problem(rng, int(rng.integers(1, 4)))
        k = int(rng.integers(p.n_layers))
        p.impact[k] = 0.0
        p.costs[k] = p.costs[k, -1]                      # flat: INT2's cost at every option
        try:
            s = solve_ilp(p)
        except InfeasibleBudget:
            continue
        ch = list(s.choice)
        ch[k] = len(OPTS) - 1                            # what an indifferent solver may return
        out = prefer_free_precision(p, ch)
        assert out[k] == 0                               # (16, 16): free, and widest
        t = p.evaluate(out)
        assert t.feasible and t.impact <= p.evaluate(ch).impact + 1e-12
        idx, _ = p.budget_vector()
        for l in range(p.n_layers):                      # every layer only moves to a free option
            assert p.impact[l, out[l]] <= p.impact[l, ch[l]] + 1e-12
            assert np.all(p.costs[l, out[l], idx] <= p.costs[l, ch[l], idx])


def test_infeasible_budget_names_closest_config():
    p = random_problem(np.random.default_rng(0), 1)
    p.budgets = {"cycles": float(p.costs[:, -1, 0].sum()) * 0.5}
    for f in (solve_dp, solve_ilp, solve_greedy):
        with pytest.raises(InfeasibleBudget, match="closest one is .*cycles: needs") as ei:
            f(p)
        assert ei.value.closest.choice == [3] * p.n_layers


def test_problem_rejects_unknown_budget_and_method():
    with pytest.raises(ValueError, match="allowed values"):
        Problem(np.zeros((1, 2)), np.zeros((1, 2, 1)), ("cycles",), {"latency": 1}, OPTS[:2])
    p = random_problem(np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match="allowed values"):
        solve(p, "simplex")


def test_baselines_and_freebits():
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    p = random_problem(rng, 1)
    p.budgets = {"cycles": float(p.costs[:, 1, 0].sum())}  # uniform INT8 is just feasible
    u = solve_uniform(p, (8, 8))
    assert u.feasible and u.choice == [1] * p.n_layers
    assert not solve_uniform(p, (16, 16)).feasible or np.allclose(p.costs[:, 0], p.costs[:, 1])
    assert solve_random(p, seed=1).feasible
    fb = freebits_heuristic(p, [3] * p.n_layers)
    assert fb.feasible
    assert fb.impact <= p.evaluate([3] * p.n_layers).impact + 1e-12
    # from an infeasible start the heuristic repairs
    assert freebits_heuristic(p, [0] * p.n_layers).feasible


@pytest.mark.parametrize("budgets", [("cycles",), ("cycles", "weight_bytes"),
                                     ("cycles", "weight_bytes", "energy")])
def test_mobilenetv2_table_is_fast(budgets):
    shapes = mobilenetv2_shapes()
    assert len(shapes) >= 50
    costs = cost_table(AnalyticStandIn(), shapes, OPTS)
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    imp = np.array([[0, 0.01, 0.3, 3.0]]) * rng.lognormal(0, 1, (len(shapes), 1))
    int8 = costs[:, 1].sum(0)
    fr = {"cycles": 0.6, "weight_bytes": 0.7, "energy": 0.65}
    p = Problem(imp, costs, COST_METRICS,
                {m: fr[m] * int8[COST_METRICS.index(m)] for m in budgets}, OPTS)
    t0 = time.perf_counter()
    ilp = solve_ilp(p)
    t1 = time.perf_counter()
    dp = solve_dp(p)
    t2 = time.perf_counter()
    print(f"{len(shapes)} layers, budgets {budgets}: ilp {t1 - t0:.2f} s impact {ilp.impact:.4f}; "
          f"dp {t2 - t1:.2f} s impact {dp.impact:.4f}")
    assert t1 - t0 < 10 and t2 - t1 < 10
    assert ilp.feasible and dp.feasible
    # DP is exact up to its impact step with one budget; a capped heuristic with several
    assert dp.impact <= ilp.impact + (0.06 if len(budgets) == 1 else 0.01 * ilp.impact + 0.1)


def test_ilp_kbest_matches_bruteforce_ranking():
    """The k best configurations (rerank's candidates) are the k smallest feasible impacts."""
    import itertools

    from rvmpq.sw.search.solvers import solve_ilp_kbest

    rng = np.random.default_rng(SEED + 7)
    print(f"seed {SEED + 7} (replay: RVMPQ_SEED={SEED} pytest {__file__})")
    checked = 0
    for _ in range(10):
        p = random_problem(rng, 2)
        L = p.n_layers
        feas = sorted(p.evaluate(ch).impact for ch in itertools.product(range(4), repeat=L)
                      if p.evaluate(ch).feasible)
        if len(feas) < 3:
            continue
        checked += 1
        ks = solve_ilp_kbest(p, 5)
        assert len(ks) == min(5, len(feas))
        assert all(s.feasible for s in ks)
        assert len({tuple(s.choice) for s in ks}) == len(ks)            # all distinct
        assert [s.impact for s in ks] == pytest.approx(feas[:len(ks)], abs=1e-9)
    assert checked >= 3
    with pytest.raises(ValueError, match="k="):
        solve_ilp_kbest(p, 0)


def _interacting_score(rng, L):
    """A non-additive configuration score (what an integer-model evaluation looks like to the
    solver): per-layer terms plus pairwise interaction terms, so no additive impact table
    ranks configurations the same way."""
    w = rng.normal(size=(L, 4))
    pair = rng.normal(size=(L, 4, L, 4)) * 0.5

    def score(ch):
        return float(sum(w[l, c] for l, c in enumerate(ch))
                     + sum(pair[i, ch[i], j, ch[j]] for i in range(L) for j in range(i + 1, L)))
    return score


def _within(p, ch):
    """Budgets checked here, independently of Problem.evaluate."""
    tot = {m: sum(p.costs[l, c, p.metrics.index(m)] for l, c in enumerate(ch)) for m in p.budgets}
    return all(tot[m] <= b * (1 + 1e-9) + 1e-9 for m, b in p.budgets.items())


def test_scored_search_finds_bruteforce_best_score():
    """Exhaustive regime: solve_scored returns the configuration of the highest score among
    all that meet the budgets (brute force here), the top-k in order, and never calls the
    score more often than max_evals."""
    import itertools

    from rvmpq.sw.search.solvers import solve_scored

    rng = np.random.default_rng(SEED + 11)
    print(f"seed {SEED + 11} (replay: RVMPQ_SEED={SEED} pytest {__file__})")
    checked = 0
    for _ in range(15):
        p = random_problem(rng, int(rng.integers(1, 4)))
        L = p.n_layers
        score = _interacting_score(rng, L)
        feas = [ch for ch in itertools.product(range(4), repeat=L) if _within(p, ch)]
        if not feas:
            with pytest.raises(InfeasibleBudget):
                solve_scored(p, score)
            continue
        checked += 1
        want = sorted((score(list(ch)) for ch in feas), reverse=True)
        calls = []
        got = solve_scored(p, lambda ch: calls.append(1) or score(ch), max_evals=4 ** L, top=3)
        assert len(calls) == len(feas)                   # every feasible one, once
        assert [score(s.choice) for s in got] == pytest.approx(want[:3])
        assert all(s.feasible and _within(p, s.choice) for s in got)


@pytest.mark.parametrize("max_evals", [1, 5, 20])
def test_scored_search_never_over_budget_and_is_deterministic(max_evals):
    """Local-search regime (fewer evaluations than feasible configurations, larger problems):
    every returned configuration meets every budget, the score is called at most max_evals
    times, a seed gives the same answer twice, and the result is never worse than the
    starts it was given."""
    from rvmpq.sw.search.solvers import solve_scored

    rng = np.random.default_rng(SEED + 13 + max_evals)
    print(f"seed {SEED + 13 + max_evals} (replay: RVMPQ_SEED={SEED} pytest {__file__})")
    checked = 0
    for _ in range(10):
        L = int(rng.integers(6, 12))
        imp = np.sort(rng.random((L, 4)), axis=1)
        costs = np.ascontiguousarray(np.sort(rng.random((L, 4, 4)) * 100, axis=1)[:, ::-1, :])
        hi, lo = costs[:, 0].sum(0), costs[:, -1].sum(0)
        budgets = {m: lo[i] + rng.uniform(0.1, 0.6) * (hi[i] - lo[i])
                   for i, m in enumerate(COST_METRICS[:int(rng.integers(1, 4))])}
        p = Problem(imp, costs, COST_METRICS, budgets, OPTS)
        score = _interacting_score(rng, L)
        start = solve_ilp(p).choice
        calls = []
        a = solve_scored(p, lambda ch: calls.append(1) or score(ch), starts=[start],
                         max_evals=max_evals, top=4, seed=3)
        b = solve_scored(p, score, starts=[start], max_evals=max_evals, top=4, seed=3)
        assert 1 <= len(calls) <= max_evals and len(a) <= min(4, max_evals)
        assert all(s.feasible and _within(p, s.choice) for s in a)
        assert [s.choice for s in a] == [s.choice for s in b]
        assert score(a[0].choice) >= score(start) - 1e-12
        assert [score(s.choice) for s in a] == sorted((score(s.choice) for s in a), reverse=True)
        checked += 1
    assert checked == 10
    with pytest.raises(ValueError, match="max_evals"):
        solve_scored(p, score, max_evals=0)
