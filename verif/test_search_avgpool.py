"""Average pooling in the intake: ``AvgPool2d`` / ``AdaptiveAvgPool2d(1)`` (and ONNX
``AveragePool`` / ``GlobalAveragePool`` / ``ReduceMean``) become depthwise convs with constant
weights, which the quantizer, the integer model and ``rvmpq deploy`` already run.

References: the torch module's own forward, ONNX's reference evaluator, and ``int_forward``
for the programs on the RTL (bit for bit). Random parts are seeded by the ``seed`` fixture,
which prints its replay command.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores
import torch.nn as nn  # noqa: E402

from rvmpq.sw.deploy import run_network  # noqa: E402
from rvmpq.sw.search import pipeline  # noqa: E402
from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, float_forward, trace_model)
from rvmpq.sw.search.pipeline import deploy_error  # noqa: E402
from rvmpq.sw.search.qnn import int_forward, quantize_input  # noqa: E402
from rvmpq.sw.search.quantizer import Quantizer  # noqa: E402


def _seq_model():
    """conv-ReLU - AvgPool2d(2) - conv-BN-ReLU - global average pool - flatten - fc."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                      nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))
    m[4].running_mean.uniform_(-0.3, 0.3)
    m[4].running_var.uniform_(0.5, 2.0)
    return m.eval()


class _ResGap(nn.Module):
    """conv-ReLU, conv, add the first conv's output, ReLU, global average pool, flatten, fc:
    a graph (residual add) traced with torch.fx."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.gap, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

    def forward(self, x):
        """``fc(flatten(gap(relu(c1(x) + c2(relu(c1(x)))))))``, c1's output read twice."""
        h = torch.relu(self.c1(x))
        return self.fc(torch.flatten(self.gap(torch.relu(h + self.c2(h))), 1))


def _x(n=16, shape=(1, 8, 8), seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("make", [_seq_model, _ResGap], ids=["sequential", "graph"])
def test_average_pooling_traces_as_depthwise_conv(make):
    model, x = make().eval(), _x()
    layers = trace_model(model, x[:1])
    check_trace(model, layers, x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).double().numpy()
    assert np.allclose(float_forward(layers, x), ref, rtol=1e-6, atol=1e-6)
    pools = [l for l in layers if l.kind == "conv" and l.groups > 1]
    for l in pools:          # constant weights 1/(kh kw), no bias, stride = kernel here
        assert l.groups == l.weight.shape[0] and l.weight.shape[1] == 1
        assert np.all(l.weight == 1.0 / (l.kernel[0] * l.kernel[1])) and not l.bias.any()
        assert l.stride == l.kernel and l.padding == (0, 0)
    kernels = [l.kernel for l in pools]
    assert kernels == ([(2, 2), (4, 4)] if make is _seq_model else [(8, 8)])


def test_average_pooling_refusals():
    x = _x()
    with pytest.raises(UnsupportedModelError, match="needs the shape of its input"):
        trace_model(_seq_model())                          # no example input
    bad = [(nn.AvgPool2d(2, padding=1), "no padding"),
           (nn.AdaptiveAvgPool2d(3), "to output size 3x3 of an input of 8x8; supported: "
                                     "output sizes that divide the input's"),
           (nn.AvgPool2d(2, ceil_mode=True), "no padding, ceil_mode")]
    for pool, message in bad:
        m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), pool, nn.Flatten(),
                          nn.LazyLinear(3))
        m(torch.from_numpy(x[:1]))                         # size the lazy layer
        with pytest.raises(UnsupportedModelError, match=message):
            trace_model(m.eval(), x[:1])

    class Twice(nn.Module):
        """One AvgPool2d module applied to maps of two sizes."""

        def __init__(self):
            super().__init__()
            self.c, self.p, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(2), \
                nn.Linear(2 * 2 * 2, 3)

        def forward(self, x):
            """conv, pool, pool (the same module), add, flatten, fc."""
            h = self.p(self.c(x))
            return self.fc(torch.flatten(self.p(h) + self.p(h), 1))

    with pytest.raises(UnsupportedModelError, match="different shapes"):
        trace_model(Twice().eval(), x[:1])


def deploys_bit_exact(model, x, impl, seed, tmp_path):
    """Export ``model`` (calibrated on ``x``) at seeded random bits that ``rvmpq deploy`` can
    run on ``impl`` and check that the program's logits on 2 of ``x`` equal ``int_forward``'s
    bit for bit."""
    qz = Quantizer(trace_model(model, x[:1]), x)
    rng = np.random.default_rng(seed)
    opts = [2, 4, 8, 16] if impl == "mpq" else [8, 16]
    while True:    # e.g. 6 and 5 channels: some narrowing pools cannot run (the next test)
        bits = [int(b) for b in rng.choice(opts, qz.n_compute)]
        net = qz.export(bits, bits)
        if deploy_error(net) is None:
            break
    print(f"{impl} bits {bits}")
    xs = x[rng.choice(len(x), 2, replace=False)]
    run = run_network(net, quantize_input(xs, net), impl, tmp_path, "prog")
    assert np.array_equal(run.logits, int_forward(net, xs, exact="int64")), f"{tmp_path}/prog.c"


@pytest.mark.parametrize("impl", ["mpq", "baseline"])
def test_average_pooling_deploys_bit_exact(impl, seed, tmp_path):
    """The sequential model exported at seeded mixed bits runs on the RTL bit for bit like
    the integer model (the pools are depthwise-conv kernels)."""
    deploys_bit_exact(_seq_model(), _x(64), impl, seed, tmp_path)


def test_configuration_the_kernels_cannot_run_is_named():
    """A pool over 6 channels read at INT4 and written at INT2 (the next layer's bits) does
    not fill the 2-bit output words: deploy_error names it, and the same net at INT8 runs."""
    model, x = _seq_model(), _x(64)
    qz = Quantizer(trace_model(model, x[:1]), x)
    err = deploy_error(qz.export([16, 4, 2, 4, 2], [16, 4, 2, 4, 2]))
    assert err is not None and "depthwise with 6 channels at a_bits=4 -> out_bits=2" in err
    assert deploy_error(qz.export([8] * 5, [8] * 5)) is None


def test_search_prefers_a_configuration_the_kernels_can_run(monkeypatch):
    """search() picks the best validation accuracy among the results deploy can run; only if
    none can, the best of all (its deploy_error then says why)."""
    class Sol:
        seconds = 0.0

    def fake_validate(setup, sol, qat=True):
        val, err = table[sol.method]
        return {"bits": [8], "predicted_accuracy": 0.0, "validated_accuracy": val,
                "validation_split_accuracy": val, "cycles_vs_int8": 0.5,
                "costs": {"cycles": 1.0}, "feasible": True, "deploy_error": err}

    def fake_run(setup, m, budgets, qat=True, log=None):
        sol = Sol()
        sol.method = m
        return sol

    monkeypatch.setattr(pipeline, "validate", fake_validate)
    monkeypatch.setattr(pipeline, "run_method", fake_run)
    table = {"dp": (90.0, "depthwise with 6 channels ..."), "ilp": (80.0, None),
             "greedy": (85.0, None)}
    res = pipeline.search(None, {}, ["dp", "ilp", "greedy"], baselines=False, log=None)
    assert res["best"] == "greedy"
    table = {"dp": (90.0, "no"), "ilp": (80.0, "no")}
    assert pipeline.search(None, {}, ["dp", "ilp"], baselines=False, log=None)["best"] == "dp"


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_average_pooling_from_onnx(tmp_path, dynamo):
    """Both torch exporters (``AveragePool``, and ``GlobalAveragePool`` or ``ReduceMean``) come
    back as the same layers and function."""
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from test_search_onnx import _export

    from rvmpq.sw.search.onnx_intake import load_onnx

    model, x = _seq_model(), _x()
    path = tmp_path / "m.onnx"
    _export(model, (1, 8, 8), path, dynamo)
    net = load_onnx(path)
    layers = trace_model(net, x[:1])
    ref_layers = trace_model(model, x[:1])
    assert [(l.kind, l.kernel, l.groups) for l in layers] == \
        [(l.kind, l.kernel, l.groups) for l in ref_layers]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).double().numpy()
    assert np.allclose(float_forward(layers, x), ref, rtol=1e-5, atol=1e-5)


def test_onnx_reduce_mean_without_keepdims(tmp_path):
    """``ReduceMean`` over H and W with ``keepdims=0`` ((N, C) out) is a global average pool
    and a flatten, against ONNX's reference evaluator."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    from test_search_onnx import _graph_model, _init

    from rvmpq.sw.search.onnx_intake import load_onnx

    rng = np.random.default_rng(0)
    axes = numpy_helper.from_array(np.array([-1, -2], dtype=np.int64), "axes")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r", "axes"], ["m"], name="mean", keepdims=0),
             helper.make_node("Gemm", ["m", "fw"], ["y"], name="fc", transB=1)]
    model = _graph_model(nodes, [_init("w", rng.normal(size=(3, 1, 3, 3))),
                                 _init("fw", rng.normal(size=(2, 3)))], (1, 5, 5), (2,),
                         ints=[axes], opset=18)     # ReduceMean takes its axes as an input
    path = tmp_path / "mean.onnx"
    onnx.save(model, str(path))
    x = _x(4, (1, 5, 5))
    net = load_onnx(path)
    layers = trace_model(net, x[:1])
    assert [l.kind for l in layers] == ["conv", "conv", "flatten", "linear"]
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert np.allclose(float_forward(layers, x), ref, rtol=1e-5, atol=1e-5)
