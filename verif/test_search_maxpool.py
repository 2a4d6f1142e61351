"""Max pooling in the intake beyond ``MaxPool2d``: global and adaptive max pooling in every
form torch writes it (modules, functions, ``x.amax`` / ``x.max(dim)``, a window given by the
tensor's own size), adaptive pooling to an output size that divides the input, a ReLU after
max pooling or a flatten (the older PyTorch examples' ``F.relu(F.max_pool2d(conv(x), 2))``),
every dropout module, and the ONNX nodes both torch exporters write for them.

References: each model is compared with a twin written in the layers the intake took before
(``MaxPool1d`` / ``MaxPool2d`` of the window, the ReLU before the pooling): the same traced
layers and weights, and :func:`check_trace` against the model's own forward. On the RTL the
deployed programs are compared bit for bit with ``int_forward``. Random parts are seeded by the
``seed`` fixture, which prints its replay command.
"""

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, float_forward, trace_model)


def _x(shape, n=8, seed=0):
    """``n`` samples of one-sample ``shape`` (``(1, 1, 40)``: MNIST-1D's layout), in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(np.float32)


def _inputs(shape, n=2):
    """``(x, t)``: ``n`` data set samples for a model taking one-sample ``shape`` (``(C, L)``: a
    1-D model, stored as ``(C, 1, L)``) and the torch batch the model takes."""
    if len(shape) == 2:
        x = _x((shape[0], 1, shape[1]), n)
        return x, torch.from_numpy(x[:, :, 0])
    x = _x(shape, n)
    return x, torch.from_numpy(x)


def _summary(layers):
    """What must agree between a model and its twin: kinds, fused ReLUs, geometry, weights."""
    return [(l.kind, l.relu, tuple(l.kernel), tuple(l.stride), l.groups,
             None if l.weight is None else l.weight.round(12).tobytes(),
             None if l.bias is None else l.bias.round(12).tobytes()) for l in layers]


#: A global max pooling of an (N, C, L) tensor in the forms torch code writes it, each
#: followed by what drops the pooled axis.
GLOBAL_1D = {
    "nn.AdaptiveMaxPool1d(1)": lambda net, x: net.gmp(x).flatten(1),
    "F.adaptive_max_pool1d": lambda net, x: F.adaptive_max_pool1d(x, 1).flatten(1),
    "x.amax(2)": lambda net, x: x.amax(2),
    "torch.amax keepdim": lambda net, x: torch.amax(x, dim=-1, keepdim=True).flatten(1),
    "x.max(2)[0]": lambda net, x: x.max(2)[0],
    "x.max(dim=-1).values": lambda net, x: x.max(dim=-1).values,
    "torch.max keepdim": lambda net, x: torch.max(x, 2, keepdim=True)[0].view(x.size(0), -1),
    "F.max_pool1d(x, x.size(2))": lambda net, x: F.max_pool1d(x, x.size(2)).view(x.size(0),
                                                                                  -1),
    "kernel_size=x.shape[-1]": lambda net, x: F.max_pool1d(x, kernel_size=x.shape[-1]
                                                           ).flatten(1),
}


class Net1d(nn.Module):
    """conv-ReLU, conv, a global max pooling written as ``how``, ReLU, fc: a text CNN's
    max-over-time ending, with the ReLU after the pooling."""

    def __init__(self, how):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv1d(1, 8, 5, padding=2), nn.Conv1d(8, 12, 3, padding=1)
        self.gmp, self.fc, self.how = nn.AdaptiveMaxPool1d(1), nn.Linear(12, 5), how

    def forward(self, x):
        """The network."""
        x = self.c2(F.relu(self.c1(x)))
        return self.fc(F.relu(GLOBAL_1D[self.how](self, x)))


def _twin_1d(net):
    """``net`` in the layers the intake took before: the ReLU, then ``MaxPool1d(40)``."""
    return nn.Sequential(net.c1, nn.ReLU(), net.c2, nn.ReLU(), nn.MaxPool1d(40), nn.Flatten(),
                         net.fc).eval()


@pytest.mark.parametrize("how", list(GLOBAL_1D))
def test_global_max_pooling_1d_traces_as_a_max_pooling_of_the_whole_length(how):
    net, x = Net1d(how).eval(), _x((1, 1, 40))
    layers = trace_model(net, x[:1])
    assert [l.kind for l in layers] == ["conv", "conv", "maxpool", "flatten", "linear"]
    assert layers[2].kernel == (1, 40) and layers[1].relu
    assert _summary(layers) == _summary(trace_model(_twin_1d(net), x[:1]))
    check_trace(net, layers, x)


GLOBAL_2D = {
    "nn.AdaptiveMaxPool2d(1)": lambda net, x: net.gmp(x),
    "F.adaptive_max_pool2d(x, (1, 1))": lambda net, x: F.adaptive_max_pool2d(x, (1, 1)),
    "x.amax((2, 3), keepdim=True)": lambda net, x: x.amax((2, 3), keepdim=True),
    "F.max_pool2d(x, x.size()[2:])": lambda net, x: F.max_pool2d(x, x.size()[2:]),
}


class Net2d(nn.Module):
    """conv-ReLU, a global max pooling written as ``how``, flatten, fc."""

    def __init__(self, how):
        super().__init__()
        torch.manual_seed(1)
        self.c, self.gmp, self.fc, self.how = (nn.Conv2d(1, 6, 3, padding=1),
                                               nn.AdaptiveMaxPool2d(1), nn.Linear(6, 4), how)

    def forward(self, x):
        """The network."""
        return self.fc(torch.flatten(GLOBAL_2D[self.how](self, F.relu(self.c(x))), 1))


@pytest.mark.parametrize("how", list(GLOBAL_2D))
def test_global_max_pooling_2d_traces_as_a_max_pooling_of_the_whole_map(how):
    net, x = Net2d(how).eval(), _x((1, 8, 8))
    twin = nn.Sequential(net.c, nn.ReLU(), nn.MaxPool2d(8), nn.Flatten(), net.fc).eval()
    layers = trace_model(net, x[:1])
    assert _summary(layers) == _summary(trace_model(twin, x[:1]))
    check_trace(net, layers, x)


@pytest.mark.parametrize("pool, twin", [
    (nn.AdaptiveMaxPool2d(2), nn.MaxPool2d(4)),
    (nn.AdaptiveMaxPool2d((None, 2)), nn.MaxPool2d((1, 4))),
    (nn.AdaptiveMaxPool2d((4, None)), nn.MaxPool2d((2, 1))),
    (nn.AdaptiveAvgPool2d(2), nn.AvgPool2d(4)),
    (nn.AdaptiveAvgPool2d((2, 8)), nn.AvgPool2d((4, 1))),
], ids=["max2", "max-none-2", "max-4-none", "avg2", "avg-2-8"])
def test_adaptive_pooling_to_a_dividing_size_is_its_pooling(pool, twin):
    """torch's adaptive windows are equal and do not overlap when the output size divides
    the input's: they are those of the pooling with kernel == stride = input / output."""
    torch.manual_seed(2)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    x = _x((1, 8, 8))
    model = nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten(), nn.LazyLinear(4))
    model(torch.from_numpy(x[:1]))                      # size the lazy layer
    model = model.eval()
    ref = nn.Sequential(conv, nn.ReLU(), twin, nn.Flatten(), model[4]).eval()
    layers = trace_model(model, x[:1])
    assert _summary(layers) == _summary(trace_model(ref, x[:1]))
    check_trace(model, layers, x)


class LeNet(nn.Module):
    """The older PyTorch MNIST example's network, sized for 8x8 digits: the ReLU after each
    max pooling, ``nn.Dropout2d``, ``x.view(-1, K)``, ``F.dropout``, ``F.log_softmax``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.conv2 = nn.Conv2d(1, 10, 3, padding=1), nn.Conv2d(10, 20, 3, padding=1)
        self.conv2_drop = nn.Dropout2d()
        self.fc1, self.fc2 = nn.Linear(80, 50), nn.Linear(50, 10)

    def forward(self, x):
        """The network."""
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 80)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def _lenet_twin(net):
    """``LeNet`` with each ReLU before its max pooling, and no dropout."""
    return nn.Sequential(net.conv1, nn.ReLU(), nn.MaxPool2d(2), net.conv2, nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), net.fc1, nn.ReLU(), net.fc2).eval()


@pytest.mark.parametrize("form", ["graph", "sequential", "flatten"])
def test_relu_after_max_pooling_is_fused_into_the_layer_before(form):
    """max(relu(x)) == relu(max(x)) and a flatten moves nothing, so a ReLU after max pooling
    or a flatten is the requantization clamp of the conv before, as if written before them."""
    net, x = LeNet().eval(), _x((1, 8, 8))
    twin = _lenet_twin(net)
    if form == "sequential":
        model = nn.Sequential(net.conv1, nn.MaxPool2d(2), nn.ReLU(), net.conv2, nn.Dropout2d(),
                              nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), net.fc1, nn.ReLU(),
                              nn.AlphaDropout(), net.fc2).eval()
    elif form == "flatten":
        class Flat(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x):
                """conv1, pool, ReLU, conv2, pool, flatten, then the ReLU; F.dropout1d."""
                x = F.relu(F.max_pool2d(self.net.conv1(x), 2))
                x = F.relu(torch.flatten(F.max_pool2d(self.net.conv2(x), 2), 1))
                return self.net.fc2(F.alpha_dropout(F.relu(self.net.fc1(x)), 0.5, False))
        model = Flat().eval()
    else:
        model = net
    layers = trace_model(model, x[:1])
    assert _summary(layers) == _summary(trace_model(twin, x[:1]))
    assert [l.relu for l in layers if l.is_compute] == [True, True, True, False]
    check_trace(model, layers, x)


class Shared(nn.Module):
    """A ReLU after a max pooling whose input another pooling reads too: the ReLU cannot move
    into the conv (the other reader needs the values without it)."""

    def __init__(self):
        super().__init__()
        self.c, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(64, 3)

    def forward(self, x):
        """conv, two poolings of its output (one then ReLU), add, flatten, fc."""
        h = self.c(x)
        return self.fc(torch.flatten(F.relu(F.max_pool2d(h, 2)) + F.max_pool2d(h, 2), 1))


class Indices(nn.Module):
    """A global max pooling whose indices are used."""

    def __init__(self, how):
        super().__init__()
        self.c, self.fc, self.how = nn.Conv1d(1, 4, 3, padding=1), nn.Linear(4, 3), how
        self.gmp = nn.AdaptiveMaxPool1d(1, return_indices=True)

    def forward(self, x):
        """conv, a pooling with indices, fc."""
        h = self.c(x)
        if self.how == "module":
            return self.fc(self.gmp(h)[0].flatten(1))
        if self.how == "channels":
            return self.fc(F.relu(h).max(2)[1].float() + h.max(1)[0][:, :4])
        return self.fc(h.max(2)[1].float())


@pytest.mark.parametrize("model, shape, message", [
    (Shared(), (1, 8, 8), "ReLU must follow a conv/linear/add, directly or through max "
                          "pooling / flatten, whose output nothing else reads"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.BatchNorm2d(2), nn.Flatten(),
                   nn.Linear(18, 3)), (1, 8, 8),
     "BatchNorm must directly follow a Conv2d/Linear"),
    (nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.AdaptiveMaxPool1d(3), nn.Flatten(),
                   nn.Linear(6, 3)), (1, 40),
     "AdaptiveMaxPool1d to output size 3 of an input of length 40; supported: output sizes "
     "that divide the input's"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveMaxPool2d((4, 3)), nn.Flatten(),
                   nn.Linear(24, 3)), (1, 8, 8),
     "AdaptiveMaxPool2d to output size 4x3 of an input of 6x6"),
    (Indices("module"), (1, 40), "AdaptiveMaxPool1d with return_indices is not supported"),
    (Indices("values"), (1, 40), "the indices of a max are not supported"),
], ids=["relu-shared", "bn-after-pool", "adaptive-1d", "adaptive-2d", "return-indices",
        "max-indices"])
def test_max_pooling_the_kernels_cannot_run_is_refused(model, shape, message):
    x, t = _inputs(shape)
    with torch.no_grad():
        model.eval()(t)                           # the model runs; the intake refuses it
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        trace_model(model, x[:1])


class Reduce(nn.Module):
    """conv, then a reduction or reshape written as ``how``, fc."""

    def __init__(self, how, features):
        super().__init__()
        self.c, self.fc, self.how = nn.Conv1d(1, 4, 3, padding=1), nn.Linear(features, 3), how

    def forward(self, x):
        """The network."""
        h = F.relu(self.c(x))
        if self.how == "channels":
            return self.fc(h.amax(1))                  # over the channels: no pooling
        if self.how == "batch-slice":
            return self.fc(h.reshape(h.size()[:2] + (-1,)).flatten(1))
        return self.fc(F.max_pool1d(h, h.size(1) * 10).flatten(1))


@pytest.mark.parametrize("how, features, message", [
    ("channels", 40, "amax: a max over dims [1]; supported: over the spatial dims, "
                     "x.amax((2, 3))"),
    ("batch-slice", 160, "a slice of a tensor's size that includes the batch size"),
    ("size-arith", 4, "mul (call_function mul) reads a tensor's size; only a flatten "
                      "(x.view(x.size(0), -1)) or a pooling window"),
])
def test_reductions_and_sizes_the_kernels_cannot_run_are_refused(how, features, message):
    net, (x, t) = Reduce(how, features).eval(), _inputs((1, 40))
    with torch.no_grad():
        net(t)                                    # the model runs; the intake refuses it
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        trace_model(net, x[:1])


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("model, shape", [
    (Net1d("nn.AdaptiveMaxPool1d(1)"), (1, 40)),
    (Net1d("x.max(2)[0]"), (1, 40)),
    (Net2d("x.amax((2, 3), keepdim=True)"), (1, 8, 8)),
    (LeNet(), (1, 8, 8)),
], ids=["AdaptiveMaxPool1d", "max-values", "amax-2d", "lenet"])
def test_max_pooling_from_onnx(tmp_path, dynamo, model, shape):
    """Both torch exporters (``GlobalMaxPool``, ``ReduceMax``, the dynamo exporter's
    ``Unsqueeze`` / ``ReduceMax`` / ``Squeeze`` of a 1-D pooling, ``Relu`` after ``MaxPool``)
    come back as the layers of the torch model, computing its function."""
    onnx_matches_torch(model, shape, tmp_path, dynamo)


def onnx_matches_torch(model, shape, tmp_path, dynamo):
    """Export ``model`` (one-sample input ``shape``) with the TorchScript or the dynamo
    exporter and check that the ONNX intake traces it to the torch model's layers (kinds,
    ReLUs, kernels; flattens aside) computing the model's function."""
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from test_search_onnx import _export

    from rvmpq.sw.search.onnx_intake import load_onnx

    path = tmp_path / "m.onnx"
    _export(model.eval(), shape, path, dynamo)
    x, t = _inputs(shape, 8)
    layers = trace_model(load_onnx(path), x[:1])
    ref = trace_model(model, x[:1])
    assert [(l.kind, l.relu, l.kernel) for l in layers if l.kind != "flatten"] == \
        [(l.kind, l.relu, l.kernel) for l in ref if l.kind != "flatten"]
    with torch.no_grad():
        want = model(t).double().numpy()
    got = float_forward(layers, x)
    if ref[-1].out_fn == "log_softmax":          # LeNet's; the layers end at the logits
        got = got - np.log(np.exp(got).sum(1, keepdims=True))
    assert np.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_onnx_unsqueeze_that_moves_the_channels_is_refused():
    """An ``Unsqueeze`` in front of the channels (of more than one), in a 2-D or a 1-D graph,
    is refused by name, with the shapes (test_search_reshape.py has the accepted ones)."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    from test_search_onnx import _graph_model, _init

    from rvmpq.sw.search.onnx_intake import onnx_to_torch

    def graph(in_shape, axis):
        ax = numpy_helper.from_array(np.array([axis], dtype=np.int64), "ax")
        nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                 helper.make_node("Unsqueeze", ["r", "ax"], ["u"], name="unsq"),
                 helper.make_node("Flatten", ["u"], ["f"], name="flat"),
                 helper.make_node("Gemm", ["f", "w"], ["y"], name="fc", transB=1)]
        feats = int(np.prod(in_shape))
        return _graph_model(nodes, [_init("w", np.zeros((3, feats)))], in_shape, [3],
                            ints=[ax])

    for in_shape, axis in (((2, 4, 4), 1), ((2, 20), 1), ((2, 20), -3)):
        m = graph(in_shape, axis)
        onnx.checker.check_model(m)
        with pytest.raises(UnsupportedModelError, match=re.escape(
                f"node unsq (Unsqueeze): axes [1] of a rank-{len(in_shape) + 1} tensor; "
                f"supported: axes of size 1 behind the channels; here one sample's shape "
                f"{in_shape} becomes {(1, *in_shape)}")):
            onnx_to_torch(m)


@pytest.mark.parametrize("impl", ["mpq", "baseline"])
def test_global_max_pooling_deploys_bit_exact(impl, seed, tmp_path):
    """The text-CNN ending (a max over the whole length, the ReLU after it) exported at seeded
    mixed bits runs on the RTL bit for bit like the integer model: the pooling is the glue's
    max pooling of a (1, 40) window."""
    from test_search_avgpool import deploys_bit_exact

    deploys_bit_exact(Net1d("x.max(2)[0]").eval(), _x((1, 1, 40), 64, seed=1), impl, seed,
                      tmp_path)
