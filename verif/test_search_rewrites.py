"""Model intake: layers the kernels do not run as written, rewritten into ones they do.

Dilated and grouped convs, zero padding in front of a conv (``F.pad``, ``nn.ZeroPad2d``, an
ONNX ``Pad`` or asymmetric ``pads``, ``padding="same"`` with an even kernel), and logits from
a conv (a 1x1 conv before a global average pooling, a conv over the whole map). The reference
is always the torch model's own forward (:func:`check_trace` and ``model(x)``), never the
rewritten layers; where a twin written with the plain layers exists, the traced layers must
equal the twin's. The quantized network of one such model runs on the RTL bit-exactly.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # 2 shared cores
nn = torch.nn
F = torch.nn.functional

from rvmpq.sw.search.models import (  # noqa: E402
    UnsupportedModelError, check_trace, float_forward, trace_model)


def _x(shape, n=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _seeded(model, seed=0):
    torch.manual_seed(seed)
    for p in model.parameters():
        p.data.copy_(torch.randn_like(p) * 0.5)
    return model.eval()


def _traced(model, x):
    """Trace ``model``, check the layers against its forward, return them."""
    layers = trace_model(model, x[:1])
    check_trace(model, layers, x)
    with torch.no_grad():
        want = model(torch.from_numpy(x if not _one_d(model) else x[:, :, 0])).double().numpy()
    np.testing.assert_allclose(float_forward(layers, x), want, rtol=1e-4,
                               atol=1e-5 * max(1.0, float(np.abs(want).max())))
    return layers


def _one_d(model) -> bool:
    return any(isinstance(m, nn.Conv1d) for m in model.modules())


def _same(a, b):
    """The two layer lists are the same layers: kinds, geometry, weights."""
    assert [(l.kind, l.relu, tuple(l.kernel), tuple(l.padding), tuple(l.stride), l.groups)
            for l in a] == [(l.kind, l.relu, tuple(l.kernel), tuple(l.padding),
                             tuple(l.stride), l.groups) for l in b]
    for p, q in zip(a, b):
        if p.weight is not None:
            np.testing.assert_allclose(p.weight, q.weight, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(p.bias, q.bias, rtol=1e-6, atol=1e-7)


# ---- dilation and groups ---------------------------------------------------------------------

class Dilated(nn.Module):
    """A dilated 1-D conv (padding 2, dilation 2), then one with padding="same" (dilation 3)."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv1d(1, 6, 3, padding=2, dilation=2)
        self.c1 = nn.Conv1d(6, 6, 3, padding="same", dilation=3)
        self.fc = nn.Linear(6 * 40, 10)

    def forward(self, x):
        return self.fc(F.relu(self.c1(F.relu(self.c0(x)))).flatten(1))


class Dilated2d(nn.Module):
    """A 2-D conv dilated along the height only, stride 2."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(1, 4, (3, 2), stride=2, padding=(2, 0), dilation=(2, 1))
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(F.relu(self.c0(x)).flatten(1))


def test_a_dilated_conv_runs_as_the_plain_kernel_with_zero_taps():
    """Dilation ``d`` spreads a k-tap kernel over ``d (k - 1) + 1`` taps, zeros between; the
    traced layers equal a twin written with those kernels and compute the model's function;
    the note says what it costs."""
    net = _seeded(Dilated())
    layers = _traced(net, _x((1, 1, 40)))
    c0, c1 = layers[0], layers[1]
    assert c0.kernel == (1, 5) and c0.padding == (0, 2)
    assert c1.kernel == (1, 7) and c1.padding == (0, 3)
    for lay, m, d in ((c0, net.c0, 2), (c1, net.c1, 3)):
        w = m.weight.detach().double().numpy()
        np.testing.assert_array_equal(lay.weight[:, :, 0, ::d], w)
        assert np.count_nonzero(lay.weight) == np.count_nonzero(w)
    assert "dilation 2" in c0.note and "1.67x" in c0.note
    twin = nn.Sequential(nn.Conv1d(1, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 6, 7, padding=3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6 * 40, 10))
    with torch.no_grad():
        twin[0].weight.zero_()
        twin[0].weight[:, :, ::2] = net.c0.weight
        twin[0].bias.copy_(net.c0.bias)
        twin[2].weight.zero_()
        twin[2].weight[:, :, ::3] = net.c1.weight
        twin[2].bias.copy_(net.c1.bias)
        twin[5].load_state_dict(net.fc.state_dict())
    _same(layers, trace_model(twin.eval()))
    lay2 = _traced(_seeded(Dilated2d()), _x((1, 8, 8)))
    assert lay2[0].kernel == (5, 2) and lay2[0].padding == (2, 0) and lay2[0].stride == (2, 2)


class Grouped(nn.Module):
    """A conv of 4 groups (8 -> 16 channels) and a depthwise one with a channel multiplier
    (groups == in channels, 2 outputs each)."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(1, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 16, 3, padding=1, groups=4)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.fc = nn.Linear(32 * 64, 10)

    def forward(self, x):
        h = F.relu(self.c1(F.relu(self.c0(x))))
        return self.fc(F.relu(self.dw(F.relu(self.c2(h)))).flatten(1))


def test_a_grouped_conv_runs_dense_with_zero_blocks_and_depthwise_stays():
    """A grouped conv (not depthwise) becomes the dense conv whose weights outside each
    group's block are zero; a depthwise one (groups == in == out) is kept as it is."""
    net = _seeded(Grouped())
    layers = _traced(net, _x((1, 8, 8)))
    c1, c2, dw = layers[1], layers[2], layers[3]
    assert c1.groups == 1 and c1.weight.shape == (16, 8, 3, 3)
    assert c2.groups == 1 and c2.weight.shape == (32, 16, 3, 3)
    assert dw.groups == 32 and dw.weight.shape == (32, 1, 3, 3) and dw.note is None
    for lay, m, g in ((c1, net.c1, 4), (c2, net.c2, 16)):
        w = m.weight.detach().double().numpy()
        og, ig = w.shape[0] // g, w.shape[1]
        for o in range(w.shape[0]):        # output o reads only its group's inputs
            blk = slice(o // og * ig, (o // og + 1) * ig)
            np.testing.assert_array_equal(lay.weight[o, blk], w[o])
            assert not np.delete(lay.weight[o], np.r_[blk], axis=0).any()
    assert "groups=4" in c1.note and "4x" in c1.note and "16x" in c2.note


# ---- zero padding in front of a conv ---------------------------------------------------------

class Padded(nn.Module):
    """``F.pad`` in front of convs: symmetric (is the conv's padding), asymmetric and added
    to the conv's own, and causal on a 1-D signal (``how``)."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        one_d = how == "causal"
        conv = nn.Conv1d if one_d else nn.Conv2d
        self.c0 = conv(1, 4, 3, padding=0 if how != "added" else 1)
        self.fc = nn.Linear(4 * (40 if one_d else {"sym": 64, "added": 11 * 9}[how]), 10)

    def forward(self, x):
        p = {"sym": (1, 1, 1, 1), "added": (0, 1, 2, 1), "causal": (2, 0)}[self.how]
        return self.fc(F.relu(self.c0(F.pad(x, p))).flatten(1))


@pytest.mark.parametrize("how", ["sym", "added", "causal"])
def test_a_zero_padding_in_front_of_a_conv_becomes_its_padding(how):
    """``F.pad`` with zeros before a conv: symmetric, it is the conv's padding (the layers of
    ``padding=1``); asymmetric (added to the conv's own, or causal ``(k - 1, 0)``), the larger
    side pads both and the kernel gets zero taps on the side that had less."""
    net = _seeded(Padded(how))
    layers = _traced(net, _x((1, 1, 40) if how == "causal" else (1, 8, 8)))
    c = layers[0]
    w = net.c0.weight.detach().double().numpy()
    if how == "sym":
        twin = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * 64, 10))
        twin[0].load_state_dict(net.c0.state_dict())
        twin[3].load_state_dict(net.fc.state_dict())
        _same(layers, trace_model(twin.eval()))
        assert c.note is None
    elif how == "added":          # top 1+2, bottom 1+1, left 1+0, right 1+1
        assert c.padding == (3, 2) and c.kernel == (4, 4)
        np.testing.assert_array_equal(c.weight[:, :, 0:3, 1:4], w)     # 1 zero row behind,
        assert not c.weight[:, :, 3].any() and not c.weight[:, :, :, 0].any()  # 1 col before
    else:                         # left 2, right 0: pads 2 both sides, 2 zero taps behind
        assert c.padding == (0, 2) and c.kernel == (1, 5)
        np.testing.assert_array_equal(c.weight[:, :, 0, :3], w)
        assert not c.weight[:, :, 0, 3:].any()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_zero_padding_modules_and_same_with_an_even_kernel():
    """``nn.ZeroPad2d`` in an ``nn.Sequential``, ``nn.ConstantPad1d(p, 0)`` in a graph, and
    ``padding="same"`` with an even kernel (torch pads the odd one behind) are taken."""
    seq = _seeded(nn.Sequential(nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(1, 4, 2), nn.ReLU(),
                                nn.Flatten(), nn.Linear(4 * 64, 10)))
    assert _traced(seq, _x((1, 8, 8)))[0].kernel == (3, 3)

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.ConstantPad1d((3, 0), 0.0)
            self.c = nn.Conv1d(1, 4, 4)
            self.s = nn.Conv1d(4, 4, 4, padding="same")
            self.fc = nn.Linear(4 * 40, 10)

        def forward(self, x):
            return self.fc(F.relu(self.s(F.relu(self.c(self.p(x))))).flatten(1))

    layers = _traced(_seeded(Graph()), _x((1, 1, 40)))
    assert layers[0].kernel == (1, 7) and layers[1].kernel == (1, 5)   # 'same' k=4: 1 | 2


class BadPad(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.c = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * {"value": 64, "reflect": 64, "crop": 16, "pool": 36}[how], 10)

    def forward(self, x):
        if self.how == "value":
            x = F.pad(x, (1, 1, 1, 1), value=0.5)
        elif self.how == "reflect":
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        elif self.how == "crop":
            x = F.pad(x, (-1, -1, -1, -1))
        h = F.relu(self.c(x))
        if self.how == "pool":
            h = F.max_pool2d(F.pad(h, (0, 0, 0, 0)), 1)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("how,message", [
    ("value", "value 0.5"), ("reflect", "mode 'reflect'"), ("crop", "(-1, -1, -1, -1)"),
    ("pool", "only convs read it")])
def test_other_paddings_are_refused(how, message):
    """A non-zero value, another mode, cropping, or a padding read by something other than a
    conv: refused, naming it."""
    with pytest.raises(UnsupportedModelError, match=message.replace("(", r"\(").replace(
            ")", r"\)")):
        trace_model(_seeded(BadPad(how)), _x((1, 8, 8))[:1])


def test_a_padding_module_in_a_sequential_must_precede_a_conv():
    with pytest.raises(UnsupportedModelError, match="in front of a conv"):
        trace_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ZeroPad2d(1), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(4 * 64, 10)))


# ---- logits from a conv ----------------------------------------------------------------------

class ConvHead(nn.Module):
    """Logits from a conv: ``how`` is ``mean`` (a 1x1 conv, then ``.mean((2, 3))``), ``pool``
    (``nn.AdaptiveAvgPool2d(1)`` and a flatten behind it), ``pool-first`` (the pooling,
    then the 1x1 conv, then a flatten), ``whole`` (a conv over the whole 8x8 map, then
    ``view(-1, 10)``) or ``1d`` (a 1-D model's 1x1 conv, then ``.mean(-1)``)."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        conv = nn.Conv1d if how == "1d" else nn.Conv2d
        self.c0 = conv(1, 6, 3, padding=1)
        self.head = conv(6, 10, 8 if how == "whole" else 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        h = F.relu(self.c0(x))
        if self.how == "mean":
            return self.head(h).mean((2, 3))
        if self.how == "pool":
            return self.pool(self.head(h)).flatten(1)
        if self.how == "pool-first":
            return torch.flatten(self.head(self.pool(h)), 1)
        if self.how == "whole":
            return self.head(h).view(-1, 10)
        return self.head(h).mean(-1)


@pytest.mark.parametrize("how", ["mean", "pool", "pool-first", "whole", "1d", "sequential"])
def test_logits_from_a_conv_become_a_linear_layer(how):
    """Each form ends in a flatten and a linear layer: the twin written with
    ``nn.Linear`` (weights of the conv in flatten order) has the same layers, and they
    compute the model's function."""
    if how == "sequential":
        net = _seeded(nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(6, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        c0, head = net[0], net[2]
    else:
        net = _seeded(ConvHead(how))
        c0, head = net.c0, net.head
    one_d = how == "1d"
    x = _x((1, 1, 40) if one_d else (1, 8, 8))
    layers = _traced(net, x)
    assert [l.kind for l in layers][-2:] == ["flatten", "linear"]
    assert "as a linear layer" in layers[-1].note
    conv = nn.Conv1d if one_d else nn.Conv2d
    lin = nn.Linear(6 * (64 if how == "whole" else 1), 10)
    with torch.no_grad():
        lin.weight.copy_(head.weight.reshape(10, -1))
        lin.bias.copy_(head.bias)
    pool = nn.AdaptiveAvgPool1d(1) if one_d else nn.AdaptiveAvgPool2d(1)
    first = conv(1, 6, 3, padding=1)
    first.load_state_dict(c0.state_dict())
    twin = nn.Sequential(first, nn.ReLU(), *([] if how == "whole" else [pool]), nn.Flatten(),
                         lin)
    _same(layers, trace_model(twin.eval(), x[:1]))
    if how in ("mean", "pool", "1d", "sequential"):
        assert "fewer multiply-accumulates" in layers[-1].note


class PooledLogits(nn.Module):
    """Logits that a global pooling gives: of a ReLU'd 1x1 conv (SqueezeNet's classifier),
    of a padded 3x3 conv, of a conv that something else reads too, or a global max."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.c0 = nn.Conv2d(1, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 10, 3 if how == "3x3" else 1, padding=1 if how == "3x3" else 0)

    def forward(self, x):
        y = self.head(F.relu(self.c0(x)))
        if self.how == "relu":
            y = F.relu(y)
        if self.how == "two-readers":
            return y.mean((2, 3)) + y.amax((2, 3))
        if self.how == "max":
            return y.amax((2, 3))
        return y.mean((2, 3))


@pytest.mark.parametrize("how", ["relu", "3x3"])
def test_a_global_average_pooling_that_gives_the_logits_becomes_a_linear_layer(how):
    """Behind a ReLU'd or padded conv the pooling does not commute with the conv, but it is
    itself a linear map of the flattened map: a linear layer whose row ``k`` holds
    ``1 / (H W)`` on channel ``k``'s pixels and 0 elsewhere."""
    layers = _traced(_seeded(PooledLogits(how)), _x((1, 8, 8)))
    assert [l.kind for l in layers] == ["conv", "conv", "flatten", "linear"]
    assert layers[1].relu == (how == "relu") and "global average pooling" in layers[-1].note
    want = np.kron(np.eye(10), np.full((1, 64), 1 / 64))
    np.testing.assert_array_equal(layers[-1].weight, want)
    assert not layers[-1].bias.any()


@pytest.mark.parametrize("how", ["two-readers", "max"])
def test_logits_from_something_that_is_no_linear_map_are_refused(how):
    """A conv output something else reads too, or a global max pooling, at the end: still
    refused (the last layer must produce the int32 logits)."""
    with pytest.raises(UnsupportedModelError, match="last operation must be a Conv2d/Linear"):
        trace_model(_seeded(PooledLogits(how)), _x((1, 8, 8))[:1])


# ---- ONNX ------------------------------------------------------------------------------------

class Tcn(nn.Module):
    """A small temporal conv net on 40-sample signals: causal dilated convs (``F.pad`` in
    front), a grouped one, and logits from a 1x1 conv and a mean over time."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv1d(1, 8, 3)
        self.c1 = nn.Conv1d(8, 8, 3, dilation=2, groups=2)
        self.c2 = nn.Conv1d(8, 16, 3, dilation=4)
        self.head = nn.Conv1d(16, 10, 1)

    def forward(self, x):
        h = F.relu(self.c0(F.pad(x, (2, 0))))
        h = F.relu(self.c1(F.pad(h, (4, 0))))
        h = F.relu(self.c2(F.pad(h, (8, 0))))
        return self.head(h).mean(-1)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("net", ["tcn", "grouped", "head"])
def test_onnx_graphs_with_rewritten_layers(tmp_path, dynamo, net):
    """Both exporters: ``Pad`` nodes (or asymmetric ``pads``), ``dilations`` and ``group``
    attributes, and a ``ReduceMean`` / ``GlobalAveragePool`` of a 1x1 ``Conv``: the converted
    module traces to the torch model's layers and computes its function."""
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from test_search_onnx import _export

    from rvmpq.sw.search.onnx_intake import load_onnx

    model = _seeded({"tcn": Tcn, "grouped": Grouped, "head": lambda: ConvHead("pool")}[net]())
    sample = (1, 1, 40) if net == "tcn" else (1, 8, 8)
    path = tmp_path / "m.onnx"
    _export(model, (1, 40) if net == "tcn" else sample, path, dynamo)
    x = _x(sample)
    layers = _traced(load_onnx(path), x)
    ref = trace_model(model, x[:1])

    def kinds(ls):
        return [(l.kind, l.relu, tuple(l.kernel), tuple(l.padding), l.groups) for l in ls
                if l.kind != "flatten"]

    assert kinds(layers) == kinds(ref)
    with torch.no_grad():
        want = model(torch.from_numpy(x[:, :, 0] if net == "tcn" else x)).double().numpy()
    np.testing.assert_allclose(float_forward(layers, x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("how", ["conv-pads", "pad-node"])
def test_hand_written_onnx_asymmetric_padding(tmp_path, how):
    """A ``Conv`` with ``pads`` (top 2, left 1, bottom 0, right 1), or a ``Pad`` node of
    zeros (opset 13: pads and value as inputs) in front of an unpadded ``Conv``: the
    conversion agrees with ONNX's reference evaluator (:func:`load_onnx` checks), and the
    traced conv is the symmetric one with zero taps."""
    pytest.importorskip("onnx")
    from onnx import helper
    from test_search_onnx import _graph_model, _init

    from rvmpq.sw.search.onnx_intake import load_onnx

    rng = np.random.default_rng(0)
    pads = [2, 1, 0, 1]                        # ONNX order: top, left, bottom, right
    if how == "conv-pads":
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=pads)]
        ints = []
    else:
        nodes = [helper.make_node("Pad", ["x", "p", "v"], ["xp"], name="pad"),
                 helper.make_node("Conv", ["xp", "w", "b"], ["c"], name="conv")]
        ints = [helper.make_tensor("p", 7, [8], [0, 0, 2, 1, 0, 0, 0, 1]),
                helper.make_tensor("v", 1, [], [0.0])]
    nodes += [helper.make_node("Relu", ["c"], ["r"], name="relu"),
              helper.make_node("Flatten", ["r"], ["f"], name="flat"),
              helper.make_node("Gemm", ["f", "fw"], ["y"], name="fc", transB=1)]
    inits = [_init("w", rng.normal(size=(4, 1, 3, 3))), _init("b", rng.normal(size=4)),
             _init("fw", rng.normal(size=(3, 4 * 8 * 8)))]
    path = tmp_path / "m.onnx"
    import onnx
    onnx.save(_graph_model(nodes, inits, (1, 8, 8), (3,), ints=ints, opset=13), str(path))
    layers = _traced(load_onnx(path), _x((1, 8, 8)))
    c = layers[0]
    assert c.padding == (2, 1) and c.kernel == (5, 3)     # 2 zero rows behind, as bottom 0
    assert not c.weight[:, :, 3:].any() and c.weight[:, :, :3].all()


def test_an_onnx_pad_of_another_value_is_refused(tmp_path):
    from rvmpq.sw.search.onnx_intake import load_onnx
    from test_search_onnx import _export

    path = tmp_path / "m.onnx"
    _export(_seeded(BadPad("value")), (1, 8, 8), path, False)
    with pytest.raises(UnsupportedModelError, match="value 0.5"):
        trace_model(load_onnx(path), _x((1, 8, 8))[:1])


# ---- on the RTL ------------------------------------------------------------------------------

def test_a_rewritten_tcn_quantizes_and_runs_bit_exact_on_the_rtl(tmp_path):
    """The TCN above (causal dilated convs, a grouped conv, a conv head), quantized at mixed
    precisions and deployed: every logit the RTL computes equals the integer model's, and at
    16 bits the integer model picks the float model's class on most samples."""
    from rvmpq.sw.deploy import run_network
    from rvmpq.sw.search.qnn import int_forward, quantize_input
    from rvmpq.sw.search.quantizer import Quantizer

    model = _seeded(Tcn())
    x = _x((1, 1, 40), 64, seed=1)
    layers = _traced(model, x)
    assert [l.kind for l in layers] == ["conv", "conv", "conv", "conv", "flatten", "linear"]
    qz = Quantizer(layers, x)
    net16 = qz.export([16] * 5, [16] * 5)
    agree = np.mean(int_forward(net16, x).argmax(1) == float_forward(layers, x).argmax(1))
    assert agree >= 0.9, agree
    net = qz.export([8, 4, 2, 8, 8], [8, 4, 2, 8, 8])
    run = run_network(net, quantize_input(x[:3], net), "mpq", tmp_path, "prog")
    want = int_forward(net, x[:3], exact="int64")
    assert np.array_equal(run.logits, want), (run.logits, want, tmp_path / "prog.c")
