"""Library-level search: differentiable search + Free Bits heuristic, necessity-driven QAT."""

import dataclasses

import pytest
import torch

from rvmpq.sw.search.diffsearch import differentiable_search
from rvmpq.sw.search.pipeline import make_problem, parse_budget, prepare, run_method, validate
from rvmpq.sw.search.solvers import InfeasibleBudget

torch.set_num_threads(1)  # 2 shared cores


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """mnist1d-cnn trained for 6 epochs in a private cache, scored on the first 500 samples of
    its validation split (the standard set's own: these tests check mechanics, and scoring
    every configuration on all 5,000 would add minutes to them)."""
    from rvmpq.sw.search import models

    real = models.load_dataset

    def first_500(name, seed=0):
        d = real(name, seed)
        return dataclasses.replace(d, x_val=d.x_val[:500], y_val=d.y_val[:500])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "load_dataset", first_500)
        s = prepare("mnist1d-cnn", n_configs=6, log=None,
                    cache_dir=tmp_path_factory.mktemp("models"), recipe={"epochs": 6})
    assert len(s.data.y_val) == 500
    return s


def test_budget_parsing(setup):
    int8 = setup.int8_totals()
    assert parse_budget("latency=0.5", setup) == ("cycles", 0.5 * int8["cycles"])
    assert parse_budget("wmem=4096", setup) == ("weight_bytes", 4096.0)
    for bad in ("speed=0.5", "latency", "latency=-1"):
        with pytest.raises(ValueError):
            parse_budget(bad, setup)


def test_differentiable_search_then_freebits(setup):
    ch = differentiable_search(setup.qz, setup.options, [s.macs for s in setup.shapes],
                               setup.data.x_train, setup.data.y_train, steps=20)
    assert len(ch) == setup.qz.n_compute and all(0 <= c < len(setup.options) for c in ch)
    b = {"cycles": 0.6 * setup.int8_totals()["cycles"]}
    sol = run_method(setup, "diff", b)
    assert sol.feasible and sol.costs["cycles"] <= b["cycles"]


def test_validate_runs_qat_where_needed(setup):
    # 2 bits everywhere: the necessity rule must ask for QAT, and QAT must not be worse
    p = make_problem(setup, {})
    sol = p.evaluate([setup.options.index((2, 2))] * setup.qz.n_compute, "test")
    r = validate(setup, sol, qat_epochs=1)
    assert all(l["needs_qat"] for l in r["layers"])
    assert r["validation_split_accuracy"] >= r["ptq_validation_split_accuracy"]
    assert r["_net"].bits() == [(2, 2)] * setup.qz.n_compute
    # 16 bits: PTQ is enough
    sol = p.evaluate([0] * setup.qz.n_compute, "test")
    r = validate(setup, sol)
    assert not any(l["needs_qat"] for l in r["layers"])
    assert abs(r["validated_accuracy"] - setup.float_acc) <= 1.0


def test_run_method_errors(setup):
    with pytest.raises(ValueError, match="allowed values"):
        run_method(setup, "annealing", {})
    with pytest.raises(InfeasibleBudget, match="closest"):
        run_method(setup, "dp", {"cycles": 1.0})


def test_rerank_is_at_least_as_good_as_ilp_on_the_validation_split(setup):
    """rerank's candidates include the ILP optimum, so on the integer model's validation split
    it is never worse, and it meets the budget."""
    b = {"cycles": 0.6 * setup.int8_totals()["cycles"]}
    ilp, rr = run_method(setup, "ilp", b), run_method(setup, "rerank", b)
    assert rr.feasible and rr.method == "rerank"
    acc = lambda s: setup.ev_val.evaluate([o[0] for o in s.options])[0]  # noqa: E731
    assert acc(rr) >= acc(ilp)
    assert rr.impact >= ilp.impact - 1e-9      # ILP has the smallest predicted impact


def test_local_search_finds_best_validation_config_and_never_reads_test(setup, monkeypatch):
    """``local`` with PTQ only (qat=False): at a tight budget the feasible configurations are
    few, so its search stage is exhaustive and it must return the configuration with the
    highest PTQ validation-split accuracy of all that meet the budget (brute force here, on
    the integer model). It never reads the test split: it runs on a copy whose test arrays
    are absent."""
    import itertools

    import numpy as np

    b = {"cycles": 0.5 * setup.int8_totals()["cycles"]}
    L = setup.qz.n_compute
    feas = [ch for ch in itertools.product(range(len(setup.options)), repeat=L)
            if setup.costs[np.arange(L), list(ch), 0].sum() <= b["cycles"]]
    assert 1 <= len(feas) <= 64        # the exhaustive regime of LOCAL_EVALS
    acc = lambda ch: setup.ev_val.evaluate([setup.options[c][0] for c in ch])[0]  # noqa: E731
    best = max(acc(ch) for ch in feas)
    blind = dataclasses.replace(setup, data=dataclasses.replace(setup.data, x_test=None,
                                                                 y_test=None),
                                trained={}, tested={})
    s = run_method(blind, "local", b, qat=False)
    assert s.method == "local" and s.feasible and s.costs["cycles"] <= b["cycles"]
    assert acc(s.choice) == best
    # deterministic for a seed, also with the QAT-aware final stage (3-epoch fine-tunes here:
    # what is checked is the repeat, not the training length)
    import rvmpq.sw.search.pipeline as pl

    real = pl.qat_finetune
    monkeypatch.setattr(pl, "qat_finetune", lambda *a, **k: real(*a, **{**k, "epochs": 3}))
    q1 = run_method(blind, "local", b)
    q2 = run_method(dataclasses.replace(blind, trained={}), "local", b)
    assert q1.choice == q2.choice and q1.feasible


def test_local_final_stage_scores_every_metric_pick(setup, monkeypatch):
    """PTQ accuracy misjudges what the QAT step recovers, so ``local``'s final stage (scored
    after the PTQ/QAT treatment) gets each sensitivity metric's ILP pick besides the search
    stage's best PTQ configurations. The final-stage score is stubbed to favour one pick at a
    time; ``local`` must return it. At this budget some picks rank outside the PTQ stage's
    finalists (checked), which is what the test is about."""
    import rvmpq.sw.search.pipeline as pl

    b = {"cycles": 0.6 * setup.int8_totals()["cycles"]}
    picks = pl.metric_picks(setup, b)
    p = make_problem(setup, b)
    for t in picks:
        assert p.evaluate(list(t)).feasible
    seen = []

    def stub(favourite):
        def fake(st, wb, ab, **kw):
            t = tuple(setup.options.index((w, a)) for w, a in zip(wb, ab))
            seen.append(t)
            return {"val_acc": 100.0 if t == favourite else 0.0}
        return fake

    monkeypatch.setattr(pl, "train_and_score", stub(None))
    lines = []
    run_method(setup, "local", b, log=lines.append)
    # progress: one line per finalist, as its PTQ/QAT treatment finishes
    assert len(lines) == len(seen) and lines[-1].startswith(f"method local: finalist {len(seen)}/")
    stage1 = seen[:pl.LOCAL_FINALISTS]
    assert any(t not in stage1 for t in picks), "no metric pick outside the PTQ finalists"
    for t in picks:
        monkeypatch.setattr(pl, "train_and_score", stub(t))
        assert tuple(run_method(setup, "local", b).choice) == t


def test_exhaustive_trains_every_configuration_within_budget(setup, monkeypatch):
    """``exhaustive`` puts every configuration within budget (counted independently here)
    through the PTQ/QAT treatment, once each, logs one line per configuration, and returns the
    one with the highest validation score; the test split is never read. With more
    configurations than ``EXHAUSTIVE_MAX`` it raises ``SpaceTooLarge`` alone and is skipped by
    ``search`` among other methods. The treatment is stubbed with a score that favours one
    configuration at a time (the real one is tested through ``local``)."""
    import itertools

    import numpy as np

    import rvmpq.sw.search.pipeline as pl

    b = {"cycles": 0.6 * setup.int8_totals()["cycles"]}
    L = setup.qz.n_compute
    feas = {ch for ch in itertools.product(range(len(setup.options)), repeat=L)
            if setup.costs[np.arange(L), list(ch), 0].sum() <= b["cycles"]}
    assert 2 <= len(feas) <= pl.EXHAUSTIVE_MAX
    from rvmpq.sw.search.cli import CEILING_MAX_CONFIGS

    assert CEILING_MAX_CONFIGS == pl.EXHAUSTIVE_MAX     # the bench's ceiling rows
    blind = dataclasses.replace(setup, data=dataclasses.replace(setup.data, x_test=None,
                                                                 y_test=None),
                                trained={}, tested={})
    seen = []

    def stub(favourite):
        def fake(st, wb, ab, **kw):
            t = tuple(setup.options.index((w, a)) for w, a in zip(wb, ab))
            seen.append(t)
            return {"val_acc": 90.0 if t == favourite else 80.0 + (sum(t) % 3)}
        return fake

    for favourite in sorted(feas)[:: max(1, len(feas) // 3)]:
        seen.clear()
        lines = []
        monkeypatch.setattr(pl, "train_and_score", stub(favourite))
        s = run_method(blind, "exhaustive", b, log=lines.append)
        assert tuple(s.choice) == favourite and s.method == "exhaustive" and s.feasible
        assert sorted(seen) == sorted(feas)                 # each one, once
        assert len(lines) == len(feas) and lines[-1].startswith(
            f"method exhaustive: {len(feas)}/{len(feas)} bits ")
    monkeypatch.setattr(pl, "EXHAUSTIVE_MAX", len(feas) - 1)
    with pytest.raises(pl.SpaceTooLarge, match=f"{len(feas)} configurations meet the budgets"):
        run_method(blind, "exhaustive", b)
    monkeypatch.undo()
    monkeypatch.setattr(pl, "EXHAUSTIVE_MAX", len(feas) - 1)
    lines = []
    res = pl.search(setup, b, ["dp", "exhaustive"], baselines=False, qat=False,
                    log=lines.append)
    assert set(res["results"]) == {"dp"} and res["best"] == "dp"
    assert any("method exhaustive:" in ln and "skipped" in ln for ln in lines)
    with pytest.raises(InfeasibleBudget):
        run_method(setup, "exhaustive", {"cycles": 1.0})


def test_bench_ceiling_bounds_every_method(setup):
    """The benchmark's test ceiling (PTQ only here, for speed) is the best test accuracy of all
    configurations within budget (recomputed here on the integer model), so no method can
    report more; with too many configurations it declines."""
    import itertools

    import numpy as np

    from rvmpq.sw.search.cli import ceiling_accuracy
    from rvmpq.sw.search.qnn import int_accuracy

    b = {"cycles": 0.5 * setup.int8_totals()["cycles"]}
    L = setup.qz.n_compute
    d = setup.data
    feas = [ch for ch in itertools.product(range(len(setup.options)), repeat=L)
            if setup.costs[np.arange(L), list(ch), 0].sum() <= b["cycles"]]
    accs = [int_accuracy(setup.qz.export([setup.options[c][0] for c in ch],
                                         [setup.options[c][1] for c in ch]), d.x_test, d.y_test)
            for ch in feas]
    c = ceiling_accuracy(setup, b, max_configs=64, qat=False)
    assert c["configs"] == len(feas) and c["accuracy"] == max(accs)
    for m in ("dp", "hawq-ilp", "local"):
        r = validate(setup, run_method(setup, m, b, qat=False), qat=False)
        assert r["validated_accuracy"] <= c["accuracy"]
    assert ceiling_accuracy(setup, b, max_configs=len(feas) - 1, qat=False) is None


def test_bench_paired_standard_error(setup):
    """The benchmark's paired SE: hand-computed values, a bad-input error, and the per-sample
    correctness it is computed from agrees with the validated (test) accuracy and with the
    float model's accuracy."""
    import numpy as np

    from rvmpq.sw.search.cli import _test_correct, paired_se

    # differences 0, +1, -1, 0: sample std sqrt(2/3), over sqrt(4) samples
    assert paired_se([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(100 * np.sqrt(2 / 3) / 2)
    assert paired_se([1, 0, 1], [1, 0, 1]) == 0.0
    with pytest.raises(ValueError, match="equal-length"):
        paired_se([1, 0], [1])
    b = {"cycles": 0.5 * setup.int8_totals()["cycles"]}
    r = validate(setup, run_method(setup, "dp", b, qat=False), qat=False)
    res = {"results": {"dp": r}}
    ok = _test_correct(setup, res, "dp")
    assert ok.shape == setup.data.y_test.shape
    assert ok.mean() * 100 == pytest.approx(r["validated_accuracy"])
    assert abs(_test_correct(setup, res, "float").mean() * 100 - setup.float_acc) <= 0.2
