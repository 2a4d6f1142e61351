"""The cost-table interface between the search and whatever measures layer costs.

The search never hard-codes what a layer costs. It asks a :class:`CostModel` for the cost of one
layer shape at one precision. Two implementations exist:

* :class:`AnalyticStandIn` (here): a MACs / lanes-per-word formula, **for development only**.
  Results computed with it are labelled ``"cost_source": "stand-in"`` and the CLI refuses to
  call them final.
* ``rvmpq.sw.costs`` (issue 4): cycles measured by running the generated kernels on the
  Verilator model of the RTL. Any object that has the attributes below plugs in; it must set
  ``source = "rtl-measured"``.

A cost model is anything with

``source: str``
    ``"stand-in"`` or ``"rtl-measured"`` (the search only calls a result final for the latter).
``layer_cost(shape: LayerShape, w_bits: int, a_bits: int) -> LayerCost``
    the cost of one layer at one precision.

and optionally

``in_network_cycles(shape, w_bits, a_bits, link: LayerLink | None) -> float``
    the cycles a layer costs *inside a deployed network*: its kernel, corrected for the
    precision its output is requantized to, plus the work in front of it that depends only on
    its own input precision (the producer's requantize-and-pack at that precision, the max
    pooling and the copy into its padded input buffer, a residual-add stage whose output it
    reads, the gathering of a channel concat's parts and their output side, and the unpacking
    of add inputs that are at its bits). Charging that work to the consumer keeps
    the search separable: one cost per layer and option, summing to the whole program.
    :func:`cost_table` uses it when it is given the network's :class:`LayerLink` list
    (:func:`network_shapes`); ``rvmpq.sw.costs.RtlCostModel`` measures every term on the RTL.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol, runtime_checkable

__all__ = [
    "BITS",
    "LayerShape",
    "LayerCost",
    "LayerLink",
    "network_shapes",
    "CostModel",
    "AnalyticStandIn",
    "check_bits",
    "consumer_linked",
    "cost_table",
    "COST_METRICS",
    "JsonCostTable",
    "mobilenetv2_shapes",
]

#: the precisions the SIMD unit supports (per operand)
BITS: tuple[int, ...] = (2, 4, 8, 16)

#: the cost metrics a budget can name (LayerCost field names)
COST_METRICS: tuple[str, ...] = ("cycles", "weight_bytes", "act_bytes", "energy")


def consumer_linked(links: list, i: int) -> bool:
    """Whether some layer pays layer ``i``'s output-side work (its output requantized to that
    layer's bits), so that layer ``i`` itself does not: with the links of
    :func:`network_shapes` (``LayerLink.sources`` set), whether ``i`` is in the ``sources`` of
    a link (the producer it reads, a layer whose output only residual adds read on the way
    to it, or a part of the concat it reads); with links made by hand, whether the next layer
    has a link. True for the last layer (logits, nothing to pay)."""
    if i + 1 >= len(links):
        return True
    if any(ln is not None and ln.sources is not None for ln in links):
        return any(ln is not None and ln.sources is not None and i in ln.sources
                   for ln in links)
    return links[i + 1] is not None


def check_bits(bits: int, what: str = "bits") -> int:
    """Return ``bits`` as int if it is a supported precision, else raise ``ValueError``.

    Parameters
    ----------
    bits : int
        Candidate bit width.
    what : str
        Name used in the error message.
    """
    if int(bits) not in BITS:
        raise ValueError(f"{what}={bits!r} is not supported; allowed values: {list(BITS)}")
    return int(bits)


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """Shape of one compute layer, enough to look its cost up in a table.

    Attributes
    ----------
    kind : str
        ``"conv"`` (KxK, 1x1 or depthwise via ``groups``) or ``"linear"``; ``"add"`` and
        ``"concat"`` only as the producer of a :class:`LayerLink` (a residual add's output, a
        channel concatenation: ``cin = cout`` channels in all, ``h_in`` x ``w_in``, no
        weights).
    cin, cout : int
        Input / output channels (features for ``linear``).
    h_in, w_in : int
        Input spatial size (1, 1 for ``linear``).
    kh, kw : int
        Kernel size (1, 1 for ``linear``).
    stride, padding : tuple of int
        Convolution stride and zero padding as (height, width).
    groups : int
        Convolution groups (``cin`` for depthwise, 1 for ``linear``).
    logits : bool
        The network's last layer: its output is the raw int32 accumulators (``out_bits = 32``,
        no requantization, no ReLU), as deploy runs it. Other layers are costed with a ReLU
        output requantized to the layer's own precision; in a network the output goes to the
        next layer's precision, which a model with ``in_network_cycles`` accounts for (about
        7 % of a layer between INT2 and INT8 outputs).
    """

    kind: str
    cin: int
    cout: int
    h_in: int = 1
    w_in: int = 1
    kh: int = 1
    kw: int = 1
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    logits: bool = False

    def __post_init__(self):
        if self.kind not in ("conv", "linear", "add", "concat"):
            raise ValueError(f"LayerShape.kind={self.kind!r}; allowed values: ['conv', "
                             "'linear', 'add' (a residual add) or 'concat' (a channel "
                             "concatenation), the last two only as a LayerLink producer]")
        object.__setattr__(self, "stride", tuple(int(v) for v in self.stride))
        object.__setattr__(self, "padding", tuple(int(v) for v in self.padding))

    @property
    def h_out(self) -> int:
        """Output height."""
        return (self.h_in + 2 * self.padding[0] - self.kh) // self.stride[0] + 1

    @property
    def w_out(self) -> int:
        """Output width."""
        return (self.w_in + 2 * self.padding[1] - self.kw) // self.stride[1] + 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference."""
        return self.h_out * self.w_out * self.cout * (self.cin // self.groups) * self.kh * self.kw

    @property
    def params(self) -> int:
        """Number of weights (without bias)."""
        return self.cout * (self.cin // self.groups) * self.kh * self.kw

    @property
    def dot_len(self) -> int:
        """Length of one output's dot product."""
        return (self.cin // self.groups) * self.kh * self.kw

    def key(self) -> str:
        """A stable string naming the shape (for JSON cost tables)."""
        return (f"{self.kind}:cin{self.cin}:cout{self.cout}:h{self.h_in}:w{self.w_in}:"
                f"k{self.kh}x{self.kw}:s{self.stride[0]}x{self.stride[1]}:"
                f"p{self.padding[0]}x{self.padding[1]}:g{self.groups}"
                + (":logits" if self.logits else ""))


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """Cost of one layer at one precision.

    Attributes
    ----------
    cycles : float
        Core cycles of the layer kernel.
    weight_bytes : float
        Packed weight storage (bias and requant parameters included).
    act_bytes : float
        Packed input activation bytes.
    energy : float
        Energy proxy in arbitrary units (only comparable within one cost model).
    """

    cycles: float
    weight_bytes: float
    act_bytes: float
    energy: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        """The metrics in :data:`COST_METRICS` order."""
        return (self.cycles, self.weight_bytes, self.act_bytes, self.energy)


@dataclasses.dataclass(frozen=True)
class LayerLink:
    """How a compute layer gets its input in a deployed network (``rvmpq deploy``): the
    previous compute layer (``producer``), the max pooling between them and the layer itself
    (``consumer``).

    The producer's output is requantized to the consumer's activation bits, and the glue code
    (max pooling on the packed lanes, the copy into the consumer's pre-padded input buffer;
    none where the consumer can read the producer's output in place) moves it at those bits:
    so both depend on the consumer's precision only, and a cost model charges them to the
    consumer (see the module docstring).

    A residual add in front of the consumer is a producer of kind ``"add"``: its output is
    requantized to the consumer's bits, and so are the inputs that only adds read (the
    outputs of the ``feeds`` layers, and those of the adds in ``adds``, which only adds
    read); so the add stages, their glue and the feeds' output side are charged to the
    consumer too (``rvmpq.sw.costs``, docs/costs.md). An add input that a compute layer reads
    too (a block's skip) is at that layer's bits: the unpacking of it is charged to that
    layer's link (``unpacks``) and not to the add's consumer (``external``).

    A channel concat in front of the consumer is a producer of kind ``"concat"`` (channels in
    all, map): its parts, the compute layers it joins (in channel order), are the ``feeds``;
    their outputs are requantized to the consumer's bits and the glue gathers them into the
    consumer's input buffer, so both are charged to the consumer (a feed whose output side
    another link pays, a part also read directly by a compute layer or by another concat, is
    listed in ``unpaid``).

    Attributes
    ----------
    producer, consumer : LayerShape
        The two compute layers (a ``flatten`` between them is implied by a ``linear``
        consumer), or a residual add (kind ``"add"``) and the compute layer behind it.
    pool : tuple of int
        Max-pool window (height, width) applied to the producer's output; ``(1, 1)``: none.
    feeds : tuple of LayerShape
        With an add producer: the compute layers whose outputs only adds read on the way to
        the consumer (requantized to the consumer's bits). With a concat producer: its parts
        in channel order (part of :meth:`glue_key`: the glue depends on their layouts).
    adds : tuple of LayerShape
        With an add producer: the further adds on the way whose outputs only adds read.
    shared : bool
        Another reader of the same tensor (earlier in compute order) pays the producer's
        output side and the add stages (a tensor is requantized and added once, whoever reads
        it; every reader has the same bits): this link pays its own glue only.
    sources : tuple of int, optional
        Compute-layer indices whose output side this link pays (the producer, or an add's
        ``feeds``), set by :func:`network_shapes` for :func:`consumer_linked`; ``None``
        (a link made by hand): the producer is the compute layer in front of the consumer.
        Neither field is part of :meth:`key` (the glue does not depend on them).
    external : tuple of (int, int, int or None)
        The inputs of the adds this link pays (``k`` = 0: the producer, ``k`` >= 1:
        ``adds[k - 1]``) that another layer decides the bits of (an input that a compute layer
        reads too, e.g. an identity block's skip: at that layer's bits): ``(k, j, d)`` with
        ``j`` the add's input index (its ``src`` position) and ``d`` the compute-layer index of
        the layer whose link pays it (``None`` for a link made by hand). The unpacking of those
        inputs is not charged here (their layer pays it, ``unpacks``).
    unpacks : tuple of (LayerShape, int)
        The adds (``kind "add"`` shapes) that read the tensor this link pays for (its
        producer's output, at the consumer's bits) as their input ``j``, paid by other links:
        the part of those add stages that depends on this tensor's bits (unpacking its lanes)
        is charged to this link's consumer, which decides them.
        ``external`` and ``unpacks`` are part of :meth:`key` (of the cost table's ``network``
        section) but not of :meth:`glue_key` (the glue and add measurements do not depend on
        them); empty for a network without residual adds.
    unpaid : tuple of int
        With a concat producer: the indices into ``feeds`` of the parts whose output side
        another link pays (a part that a compute layer or another concat's consumer reads too,
        earlier in compute order; every reader has the same bits). Part of :meth:`key` where
        not empty, not of :meth:`glue_key`.
    """

    producer: LayerShape
    consumer: LayerShape
    pool: tuple[int, int] = (1, 1)
    feeds: tuple = ()
    adds: tuple = ()
    shared: bool = False
    sources: tuple | None = None
    external: tuple = ()
    unpacks: tuple = ()
    unpaid: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "pool", tuple(int(v) for v in self.pool))
        object.__setattr__(self, "feeds", tuple(self.feeds))
        object.__setattr__(self, "adds", tuple(self.adds))
        if self.sources is not None:
            object.__setattr__(self, "sources", tuple(int(v) for v in self.sources))
        object.__setattr__(self, "external", tuple(
            (int(k), int(j), None if d is None else int(d)) for k, j, d in self.external))
        object.__setattr__(self, "unpacks", tuple((a, int(j)) for a, j in self.unpacks))
        object.__setattr__(self, "unpaid", tuple(int(k) for k in self.unpaid))
        if self.producer.kind == "concat" and len(self.feeds) < 2:
            raise ValueError(f"LayerLink: a concat producer ({self.producer.key()}) needs its "
                             f"parts as feeds (two or more), got {len(self.feeds)}")
        for k in self.unpaid:
            if self.producer.kind != "concat" or not 0 <= k < len(self.feeds):
                raise ValueError(f"LayerLink.unpaid: {k} does not name a part of a concat "
                                 "producer (an index into feeds)")
        for a, j in self.unpacks:
            if a.kind != "add" or j not in (0, 1):
                raise ValueError(f"LayerLink.unpacks: ({a.key()}, {j}); expected (an add "
                                 "shape, input index 0 or 1)")
        for k, j, _ in self.external:
            if not 0 <= k <= len(self.adds) or j not in (0, 1) or self.producer.kind != "add":
                raise ValueError(f"LayerLink.external: ({k}, {j}) does not name an input of "
                                 "the adds this link pays (producer: k = 0, adds: k >= 1)")

    def glue_key(self) -> str:
        """A stable string naming the glue (and add stages) in front of the consumer: what
        the measurements depend on (their cache key)."""
        k = f"{self.producer.key()}|pool{self.pool[0]}x{self.pool[1]}|{self.consumer.key()}"
        if self.feeds:
            k += "|feeds" + ",".join(f.key() for f in self.feeds)
        if self.adds:
            k += "|adds" + ",".join(a.key() for a in self.adds)
        return k

    def key(self) -> str:
        """A stable string naming the link (for cost tables): :meth:`glue_key` and, where
        there are any, the add inputs it does not decide and those it does."""
        k = self.glue_key()
        if self.external:
            k += "|ext" + ",".join(f"{a}.{j}" for a, j, _ in self.external)
        if self.unpacks:
            k += "|unpacks" + ",".join(f"{a.key()}.{j}" for a, j in self.unpacks)
        if self.unpaid:
            k += "|unpaid" + ",".join(str(j) for j in self.unpaid)
        return k


def network_shapes(net) -> tuple[list[LayerShape], list[LayerLink | None]]:
    """The compute-layer shapes of an integer network (:class:`rvmpq.sw.search.qnn.QNetwork`,
    HWC shapes) and the :class:`LayerLink` in front of each: the compute layer or residual add
    whose output it reads through max pooling / flatten (with an add: the compute layers and
    adds behind it whose outputs only adds read, ``feeds`` / ``adds``, and the add inputs a
    compute layer reads too, ``external``, whose unpacking the link that pays that tensor
    carries as ``unpacks``); ``None`` for a layer that reads the network input. The last
    compute layer is marked ``logits``.

    A layer behind a channel ``concat`` gets a link from it (a ``"concat"`` shape) with its
    parts as ``feeds``, in channel order; the first link that reads a part pays its output
    side (a part a compute layer reads too is charged once: ``unpaid``, ``shared``).

    Raises ``ValueError`` naming the layer for the concat forms ``rvmpq deploy`` cannot run
    whatever the bits (so that the search stops before it spends time): a concat of the
    network input, of a pooled / flattened tensor or of another concat, a concat read by a
    residual add, a depthwise conv behind a concat whose parts (but the last) are not whole
    16-channel multiples (the words at 2 bits; deploy needs whole words of ``32 / bits``
    lanes), and a concat of a residual add's output (deploy runs it, the cost model does not
    charge it).
    """
    layers = net.layers
    comp = net.compute_layers
    n = len(layers)
    srcs = net.sources

    readers: dict = {i: [] for i in range(-1, n)}
    for i in range(n):
        for v in srcs(i):
            readers[v].append(i)

    def only_adds(i):
        return bool(readers[i]) and all(layers[r].kind == "add" for r in readers[i])

    def back(i):
        """The layer behind ``i`` through max pooling / flatten, and the pool window."""
        pool = [1, 1]
        while i >= 0 and layers[i].kind in ("maxpool", "flatten"):
            if layers[i].kind == "maxpool":
                pool = [pool[0] * int(layers[i].kernel[0]), pool[1] * int(layers[i].kernel[1])]
            i = srcs(i)[0]
        return i, pool

    for i, l in enumerate(layers):
        if l.kind == "concat":
            _check_concat_parts(net, i)
        elif l.kind == "add":
            for v in srcs(i):
                q, _ = back(v)
                if q >= 0 and layers[q].kind == "concat":
                    raise ValueError(
                        f"layer {l.name!r} (add) reads the concat {layers[q].name!r}: a concat "
                        "is read by conv / depthwise / linear layers only (rvmpq deploy); "
                        "add the parts before concatenating them, or put a conv in between")

    shape_of: dict = {}
    comp_index = {id(l): k for k, l in enumerate(comp)}
    charged: set = set()     # layers whose output side / add stage a link already pays
    payer: dict = {}         # layer -> compute index of the link that pays its output
    paid: list = []          # (compute index, the adds its link pays: producer first)
    shapes, links = [], []
    for i, l in enumerate(layers):
        if l.kind == "add":
            h, w, c = (int(v) for v in l.out_shape)
            shape_of[i] = LayerShape("add", c, c, h, w)
            continue
        if l.kind == "concat":
            h, w, c = (int(v) for v in l.out_shape)
            shape_of[i] = LayerShape("concat", c, c, h, w)
            continue
        if l.kind not in ("conv", "linear"):
            continue
        last = l is comp[-1]
        if l.kind == "conv":
            h, w, c = l.in_shape
            s = LayerShape("conv", int(c), int(l.weight.shape[0]), int(h), int(w),
                           int(l.kernel[0]), int(l.kernel[1]), tuple(l.stride), tuple(l.padding),
                           int(l.groups), logits=last)
        else:
            s = LayerShape("linear", int(l.weight.shape[1]), int(l.weight.shape[0]), logits=last)
        shape_of[i] = s
        # the producer: through max pooling / flatten
        p, pool = back(srcs(i)[0])
        link = None
        if p >= 0 and layers[p].kind == "concat":
            parts = list(srcs(p))
            if l.kind == "conv" and int(l.groups) > 1 and \
                    int(l.groups) == int(l.in_shape[2]) == int(l.weight.shape[0]):
                for j in parts[:-1]:
                    cj = int(layers[j].out_shape[2])
                    if cj % 16:
                        raise ValueError(
                            f"layer {l.name!r} (depthwise) reads the concat {layers[p].name!r}, "
                            f"whose part {layers[j].name!r} has {cj} channels: a depthwise conv "
                            "cannot skip the padding lanes between parts, so rvmpq deploy "
                            "needs every part but the last to fill whole words (a multiple of "
                            "32 / bits channels: 16 for every precision the search may pick); "
                            "use such channel counts or a groups-1 conv after the concat")
            shared = p in charged
            pays = [] if shared else [j for j in parts if j not in charged]
            unpaid = () if shared else tuple(k for k, j in enumerate(parts) if j in charged)
            charged.update([p, *parts])
            link = LayerLink(shape_of[p], s, tuple(pool), tuple(shape_of[j] for j in parts),
                             shared=shared, sources=tuple(comp_index[id(layers[j])] for j in pays),
                             unpaid=unpaid)
            for j in pays:
                payer.setdefault(j, len(links))
        elif p >= 0 and p in shape_of:
            feeds, adds, seen = [], [], set()
            if layers[p].kind == "add":
                todo = list(srcs(p))
                while todo:
                    j = todo.pop(0)
                    if j < 0 or j in seen or j in charged or not only_adds(j):
                        continue
                    seen.add(j)
                    if layers[j].kind == "add":
                        adds.append(j)
                        todo += list(srcs(j))
                    elif j in shape_of:
                        feeds.append(j)
            shared = p in charged
            pays = [] if shared else [j for j in (p, *feeds) if layers[j].kind != "add"]
            charged.update([p, *feeds, *adds])
            link = LayerLink(shape_of[p], s, tuple(pool), tuple(shape_of[j] for j in feeds),
                             tuple(shape_of[j] for j in adds), shared,
                             tuple(comp_index[id(layers[j])] for j in pays))
            if not shared:
                payer.setdefault(p, len(links))
                if layers[p].kind == "add":
                    paid.append((len(links), [p, *adds]))
        links.append(link)
        shapes.append(s)
    # add inputs that a compute layer reads too are at that layer's bits: the first such
    # reader's link (the one that pays the tensor) pays their unpacking, not the add's
    external: dict = {}
    unpacks: dict = {}
    for c, add_layers in paid:
        for k, a in enumerate(add_layers):
            for j, t in enumerate(srcs(a)):
                if t in payer and not only_adds(t):
                    external.setdefault(c, []).append((k, j, payer[t]))
                    unpacks.setdefault(payer[t], []).append((shape_of[a], j))
    for c in set(external) | set(unpacks):
        links[c] = dataclasses.replace(links[c], external=tuple(external.get(c, ())),
                                       unpacks=tuple(unpacks.get(c, ())))
    return shapes, links


def _check_concat_parts(net, i: int) -> None:
    """``ValueError`` naming concat layer ``i`` of ``net`` unless each of its two or more
    sources is a conv / linear layer's output as it is (what :func:`network_shapes` and the
    cost model charge; ``rvmpq deploy`` runs a residual add's output as a part too)."""
    layers = net.layers
    l = layers[i]
    srcs = net.sources(i)
    if len(srcs) < 2:
        raise ValueError(f"layer {l.name!r} (concat) reads {len(srcs)} layer; a concat reads "
                         "two or more (src)")
    for v in srcs:
        if v < 0:
            raise ValueError(f"layer {l.name!r} (concat) reads the network input; a concat "
                             "joins conv / linear outputs (rvmpq deploy): put a conv in front")
        kind, name = layers[v].kind, layers[v].name
        if kind in ("maxpool", "flatten"):
            raise ValueError(f"layer {l.name!r} (concat) reads {name!r} ({kind} of a layer's "
                             "output); a concat joins conv / linear outputs as they are "
                             "(rvmpq deploy): pool or flatten after the concat instead")
        if kind == "concat":
            raise ValueError(f"layer {l.name!r} (concat) reads the concat {name!r}; a concat "
                             "of a concat is not supported: list all the parts in one concat")
        if kind == "add":
            raise ValueError(f"layer {l.name!r} (concat) reads the residual add {name!r}; the "
                             "cost model charges concat parts that are conv / linear outputs "
                             "only: put a conv between the add and the concat")
        if kind not in ("conv", "linear"):
            raise ValueError(f"layer {l.name!r} (concat) reads {name!r} of kind {kind!r}; a "
                             "concat joins conv / linear outputs")


@runtime_checkable
class CostModel(Protocol):
    """What the search needs from a cost source (see module docstring)."""

    source: str

    def layer_cost(self, shape: LayerShape, w_bits: int, a_bits: int) -> LayerCost:
        """Cost of ``shape`` with ``w_bits`` weights and ``a_bits`` input activations."""
        ...


@dataclasses.dataclass
class AnalyticStandIn:
    """STAND-IN cost model for development only: not measured on the RTL.

    cycles = ceil(dot_len / lanes) * outputs * ``cycles_per_dot`` + outputs * ``cycles_per_out``
    + ``cycles_fixed``, with ``lanes = 32 // max(w_bits, a_bits)`` (the SIMD unit packs one
    32-bit word per operand). Weight bytes count packed weights plus 4 bytes of bias and 4 of
    multiplier per output channel; activation bytes the packed input. Energy proxy = dot
    instructions * ``e_dot`` + bytes moved * ``e_byte``.

    Parameters
    ----------
    cycles_per_dot, cycles_per_out, cycles_fixed, e_dot, e_byte : float
        Formula constants (made-up defaults, plausible for a 5-stage in-order core).
    """

    cycles_per_dot: float = 3.0
    cycles_per_out: float = 12.0
    cycles_fixed: float = 200.0
    e_dot: float = 1.0
    e_byte: float = 0.5
    source: str = dataclasses.field(default="stand-in", init=False)

    def layer_cost(self, shape: LayerShape, w_bits: int, a_bits: int) -> LayerCost:
        """Cost of one layer (see class docstring). Raises ``ValueError`` on unsupported bits."""
        w_bits = check_bits(w_bits, "w_bits")
        a_bits = check_bits(a_bits, "a_bits")
        lanes = 32 // max(w_bits, a_bits)
        outputs = shape.h_out * shape.w_out * shape.cout
        dots = math.ceil(shape.dot_len / lanes) * outputs
        cycles = dots * self.cycles_per_dot + outputs * self.cycles_per_out + self.cycles_fixed
        wbytes = math.ceil(shape.params * w_bits / 8) + 8 * shape.cout
        abytes = math.ceil(shape.h_in * shape.w_in * shape.cin * a_bits / 8)
        energy = dots * self.e_dot + (wbytes + abytes) * self.e_byte
        return LayerCost(float(cycles), float(wbytes), float(abytes), float(energy))


def cost_table(model: CostModel, shapes: list[LayerShape], options: list[tuple[int, int]],
               links: list | None = None):
    """Costs of every layer at every option as a numpy array.

    With ``links`` (one :class:`LayerLink` or ``None`` per layer, :func:`network_shapes`) and a
    model that has ``in_network_cycles``, the cycles are the layer's cycles inside the deployed
    network (kernel corrected for its output precision, plus the work in front of it charged
    to it); the other metrics stay the layer's own.

    Parameters
    ----------
    model : CostModel
        The cost source.
    shapes : list of LayerShape
        One per compute layer.
    options : list of (w_bits, a_bits)
        The precision options (same for every layer).
    links : list of LayerLink or None, optional
        The network context of each layer (see above).

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(len(shapes), len(options), len(COST_METRICS))``.
    """
    import numpy as np

    if not isinstance(model, CostModel):
        raise TypeError(f"{model!r} is not a CostModel (needs .source and .layer_cost())")
    if links is not None and len(links) != len(shapes):
        raise ValueError(f"{len(links)} links for {len(shapes)} layers; give one per layer "
                         "(None where there is none)")
    net = links is not None and hasattr(model, "in_network_cycles")
    out = np.zeros((len(shapes), len(options), len(COST_METRICS)))
    for i, s in enumerate(shapes):
        for j, (wb, ab) in enumerate(options):
            out[i, j] = model.layer_cost(s, wb, ab).as_tuple()
            if net:
                out[i, j, 0] = model.in_network_cycles(s, wb, ab, links[i],
                                                       consumer_linked(links, i))
    return out


class JsonCostTable:
    """A cost model read from a JSON cost table (e.g. written by ``rvmpq costs``).

    Format::

        {"format": "rvmpq-costs-1", "source": "rtl-measured" | "stand-in",
         "entries": [{"shape": LayerShape.key(), "w_bits": 8, "a_bits": 8,
                      "cycles": ..., "weight_bytes": ..., "act_bytes": ..., "energy": ...}, ...],
         "network": [{"shape": ..., "link": LayerLink.key() | null, "w_bits": 8, "a_bits": 8,
                      "in_network_cycles": ...}, ...]}

    ``network`` (optional; written when the table is written with the network's links) holds
    the cycles of each layer inside the deployed network (``in_network_cycles`` of the model
    that wrote it). A lookup of a shape/precision not in the table raises ``KeyError`` naming
    it (measure it, or wrap this table in a model that interpolates).

    Parameters
    ----------
    path : path-like
        The JSON file.
    """

    def __init__(self, path):
        import json
        from pathlib import Path

        d = json.loads(Path(path).read_text())
        if d.get("format") != "rvmpq-costs-1":
            raise ValueError(f"{path}: format {d.get('format')!r}, expected 'rvmpq-costs-1'")
        if d.get("source") not in ("rtl-measured", "stand-in"):
            raise ValueError(f"{path}: source {d.get('source')!r}; allowed values: "
                             "['rtl-measured', 'stand-in']")
        self.source = d["source"]
        self.path = str(path)
        self._t = {(e["shape"], int(e["w_bits"]), int(e["a_bits"])):
                   LayerCost(*(float(e[m]) for m in COST_METRICS)) for e in d["entries"]}
        self._net = {(e["shape"], e.get("link"), int(e["w_bits"]), int(e["a_bits"])):
                     float(e["in_network_cycles"]) for e in d.get("network") or []}

    def layer_cost(self, shape: LayerShape, w_bits: int, a_bits: int) -> LayerCost:
        """Look the layer up; ``KeyError`` if it was not measured."""
        key = (shape.key(), check_bits(w_bits, "w_bits"), check_bits(a_bits, "a_bits"))
        if key not in self._t:
            raise KeyError(f"{self.path}: no cost for {key[0]} at w{w_bits}/a{a_bits}")
        return self._t[key]

    def in_network_cycles(self, shape: LayerShape, w_bits: int, a_bits: int,
                          link: LayerLink | None, consumer_linked: bool = True) -> float:
        """The layer's cycles inside the network from the table's ``network`` section
        (``KeyError`` if that layer / link / precision is not in it); a table without that
        section gives the layer alone (:meth:`layer_cost`). ``consumer_linked`` is accepted for
        the interface: the section already holds each layer's value for its own network
        (:meth:`write` passes it)."""
        if not self._net:
            return self.layer_cost(shape, w_bits, a_bits).cycles
        key = (shape.key(), link.key() if link is not None else None,
               check_bits(w_bits, "w_bits"), check_bits(a_bits, "a_bits"))
        if key not in self._net:
            raise KeyError(f"{self.path}: no in-network cost for {key[0]} behind "
                           f"{key[1]} at w{w_bits}/a{a_bits}")
        return self._net[key]

    @staticmethod
    def write(path, model: CostModel, shapes: list, options: list, links: list | None = None
              ) -> None:
        """Write the table of ``model`` for ``shapes`` x ``options`` (round-trip helper); with
        ``links`` and a model that has ``in_network_cycles``, the ``network`` section too."""
        import json
        from pathlib import Path

        entries = []
        for s in shapes:
            for wb, ab in options:
                c = model.layer_cost(s, wb, ab)
                entries.append(dict(shape=s.key(), w_bits=wb, a_bits=ab,
                                    **dict(zip(COST_METRICS, c.as_tuple()))))
        d = {"format": "rvmpq-costs-1", "source": model.source, "entries": entries}
        if links is not None and hasattr(model, "in_network_cycles"):
            d["network"] = [dict(shape=s.key(), link=ln.key() if ln is not None else None,
                                 w_bits=wb, a_bits=ab,
                                 in_network_cycles=model.in_network_cycles(
                                     s, wb, ab, ln, consumer_linked(links, i)))
                            for i, (s, ln) in enumerate(zip(shapes, links))
                            for wb, ab in options]
        Path(path).write_text(json.dumps(d, indent=1))


def mobilenetv2_shapes(res: int = 32) -> list[LayerShape]:
    """53 compute-layer shapes of MobileNetV2 (width 1.0) at ``res`` x ``res`` input.

    Stem conv 3x3/2, 17 inverted-residual blocks (expand 1x1, depthwise 3x3, project 1x1; the
    first block has no expansion), last 1x1 conv to 1280 and the classifier: a standard
    large-ish solver benchmark (residual adds carry no weights and are left out).
    """
    shapes = [LayerShape("conv", 3, 32, res, res, 3, 3, (2, 2), (1, 1))]
    h, cin = (res + 2 - 3) // 2 + 1, 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            st = s if i == 0 else 1
            hid = cin * t
            if t != 1:
                shapes.append(LayerShape("conv", cin, hid, h, h, 1, 1))
            shapes.append(LayerShape("conv", hid, hid, h, h, 3, 3, (st, st), (1, 1), groups=hid))
            h = (h + 2 - 3) // st + 1
            shapes.append(LayerShape("conv", hid, c, h, h, 1, 1))
            cin = c
    shapes += [LayerShape("conv", cin, 1280, h, h, 1, 1),
               LayerShape("linear", 1280, 1000, logits=True)]
    return shapes
