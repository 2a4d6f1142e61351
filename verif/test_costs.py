"""The RTL-measured cost table (sw/costs.py): protocol, cache, analytic fit, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rvmpq.sw import costs
from rvmpq.sw.search.costs_api import CostModel, JsonCostTable, LayerShape


@pytest.fixture
def cm(tmp_path):
    return costs.RtlCostModel(cache_dir=tmp_path / "costs", jobs=2, verbose=False)


def test_protocol_and_cache(cm):
    assert isinstance(cm, CostModel) and cm.source == "rtl-measured"
    s = LayerShape("conv", 8, 8, 4, 4, 3, 3, (1, 1), (1, 1))
    c8 = cm.layer_cost(s, 8, 8)
    c2 = cm.layer_cost(s, 2, 2)
    assert c8.cycles > c2.cycles > 0           # fewer dots at INT2
    assert c8.weight_bytes > c2.weight_bytes
    assert c8.energy > c2.energy
    files = list(cm.dir.glob("*.json"))
    assert len(files) == 2
    m = json.loads(files[0].read_text())
    assert m["exact"] is True
    # cached: a second model reads the files instead of running
    again = costs.RtlCostModel(cache_dir=cm.root, measure_missing=False, verbose=False)
    assert again.layer_cost(s, 8, 8) == c8
    # mixed widths run at the wider one
    assert cm.layer_cost(s, 2, 8) == c8


def test_analytic_fit_recovers_a_known_cost_law(cm, monkeypatch):
    """Fit / validate plumbing without the RTL: "measurements" follow a cost law written here
    from the plan's fields (not from plan_counts); the fit must predict held-out shapes of every
    variant and precision almost exactly (the RTL figures: `rvmpq costs --validate`, slow test
    below)."""
    def law(s, b):
        pl = costs.shape_plan(s, b)
        pix = pl.ho * pl.wo
        if pl.variant == "depthwise":
            return 40 + pix * (9 + pl.cw * (6 + 2 * pl.la * pl.kh * pl.kw)) + 3 * pix * pl.cout_pad
        return (60 + pl.ho * 5 + pix * pl.cout_pad // pl.nb * (8 + pl.kh * pl.kw * pl.cw * (
            4 + 2 * pl.nb)) + 4 * pix * pl.cout_pad)

    def fake_measure_many(items):
        return [costs.Measurement(s.key(), b, law(s, b), law(s, b), 0, 0, 0, 0, True)
                for s, b in items]
    monkeypatch.setattr(cm, "measure_many", fake_measure_many)
    fit, held = costs.fit_shapes(), costs.held_out_shapes()
    cm.fit(fit)
    rep = cm.validate(held)
    assert set(rep["per_variant"]) == set(costs.VARIANTS) and rep["n"] == 4 * len(held)
    assert rep["max_rel_err"] < 1e-6, sorted(rep["rows"], key=lambda r: -r["rel_err"])[:3]


def test_logits_layer_is_costed_with_int32_output(cm):
    """The last layer runs as deploy runs it: raw int32 accumulators, no requantization."""
    s = LayerShape("linear", 64, 10)
    sl = LayerShape("linear", 64, 10, logits=True)
    assert sl.key() == s.key() + ":logits"
    layer, _ = costs.shape_layer(sl, 8)
    assert layer.out_bits == 32 and not layer.relu
    assert costs.shape_layer(s, 8)[0].out_bits == 8
    c, cl = cm.layer_cost(s, 8, 8), cm.layer_cost(sl, 8, 8)
    assert c.cycles != cl.cycles
    assert costs.plan_counts(costs.shape_plan(sl, 8))["requant"] == 0
    pl = costs.shape_plan(sl, 8)
    assert costs.plan_counts(pl)["raw_out"] == pl.cout_pad >= 10
    assert cl.weight_bytes == c.weight_bytes > 0 and cl.act_bytes == c.act_bytes == 64
    assert costs.model_shapes("mnist1d-cnn")[-1].logits
    assert not any(x.logits for x in costs.model_shapes("mnist1d-cnn")[:-1])


def test_plan_counts_independent():
    """Plan counts against hand-derived numbers (not the code under test)."""
    # conv 3x3, 8 -> 8 channels, 5x5 map, padding 1, INT8: 4 lanes/word -> 2 words per pixel;
    # the blocking (nb channels x up to p pixels) is the generator's choice: read it off the plan
    s = LayerShape("conv", 8, 8, 5, 5, 3, 3, (1, 1), (1, 1))
    pl = costs.shape_plan(s, 8)
    c = costs.plan_counts(pl)
    assert pl.cw == 2 and pl.cout_pad % pl.nb == 0 and pl.cout_pad >= 8
    nblk, groups = pl.cout_pad // pl.nb, -(-5 // pl.p)
    assert c["dots"] == 5 * 5 * pl.cout_pad * 9 * 2      # pixels x channels x taps x words
    assert c["pixel_groups"] == 5 * groups and c["block_calls"] == 5 * groups * nblk
    assert c["blocks"] == nblk
    assert c["iters"] == 5 * groups * nblk * 3 * 3 * 2   # rows x groups x blocks x ky x kx x words
    assert c["act_loads"] == c["dots"] / pl.nb and c["requant"] == 5 * 5 * pl.cout_pad
    assert c["out_words"] == 25 * pl.cout_pad / 4        # 8-bit outputs: 4 per word
    # depthwise 3x3, 20 channels at INT4 (8 lanes: 3 words) on 4x4, stride 2
    d = LayerShape("conv", 20, 20, 4, 4, 3, 3, (2, 2), (1, 1), groups=20)
    c = costs.plan_counts(costs.shape_plan(d, 4))
    assert c["pixels"] == 4 and c["dots"] == 4 * 3 * 8 * 9 and c["imm_weights"] == 0
    d1 = LayerShape("conv", 5, 5, 4, 4, 3, 3, (1, 1), (1, 1), groups=5)
    c = costs.plan_counts(costs.shape_plan(d1, 4))       # one channel word: weights folded
    assert c["weight_loads"] == 0 and c["imm_weights"] == 16 * 5 * 9


def test_fit_and_held_out_sets_are_seeded_and_disjoint():
    f, h = costs.fit_shapes(), costs.held_out_shapes()
    assert {s.key() for s in f}.isdisjoint({s.key() for s in h})
    for v in costs.VARIANTS:
        assert sum(costs.shape_variant(s) == v for s in f) == costs.N_FIT
        assert sum(costs.shape_variant(s) == v for s in h) == costs.N_HELD
    conv = [s for s in h + f if costs.shape_variant(s) == "conv"]
    assert any(s.stride == (2, 2) for s in conv) and any(s.kh == s.kw == 3 for s in conv)
    assert f == costs.fit_shapes(costs.SHAPE_SEED) and f != costs.fit_shapes(1)


def test_progress_lines(capsys):
    import io

    buf = io.StringIO()
    bar = costs.Progress(3, "costs", stream=buf)
    for i in range(3):
        bar.step(f"item {i}")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and "3/3" in lines[-1] and "[" + "#" * 24 + "]" in lines[-1]
    quiet = io.StringIO()
    costs.Progress(2, stream=quiet, enabled=False).step()
    assert quiet.getvalue() == ""


@pytest.mark.slow
def test_validation_report_targets(tmp_path):
    """`rvmpq costs --validate`: the analytic model on held-out conv / pointwise / depthwise /
    linear shapes at every precision (issue 4 target: median <= 5 %, worst <= 15 %; reported;
    asserted here: median <= 5 % overall and per variant)."""
    from rvmpq.sw.cli import main
    assert main(["costs", "--validate", "-o", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "validation.json").read_text())
    assert set(rep["per_variant"]) == set(costs.VARIANTS)
    assert (tmp_path / "validation.md").read_text().count("|") > 20
    print({v: (s["median_rel_err"], s["max_rel_err"]) for v, s in rep["per_variant"].items()})
    assert rep["target_met"] == (rep["median_rel_err"] <= 0.05 and rep["max_rel_err"] <= 0.15)
    # the target itself is reported (validation.md; the worst case is missed on tiny
    # single-word depthwise layers); guard against regressions of the model: the medians
    assert rep["median_rel_err"] <= 0.05
    assert all(s["median_rel_err"] <= 0.05 for s in rep["per_variant"].values())


def test_bad_input(cm):
    with pytest.raises(ValueError, match=r"\[2, 4, 8, 16\]"):
        cm.layer_cost(LayerShape("conv", 8, 8, 4, 4), 3, 8)
    with pytest.raises(ValueError, match="groups"):
        cm.layer_cost(LayerShape("conv", 8, 16, 4, 4, 3, 3, groups=2), 8, 8)
    from rvmpq.sw.kernels import KernelLayerError
    with pytest.raises(KernelLayerError, match="DMEM"):
        cm.layer_cost(LayerShape("conv", 128, 128, 32, 32, 3, 3, padding=(1, 1)), 16, 16)
    with pytest.raises(ValueError, match="digits-cnn"):
        costs.model_shapes("resnet50")
    with pytest.raises(ValueError, match="jobs"):
        costs.RtlCostModel(jobs=0)


def test_cli_needs_model_or_validate(capsys):
    from rvmpq.sw.cli import main
    assert main(["costs"]) == 2
    assert "--validate" in capsys.readouterr().err


def test_model_shapes():
    s = costs.model_shapes("digits-cnn")
    assert [x.kind for x in s] == ["conv", "conv", "linear"]
    assert (s[1].cin, s[1].cout, s[1].h_in) == (16, 32, 8)
    assert s[2].cin == 32 * 4 * 4
    m = costs.model_shapes("mnist1d-cnn")
    assert (m[0].kh, m[0].kw, m[0].w_in) == (1, 5, 40) and m[-1].cin == 320


def test_cli_json(tmp_path):
    """`rvmpq costs --model digits-cnn --json FILE` writes a table the search can read
    (measurements cached under build/costs)."""
    from rvmpq.sw.cli import main
    out = tmp_path / "digits.json"
    assert main(["costs", "--model", "digits-cnn", "--json", str(out)]) == 0
    t = JsonCostTable(out)
    assert t.source == "rtl-measured"
    shapes = costs.model_shapes("digits-cnn")
    cyc = [t.layer_cost(shapes[1], b, b).cycles for b in (16, 8, 4, 2)]
    assert np.all(np.diff(cyc) < 0), cyc
