"""Model intake of 1-D models (``Conv1d``, ``BatchNorm1d``, ``MaxPool1d``, ``AvgPool1d``,
``AdaptiveAvgPool1d``, their functional forms, ``x.mean(2)``) and of ``padding="same"``.

A 1-D model takes ``(N, C, L)`` batches; the data sets store a 1-D signal as ``(N, C, 1, L)``
(MNIST-1D). The reference is the same network written with 2-D layers of ``(1, k)`` kernels on
``(N, C, 1, L)`` inputs, the way the built-in MNIST-1D models are written, and the 1-D model's
own output.
"""

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, float_forward, torch_accuracy, trace_model)


def _net_1d():
    """conv5-BN-ReLU, maxpool 2, conv3 ('same')-ReLU, avgpool 2, conv3-ReLU, global average
    pool, flatten, fc, with random BatchNorm statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(16, 16, 3, padding="same"), nn.ReLU(), nn.AvgPool1d(2),
        nn.Conv1d(16, 32, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
        nn.Flatten(), nn.Linear(32, 10))
    bn = net[1]
    bn.running_mean.uniform_(-0.3, 0.3)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    return net.eval()


def _twin_2d(net):
    """The same network with 2-D layers of (1, k) kernels (the built-in models' form)."""
    def conv(c, pad):
        m = nn.Conv2d(c.in_channels, c.out_channels, (1, c.kernel_size[0]), padding=(0, pad),
                      bias=c.bias is not None)
        m.weight.data = c.weight.data[:, :, None, :].clone()
        if c.bias is not None:
            m.bias.data = c.bias.data.clone()
        return m

    bn = nn.BatchNorm2d(16)
    bn.load_state_dict(net[1].state_dict())
    return nn.Sequential(conv(net[0], 2), bn, nn.ReLU(), nn.MaxPool2d((1, 2)), conv(net[4], 1),
                         nn.ReLU(), nn.AvgPool2d((1, 2)), conv(net[7], 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), net[11]).eval()


class _Functional(nn.Module):
    """The 1-D network's forward written with functional calls."""

    def __init__(self, net):
        super().__init__()
        self.c1, self.bn, self.c2, self.c3, self.fc = net[0], net[1], net[4], net[7], net[11]

    def forward(self, x):
        """The network."""
        x = F.max_pool1d(F.relu(self.bn(self.c1(x))), 2)
        x = F.avg_pool1d(F.relu(self.c2(x)), kernel_size=2)
        return self.fc(F.relu(self.c3(x)).mean(-1))


def _x(n=8, length=40, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 1, 1, length)).astype(np.float32)


@pytest.mark.parametrize("form", ["sequential", "functional"])
def test_1d_model_traces_like_its_2d_twin(form):
    net = _net_1d()
    model = net if form == "sequential" else _Functional(net).eval()
    twin = _twin_2d(net)
    x = _x()
    layers, ref = trace_model(model, x[:1]), trace_model(twin, x[:1])
    assert [l.kind for l in layers] == ["conv", "maxpool", "conv", "conv", "conv", "conv",
                                        "flatten", "linear"]
    for a, b in zip(layers, ref):
        assert (a.kind, a.relu, a.kernel, a.stride, a.padding, a.groups) == (
            b.kind, b.relu, b.kernel, b.stride, b.padding, b.groups)
        if a.is_compute:
            assert np.allclose(a.weight, b.weight, rtol=1e-12) and np.allclose(a.bias, b.bias)
    with torch.no_grad():                # the 1-D model on (N, C, L), the twin on (N, C, 1, L)
        want = model(torch.from_numpy(x[:, :, 0])).double().numpy()
        assert np.allclose(twin(torch.from_numpy(x)).double().numpy(), want, atol=1e-5)
    assert np.allclose(float_forward(layers, x), want, atol=1e-5)
    check_trace(model, layers, x)
    y = np.arange(len(x)) % 10
    assert torch_accuracy(model, x, y) == torch_accuracy(twin, x, y)


def test_1d_model_needs_samples_of_height_1():
    with pytest.raises(UnsupportedModelError, match=re.escape(
            "a 1-D model (Conv1d) takes (N, C, L) batches, stored as samples of shape "
            "(C, 1, L); the data set's are (C, H, W) = (1, 8, 8)")):
        trace_model(_net_1d(), np.zeros((1, 1, 8, 8), np.float32))


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv1d(1, 4, 3, padding_mode="circular"), "0: Conv1d padding_mode='circular'"),
    (lambda: nn.MaxPool1d(3, 2), "0: MaxPool1d needs kernel == stride"),
    (lambda: nn.Sequential(nn.Conv1d(1, 4, 3), nn.AvgPool1d(2, padding=1)),
     "0.1: AvgPool1d needs no padding"),
])
def test_1d_and_padding_forms_the_kernels_cannot_run_are_refused(make, message):
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        trace_model(nn.Sequential(make(), nn.Flatten(), nn.LazyLinear(3)),
                    np.zeros((1, 1, 1, 8), np.float32))


def test_padding_same_and_valid_are_numbers():
    torch.manual_seed(1)
    same = nn.Sequential(nn.Conv2d(1, 4, (3, 5), padding="same"), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding="valid"), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3)).eval()
    layers = trace_model(same)
    assert [l.padding for l in layers if l.kind == "conv"] == [(1, 2), (0, 0)]
    x = np.random.default_rng(2).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    check_trace(same, layers, x)


@pytest.mark.parametrize("glob, message", [
    (lambda x: x.mean(1), "a mean over dims [1]; supported: over the spatial dims"),
    (lambda x: F.adaptive_avg_pool1d(x, 3).flatten(1),
     "adaptive_avg_pool1d to output size 3 of an input of length 8; supported: output sizes "
     "that divide the input's"),
])
def test_1d_functional_pooling_the_kernels_cannot_run_is_refused(glob, message):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.LazyLinear(3)

        def forward(self, x):
            return self.fc(glob(F.relu(self.conv(x))))

    x = np.zeros((1, 1, 1, 10), np.float32)
    net = Net().eval()
    with torch.no_grad():
        net(torch.from_numpy(x[:, :, 0]))     # the model runs (and sizes its LazyLinear)
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        trace_model(net, x)


def test_search_takes_a_saved_1d_model_on_mnist1d(tmp_path, capsys):
    """``rvmpq search --model PATH.pt --data mnist1d`` on a Conv1d model: the plumbing end to
    end, on the data set's (N, 1, 1, 40) samples."""
    from test_search_functional import quick_search

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 16, 5, padding="same"), nn.BatchNorm1d(16), nn.ReLU(),
                        nn.MaxPool1d(4), nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    cfg, _ = quick_search(tmp_path, capsys, net, "mnist1d")
    assert [l["name"] for l in cfg["layers"]] == ["0", "4", "6", "8"]


class _Onnx1d(nn.Module):
    """A 1-D network for ONNX export: its flatten computed from the tensor's own shape
    (``view``: ``x.size(0)`` only; ``reshape``: the product of the channel and length sizes,
    which a 1-D graph's ``Shape`` must give as ONNX sees them, ``(N, C, L)``)."""

    def __init__(self, flatten):
        super().__init__()
        torch.manual_seed(0)
        self.flatten = flatten
        self.c1, self.bn = nn.Conv1d(1, 8, 5, padding=2), nn.BatchNorm1d(8)
        self.c2 = nn.Conv1d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 10, 10)
        self.bn.running_mean.uniform_(-0.3, 0.3)
        self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        """The network."""
        x = F.max_pool1d(F.relu(self.bn(self.c1(x))), 2)
        x = F.avg_pool1d(F.relu(self.c2(x)), 2)
        x = x.view(x.size(0), -1) if self.flatten == "view" else x.reshape(
            x.shape[0], x.shape[1] * x.shape[2])
        return self.fc(x)


@pytest.mark.parametrize("flatten", ["view", "reshape_product"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_1d_graph(tmp_path, dynamo, flatten):
    """An ONNX graph with an (N, C, L) input (1-D Conv, BatchNormalization, MaxPool,
    AveragePool) becomes a module on (N, C, 1, L) whose layers are those of the torch model it
    came from (the ``view`` form, which the torch intake takes), checked by :func:`load_onnx`
    against ONNX's reference evaluator on the graph's own (N, C, L) input."""
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from test_search_onnx import _export

    from rvmpq.sw.search.onnx_intake import load_onnx

    model = _Onnx1d(flatten).eval()
    path = tmp_path / "net1d.onnx"
    _export(model, (1, 40), path, dynamo)
    net = load_onnx(path)
    assert net.one_d and net.input_shape == (1, 1, 40)
    x = _x(6)
    layers, ref = trace_model(net, x[:1]), trace_model(_Onnx1d("view").eval(), x[:1])
    assert [(l.kind, l.kernel, l.stride, l.padding) for l in layers] == [
        (l.kind, l.kernel, l.stride, l.padding) for l in ref]
    with torch.no_grad():
        want = model(torch.from_numpy(x[:, :, 0])).double().numpy()
    assert np.allclose(float_forward(layers, x), want, atol=1e-4)
    check_trace(net, layers, x)
