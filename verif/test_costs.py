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


def test_analytic_fit_held_out(cm):
    """Fit on a few pointwise shapes, check the error on held-out ones (reported)."""
    train = [LayerShape("conv", ci, co, h, h, 1, 1) for ci, co, h in
             [(8, 8, 4), (16, 8, 4), (8, 16, 6), (32, 16, 3), (16, 32, 5), (24, 8, 4),
              (8, 24, 7), (48, 8, 3), (12, 20, 5), (64, 4, 2), (4, 40, 3)]]
    held = [LayerShape("conv", 16, 16, 6, 6, 1, 1), LayerShape("conv", 40, 12, 4, 4, 1, 1)]
    cm.fit(train)
    rep = cm.validate(held)
    print(json.dumps({k: v for k, v in rep.items() if k != "rows"}), rep["rows"])
    assert rep["median_rel_err"] <= 0.05
    assert rep["max_rel_err"] <= 0.15


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
