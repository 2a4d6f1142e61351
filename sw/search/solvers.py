"""Mixed-precision solvers behind one interface.

Every solver takes a :class:`Problem` (per-layer options with a predicted accuracy impact and a
cost vector each, plus budgets) and returns a :class:`Solution` (one option per layer). The
objective is always the same: minimise the summed impact subject to every budget.

Solvers: ``greedy`` (Edge-MPQ's heuristic), ``dp`` (Edge-MPQ's dynamic programming: several
constraints at once, impact in fine steps), ``ilp`` (HiGHS through ``scipy.optimize.milp``;
with Hessian impacts this is the HAWQ-V3 formulation), ``freebits`` (the hardware-aware latency
heuristic that follows a differentiable search), ``random`` and ``uniform`` baselines and an
exhaustive ``bruteforce`` for tests.

Tie groups (``Problem.ties``): layers that read one tensor must share one option (their
input is one quantized tensor). Every solver then solves the *merged* problem
(:meth:`Problem.merged`: one layer per group, impact and every cost summed over the members
per option), which is exact for the tied problem, and expands the chosen option back to every
member (:meth:`Problem.expand`); choices passed in (starts, a differentiable search's argmax)
are contracted to the groups (:meth:`Problem.contract`). Without ties the merged problem is
the problem itself.

:func:`solve_scored` is the one solver whose objective is not the additive impact: it maximises
a caller-supplied score of a whole configuration (the pipeline's ``local`` method scores with
the integer model on the validation split), under the same budgets.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np

__all__ = ["Problem", "Solution", "InfeasibleBudget", "solve", "solve_greedy", "solve_dp",
           "solve_ilp", "solve_bruteforce", "solve_random", "solve_uniform", "freebits_heuristic",
           "closest_feasible", "solve_ilp_kbest", "solve_scored", "feasible_configs",
           "prefer_free_precision", "SOLVERS"]


class InfeasibleBudget(ValueError):
    """No configuration meets the budgets; ``closest`` holds the nearest feasible-shaped one."""

    def __init__(self, msg: str, closest: "Solution | None" = None):
        super().__init__(msg)
        self.closest = closest


@dataclasses.dataclass
class Problem:
    """A mixed-precision selection problem.

    Attributes
    ----------
    impact : numpy.ndarray
        ``(L, O)`` predicted accuracy loss (points, additive over layers) of option o at layer l.
    costs : numpy.ndarray
        ``(L, O, M)`` costs, metric order ``metrics``.
    metrics : tuple of str
        Cost metric names.
    budgets : dict
        ``metric -> maximum total``; metrics not named are unconstrained.
    options : list
        Label of each option, e.g. ``(w_bits, a_bits)``.
    layer_names : list of str, optional
    ties : list of list of int, optional
        Tie groups: layer indices that must take one option (two or more each, disjoint).
        Solvers solve :meth:`merged` and return choices expanded to every layer.
    """

    impact: np.ndarray
    costs: np.ndarray
    metrics: tuple
    budgets: dict
    options: list
    layer_names: list | None = None
    ties: list | None = None

    def __post_init__(self):
        self.impact = np.asarray(self.impact, dtype=np.float64)
        self.costs = np.asarray(self.costs, dtype=np.float64)
        L, O = self.impact.shape
        if self.costs.shape[:2] != (L, O) or self.costs.shape[2] != len(self.metrics):
            raise ValueError(f"costs shape {self.costs.shape} does not match impact {(L, O)} "
                             f"and {len(self.metrics)} metrics")
        for m in self.budgets:
            if m not in self.metrics:
                raise ValueError(f"budget on unknown metric {m!r}; allowed values: "
                                 f"{list(self.metrics)}")

        L = self.impact.shape[0]
        ties = [sorted(int(k) for k in g) for g in (self.ties or []) if len(g) > 1]
        seen = [k for g in ties for k in g]
        if len(seen) != len(set(seen)) or any(not 0 <= k < L for k in seen):
            raise ValueError(f"ties {self.ties}: groups must be disjoint layer indices in "
                             f"0..{L - 1}")
        self.ties = sorted(ties, key=lambda g: g[0]) or None

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return self.impact.shape[0]

    def groups(self) -> list[list[int]]:
        """Every layer's group, ordered by first member: a tie group, or the layer alone
        (the layers of the merged problem, in order)."""
        tied = {g[0]: g for g in self.ties or []}
        inner = {k for g in self.ties or [] for k in g[1:]}
        return [tied.get(l, [l]) for l in range(self.n_layers) if l not in inner]

    def merged(self) -> "Problem":
        """The problem with one layer per group (:meth:`groups`): impact and each cost of an
        option are the sums over the group's members. Exact for the tied problem (one option
        per group); the problem itself (same object) when there are no ties."""
        if not self.ties:
            return self
        gs = self.groups()
        names = (None if self.layer_names is None else
                 ["+".join(str(self.layer_names[k]) for k in g) for g in gs])
        return Problem(np.stack([self.impact[g].sum(0) for g in gs]),
                       np.stack([self.costs[g].sum(0) for g in gs]), self.metrics,
                       dict(self.budgets), list(self.options), names)

    def expand(self, choice) -> list:
        """A merged-problem choice (one option per group) as one option per layer."""
        gs = self.groups()
        if len(choice) != len(gs):
            raise ValueError(f"choice of {len(choice)} entries for {len(gs)} groups")
        out = [0] * self.n_layers
        for g, c in zip(gs, choice):
            for k in g:
                out[k] = int(c)
        return out

    def contract(self, choice, strict: bool = True) -> list:
        """A per-layer choice as one option per group (inverse of :meth:`expand`). A group
        whose members differ raises ``ValueError`` when ``strict``, else takes its members'
        most precise option (largest ``sum(options[o])``; the solver then repairs the
        budgets)."""
        choice = [int(c) for c in choice]
        if len(choice) != self.n_layers:
            raise ValueError(f"choice of {len(choice)} entries for {self.n_layers} layers")
        out = []
        for g in self.groups():
            opts = {choice[k] for k in g}
            if len(opts) > 1 and strict:
                raise ValueError(f"layers {g} are tied but the choice gives them options "
                                 f"{sorted(opts)}")
            out.append(max(opts, key=lambda o: (sum(self.options[o]), -o)))
        return out

    def is_tied(self, choice) -> bool:
        """Whether ``choice`` (one option per layer) gives every tie group one option."""
        return all(len({int(choice[k]) for k in g}) == 1 for g in self.ties or [])

    def expand_solution(self, sol: "Solution") -> "Solution":
        """A merged-problem :class:`Solution` as this problem's (same impact and costs)."""
        if not self.ties:
            return sol
        return self.evaluate(self.expand(sol.choice), sol.method, sol.seconds)

    def budget_vector(self) -> tuple[np.ndarray, np.ndarray]:
        """``(metric indices, limits)`` of the constrained metrics."""
        idx = np.array([self.metrics.index(m) for m in self.budgets], dtype=int)
        return idx, np.array([float(self.budgets[m]) for m in self.budgets])

    def evaluate(self, choice, method: str = "", seconds: float = 0.0) -> "Solution":
        """Build the :class:`Solution` of a choice (one option index per layer)."""
        choice = [int(c) for c in choice]
        r = np.arange(self.n_layers)
        imp = float(self.impact[r, choice].sum())
        tot = self.costs[r, choice].sum(0)
        costs = {m: float(v) for m, v in zip(self.metrics, tot)}
        feas = all(costs[m] <= b * (1 + 1e-9) + 1e-9 for m, b in self.budgets.items())
        return Solution(choice, [self.options[c] for c in choice], imp, costs, feas, method,
                        seconds)


@dataclasses.dataclass
class Solution:
    """A chosen configuration and its totals."""

    choice: list
    options: list
    impact: float
    costs: dict
    feasible: bool
    method: str = ""
    seconds: float = 0.0


def _timed(method):
    def deco(fn):
        def wrapper(problem: Problem, *a, **k):
            if problem.ties:
                with _tied(problem):
                    return problem.expand_solution(wrapper(problem.merged(), *a, **k))
            t0 = time.perf_counter()
            choice = fn(problem, *a, **k)
            return problem.evaluate(choice, method, time.perf_counter() - t0)
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper
    return deco


class _tied:
    """Context of a solver run on ``problem.merged()``: an :class:`InfeasibleBudget` raised
    there is raised again with the closest configuration of the tied problem (per layer)."""

    def __init__(self, problem: Problem):
        self.problem = problem

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if typ is not None and issubclass(typ, InfeasibleBudget) and (
                exc.closest is None or len(exc.closest.choice) != self.problem.n_layers):
            _raise_infeasible(self.problem)
        return False


def prefer_free_precision(problem: Problem, choice) -> list:
    """Per layer, move ``choice`` to the widest option that is free: predicted impact no
    larger than the chosen option's and every *budgeted* cost no larger either (so the
    configuration stays within budget and its objective does not grow). Options are ordered by
    ``sum(options[o])`` (``w_bits + a_bits``). Used where an objective is blind to a layer:
    an impact of 0 at every precision and the same cost at every precision leave an exact
    solver indifferent, and it may return the narrowest option for nothing. A tie group moves as one
    (on :meth:`Problem.merged`)."""
    if problem.ties:
        return problem.expand(prefer_free_precision(problem.merged(), problem.contract(choice)))
    idx, _ = problem.budget_vector()
    out = []
    for l, c in enumerate(choice):
        c = int(c)
        free = [o for o in range(problem.impact.shape[1])
                if problem.impact[l, o] <= problem.impact[l, c] + 1e-12
                and np.all(problem.costs[l, o, idx] <= problem.costs[l, c, idx])]
        out.append(max(free, key=lambda o: (sum(problem.options[o]), o == c)))
    return out


def closest_feasible(problem: Problem) -> Solution:
    """The configuration with the smallest worst-case budget ratio ``max_m cost_m / budget_m``.

    Solved exactly as a MILP (minimise t subject to cost_m <= t * budget_m); a tie group
    takes one option.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    if problem.ties:
        return problem.expand_solution(closest_feasible(problem.merged()))

    L, O = problem.impact.shape
    idx, lim = problem.budget_vector()
    n = L * O + 1
    c = np.zeros(n)
    c[-1] = 1.0
    c[:-1] = 1e-9 * problem.impact.ravel()  # tie-break on impact
    A = [np.kron(np.eye(L), np.ones(O))]
    A[0] = np.hstack([A[0], np.zeros((L, 1))])
    rows = []
    for mi, b in zip(idx, lim):
        rows.append(np.concatenate([problem.costs[:, :, mi].ravel() / b, [-1.0]]))
    cons = [LinearConstraint(A[0], 1, 1)]
    if rows:
        cons.append(LinearConstraint(np.array(rows), -np.inf, 0))
    integ = np.ones(n)
    integ[-1] = 0
    res = milp(c, constraints=cons, integrality=integ,
               bounds=Bounds(np.zeros(n), np.concatenate([np.ones(n - 1), [np.inf]])))
    x = np.round(res.x[:-1]).reshape(L, O)
    return problem.evaluate(x.argmax(1), "closest")


def _raise_infeasible(problem: Problem):
    best = closest_feasible(problem)
    parts = ", ".join(f"{m}: needs {best.costs[m]:.6g} > budget {b:.6g}"
                      for m, b in problem.budgets.items() if best.costs[m] > b)
    raise InfeasibleBudget(
        f"no configuration meets the budgets {problem.budgets}; the closest one is "
        f"{best.options} ({parts}); relax the budget(s) accordingly", best)


def _check_feasible(problem: Problem):
    idx, lim = problem.budget_vector()
    # each metric alone at its own minimum
    mins = problem.costs[:, :, idx].min(1).sum(0) if len(idx) else np.zeros(0)
    if np.any(mins > lim * (1 + 1e-9) + 1e-9):
        _raise_infeasible(problem)


@_timed("bruteforce")
def solve_bruteforce(problem: Problem, max_configs: int = 2_000_000):
    """Exhaustive search (tests only); refuses more than ``max_configs`` configurations."""
    L, O = problem.impact.shape
    if O ** L > max_configs:
        raise ValueError(f"{O}**{L} configurations exceed max_configs={max_configs}")
    idx, lim = problem.budget_vector()
    best, best_c = np.inf, None
    r = np.arange(L)
    for ch in itertools.product(range(O), repeat=L):
        ch = list(ch)
        tot = problem.costs[r, ch][:, idx].sum(0)
        if np.all(tot <= lim * (1 + 1e-9) + 1e-9):
            imp = problem.impact[r, ch].sum()
            if imp < best - 1e-12:
                best, best_c = imp, ch
    if best_c is None:
        _raise_infeasible(problem)
    return best_c


def _order_by_precision(problem: Problem):
    # options from most to least expensive (by the summed normalised cost over all layers)
    tot = problem.costs.sum(0)
    norm = tot / np.maximum(tot.max(0, keepdims=True), 1e-12)
    return list(np.argsort(-norm.sum(1), kind="stable"))


@_timed("greedy")
def solve_greedy(problem: Problem):
    """Edge-MPQ greedy: start at the most precise option everywhere, then repeatedly lower the
    layer whose next step loses the least impact per unit of normalised budget violation
    removed, until every budget holds."""
    _check_feasible(problem)
    order = _order_by_precision(problem)
    L = problem.n_layers
    pos = [0] * L
    idx, lim = problem.budget_vector()
    r = np.arange(L)
    while True:
        ch = [order[p] for p in pos]
        tot = problem.costs[r, ch][:, idx].sum(0)
        over = tot > lim * (1 + 1e-9) + 1e-9
        if not over.any():
            return ch
        best, best_l = None, None
        for l in range(L):
            if pos[l] + 1 >= len(order):
                continue
            a, b = order[pos[l]], order[pos[l] + 1]
            saved = ((problem.costs[l, a, idx] - problem.costs[l, b, idx]) / lim)[over].sum()
            if saved <= 0:
                continue
            d_imp = problem.impact[l, b] - problem.impact[l, a]
            score = d_imp / saved
            if best is None or score < best:
                best, best_l = score, l
        if best_l is None:
            _raise_infeasible(problem)
        pos[best_l] += 1


def _pareto_keep(bucket, c_cost):
    """Indices of the states not dominated by a state of a lower-or-equal impact step."""
    M = c_cost.shape[1]
    order = np.lexsort(tuple(c_cost[:, j] for j in range(M - 1, -1, -1)) + (bucket,))
    if M == 0:
        return order[:1]
    keep = []
    kept = np.empty((len(order), M))
    nk = 0
    for i in order:
        if nk and np.any(np.all(kept[:nk] <= c_cost[i] + 1e-9, axis=1)):
            continue
        keep.append(i)
        kept[nk] = c_cost[i]
        nk += 1
    return np.array(keep, dtype=int)


def _first_per_bucket(bucket, key):
    order = np.lexsort((key, bucket))
    _, first = np.unique(bucket[order], return_index=True)
    return order[first]


def _capped_keep(bucket, c_imp, u):
    """Per impact step keep the cheapest state in each metric and the one with the smallest
    worst budget ratio, then drop states whose every metric is beaten by a lower step's
    running minimum of that same representative kind."""
    keys = [u[:, j] for j in range(u.shape[1])] + [u.max(1)]
    sel = []
    for key in keys:
        idx = _first_per_bucket(bucket, key + 1e-12 * c_imp)
        # a later step is useless for this key unless it is strictly cheaper
        kk = key[idx]
        run = np.minimum.accumulate(kk)
        useful = np.concatenate([[True], kk[1:] < run[:-1] - 1e-12])
        sel.append(idx[useful])
    return np.unique(np.concatenate(sel))


@_timed("dp")
def solve_dp(problem: Problem, step: float | None = None, max_states: int = 20000,
             max_exact: int = 4000):
    """Edge-MPQ dynamic programming over layers with every budget at once.

    States are partial configurations; a state is dropped when it cannot meet a budget even with
    the cheapest options for the remaining layers, or when another one with an impact in the
    same or a lower step of size ``step`` (default: 0.001 accuracy points, or 1/50000 of the impact spread if coarser) costs no more
    in every constrained metric. While a layer has at most ``max_exact`` candidate states this
    dominance pruning is exact and the result optimal up to ``L * step`` in impact; beyond that
    (large networks with several budgets) each impact step keeps only its cheapest state per
    metric and the state with the smallest worst budget ratio, a heuristic that keeps the DP
    fast (compare with ``ilp`` for the exact optimum).
    """
    _check_feasible(problem)
    L, O = problem.impact.shape
    idx, lim = problem.budget_vector()
    C = problem.costs[:, :, idx] if len(idx) else np.zeros((L, O, 0))
    imp = problem.impact
    if step is None:
        spread = float((imp.max(1) - imp.min(1)).sum())
        step = max(1e-3, spread / 50000.0)
    # cheapest completion per metric from layer l on
    rest = np.zeros((L + 1, C.shape[2]))
    for l in range(L - 1, -1, -1):
        rest[l] = rest[l + 1] + C[l].min(0)
    tol = lim * (1 + 1e-9) + 1e-9
    s_imp = np.zeros(1)
    s_cost = np.zeros((1, C.shape[2]))
    back: list[tuple[np.ndarray, np.ndarray]] = []
    for l in range(L):
        n = len(s_imp)
        c_imp = (s_imp[:, None] + imp[l][None, :]).ravel()
        c_cost = (s_cost[:, None, :] + C[l][None, :, :]).reshape(n * O, -1)
        parent = np.repeat(np.arange(n), O)
        opt = np.tile(np.arange(O), n)
        ok = np.all(c_cost + rest[l + 1] <= tol, axis=1)
        c_imp, c_cost, parent, opt = c_imp[ok], c_cost[ok], parent[ok], opt[ok]
        bucket = np.floor(c_imp / step)
        if len(c_imp) <= max_exact:
            keep = _pareto_keep(bucket, c_cost)
        else:
            keep = _capped_keep(bucket, c_imp, c_cost / lim)
        s_imp, s_cost = c_imp[keep], c_cost[keep]
        back.append((parent[keep], opt[keep]))
    if len(s_imp) == 0:
        _raise_infeasible(problem)
    i = int(np.argmin(s_imp))
    choice = [0] * L
    for l in range(L - 1, -1, -1):
        par, opt = back[l]
        choice[l] = int(opt[i])
        i = int(par[i])
    return choice


@_timed("ilp")
def solve_ilp(problem: Problem, time_limit: float = 60.0):
    """Exact 0/1 ILP with HiGHS (``scipy.optimize.milp``): one option per layer, every budget."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    _check_feasible(problem)
    L, O = problem.impact.shape
    idx, lim = problem.budget_vector()
    cons = [LinearConstraint(np.kron(np.eye(L), np.ones(O)), 1, 1)]
    if len(idx):
        A = np.stack([problem.costs[:, :, m].ravel() for m in idx])
        cons.append(LinearConstraint(A, -np.inf, lim * (1 + 1e-9) + 1e-9))
    res = milp(problem.impact.ravel(), constraints=cons, integrality=np.ones(L * O),
               bounds=Bounds(0, 1), options={"time_limit": time_limit, "mip_rel_gap": 0})
    if res.x is None:
        _raise_infeasible(problem)
    return list(np.round(res.x).reshape(L, O).argmax(1))


def solve_ilp_kbest(problem: Problem, k: int = 8, time_limit: float = 60.0) -> list:
    """The ``k`` best configurations of the additive objective, best first (HiGHS ILP with a
    no-good cut per solution found: ``sum of the chosen x <= L - 1``). Fewer are returned when
    fewer feasible configurations exist. Each is a :class:`Solution` (method ``"ilp-k"``)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    if k < 1:
        raise ValueError(f"k={k}: must be >= 1")
    if problem.ties:
        with _tied(problem):
            return [problem.expand_solution(s)
                    for s in solve_ilp_kbest(problem.merged(), k, time_limit)]
    _check_feasible(problem)
    t0 = time.perf_counter()
    L, O = problem.impact.shape
    idx, lim = problem.budget_vector()
    rows = [np.kron(np.eye(L), np.ones(O))]
    lo, hi = [np.ones(L)], [np.ones(L)]
    if len(idx):
        rows.append(np.stack([problem.costs[:, :, m].ravel() for m in idx]))
        lo.append(np.full(len(idx), -np.inf))
        hi.append(lim * (1 + 1e-9) + 1e-9)
    out = []
    for _ in range(k):
        cons = LinearConstraint(np.vstack(rows), np.concatenate(lo), np.concatenate(hi))
        res = milp(problem.impact.ravel(), constraints=[cons], integrality=np.ones(L * O),
                   bounds=Bounds(0, 1), options={"time_limit": time_limit, "mip_rel_gap": 0})
        if res.x is None:
            break
        ch = list(np.round(res.x).reshape(L, O).argmax(1))
        out.append(problem.evaluate(ch, "ilp-k", time.perf_counter() - t0))
        cut = np.zeros(L * O)
        cut[np.arange(L) * O + np.array(ch)] = 1.0
        rows.append(cut[None, :])
        lo.append(np.array([-np.inf]))
        hi.append(np.array([L - 1.0]))
    return out


@_timed("random")
def solve_random(problem: Problem, seed: int = 0, tries: int = 2000):
    """Baseline: a uniformly random feasible configuration (first of ``tries`` draws)."""
    _check_feasible(problem)
    rng = np.random.default_rng(seed)
    L, O = problem.impact.shape
    for _ in range(tries):
        ch = list(rng.integers(0, O, L))
        if problem.evaluate(ch).feasible:
            return ch
    raise InfeasibleBudget(f"no feasible random configuration in {tries} draws (seed {seed})")


def solve_uniform(problem: Problem, option) -> Solution:
    """Baseline: the same option (e.g. ``(8, 8)``) in every layer; may be infeasible."""
    if option not in problem.options:
        raise ValueError(f"option {option!r} not among {problem.options}")
    o = problem.options.index(option)
    return problem.evaluate([o] * problem.n_layers, f"uniform-{option[0]}")


def freebits_heuristic(problem: Problem, choice, cycles_metric: str = "cycles") -> Solution:
    """Free Bits' hardware-aware step applied to a (differentiable-search) choice.

    1. "free bits": move a layer to a more precise option when that costs no extra cycles on
       this hardware; 2. while a budget is violated, lower the layer that loses the least impact
       per cycle saved; 3. while budgets allow, raise the layer that gains the most impact per
       cycle added.

    With tie groups the steps run on :meth:`Problem.merged`; a group whose members differ in
    ``choice`` starts at their most precise option (:meth:`Problem.contract`).
    """
    if problem.ties:
        with _tied(problem):
            return problem.expand_solution(
                freebits_heuristic(problem.merged(), problem.contract(choice, strict=False),
                                   cycles_metric))
    t0 = time.perf_counter()
    _check_feasible(problem)
    ch = [int(c) for c in choice]
    L, O = problem.impact.shape
    ci = problem.metrics.index(cycles_metric)
    cyc = problem.costs[:, :, ci]
    for l in range(L):  # 1. free bits
        for o in range(O):
            if cyc[l, o] <= cyc[l, ch[l]] and problem.impact[l, o] < problem.impact[l, ch[l]]:
                trial = ch.copy()
                trial[l] = o
                if problem.evaluate(trial).feasible or not problem.evaluate(ch).feasible:
                    ch = trial
    while not problem.evaluate(ch).feasible:  # 2. repair
        best = None
        for l in range(L):
            for o in range(O):
                d_c = cyc[l, ch[l]] - cyc[l, o]
                if d_c <= 0:
                    continue
                s = (problem.impact[l, o] - problem.impact[l, ch[l]]) / d_c
                if best is None or s < best[0]:
                    best = (s, l, o)
        if best is None:
            _raise_infeasible(problem)
        ch[best[1]] = best[2]
    while True:  # 3. spend slack
        best = None
        for l in range(L):
            for o in range(O):
                gain = problem.impact[l, ch[l]] - problem.impact[l, o]
                if gain <= 0:
                    continue
                trial = ch.copy()
                trial[l] = o
                if not problem.evaluate(trial).feasible:
                    continue
                s = gain / max(cyc[l, o] - cyc[l, ch[l]], 1e-9)
                if best is None or s > best[0]:
                    best = (s, l, o)
        if best is None:
            break
        ch[best[1]] = best[2]
    return problem.evaluate(ch, "freebits", time.perf_counter() - t0)


def feasible_configs(problem: Problem, limit: int = 1 << 16):
    """Every configuration that meets the budgets (tuples of option indices, in
    lexicographic order) when the whole space has ``O ** L <= limit`` configurations, else
    ``None``. With tie groups: the configurations of :meth:`Problem.merged` (``L`` = its
    layers), expanded to every layer."""
    if problem.ties:
        sp = feasible_configs(problem.merged(), limit)
        return None if sp is None else [tuple(problem.expand(t)) for t in sp]
    L, O = problem.impact.shape
    if O ** L > limit:
        return None
    grid = np.array(list(itertools.product(range(O), repeat=L)), dtype=int).reshape(-1, L)
    idx, lim = problem.budget_vector()
    if len(idx) == 0:
        return [tuple(int(c) for c in g) for g in grid]
    tot = problem.costs[np.arange(L)[None, :], grid][:, :, idx].sum(1)
    ok = np.all(tot <= lim * (1 + 1e-9) + 1e-9, axis=1)
    return [tuple(int(c) for c in g) for g in grid[ok]]


def _neighbours(problem: Problem, ch: tuple) -> list:
    """Feasible configurations one move away: one layer to any other option, or two layers
    moved one step each in opposite directions of precision (spend what one saves)."""
    L, O = problem.impact.shape
    order = _order_by_precision(problem)
    pos = {o: i for i, o in enumerate(order)}
    out = set()
    for l in range(L):
        for o in range(O):
            if o != ch[l]:
                out.add(ch[:l] + (o,) + ch[l + 1:])
    for i in range(L):
        for j in range(L):
            pi, pj = pos[ch[i]], pos[ch[j]]
            if i == j or pi == 0 or pj == O - 1:
                continue
            t = list(ch)
            t[i], t[j] = order[pi - 1], order[pj + 1]   # i more precise, j less precise
            out.add(tuple(t))
    return [t for t in out if problem.evaluate(list(t)).feasible]


def solve_scored(problem: Problem, score, *, starts=(), max_evals: int = 64, branch: int = 8,
                 top: int = 1, seed: int = 0, enum_limit: int = 1 << 16) -> list:
    """Maximise ``score(choice)`` over the configurations that meet every budget.

    ``score`` takes a list of option indices (one per layer) and returns a float, higher
    better; it is called at most ``max_evals`` times on distinct configurations (the search
    keeps its own memo). Two regimes:

    * **exhaustive**: when the whole space has at most ``enum_limit`` configurations and at
      most ``max_evals`` of them meet the budgets, every feasible one is scored, so the result
      is the exact maximum of ``score``;
    * **best-first local search** otherwise: the feasible ``starts`` (default: the greedy
      solution) are scored; then repeatedly the best-scored configuration not yet expanded
      is expanded: its feasible neighbours (one layer to another option, or one layer up and
      another down one step each) are ordered by predicted impact (``problem.impact``, ties in
      a seeded random order) and the ``branch`` best not yet scored are scored; until
      ``max_evals`` scores or nothing is left to expand.

    Never returns an over-budget configuration. Returns the ``top`` best scored
    configurations as :class:`Solution` objects (method ``"scored"``), best first; ties are
    broken by smaller predicted impact, then by the option indices. ``Solution.impact`` stays
    the additive predicted impact, so it is comparable with the other solvers.

    With tie groups the search runs on :meth:`Problem.merged` (``score`` still receives one
    option per layer; starts that do not tie their groups are dropped).
    """
    if max_evals < 1 or branch < 1 or top < 1:
        raise ValueError(f"max_evals={max_evals}, branch={branch}, top={top}: each must be >= 1")
    if problem.ties:
        starts = [problem.contract(t) for t in starts
                  if len(t) == problem.n_layers and problem.is_tied(t)]
        with _tied(problem):
            out = solve_scored(problem.merged(), lambda ch: score(problem.expand(ch)),
                               starts=starts, max_evals=max_evals, branch=branch, top=top,
                               seed=seed, enum_limit=enum_limit)
        return [problem.expand_solution(s) for s in out]
    _check_feasible(problem)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    L = problem.n_layers
    r = np.arange(L)
    memo: dict = {}

    def sc(t):
        if t not in memo:
            memo[t] = float(score(list(t)))
        return memo[t]

    def pred(t):
        return float(problem.impact[r, list(t)].sum())

    space = feasible_configs(problem, enum_limit)
    if space is not None and not space:
        _raise_infeasible(problem)
    if space is not None and len(space) <= max_evals:
        for t in space:
            sc(t)
    else:
        seeds = [tuple(int(c) for c in s) for s in starts]
        seeds = [t for t in seeds if len(t) == L and problem.evaluate(list(t)).feasible]
        if not seeds:
            seeds = [tuple(int(c) for c in solve_greedy(problem).choice)]
        for t in seeds[:max_evals]:
            sc(t)
        expanded = set()
        while len(memo) < max_evals:
            todo = [t for t in memo if t not in expanded]
            if not todo:
                break
            cur = max(todo, key=lambda t: (memo[t], -pred(t), t))
            expanded.add(cur)
            nb = [t for t in _neighbours(problem, cur) if t not in memo]
            tie = rng.permutation(len(nb))
            nb = [nb[i] for i in sorted(range(len(nb)), key=lambda i: (pred(nb[i]), tie[i]))]
            for t in nb[:min(branch, max_evals - len(memo))]:
                sc(t)
    ranked = sorted(memo, key=lambda t: (-memo[t], pred(t), t))[:top]
    secs = time.perf_counter() - t0
    return [problem.evaluate(list(t), "scored", secs) for t in ranked]


SOLVERS = {"greedy": solve_greedy, "dp": solve_dp, "ilp": solve_ilp, "random": solve_random,
           "bruteforce": solve_bruteforce}


def solve(problem: Problem, method: str, **kw) -> Solution:
    """Dispatch to a solver by name (one of :data:`SOLVERS`)."""
    if method not in SOLVERS:
        raise ValueError(f"unknown solver {method!r}; allowed values: {list(SOLVERS)}")
    return SOLVERS[method](problem, **kw)
