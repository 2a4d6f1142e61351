"""Models that take flat samples: an MLP whose first layer is a ``Linear`` (``(N, F)``
batches), a 1-D CNN whose ``forward`` begins ``x.unsqueeze(1)`` of ``(N, L)`` signals, a 2-D
CNN that reshapes ``(N, 64)`` rows into ``(N, 1, 8, 8)`` images, and the ONNX graphs both
torch exporters write for them (an ``(N, F)`` graph input).

The data sets keep their ``(N, C, H, W)`` samples (``(N, 1, 1, 40)`` for MNIST-1D); the intake
finds that such a model takes them flattened (``models._input_form``). References: each model
is compared with a twin written in the form the intake took before (``nn.Flatten`` first, an
``(N, 1, L)`` input): the same traced layers and weights, the float layers against the model's
own forward on flat batches, and ``torch_accuracy`` against the accuracy counted by hand.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from test_search_maxpool import _summary, _x  # noqa: E402

from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, float_forward, torch_accuracy, trace_model)


def _mlp(features):
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(features, 24), nn.ReLU(), nn.Linear(24, 10)).eval()


@pytest.mark.parametrize("sample", [(1, 1, 40), (1, 8, 8)], ids=["mnist1d", "digits"])
def test_an_mlp_on_flat_samples_is_its_flatten_twin(sample):
    """``nn.Sequential(Linear, ReLU, Linear)`` on the data's ``(N, C, H, W)`` samples traces to
    its ``nn.Flatten`` twin's layers; its float layers and its accuracy are those of the
    model run on ``(N, C*H*W)`` rows. (Before, the MNIST-1D one ran on ``(N, 1, 1, 40)``,
    returned ``(N, 1, 1, 10)`` and ``torch_accuracy`` failed; the digits one was refused.)"""
    f = int(np.prod(sample))
    net = _mlp(f)
    twin = nn.Sequential(nn.Flatten(), *net).eval()
    x = _x(sample, 64)
    layers = trace_model(net, x[:1])
    assert [l.kind for l in layers] == ["flatten", "linear", "linear"]
    assert _summary(layers) == _summary(trace_model(twin, x[:1]))
    check_trace(net, layers, x)
    with torch.no_grad():
        want = net(torch.from_numpy(x.reshape(len(x), f))).double().numpy()
    np.testing.assert_allclose(float_forward(layers, x), want, rtol=1e-5, atol=1e-6)
    y = np.random.default_rng(1).integers(0, 10, len(x))
    assert torch_accuracy(net, x, y) == pytest.approx((want.argmax(1) == y).mean() * 100)


class Signal(nn.Module):
    """A 1-D CNN that takes ``(N, 40)`` signals (``how`` makes them ``(N, 1, 40)``), or, with
    ``how`` None, ``(N, 1, 40)`` batches as they are: the twin."""

    def __init__(self, how=None):
        super().__init__()
        torch.manual_seed(5)
        self.c1 = nn.Conv1d(1, 8, 5, stride=2, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.c2 = nn.Conv1d(8, 8, 3, padding=1)
        self.fc, self.how = nn.Linear(8 * 9, 10), how
        self.bn.running_mean.uniform_(-0.3, 0.3)
        self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        """The network."""
        if self.how == "x.unsqueeze(1)":
            x = x.unsqueeze(1)
        elif self.how == "torch.unsqueeze(x, -2)":
            x = torch.unsqueeze(x, -2)
        elif self.how == "x[:, None, :]":
            x = x[:, None, :]
        elif self.how == "x.view(x.size(0), 1, -1)":
            x = x.view(x.size(0), 1, -1)
        elif self.how == "x.reshape(-1, 1, 40)":
            x = x.reshape(-1, 1, 40)
        h = F.relu(self.c2(F.relu(self.bn(self.c1(x)))))
        return self.fc(F.max_pool1d(h, 2).flatten(1))


SIGNAL_FORMS = ["x.unsqueeze(1)", "torch.unsqueeze(x, -2)", "x[:, None, :]",
                "x.view(x.size(0), 1, -1)", "x.reshape(-1, 1, 40)"]


@pytest.mark.parametrize("how", SIGNAL_FORMS)
def test_a_1d_cnn_on_flat_signals_is_its_ncl_twin(how):
    """A ``forward`` that begins by making ``(N, L)`` signals ``(N, 1, L)`` traces to the
    layers of the same network taking ``(N, 1, L)`` batches: the reshape is the identity
    on the traced layers' ``(N, C, 1, L)`` tensors."""
    net, twin = Signal(how).eval(), Signal().eval()
    x = _x((1, 1, 40), 16)
    layers = trace_model(net, x[:1])
    assert [l.kind for l in layers] == ["conv", "conv", "maxpool", "flatten", "linear"]
    assert _summary(layers) == _summary(trace_model(twin, x[:1]))
    check_trace(net, layers, x)
    with torch.no_grad():
        want = net(torch.from_numpy(x[:, 0, 0, :])).double().numpy()
    np.testing.assert_allclose(float_forward(layers, x), want, rtol=1e-5, atol=1e-6)


class Rows(nn.Module):
    """A 2-D CNN that takes ``(N, 64)`` rows and views them as ``(N, 1, 8, 8)`` images."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.c, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 16, 10)

    def forward(self, x):
        """The network."""
        return self.fc(F.max_pool2d(F.relu(self.c(x.view(-1, 1, 8, 8))), 2).flatten(1))


def test_a_2d_cnn_on_flat_rows_is_its_nchw_twin():
    net = Rows().eval()
    twin = nn.Sequential(net.c, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), net.fc).eval()
    x = _x((1, 8, 8), 16)
    layers = trace_model(net, x[:1])
    assert _summary(layers) == _summary(trace_model(twin, x[:1]))
    check_trace(net, layers, x)


class Unsqueeze2(nn.Module):
    """``x.unsqueeze(2)`` of ``(N, 40)`` signals: 40 channels of length 1, not the data's one
    channel of length 40."""

    def __init__(self):
        super().__init__()
        self.c, self.fc = nn.Conv1d(40, 4, 1), nn.Linear(4, 10)

    def forward(self, x):
        """The network."""
        return self.fc(F.relu(self.c(x.unsqueeze(2))).flatten(1))


class Spatial(nn.Module):
    """A conv head without pooling: ``(N, 10, 8, 8)``, no logits."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 10, 3, padding=1)

    def forward(self, x):
        """The network."""
        return self.c(x)


@pytest.mark.parametrize("net, sample, message", [
    (lambda: _mlp(50), (1, 1, 40),
     r"cannot run on the data set's samples of shape \(C, H, W\) = \(1, 1, 40\): as \(2, 1, "
     r"1, 40\) batches: mat1 and mat2.*; as \(2, 40\) batches: mat1 and mat2"),
    (Unsqueeze2, (1, 1, 40), r"unsqueeze: an unsqueeze that moves the channels.*\(1, 40\) "
     r"becomes \(40, 1\)"),
    (Spatial, (1, 8, 8), r"as \(2, 1, 8, 8\) batches it returns shape \(2, 10, 8, 8\), not "
     r"\(N, K\) logits"),
])
def test_inputs_no_layout_fits_are_refused(net, sample, message):
    """A model that runs on neither the data's samples nor them flattened, one whose reshape
    of flat samples puts their values on another axis than the data's, and one that returns
    no ``(N, K)`` logits are refused, with the shapes tried."""
    x = _x(sample, 2)
    with pytest.raises(UnsupportedModelError, match=message):
        m = net().eval()
        check_trace(m, trace_model(m, x[:1]), x)       # as the search does


def test_the_input_layout_probe_leaves_batchnorm_statistics_alone():
    """Finding a model's input layout runs it in eval mode: a model in training mode (as a
    fine-tune would have it) keeps its BatchNorm running statistics and its mode."""
    from rvmpq.sw.search import models

    net = Signal("x.unsqueeze(1)").train()
    before = net.bn.running_mean.clone()
    assert tuple(models._model_input(net, _x((1, 1, 40), 4)).shape) == (4, 40)
    assert net.training and net.bn.training
    assert torch.equal(net.bn.running_mean, before)


def _onnx_twin(model, twin, f, sample, tmp_path, dynamo):
    """Export ``model`` (``(N, f)`` input) and check that the ONNX intake traces it to
    ``twin``'s layers (flattens aside), computing the model's function on the data's
    ``sample`` layout."""
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from test_search_onnx import _export

    from rvmpq.sw.search.onnx_intake import load_onnx

    path = tmp_path / "m.onnx"
    _export(model.eval(), (f,), path, dynamo)
    net = load_onnx(path)
    assert net.flat_input
    x = _x(sample, 8)
    layers = trace_model(net, x[:1])
    check_trace(net, layers, x)

    def kinds(ls):
        return [(l.kind, l.relu, tuple(l.kernel)) for l in ls if l.kind != "flatten"]

    assert kinds(layers) == kinds(trace_model(twin.eval(), x[:1]))
    with torch.no_grad():
        want = model(torch.from_numpy(x.reshape(len(x), f))).double().numpy()
    np.testing.assert_allclose(float_forward(layers, x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("case", ["mlp", "unsqueeze", "view-sizes", "rows"])
def test_onnx_graphs_with_an_nf_input(tmp_path, dynamo, case):
    """Both exporters: an MLP's ``(N, F)`` input feeds its first ``Gemm`` (the module
    flattens the samples), and a CNN's feeds an ``Unsqueeze`` / ``Reshape`` (a constant shape
    or one computed from ``Shape``) whose layout the module takes the samples in."""
    if case == "mlp":
        net = _mlp(40)
        _onnx_twin(net, nn.Sequential(nn.Flatten(), *net), 40, (1, 1, 40), tmp_path, dynamo)
    elif case == "rows":
        _onnx_twin(Rows(), Rows(), 64, (1, 8, 8), tmp_path, dynamo)
    else:
        how = "x.unsqueeze(1)" if case == "unsqueeze" else "x.view(x.size(0), 1, -1)"
        _onnx_twin(Signal(how), Signal(), 40, (1, 1, 40), tmp_path, dynamo)


@pytest.mark.parametrize("case", ["gemm-beside", "conv-reads-input"])
def test_onnx_conv_on_an_nf_input_without_one_layout_is_refused(tmp_path, case):
    """An ``(N, F)`` input that a ``Gemm`` reads beside the ``Unsqueeze`` in front of a
    ``Conv`` has no one layout, and a ``Conv`` reading it directly has none at all: refused,
    saying what is taken."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper
    from test_search_onnx import _graph_model, _init

    from rvmpq.sw.search.onnx_intake import load_onnx

    rng = np.random.default_rng(0)
    conv_in = "u" if case == "gemm-beside" else "x"
    nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["u"], name="u"),
             helper.make_node("Conv", [conv_in, "w"], ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Gemm", ["x", "g"], ["s"], name="side", transB=1),
             helper.make_node("Add", ["f", "s"], ["y"], name="add")]
    inits = [_init("w", rng.normal(size=(2, 1, 3))), _init("g", rng.normal(size=(76, 40))),
             onnx.numpy_helper.from_array(np.array([1], np.int64), "ax")]
    if case == "conv-reads-input":
        nodes = nodes[1:]
        inits = inits[:2]
    path = tmp_path / "m.onnx"
    onnx.save(_graph_model(nodes, inits, [40], [76]), str(path))
    message = (r"node u \(Unsqueeze\): axes \[1\] of a rank-2 tensor.* \(an \(N, F\) input is "
               r"taken in an \(N, C, L\) / \(N, C, H, W\) layout where every reader of it is an "
               r"Unsqueeze / Reshape to that shape\); here one sample's shape \(40,\) becomes "
               r"\(1, 40\)" if case == "gemm-beside" else
               r"node conv \(Conv\): a convolution in a graph with an \(N, F\) input")
    with pytest.raises(UnsupportedModelError, match=message):
        load_onnx(path)
