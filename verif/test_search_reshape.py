"""Reshapes and repeated ReLUs in the intake: ``x.squeeze(-1)`` / ``x.squeeze()`` /
``torch.squeeze`` / ``x[:, :, 0]`` after a global pooling (a flatten), a view of a 1-D model's
input that keeps its shape (``x.view(-1, 1, x.shape[-1])``, as the models of the MNIST-1D
repository begin), ``unsqueeze`` / ``squeeze`` around a 2-D pooling of a 1-D tensor, a ReLU
after a layer that already has one (``F.relu(F.max_pool2d(F.relu(conv(x)), 2))``), and the
ONNX nodes both torch exporters write for them.

References: each model is compared with a twin written in the layers the intake took before
(``flatten(1)``, no reshape, ``MaxPool1d``, one ReLU with the smaller bound): the same traced
layers and weights, and :func:`check_trace` against the model's own forward.
"""

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from test_search_maxpool import _inputs, _summary, _x, onnx_matches_torch  # noqa: E402

from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, trace_model)

#: The end of a 1-D model after its global pooling (``(N, C, 1)``), in the forms torch code
#: writes it: each leaves ``(N, C)``.
SQUEEZE_1D = {
    "x.squeeze(-1)": lambda net, x: net.gap(x).squeeze(-1),
    "x.squeeze(2)": lambda net, x: net.gap(x).squeeze(2),
    "x.squeeze(dim=2)": lambda net, x: net.gmp(x).squeeze(dim=2),
    "x.squeeze()": lambda net, x: net.gap(x).squeeze(),
    "torch.squeeze(x, -1)": lambda net, x: torch.squeeze(net.gmp(x), -1),
    "x.view(x.size(0), x.size(1))": lambda net, x: net.gap(x).view(x.size(0), x.size(1)),
    "x.reshape(-1, x.shape[1])": lambda net, x: net.gap(x).reshape(-1, x.shape[1]),
    "x[:, :, 0]": lambda net, x: net.gap(x)[:, :, 0],
    "x[..., -1]": lambda net, x: net.gmp(x)[..., -1],
}

#: The same after a 2-D global pooling (``(N, C, 1, 1)``).
SQUEEZE_2D = {
    "x.squeeze(-1).squeeze(-1)": lambda net, x: net.gap(x).squeeze(-1).squeeze(-1),
    "x.squeeze((2, 3))": lambda net, x: net.gap(x).squeeze((2, 3)),
    "x.squeeze()": lambda net, x: net.gap(x).squeeze(),
    "torch.squeeze(x)": lambda net, x: torch.squeeze(net.gmp(x)),
    "x.squeeze(3).squeeze(2)": lambda net, x: net.gmp(x).squeeze(3).squeeze(2),
    "x[:, :, 0, 0]": lambda net, x: net.gap(x)[:, :, 0, 0],
}


class Squeeze(nn.Module):
    """conv-ReLU, a global average (``gap``) or max (``gmp``) pooling, the squeeze ``how``
    (from :data:`SQUEEZE_1D` or :data:`SQUEEZE_2D`), fc."""

    def __init__(self, how, one_d):
        super().__init__()
        torch.manual_seed(2)
        conv, pools = (nn.Conv1d, (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)) if one_d else \
            (nn.Conv2d, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
        self.c, self.fc = conv(1, 6, 3, padding=1), nn.Linear(6, 4)
        self.gap, self.gmp = pools[0](1), pools[1](1)
        self.how = (SQUEEZE_1D if one_d else SQUEEZE_2D)[how]
        self.pool = self.gap if "gap" in self.how.__code__.co_names else self.gmp

    def forward(self, x):
        """The network."""
        return self.fc(self.how(self, F.relu(self.c(x))))


@pytest.mark.parametrize("one_d, how", [(True, h) for h in SQUEEZE_1D] +
                         [(False, h) for h in SQUEEZE_2D])
def test_a_squeeze_after_a_global_pooling_is_a_flatten(one_d, how):
    net = Squeeze(how, one_d).eval()
    x = _x((1, 1, 40) if one_d else (1, 8, 8))
    twin = nn.Sequential(net.c, nn.ReLU(), net.pool, nn.Flatten(), net.fc).eval()
    layers = trace_model(net, x[:1])
    assert [l.kind for l in layers] == ["conv", "conv" if net.pool is net.gap else "maxpool",
                                        "flatten", "linear"]
    assert _summary(layers) == _summary(trace_model(twin, x[:1]))
    check_trace(net, layers, x)


class InputView(nn.Module):
    """A 1-D CNN in the style of the MNIST-1D repository's: its forward begins with a reshape
    of its input (``how``) that keeps an ``(N, 1, 40)`` batch as it is, uses ``.relu()`` and
    flattens with ``h.view(h.shape[0], -1)``."""

    def __init__(self, how):
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv1d(1, 8, 5, stride=2, padding=1)
        self.c2 = nn.Conv1d(8, 8, 3, stride=2, padding=1)
        self.fc, self.how = nn.Linear(8 * 10, 10), how

    def forward(self, x, verbose=False):
        """The network (``verbose`` as in the repository's models: unused)."""
        if self.how == "view(-1, 1, x.shape[-1])":
            x = x.view(-1, 1, x.shape[-1])
        elif self.how == "reshape(x.size(0), 1, -1)":
            x = x.reshape(x.size(0), 1, -1)
        elif self.how == "view(-1, 1, 40)":
            x = x.view(-1, 1, 40)
        h = self.c2(self.c1(x).relu()).relu()
        return self.fc(h.view(h.shape[0], -1))


@pytest.mark.parametrize("how", ["view(-1, 1, x.shape[-1])", "reshape(x.size(0), 1, -1)",
                                 "view(-1, 1, 40)"])
def test_a_reshape_that_keeps_the_input_shape_is_the_identity(how):
    net, x = InputView(how).eval(), _x((1, 1, 40))
    layers = trace_model(net, x[:1])
    assert [l.kind for l in layers] == ["conv", "conv", "flatten", "linear"]
    twin = nn.Sequential(net.c1, nn.ReLU(), net.c2, nn.ReLU(), nn.Flatten(), net.fc).eval()
    assert _summary(layers) == _summary(trace_model(twin, x[:1]))
    check_trace(net, layers, x)


class Pool2dOf1d(nn.Module):
    """conv1d-ReLU, a 2-D max pooling of the ``(N, C, 1, L)`` view of its output, back to
    ``(N, C, L)``, conv1d, flatten, fc."""

    def __init__(self, how):
        super().__init__()
        torch.manual_seed(4)
        self.c1, self.c2 = nn.Conv1d(1, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1)
        self.fc, self.how = nn.Linear(4 * 20, 3), how

    def forward(self, x):
        """The network."""
        h = F.relu(self.c1(x))
        if self.how == "unsqueeze(2) / squeeze(2)":
            h = F.max_pool2d(h.unsqueeze(2), (1, 2)).squeeze(2)
        else:
            h = torch.squeeze(F.max_pool2d(torch.unsqueeze(h, -2), (1, 2)), -2)
        return self.fc(self.c2(h).flatten(1))


@pytest.mark.parametrize("how", ["unsqueeze(2) / squeeze(2)", "torch.unsqueeze(x, -2)"])
def test_unsqueeze_around_a_2d_pooling_of_a_1d_tensor(how):
    net, x = Pool2dOf1d(how).eval(), _x((1, 1, 40))
    layers = trace_model(net, x[:1])
    twin = nn.Sequential(net.c1, nn.ReLU(), nn.MaxPool1d(2), net.c2, nn.Flatten(),
                         net.fc).eval()
    assert _summary(layers) == _summary(trace_model(twin, x[:1]))
    assert layers[1].kernel == (1, 2)
    check_trace(net, layers, x)


#: A ReLU (or a bounded one) after a layer that already has one, and the one ReLU it is.
TWICE = {
    "relu(max_pool(relu(conv)))": (lambda x: F.relu(F.max_pool2d(F.relu(x), 2)), None),
    "relu(relu(conv))": (lambda x: F.max_pool2d(torch.relu(F.relu(x)), 2), None),
    "relu6(relu(conv))": (lambda x: F.max_pool2d(F.relu6(F.relu(x)), 2), 6.0),
    "relu(relu6(conv))": (lambda x: F.relu(F.max_pool2d(F.relu6(x), 2)), 6.0),
    "clamp(relu6(conv), 0, 4)": (lambda x: F.max_pool2d(F.relu6(x), 2).clamp(0, 4), 4.0),
    "relu6(clamp(conv, 0, 4))": (lambda x: F.relu6(F.max_pool2d(x.clamp(0, 4), 2)), 4.0),
}


class Twice(nn.Module):
    """conv, the activations and max pooling ``how``, flatten, fc."""

    def __init__(self, how):
        super().__init__()
        torch.manual_seed(5)
        self.c, self.fc, self.how = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(64, 3), how

    def forward(self, x):
        """The network."""
        return self.fc(torch.flatten(TWICE[self.how][0](self.c(x)), 1))


@pytest.mark.parametrize("how", list(TWICE))
def test_a_relu_after_a_relu_is_one_relu_with_the_smaller_bound(how):
    net, x = Twice(how).eval(), _x((1, 8, 8)) * 8      # values beyond the bounds
    layers = trace_model(net, x[:1])
    bound = TWICE[how][1]
    act = nn.ReLU() if bound is None else nn.Hardtanh(0, bound)
    twin = nn.Sequential(net.c, act, nn.MaxPool2d(2), nn.Flatten(), net.fc).eval()
    assert _summary(layers) == _summary(trace_model(twin, x[:1]))
    assert layers[0].relu and layers[0].relu_max == bound
    check_trace(net, layers, x)


@pytest.mark.parametrize("mods, bound", [
    ((nn.ReLU(), nn.ReLU()), None),
    ((nn.ReLU6(), nn.MaxPool2d(2), nn.ReLU()), 6.0),
    ((nn.ReLU(), nn.MaxPool2d(2), nn.Hardtanh(0, 3)), 3.0),
], ids=["ReLU-ReLU", "ReLU6-pool-ReLU", "ReLU-pool-Hardtanh(0,3)"])
def test_a_repeated_relu_module_in_a_sequential(mods, bound):
    torch.manual_seed(6)
    pooled = any(isinstance(m, nn.MaxPool2d) for m in mods)
    conv, fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(64 if pooled else 256, 3)
    net = nn.Sequential(conv, *mods, nn.Flatten(), fc).eval()
    x = _x((1, 8, 8)) * 8
    layers = trace_model(net, x[:1])
    assert layers[0].relu and layers[0].relu_max == bound
    assert [l.kind for l in layers] == ["conv"] + ["maxpool"] * pooled + ["flatten", "linear"]
    check_trace(net, layers, x)


class Moves(nn.Module):
    """conv-ReLU, then the reshape ``how``, which the kernels cannot run, fc."""

    def __init__(self, how, features):
        super().__init__()
        self.c, self.fc, self.how = nn.Conv1d(1, 4, 3, padding=1), nn.Linear(features, 3), how

    def forward(self, x):
        """The network."""
        h = F.relu(self.c(x))
        if self.how == "unsqueeze(1)":
            return self.fc(h.unsqueeze(1).flatten(1))
        if self.how == "view-split":
            return self.fc(h.view(h.size(0), 4, 20, 2).flatten(1))
        if self.how == "index-channels":
            return self.fc(h[:, :2].flatten(1))
        return self.fc(h.squeeze(0).flatten(1))


@pytest.mark.parametrize("how, features, message", [
    ("unsqueeze(1)", 160, "unsqueeze: an unsqueeze that moves the channels; supported: "
                          "adding or removing axes of size 1 behind the channels (x.squeeze(-1) "
                          "after a global pooling is a flatten); here one sample's shape "
                          "(4, 40) becomes (1, 4, 40)"),
    ("view-split", 160, "view: a view to ('N', 4, 20, 2); supported: a flatten to (N, -1), "
                        "(N, K) or (-1, K) (x.view(x.size(0), -1), torch.flatten(x, 1)), or a "
                        "reshape that only adds or removes axes of size 1 behind the channels; "
                        "here one sample's shape (4, 40) becomes (4, 20, 2)"),
    ("squeeze(0)", 160, "squeeze: a squeeze of the batch axis (dim 0)"),
    ("index-channels", 80, "getitem: an index [:, :2] that selects part of a tensor; "
                           "supported: only indices that drop or add axes of size 1 behind the "
                           "channels (x[:, :, 0] of an (N, C, 1) tensor)"),
], ids=["unsqueeze-channels", "view-split", "squeeze-batch", "index-channels"])
def test_reshapes_the_kernels_cannot_run_are_refused(how, features, message):
    net, (x, t) = Moves(how, features).eval(), _inputs((1, 40))
    with torch.no_grad():
        net(t)                                    # the model runs; the intake refuses it
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        trace_model(net, x[:1])


def test_a_reshape_without_an_example_input_says_what_it_needs():
    net = InputView("view(-1, 1, x.shape[-1])").eval()
    with pytest.raises(UnsupportedModelError, match=re.escape(
            "or a reshape that only adds or removes axes of size 1 behind the channels (which "
            "needs the shapes of an example input: trace_model(model, example=x))")):
        trace_model(net)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("model, shape", [
    (Squeeze("x.squeeze(-1)", True), (1, 40)),
    (Squeeze("x.squeeze(-1).squeeze(-1)", False), (1, 8, 8)),
    (Squeeze("torch.squeeze(x)", False), (1, 8, 8)),
    (InputView("view(-1, 1, x.shape[-1])"), (1, 40)),
    (Squeeze("x.view(x.size(0), x.size(1))", True), (1, 40)),
    (Squeeze("x[:, :, 0]", True), (1, 40)),
    (Squeeze("x[:, :, 0, 0]", False), (1, 8, 8)),
    (Twice("relu(max_pool(relu(conv)))"), (1, 8, 8)),
], ids=["squeeze-1d", "squeeze-2d", "squeeze-all", "input-view", "view-sizes", "index-1d",
        "index-2d", "relu-twice"])
def test_reshapes_from_onnx(tmp_path, dynamo, model, shape):
    """Both torch exporters (``Squeeze`` with and without axes, a ``Reshape`` of the input
    to its own shape or to ``Shape`` values, ``Gather`` of a size-1 axis) come back as the
    layers of the torch model, computing its function. (A 2-D pooling of an unsqueezed 1-D
    tensor is not taken from ONNX: the 1-D graph's ``MaxPool`` must be 1-D, and the error says
    so.)"""
    onnx_matches_torch(model, shape, tmp_path, dynamo)


def test_onnx_reshapes_that_move_values_are_refused():
    """A ``Reshape`` of a computed tensor that splits an axis, a ``Squeeze`` of an axis
    longer than 1 and a ``Gather`` of one channel are refused by name, with the shapes."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    from test_search_onnx import _graph_model, _init

    from rvmpq.sw.search.onnx_intake import onnx_to_torch

    def graph(node, const):
        c = numpy_helper.from_array(np.array(const, dtype=np.int64), "c")
        nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), node,
                 helper.make_node("Flatten", ["u"], ["f"], name="flat"),
                 helper.make_node("Gemm", ["f", "w"], ["y"], name="fc", transB=1)]
        return _graph_model(nodes, [_init("w", np.zeros((3, 80)))], (2, 40), [3], ints=[c])

    cases = [
        (helper.make_node("Reshape", ["r", "c"], ["u"], name="split"), [-1, 2, 20, 2],
         "node split (Reshape): a reshape to [-1, 2, 20, 2]; supported: a flatten to (N, -1) "
         "or (-1, K), or a reshape that only adds or removes axes of size 1 behind the "
         "channels"),
        (helper.make_node("Squeeze", ["r", "c"], ["u"], name="sq"), [2],
         "node sq (Squeeze): axes [2] of a tensor of shape (N, 2, 40); supported: axes of size "
         "1 behind the channels"),
        (helper.make_node("Gather", ["r", "c"], ["u"], name="ga", axis=1), 0,
         "node ga (Gather): indices 0 along axis 1 of a tensor of shape (N, 2, 40); supported: "
         "the one element of an axis of size 1 behind the channels"),
    ]
    for node, const, message in cases:
        m = graph(node, const)
        onnx.checker.check_model(m)
        with pytest.raises(UnsupportedModelError, match=re.escape(message)):
            onnx_to_torch(m)
