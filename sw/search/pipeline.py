"""The search as a library: prepare a model, solve under budgets, validate on the integer model.

Typical use::

    from rvmpq.sw.search.pipeline import prepare, search
    setup = prepare("digits-cnn")                 # cost model defaults to the stand-in
    result = search(setup, {"cycles": 0.5}, methods=["dp", "ilp"])

Budgets are ``metric -> value``; a value ``<= 4`` (no unit) is a fraction of the uniform INT8
total of that metric, larger values are absolute (cycles, bytes, energy units). Validated
accuracies always come from the integer model on the test split; choices between candidates
(best method, PTQ vs QAT result) are made on the validation split.

Tie rule: compute layers that read one tensor (a residual block's first conv and its
projection shortcut, possibly through max pooling / flattening) quantize one input, so they
must share their precision: they form a *tie group* (:meth:`Quantizer.tie_groups`,
``SearchSetup.ties``). Every method and baseline solves the problem with one merged layer per
tie group (impact and every cost summed over the members, per option) and expands the chosen
option back to every member (:meth:`rvmpq.sw.search.solvers.Problem.merged`), so the exact
solvers stay exact for the tied problem and every configuration they return can be exported;
results list the members with their own (equal) bits. A model without ties gives the same
problem, hence the same results, as before.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import numpy as np

from .costs_api import (BITS, COST_METRICS, AnalyticStandIn, CostModel, LayerShape, cost_table,
                        network_shapes)
from .models import (BUILTIN_MODELS, Dataset, check_trace, get_trained_model, load_dataset,
                     model_data, torch_accuracy, trace_model)
from .qnn import int_accuracy
from .quantizer import QAT_EPOCHS, Quantizer, needs_qat, qat_finetune
from .sensitivity import METRICS, Evaluator, all_metrics, correlation_study
from .solvers import (InfeasibleBudget, Problem, Solution, feasible_configs, freebits_heuristic,
                      prefer_free_precision, solve_dp, solve_greedy, solve_ilp, solve_ilp_kbest,
                      solve_random, solve_scored, solve_uniform)

__all__ = ["SearchSetup", "prepare", "parse_budget", "make_problem", "run_method", "validate",
           "train_and_score", "metric_picks", "search", "deploy_error", "METHODS",
           "BUDGET_ALIASES", "EXHAUSTIVE_MAX", "SpaceTooLarge", "layer_shapes", "layer_links"]

#: methods of ``rvmpq search --method`` (``all`` runs every one)
METHODS = ("dp", "ilp", "greedy", "diff", "rerank", "local", "exhaustive")
#: candidates of ``rerank`` (the K best configurations of the additive objective)
RERANK_K = 8
#: ``local``: integer-model (PTQ, validation split) evaluations of its search stage
LOCAL_EVALS = 64
#: ``local``: best configurations of the search stage that go through the PTQ/QAT necessity
#: treatment of :func:`validate` and are compared on their validation-split accuracy after it
LOCAL_FINALISTS = 4
#: ``exhaustive``: the most configurations within budget it puts through the PTQ/QAT treatment
#: (each one is a fine-tune); with more it does not run (``all`` skips it with a log line)
EXHAUSTIVE_MAX = 96
#: budget names accepted on the command line -> cost metric
BUDGET_ALIASES = {"latency": "cycles", "cycles": "cycles", "wmem": "weight_bytes",
                  "weight_bytes": "weight_bytes", "amem": "act_bytes", "act_bytes": "act_bytes",
                  "energy": "energy"}


@dataclasses.dataclass
class SearchSetup:
    """Everything the solvers and the validation need for one model (built by :func:`prepare`)."""

    name: str
    data: Dataset
    qz: Quantizer
    ev_val: Evaluator
    float_acc: float
    options: list
    shapes: list
    cost_model: object
    costs: np.ndarray
    tables: dict
    corr: dict
    metric: str
    seed: int = 0
    #: memo of :func:`train_and_score` (config + options -> result); filled lazily
    trained: dict = dataclasses.field(default_factory=dict, repr=False)
    #: memo of test-split accuracies of trained configurations (filled by :func:`validate`)
    tested: dict = dataclasses.field(default_factory=dict, repr=False)
    #: memo of :func:`deploy_error` of trained configurations (filled by :func:`validate`)
    deploy_checked: dict = dataclasses.field(default_factory=dict, repr=False)
    #: tie groups: compute-layer indices that read one tensor and take one option
    #: (:meth:`Quantizer.tie_groups`); empty for a chain
    ties: list = dataclasses.field(default_factory=list)

    @property
    def bits(self) -> list[int]:
        """Bits of each option (w == a today)."""
        return [w for (w, _) in self.options]

    def impact(self, metric: str | None = None) -> np.ndarray:
        """Per-layer, per-option impact in accuracy points for ``metric`` (default: chosen)."""
        m = metric or self.metric
        if m == "probe":
            return np.maximum(self.tables["probe"], 0.0)
        return self.tables[m] * self.corr["scale"][m]

    def int8_totals(self) -> dict:
        """Totals of every cost metric at uniform INT8."""
        j = self.options.index((8, 8))
        return {m: float(v) for m, v in zip(COST_METRICS, self.costs[:, j].sum(0))}


def layer_shapes(qz: Quantizer) -> list[LayerShape]:
    """:class:`LayerShape` of every compute layer (from an INT8 export's HWC shapes); the last
    one is marked ``logits`` (int32 output)."""
    return layer_links(qz)[0]


def layer_links(qz: Quantizer) -> tuple[list[LayerShape], list]:
    """The compute-layer shapes and the :class:`~rvmpq.sw.search.costs_api.LayerLink` in front
    of each (None for the first), from an INT8 export
    (:func:`~rvmpq.sw.search.costs_api.network_shapes`)."""
    return network_shapes(qz.export([8] * qz.n_compute, [8] * qz.n_compute))


def _class_not_found(exc: Exception) -> str:
    """What to do when ``torch.load`` cannot find the class of a saved module: the pickle
    holds the class's module and name, not its code."""
    import re

    fix = ("torch.save stores a module's class by name, not its code: define the class in a "
           "file of its own (my_net.py), import it in the script that saves the model, and "
           "run rvmpq with that file's folder on PYTHONPATH (PYTHONPATH=DIR rvmpq ...); or "
           "export the model to ONNX (torch.onnx.export) and pass the .onnx file")
    m = re.search(r"Can't get attribute '([^']+)' on <module '([^']+)'", str(exc))
    if m:
        return f"the saved model's class {m[1]!r} is not defined in module {m[2]!r} here ({fix})"
    m = re.search(r"No module named '([^']+)'", str(exc))
    if m:
        return f"the saved model's class is in module {m[1]!r}, which cannot be imported ({fix})"
    return f"the saved model's class cannot be found ({type(exc).__name__}: {exc}; {fix})"


def _load_model(spec: str, data_name: str | None, log, cache_dir=None, recipe=None):
    if spec in BUILTIN_MODELS:
        model_data(spec, data_name)
        return get_trained_model(spec, cache_dir, recipe=recipe, log=log)
    p = Path(spec)
    if not p.exists():
        raise ValueError(f"--model {spec!r}: not a built-in model ({list(BUILTIN_MODELS)}) "
                         "and no such file")
    data_name = model_data(spec, data_name)
    if p.suffix.lower() == ".onnx":
        try:
            from .onnx_intake import load_onnx
        except ImportError as exc:
            raise ValueError(f"{p}: reading ONNX needs the onnx package ({exc}); install "
                             "rvmpq's ml extra (pip install -e '.[ml]') or pip install onnx"
                             ) from None
        model = load_onnx(p)
    else:
        import torch

        try:
            model = torch.load(p, weights_only=False)
        except (AttributeError, ImportError) as exc:   # the pickle names a class not found
            raise ValueError(f"{p}: {_class_not_found(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - unpickling / zip errors of a corrupt file
            raise ValueError(f"{p}: not a torch.save'd module nor an .onnx file "
                             f"({type(exc).__name__}: {exc})") from None
        if isinstance(model, dict):
            raise ValueError(f"{p}: holds a state dict; save the whole module with "
                             "torch.save(model)")
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"{p}: holds a {type(model).__name__}, not a torch.nn.Module")
    ds = load_dataset(data_name)
    want = getattr(model, "input_shape", None)
    if want is not None and tuple(want) != ds.input_shape:
        raise ValueError(f"{p}: the model takes (C, H, W) = {tuple(want)}, the {ds.name} data "
                         f"set has {ds.input_shape}")
    return model, ds


def prepare(model: str = "digits-cnn", cost_model: CostModel | None = None, *,
            data: str | None = None, metric: str = "auto", act_method: str = "mse",
            w_method: str = "mse", n_configs: int = 24, seed: int = 0, log=print,
            cache_dir=None, recipe: dict | None = None) -> SearchSetup:
    """Load/train the model, calibrate, build the cost table, measure every sensitivity metric.

    Parameters
    ----------
    model : str
        A built-in model name, or the path of a ``torch.save``'d module or of an ``.onnx`` file
        (:mod:`~rvmpq.sw.search.onnx_intake`); then ``data`` names the data set.
    data : str, optional
        For a model file: ``"digits"``, ``"mnist1d"`` or the path of an ``.npz`` data set
        (:func:`~rvmpq.sw.search.models.load_npz_dataset`).
    cost_model : CostModel, optional
        Default :class:`AnalyticStandIn` (a stand-in; results are not final); the CLI passes
        the RTL-measured :class:`rvmpq.sw.costs.RtlCostModel`. A model with a
        ``prefetch(shapes, options, links)`` method gets the whole table requested at once
        first. With a model that has ``in_network_cycles`` (the RTL one) the cycles are the
        whole program's: each layer is charged the glue and the output-precision work in front
        of it (docs/costs.md, "Whole-program cost").
    metric : str
        Sensitivity metric that drives the solvers: one of ``noise, hessian, probe, mqe`` or
        ``auto`` (the one with the highest Spearman correlation on random configurations).
    n_configs : int
        Random configurations of the correlation study.
    cache_dir, recipe
        Where built-in model weights are cached (default ``build_root() / "models"``, see
        :func:`~rvmpq.sw.search.models.get_trained_model`), and a training-recipe override
        (tests).
    """
    log = log or (lambda *_: None)
    if metric != "auto" and metric not in METRICS:
        raise ValueError(f"metric {metric!r}; allowed values: {['auto', *METRICS]}")
    cost_model = cost_model or AnalyticStandIn()
    if not isinstance(cost_model, CostModel):
        raise TypeError("cost_model must provide .source and .layer_cost() (CostModel)")
    m, ds = _load_model(model, data, log, cache_dir, recipe)
    layers = trace_model(m, ds.x_val[:1])
    check_trace(m, layers, ds.x_val[:16])
    n_out = [l for l in layers if l.is_compute][-1].weight.shape[0]
    top = int(max(ds.y_train.max(), ds.y_val.max(), ds.y_test.max()))
    if top >= n_out:
        raise ValueError(f"the {ds.name} data set has label {top}, the model {n_out} outputs "
                         "(one logit per class from 0)")
    float_acc = torch_accuracy(m, ds.x_test, ds.y_test)
    log(f"{model}: {len(layers)} layers traced, float test accuracy {float_acc:.2f}%")
    for l in layers:
        if l.note:
            log(f"{l.name}: {l.note}")
    if layers[-1].out_fn:
        log(f"the model's final {layers[-1].out_fn} is left out: the integer model and the "
            "deployed program output its logits (the same predicted class)")
    qz = Quantizer(layers, ds.x_val, act_method, w_method)
    ties = qz.tie_groups()
    if ties:
        names = [l.name for l in qz.layers if l.is_compute]
        log("tie groups (read one tensor, one precision each): " + "; ".join(
            ", ".join(names[k] for k in g) for g in ties))
    ev = Evaluator(qz, ds.x_val, ds.y_val)
    options = [(b, b) for b in sorted(BITS, reverse=True)]
    shapes, links = layer_links(qz)
    if hasattr(cost_model, "prefetch"):   # RTL costs: measure the misses in parallel first
        log(f"cost table: {len(shapes)} layers x {len(options)} precisions ({cost_model.source}"
            + (", whole program: glue and output precision charged to the consumer"
               if hasattr(cost_model, "in_network_cycles") else "") + ")")
        cost_model.prefetch(shapes, options, links)
    costs = cost_table(cost_model, shapes, options, links)
    bits = [w for w, _ in options]
    tables = all_metrics(qz, ev, bits, seed=seed, log=log)
    log(f"correlation study: {n_configs} random configurations on the integer model")
    corr = correlation_study(ev, tables, bits, n_configs=n_configs, seed=seed)
    if metric == "auto":
        metric = max(METRICS, key=lambda k: corr["spearman"][k])
    log("spearman vs integer accuracy: " + ", ".join(
        f"{k} {v:+.3f}" for k, v in corr["spearman"].items()) + f" -> solvers use {metric!r}")
    return SearchSetup(model, ds, qz, ev, float_acc, options, shapes, cost_model, costs, tables,
                       corr, metric, seed, ties=ties)


def parse_budget(spec: str, setup: SearchSetup | None = None, int8: dict | None = None
                 ) -> tuple[str, float]:
    """Parse ``NAME=VALUE`` into ``(cost metric, absolute limit)``.

    ``NAME`` in :data:`BUDGET_ALIASES`; ``VALUE`` a number, ``<= 4`` meaning a fraction of the
    uniform INT8 total (``latency=0.5``), larger meaning absolute (``latency=120000``,
    ``wmem=4096``).
    """
    m = re.fullmatch(r"\s*([a-z_]+)\s*=\s*([0-9.eE+-]+)\s*", spec)
    if not m:
        raise ValueError(f"budget {spec!r}: expected NAME=VALUE, NAME in {list(BUDGET_ALIASES)}")
    name, val = m.group(1), float(m.group(2))
    if name not in BUDGET_ALIASES:
        raise ValueError(f"unknown budget {name!r}; allowed values: {list(BUDGET_ALIASES)}")
    if val <= 0:
        raise ValueError(f"budget {spec!r} must be positive")
    metric = BUDGET_ALIASES[name]
    if val <= 4:
        int8 = int8 or setup.int8_totals()
        val = val * int8[metric]
    return metric, val


def make_problem(setup: SearchSetup, budgets: dict, metric: str | None = None) -> Problem:
    """The solver problem for ``budgets`` (absolute limits per cost metric), with the setup's
    tie groups (``Problem.ties``: every solver returns one option per tie group)."""
    # tie-break: among options of equal predicted impact prefer the cheaper one (1e-6 points
    # per uniform-INT8 latency)
    tie = 1e-6 * setup.costs[:, :, 0] / setup.int8_totals()["cycles"]
    return Problem(setup.impact(metric) + tie, setup.costs, COST_METRICS, dict(budgets),
                   list(setup.options), [l.name for l in setup.qz.layers if l.is_compute],
                   ties=[list(g) for g in setup.ties])


class SpaceTooLarge(ValueError):
    """``exhaustive`` was asked for a budget that more than :data:`EXHAUSTIVE_MAX`
    configurations meet (or a space too large to enumerate); the message says which methods
    scale."""


def run_method(setup: SearchSetup, method: str, budgets: dict, *, qat: bool = True,
               log=None) -> Solution:
    """Solve with one method: ``dp``, ``ilp``, ``greedy``, ``diff`` (Free Bits), ``rerank``
    (the :data:`RERANK_K` best ILP configurations re-ranked by integer-model accuracy on the
    validation split), ``local`` (evaluation-driven search, below), ``exhaustive`` (below),
    ``hawq-ilp`` (ILP on Hessian impacts), ``random``, or ``uniform-B`` (B in 16/8/4/2).

    ``local`` does not trust an additive prediction at all: (1) :func:`solve_scored`
    maximises the integer model's PTQ accuracy on the validation split (cross-entropy as a
    tie-break) under the exact budgets, with at most :data:`LOCAL_EVALS` evaluations
    (exhaustive when the feasible configurations are that few, else a best-first local
    search started from the ILP and DP solutions and the ILP's pick under each sensitivity
    metric, :func:`metric_picks`); (2) its :data:`LOCAL_FINALISTS` best configurations and
    every metric's ILP pick (PTQ accuracy misjudges what QAT recovers) go through the same
    PTQ/QAT necessity treatment that :func:`validate` gives every method
    (:func:`train_and_score`), and the one with the highest validation-split accuracy after
    it wins (ties: the stage-1 best first, then the metrics in :data:`METRICS` order). The
    test split is never read. ``qat`` is the setting that :func:`validate` will use
    (``False``: PTQ only). ``log`` (a print-like callable, optional) gets one line per
    ``local`` finalist as its PTQ/QAT treatment finishes (each can take tens of seconds).

    ``exhaustive`` is the exact maximum of what every other method approximates, for small
    spaces: every configuration within budget goes through the PTQ/QAT necessity treatment
    (:func:`train_and_score`), and the one with the highest validation-split accuracy after it
    wins (ties: smaller predicted impact, then the option indices). It raises
    :class:`SpaceTooLarge` when more than :data:`EXHAUSTIVE_MAX` configurations meet the
    budgets. ``log`` gets one line per configuration. The test split is never read.

    Every method returns one option per tie group (``SearchSetup.ties``, module docstring)."""
    if method.startswith("uniform-"):
        b = int(method.split("-")[1])
        return solve_uniform(make_problem(setup, budgets), (b, b))
    if method == "hawq-ilp":
        # A layer whose Hutchinson trace estimate is <= 0 gets impact 0 at every precision
        # (sensitivity.metric_hessian clips it); where that layer also costs the same at every
        # precision (a 1-channel first conv) the ILP is indifferent and could return INT2 for
        # nothing, which HAWQ-V3 (positive traces) never would: such a layer is moved to the
        # widest option that costs no more (prefer_free_precision).
        s = _metric_ilp(setup, budgets, "hessian")
        s.method = "hawq-ilp"
        s.impact = float(make_problem(setup, budgets).evaluate(s.choice).impact)
        return s
    p = make_problem(setup, budgets)
    if method == "dp":
        return solve_dp(p)
    if method == "ilp":
        return solve_ilp(p)
    if method == "greedy":
        return solve_greedy(p)
    if method == "random":
        return solve_random(p, seed=setup.seed)
    if method == "rerank":
        # Edge-MPQ's validation loop: the K best configurations of the additive prediction
        # (ILP with no-good cuts) are run on the bit-exact integer model over the validation
        # split (never the test split); the most accurate one wins (ties: smaller predicted
        # impact). Catches interactions between layers that an additive metric cannot see.
        t0 = time.perf_counter()
        cands = solve_ilp_kbest(p, RERANK_K)
        accs = [setup.ev_val.evaluate([o[0] for o in c.options], [o[1] for o in c.options])[0]
                for c in cands]
        best = max(range(len(cands)), key=lambda i: (accs[i], -cands[i].impact))
        s = cands[best]
        s.method, s.seconds = "rerank", time.perf_counter() - t0
        return s
    if method == "local":
        t0 = time.perf_counter()

        def score(choice):
            acc, loss = setup.ev_val.evaluate([setup.options[c][0] for c in choice],
                                              [setup.options[c][1] for c in choice])
            return acc - 1e-3 * min(loss, 100.0)

        picks = metric_picks(setup, budgets)
        starts = [solve_ilp(p).choice, solve_dp(p).choice, *picks]
        cands = solve_scored(p, score, starts=starts, max_evals=LOCAL_EVALS,
                             top=LOCAL_FINALISTS, seed=setup.seed)
        # PTQ accuracy misjudges what the QAT step recovers (a configuration that loses more
        # after PTQ can win after QAT), so each metric's ILP pick is a finalist too
        seen = {tuple(int(c) for c in s.choice) for s in cands}
        for t in picks:
            if t not in seen:
                seen.add(t)
                cands.append(p.evaluate(list(t), "scored"))
        after = []
        for i, c in enumerate(cands):
            after.append(train_and_score(setup, [o[0] for o in c.options],
                                         [o[1] for o in c.options], qat=qat)["val_acc"])
            if log:
                log(f"method local: finalist {i + 1}/{len(cands)} bits "
                    f"{[o[0] for o in c.options]}: validation {after[-1]:.2f}% after PTQ/QAT")
        best = max(range(len(cands)), key=lambda i: (after[i], -i))
        s = cands[best]
        s.method, s.seconds = "local", time.perf_counter() - t0
        return s
    if method == "exhaustive":
        t0 = time.perf_counter()
        space = feasible_configs(p)
        if space is None or len(space) > EXHAUSTIVE_MAX:
            what = ("the space has more than 65536 configurations (not enumerated)"
                    if space is None else f"{len(space)} configurations meet the budgets")
            raise SpaceTooLarge(f"method exhaustive: {what}; it trains at most "
                                f"{EXHAUSTIVE_MAX} (use dp, ilp, rerank or local)")
        done = [0]

        def score_after(choice):
            wb = [setup.options[c][0] for c in choice]
            r = train_and_score(setup, wb, [setup.options[c][1] for c in choice], qat=qat)
            done[0] += 1
            if log:
                log(f"method exhaustive: {done[0]}/{len(space)} bits {wb}: validation "
                    f"{r['val_acc']:.2f}% after PTQ/QAT")
            return r["val_acc"]

        # solve_scored scores every feasible configuration when they are at most max_evals
        # (and raises InfeasibleBudget, naming the closest one, when there is none)
        s = solve_scored(p, score_after, max_evals=max(len(space), 1))[0]
        s.method, s.seconds = "exhaustive", time.perf_counter() - t0
        return s
    if method == "diff":
        from .diffsearch import differentiable_search

        t0 = time.perf_counter()
        ch = differentiable_search(setup.qz, setup.options, [s.macs for s in setup.shapes],
                                   setup.data.x_train, setup.data.y_train, seed=setup.seed,
                                   ties=setup.ties)
        s = freebits_heuristic(p, ch)
        s.method, s.seconds = "diff", time.perf_counter() - t0
        return s
    raise ValueError(f"unknown method {method!r}; allowed values: "
                     f"{[*METHODS, 'hawq-ilp', 'random', 'uniform-16', 'uniform-8', 'uniform-4', 'uniform-2']}")


def _metric_ilp(setup: SearchSetup, budgets: dict, metric: str) -> Solution:
    """The ILP's solution on ``metric``'s impacts, each layer then moved to its free widest
    option (:func:`prefer_free_precision`: where the metric is blind to a layer that costs the
    same at every precision); impact in ``metric``'s terms, the ILP's time."""
    p = make_problem(setup, budgets, metric)
    s = solve_ilp(p)
    return p.evaluate(prefer_free_precision(p, s.choice), s.method, s.seconds)


def metric_picks(setup: SearchSetup, budgets: dict) -> list[tuple]:
    """The ILP's configuration under each sensitivity metric of :data:`METRICS` (the
    ``hawq-ilp`` baseline is the ``hessian`` one), as option-index tuples, duplicates removed
    (first occurrence kept). Where a metric is blind to a layer that costs the same at every
    precision, the layer gets its free widest option (:func:`prefer_free_precision`)."""
    out = []
    for metric in METRICS:
        t = tuple(_metric_ilp(setup, budgets, metric).choice)
        if t not in out:
            out.append(t)
    return out


def train_and_score(setup: SearchSetup, wb, ab, *, tau: float = 0.5, qat: bool = True,
                    qat_epochs: int = QAT_EPOCHS) -> dict:
    """The PTQ/QAT necessity treatment of one configuration, scored on the validation split.

    Necessity: :func:`needs_qat` per layer (probe drop > ``tau``); if the whole PTQ
    configuration still loses more than ``tau`` points on the validation split against the
    16-bit integer reference, every layer at <= 4 bits is flagged too. Flagged layers are
    fine-tuned on the training split (the others frozen); the QAT network is kept when its
    validation accuracy is not lower than the PTQ one. Never reads the test split.

    Returns ``{"flags", "used_qat", "val_acc", "val_ptq", "net"}``; memoised per setup (the
    fine-tune is seeded, so a repeat gives the same network).
    """
    key = (tuple(wb), tuple(ab), tau, qat, qat_epochs)
    if key in setup.trained:
        return setup.trained[key]
    qz, d = setup.qz, setup.data
    wb, ab = list(wb), list(ab)
    flags = needs_qat(setup.tables["probe"], setup.bits, wb, tau)
    net = qz.export(wb, ab, meta={"model": setup.name})
    val_ptq = int_accuracy(net, d.x_val, d.y_val)
    ref = setup.ev_val.evaluate([16] * len(wb))[0]
    if ref - val_ptq > tau:
        # network-level fallback: single-layer probes missed an interaction, so every layer
        # at 4 bits or fewer is fine-tuned too
        flags = [f or b <= 4 for f, b in zip(flags, wb)]
    used_qat = [False] * len(wb)
    val_acc = val_ptq
    if qat and any(flags):
        new_layers, scales = qat_finetune(qz, wb, ab, d.x_train, d.y_train, flags,
                                          epochs=qat_epochs, seed=setup.seed)
        net_q = qz.export(wb, ab, layers=new_layers, w_scales=scales, qat=flags,
                          meta={"model": setup.name})
        val_qat = int_accuracy(net_q, d.x_val, d.y_val)
        if val_qat >= val_ptq:
            net, used_qat, val_acc = net_q, flags, val_qat
    out = {"flags": flags, "used_qat": used_qat, "val_acc": val_acc, "val_ptq": val_ptq,
           "net": net}
    setup.trained[key] = out
    return out


def validate(setup: SearchSetup, sol: Solution, *, tau: float = 0.5, qat: bool = True,
             qat_epochs: int = QAT_EPOCHS) -> dict:
    """Integer-model validation of a solution, with the training-necessity decision.

    The PTQ/QAT treatment is :func:`train_and_score` (identical for every method and
    baseline); the test split is read here only, after the configuration is fixed.

    Returns a JSON-ready dict: per-layer bits, PTQ/QAT choice, shape and costs (cycles, weight
    and activation bytes, energy proxy of the chosen precision), predicted accuracy
    (float - summed impact), validated test accuracy (integer model), costs, and the
    exported :class:`QNetwork` under ``"_net"``.
    """
    qz, d = setup.qz, setup.data
    wb = [o[0] for o in sol.options]
    ab = [o[1] for o in sol.options]
    t = train_and_score(setup, wb, ab, tau=tau, qat=qat, qat_epochs=qat_epochs)
    flags, used_qat, net = t["flags"], t["used_qat"], t["net"]
    val_acc, val_ptq = t["val_acc"], t["val_ptq"]
    key = (tuple(wb), tuple(ab), tau, qat, qat_epochs)
    if key not in setup.tested:
        setup.tested[key] = int_accuracy(net, d.x_test, d.y_test)
    test_acc = setup.tested[key]
    int8 = setup.int8_totals()
    names = [l.name for l in qz.layers if l.is_compute]
    if key not in setup.deploy_checked:
        setup.deploy_checked[key] = deploy_error(net)
    return {
        "method": sol.method,
        "layers": [{"name": n, "w_bits": w, "a_bits": a, "needs_qat": f,
                    "training": "QAT" if u else "PTQ", "shape": s.key(),
                    **{m: float(v) for m, v in zip(COST_METRICS, setup.costs[i, c])}}
                   for i, (n, w, a, f, u, s, c) in enumerate(
                       zip(names, wb, ab, flags, used_qat, setup.shapes, sol.choice))],
        "bits": wb,
        "predicted_accuracy": setup.float_acc - sol.impact,
        "validated_accuracy": test_acc,
        "validation_split_accuracy": val_acc,
        "ptq_validation_split_accuracy": val_ptq,
        "costs": sol.costs,
        "cycles_vs_int8": sol.costs["cycles"] / int8["cycles"],
        "feasible": sol.feasible,
        "solver_seconds": sol.seconds,
        "deploy_error": setup.deploy_checked[key],
        "_net": net,
    }


def deploy_error(net) -> str | None:
    """Why the layer kernels cannot run ``net`` on the ``mpq`` core (``rvmpq deploy``'s plan:
    for example a depthwise conv, or an average pool, whose channel count does not fill the
    narrower output words), or ``None`` where they can. Memory sizes are not checked here
    (``rvmpq deploy`` says by how much a program does not fit)."""
    from rvmpq.sw.deploy import DeployError, plan_network

    try:
        plan_network(net, "mpq")
    except DeployError as exc:
        return str(exc)
    return None


def search(setup: SearchSetup, budgets: dict, methods=METHODS, *, baselines=True, qat=True,
           log=print) -> dict:
    """Run ``methods`` (and baselines) under ``budgets``; validate each; pick the best.

    The best of ``methods`` is the one with the highest validation-split integer accuracy
    (ties: fewer cycles) among those the layer kernels can run (:func:`deploy_error`; only if
    none can, the best of all, its ``deploy_error`` saying why). Raises
    :class:`InfeasibleBudget` naming the closest configuration.
    ``exhaustive`` is skipped, with a log line, where more than :data:`EXHAUSTIVE_MAX`
    configurations meet the budgets, unless it is the only method (:class:`SpaceTooLarge`).
    """
    log = log or (lambda *_: None)
    results = {}
    for m in methods:
        log(f"method {m}: solving")
        try:
            sol = run_method(setup, m, budgets, qat=qat, log=log)
        except SpaceTooLarge as exc:
            if len(methods) == 1:
                raise
            log(f"{exc}: skipped")
            continue
        r = validate(setup, sol, qat=qat)
        log(f"method {m}: bits {r['bits']} predicted {r['predicted_accuracy']:.2f}% "
            f"validated {r['validated_accuracy']:.2f}% cycles {r['cycles_vs_int8']:.3f}x INT8 "
            f"({sol.seconds:.2f} s)")
        if r["deploy_error"]:
            log(f"method {m}: the kernels cannot run this configuration: {r['deploy_error']}")
        results[m] = r
    if baselines:
        for m in ["hawq-ilp", "random", "uniform-16", "uniform-8", "uniform-4", "uniform-2"]:
            try:
                sol = run_method(setup, m, budgets)
            except InfeasibleBudget:
                continue
            # baselines get the same PTQ/QAT necessity treatment: the comparison isolates the search
            r = validate(setup, sol, qat=qat)
            log(f"baseline {m}: bits {r['bits']} validated {r['validated_accuracy']:.2f}% "
                f"cycles {r['cycles_vs_int8']:.3f}x INT8{'' if r['feasible'] else ' (over budget)'}")
            results[m] = r
    best = max((m for m in methods if m in results),
               key=lambda m: (results[m]["deploy_error"] is None,
                              results[m]["validation_split_accuracy"],
                              -results[m]["costs"]["cycles"]))
    return {"budgets": budgets, "results": results, "best": best}
