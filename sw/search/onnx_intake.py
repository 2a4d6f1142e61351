"""ONNX intake: an ``.onnx`` file becomes a torch module that :func:`~.models.trace_model` takes.

The search works on torch modules (QAT, Hessian traces and the float reference run in torch),
so an ONNX graph is converted into one: each supported node becomes the matching ``torch.nn``
layer, with the weights of the graph's initializers, and the module's ``forward`` runs the
nodes in the graph's (topological) order. The usual intake then traces that module, with the
same rules and error messages as for a module written in PyTorch (README, "Bring your own
model").

Supported nodes (opset 11 and later, as written by ``torch.onnx.export`` with either exporter):
``Conv`` (2-D or 1-D, any ``pads``, ``group`` and ``dilations``; see
:func:`~.models.trace_model` for how those run), ``Pad`` (zeros in front of a ``Conv``,
``mode`` constant; an ONNX ``Conv`` with pads that differ between the sides of an axis
becomes such a padding and the conv), ``Gemm`` (``transA = 0``),
``MatMul`` by a constant matrix (a bias may follow as an ``Add`` of a constant), ``Relu``,
``Clip`` to ``[0, m]`` (``ReLU6``; a ReLU with an upper bound),
``BatchNormalization`` (inference form), ``MaxPool``, ``AveragePool`` (no padding),
``GlobalAveragePool`` and ``ReduceMean`` over the spatial axes (both global average pooling;
see :func:`~.models.trace_model` for how average pooling runs), ``GlobalMaxPool`` and
``ReduceMax`` over the spatial axes (global max pooling), ``Add`` of two tensors (a
residual add), ``Concat`` of computed tensors along the channels (``axis = 1``),
``Flatten`` (``axis = 1``), ``Reshape`` to ``(N, -1)`` / ``(-1, K)`` (a flatten),
``Identity`` and ``Dropout`` (skipped), ``Constant``, and a ``Softmax`` / ``LogSoftmax`` over
the classes of 2-D logits as the graph's last node (left out of the integer model, as a final
softmax in PyTorch is: :data:`~.models.OUTPUT_FNS`). A node whose inputs are all constants
is evaluated once, at conversion, by ONNX's reference evaluator (constant folding); ``Shape``
of a computed tensor gives its shape with the batch size left open, so the ``Shape`` /
``Gather`` / ``Unsqueeze`` / ``Concat`` that ``x.view(x.size(0), -1)`` exports as folds into a
flatten's target shape (a shape that depends on the batch size in any other way is refused).
A graph exported with a fixed batch size ``B`` may flatten with a reshape to ``(B, -1)`` or
``(B, K)``; the converted module takes any batch size. The graph needs one input of rank 4
(NCHW) or 3 (``(N, C, L)``, a 1-D model: its 1-D ``Conv`` / ``MaxPool`` / ``AveragePool`` become
2-D layers of ``(1, k)`` kernels, as the built-in MNIST-1D models are written, and the converted
module takes the data's ``(N, C, 1, L)`` samples; ``OnnxNet.one_d``) or 2 (``(N, F)``:
an MLP's, whose module takes ``(N, F)`` batches, the data's samples flattened, or one that
every reader of it, an ``Unsqueeze`` / ``Reshape``, gives one ``(N, C, L)`` or
``(N, C, H, W)`` layout, which the module takes instead: ``x.unsqueeze(1)`` of ``(N, L)``
signals; ``OnnxNet.flat_input``) and one output (a 1-D graph's of rank 2, the logits).
``Squeeze`` / ``Unsqueeze``, and a ``Reshape`` that is no flatten, are taken where they only
add or remove axes of size 1 behind the channels (the identity: ``(N, C, L)`` <->
``(N, C, 1, L)``, as torch's exporter writes 1-D pooling, or ``x.view(-1, 1, x.shape[-1])``
of a 1-D input) or leave ``(N, K)`` (a flatten: ``x.squeeze(-1)`` after a global pooling); so
is a ``Gather`` of the one element of a size-1 axis (``x[:, :, 0]``).

After the conversion, :func:`load_onnx` runs the module and ONNX's own reference evaluator
(``onnx.reference``) on the same random batch and refuses the file unless they agree, so a
node whose attributes the conversion read wrongly cannot pass silently.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np

from .models import UnsupportedModelError, _geom, size1_reshape

__all__ = ["BATCH_PROBES", "FLATTEN_HINT", "SUPPORTED_OPS", "load_onnx", "onnx_to_torch"]

#: ONNX operators the intake converts (everything else is refused, naming the node).
#: Any other node is taken only when all its inputs are constants (it is folded), and
#: ``Shape`` of a computed tensor only as part of a shape computation (see the module docstring).
SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "Relu", "BatchNormalization", "MaxPool",
                 "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax",
                 "Add", "Flatten", "Reshape", "Identity", "Dropout", "Constant", "Shape", "Clip",
                 "Softmax", "LogSoftmax", "Squeeze", "Unsqueeze", "Gather", "Concat", "Pad")


#: Added to the error for a ``Reshape`` that is not a flatten.
FLATTEN_HINT = ("the reshapes supported flatten each sample: torch.flatten(x, 1), nn.Flatten(), "
                "x.view(x.size(0), -1) or x.view(-1, K)")

#: Two stand-ins for the batch size while shape computations are folded: a shape value that is
#: the first under one and the second under the other is the batch size, and one that differs
#: in any other way depends on it (and cannot be a flatten's target shape).
BATCH_PROBES = (9973, 7919)

#: Operators that are never folded (not deterministic).
_NOT_FOLDED = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
               "Multinomial", "Bernoulli")


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


_RESERVED = {"steps", "input_name", "output_name", "input_shape", "batch", "one_d",
             "flat_input"}


def _ident(node, used: set) -> str:
    """A child-module name from an ONNX node's name, unique within ``used``: the exporters'
    ``/layer1/conv/Conv`` becomes ``layer1_conv`` (``/0/Conv``: ``0``, as in the
    ``nn.Sequential`` it came from); an unnamed node gets its operator's name."""
    import torch.nn as nn

    name = node.name or ""
    if name.endswith("/" + node.op_type):
        name = name[:-len(node.op_type) - 1]
    base = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_") or node.op_type.lower()
    if base in _RESERVED or hasattr(nn.Module(), base):
        base += "_" + node.op_type.lower()
    cand, i = base, 1
    while cand in used:
        i += 1
        cand = f"{base}_{i}"
    used.add(cand)
    return cand


def _module_class():
    import torch
    import torch.nn as nn

    class OnnxNet(nn.Module):
        """A torch module converted from an ONNX graph (:func:`onnx_to_torch`).

        ``steps`` lists ``(kind, child, inputs, output)`` in graph order: ``kind`` is
        ``"module"`` (run the child named ``child`` on ``inputs[0]``), ``"add"`` (the sum of
        the two inputs), ``"concat"`` (the inputs concatenated along the channels) or
        ``"alias"`` (pass ``inputs[0]`` through).
        """

        def __init__(self, input_name, output_name, steps, modules, input_shape, batch=None,
                     one_d=False, flat_input=False):
            super().__init__()
            for name, m in modules:          # registered in graph order: the chain intake
                self.add_module(name, m)     # walks the children in this order
            self.steps = steps
            self.input_name, self.output_name = input_name, output_name
            #: ``(C, H, W)`` of one sample, as the ONNX graph declares it.
            self.input_shape = input_shape
            #: The batch size the graph's input declares, where it is a fixed number (the
            #: module itself takes any batch size), else ``None``.
            self.batch = batch
            #: True for a 1-D graph (an ``(N, C, L)`` input): the module takes ``(N, C, 1, L)``
            #: (``input_shape`` is ``(C, 1, L)``) and runs 2-D layers of ``(1, k)`` kernels.
            self.one_d = one_d
            #: True where the graph's input is ``(N, F)``: an MLP's module takes ``(N, F)``
            #: batches (``input_shape`` is ``(F,)``; the intake flattens the data's samples
            #: for it, ``models._input_form``), a CNN's takes them in the layout the graph's
            #: ``Unsqueeze`` / ``Reshape`` of its input gives them (``input_shape`` is that
            #: one, ``(C, 1, L)`` for a 1-D graph).
            self.flat_input = flat_input

        def forward(self, x):
            """Run the converted graph on an ``(N, C, H, W)`` batch."""
            env = {self.input_name: x}
            for kind, child, ins, out in self.steps:
                if kind == "module":
                    env[out] = getattr(self, child)(env[ins[0]])
                elif kind == "add":
                    env[out] = env[ins[0]] + env[ins[1]]
                elif kind == "concat":
                    env[out] = torch.cat([env[i] for i in ins], 1)
                else:
                    env[out] = env[ins[0]]
            return env[self.output_name]

    return OnnxNet


def onnx_to_torch(model):
    """Convert a loaded ``onnx.ModelProto`` into a torch module (no numerical check; see
    :func:`load_onnx`).

    Raises
    ------
    UnsupportedModelError
        Naming the node (and its operator) that cannot be converted, and what is supported.
    """
    import torch
    import torch.nn as nn
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise UnsupportedModelError(
            f"the ONNX graph has {len(inputs)} inputs ({[i.name for i in inputs]}); the intake "
            "needs exactly one (an NCHW batch)")
    if len(g.output) != 1:
        raise UnsupportedModelError(
            f"the ONNX graph has {len(g.output)} outputs; the intake needs exactly one (the "
            "logits)")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) not in (2, 3, 4):
        raise UnsupportedModelError(
            f"input {inputs[0].name!r} has rank {len(shape)}; the intake needs an NCHW input of "
            "rank 4, an (N, C, L) one of rank 3 (a 1-D model) or an (N, F) one of rank 2 (an "
            "MLP, or a model that reshapes it to one of the others first)")
    if any(d is None or d < 1 for d in shape[1:]):
        raise UnsupportedModelError(
            f"input {inputs[0].name!r} has shape {shape}: the channel and spatial sizes must be "
            "fixed numbers (only the batch size may be symbolic)")
    batch = shape[0] if shape[0] is not None and shape[0] > 0 else None
    # an (N, F) input: the layout its Unsqueeze / Reshape readers give it (x.unsqueeze(1) of
    # a 1-D model's signals), which the module takes instead; else an MLP's flat features
    flat_input = len(shape) == 2
    layout = _flat_input_layout(model, inputs[0].name, shape[1]) if flat_input else None
    if layout is not None:
        shape = [shape[0], *layout[0]]
    # a 1-D graph's tensors of rank 3, (N, C, L), run as (N, C, 1, L); ``rank`` is the ONNX one
    one_d = len(shape) == 3
    in_shape = (shape[1], 1, shape[2]) if one_d else tuple(shape[1:])
    nsp = len(shape) - 2                  # spatial axes of a conv / pooling
    rank = {inputs[0].name: 2 if flat_input else len(shape)}
    consts2: dict = {}      # constants that differ under the second batch probe: that value
    readers: dict = {}
    for n in g.node:
        for i in n.input if n.op_type != "Shape" else ():    # Shape reads no values
            readers[i] = readers.get(i, 0) + 1
    steps, modules, used = [], [], set()
    made: dict = {}                       # tensor name -> (module, child name) that produced it

    def where(n):
        return f"node {n.name or '(unnamed)'} ({n.op_type})"

    def const(n, name, what):
        if name not in consts:
            raise UnsupportedModelError(f"{where(n)}: its {what} ({name!r}) must be a constant")
        return consts[name]

    def node_pads(n, a) -> list:
        """The ``pads`` of a Conv / pooling node, ``[begin..., end...]`` over its spatial axes
        (explicit, or none)."""
        auto = a.get("auto_pad", "NOTSET")
        if auto not in ("NOTSET", "VALID"):
            raise UnsupportedModelError(f"{where(n)}: auto_pad={auto} is not supported; give "
                                        "explicit pads")
        return list(a.get("pads", [0] * 2 * nsp)) if auto == "NOTSET" else [0] * 2 * nsp

    def sym_pads(n, a) -> tuple:
        """``(pad_h, pad_w)`` of a pooling node: explicit symmetric pads, or none (a 1-D
        node's ``(0, pad)``)."""
        pads = node_pads(n, a)
        if pads[:nsp] != pads[nsp:]:
            raise UnsupportedModelError(f"{where(n)}: pads {pads} are not symmetric")
        return _geom(pads[:nsp], one_d, 0)

    def torch_pad(begin, end) -> tuple:
        """ONNX pads of the spatial axes (``begin``, ``end``: height then width, or the
        length) as torch lists them for ``nn.ZeroPad2d``: (left, right, top, bottom)."""
        return (begin[-1], end[-1], *((0, 0) if one_d else (begin[0], end[0])))

    def node_axes(n, a, ins) -> list:
        """The ``axes`` of a Reduce / Squeeze / Unsqueeze node: its attribute (opset < 13 /
        18) or its constant second input; ``[]`` where it has neither."""
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1]:
            axes = const(n, ins[1], "axes")
        return [int(v) for v in np.asarray(axes if axes is not None else []).reshape(-1)]

    def spatial(n, k, what):
        """Refuse a ``what`` whose kernel has not the graph's spatial rank."""
        if nsp == 0:
            raise UnsupportedModelError(
                f"{where(n)}: a {what} in a graph with an (N, F) input; the intake takes one "
                "where every reader of the input is an Unsqueeze / Reshape to one (N, C, L) or "
                "(N, C, H, W) shape (x.unsqueeze(1) of (N, L) signals)")
        if len(k) != nsp:
            raise UnsupportedModelError(
                f"{where(n)}: a {len(k)}-D {what} in a graph with a rank-{nsp + 2} input; the "
                "intake takes 2-D ones on (N, C, H, W), 1-D ones on (N, C, L)")

    def fold(n):
        """Evaluate a node whose inputs are all constants, once per batch probe."""
        from onnx.reference import ReferenceEvaluator

        def run(values):
            sub = helper.make_graph(
                [n], "fold", [], [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                                  for o in n.output if o],
                initializer=[numpy_helper.from_array(np.asarray(v), i)
                             for i, v in zip(n.input, values) if i])
            m = helper.make_model(sub, opset_imports=model.opset_import)
            m.ir_version = model.ir_version
            return ReferenceEvaluator(m).run(None, {})

        try:
            first = run([consts[i] if i else None for i in n.input])
            second = (run([consts2.get(i, consts[i]) if i else None for i in n.input])
                      if any(i in consts2 for i in n.input) else first)
        except Exception as exc:  # noqa: BLE001 - the reference evaluator's own failures
            raise UnsupportedModelError(f"{where(n)}: its inputs are constants, but ONNX's "
                                        f"reference evaluator cannot evaluate it "
                                        f"({type(exc).__name__}: {exc})") from None
        for o, v1, v2 in zip([o for o in n.output if o], first, second):
            consts[o] = np.asarray(v1)
            if np.shape(v1) != np.shape(v2) or not np.array_equal(v1, v2):
                consts2[o] = np.asarray(v2)

    # one sample's ONNX shape, by tensor
    shape_of: dict = {inputs[0].name: (int(np.prod(shape[1:])),) if flat_input else
                      tuple(shape[1:])}

    def sample_shape(t) -> tuple:
        """The shape of one sample of the computed tensor ``t``: the graph so far, run on a
        batch of one zero sample (once per tensor; an alias's is set where it is made)."""
        if t not in shape_of:
            part = _module_class()(inputs[0].name, t, list(steps), list(modules),
                                   in_shape).eval()
            with torch.no_grad():
                got = tuple(part(torch.zeros((1, *in_shape))).shape[1:])
            # a 1-D graph's (N, C, L) runs as (N, C, 1, L)
            shape_of[t] = (got[0], got[2]) if one_d and rank[t] == 3 else got
        return shape_of[t]

    def reshaped(n, src, out_shape, refusal: str) -> None:
        """A node that only reshapes (one sample's shape ``sample_shape(src)`` becomes
        ``out_shape``): an alias or a flatten as :func:`~.models.size1_reshape` says (the
        module's tensors keep their ``(N, C, H, W)`` / ``(N, C, 1, L)`` shape); else refused
        with ``refusal``."""
        src_shape, out_shape = sample_shape(src), tuple(int(v) for v in out_shape)
        out, kind = n.output[0], size1_reshape(src_shape, out_shape)
        if kind == "alias":
            steps.append(("alias", None, [src], out))
            shape_of[out] = out_shape
        elif kind == "flatten":
            add(n, nn.Flatten(), src)
        else:
            if flat_input and src == inputs[0].name:
                refusal += (" (an (N, F) input is taken in an (N, C, L) / (N, C, H, W) layout "
                            "where every reader of it is an Unsqueeze / Reshape to that shape)")
            raise UnsupportedModelError(
                f"{where(n)}: {refusal}; here one sample's shape {src_shape} becomes "
                f"{out_shape}")
        rank[out] = len(out_shape) + 1

    def add(n, m, src, out=None):
        child = _ident(n, used)
        modules.append((child, m))
        steps.append(("module", child, [src], out or n.output[0]))
        made[out or n.output[0]] = (m, child)

    for n in g.node:
        a, op = _attrs(n), n.op_type
        ins = list(n.input)
        if op == "Add" and ins[0] in consts:      # a constant first: the same bias add
            ins.reverse()
        if op == "Constant":
            if "value" not in a:
                raise UnsupportedModelError(f"{where(n)}: only the 'value' form is supported")
            consts[n.output[0]] = numpy_helper.to_array(a["value"])
            continue
        if ins and all(i in consts for i in ins if i) and op not in _NOT_FOLDED:
            fold(n)                                  # e.g. a flatten's target shape
            continue
        if op not in SUPPORTED_OPS:
            raise UnsupportedModelError(
                f"{where(n)} is not supported; supported ONNX operators: {list(SUPPORTED_OPS)}, "
                "and any node whose inputs are all constants")
        src = ins[0]
        if src in consts:
            raise UnsupportedModelError(f"{where(n)}: its input {src!r} is a constant; the "
                                        "intake needs it computed from the network input")
        if src not in rank:
            raise UnsupportedModelError(f"{where(n)}: input {src!r} is not computed before it")
        out = n.output[0]
        if layout is not None and n.name in layout[1]:
            # the reshape of the (N, F) input to the layout the module takes it in
            steps.append(("alias", None, [src], out))
            shape_of[out], rank[out] = tuple(layout[0]), len(layout[0]) + 1
            continue
        if op == "Shape":
            full = np.array([BATCH_PROBES[0], *sample_shape(src)], dtype=np.int64)
            cut = slice(a.get("start", 0), a.get("end"))
            consts[out] = full[cut].copy()
            full[0] = BATCH_PROBES[1]
            if np.any(full[cut] != consts[out]):
                consts2[out] = full[cut]
        elif op == "Conv":
            w = const(n, n.input[1], "weight")
            spatial(n, w.shape[2:], "convolution")
            if one_d:
                w = w[:, :, None, :]
            pads = node_pads(n, a)
            if pads[:nsp] != pads[nsp:]:       # a zero padding in front, which the intake
                p = torch_pad(pads[:nsp], pads[nsp:])     # adds to the conv's padding
                add(types.SimpleNamespace(name=f"{n.name or 'conv'}_pad", op_type="Pad"),
                    nn.ZeroPad2d(p), src, out=f"{out}/pad")
                src, pads = f"{out}/pad", [0] * 2 * nsp
            pads = _geom(pads[:nsp], one_d, 0)
            group = int(a.get("group", 1))
            m = nn.Conv2d(w.shape[1] * group, w.shape[0], tuple(w.shape[2:]),
                          stride=_geom(a.get("strides", [1] * nsp), one_d), padding=pads,
                          dilation=_geom(a.get("dilations", [1] * nsp), one_d), groups=group,
                          bias=len(n.input) > 2 and bool(n.input[2]))
            m.weight.data = torch.tensor(w, dtype=torch.float32)
            if m.bias is not None:
                m.bias.data = torch.tensor(const(n, n.input[2], "bias"),
                                           dtype=torch.float32).reshape(-1)
            add(n, m, src)
            rank[out] = nsp + 2
        elif op in ("Gemm", "MatMul"):
            if op == "Gemm" and int(a.get("transA", 0)):
                raise UnsupportedModelError(f"{where(n)}: transA=1 is not supported")
            if rank[src] != 2:
                raise UnsupportedModelError(f"{where(n)}: its input has rank {rank[src]}; "
                                            "flatten it to (N, features) first")
            w = const(n, n.input[1], "weight").astype(np.float64)
            if w.ndim != 2:
                raise UnsupportedModelError(f"{where(n)}: the weight must be a matrix")
            if op == "MatMul" or not int(a.get("transB", 0)):
                w = w.T                                   # (out, in), as nn.Linear keeps it
            w = w * float(a.get("alpha", 1.0))
            bias = np.zeros(w.shape[0])
            if op == "Gemm" and len(n.input) > 2 and n.input[2]:
                c = np.asarray(const(n, n.input[2], "bias"), dtype=np.float64).reshape(-1)
                if c.size not in (1, w.shape[0]):
                    raise UnsupportedModelError(f"{where(n)}: a bias of {c.size} values for "
                                                f"{w.shape[0]} outputs")
                bias = np.broadcast_to(c * float(a.get("beta", 1.0)), (w.shape[0],))
            m = nn.Linear(w.shape[1], w.shape[0])
            m.weight.data = torch.tensor(w, dtype=torch.float32)
            m.bias.data = torch.tensor(np.array(bias), dtype=torch.float32)
            add(n, m, src)
            rank[out] = 2
        elif op == "Add" and ins[1] in consts:
            # a bias after MatMul / a bias-less Conv: fold it into that layer
            prod = made.get(src)
            m = prod[0] if prod else None
            c = np.asarray(consts[ins[1]], dtype=np.float64)
            nout = m.out_features if isinstance(m, nn.Linear) else (
                m.out_channels if isinstance(m, nn.Conv2d) else 0)
            # ONNX broadcasts from the last axis: a per-channel constant is (C, 1, 1) after a
            # conv (a (C,) one would add along W) and (C,) after a linear
            per_channel = np.size(c) == 1 or (
                isinstance(m, nn.Conv2d) and c.ndim >= 3 and c.shape[-3:] == (nout, 1, 1)) or (
                isinstance(m, nn.Linear) and c.ndim >= 1 and c.shape[-1] == nout)
            if not isinstance(m, (nn.Linear, nn.Conv2d)) or readers.get(src, 0) != 1 or \
                    not per_channel or np.size(c) not in (1, nout):
                raise UnsupportedModelError(
                    f"{where(n)}: an Add of a constant is supported only as the per-channel bias "
                    "of the Conv/Gemm/MatMul directly before it")
            if m.bias is None:
                m.bias = nn.Parameter(torch.zeros(nout))
            m.bias.data = m.bias.data + torch.tensor(np.broadcast_to(c.reshape(-1), (nout,)),
                                                     dtype=torch.float32)
            steps.append(("alias", None, [src], out))
            made[out] = prod
            rank[out] = rank[src]
        elif op == "Add":
            b = ins[1]
            if b not in rank:
                raise UnsupportedModelError(f"{where(n)}: input {b!r} is not computed before it")
            steps.append(("add", None, [src, b], out))
            rank[out] = rank[src]
        elif op == "Concat":
            ax = int(a.get("axis", 0))
            if ax % rank[src] != 1:
                raise UnsupportedModelError(
                    f"{where(n)}: a concatenation along axis {ax} of rank-{rank[src]} tensors; "
                    "supported: along the channels (axis 1)")
            for b in ins[1:]:
                if b in consts or b not in rank:
                    raise UnsupportedModelError(
                        f"{where(n)}: input {b!r} is "
                        f"{'a constant' if b in consts else 'not computed before it'}; a "
                        "concatenation of computed tensors only is supported")
            steps.append(("concat", None, ins, out))
            rank[out] = rank[src]
        elif op == "Relu":
            add(n, nn.ReLU(), src)
            rank[out] = rank[src]
        elif op == "Clip":                    # torch writes ReLU6 / Hardtanh / clamp this way
            lo, hi = a.get("min"), a.get("max")          # opset < 11: attributes
            if len(ins) > 1 and ins[1]:
                lo = float(np.asarray(const(n, ins[1], "min")))
            if len(ins) > 2 and ins[2]:
                hi = float(np.asarray(const(n, ins[2], "max")))
            if lo != 0 or hi is not None and not hi > 0:
                raise UnsupportedModelError(
                    f"{where(n)}: a clip to [{lo}, {hi}]; supported: [0, m] with m > 0 (a ReLU "
                    "with an upper bound, as ReLU6) or [0, none] (a ReLU)")
            add(n, nn.ReLU() if hi is None else nn.Hardtanh(0.0, hi), src)
            rank[out] = rank[src]
        elif op == "BatchNormalization":
            if int(a.get("training_mode", 0)) or len(n.output) > 1 and any(n.output[1:]):
                raise UnsupportedModelError(f"{where(n)}: the training form is not supported; "
                                            "export the model in eval mode")
            scale, bias, mean, var = (const(n, n.input[i], what) for i, what in
                                      ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
            m = (nn.BatchNorm2d if rank[src] > 2 else nn.BatchNorm1d)(
                scale.size, eps=float(a.get("epsilon", 1e-5)))
            m.weight.data = torch.tensor(scale, dtype=torch.float32)
            m.bias.data = torch.tensor(bias, dtype=torch.float32)
            m.running_mean.data = torch.tensor(mean, dtype=torch.float32)
            m.running_var.data = torch.tensor(var, dtype=torch.float32)
            add(n, m, src)
            rank[out] = rank[src]
        elif op == "Pad":
            mode = a.get("mode", "constant")
            pads = [int(v) for v in const(n, ins[1], "pads").reshape(-1)] if len(ins) > 1 \
                else list(a.get("pads", []))                  # an input from opset 11 on
            value = float(np.asarray(const(n, ins[2], "constant_value")).reshape(-1)[0]) \
                if len(ins) > 2 and ins[2] else float(a.get("value", 0.0))
            r = rank[src]
            if len(ins) > 3 and ins[3] or r not in (3, 4) or len(pads) != 2 * r or \
                    pads[:2] + pads[r:r + 2] != [0] * 4 or mode != "constant":
                raise UnsupportedModelError(
                    f"{where(n)}: pads {pads} (mode {mode!r}); supported: a constant padding of "
                    "the spatial axes, without axes input (a zero padding in front of a conv)")
            add(n, nn.ConstantPad2d(torch_pad(pads[2:r], pads[r + 2:]), value), src)
            rank[out] = r
        elif op == "MaxPool":
            k = tuple(a.get("kernel_shape", []))
            spatial(n, k, "max pooling")
            pads = sym_pads(n, a)
            if len(n.output) > 1 and any(n.output[1:]):
                raise UnsupportedModelError(f"{where(n)}: the Indices output is not supported")
            add(n, nn.MaxPool2d(_geom(k, one_d), _geom(a.get("strides", [1] * nsp), one_d), pads,
                                _geom(a.get("dilations", [1] * nsp), one_d),
                                ceil_mode=bool(a.get("ceil_mode", 0))), src)
            rank[out] = nsp + 2
        elif op == "AveragePool":
            k = tuple(a.get("kernel_shape", []))
            spatial(n, k, "average pooling")
            if any(sym_pads(n, a)) or int(a.get("ceil_mode", 0)) \
                    or any(d != 1 for d in a.get("dilations", [1])):
                raise UnsupportedModelError(f"{where(n)}: only average pooling without "
                                            "padding, ceil_mode or dilation is supported")
            add(n, nn.AvgPool2d(_geom(k, one_d), _geom(a.get("strides", [1] * nsp), one_d)), src)
            rank[out] = nsp + 2
        elif op in ("GlobalAveragePool", "GlobalMaxPool"):
            add(n, (nn.AdaptiveAvgPool2d if op == "GlobalAveragePool" else
                    nn.AdaptiveMaxPool2d)(1), src)
            rank[out] = rank[src]
        elif op in ("ReduceMean", "ReduceMax"):
            # torch's default exporter writes AdaptiveAvgPool2d(1) / x.mean((2, 3)) and
            # AdaptiveMaxPool2d(1) / x.amax((2, 3)) this way
            axes = sorted(v % rank[src] for v in node_axes(n, a, ins))
            what = "mean" if op == "ReduceMean" else "max"
            if rank[src] < 3 or axes != list(range(2, rank[src])):
                raise UnsupportedModelError(
                    f"{where(n)}: only a {what} over the spatial axes (global "
                    f"{'average' if what == 'mean' else 'max'} pooling) is supported")
            add(n, (nn.AdaptiveAvgPool2d if what == "mean" else nn.AdaptiveMaxPool2d)(1), src)
            rank[out] = rank[src]
            if not int(a.get("keepdims", 1)):          # (N, C): pooled, then flattened
                steps[-1] = ("module", steps[-1][1], [src], out + "/pooled")
                child = _ident(n, used)
                modules.append((child, nn.Flatten()))
                steps.append(("module", child, [out + "/pooled"], out))
                rank[out] = 2
        elif op in ("Softmax", "LogSoftmax"):
            # over axis 1 of 2-D logits; opsets before 13 (default axis 1) coerce to 2-D at
            # the axis, later ones (default -1) run along it: the same on a 2-D tensor
            axis = int(a.get("axis", 1))
            if rank[src] != 2 or axis not in (1, -1):
                raise UnsupportedModelError(
                    f"{where(n)}: a {op} over axis {axis} of a rank-{rank[src]} tensor; "
                    "supported: over the classes (axis 1 or -1) of 2-D logits")
            add(n, (nn.Softmax if op == "Softmax" else nn.LogSoftmax)(dim=1), src)
            rank[out] = 2
        elif op == "Flatten":
            if int(a.get("axis", 1)) != 1:
                raise UnsupportedModelError(f"{where(n)}: only axis=1 (keep the batch) is "
                                            "supported")
            add(n, nn.Flatten(), src)
            rank[out] = 2
        elif op == "Reshape":
            shp = []
            for v1, v2 in zip(np.asarray(const(n, n.input[1], "shape")).reshape(-1),
                              np.asarray(consts2.get(n.input[1], consts[n.input[1]])
                                         ).reshape(-1)):
                if v1 != v2 and (v1, v2) != BATCH_PROBES:
                    raise UnsupportedModelError(
                        f"{where(n)}: its target shape depends on the batch size other than "
                        f"by copying it ({FLATTEN_HINT})")
                if int(a.get("allowzero", 0)) and v1 == 0:
                    raise UnsupportedModelError(f"{where(n)}: a reshape to a size of 0")
                shp.append(0 if v1 != v2 else int(v1))
            if shp and batch is not None and shp[0] == batch:
                shp[0] = 0                  # exported at a fixed batch size: keep the batch
            if len(shp) != 2 and shp[0] in (0, -1) and shp.count(-1) <= 1:
                # not a flatten: a reshape that keeps each sample's values in order
                known = sample_shape(src)
                feats = int(np.prod(known))
                dims = [known[k - 1] if v == 0 and k - 1 < len(known) else v
                        for k, v in enumerate(shp) if k]
                if -1 in dims:
                    rest = int(np.prod([v for v in dims if v != -1]))
                    dims[dims.index(-1)] = feats // rest if rest and feats % rest == 0 else -1
                if shp[0] == -1 and int(np.prod(dims)) != feats or -1 in dims:
                    raise UnsupportedModelError(
                        f"{where(n)}: a reshape to {shp} of samples of {feats} values; a "
                        f"reshape keeps each sample's values together ({FLATTEN_HINT})")
                reshaped(n, src, dims, f"a reshape to {shp}; supported: a flatten to (N, -1) "
                         "or (-1, K), or a reshape that only adds or removes axes of size 1 "
                         f"behind the channels ({FLATTEN_HINT})")
                continue
            if len(shp) != 2 or not (shp[0] in (0, -1) and shp[1] > 0 or shp == [0, -1]):
                raise UnsupportedModelError(
                    f"{where(n)}: a reshape to {shp}; only a flatten to (N, -1) or (-1, K) is "
                    f"supported ({FLATTEN_HINT})")
            feats = int(np.prod(sample_shape(src)))
            if shp[1] > 0 and shp[1] != feats:
                raise UnsupportedModelError(
                    f"{where(n)}: a reshape to {shp} of samples of {feats} values; a flatten "
                    f"keeps each sample's values together ({FLATTEN_HINT})")
            add(n, nn.Flatten(), src)
            rank[out] = 2
        elif op in ("Unsqueeze", "Squeeze"):
            # axes of size 1 behind the channels: a 1-D graph's (N, C, L) runs as (N, C, 1, L)
            # (torch's dynamo exporter writes AdaptiveMaxPool1d(1) with an Unsqueeze of axis
            # 2), x.squeeze(-1) after a global pooling is a flatten (reshaped)
            axes = node_axes(n, a, ins)
            full = [1, *sample_shape(src)]          # the batch axis, then one sample's
            if op == "Squeeze":
                axes = sorted({v % len(full) for v in axes} if axes else
                              {k for k, v in enumerate(full) if k and v == 1})
                if 0 in axes or any(full[k] != 1 for k in axes):
                    raise UnsupportedModelError(
                        f"{where(n)}: axes {axes} of a tensor of shape (N, "
                        f"{', '.join(map(str, full[1:]))}); supported: axes of size 1 behind "
                        "the channels")
                res = [v for k, v in enumerate(full) if k not in axes]
            else:
                r_out = len(full) + len(axes)
                axes = sorted(v % r_out for v in axes)
                res = list(full)
                for k in axes:
                    res.insert(k, 1)
                if 0 in axes:
                    raise UnsupportedModelError(f"{where(n)}: an Unsqueeze of axis 0 (the "
                                                "batch)")
            reshaped(n, src, res[1:], f"axes {axes} of a rank-{rank[src]} tensor; supported: "
                     "axes of size 1 behind the channels")
        elif op == "Gather":
            # x[:, :, 0] of a pooled (N, C, 1): the only element along a size-1 axis
            full = [1, *sample_shape(src)]
            axis = int(a.get("axis", 0)) % len(full)
            idx = np.asarray(const(n, ins[1], "indices"))
            if axis == 0 or full[axis] != 1 or idx.size != 1 or \
                    int(idx.reshape(-1)[0]) not in (0, -1):
                raise UnsupportedModelError(
                    f"{where(n)}: indices {idx.tolist()} along axis {axis} of a tensor of shape "
                    f"(N, {', '.join(map(str, full[1:]))}); supported: the one element of an "
                    "axis of size 1 behind the channels (x[:, :, 0] of an (N, C, 1) tensor)")
            res = full if idx.ndim else full[:axis] + full[axis + 1:]
            reshaped(n, src, res[1:], f"indices along axis {axis} of a rank-{rank[src]} tensor; "
                     "supported: axes of size 1 behind the channels")
        else:                                       # Identity, Dropout (inference: identity)
            if op == "Dropout" and len(n.output) > 1 and any(n.output[1:]):
                raise UnsupportedModelError(f"{where(n)}: the mask output is not supported")
            steps.append(("alias", None, [src], out))
            if src in made and readers.get(src, 0) == 1:
                made[out] = made[src]     # a bias after the alias still folds into the layer
            rank[out] = rank[src]
    out_name = g.output[0].name
    if out_name not in rank:
        raise UnsupportedModelError(f"the graph output {out_name!r} is not computed by a "
                                    "supported node")
    if one_d and rank[out_name] != 2:
        raise UnsupportedModelError(
            f"the graph output {out_name!r} has rank {rank[out_name]}; a 1-D graph must end "
            "with (N, classes) logits (a Gemm / MatMul after a flatten)")
    return _module_class()(inputs[0].name, out_name, steps, modules, in_shape, batch,
                           one_d, flat_input).eval()


def _flat_input_layout(model, name: str, features: int):
    """``(shape, nodes)`` for an ``(N, F)`` graph input ``name`` whose every reader is an
    ``Unsqueeze`` / ``Reshape`` to one ``(N, C, L)`` or ``(N, C, H, W)`` shape of ``F``
    values (a ``Shape`` of it reads no values; the shape from ONNX shape inference with data
    propagation, so ``x.view(x.size(0), 1, -1)``'s computed one counts, its one ``-1``
    resolved from ``F``): ``shape`` is one sample's, ``nodes`` the readers' names. ``None``
    where the input has another reader (an MLP's ``Gemm``) or the shape is not known."""
    from onnx import shape_inference

    readers = [n for n in model.graph.node if name in n.input and n.op_type != "Shape"]
    if not readers or any(n.op_type not in ("Unsqueeze", "Reshape") or not n.name
                          for n in readers):
        return None
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - a graph shape inference cannot handle: no layout
        return None
    known = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    shapes = set()
    for n in readers:
        v = known.get(n.output[0])
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in v.type.tensor_type.shape.dim] if v is not None else []
        dims = [d if d else None for d in dims[1:]]
        unknown = [i for i, d in enumerate(dims) if d is None]
        rest = int(np.prod([d for d in dims if d is not None]))
        if len(unknown) == 1 and features % rest == 0:
            dims[unknown[0]] = features // rest     # a -1 behind a symbolic batch size
        if len(dims) not in (2, 3) or None in dims or int(np.prod(dims)) != features:
            return None
        shapes.add(tuple(dims))
    if len(shapes) != 1:
        return None
    return shapes.pop(), {n.name for n in readers}


def load_onnx(path, n_check: int = 4, seed: int = 0, rtol: float = 1e-4):
    """Load an ``.onnx`` file as a torch module for the search, checked against ONNX itself.

    Parameters
    ----------
    path : path
        The ONNX file.
    n_check : int
        Number of random samples the converted module and ``onnx.reference`` both run (as one
        batch, or, where the graph's input has a fixed batch size, in batches of that size).
    seed : int
        Seed of that input (uniform in [-1, 1]).
    rtol : float
        Tolerance of the comparison, relative to the largest output magnitude.

    Returns
    -------
    torch.nn.Module
        An ``OnnxNet`` with ``input_shape`` ``(C, H, W)``.

    Raises
    ------
    ValueError
        The file is missing or is not a readable, valid ONNX model.
    UnsupportedModelError
        The graph holds something the intake cannot convert, or the converted module does not
        reproduce the graph.
    """
    import onnx
    import torch

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors, checker errors
        raise ValueError(f"{p}: not a readable, valid ONNX model ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc})"
                         ) from None
    net = onnx_to_torch(model)
    from onnx.reference import ReferenceEvaluator

    # a graph with a fixed batch size B runs batches of B
    bsz = net.batch or n_check
    x = np.random.default_rng(seed).uniform(
        -1, 1, (-(-n_check // bsz) * bsz, *net.input_shape)).astype(np.float32)
    try:
        ev = ReferenceEvaluator(model)
        # the graph's own (N, F) / (N, C, L)
        feed = x.reshape(len(x), -1) if net.flat_input else x[:, :, 0, :] if net.one_d else x
        ref = np.concatenate([np.asarray(ev.run(None, {net.input_name: feed[i:i + bsz]})[0])
                              for i in range(0, len(x), bsz)])
    except Exception as exc:  # noqa: BLE001 - the reference evaluator's own failures
        raise UnsupportedModelError(f"{p}: ONNX's reference evaluator cannot run the graph on an "
                                    f"input of shape {x.shape} ({type(exc).__name__}: {exc})"
                                    ) from None
    try:
        with torch.no_grad():
            got = net(torch.from_numpy(x)).double().numpy()
    except RuntimeError as exc:
        raise UnsupportedModelError(
            f"{p}: the converted model cannot run on an input of shape {x.shape} "
            f"({str(exc).splitlines()[0]}); a Reshape to (-1, K) must flatten exactly K "
            "features per sample") from None
    tol = rtol * max(1.0, float(np.abs(ref).max()))
    if got.shape != ref.shape or not np.allclose(got, ref, rtol=rtol, atol=tol):
        diff = (f"max difference {float(np.abs(got - ref).max()):.3g}"
                if got.shape == ref.shape else f"shape {got.shape} against {ref.shape}")
        raise UnsupportedModelError(f"{p}: the converted model does not reproduce the ONNX "
                                    f"graph ({diff})")
    return net
