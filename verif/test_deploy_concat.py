"""Channel concatenation (``torch.cat(dim=1)``) in ``rvmpq deploy`` and in the cost model.

* hand-built networks with ``concat`` layers, bit for bit against ``int_forward`` on the
  ``mpq`` core (the concat's bits 2 / 4 / 8 / 16, parts whose channel counts do and do not
  fill words there, mixed bits around them, signed and unsigned parts) and on ``baseline``:
  a concat read by a 3x3 padded conv, by max pooling + flatten + linear, by two consumers,
  a part that a conv also reads directly, a depthwise consumer whose parts fill words, a
  concat of linear outputs, a residual add's output as a part (seeded: the seed is printed
  with its replay command);
* the plan: the consumer's weights get zero columns between the parts, one glue stage in
  front of each consumer, the concat no stage of its own;
* every refused form a :class:`DeployError` (deploy) / ``ValueError`` (``network_shapes``,
  so the search stops early) naming the layer;
* the cost model's links behind a concat (parts as ``feeds``, each part's output side paid
  once) and its whole-program prediction against the deployed program: equal to the cycle
  on mixed-bit concat networks (a conv behind ragged parts, max pooling + linear).
"""

from __future__ import annotations

import numpy as np
import pytest

from test_deploy import _inputs, _run_exact

from rvmpq.sw.deploy import DeployError, emit_network, plan_network
from rvmpq.sw.kernels.layer import random_layer
from rvmpq.sw.search.costs_api import LayerShape, network_shapes
from rvmpq.sw.search.qnn import QLayer, QNetwork, int_forward

#: Structures of :func:`_concat_net`.
KINDS = ("conv", "pool_linear", "two_readers", "part_read_by_conv", "depthwise",
         "linear_parts", "add_part")


def _layer(rng, variant, b, cin, cout, hw, out_bits, a_signed, relu, src, name, k=3):
    """A random conv / pointwise / depthwise / linear layer reading ``src``."""
    l = random_layer(variant, b, cin, cout, hw, hw, k, 1, rng=rng, out_bits=out_bits,
                     a_signed=a_signed, relu=relu)
    l.name, l.src = name, src
    return l


def _cat(name, parts, src):
    """The concat of ``parts`` (layers, channel order) at indices ``src``."""
    h, w, _ = parts[0].out_shape
    c = sum(int(p.out_shape[2]) for p in parts)
    return QLayer("concat", name, (h, w, c), (h, w, c), out_bits=parts[0].out_bits,
                  out_signed=parts[0].out_signed, relu=parts[0].relu, src=tuple(src))


def _head(rng, layers, src, b, classes=3, pool=1):
    """(max pooling,) flatten and a linear logits layer behind layer ``src``."""
    h, w, c = (int(v) for v in layers[src].out_shape)
    sg = bool(layers[src].out_signed)
    if pool > 1:
        h, w = h // pool, w // pool
        layers.append(QLayer("maxpool", "pool", layers[src].out_shape, (h, w, c),
                             kernel=(pool, pool), stride=(pool, pool), src=(src,)))
        src = len(layers) - 1
    layers.append(QLayer("flatten", "flat", (h, w, c), (1, 1, h * w * c), src=(src,)))
    layers.append(_layer(rng, "linear", b, h * w * c, classes, 1, 32, sg, False,
                         (len(layers) - 1,), "fc"))
    return layers


def _concat_net(rng, kind, bits, chans=None, hw=4, signed=None):
    """A network with a concat, its compute layers at ``bits`` = (stem input, parts' input,
    concat = consumers' input, consumers' output = logits layer's input):

    ``conv``: stem - parts (3x3, 1x1, 3x3 convs of ``chans`` channels) - concat - 3x3 padded
    conv - flatten - linear; ``pool_linear``: stem - two parts - concat - maxpool 2x2 -
    flatten - linear; ``two_readers``: the concat read by a 3x3 conv and by a 1x1 conv, whose
    outputs a second concat joins (maxpool, linear); ``part_read_by_conv``: the first part is
    also read by a 3x3 conv (before the concat's consumer in compute order), a second concat
    joins both convs; ``depthwise``: parts of ``32 / bits[2]`` and 3 channels (all but the
    last fill words; ``chans`` others, on baseline) - concat - depthwise 3x3;
    ``linear_parts``: linear - two linears -
    concat - linear; ``add_part``: a residual add of the stem and a conv, concatenated with
    a conv. ``chans``: the parts' channels (default 5, 8, 19; two of them where there are
    two parts). ``signed``: the parts' outputs signed (no ReLU; random zero points), default
    random.
    """
    from test_deploy import _add_layer

    b0, b1, bc, bd = bits
    sg = bool(rng.integers(2)) if signed is None else signed
    if chans is None:
        chans = ((32 // bc, 3) if kind == "depthwise" else
                 (5, 8) if kind in ("pool_linear", "two_readers", "part_read_by_conv") else
                 (5, 8, 19))
    if kind == "linear_parts":
        l0 = _layer(rng, "linear", b0, 12, 9, 1, b1, True, True, (-1,), "L0")
        a = _layer(rng, "linear", b1, 9, chans[0], 1, bc, False, not sg, (0,), "A")
        b = _layer(rng, "linear", b1, 9, chans[1], 1, bc, False, not sg, (0,), "B")
        layers = [l0, a, b, _cat("cat", [a, b], (1, 2))]
        layers.append(_layer(rng, "linear", bc, chans[0] + chans[1], 3, 1, 32, sg, False,
                             (3,), "fc"))
        return QNetwork(1.0, 0, b0, True, layers)
    stem = _layer(rng, "conv", b0, 2, 6, hw, b1, True, True, (-1,), "S")
    layers = [stem]
    if kind == "add_part":
        br = _layer(rng, "conv", b1, 6, 6, hw, b1, False, False, (0,), "R")
        add = _add_layer(rng, "add", stem, br, (0, 1), bc, out_signed=sg)
        layers += [br, add]
        c = _layer(rng, "conv", b1, 6, chans[0], hw, bc, False, not sg, (0,), "A")
        layers.append(c)
        parts = [2, 3]
    else:
        parts = []
        for j, cj in enumerate(chans):
            v = "pointwise" if j % 2 else "conv"
            layers.append(_layer(rng, v, b1, 6, cj, hw, bc, False, not sg, (0,), "ABC"[j]))
            parts.append(len(layers) - 1)
    if kind == "part_read_by_conv":     # F reads part A directly, before the concat's reader
        layers.append(_layer(rng, "conv", bc, chans[0], 4, hw, bd, sg, True, (1,), "F"))
    layers.append(_cat("cat", [layers[j] for j in parts], parts))
    cat = len(layers) - 1
    c = int(layers[cat].out_shape[2])
    if kind in ("conv", "add_part"):
        layers.append(_layer(rng, "conv", bc, c, 6, hw, bd, sg, True, (cat,), "D"))
        return QNetwork(1.0, 0, b0, True, _head(rng, layers, len(layers) - 1, bd))
    if kind == "pool_linear":
        return QNetwork(1.0, 0, b0, True, _head(rng, layers, cat, bc, pool=2))
    if kind == "depthwise":
        layers.append(_layer(rng, "depthwise", bc, c, c, hw, bd, sg, True, (cat,), "D"))
        return QNetwork(1.0, 0, b0, True, _head(rng, layers, len(layers) - 1, bd))
    layers.append(_layer(rng, "conv", bc, c, 3, hw, bd, sg, True, (cat,), "D"))
    d = len(layers) - 1
    if kind == "two_readers":
        layers.append(_layer(rng, "pointwise", bc, c, 5, hw, bd, sg, True, (cat,), "E"))
        e = len(layers) - 1
    else:
        e = cat - 1                     # F
    layers.append(_cat("cat2", [layers[d], layers[e]], (d, e)))
    return QNetwork(1.0, 0, b0, True, _head(rng, layers, len(layers) - 1, bd, pool=2))


def _readers_of_concats(net) -> int:
    """Compute layers that read a concat (through max pooling / flatten)."""
    n = 0
    for i, l in enumerate(net.layers):
        if l.kind not in ("conv", "linear"):
            continue
        s = net.sources(i)[0]
        while s >= 0 and net.layers[s].kind in ("maxpool", "flatten"):
            s = net.sources(s)[0]
        n += s >= 0 and net.layers[s].kind == "concat"
    return n


# ---- bit-exact on the RTL ------------------------------------------------------------------

@pytest.mark.parametrize("cat_bits", [2, 4, 8, 16])
def test_concat_conv_mpq_bit_exact(seed, cat_bits, tmp_path):
    """Three parts (5, 8, 19 channels: at 2 bits none fills a word, at 4 and 8 the 8-channel
    one does) concatenated at ``cat_bits`` into a 3x3 padded conv, the other precisions
    random: bit-exact; one glue stage in front of the conv, the concat no stage."""
    rng = np.random.default_rng(seed)
    bits = [int(b) for b in rng.choice([2, 4, 8, 16], 4)]
    bits[2] = cat_bits
    net = _concat_net(rng, "conv", bits)
    print(f"bits {bits}, parts signed: {net.layers[4].out_signed}")
    run = _run_exact(net, "mpq", seed, tmp_path, 2)
    glue = [nm for nm in run.stage_cycles if nm.startswith("glue -> conv D")]
    assert len(glue) == 1 and "concat cat of 3" in glue[0] and run.stage_cycles[glue[0]] > 0
    assert not any("cat" in nm for nm in run.stage_cycles if not nm.startswith("glue"))


@pytest.mark.parametrize("kind", KINDS[1:])
def test_concat_forms_mpq_bit_exact(seed, kind, tmp_path):
    """Max pooling + flatten + linear behind a concat, a concat read by two consumers, a part
    a conv also reads directly, a depthwise consumer, a concat of linear outputs, a residual
    add's output as a part; random precisions (the depthwise's parts fill its words)."""
    rng = np.random.default_rng(seed)
    bits = [int(b) for b in rng.choice([2, 4, 8, 16], 4)]
    if kind == "depthwise":     # a narrower output needs other channel counts (the kernel's)
        bits[3] = max(bits[2:])
    net = _concat_net(rng, kind, bits)
    print(f"{kind}: bits {bits}")
    run = _run_exact(net, "mpq", seed, tmp_path, 2)
    glue = [nm for nm, k in zip(run.stage_cycles, run.stage_kinds) if k == "glue"
            and "concat " in nm]
    assert len(glue) == _readers_of_concats(net) >= 1


@pytest.mark.parametrize("kind", ["conv", "two_readers", "part_read_by_conv", "depthwise"])
def test_concat_baseline_bit_exact(seed, kind, tmp_path):
    """The same on the baseline core (int8 / int16 elements, a part's channels side by side:
    no padding; a depthwise consumer of ragged parts too). Many of these random networks'
    int32 accumulators wrap; the baseline kernels wrap them as the integer model does (their
    C sums are ``uint32_t``; test_kernels.py, ``test_sums_that_wrap_are_bit_exact``)."""
    rng = np.random.default_rng(seed)
    bits = [int(b) for b in rng.choice([8, 16], 4)]
    if kind == "depthwise":
        bits[3] = max(bits[2:])
    # depthwise: ragged parts, fine with one element per unit
    net = _concat_net(rng, kind, bits, chans=(5, 3) if kind == "depthwise" else None)
    stats: dict = {}
    int_forward(net, _inputs(np.random.default_rng(seed + 1), net, 2)[1], exact="int64",
                stats=stats)
    print(f"{kind}: bits {bits}, {stats.get('wraps', 0)} accumulators wrap")
    _run_exact(net, "baseline", seed, tmp_path, 2)


# ---- the plan ------------------------------------------------------------------------------

def test_plan_pads_the_consumer_between_parts():
    """Parts of 5, 8 and 19 channels at INT4 (8 lanes: 1, 1 and 3 words): the 3x3 conv reads
    40 channels, its weights zero at the padding lanes and the parts' weights at channels 0,
    8 and 16; a linear behind a pooled concat reads each pixel's parts padded the same way;
    on baseline nothing is padded. The glue's code is gathered from a table of its own."""
    rng = np.random.default_rng(0)
    net = _concat_net(rng, "conv", [8, 4, 4, 8], signed=False)
    d = net.layers[5]
    st = next(s for s in plan_network(net, "mpq") if s.source is d)
    assert st.parts == (1, 2, 3) and st.glue == "copy" and st.concat is net.layers[4]
    w = st.layer.weight
    assert w.shape == d.weight.shape[:3] + (40,)
    for o, off, c in ((0, 0, 5), (8, 5, 8), (16, 13, 19)):
        assert np.array_equal(w[..., o:o + c], d.weight[..., off:off + c])
    assert not w[..., 5:8].any() and not w[..., 35:].any()
    assert plan_network(net, "baseline")[4].layer is d     # no padding on baseline
    prog = emit_network(net, _inputs(rng, net, 1)[0], "mpq")
    assert "static void *const g4_prm[4]" in prog.source
    assert prog.stage_kinds.count("kernel") == 6          # the concat: no stage of its own
    assert [nm for nm in prog.stage_names if "concat" in nm] == [
        "glue -> conv D (concat cat of 3 + copy)"]
    # pooled + flattened into a linear: per pooled pixel 5 -> 8 and 8 -> 8 lanes at INT4
    net = _concat_net(rng, "pool_linear", [8, 4, 4, 8])
    fc = net.layers[-1]
    st = plan_network(net, "mpq")[-1]
    assert st.layer.weight.shape == (3, 2 * 2 * 16)
    old = fc.weight.reshape(3, 4, 13)
    new = st.layer.weight.reshape(3, 4, 16)
    assert np.array_equal(new[:, :, :5], old[:, :, :5])
    assert np.array_equal(new[:, :, 8:16], old[:, :, 5:13]) and not new[:, :, 5:8].any()


# ---- refused forms -------------------------------------------------------------------------

def _refused(net, match_deploy, match_shapes=None, impl="mpq"):
    with pytest.raises(DeployError, match=match_deploy):
        plan_network(net, impl)
    if match_shapes is not None:
        with pytest.raises(ValueError, match=match_shapes):
            network_shapes(net)


def test_refused_forms_name_the_layer():
    """What deploy cannot run is a DeployError naming the layer and what is supported; the
    forms that no choice of bits fixes fail in ``network_shapes`` too (the search's first
    step)."""
    rng = np.random.default_rng(5)

    def fresh(kind="conv"):
        return _concat_net(rng, kind, [8, 8, 8, 8])

    net = fresh()                                    # a part that is the network input
    net.layers[4].src = (-1, 2, 3)
    _refused(net, r"layer 'cat' \(concat\): reads the network input",
             r"layer 'cat' \(concat\) reads the network input")
    net = fresh()                                    # a pooled part
    net.layers.insert(2, QLayer("maxpool", "p0", (4, 4, 5), (2, 2, 5), kernel=(2, 2),
                                stride=(2, 2), src=(1,)))
    net.layers[5].src = (2, 3, 4)
    for l in net.layers[6:]:
        l.src = tuple(s + 1 for s in l.src)
    _refused(net, r"layer 'cat' \(concat\): reads 'p0' \(max pooling / flatten",
             r"layer 'cat' \(concat\) reads 'p0' \(maxpool of")
    net = fresh()                                    # a concat of a concat
    inner = _cat("inner", [net.layers[1], net.layers[2]], (1, 2))
    net.layers.insert(4, inner)
    net.layers[5].src = (4, 3)
    for l in net.layers[6:]:
        l.src = tuple(s + 1 for s in l.src)
    _refused(net, r"layer 'cat' \(concat\): reads 'inner', a concat",
             r"layer 'cat' \(concat\) reads the concat 'inner'")
    net = fresh()                                    # a concat read by an add
    net.layers.insert(5, QLayer("add", "sum", (4, 4, 32), (4, 4, 32), mult=np.array([1, 1]),
                                shift=1, out_bits=8, out_signed=False, src=(4, 4)))
    _refused(net, r"layer 'sum' \(add\): reads 'cat', a concat",
             r"layer 'sum' \(add\) reads the concat 'cat'")
    net = fresh()                                    # a part at other bits
    b = net.layers[2]
    net.layers[2] = random_layer("pointwise", 8, 6, 8, 4, 4, rng=rng, out_bits=4,
                                 a_signed=False, relu=b.relu)
    net.layers[2].name, net.layers[2].src = "B", (0,)
    _refused(net, r"layer 'cat' \(concat\): part 'B' writes 4-bit .* the concat holds 8-bit")
    net = fresh()                                    # parts of other maps
    net.layers[3] = _layer(rng, "conv", 8, 6, 19, 4, 8, False, net.layers[1].relu, (0,), "C")
    net.layers[3].stride = (2, 2)
    net.layers[3].out_shape = (2, 2, 19)
    _refused(net, r"layer 'cat' \(concat\): part 'C' has a 2x2 map, the concat 4x4")
    net = fresh()                                    # one source
    net.layers[4].src = (3,)
    _refused(net, r"layer 'cat' \(concat\): reads 1 layer; a concat reads two or more",
             r"layer 'cat' \(concat\) reads 1 layer")
    # a depthwise behind parts that do not fill its words: 5 channels at INT8 (4 lanes)
    net = _concat_net(rng, "depthwise", [8, 8, 8, 8], chans=(5, 3))
    _refused(net, r"layer 'D' \(depthwise\) reads concat 'cat', whose part 'A' has 5 "
             r"channels: at 8 bits that does not fill whole words of 4 lanes",
             r"layer 'D' \(depthwise\) reads the concat 'cat', whose part 'A' has 5 channels")
    plan_network(net, "baseline")                   # one element per unit: fine there
    # a residual add's output as a part: deploy runs it, the cost model refuses it
    net = fresh("add_part")
    plan_network(net, "mpq")
    with pytest.raises(ValueError, match=r"layer 'cat' \(concat\) reads the residual add "
                       r"'add'.*put a conv between"):
        network_shapes(net)


# ---- the cost model ------------------------------------------------------------------------

def test_links_behind_a_concat():
    """The consumer of a concat gets a link from it (kind "concat": channels, map) with its
    parts as feeds; each part's output side is paid by one link: a second reader of the
    concat is ``shared``, a part read directly by a conv earlier in compute order is
    ``unpaid`` in the concat's link; every layer's output side goes to a consumer."""
    from rvmpq.sw.costs import deployed_shape
    from rvmpq.sw.search.costs_api import consumer_linked

    rng = np.random.default_rng(0)
    net = _concat_net(rng, "conv", [8, 8, 8, 8])             # S, A, B, C, D, fc
    shapes, links = network_shapes(net)
    ln = links[4]
    assert ln.producer == LayerShape("concat", 32, 32, 4, 4)
    assert ln.feeds == tuple(shapes[1:4]) and ln.sources == (1, 2, 3) and not ln.shared
    assert "|feeds" in ln.glue_key() and ln.unpaid == ()
    assert all(consumer_linked(links, i) for i in range(len(shapes)))
    # deploy's layout: 5, 8, 19 channels padded to words of lanes at the consumer's bits
    assert deployed_shape(shapes[4], ln, 2).cin == 16 + 16 + 32
    assert deployed_shape(shapes[4], ln, 4).cin == 8 + 8 + 24
    assert deployed_shape(shapes[4], ln, 16).cin == 6 + 8 + 20
    net = _concat_net(rng, "two_readers", [8, 8, 8, 8])      # S, A, B, D, E, fc
    shapes, links = network_shapes(net)
    # B is S's second reader, E the concat's
    assert [bool(ln and ln.shared) for ln in links] == [False, False, True, False, True, False]
    assert links[3].sources == (1, 2) and links[4].sources == ()
    assert links[5].producer.kind == "concat" and links[5].pool == (2, 2)
    assert deployed_shape(shapes[5], links[5], 8).cin == 2 * 2 * (4 + 8)
    net = _concat_net(rng, "part_read_by_conv", [8, 8, 8, 8])   # S, A, B, F, D, fc
    shapes, links = network_shapes(net)
    assert links[3].producer == shapes[1] and links[3].sources == (1,)
    assert links[4].unpaid == (0,) and links[4].sources == (2,)
    assert "|unpaid0" in links[4].key() and "unpaid" not in links[4].glue_key()
    assert all(consumer_linked(links, i) for i in range(len(shapes)))


def _concat_glue_code(net, xq) -> list[str]:
    """The C functions of the concat glue of ``net``'s program, their names made ``gX``."""
    prog = emit_network(net, xq, "mpq")
    out = []
    for st in prog.stages:
        if st.parts:
            head = f"__attribute__((noinline)) static void g{st.index}(void) {{"
            body = prog.source.split(head)[1].split("\n}\n")[0]
            out.append(body.replace(f"g{st.index}_prm", "gX_prm"))
    return out


def test_glue_harness_has_the_network_glue_code():
    """The cost model's harness for a concat link (:func:`rvmpq.sw.costs.glue_network`:
    parts of the same variants and output layouts, the concat, the pooling, the consumer's
    input layout) has the network's glue function, character for character: the same code,
    so the same cycles. Its parts are 1x1 convs (the network's first part is a 3x3 conv: the
    output layout is all the glue sees)."""
    from rvmpq.sw.costs import glue_network

    rng = np.random.default_rng(4)
    for kind, bits in (("conv", [8, 2, 4, 8]), ("pool_linear", [8, 4, 2, 2]),
                       ("depthwise", [8, 4, 8, 8]), ("linear_parts", [8, 8, 4, 4])):
        # a depthwise's parts: 16-channel multiples (network_shapes: every precision)
        net = _concat_net(rng, kind, bits, chans=(16, 3) if kind == "depthwise" else None,
                          signed=False)
        mine = _concat_glue_code(net, _inputs(rng, net, 1)[0])
        shapes, links = network_shapes(net)
        k = next(i for i, ln in enumerate(links) if ln is not None
                 and ln.producer.kind == "concat")
        harness, xq = glue_network(links[k], bits[2])
        assert [l.kind for l in harness.layers].count("concat") == 1 and len(mine) == 1
        assert _concat_glue_code(harness, xq) == mine[:1], kind


def test_whole_program_prediction_is_exact(tmp_path):
    """What the search sums for a concat network (kernels with their outputs at the next
    layer's bits, the parts' output side and the gathering glue charged to the concat's
    consumer, the consumer costed with its padded input channels), every term measured on
    the RTL in the cost model's own harnesses, equals the deployed program's cycles per
    inference to the cycle, at mixed bits: ragged parts into a 3x3 conv, into max pooling +
    linear, and a concat read by two convs (the parts at INT2: a kernel's output side is
    exactly separable there; at INT8 with INT2 outputs a pointwise part ran 16 cycles more
    than its split, the kernels' known separability, docs/costs.md); per stage too: the
    gathering glue, and each kernel with its output at its reader's bits. Without the
    concat's glue term, or with the consumer at its unpadded channel count, it is off."""
    from rvmpq.sw.costs import RtlCostModel, deployed_shape
    from rvmpq.sw.deploy import predicted_cycles

    cm = RtlCostModel(cache_dir=tmp_path / "costs", verbose=False)
    for kind, bits in (("conv", [8, 2, 4, 8]), ("pool_linear", [4, 2, 8, 2]),
                       ("two_readers", [8, 2, 4, 16])):
        net = _concat_net(np.random.default_rng(3), kind, bits, signed=False)
        run = _run_exact(net, "mpq", 3, tmp_path, 2)
        p = predicted_cycles(net, cm)
        shapes, links = network_shapes(net)
        k = next(i for i, ln in enumerate(links) if ln is not None
                 and ln.producer.kind == "concat")
        meas = run.cycles_per_inference
        glue = [c for nm, c in run.stage_cycles.items() if "concat" in nm]
        unpadded = cm.layer_cost(shapes[k], bits[2], bits[2]).cycles
        padded = cm.layer_cost(deployed_shape(shapes[k], links[k], bits[2]), bits[2],
                               bits[2]).cycles
        print(f"{kind} {bits}: measured {meas:.0f} (concat glue {glue}), predicted "
              f"{p['total']:.0f} (glue {p['glue'][k]:.0f}); consumer unpadded {unpadded:.0f} "
              f"/ padded {padded:.0f}")
        assert p["total"] == meas, (p["layers"], run.stage_cycles)
        assert glue[0] == p["glue"][k] > 0
        # two_readers: 13 -> 16 channels, 2 words at INT4 either way
        assert padded != unpadded or kind == "two_readers"
        kernels = [c for c, kd in zip(run.stage_cycles.values(), run.stage_kinds)
                   if kd == "kernel"]
        assert kernels == p["kernels"], (kernels, p["kernels"])
    # three parts' keys make long glue cache names: cut, with a hash of the whole key (the
    # atomic write's temporary name must stay under 255 bytes)
    names = [f.name for f in cm.dir.glob("glue-*/*.json")]
    assert names and max(len(nm) for nm in names) <= 200
