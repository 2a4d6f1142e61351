"""Concatenation along the channels (``torch.cat([a, b], 1)``, ONNX ``Concat``) in the intake,
the quantizer and the integer model.

References: the traced layers against the model's own forward (:func:`check_trace`); a ReLU
after the concatenation against a twin that applies it to each input before ``torch.cat``
(identical layers and weights); the integer model's concatenation against the float one
(each input's integer values, dequantized on the concatenation's grid, within half a step
plus the clip of the float values); both ONNX exporters against the torch model.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from test_search_maxpool import _summary, _x, onnx_matches_torch  # noqa: E402

from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, float_forward, trace_model)
from rvmpq.sw.search.qnn import QNetwork, int_forward  # noqa: E402
from rvmpq.sw.search.quantizer import Quantizer  # noqa: E402


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, cin, sq, e1, e3, cat=lambda xs: torch.cat(xs, 1)):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, sq, 1)
        self.e1 = nn.Conv2d(sq, e1, 1)
        self.e3 = nn.Conv2d(sq, e3, 3, padding=1)
        self.cat = cat

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return self.cat([F.relu(self.e1(x)), F.relu(self.e3(x))])


class FireNet(nn.Module):
    """conv-BN-ReLU-pool, two fire modules, a max pooling, flatten, fc (8x8 inputs)."""

    def __init__(self, cat=lambda xs: torch.cat(xs, 1), c=(8, 16, 16)):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.f1 = Fire(16, c[0], c[1], c[2], cat)
        self.f2 = Fire(c[1] + c[2], c[0], c[1], c[2], cat)
        self.fc = nn.Linear((c[1] + c[2]) * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        x = F.max_pool2d(self.f2(self.f1(x)), 2)
        return self.fc(torch.flatten(x, 1))


class CatThenRelu(nn.Module):
    """``relu(cat(a(x), b(a(x))))``, or the twin ``cat(relu(a(x)), relu(b(relu(a(x)))))``;
    ``a``'s output is read by ``b`` and the concatenation, so with ``after`` the ReLU is only
    fusable with ``a``'s own ReLU first."""

    def __init__(self, after: bool, relu6: bool = False):
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 10, 3, padding=1)
        self.c = nn.Conv2d(16, 8, 3, stride=2)
        self.fc = nn.Linear(8 * 2 * 2, 10)
        self.after, self.act = after, (F.relu6 if relu6 else F.relu)

    def forward(self, x):
        a = self.act(self.a(x))
        if self.after:
            h = self.act(torch.cat((a, self.b(a)), dim=-3))
        else:
            h = torch.cat((a, self.act(self.b(a))), dim=1)
        return self.fc(F.relu(self.c(h)).flatten(1))


def _model(cls, *a, seed=0, **k):
    torch.manual_seed(seed)
    m = cls(*a, **k).eval()
    for mod in m.modules():                 # non-trivial BN statistics to fold
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m


CATS = {
    "torch.cat(xs, 1)": lambda xs: torch.cat(xs, 1),
    "torch.cat(xs, dim=-3)": lambda xs: torch.cat(xs, dim=-3),
    "torch.concat(tensors=xs, dim=1)": lambda xs: torch.concat(tensors=xs, dim=1),
    "torch.cat(tuple(xs), 1)": lambda xs: torch.cat(tuple(xs), 1),
}


@pytest.mark.parametrize("form", list(CATS))
def test_fire_modules_trace_as_concat_layers(form):
    """Each spelling of the concatenation traces to the same layers, two ``concat`` layers
    reading the two expands in order, and reproduces the model."""
    x = _x((1, 8, 8), 8)
    m = _model(FireNet, CATS[form])
    layers = trace_model(m, example=x)
    check_trace(m, layers, x)
    cats = [(i, l.src) for i, l in enumerate(layers) if l.kind == "concat"]
    names = [l.name for l in layers]
    assert [tuple(names[s] for s in src) for _, src in cats] == \
        [("f1.e1", "f1.e3"), ("f2.e1", "f2.e3")]
    ref = trace_model(_model(FireNet), example=x)
    assert _summary(layers) == _summary(ref)


@pytest.mark.parametrize("relu6", [False, True])
def test_relu_after_concat_is_fused_into_each_input(relu6):
    """``relu(cat(a, b))`` is ``cat(relu(a), relu(b))``: the traced layers equal the twin's
    (``a`` has its ReLU already: a second one is the same clamp)."""
    x = _x((1, 6, 6), 8)
    m, twin = _model(CatThenRelu, True, relu6), _model(CatThenRelu, False, relu6)
    layers = trace_model(m, example=x)
    check_trace(m, layers, x)
    assert _summary(layers) == _summary(trace_model(twin, example=x))
    assert [(l.kind, l.relu, l.relu_max) for l in layers[:3]] == \
        [("conv", True, 6.0 if relu6 else None)] * 2 + [("concat", False, None)]


class BranchBN(nn.Module):
    """Inception-style: three branch convs, concatenated, one BatchNorm over the
    concatenation, ReLU (``joint``), or the twin with a BatchNorm per branch holding the same
    statistics, and a ReLU per branch."""

    def __init__(self, joint: bool):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.ModuleList([nn.Conv2d(8, c, k, padding=k // 2) for c, k in
                                ((4, 1), (6, 3), (5, 5))])
        self.bn = nn.BatchNorm2d(15)
        self.bns = nn.ModuleList([nn.BatchNorm2d(c) for c in (4, 6, 5)])
        self.fc = nn.Linear(15 * 16, 10)
        self.joint = joint

    def forward(self, x):
        x = F.relu(self.stem(x))
        if self.joint:
            h = F.relu(self.bn(torch.cat([b(x) for b in self.b], 1)))
        else:
            h = torch.cat([F.relu(bn(b(x))) for b, bn in zip(self.b, self.bns)], 1)
        return self.fc(F.max_pool2d(h, 2).flatten(1))


def test_batchnorm_after_concat_is_folded_into_each_input():
    """``relu(bn(cat(a, b, c)))`` traces to the layers of its twin with one BatchNorm per
    branch (the joint one's statistics, sliced): each branch conv gets its channels'
    BatchNorm folded in, and the model's output is reproduced."""
    x = _x((1, 8, 8), 8)
    m, twin = _model(BranchBN, True), _model(BranchBN, False, seed=1)
    twin.load_state_dict(m.state_dict())
    lo = 0
    for bn, c in zip(twin.bns, (4, 6, 5)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).data.copy_(getattr(m.bn, name).data[lo:lo + c])
        lo += c
    layers = trace_model(m, example=x)
    check_trace(m, layers, x)
    check_trace(twin, layers, x)
    assert _summary(layers) == _summary(trace_model(twin, example=x))
    assert [l.kind for l in layers][:5] == ["conv"] * 4 + ["concat"]


class _Refused(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 1)
        self.b = nn.Conv2d(1, 4, 1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 16, 3)
        self.fc1 = nn.Linear(4 * 16, 3)
        self.how = how

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        if self.how == "dim0":
            return self.fc1(torch.cat([a, b], 0).flatten(1))
        if self.how == "dim2":
            return self.fc1(torch.cat([a, b], 2).flatten(1)[:, :64])
        if self.how == "stack":
            return self.fc(torch.stack([a, b], 1).flatten(1))
        if self.how == "mixed":
            return self.fc(torch.cat([F.relu(a), b], 1).flatten(1))
        if self.how == "relu6-and-relu":
            return self.fc(torch.cat([F.relu6(a), F.relu(b)], 1).flatten(1))
        if self.how == "bn-after-relu":
            return self.fc(self.bn(torch.cat([F.relu(a), F.relu(b)], 1)).flatten(1))
        if self.how == "relu-shared":      # a is read by the fc too: its ReLU cannot move
            h = F.relu(torch.cat([a, b], 1)).flatten(1)
            return self.fc(h) + self.fc1(a.flatten(1))
        raise AssertionError(self.how)


@pytest.mark.parametrize("how,match", [
    ("dim0", r"cat: a concatenation along dim 0; supported: along the channels"),
    ("dim2", r"cat: a concatenation along dim 2; supported: along the channels"),
    ("stack", r"stack \(stack\): stacking is not supported"),
    ("mixed", r"cat: concatenates tensors of different activations: a \(ReLU\), b \(no ReLU\)"),
    ("relu6-and-relu", r"a \(ReLU clamped at 6\), b \(ReLU\)"),
    ("bn-after-relu", r"bn: a BatchNorm after the concatenation cat is folded into each "
                      r"input's conv/linear, but input relu is not a conv/linear output "
                      r"without ReLU that only the concatenation reads"),
    ("relu-shared", r"relu: a ReLU after the concatenation cat is fused into each input's "
                    r"conv/linear/add, but input a is not one whose output only the "
                    r"concatenation reads"),
])
def test_concat_refusals(how, match):
    """What cannot be one quantized tensor, or is no concatenation along the channels, is
    refused by name."""
    with pytest.raises(UnsupportedModelError, match=match):
        trace_model(_Refused(how).eval(), example=_x((1, 4, 4), 4))


def _quantizer(m, shape, n=64):
    x = _x(shape, n, seed=1)
    layers = trace_model(m, example=x)
    return Quantizer(layers, x), x


def test_concat_readers_are_one_tie_group():
    """The reader of a concatenation and the reader of a tensor in it (``b`` reads ``a``,
    the concatenation holds ``a``) read one grid: one tie group, one input scale, and other
    ``a_bits`` for them are refused."""
    qz, _ = _quantizer(_model(CatThenRelu, False), (1, 6, 6))
    names = [qz.layers[i].name for i in qz.comp_idx]
    assert [[names[k] for k in g] for g in qz.tie_groups()] == [["b", "c"]]
    kb, kc = names.index("b"), names.index("c")
    assert qz.act_scale(kb, 4, 8) == qz.act_scale(kc, 4, 2)
    bits = [8] * qz.n_compute
    qz.export(bits, bits)                                  # tied: fine
    a_bits = list(bits)
    a_bits[kc] = 4
    with pytest.raises(ValueError, match="read the same tensor but need different precisions"):
        qz.export(bits, a_bits)


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_integer_concat_is_each_input_on_one_grid(bits):
    """In the integer network every input of a concatenation is requantized to its grid (its
    bits, sign and scale), and its integer values, dequantized on that grid, are the float
    input's (values beyond the calibrated clip: at the clip) within the rounding of the layers
    up to it: at most 4 steps, half a step on average."""
    m = _model(FireNet)
    qz, x = _quantizer(m, (1, 8, 8))
    n = qz.n_compute
    net = qz.export([bits] * n, [bits] * n)
    kinds = [l.kind for l in net.layers]
    assert kinds.count("concat") == 2
    ql = {l.name: l for l in net.layers}
    trace: list = []
    int_forward(net, x, trace=trace)
    outs = qz._collect_outputs(qz.layers, x)
    for ci, l in enumerate(net.layers):
        if l.kind != "concat":
            continue
        # the concatenation's grid: its reader's input scale
        reader = next(k for k, i in enumerate(qz.comp_idx) if qz._producer(qz._src(i)[0]) == ci)
        s, sg = qz.act_scale(reader, bits, bits)
        assert (l.out_bits, l.out_signed) == (bits, sg) and not sg
        assert l.out_shape == (*trace[l.src[0]].shape[1:3], sum(
            trace[v].shape[-1] for v in l.src))
        assert np.array_equal(trace[ci], np.concatenate([trace[v] for v in l.src], -1))
        for v in l.src:
            p = ql[qz.layers[v].name]
            assert (p.out_bits, p.out_signed) == (bits, sg)
            f = outs[v].transpose(0, 2, 3, 1)
            hi = qz.qmax(reader, bits, bits)[0] * s
            err = np.abs(trace[v] * s - np.clip(f, 0, hi))
            # the rounding of this layer and of every layer before it: a few steps (an input
            # on its own grid would be off by the ratio of the scales, a proportional error)
            assert err.max() <= 4 * s, (l.name, v, err.max() / s)
            assert err.mean() <= 0.5 * s, (l.name, v, err.mean() / s)
    # and the whole network follows the float model
    il = int_forward(net, x) * net.logit_scale
    fl = float_forward(qz.layers, x)
    assert np.corrcoef(il.ravel(), fl.ravel())[0, 1] > {16: 0.99999, 8: 0.999, 4: 0.98}[bits]


def test_concat_network_json_round_trip_and_fake_quant(tmp_path):
    """A network with concatenations saves and loads to the same integer model, and the
    fake-quantized module (QAT) computes what the integer model computes, up to its
    rounding."""
    m = _model(FireNet)
    qz, x = _quantizer(m, (1, 8, 8))
    n = qz.n_compute
    net = qz.export([8] * n, [8] * n)
    net.save(tmp_path / "q.json")
    back = QNetwork.load(tmp_path / "q.json")
    assert np.array_equal(int_forward(back, x), int_forward(net, x))
    assert [l.src for l in back.layers if l.kind == "concat"] == \
        [l.src for l in net.layers if l.kind == "concat"]
    with torch.no_grad():
        fq = qz.fq_module([8] * n, [8] * n)(torch.from_numpy(x)).double().numpy()
    il = int_forward(net, x) * net.logit_scale
    assert np.abs(fq - il).max() < 0.05 * np.abs(il).max()


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("model", ["fire", "cat-relu", "branch-bn"])
def test_onnx_concat(model, dynamo, tmp_path):
    """``Concat`` (axis 1) of both exporters, with a ReLU or a BatchNormalization after it:
    the same layers as the torch model's, computing its function."""
    m = {"fire": lambda: _model(FireNet), "cat-relu": lambda: _model(CatThenRelu, True),
         "branch-bn": lambda: _model(BranchBN, True)}[model]()
    onnx_matches_torch(m, (1, 6, 6) if model == "cat-relu" else (1, 8, 8), tmp_path, dynamo)


def test_onnx_concat_refusals():
    """An ONNX ``Concat`` along another axis, or of a constant, is refused by name."""
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    from test_search_onnx import _graph_model

    from rvmpq.sw.search.onnx_intake import onnx_to_torch

    def graph(axis, const):
        w = numpy_helper.from_array(np.ones((3, 32), dtype=np.float32), "w")
        inits = [w]
        nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")]
        other = "r"
        if const:
            inits.append(numpy_helper.from_array(np.ones((1, 1, 4, 4), np.float32), "k"))
            other = "k"
        nodes += [helper.make_node("Concat", ["r", other], ["c"], name="cat", axis=axis),
                  helper.make_node("Flatten", ["c"], ["f"], name="flat"),
                  helper.make_node("Gemm", ["f", "w"], ["y"], name="fc", transB=1)]
        return _graph_model(nodes, inits, [1, 4, 4], [3])

    with pytest.raises(UnsupportedModelError, match=r"cat.*concatenation along axis 2 of "
                       r"rank-4 tensors; supported: along the channels \(axis 1\)"):
        onnx_to_torch(graph(2, False))
    with pytest.raises(UnsupportedModelError, match=r"input 'k' is a constant; a "
                       r"concatenation of computed tensors only is supported"):
        onnx_to_torch(graph(1, True))
