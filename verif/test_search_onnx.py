"""ONNX intake (`--model PATH.onnx`) and `.npz` data sets (`--data PATH.npz`).

The references are independent of the conversion: the torch module that was exported (its
own forward) and ONNX's reference evaluator (``onnx.reference``), never the converted module.
"""

import io
import json
import logging
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
torch.set_num_threads(1)  # 2 shared cores

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from rvmpq.sw.cli import main  # noqa: E402
from rvmpq.sw.search.models import (  # noqa: E402
    NPZ_KEYS, UnsupportedModelError, build_model, check_trace, float_forward, load_dataset,
    trace_model)
from rvmpq.sw.search.onnx_intake import load_onnx  # noqa: E402

SHAPES = {"digits-cnn": (1, 8, 8), "mnist1d-cnn": (1, 1, 40), "mnist1d-cnn-l": (1, 1, 40),
          "mnist1d-resnet": (1, 1, 40)}


def _random_bn(model, seed):
    """Give every BatchNorm non-trivial statistics, so that folding them is exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


def _export(model, shape, path, dynamo, dynamic=True):
    """Export ``model`` on a batch of 2 ``shape`` samples, the batch size symbolic or fixed."""
    x = torch.zeros((2, *shape))
    kw = ({"dynamic_shapes": ({0: "batch"},) if dynamic else None} if dynamo
          else {"dynamic_axes": {"x": {0: "batch"}} if dynamic else None})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=dynamo, input_names=["x"],
                              output_names=["y"], verbose=False, **kw)
        finally:
            logging.disable(logging.NOTSET)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_onnx_export_of_builtin_architectures(tmp_path, name, dynamo):
    """Each built-in architecture (random weights and BatchNorm statistics), exported by either
    torch exporter, comes back as the same layer list and the same float function."""
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(1)
    model = _random_bn(build_model(name), 2).eval()
    path = tmp_path / "m.onnx"
    _export(model, SHAPES[name], path, dynamo)
    net = load_onnx(path)
    assert net.input_shape == SHAPES[name]
    layers, ref_layers = trace_model(net), trace_model(model)
    assert [l.kind for l in layers] == [l.kind for l in ref_layers]
    assert [l.src for l in layers] == [l.src for l in ref_layers]
    assert [l.relu for l in layers] == [l.relu for l in ref_layers]
    x = np.random.default_rng(3).uniform(-1, 1, (5, *SHAPES[name])).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).double().numpy()
    got = float_forward(layers, x)
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    if not dynamo and isinstance(model, torch.nn.Sequential):
        # the TorchScript exporter names nodes after the modules: a Sequential's come back
        assert [l.name for l in layers] == [l.name for l in ref_layers]


class _ViewNet(torch.nn.Module):
    """The flatten most PyTorch code writes: ``x.view(x.size(0), -1)`` (``arith=False``), or
    a reshape to ``(x.shape[0], C * H * W)`` computed from the tensor's shape."""

    def __init__(self, arith):
        super().__init__()
        self.arith = arith
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        if self.arith:
            return self.fc(x.reshape(x.shape[0], x.shape[1] * x.shape[2] * x.shape[3]))
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("arith", [False, True], ids=["view", "reshape_product"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed_batch", "dynamic_batch"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_flatten_by_the_tensors_own_shape(tmp_path, dynamo, dynamic, arith):
    """``x.view(x.size(0), -1)`` and its relatives, exported with a symbolic batch size (the
    TorchScript exporter writes Shape / Gather / Unsqueeze / Concat, with Mul for the
    product) or at the export's fixed batch size (a constant reshape to ``(2, K)``), become a
    flatten: the converted module computes the exported module's function at any batch
    size."""
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = _ViewNet(arith).eval()
    path = tmp_path / "view.onnx"
    _export(model, (1, 8, 8), path, dynamo, dynamic)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    if dynamic and not dynamo:
        assert {"Shape", "Gather", "Concat"} <= ops     # the case this test is about
    net = load_onnx(path)
    assert net.batch == (None if dynamic else 2)
    layers = trace_model(net)
    assert [l.kind for l in layers] == ["conv", "flatten", "linear"]
    xs = np.random.default_rng(1).uniform(-1, 1, (5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(xs)).double().numpy()
    assert np.allclose(float_forward(layers, xs), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def _shape_graph(scale_batch: int):
    """A 1x1 conv, a reshape to ``(scale_batch * N, -1)`` with N taken from Shape, a Gemm."""
    ints = [numpy_helper.from_array(np.array(v, dtype=np.int64), k)
            for k, v in (("zero", [0]), ("minus1", [-1]), ("k", scale_batch))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["r"], name="conv"),
             helper.make_node("Shape", ["r"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="batch"),
             helper.make_node("Mul", ["n", "k"], ["nk"], name="times"),
             helper.make_node("Concat", ["nk", "minus1"], ["t"], name="target", axis=0),
             helper.make_node("Reshape", ["r", "t"], ["f"], name="resh"),
             helper.make_node("Gemm", ["f", "fw"], ["y"], name="fc", transB=1)]
    rng = np.random.default_rng(0)
    return _graph_model(nodes, [_init("w", rng.normal(size=(2, 2, 1, 1))),
                                _init("fw", rng.normal(size=(3, 8 // scale_batch)))],
                        (2, 2, 2), (3,), ints=ints)


def test_onnx_shape_computations_are_folded_or_refused(tmp_path):
    """A target shape built from Shape folds where it only copies the batch size (times 1);
    one that scales the batch (times 2) is refused by name; a constant subgraph that ONNX's
    reference evaluator cannot run is refused naming its node."""
    path = tmp_path / "shape.onnx"
    model = _shape_graph(1)
    onnx.save(model, str(path))
    net = load_onnx(path)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 2, 2, 2)).astype(np.float32)
    assert np.allclose(float_forward(trace_model(net), x),
                       ReferenceEvaluator(model).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
    onnx.save(_shape_graph(2), str(path))
    with pytest.raises(UnsupportedModelError, match=r"node resh \(Reshape\): its target shape "
                                                    "depends on the batch size"):
        load_onnx(path)
    bad = [helper.make_node("Reshape", ["w", "s"], ["w2"], name="bad_fold"),
           helper.make_node("Conv", ["x", "w2"], ["y"], name="conv")]
    onnx.save(_graph_model(bad, [_init("w", np.ones(18))], (2, 3, 3), (1, 1, 1), ints=[
        numpy_helper.from_array(np.array([1, 2, 3, 4], dtype=np.int64), "s")]), str(path))
    with pytest.raises(UnsupportedModelError, match=r"node bad_fold \(Reshape\): its inputs "
                                                    "are constants, but"):
        load_onnx(path)


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def _graph_model(nodes, inits, in_shape, out_shape, ints=(), opset=17):
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        initializer=list(inits) + list(ints))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _hand_model(rng):
    """A graph no torch exporter writes from our models: an unfolded BatchNormalization after
    a bias-less conv, an Identity, a Dropout, a MaxPool, a Reshape to (N, -1) by a Constant,
    MatMul + Add (a bias), a BatchNormalization on a vector, Relu, and a Gemm with transB=0,
    alpha and beta."""
    w1 = rng.normal(size=(6, 2, 3, 3))
    bn = [rng.uniform(0.5, 1.5, 6), rng.uniform(-0.2, 0.2, 6), rng.uniform(-0.5, 0.5, 6),
          rng.uniform(0.5, 2.0, 6)]
    m1 = rng.normal(size=(6 * 3 * 3, 12)) * 0.2
    b1 = rng.normal(size=12)
    bn2 = [rng.uniform(0.5, 1.5, 12), rng.uniform(-0.2, 0.2, 12), rng.uniform(-0.5, 0.5, 12),
           rng.uniform(0.5, 2.0, 12)]
    w2 = rng.normal(size=(12, 5)) * 0.3
    c2 = rng.normal(size=5)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1"], name="bn1",
                         epsilon=1e-3),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Identity", ["r1"], ["i1"], name="id"),
        helper.make_node("MaxPool", ["i1"], ["p1"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Dropout", ["p1"], ["d1"], name="drop"),
        helper.make_node("Constant", [], ["shape"], name="shape_const",
                         value=numpy_helper.from_array(np.array([0, -1], dtype=np.int64))),
        helper.make_node("Reshape", ["d1", "shape"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "m1"], ["mm"], name="fc1"),
        helper.make_node("Add", ["b1", "mm"], ["a1"], name="fc1_bias"),   # constant first
        helper.make_node("BatchNormalization", ["a1", "s2", "bb2", "m2", "v2"], ["n2"],
                         name="bn2"),
        helper.make_node("Relu", ["n2"], ["r2"], name="relu2"),
        helper.make_node("Gemm", ["r2", "w2", "c2"], ["y"], name="fc2", alpha=0.5, beta=2.0),
    ]
    inits = [_init("w1", w1), _init("s", bn[0]), _init("b", bn[1]), _init("m", bn[2]),
             _init("v", bn[3]), _init("m1", m1), _init("b1", b1), _init("s2", bn2[0]),
             _init("bb2", bn2[1]), _init("m2", bn2[2]), _init("v2", bn2[3]), _init("w2", w2),
             _init("c2", c2)]
    return _graph_model(nodes, inits, (2, 6, 6), (5,))


def test_onnx_hand_written_graph_matches_reference_evaluator(tmp_path):
    """Operators and attribute forms the exporters do not write for our models, against
    ONNX's reference evaluator."""
    model = _hand_model(np.random.default_rng(0))
    onnx.checker.check_model(model)
    path = tmp_path / "hand.onnx"
    onnx.save(model, str(path))
    net = load_onnx(path)
    layers = trace_model(net)
    assert [l.kind for l in layers] == ["conv", "maxpool", "flatten", "linear", "linear"]
    assert [l.relu for l in layers] == [True, False, False, True, False]
    x = np.random.default_rng(1).uniform(-1, 1, (7, 2, 6, 6)).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = float_forward(layers, x)
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    check_trace(net, layers, x)


def _conv_model(**conv_attrs):
    w = np.random.default_rng(0).normal(size=(4, 1, 3, 3))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **conv_attrs),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw"], ["y"], name="fc", transB=1)]
    n_out = 4 * 6 * 6 if conv_attrs.get("pads") else 4 * 4 * 4
    return _graph_model(nodes, [_init("w", w), _init("fw", np.ones((3, n_out)))], (1, 6, 6),
                        (3,))


@pytest.mark.parametrize("make, message", [
    (lambda: _graph_model([helper.make_node("MaxPool", ["x"], ["y"], name="mp",
                                            kernel_shape=[2, 2], pads=[1, 1, 0, 0])], [],
                          (1, 4, 4), (1, 2, 2)),
     "node mp (MaxPool): pads [1, 1, 0, 0] are not symmetric"),
    (lambda: _graph_model([helper.make_node("LpPool", ["x"], ["y"], name="lp",
                                            kernel_shape=[2, 2])], [], (1, 4, 4), (1, 3, 3)),
     "node lp (LpPool) is not supported; supported ONNX operators"),
    (lambda: _graph_model([helper.make_node("AveragePool", ["x"], ["y"], name="avg",
                                            kernel_shape=[2, 2], pads=[1, 1, 1, 1])], [],
                          (1, 4, 4), (1, 5, 5)),
     "node avg (AveragePool): only average pooling without padding"),
    (lambda: _graph_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c1d")],
                          [_init("w", np.ones((2, 1, 3)))], (1, 8), (2, 6)),
     "the graph output 'y' has rank 3; a 1-D graph must end with (N, classes) logits"),
    (lambda: _graph_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c1d")],
                          [_init("w", np.ones((2, 1, 3)))], (1, 4, 4, 8), (2, 4, 4, 6)),
     "rank 5; the intake needs an NCHW input of rank 4, an (N, C, L) one of rank 3 (a 1-D "
     "model) or an (N, F) one of rank 2"),
    (lambda: _graph_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c2d")],
                          [_init("w", np.ones((2, 1, 1, 3)))], (1, 8), (2, 6)),
     "node c2d (Conv): a 2-D convolution in a graph with a rank-3 input"),
    (lambda: _graph_model([helper.make_node("Relu", ["x"], ["r"], name="r"),
                           helper.make_node("Reshape", ["r", "s"], ["y"], name="resh")],
                          [], (1, 4, 4), (4, 4), ints=[numpy_helper.from_array(
                              np.array([4, 4], dtype=np.int64), "s")]),
     "only a flatten to (N, -1) or (-1, K) is supported"),
])
def test_onnx_unsupported_graphs_are_refused(tmp_path, make, message):
    path = tmp_path / "bad.onnx"
    onnx.save(make(), str(path))
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        load_onnx(path)


def test_onnx_bias_folding_and_names(tmp_path):
    """An Add of a constant folds into the conv before it (also through an Identity) only
    where nothing else reads that conv's output: with a residual add reading it too, the
    graph is refused by name, not converted wrongly. A node named like a torch.nn.Module
    attribute (``training``) gets another name; a constant added after a ReLU is refused
    with a message, not a crash."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/training/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Identity", ["c"], ["i"], name="id"),
             helper.make_node("Add", ["i", "b"], ["a"], name="bias"),
             helper.make_node("Add", ["a", "c"], ["s"], name="res"),
             helper.make_node("Flatten", ["s"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw"], ["y"], name="fc", transB=1)]
    model = _graph_model(nodes, [_init("w", rng.normal(size=(2, 1, 3, 3))),
                                 _init("b", rng.normal(size=(1, 2, 1, 1))),
                                 _init("fw", rng.normal(size=(3, 2 * 4 * 4)))], (1, 4, 4), (3,))
    path = tmp_path / "fold.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedModelError, match="Add of a constant is supported only as"):
        load_onnx(path)            # the conv's output has two readers: no fold, refused
    nodes[3] = helper.make_node("Relu", ["a"], ["s"], name="relu")
    model = _graph_model(nodes, model.graph.initializer, (1, 4, 4), (3,))
    onnx.save(model, str(path))
    net = load_onnx(path)          # one reader through the Identity: folded
    assert "training_conv" in dict(net.named_children())
    x = np.random.default_rng(1).uniform(-1, 1, (3, 1, 4, 4)).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert np.allclose(float_forward(trace_model(net), x), ref, rtol=1e-4, atol=1e-4)
    nodes[2] = helper.make_node("Add", ["i", "b1d"], ["a"], name="bias")   # (C,): adds along W
    model = _graph_model(nodes, list(model.graph.initializer) + [_init("b1d", [0.5, -0.5])],
                         (1, 4, 4), (3,))
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedModelError, match="Add of a constant is supported only as"):
        load_onnx(path)
    relu_add = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                helper.make_node("Add", ["r", "k"], ["y"], name="shift")]
    onnx.save(_graph_model(relu_add, [_init("k", [0.5])], (1, 4, 4), (1, 4, 4)), str(path))
    with pytest.raises(UnsupportedModelError, match="node shift \\(Add\\)"):
        load_onnx(path)


def test_onnx_corrupt_or_missing_file(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf at all\xff\xff")
    with pytest.raises(ValueError, match="not a readable, valid ONNX model"):
        load_onnx(bad)
    with pytest.raises(ValueError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")


def test_onnx_conversion_that_disagrees_with_onnx_is_refused(tmp_path, monkeypatch):
    """The check against the reference evaluator is live: a conversion that reads an
    attribute wrongly (here: the conv's stride forced to 1) is refused."""
    from rvmpq.sw.search import onnx_intake

    path = tmp_path / "s2.onnx"
    w = np.random.default_rng(0).normal(size=(4, 1, 3, 3))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", strides=[2, 2]),
             helper.make_node("Flatten", ["c"], ["y"], name="flat")]
    onnx.save(_graph_model(nodes, [_init("w", w)], (1, 7, 7), (36,)), str(path))
    assert load_onnx(path) is not None
    real = onnx_intake._attrs
    monkeypatch.setattr(onnx_intake, "_attrs",
                        lambda n: {k: v for k, v in real(n).items() if k != "strides"})
    with pytest.raises(UnsupportedModelError, match="does not reproduce the ONNX graph"):
        load_onnx(path)


def _save_npz(path, ds, **override):
    arrays = {k: getattr(ds, k) for k in NPZ_KEYS}
    arrays.update(override)
    np.savez(path, **arrays)


def test_npz_data_set_round_trip_and_errors(tmp_path):
    ds = load_dataset("digits")
    p = tmp_path / "d.npz"
    _save_npz(p, ds)
    got = load_dataset(str(p))
    assert got.name == "d" and got.input_shape == ds.input_shape
    for k in NPZ_KEYS:
        assert np.array_equal(getattr(got, k), getattr(ds, k))
    cases = [
        ({"y_val": ds.y_val[:-1]}, "y_val has shape"),
        ({"x_test": ds.x_test[:, :, :4]}, "x_test samples are"),
        ({"x_train": ds.x_train[:, 0]}, "needs \\(N, C, H, W\\)"),
        ({"y_train": ds.y_train.astype(np.float32)}, "integer labels"),
        ({"y_test": -ds.y_test}, "negative labels"),
    ]
    for override, message in cases:
        _save_npz(p, ds, **override)
        with pytest.raises(ValueError, match=message):
            load_dataset(str(p))
    np.savez(p, x_train=ds.x_train)
    with pytest.raises(ValueError, match="missing"):
        load_dataset(str(p))
    p.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a readable .npz file"):
        load_dataset(str(p))


def test_search_onnx_model_on_npz_data_matches_builtin(tmp_path, capsys):
    """`rvmpq search --model M.onnx --data D.npz` on the trained digits-cnn exported to ONNX
    and the digits splits saved to an .npz picks what `--model digits-cnn` picks, with the same
    accuracies and costs (only the model's name differs)."""
    from rvmpq.sw.search.models import get_trained_model

    model, ds = get_trained_model("digits-cnn")
    onnx_path, npz_path = tmp_path / "digits.onnx", tmp_path / "digits.npz"
    _export(model.eval(), SHAPES["digits-cnn"], onnx_path, dynamo=False)
    _save_npz(npz_path, ds)
    common = ["--budget", "latency=0.5", "--method", "dp", "--no-qat", "--configs", "6",
              "--costs", "stand-in"]
    rc = main(["search", "--model", str(onnx_path), "--data", str(npz_path), *common,
               "-o", str(tmp_path / "onnx")])
    assert rc == 0, capsys.readouterr().err
    rc = main(["search", "--model", "digits-cnn", *common, "-o", str(tmp_path / "builtin")])
    assert rc == 0, capsys.readouterr().err
    a = json.loads((tmp_path / "onnx" / "config.json").read_text())
    b = json.loads((tmp_path / "builtin" / "config.json").read_text())
    assert a["model"] == str(onnx_path) and b["model"] == "digits-cnn"
    for key in ("validated_accuracy", "float_accuracy", "predicted_cycles", "costs"):
        assert a[key] == b[key], key
    assert [l["w_bits"] for l in a["layers"]] == [l["w_bits"] for l in b["layers"]]
    assert [l["name"] for l in a["layers"]] == [l["name"] for l in b["layers"]]


def test_search_onnx_model_needs_matching_data(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    _export(build_model("mnist1d-cnn").eval(), SHAPES["mnist1d-cnn"], path, dynamo=False)
    args = ["--budget", "latency=0.8", "--method", "greedy", "--no-qat", "--configs", "4",
            "--costs", "stand-in", "-o", str(tmp_path / "out")]
    rc = main(["search", "--model", str(path), "--data", "digits", *args])
    err = capsys.readouterr().err
    assert rc == 2 and "takes (C, H, W) = (1, 1, 40)" in err and "(1, 8, 8)" in err
    with pytest.raises(SystemExit):
        main(["search", "--model", str(path), "--data", "cifar10", *args])
    assert "PATH of an .npz file" in capsys.readouterr().err
    rc = main(["search", "--model", "digits-cnn", "--data", "mnist1d", *args])
    assert rc == 2 and "uses its own data set (digits)" in capsys.readouterr().err
    ds = load_dataset("mnist1d")
    npz = tmp_path / "labels.npz"
    _save_npz(npz, ds, y_test=np.where(ds.y_test == 9, 12, ds.y_test))
    rc = main(["search", "--model", str(path), "--data", str(npz), *args])
    assert rc == 2 and "has label 12, the model 10 outputs" in capsys.readouterr().err
    assert not (tmp_path / "out" / "config.json").exists()


def test_deploy_data_errors_are_deploy_errors(tmp_path):
    """`rvmpq deploy --data` with a missing or malformed .npz, a model file without --data and
    a built-in model with another data set are DeployErrors (exit status 2, one line), not a
    traceback or a run on the wrong data."""
    from rvmpq.sw.deploy import DeployError, _test_data

    with pytest.raises(DeployError, match=r"uses its own data set \(digits\)"):
        _test_data("digits-cnn", "mnist1d", 2)
    with pytest.raises(DeployError, match="is not built in"):
        _test_data("m.onnx", None, 2)
    assert _test_data("digits-cnn", "digits", 2)[0].name == "digits"

    with pytest.raises(DeployError, match="no such file"):
        _test_data("m.onnx", str(tmp_path / "missing.npz"), 2)
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 1, 4, 4)))
    with pytest.raises(DeployError, match="missing"):
        _test_data("m.onnx", str(tmp_path / "bad.npz"), 2)
