"""Model intake of a ``forward`` written with functional operations, the way most PyTorch code
is written (``F.relu``, ``F.max_pool2d``, ``F.dropout``, ``x.view(x.size(0), -1)``, average
pooling as ``F.avg_pool2d`` / ``x.mean((2, 3))``, a final ``F.log_softmax``).

The reference is the model's own ``forward`` and the same network written as an
``nn.Sequential`` of modules, which the intake has always walked.
"""

import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rvmpq.sw.cli import main  # noqa: E402
from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, float_forward, load_dataset, torch_accuracy, trace_model)

FLATTENS = {
    "view_size0": lambda x: x.view(x.size(0), -1),
    "contiguous_view": lambda x: x.contiguous().view(x.size(0), -1),
    "reshape_shape0": lambda x: x.reshape(x.shape[0], -1),
    "view_size0_k": lambda x: x.view(x.size(0), 32 * 4 * 4),
    "view_minus1_k": lambda x: x.view(-1, 32 * 4 * 4),
    "method_flatten": lambda x: x.flatten(1),
    "torch_flatten": lambda x: torch.flatten(x, 1),
    "torch_reshape": lambda x: torch.reshape(x, (x.size(0), -1)),
}


class TutorialNet(nn.Module):
    """conv-relu, conv-relu-maxpool, dropout, flatten, fc-relu, fc: modules for the weights,
    functional calls for everything else."""

    def __init__(self, flatten="view_size0"):
        super().__init__()
        torch.manual_seed(0)
        self.how = flatten
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        """The network."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(x, 0.25, training=self.training)
        x = F.relu(self.fc1(FLATTENS[self.how](x)))
        return self.fc2(x)


def _sequential(net):
    """The same network as an nn.Sequential of modules (the same weight objects)."""
    return nn.Sequential(net.conv1, nn.ReLU(), net.conv2, nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(0.25), nn.Flatten(), net.fc1, nn.ReLU(), net.fc2).eval()


@pytest.mark.parametrize("flatten", list(FLATTENS))
def test_functional_forward_traces_like_its_sequential_twin(flatten):
    net = TutorialNet(flatten).eval()
    layers, ref = trace_model(net), trace_model(_sequential(net))
    assert [l.kind for l in layers] == ["conv", "conv", "maxpool", "flatten", "linear", "linear"]
    for a, b in zip(layers, ref):
        assert (a.kind, a.relu, a.src, a.kernel, a.stride) == (b.kind, b.relu, b.src, b.kernel,
                                                                 b.stride)
        assert a.src is None                 # a chain: the sequential form, no graph
        if a.is_compute:
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    x = np.random.default_rng(1).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).double().numpy()
    assert np.allclose(float_forward(layers, x), want, rtol=1e-5, atol=1e-5)
    check_trace(net, layers, x)


def test_functional_forward_runs_on_the_builtin_data_layout():
    """The digits arrays have strides that torch reads as channels-last; a model's own
    ``x.view(x.size(0), -1)`` failed on them until the intake ran models on a row-major copy."""
    ds = load_dataset("digits")
    net = TutorialNet().eval()
    check_trace(net, trace_model(net, ds.x_val[:1]), ds.x_val[:16])
    assert 0 <= torch_accuracy(net, ds.x_test, ds.y_test) <= 100


class _Bad(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        if self.how == "pool_overlap":
            x = F.max_pool2d(x, 3, 2, padding=1)
        elif self.how == "avg_pool_padded":
            x = F.avg_pool2d(x, 3, 2, padding=1)
        else:
            x = F.max_pool2d(x, 2)
        if self.how == "view_3d":
            return self.fc(x.view(x.size(0), 4, -1).flatten(1))
        if self.how == "size1":
            return self.fc(x.view(-1, x.size(1) * 16))
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("how, message", [
    ("pool_overlap", "max_pool2d needs kernel == stride"),
    ("avg_pool_padded", "avg_pool2d needs no padding"),
    ("view_3d", "a view to ('N', 4, -1); supported: a flatten"),
    ("size1", "mul (call_function mul) reads a tensor's size; only a flatten"),
])
def test_functional_forms_the_kernels_cannot_run_are_refused(how, message):
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        trace_model(_Bad(how).eval())


def quick_search(tmp_path, capsys, model, data="digits"):
    """``torch.save`` ``model`` and run a short ``rvmpq search --model PATH.pt`` on it (greedy,
    no QAT, stand-in costs): the plumbing end to end. Returns ``(config.json, log)``."""
    path = tmp_path / "net.pt"
    torch.save(model, path)
    rc = main(["search", "--model", str(path), "--data", data, "--budget", "latency=0.8",
               "--method", "greedy", "--no-qat", "--configs", "4", "--costs", "stand-in",
               "-o", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads((tmp_path / "out" / "config.json").read_text()), out.out + out.err


def test_search_takes_a_saved_functional_model(tmp_path, capsys):
    """``rvmpq search --model PATH.pt`` on a tutorial-style model."""
    cfg, _ = quick_search(tmp_path, capsys, TutorialNet().eval())
    assert [l["name"] for l in cfg["layers"]] == ["conv1", "conv2", "fc1", "fc2"]


#: How a forward may end: a softmax / log_softmax over the classes (left out by the intake).
FINALS = {
    "F.log_softmax": (lambda x: F.log_softmax(x, dim=1), "log_softmax"),
    "F.softmax": (lambda x: F.softmax(x, 1), "softmax"),
    "torch.log_softmax_-1": (lambda x: torch.log_softmax(x, -1), "log_softmax"),
    "method_softmax": (lambda x: x.softmax(dim=1), "softmax"),
    "module_LogSoftmax": (nn.LogSoftmax(dim=1), "log_softmax"),
}


class ExampleNet(nn.Module):
    """The PyTorch examples' MNIST network, sized for 8x8 digits: conv-relu, conv-relu,
    max_pool2d, dropout, flatten, fc-relu, dropout, fc, log_softmax."""

    def __init__(self, final="F.log_softmax"):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 16, 3, 1)
        self.conv2 = nn.Conv2d(16, 32, 3, 1)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)
        self.final = FINALS[final][0]

    def forward(self, x):
        """The network."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(x, 0.25, self.training)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.final(self.fc2(F.dropout(x, 0.5, self.training)))


@pytest.mark.parametrize("final", list(FINALS))
def test_a_final_softmax_is_left_out(final):
    """The layers stop at the logits, ``out_fn`` names what the model applies to them, and
    :func:`check_trace` compares the model's output with that function of the logits."""
    net = ExampleNet(final).eval()
    twin = nn.Sequential(net.conv1, nn.ReLU(), net.conv2, nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), net.fc1, nn.ReLU(), net.fc2).eval()
    x = np.random.default_rng(2).uniform(0, 1, (8, 1, 8, 8)).astype(np.float32)
    layers, ref = trace_model(net), trace_model(twin)
    assert [l.kind for l in layers] == [l.kind for l in ref]
    assert [l.out_fn for l in layers] == [None] * (len(layers) - 1) + [FINALS[final][1]]
    logits = float_forward(layers, x)
    with torch.no_grad():
        assert np.allclose(logits, twin(torch.from_numpy(x)).double().numpy(), atol=1e-5)
        probs = net(torch.from_numpy(x)).double().numpy()
    assert not np.allclose(logits, probs, atol=1e-2)        # the model's output is not logits
    check_trace(net, layers, x)
    layers[-1].out_fn = None                 # without it the model's output is not reproduced
    with pytest.raises(UnsupportedModelError, match="does not reproduce"):
        check_trace(net, layers, x)
    seq = trace_model(nn.Sequential(*twin, nn.Dropout(), nn.LogSoftmax(dim=1)))
    assert seq[-1].out_fn == "log_softmax"


class _SoftmaxMisuse(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)
        self.fc2 = nn.Linear(3, 3)

    def forward(self, x):
        y = self.fc(torch.flatten(F.relu(self.conv(x)), 1))
        if self.how == "middle":
            return self.fc2(F.softmax(y, 1))
        if self.how == "dim0":
            return F.log_softmax(y, dim=0)
        if self.how == "then_log":
            return torch.log(F.softmax(y, dim=1))
        return F.softmax(self.conv(x), dim=-1)           # over the width of a conv's output


@pytest.mark.parametrize("how, message", [
    ("middle", "softmax: a softmax / log_softmax is supported only as the model's last"),
    ("then_log", "supported only as the model's last operation"),
    ("dim0", "a log_softmax over dim 0 of 2-D logits; supported: over the classes (dim=1, or -1)"),
    ("conv_dim_-1", "a softmax over dim -1 of 4-D logits; supported: over the classes (dim=1)"),
])
def test_a_softmax_the_intake_cannot_leave_out_is_refused(how, message):
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        trace_model(_SoftmaxMisuse(how).eval())


@pytest.mark.parametrize("seq, message", [
    ([nn.Softmax(dim=1), nn.Linear(3, 3)], "1: a softmax / log_softmax is supported only"),
    ([nn.LogSoftmax(dim=0)], "1: a log_softmax over dim 0 of 2-D logits"),
])
def test_a_sequential_softmax_must_end_the_model(seq, message):
    with pytest.raises(UnsupportedModelError, match=message):
        trace_model(nn.Sequential(nn.Linear(4, 3), *seq))


#: Functional average pooling, and the module each one is: (forward step, module).
POOLS = {
    "F.avg_pool2d": (lambda x: F.avg_pool2d(x, 2), nn.AvgPool2d(2)),
    "F.avg_pool2d_stride": (lambda x: F.avg_pool2d(x, kernel_size=(2, 1), stride=(2, 1)),
                            nn.AvgPool2d((2, 1), (2, 1))),
}
GLOBALS = {
    "x.mean": lambda x: x.mean((2, 3)),
    "torch.mean_keepdim": lambda x: torch.flatten(torch.mean(x, dim=[-2, -1], keepdim=True), 1),
    "F.adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1),
}


class PoolNet(nn.Module):
    """conv-relu, a local average pooling, conv-relu, a global average pooling, fc."""

    def __init__(self, pool, glob):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)
        self.pool, self.glob = POOLS[pool][0], GLOBALS[glob]

    def forward(self, x):
        """The network."""
        x = self.pool(F.relu(self.conv1(x)))
        return self.fc(self.glob(F.relu(self.conv2(x))))


@pytest.mark.parametrize("pool, glob", [("F.avg_pool2d", g) for g in GLOBALS]
                         + [("F.avg_pool2d_stride", "x.mean")])
def test_functional_average_pooling_traces_like_the_modules(pool, glob):
    net = PoolNet(pool, glob).eval()
    twin = nn.Sequential(net.conv1, nn.ReLU(), POOLS[pool][1], net.conv2, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.fc).eval()
    x = np.random.default_rng(3).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    layers, ref = trace_model(net, x[:1]), trace_model(twin, x[:1])
    assert [l.kind for l in layers] == ["conv", "conv", "conv", "conv", "flatten", "linear"]
    for a, b in zip(layers, ref):
        assert (a.kind, a.relu, a.src, a.kernel, a.stride, a.groups) == (
            b.kind, b.relu, b.src, b.kernel, b.stride, b.groups)
        if a.is_compute:
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    check_trace(net, layers, x)
    with pytest.raises(UnsupportedModelError, match="needs the shape of its input"):
        trace_model(net)


@pytest.mark.parametrize("glob, features, message", [
    (lambda x: x.mean(1).flatten(1), 16,
     "mean: a mean over dims [1]; supported: over the spatial dims"),
    (lambda x: x.mean().expand(x.size(0), 32), 32, "a mean over dims all"),
    (lambda x: F.adaptive_avg_pool2d(x, 3).flatten(1), 288,
     "adaptive_avg_pool2d: adaptive_avg_pool2d to output size 3x3 of an input of 4x4; "
     "supported: output sizes that divide the input's"),
])
def test_functional_average_pooling_the_kernels_cannot_run_is_refused(glob, features, message):
    net = PoolNet("F.avg_pool2d", "x.mean").eval()
    net.glob, net.fc = glob, nn.Linear(features, 10)
    x = np.zeros((1, 1, 8, 8), np.float32)
    with torch.no_grad():
        net(torch.from_numpy(x))                  # the model runs; the intake refuses it
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        trace_model(net, x)


class GapNet(nn.Module):
    """The PyTorch examples' style, ending in ``F.log_softmax``, with a global average pooling
    written as ``x.mean((2, 3))``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 16, 3, 1)
        self.conv2 = nn.Conv2d(16, 32, 3, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        """The network."""
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.log_softmax(self.fc(x.mean((2, 3))), dim=1)


def test_search_takes_a_model_ending_in_log_softmax(tmp_path, capsys):
    """``rvmpq search --model PATH.pt``: the plumbing end to end, and the log says what was
    left out."""
    cfg, log = quick_search(tmp_path, capsys, GapNet().eval())
    assert "final log_softmax is left out" in log
    assert [l["name"] for l in cfg["layers"]] == ["conv1", "conv2", "mean", "fc"]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("net", ["ExampleNet", "GapNet"])
def test_onnx_export_ending_in_log_softmax(tmp_path, net, dynamo):
    """Both exporters write a final ``LogSoftmax`` node (``GapNet``'s ``x.mean((2, 3))`` a
    ``ReduceMean``); the converted model's layers stop at the logits, as the module's do."""
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from test_search_onnx import _export

    from rvmpq.sw.search.onnx_intake import load_onnx

    model = {"ExampleNet": ExampleNet, "GapNet": GapNet}[net]().eval()
    path = tmp_path / "net.onnx"
    _export(model, (1, 8, 8), path, dynamo)
    conv = load_onnx(path)
    layers = trace_model(conv, np.zeros((1, 1, 8, 8), np.float32))
    ref = trace_model(model, np.zeros((1, 1, 8, 8), np.float32))
    assert [l.kind for l in layers] == [l.kind for l in ref]
    assert layers[-1].out_fn == "log_softmax"
    x = np.random.default_rng(4).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    assert np.allclose(float_forward(layers, x), float_forward(ref, x), atol=1e-4)
    check_trace(model, layers, x)


def test_onnx_softmax_the_intake_cannot_leave_out_is_refused(tmp_path):
    """A ``Softmax`` over another axis, or before another layer, is refused by name."""
    onnx = pytest.importorskip("onnx")
    from test_search_onnx import _graph_model, _init

    from rvmpq.sw.search.onnx_intake import load_onnx

    rng = np.random.default_rng(5)
    w1, w2 = rng.normal(size=(3, 64)).astype(np.float32), rng.normal(size=(3, 3)).astype(
        np.float32)
    flat = onnx.helper.make_node("Flatten", ["x"], ["f"], axis=1)
    gemm = onnx.helper.make_node("Gemm", ["f", "w1"], ["g"], transB=1)
    cases = {
        "axis 0": [flat, gemm, onnx.helper.make_node("Softmax", ["g"], ["y"], axis=0)],
        "middle": [flat, gemm, onnx.helper.make_node("LogSoftmax", ["g"], ["p"], axis=1),
                   onnx.helper.make_node("Gemm", ["p", "w2"], ["y"], transB=1)],
    }
    for case, nodes in cases.items():
        path = tmp_path / f"{case.replace(' ', '_')}.onnx"
        onnx.save(_graph_model(nodes, [_init("w1", w1), _init("w2", w2)], (1, 8, 8), (3,)),
                  str(path))
        with pytest.raises(UnsupportedModelError) as err:
            trace_model(load_onnx(path))
        assert ("a Softmax over axis 0 of a rank-2 tensor" if case == "axis 0" else
                "supported only as the model's last operation") in str(err.value), case


def test_a_saved_model_whose_class_is_not_importable(tmp_path, capsys, monkeypatch):
    """``torch.save`` pickles a module's class by name: a class from the training script's
    ``__main__``, or from a module not on the path, cannot be loaded; the error says why and
    what to do instead of calling the file corrupt."""
    import sys

    (tmp_path / "gone_net.py").write_text(
        "import torch.nn as nn\n\n\nclass GoneNet(nn.Sequential):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_net

    main_mod = sys.modules["__main__"]
    script_cls = type("ScriptNet", (nn.Sequential,), {"__module__": "__main__"})
    monkeypatch.setattr(main_mod, "ScriptNet", script_cls, raising=False)
    cases = {"gone": (gone_net.GoneNet, "class is in module 'gone_net', which cannot be imported"),
             "script": (script_cls, "class 'ScriptNet' is not defined in module '")}
    for name, (cls, _) in cases.items():
        torch.save(cls(nn.Linear(64, 10)), tmp_path / f"{name}.pt")
    monkeypatch.delitem(sys.modules, "gone_net")
    monkeypatch.delattr(main_mod, "ScriptNet")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    for name, (_, want) in cases.items():
        rc = main(["search", "--model", str(tmp_path / f"{name}.pt"), "--data", "digits",
                   "--costs", "stand-in", "-o", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert rc == 2 and want in err and "PYTHONPATH" in err and "ONNX" in err, err
    assert not (tmp_path / "out").exists()
