"""Quantizer (calibration, headroom, export, QAT, necessity), model intake and the cost API.

Random tests print their seed; replay with RVMPQ_SEED=<seed> pytest verif/test_search_quantizer.py.
"""

import os
import random

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # 2 shared cores
import torch.nn as nn

from rvmpq.sw.search.costs_api import (AnalyticStandIn, CostModel, LayerCost, LayerShape,
                                       check_bits, cost_table)
from rvmpq.sw.search.models import (BUILTIN_MODELS, RECIPES, UnsupportedModelError,
                                    build_model, check_trace, float_forward, get_trained_model,
                                    trace_model)
from rvmpq.sw.search.qnn import int_accuracy, int_forward
from rvmpq.sw.search.quantizer import (Quantizer, clip_value, headroom_qmax, needs_qat,
                                       qat_finetune, quantize_dequantize)

SEED = int(os.environ.get("RVMPQ_SEED", random.randrange(1 << 30)))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits-cnn trained for 4 epochs (fast), cached in a temporary folder."""
    return get_trained_model("digits-cnn", tmp_path_factory.mktemp("models"),
                             recipe={"epochs": 4})


# ------------------------------------------------------------------ calibration

def test_calibration_methods():
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED} (replay: RVMPQ_SEED={SEED} pytest {__file__})")
    x = rng.standard_t(3, 20000)  # heavy tails: clipping pays at low bits
    top = np.abs(x).max()
    assert clip_value(x, 4, True, "minmax") == pytest.approx(top)
    assert clip_value(x, 4, True, "percentile") < top
    c = clip_value(x, 4, True, "mse")
    err = lambda cv: np.mean((quantize_dequantize(x, cv / 7, 4, True) - x) ** 2)
    assert c < top and err(c) < err(top)
    assert clip_value(np.abs(x), 8, False, "minmax") == pytest.approx(top)
    with pytest.raises(ValueError, match="allowed values"):
        clip_value(x, 4, True, "kl")


def test_headroom_rule():
    assert headroom_qmax(9, 8, False, 8) == (255, 127)
    for k in (9, 144, 512, 4608):
        qa, qw = headroom_qmax(k, 16, False, 16)
        assert 2 * k * qa * qw <= 2 ** 31 - 1
        assert 2 * k * (2 * qa) * qw > 2 ** 31 - 1 or 2 * k * qa * (2 * qw) > 2 ** 31 - 1


def test_export_consistent_with_fake_quant(digits):
    model, data = digits
    layers = trace_model(model)
    qz = Quantizer(layers, data.x_val, w_method="minmax")
    n = qz.n_compute
    fl = (float_forward(layers, data.x_test).argmax(1) == data.y_test).mean() * 100
    for b in (16, 8):
        net = qz.export([b] * n, [b] * n)
        stats = {}
        pred = int_forward(net, data.x_test, stats=stats).argmax(1)
        assert stats["wraps"] == 0
        assert abs((pred == data.y_test).mean() * 100 - fl) <= 1.0, b
        for l in net.compute_layers:
            qm = 2 ** (l.w_bits - 1) - 1
            assert np.abs(l.weight).max() <= qm and 0 <= l.shift <= 63
            assert np.abs(l.mult).max() < 2 ** 31
    # fake quant (the QAT forward) agrees with the integer model on most predictions at 4 bits
    net = qz.export([4] * n, [4] * n)
    with torch.no_grad():
        fq = qz.fq_module([4] * n, [4] * n)(torch.from_numpy(data.x_test)).argmax(1).numpy()
    assert (fq == int_forward(net, data.x_test).argmax(1)).mean() > 0.9
    with pytest.raises(ValueError, match="allowed values"):
        qz.export([3] * n, [8] * n)
    with pytest.raises(ValueError, match="one per conv/linear"):
        qz.export([8], [8])


def test_qat_trains_only_flagged_layers(digits):
    model, data = digits
    qz = Quantizer(trace_model(model), data.x_val)
    n = qz.n_compute
    flags = [False, True, False]
    new, scales = qat_finetune(qz, [8, 2, 8], [8, 2, 8], data.x_train[:256],
                               data.y_train[:256], flags, epochs=1)
    comp_old = [l for l in qz.layers if l.is_compute]
    comp_new = [l for l in new if l.is_compute]
    for f, a, b in zip(flags, comp_old, comp_new):
        assert np.allclose(a.weight, b.weight, atol=1e-6) != f
    net = qz.export([8, 2, 8], [8, 2, 8], layers=new, w_scales=scales, qat=flags)
    # the export uses exactly the weight grid QAT trained on
    for s, l in zip(scales, net.compute_layers):
        assert np.allclose(s, l.w_scale)
    assert len(scales) == 3 and all(len(s) == l.weight.shape[0] for s, l in zip(scales, net.compute_layers))
    assert [l.qat for l in net.compute_layers] == flags
    assert int_accuracy(net, data.x_val, data.y_val) > 50


def test_necessity_rule():
    drop = np.array([[0.0, 0.0, 0.2, 3.0], [0.0, 0.1, 0.6, 9.0]])
    bits = [16, 8, 4, 2]
    assert needs_qat(drop, bits, [4, 4]) == [False, True]
    assert needs_qat(drop, bits, [2, 8]) == [True, False]
    assert needs_qat(drop, bits, [4, 4], tau=1.0) == [False, False]
    with pytest.raises(ValueError, match="shape"):
        needs_qat(drop, bits, [4])


# ------------------------------------------------------------------ intake

def test_trace_folds_batchnorm_and_fuses_relu():
    torch.manual_seed(SEED % 1000)
    print(f"seed {SEED % 1000}")
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU()),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.1), nn.Linear(16, 3))
    bn = m[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    m.eval()
    layers = trace_model(m)
    assert [l.kind for l in layers] == ["conv", "conv", "maxpool", "flatten", "linear"]
    assert layers[0].relu and layers[1].relu and not layers[-1].relu
    x = torch.randn(5, 2, 8, 8)
    with torch.no_grad():
        ref = m(x).numpy()
    assert np.allclose(float_forward(layers, x.numpy()), ref, atol=1e-5)


def test_mnist1d_cnn_l_builds_and_traces():
    """The 7-compute-layer built-in model: its traced layers are the architecture of the
    issue-5 experiment (shapes written from the spec, not read off the code), and they
    reproduce the torch forward with BatchNorm statistics that are not the identity."""
    assert "mnist1d-cnn-l" in BUILTIN_MODELS and "mnist1d-cnn-l" in RECIPES
    torch.manual_seed(SEED % 1000)
    print(f"seed {SEED % 1000}")
    m = build_model("mnist1d-cnn-l")
    for bn in (x for x in m if isinstance(x, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
    layers = trace_model(m)
    assert [l.kind for l in layers] == ["conv", "conv", "conv", "maxpool", "conv", "conv",
                                        "maxpool", "conv", "flatten", "linear"]
    comp = [l for l in layers if l.is_compute]
    # conv1x5(1->32), conv1x3(32->32) x2, conv1x3(32->64), conv1x3(64->64) x2, fc(640->10)
    assert [l.weight.shape for l in comp] == [(32, 1, 1, 5), (32, 32, 1, 3), (32, 32, 1, 3),
                                              (64, 32, 1, 3), (64, 64, 1, 3), (64, 64, 1, 3),
                                              (10, 640)]
    assert [l.padding for l in comp[:-1]] == [(0, 2)] + [(0, 1)] * 5
    assert all(l.stride == (1, 1) and l.groups == 1 for l in comp[:-1])
    assert [l.relu for l in comp] == [True] * 6 + [False]
    assert [l.kernel for l in layers if l.kind == "maxpool"] == [(1, 2), (1, 2)]
    x = np.random.default_rng(SEED).standard_normal((6, 1, 1, 40)).astype(np.float32)
    check_trace(m, layers, x)           # raises unless the layers reproduce model(x)
    assert float_forward(layers, x).shape == (6, 10)


def test_mnist1d_resnet_builds_traces_and_quantizes():
    """The residual built-in model: traced as a graph whose layers, sources and shapes are the
    architecture of its spec (written from the spec, not read off the code), reproducing the
    torch forward with non-identity BatchNorm statistics; its INT16 integer export (3 adds)
    tracks the float logits. Not trained here (the search / deploy runs train it)."""
    assert "mnist1d-resnet" in BUILTIN_MODELS and "mnist1d-resnet" in RECIPES
    torch.manual_seed(SEED % 1000)
    print(f"seed {SEED % 1000}")
    m = build_model("mnist1d-resnet")
    for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
    layers = trace_model(m)
    C, A = "conv", "add"
    assert [l.kind for l in layers] == [C, C, C, A, C, C, C, A, C, C, C, A, "flatten", "linear"]
    # each block: conv(src = block input) - conv - add(block input, second conv) + ReLU
    assert [l.src for l in layers] == [
        (-1,), (0,), (1,), (0, 2), (3,), (4,), (5,), (4, 6), (7,), (8,), (9,), (8, 10), (11,),
        (12,)]
    assert [l.relu for l in layers] == [True, True, False, True] * 3 + [False, False]
    comp = [l for l in layers if l.is_compute]
    assert len(comp) == 10
    assert [l.weight.shape for l in comp] == [
        (16, 1, 1, 5), (16, 16, 1, 3), (16, 16, 1, 3), (32, 16, 1, 3), (32, 32, 1, 3),
        (32, 32, 1, 3), (32, 32, 1, 3), (32, 32, 1, 3), (32, 32, 1, 3), (10, 320)]
    assert [l.stride for l in comp[:-1]] == [(1, 1)] * 3 + [(1, 2)] + [(1, 1)] * 2 + [(1, 2)] \
        + [(1, 1)] * 2
    assert [l.padding for l in comp[:-1]] == [(0, 2)] + [(0, 1)] * 8
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1, 1, (32, 1, 1, 40)).astype(np.float32)
    check_trace(m, layers, x)           # raises unless the layers reproduce model(x)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).double().numpy()
    qz = Quantizer(layers, x)
    net = qz.export([16] * 10, [16] * 10)
    assert [l.kind for l in net.layers].count("add") == 3
    z = int_forward(net, x).astype(np.float64) * net.logit_scale
    assert z.shape == (32, 10)
    assert np.abs(z - ref).max() <= 2e-2 * np.abs(ref).max(), np.abs(z - ref).max()


@pytest.mark.parametrize("mod, msg", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.LPPool2d(2, 2), nn.Flatten(), nn.Linear(2, 2)),
     "LPPool2d is not supported; supported modules"),
    (nn.Sequential(nn.ReLU(), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)),
     "ReLU must follow a Conv2d/Linear/BatchNorm, directly or through max pooling"),
    (nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.ReLU()), "last module"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding_mode="reflect"), nn.Flatten(), nn.Linear(2, 2)),
     "padding_mode='reflect'; supported: 'zeros'"),
])
def test_trace_rejects_unsupported(mod, msg):
    with pytest.raises(UnsupportedModelError, match=msg):
        trace_model(mod)


class _Residual(nn.Module):
    """conv -> conv with a residual add (functional ReLU): the add must not be dropped."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 2, 3, padding=1)
        self.c2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))

    def forward(self, x):
        return self.fc(x + self.c2(torch.relu(self.c1(x))))


class _Reordered(nn.Module):
    """Children declared in another order than forward runs them (fx cannot see it as a
    merge, only the numeric check catches it)."""

    def __init__(self):
        super().__init__()
        self.cb = nn.Conv2d(2, 2, 3, padding=1)
        self.ca = nn.Conv2d(2, 2, 1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.flat(self.cb(self.ca(x))))


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.cat([x, torch.relu(self.c1(x))], 1), 1))


def test_residual_add_is_traced_not_dropped():
    from rvmpq.sw.search.models import check_trace

    res = _Residual()
    layers = trace_model(res)
    assert [l.kind for l in layers].count("add") == 1
    xr = np.random.default_rng(1).random((4, 2, 4, 4)).astype(np.float32)
    check_trace(res, layers, xr)                    # the add is part of the traced graph
    with pytest.raises(UnsupportedModelError, match="concatenates tensors of different "
                       "activations: the network input .no ReLU., c1 .ReLU."):
        trace_model(_Concat())
    m = _Reordered()
    x = np.random.default_rng(0).random((4, 2, 2, 2)).astype(np.float32)
    layers = trace_model(m)                         # module order: cb, ca (wrong)
    with pytest.raises(UnsupportedModelError, match="does not reproduce"):
        check_trace(m, layers, x)
    good = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Flatten(), nn.Linear(8, 3))
    check_trace(good, trace_model(good), x)         # a faithful trace passes


# ------------------------------------------------------------------ cost API

def test_cost_api_stand_in():
    cm = AnalyticStandIn()
    assert isinstance(cm, CostModel) and cm.source == "stand-in"
    s = LayerShape("conv", 16, 32, 8, 8, 3, 3, (1, 1), (1, 1))
    assert (s.h_out, s.w_out, s.macs, s.dot_len) == (8, 8, 8 * 8 * 32 * 144, 144)
    c8, c4, c2 = (cm.layer_cost(s, b, b) for b in (8, 4, 2))
    assert isinstance(c8, LayerCost)
    assert c2.cycles < c4.cycles < c8.cycles and c2.weight_bytes < c4.weight_bytes
    assert s.key() == "conv:cin16:cout32:h8:w8:k3x3:s1x1:p1x1:g1"
    t = cost_table(cm, [s, LayerShape("linear", 512, 10)], [(8, 8), (2, 2)])
    assert t.shape == (2, 2, 4)
    with pytest.raises(ValueError, match=r"allowed values: \[2, 4, 8, 16\]"):
        check_bits(3)
    with pytest.raises(ValueError, match="allowed values"):
        LayerShape("pool", 1, 1)
    with pytest.raises(TypeError, match="CostModel"):
        cost_table(object(), [s], [(8, 8)])


def test_json_cost_table_roundtrip(tmp_path):
    from rvmpq.sw.search.costs_api import JsonCostTable

    shapes = [LayerShape("conv", 1, 16, 8, 8, 3, 3, (1, 1), (1, 1)), LayerShape("linear", 512, 10)]
    opts = [(8, 8), (4, 4)]
    JsonCostTable.write(tmp_path / "c.json", AnalyticStandIn(), shapes, opts)
    t = JsonCostTable(tmp_path / "c.json")
    assert isinstance(t, CostModel) and t.source == "stand-in"
    assert (cost_table(t, shapes, opts) == cost_table(AnalyticStandIn(), shapes, opts)).all()
    with pytest.raises(KeyError, match="no cost for"):
        t.layer_cost(shapes[0], 2, 2)


def test_trained_weights_do_not_depend_on_the_callers_threads(tmp_path):
    """get_trained_model trains on one torch thread whatever the caller set, so the cached
    weights (and every search result built on them) do not depend on which process trained
    the model first, and the caller's setting is restored."""
    got = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        try:
            model, _ = get_trained_model("digits-cnn", tmp_path / f"t{threads}",
                                         recipe={"epochs": 2})
            assert torch.get_num_threads() == threads
        finally:
            torch.set_num_threads(1)
        got.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(got[0][k], got[1][k]) for k in got[0])
