"""``rvmpq deploy``: the searched network as ONE bare-metal program on the RTL, bit-exact.

::

    rvmpq deploy build/search/config.json --n 32 -o build/deploy

reads the ``config.json`` of ``rvmpq search`` and the integer network ``qnet.json`` beside it,
generates one C program for the whole network on the ``mpq`` core, runs it on the Verilator
model of the RTL over a batch of test inputs, and checks every logit bit for bit against the
numpy integer model (:func:`rvmpq.sw.search.qnn.int_forward`). It also builds the same network
at uniform INT8 (re-exported from the model) on ``mpq`` and in plain RV32IM software on
``baseline`` (the baseline kernels of :mod:`rvmpq.sw.kernels.gen`, int8 storage), and reports
cycles per inference, their ratio, and the cost model's whole-program prediction (what the
search sums for the configuration: kernels, output precisions, glue and residual-add stages)
with its error.

The program
-----------
* Each compute layer (conv / depthwise / linear) is one kernel of :mod:`rvmpq.sw.kernels.gen`
  (:func:`~rvmpq.sw.kernels.gen.emit_layer`, symbols prefixed ``lK_``): weights packed at the
  layer's bits, activations at theirs, requantization fused (``mpq.rqp`` with the layer's
  ``mpq_rq`` CSR value written just before its kernel).
* Between two compute layers a *glue* function (``gK``) moves layer ``K-1``'s packed output
  into layer ``K``'s pre-padded input buffer: max pooling on the packed lanes (SWAR lane-wise
  max, signed lanes by flipping the sign bits), the copy into the interior of the buffer whose
  halo (the next layer's ``zp_in``) is initialised once, and the channel-word prefix the next
  layer reads. A ``flatten`` before a ``linear`` costs nothing: the linear weights are
  re-indexed on the host to read the packed HWC output as it is (padded channels get zero
  weights). Where the glue would be a plain identical copy, the next layer reads the previous
  output buffer directly (no glue). Glue functions are never inlined and see their buffers
  through opaque pointers, so their code depends only on the layouts (the cost model measures
  them in a program of their own: :func:`rvmpq.sw.costs.glue_network`).
* A residual ``add`` (``acc = x0 * mult[0] + x1 * mult[1]``, ``y = requant(acc, 1, shift,
  zp_out, out_bits, out_signed)``, the rule of :mod:`rvmpq.sw.search.qnn`) is a stage of its
  own (``aK``): on ``mpq`` it unpacks the lanes of both packed inputs in registers (each input
  in its producer's layout: its bits, signedness and channel padding) and requantizes and
  packs every output lane with ``mpq.rqp`` (CSR ``mpq_rq`` written at its start, multiplier
  1); on ``baseline`` it is plain RV32IM on the int8 / int16 elements. Its output buffer is
  laid out like a layer's output (``32 / out_bits`` channels per word, padding lanes 0; one
  element per channel on ``baseline``), so the glue and the flatten folding behind it are the
  same as behind a kernel. A compute layer may read any earlier stage's output (``src``), and
  every stage's output buffer is a static array of its own, so a skip tensor stays intact
  until its add has read it. The add needs two inputs of its output's shape, each a
  conv / linear / add output as it is (no broadcasting, no pooling or flatten in between);
  anything else is a :class:`DeployError` naming the layer.
* A channel ``concat`` (``torch.cat(dim=1)``: its parts side by side, all on its grid) is no
  stage and has no buffer: it is a layout. Its parts are conv / linear / add outputs as they
  are (same map, each written at the concat's ``out_bits`` / signedness; not the network
  input, not pooled or flattened, not a concat), and each part stage keeps its own output
  buffer (another layer may read it directly too). A conv, depthwise conv or linear that
  reads the concat (through max pooling and / or flatten, as it reads one producer) gets ONE
  glue function that copies, per output pixel, each part's (max-pooled) first ``u_j`` units
  into its pre-padded input buffer at unit offset ``o_j = u_0 + ... + u_{j-1}``, with ``u_j
  = ceil(c_j / lanes)`` (``mpq``: a unit is a word of ``lanes = 32 / bits`` channels;
  ``baseline``: one element, ``lanes = 1``): every part starts on a word boundary, so the
  consumer reads ``sum(u_j) * lanes`` input channels and gets zero weights at the padding
  lanes between parts (conv: zero columns on the Cin axis; linear: the flatten folding, per
  pixel the parts with their padding). Padding lanes hold whatever the part's kernel wrote
  there (or ``zp_in`` in the halo): with zero weights the integer result is unchanged, and
  the bias needs no correction. A depthwise consumer cannot skip lanes (its channels would
  shift): it is deployed when every part but the last fills whole words at its precision,
  else a :class:`DeployError` names the part. Its buffer addresses come from a table of its
  own read through an opaque pointer (as the add's), so its code is the same in every
  program (the cost model's harness, :func:`rvmpq.sw.costs.glue_network`). A concat read by
  two consumers gets a glue function for each.
* The N test inputs sit in DMEM already packed in the first layer's padded input layout.
  ``rdcycle`` is read before the first stage and after every stage (kernel, glue or add) of each
  inference; the stamps and the int32 logits of every inference are the signature
  (``begin_signature`` .. ``end_signature``): per inference ``[t0, t1, ..., tS, logits...]``.

Memory
------
Every program runs on the SoC with a ``--dmem-kib`` KiB DMEM (default 64: the SoC of the
kernels and the cost table, whose cached Verilator models it reuses; another size is a model of
its own, built once and cached under ``build/rtl/`` by the hash of its Verilog). The linker
script, the fit check and the run all use that one memory map
(:func:`rvmpq.sw.runtime.cc.memory_map`). The searched program must fit it: if it does not,
deploy stops with a :class:`DeployError` that says by how much and which ``--dmem-kib`` would
do. A *comparison* program (uniform INT8 on ``mpq`` or ``baseline``) that does not fit runs on
the smallest power-of-two DMEM up to :data:`DMEM_KIB_MAX` KiB that it fits
(:func:`build_network_fitting`): one log line says so, and ``deploy.json`` (the run's
``dmem_kib`` and ``dmem_note``) and ``report.md`` record it, e.g. ``program_int8: DMEM 128 KiB
(does not fit 64)``. Cycle counts do not depend on the memory size (single-cycle memories).

Outputs (in ``-o`` / ``out``, default ``<build>/deploy`` with ``<build>`` =
:func:`rvmpq.sw.tools.build_root`: ``$RVMPQ_BUILD``, else the checkout's ``build/``, or
``./build`` without a checkout; written atomically: a temporary folder renamed into place,
nothing half-written on failure):
``program.c`` / ``program.elf`` (mixed network, ``mpq``), ``program_int8.c`` /
``.elf``, ``program_baseline.c`` / ``.elf``, ``deploy.json`` and ``report.md``.

Python API: :func:`deploy` (the command), :func:`run_network` (any :class:`QNetwork` on integer
inputs), :func:`emit_network` (the C text), :func:`build_network` /
:func:`build_network_fitting` (compile for a DMEM size), :func:`load_config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rvmpq.sw.search.models import data_spec
from rvmpq.sw.search.qnn import QLayer, QNetwork
from rvmpq.sw.tools import BUILD_HELP, build_root

__all__ = ["DeployError", "ProgramTooLarge", "NotBitExact", "NetworkProgram", "NetworkRun",
           "DeployResult", "load_config", "plan_network", "emit_network", "build_network",
           "build_network_fitting", "check_dmem_kib", "dmem_kib_for", "run_network",
           "predicted_cycles", "deploy", "add_arguments", "main", "DEFAULT_N",
           "DEFAULT_MAX_CYCLES", "DEFAULT_DMEM_KIB", "DMEM_KIB_MIN", "DMEM_KIB_MAX",
           "SUPPORTED_KINDS"]

#: Test inputs run by default.
DEFAULT_N = 32
#: Cycle limit of one program run (the whole batch).
DEFAULT_MAX_CYCLES = 500_000_000
#: Layer kinds the deploy program handles (conv: groups 1 or depthwise; add: a residual add of
#: two tensors of the same shape; concat: channel concatenation of stage outputs, a layout
#: read by the glue of the layers behind it).
SUPPORTED_KINDS = ("conv", "linear", "maxpool", "flatten", "add", "concat")
#: Bytes of DMEM kept free for the stack.
STACK_RESERVE = 2048
#: Output words whose ``mpq.rqp`` packing chains a residual add stage on ``mpq`` interleaves
#: (of one pixel or of consecutive pixels), hiding the instruction's latency.
ADD_CHAINS = 4
#: DMEM of the SoC the programs run on unless ``--dmem-kib`` says otherwise (the SoC of the
#: kernels and the cost table: its models are the cached default ones).
DEFAULT_DMEM_KIB = 64
#: Bounds of ``--dmem-kib`` (a power of two in between) and of the DMEM a comparison program
#: that does not fit is moved to.
DMEM_KIB_MIN = 4
DMEM_KIB_MAX = 1024
CONFIG_FORMAT = "rvmpq-search-config-1"


class DeployError(ValueError):
    """Bad input for deploy (config, network, memory); the message says what and how to fix."""


class ProgramTooLarge(DeployError):
    """A program does not fit a memory of the SoC.

    Attributes
    ----------
    region : str
        ``"IMEM"`` or ``"DMEM"``.
    size : int
        Bytes the region has.
    need : int
        Bytes the program needs there (for DMEM with the :data:`STACK_RESERVE` stack), as far as
        the failed check knows: at least this much.
    """

    def __init__(self, msg: str, region: str, size: int, need: int):
        super().__init__(msg)
        self.region, self.size, self.need = region, size, need


class NotBitExact(RuntimeError):
    """The RTL's logits differ from the numpy integer model (the programs are kept in
    ``<out>.failed/`` for debugging)."""


def _log_default(msg: str) -> None:
    print(f"[deploy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- input --------------------------------------------------------------------------------

def load_config(config_path) -> tuple[dict, QNetwork]:
    """Read a ``config.json`` of ``rvmpq search`` and the ``qnet.json`` beside it.

    Raises :class:`DeployError` for a missing / corrupt file, a wrong format, or a network whose
    per-layer bits disagree with the config.
    """
    p = Path(config_path)
    if not p.is_file():
        raise DeployError(f"{p}: no such config file; run `rvmpq search` first (by default it "
                          f"writes {build_root() / 'search'}/config.json and qnet.json)")
    try:
        cfg = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeployError(f"{p}: not valid JSON ({exc}); re-run `rvmpq search`") from None
    if not isinstance(cfg, dict) or cfg.get("format") != CONFIG_FORMAT:
        fmt = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise DeployError(f"{p}: format {fmt!r}, expected {CONFIG_FORMAT!r} (the config.json "
                          "written by `rvmpq search`)")
    q = p.with_name("qnet.json")
    if not q.is_file():
        raise DeployError(f"{q}: missing; `rvmpq search` writes the integer network next to "
                          "config.json")
    try:
        net = QNetwork.from_dict(json.loads(q.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeployError(f"{q}: not valid JSON ({exc}); re-run `rvmpq search`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DeployError(f"{q}: not an rvmpq integer network ({exc})") from None
    layers = cfg.get("layers")
    if isinstance(layers, list) and layers:
        want = [(int(l.get("w_bits", -1)), int(l.get("a_bits", -1))) for l in layers]
        if want != net.bits():
            raise DeployError(f"{q} has bits {net.bits()} but {p} says {want}: the two files "
                              "come from different searches; re-run `rvmpq search`")
    return cfg, net


# ---- planning -----------------------------------------------------------------------------

@dataclasses.dataclass
class _Stage:
    """One stage of the program (see :func:`plan_network`): a compute layer and the glue in
    front of it, or a residual add."""

    index: int                 # stage index (the C symbols of the stage: lK_, gK, aK, dep_outK)
    layer: QLayer              # possibly re-indexed linear (flatten folded)
    source: QLayer             # the network's layer
    plan: object               # KernelPlan, or _AddPlan for an add
    pool: tuple = (1, 1)       # max-pool window applied to the producer's output
    flatten: bool = False
    glue: str = "none"         # "none" (first layer, add), "alias" (reads the producer's
    #                            output buffer in place), "copy"
    producer: int = -1         # stage whose output this compute stage reads (-1: the input,
    #                            or a concat: ``parts``)
    inputs: tuple = ()         # an add: the two stages it reads (``src`` order)
    parts: tuple = ()          # a compute stage behind a concat: the part stages (channel order)
    concat: QLayer | None = None   # ... and the concat layer

    @property
    def kind(self) -> str:
        """``"kernel"`` (conv / linear) or ``"add"``."""
        return "add" if self.source.kind == "add" else "kernel"


@dataclasses.dataclass(frozen=True)
class _AddPlan:
    """Output layout of a residual-add stage, in the fields of a
    :class:`~rvmpq.sw.kernels.gen.KernelPlan` that the glue, the flatten folding and the
    buffers read: ``mpq`` packs ``lo = 32 // out_bits`` channels per word (``ocw`` words per
    pixel, padding lanes 0), ``baseline`` stores one element per channel (``cout_pad = cout``)."""

    impl: str
    out_bits: int
    lo: int
    cout: int
    cout_pad: int
    ocw: int
    ho: int
    wo: int
    variant: str = "add"

    @property
    def out_words(self) -> int:
        """Words of the output buffer (``mpq``)."""
        return self.ho * self.wo * self.ocw

    @property
    def cin(self) -> int:
        """Channels (as the baseline glue reads a producer's units per pixel)."""
        return self.cout

    @property
    def cw(self) -> int:
        """Words per pixel (``mpq``)."""
        return self.ocw


def _add_plan(l: QLayer, impl: str) -> _AddPlan:
    """The output layout of add layer ``l`` on ``impl``."""
    h, w, c = (int(v) for v in l.out_shape)
    if impl == "mpq":
        lo = 32 // int(l.out_bits)
        ocw = -(-c // lo)
        return _AddPlan(impl, int(l.out_bits), lo, c, ocw * lo, ocw, h, w)
    return _AddPlan(impl, int(l.out_bits), 1, c, c, c, h, w)


def _units(pl) -> tuple[int, int]:
    """(units per input pixel, units per output pixel); a unit is a word (mpq) or an element."""
    if pl.impl == "mpq":
        return pl.cw, pl.ocw
    return pl.cin, pl.cout_pad


def _in_units(pl) -> int:
    """Units of a layer's padded input buffer."""
    return pl.act_words if pl.impl == "mpq" else pl.hp * pl.wp * pl.cin


def _out_units(pl) -> int:
    """Units of a layer's output buffer."""
    return pl.out_words if pl.impl == "mpq" else pl.ho * pl.wo * pl.cout_pad


def _check_add(l: QLayer, ins: list) -> None:
    """What the deploy add handles: two inputs of equal shape (no broadcasting), each another
    stage's output as it is (no pooling or flatten in between), a 2..16-bit output."""
    shapes = [(s.plan.ho, s.plan.wo, s.plan.cout) for s in ins]
    if shapes[0] != shapes[1] or tuple(shapes[0]) != tuple(int(v) for v in l.out_shape):
        raise DeployError(
            f"layer {l.name!r} (add): inputs of shape {'x'.join(map(str, shapes[0]))} "
            f"({ins[0].source.name!r}) and {'x'.join(map(str, shapes[1]))} "
            f"({ins[1].source.name!r}) for an output of "
            f"{'x'.join(str(int(v)) for v in l.out_shape)}; the deploy add needs two inputs "
            "of the output's shape (no broadcasting)")
    if int(l.out_bits) not in (2, 4, 8, 16):
        raise DeployError(f"layer {l.name!r} (add): out_bits={l.out_bits}; an add must "
                          "requantize to 2, 4, 8 or 16 bits (it cannot be the logits layer)")
    if l.mult is None or np.ndim(l.mult) != 1 or len(l.mult) != 2:
        raise DeployError(f"layer {l.name!r} (add): needs two input multipliers (mult), got "
                          f"{None if l.mult is None else np.asarray(l.mult).tolist()!r}")
    if not -(1 << 15) <= int(l.zp_out) < (1 << 15) or not 0 <= int(l.shift) <= 63:
        raise DeployError(f"layer {l.name!r} (add): zp_out={l.zp_out} / shift={l.shift} out "
                          "of range (zp a signed 16-bit integer, shift 0..63)")


@dataclasses.dataclass(frozen=True)
class _Concat:
    """What a concat layer's output is in the plan (no stage of its own): the layer's index in
    the network and the stages of its parts, in channel order."""

    index: int
    parts: tuple


def _check_concat(l: QLayer, parts: list) -> None:
    """What the deploy concat handles: parts of the concat's map, channels adding up to its
    own, each written at its ``out_bits`` / signedness (one grid, as the integer model says)."""
    h, w, c = (int(v) for v in l.out_shape)
    if int(l.out_bits) not in (2, 4, 8, 16):
        raise DeployError(f"layer {l.name!r} (concat): out_bits={l.out_bits}; a concat holds "
                          "2, 4, 8 or 16-bit activations (it cannot be the logits layer)")
    for s in parts:
        if (s.plan.ho, s.plan.wo) != (h, w):
            raise DeployError(
                f"layer {l.name!r} (concat): part {s.source.name!r} has a {s.plan.ho}x"
                f"{s.plan.wo} map, the concat {h}x{w}; the deploy concat joins parts of one "
                "map along the channels")
        sb, ss = int(s.layer.out_bits), bool(s.layer.out_signed)
        if (sb, ss) != (int(l.out_bits), bool(l.out_signed)):
            raise DeployError(
                f"layer {l.name!r} (concat): part {s.source.name!r} writes {sb}-bit "
                f"{'signed' if ss else 'unsigned'} activations, the concat holds "
                f"{l.out_bits}-bit {'signed' if l.out_signed else 'unsigned'}; every part "
                "must requantize to the concat's grid (the network export is inconsistent)")
    got = sum(int(s.plan.cout) for s in parts)
    if got != c:
        raise DeployError(f"layer {l.name!r} (concat): its parts have {got} channels, its "
                          f"output shape says {c}; the network export is inconsistent")


def _concat_units(parts: list, impl: str) -> tuple[int, list, list]:
    """``(lanes, u, o)`` of a concat on ``impl``: channels per unit (``32 // bits`` on mpq, 1
    on baseline), each part's units per pixel ``u_j = ceil(c_j / lanes)`` and its unit offset
    ``o_j = u_0 + ... + u_{j-1}`` in the consumer's pixel."""
    lanes = 32 // int(parts[0].layer.out_bits) if impl == "mpq" else 1
    u = [-(-int(s.plan.cout) // lanes) for s in parts]
    o = [sum(u[:j]) for j in range(len(u))]
    return lanes, u, o


def _concat_layer(l: QLayer, cl: QLayer, parts: list, pool, impl: str) -> QLayer:
    """Compute layer ``l`` re-indexed to read concat ``cl``'s parts as the glue lays them out:
    part ``j`` at channel ``o_j * lanes`` of each pixel (:func:`_concat_units`), zero weights
    at the padding lanes in between (conv: columns of the Cin axis; linear: per pooled pixel,
    the flatten folded). A depthwise ``l`` cannot skip lanes: every part but the last must
    fill whole units."""
    lanes, u, o = _concat_units(parts, impl)
    cs = [int(s.plan.cout) for s in parts]
    off = [sum(cs[:j]) for j in range(len(cs))]
    c, per = sum(cs), sum(u) * lanes
    groups = [(o[j] * lanes, off[j], cs[j]) for j in range(len(parts))]
    if l.kind == "linear":
        h, w = int(cl.out_shape[0]) // pool[0], int(cl.out_shape[1]) // pool[1]
        return _spread_linear(l, h * w, c, per, groups, f"concat {cl.name!r} gives {h}x{w}x{c}")
    if int(l.in_shape[2]) != c:
        raise DeployError(f"layer {l.name!r}: reads {l.in_shape[2]} channels but concat "
                          f"{cl.name!r} gives {c}; the network export is inconsistent")
    if l.groups != 1:
        if not int(l.groups) == c == int(l.weight.shape[0]):
            return l                 # neither groups 1 nor depthwise: plan_layer refuses it
        for j, s in enumerate(parts[:-1]):
            if cs[j] % lanes:
                raise DeployError(
                    f"layer {l.name!r} (depthwise) reads concat {cl.name!r}, whose part "
                    f"{s.source.name!r} has {cs[j]} channels: at {cl.out_bits} bits that does "
                    f"not fill whole words of {lanes} lanes, and a depthwise conv cannot skip "
                    f"padding lanes between parts; use parts (but the last) of a multiple of "
                    f"{lanes} channels, other precisions, or a groups-1 conv")
        return l
    if per == c:
        return l
    return dataclasses.replace(l, weight=_spread_lanes(l.weight, per, groups),
                               in_shape=tuple(l.in_shape[:2]) + (per,))


def _concat_stage(net: QNetwork, l: QLayer, c: _Concat, pool, flatten: bool, stages: list,
                  impl: str, index: int) -> _Stage:
    """The stage of compute layer ``l`` reading concat ``c`` (through ``pool`` / ``flatten``):
    its layer re-indexed to the glue's layout (:func:`_concat_layer`) and planned, the glue
    always a copy (the parts lie in buffers of their own)."""
    from rvmpq.sw.kernels.gen import plan_layer
    from rvmpq.sw.kernels.layer import KernelLayerError

    cl = net.layers[c.index]
    parts = [stages[j] for j in c.parts]
    if (int(cl.out_bits), bool(cl.out_signed)) != (int(l.a_bits), bool(l.a_signed)):
        raise DeployError(
            f"layer {l.name!r} reads {l.a_bits}-bit {'signed' if l.a_signed else 'unsigned'} "
            f"activations but concat {cl.name!r} holds {cl.out_bits}-bit "
            f"{'signed' if cl.out_signed else 'unsigned'}; the network export is inconsistent")
    if l.kind == "conv" and flatten:
        raise DeployError(f"layer {l.name!r}: a conv after flatten is not supported")
    layer = _concat_layer(l, cl, parts, pool, impl)
    try:
        pl = plan_layer(layer, impl)
    except KernelLayerError as exc:
        raise DeployError(f"layer {l.name!r} ({l.kind}, w{l.w_bits}/a{l.a_bits}): {exc}"
                          ) from None
    if l.kind != "linear":
        h, w = int(cl.out_shape[0]) // pool[0], int(cl.out_shape[1]) // pool[1]
        if (pl.h, pl.w) != (h, w):
            raise DeployError(f"layer {l.name!r}: expects a {pl.h}x{pl.w} input, concat "
                              f"{cl.name!r} gives {h}x{w}")
    return _Stage(index, layer, l, pl, tuple(pool), flatten, glue="copy", producer=-1,
                  parts=tuple(c.parts), concat=cl)


def plan_network(net: QNetwork, impl: str = "mpq") -> list[_Stage]:
    """Check ``net`` against what the kernels support and plan the stages: kernels + glue,
    and residual adds.

    A compute layer reads one earlier stage's output or a concat of several (through max
    pooling / flatten), the first one the network input; an ``add`` reads two earlier
    stages' outputs of its own shape; a ``concat`` is no stage (the glue of each layer
    behind it gathers its parts). Every stage's output buffer stays allocated for the whole
    program, so a skip tensor is still there when its add reads it. Raises
    :class:`DeployError` naming the layer and what is supported.
    """
    from rvmpq.sw.kernels.gen import plan_layer
    from rvmpq.sw.kernels.layer import KernelLayerError

    if not net.layers or not net.compute_layers:
        raise DeployError("the network has no conv/linear layer")
    for l in net.layers:
        if l.kind not in SUPPORTED_KINDS:
            raise DeployError(f"layer {l.name!r}: kind {l.kind!r} is not supported by the "
                              f"kernels; supported kinds: {list(SUPPORTED_KINDS)}")
    last = net.compute_layers[-1]
    li = net.layers.index(last)
    for l in net.layers[li + 1:]:
        if l.kind != "flatten":
            raise DeployError(f"layer {l.name!r} ({l.kind}) follows the logits layer "
                              f"{last.name!r}; only flatten may follow the last conv/linear")
    if last.out_bits != 32:
        raise DeployError(f"last layer {last.name!r} has out_bits={last.out_bits}; the logits "
                          "layer must output the raw int32 accumulators (out_bits 32)")
    stages: list[_Stage] = []
    # what each layer's output is: (stage index, -1 for the input or a _Concat, pool window,
    # flattened)
    where: list[tuple] = []

    def source(i: int, s: int) -> tuple:
        if not -1 <= s < i:
            raise DeployError(f"layer {net.layers[i].name!r}: reads layer {s}, which does not "
                              "come before it")
        return (-1, (1, 1), False) if s < 0 else where[s]

    for i, l in enumerate(net.layers):
        srcs = net.sources(i)
        if l.kind not in ("add", "concat") and len(srcs) != 1:
            raise DeployError(f"layer {l.name!r} ({l.kind}) reads {len(srcs)} layers; only an "
                              "add (two) or a concat (two or more) reads several")
        if l.kind == "maxpool":
            p, pool, flat = source(i, srcs[0])
            if p == -1:
                raise DeployError(f"layer {l.name!r}: max pooling before the first conv/linear "
                                  "is not supported; pool the input on the host")
            where.append((p, (pool[0] * int(l.kernel[0]), pool[1] * int(l.kernel[1])), flat))
            continue
        if l.kind == "flatten":
            p, pool, _ = source(i, srcs[0])
            where.append((p, pool, True))
            continue
        if l.kind == "add":
            if len(srcs) != 2:
                raise DeployError(f"layer {l.name!r} (add): reads {len(srcs)} layers, an add "
                                  "reads two (src)")
            ins = []
            for s in srcs:
                p, pool, flat = source(i, s)
                if isinstance(p, _Concat):
                    raise DeployError(
                        f"layer {l.name!r} (add): reads {net.layers[s].name!r}, a concat (or "
                        "its pooling); the deploy add reads outputs of conv/linear/add layers, "
                        "a concat is read by conv / depthwise / linear layers only")
                if p < 0:
                    raise DeployError(f"layer {l.name!r} (add): reads the network input; the "
                                      "deploy add reads outputs of conv/linear/add layers")
                if pool != (1, 1) or flat:
                    raise DeployError(f"layer {l.name!r} (add): reads {net.layers[s].name!r} "
                                      "(max pooling / flatten of a stage's output); the deploy "
                                      "add reads outputs of conv/linear/add layers as they are")
                ins.append(stages[p])
            _check_add(l, ins)
            st = _Stage(len(stages), l, l, _add_plan(l, impl), inputs=tuple(s.index for s in ins))
            stages.append(st)
            where.append((st.index, (1, 1), False))
            continue
        if l.kind == "concat":
            if len(srcs) < 2:
                raise DeployError(f"layer {l.name!r} (concat): reads {len(srcs)} layer; a "
                                  "concat reads two or more (src)")
            parts = []
            for s in srcs:
                p, pool, flat = source(i, s)
                what = net.layers[s].name if s >= 0 else "the network input"
                if isinstance(p, _Concat):
                    raise DeployError(
                        f"layer {l.name!r} (concat): reads {what!r}, a concat (or its "
                        "pooling); a concat of a concat is not supported: list the parts "
                        "in one concat")
                if p == -1:
                    raise DeployError(f"layer {l.name!r} (concat): reads the network input; "
                                      "the deploy concat joins outputs of conv/linear/add "
                                      "layers")
                if pool != (1, 1) or flat:
                    raise DeployError(
                        f"layer {l.name!r} (concat): reads {what!r} (max pooling / flatten "
                        "of a stage's output); the deploy concat joins outputs of "
                        "conv/linear/add layers as they are (pool after the concat instead)")
                parts.append(stages[p])
            _check_concat(l, parts)
            where.append((_Concat(i, tuple(s.index for s in parts)), (1, 1), False))
            continue
        if l is not last and l.out_bits == 32:
            raise DeployError(f"layer {l.name!r}: out_bits 32 is only allowed on the last layer")
        p, pool, flatten = source(i, srcs[0])
        if isinstance(p, _Concat):
            stages.append(_concat_stage(net, l, p, pool, flatten, stages, impl, len(stages)))
            where.append((len(stages) - 1, (1, 1), False))
            continue
        prev = stages[p] if p >= 0 else None
        if stages and prev is None:
            raise DeployError(f"layer {l.name!r}: reads the network input, which only the "
                              "first conv/linear may read")
        layer = l
        if prev is not None:
            pp = prev.layer
            if (pp.out_bits, bool(pp.out_signed)) != (l.a_bits, bool(l.a_signed)):
                raise DeployError(
                    f"layer {l.name!r} reads {l.a_bits}-bit {'signed' if l.a_signed else 'unsigned'}"
                    f" activations but {pp.name!r} writes {pp.out_bits}-bit "
                    f"{'signed' if pp.out_signed else 'unsigned'}; the network export is "
                    "inconsistent")
            if l.kind == "linear" and (flatten or prev.plan.ho * prev.plan.wo > 1):
                layer = _fold_flatten(l, prev.plan, pool, impl)
            elif l.kind == "conv" and flatten:
                raise DeployError(f"layer {l.name!r}: a conv after flatten is not supported")
        try:
            pl = plan_layer(layer, impl)
        except KernelLayerError as exc:
            raise DeployError(f"layer {l.name!r} ({l.kind}, w{l.w_bits}/a{l.a_bits}): {exc}"
                              ) from None
        st = _Stage(len(stages), layer, l, pl, tuple(pool), flatten, producer=p)
        if prev is not None:
            if layer.kind == "linear":
                same = _in_units(pl) == _out_units(prev.plan)
            else:
                same = ((pl.hp, pl.wp) == (pl.h, pl.w) == (prev.plan.ho, prev.plan.wo)
                        and _units(pl)[0] == _units(prev.plan)[1])
            st.glue = "alias" if tuple(pool) == (1, 1) and same else "copy"
        stages.append(st)
        where.append((st.index, (1, 1), False))
    return stages


def _fold_flatten(l: QLayer, prev_pl, pool, impl: str) -> QLayer:
    """The linear layer re-indexed to read the (pooled) packed HWC output of the previous layer
    as it is: every previous output pixel contributes its full padded unit group; weights of
    padded channels are zero (so the padded lanes' values do not matter)."""
    ho, wo = prev_pl.ho // pool[0], prev_pl.wo // pool[1]
    c = prev_pl.cout
    if impl == "mpq":
        per = prev_pl.ocw * prev_pl.lo
    else:
        per = prev_pl.cout_pad
    return _spread_linear(l, ho * wo, c, per, [(0, 0, c)],
                          f"the previous layer gives {ho}x{wo}x{c}")


def _spread_linear(l: QLayer, pixels: int, c: int, per: int, groups: list,
                   what: str) -> QLayer:
    """Linear layer ``l`` (reading ``pixels`` x ``c`` features in HWC order) re-indexed to
    read ``per`` units per pixel: each ``(dst, src, n)`` of ``groups`` moves the weights of
    the ``n`` channels from channel ``src`` of a pixel to lane ``dst``; the other lanes get
    zero weights. ``what`` names the input for the error of a feature count that does not
    match."""
    fin = int(l.weight.shape[1])
    if fin != pixels * c:
        raise DeployError(f"layer {l.name!r}: linear expects {fin} inputs but {what} = "
                          f"{pixels * c}")
    if per == c:
        return l
    w = _spread_lanes(np.asarray(l.weight).reshape(-1, pixels, c), per, groups)
    return dataclasses.replace(l, weight=w.reshape(w.shape[0], -1),
                               in_shape=(1, 1, pixels * per))


def _spread_lanes(w, per: int, groups: list) -> np.ndarray:
    """``w`` (int64) with its last axis widened to ``per`` lanes: each ``(dst, src, n)`` of
    ``groups`` moves the ``n`` entries from ``src`` to lane ``dst``; the other lanes are 0
    (the zero weights of padding lanes)."""
    old = np.asarray(w, dtype=np.int64)
    out = np.zeros(old.shape[:-1] + (per,), dtype=np.int64)
    for dst, src, n in groups:
        out[..., dst:dst + n] = old[..., src:src + n]
    return out


# ---- C emission ---------------------------------------------------------------------------

@dataclasses.dataclass
class NetworkProgram:
    """The C program of a network on a batch (from :func:`emit_network`).

    Attributes
    ----------
    source : str
        C text.
    impl : str
        ``mpq`` or ``baseline`` (also the SoC configuration).
    n : int
        Inferences in the batch.
    stage_names : list of str
        The timed stages in order (``kernel <layer>`` / ``glue -> <layer>`` / ``add <layer>``).
    stage_kinds : list of str
        ``kernel``, ``glue`` or ``add`` per stage.
    record_words : int
        Signature words per inference: ``len(stage_names) + 1`` stamps, then the logits words.
    data_bytes : int
        DMEM bytes of all arrays and buffers (without the stack reserve).
    stages : list
        The plan (:func:`plan_network`).
    """

    source: str
    impl: str
    n: int
    stage_names: list
    stage_kinds: list
    record_words: int
    data_bytes: int
    stages: list


def _vmax(bits: int, signed: bool) -> str:
    """SWAR lane-wise max of two words of ``bits``-bit lanes (C function ``vmax{bits}{s|u}``)."""
    lanes = 32 // bits
    h = sum(1 << (i * bits + bits - 1) for i in range(lanes))
    name = f"vmax{bits}{'s' if signed else 'u'}"
    flip = f" a ^= 0x{h:08x}u; c ^= 0x{h:08x}u;" if signed else ""
    back = f" ^ 0x{h:08x}u" if signed else ""
    return (f"static inline uint32_t {name}(uint32_t a, uint32_t c) {{{flip}\n"
            f"    /* per lane: d = low(a) + 2^(b-1) - low(c) (no borrow across lanes) */\n"
            f"    uint32_t d = (a | 0x{h:08x}u) - (c & ~0x{h:08x}u);\n"
            f"    uint32_t ge = ((a & ~c) | (~(a ^ c) & d)) & 0x{h:08x}u;   /* a >= c */\n"
            f"    uint32_t m = (ge << 1) - (ge >> {bits - 1});                 /* lane masks */\n"
            f"    return ((a & m) | (c & ~m)){back};\n}}\n")


def _elem_type(bits: int, signed: bool) -> str:
    if bits == 32:
        return "int32_t"
    base = "int16_t" if bits == 16 else "int8_t"
    return base if signed else "u" + base


def _pool_max_lines(kh: int, kw: int, wo: int, us: int, mx: str | None, ut: str,
                    ind: str) -> list[str]:
    """The glue's C lines folding the other taps of a ``kh`` x ``kw`` max-pool window into
    ``m`` (unit ``u`` of the window's first pixel ``sp``; a producer row of ``wo`` pixels of
    ``us`` units): ``mx`` the SWAR lane-wise max (``mpq``), else a plain compare of elements
    of type ``ut``."""
    L = []
    for dy in range(kh):
        for dx in range(kw):
            if dy == dx == 0:
                continue
            off = (dy * wo + dx) * us
            if mx:
                L.append(f"{ind}m = {mx}(m, sp[{off} + u]);")
            else:
                L.append(f"{ind}{{ {ut} v = sp[{off} + u]; m = v > m ? v : m; }}")
    return L


def _glue_fn(name: str, st: _Stage, prev: _Stage, src: str, dst: str) -> tuple[str, set]:
    """C function ``name`` moving ``prev``'s output into ``st``'s input buffer."""
    pp, pl = prev.plan, st.plan
    kh, kw = st.pool
    ho, wo = pp.ho // kh, pp.wo // kw
    _, us = _units(pp)
    if st.layer.kind == "linear":      # flattened: the whole (pooled) output, unit groups kept
        ud, wp, ph, pw = _in_units(pl) // (ho * wo), wo, 0, 0
        if ud > us or ud * ho * wo != _in_units(pl):
            raise DeployError(f"layer {st.source.name!r}: cannot lay the {ho}x{wo} output of "
                              f"{prev.source.name!r} out as its input")
    else:
        ud, wp, ph, pw = _units(pl)[0], pl.wp, pl.ph, pl.pw
        if (ho, wo) != (pl.h, pl.w):
            raise DeployError(f"layer {st.source.name!r}: expects a {pl.h}x{pl.w} input, the "
                              f"previous layers give {ho}x{wo}")
    helpers = set()
    if pp.impl == "mpq":
        ut = "uint32_t"
        mx = f"vmax{pp.out_bits}{'s' if prev.layer.out_signed else 'u'}"
        helpers.add((pp.out_bits, bool(prev.layer.out_signed)))
    else:
        ut = _elem_type(pp.out_bits, bool(prev.layer.out_signed))
        mx = None
    L = [f"__attribute__((noinline)) static void {name}(void) {{",
         f"    const {ut} *s = (const {ut} *)({src});",
         f"    {ut} *d = ({ut} *)({dst});",
         "    /* addresses opaque to the compiler (as in the kernels): the code depends on the",
         "       layouts only, not on where the buffers lie (the cost table's glue harness) */",
         "    __asm__ volatile (\"\" : \"+r\"(s), \"+r\"(d));",
         f"    for (int y = 0; y < {ho}; y++) {{",
         f"        for (int x = 0; x < {wo}; x++) {{",
         f"            const {ut} *sp = s + ((y * {kh}) * {pp.wo} + x * {kw}) * {us};",
         f"            {ut} *dp = d + ((y + {ph}) * {wp} + (x + {pw})) * {ud};",
         f"            for (int u = 0; u < {ud}; u++) {{",
         f"                {ut} m = sp[u];"]
    L += _pool_max_lines(kh, kw, pp.wo, us, mx, ut, " " * 16)
    L += ["                dp[u] = m;", "            }", "        }", "    }", "}", ""]
    return "\n".join(L), helpers


def _concat_glue_fn(name: str, st: _Stage, parts: list, srcs: list, dst: str) -> tuple[str, set]:
    """C function ``name`` gathering the outputs of concat ``parts`` (buffers ``srcs``) into
    ``st``'s input buffer ``dst``: per part, per (max-pooled) pixel, its first ``u_j`` units
    at unit offset ``o_j`` of the consumer's pixel (:func:`_concat_units`), one loop nest per
    part. The buffers' addresses come from a table of the function's own read through an
    opaque pointer: the code depends on the layouts only (each part's units per pixel, the
    map, the pooling, the consumer's padded layout), not on where the buffers lie or how the
    compiler merged the program's globals, so it is the same in the cost model's harness."""
    pl = st.plan
    kh, kw = st.pool
    p0 = parts[0]
    pho, pwo = p0.plan.ho, p0.plan.wo
    ho, wo = pho // kh, pwo // kw
    impl = pl.impl
    _, u, o = _concat_units(parts, impl)
    if st.layer.kind == "linear":      # flattened: the whole (pooled) map, parts side by side
        ud, wp, ph, pw = _in_units(pl) // (ho * wo), wo, 0, 0
        if ud != sum(u) or ud * ho * wo != _in_units(pl):
            raise DeployError(f"layer {st.source.name!r}: cannot lay the {ho}x{wo} concat "
                              f"{st.concat.name!r} out as its input")
    else:
        ud, wp, ph, pw = _units(pl)[0], pl.wp, pl.ph, pl.pw
        if ud != sum(u):
            raise DeployError(f"layer {st.source.name!r}: reads {ud} units per pixel, concat "
                              f"{st.concat.name!r} gives {sum(u)}")
    bits, sg = int(p0.layer.out_bits), bool(p0.layer.out_signed)
    helpers = set()
    if impl == "mpq":
        ut = "uint32_t"
        mx = f"vmax{bits}{'s' if sg else 'u'}"
        if (kh, kw) != (1, 1):
            helpers.add((bits, sg))
    else:
        ut = _elem_type(bits, sg)
        mx = None
    n = len(parts)
    L = [f"static void *const {name}_prm[{n + 1}] = {{"
         + ", ".join(f"(void *)({v})" for v in (*srcs, dst)) + "};",
         f"__attribute__((noinline)) static void {name}(void) {{",
         f"    void *const *prm = {name}_prm;",
         "    /* the table's address opaque to the compiler: the code depends on the layouts",
         "       only, not on where the buffers lie (the cost table's glue harness) */",
         "    __asm__ volatile (\"\" : \"+r\"(prm));",
         f"    {ut} *d = ({ut} *)prm[{n}];"]
    for j, sp_ in enumerate(parts):
        us = _units(sp_.plan)[1]
        L += [f"    {{   /* part {j}: {sp_.plan.cout} channels, {u[j]} of {us} units per pixel "
              f"at unit {o[j]} */",
              f"        const {ut} *s = (const {ut} *)prm[{j}];",
              f"        for (int y = 0; y < {ho}; y++) {{",
              f"            for (int x = 0; x < {wo}; x++) {{",
              f"                const {ut} *sp = s + ((y * {kh}) * {pwo} + x * {kw}) * {us};",
              f"                {ut} *dp = d + ((y + {ph}) * {wp} + (x + {pw})) * {ud} + {o[j]};",
              f"                for (int u = 0; u < {u[j]}; u++) {{",
              f"                    {ut} m = sp[u];"]
        L += _pool_max_lines(kh, kw, pwo, us, mx, ut, " " * 20)
        L += ["                    dp[u] = m;", "                }", "            }", "        }",
              "    }"]
    L += ["}", ""]
    return "\n".join(L), helpers


def _lane(word: str, k: int, bits: int, signed: bool) -> str:
    """C expression (int32_t) of lane ``k`` of the ``bits``-bit lanes of uint32_t ``word``."""
    if bits == 32:
        return f"(int32_t){word}"
    if signed:
        left = 32 - bits * (k + 1)
        w = f"({word} << {left})" if left else word
        return f"((int32_t){w} >> {32 - bits})"
    w = f"({word} >> {bits * k})" if k else word
    return f"(int32_t)({w} & 0x{(1 << bits) - 1:x}u)" if bits * (k + 1) < 32 else f"(int32_t){w}"


def _add_rq_baseline(name: str, l: QLayer) -> str:
    """C ``static inline int32_t {name}(int32_t acc)``: ``requant(acc, 1, shift, zp_out, ...)``
    of docs/contracts.md section 3 in plain RV32IM (``|acc| < 2**31``, so for a shift of 32 or
    more the rounded value is 0)."""
    lo, hi = ((-(1 << (l.out_bits - 1)), (1 << (l.out_bits - 1)) - 1) if l.out_signed
              else (0, (1 << l.out_bits) - 1))
    sh = int(l.shift)
    if sh == 0:
        r = "acc"
    elif sh < 32:
        r = f"(acc >> {sh}) + ((acc >> {sh - 1}) & 1)"
    else:
        r = "0"
    return (f"static inline int32_t {name}(int32_t acc) {{\n"
            f"    int32_t r = {r};\n"
            f"    if (r < {lo - 65536}) r = {lo - 65536};\n"
            f"    if (r > {hi + 65536}) r = {hi + 65536};\n"
            f"    r += {int(l.zp_out)};\n"
            f"    return r < {lo} ? {lo} : (r > {hi} ? {hi} : r);\n}}\n")


def _add_fn(name: str, st: _Stage, ins: list, srcs: list, dst: str) -> str:
    """C function ``name`` of a residual add stage: per element ``acc = x0 * mult[0] +
    x1 * mult[1]`` (32-bit wrapping products and sum: exact, ``|acc| < 2**31``) and ``y =
    requant(acc, 1, shift, zp_out, out_bits, out_signed)`` (the integer model's rule).

    ``mpq``: the lanes of both packed inputs are unpacked in registers (shifts), and
    ``mpq.rqp`` (CSR ``mpq_rq`` written at the start, multiplier 1) requantizes and packs each
    output lane, up to :data:`ADD_CHAINS` output words' packing chains interleaved (of one
    pixel or of consecutive pixels); ``baseline``: plain RV32IM on the int8 / int16 elements.
    The inputs' layouts are those of the stages that wrote them (channel padding included); the
    output is the
    add's own layout (:class:`_AddPlan`). Never inlined, buffers and multipliers opaque to
    the compiler: the code depends on the layouts, precisions and ``shift`` / ``zp_out`` only
    (the cost model measures it in a program of its own)."""
    l, pl = st.layer, st.plan
    m0, m1 = (int(v) for v in l.mult)
    npix = pl.ho * pl.wo
    if pl.impl == "mpq":
        # The buffers' addresses, the multipliers and the mpq_rq word come from memory, one
        # table per add read through an opaque pointer, not as constants: how many
        # instructions materialise a constant or an address depends on its value and on how
        # the compiler merged the program's globals, which changed the register allocation,
        # spills and stalls of the same add between the cost harness and the network (7,873
        # vs 7,734 cycles, docs/costs.md "Residual adds"); this way the function's code is the
        # same in every program.
        L = ["#ifndef RVMPQ_ADD_PRM",
             "#define RVMPQ_ADD_PRM",
             "struct add_prm { const uint32_t *s0, *s1; uint32_t *d; int32_t m0, m1; "
             "uint32_t rq; };",
             "#endif",
             f"static const struct add_prm {name}_prm = {{(const uint32_t *)({srcs[0]}), "
             f"(const uint32_t *)({srcs[1]}), (uint32_t *)({dst}), {m0}, {m1}, "
             f"MPQ_RQ_CONFIG({int(l.shift)}, {int(l.zp_out)}, {int(l.out_bits)}, "
             f"{int(bool(l.out_signed))})}};",
             f"__attribute__((noinline)) static void {name}(void) {{",
             f"    const struct add_prm *prm = &{name}_prm;",
             "    __asm__ volatile (\"\" : \"+r\"(prm));",
             "    const uint32_t *s0 = prm->s0, *s1 = prm->s1;",
             "    uint32_t *d = prm->d;",
             "    int32_t m0 = prm->m0, m1 = prm->m1, one = 1;",
             "    __asm__ volatile (\"\" : \"+r\"(s0), \"+r\"(s1), \"+r\"(d), \"+r\"(m0), "
             "\"+r\"(m1), \"+r\"(one));",
             "    mpq_rq_config_write(prm->rq);",
             ]
        lay = [(s.plan.lo, s.plan.out_bits, bool(s.layer.out_signed), s.plan.ocw) for s in ins]

        def pixels(npx: int, ind: str) -> None:
            """``npx`` pixels: their output words' ``mpq.rqp`` packing chains, up to
            :data:`ADD_CHAINS` at a time, interleaved lane by lane (a chain waits only on its
            own previous ``mpq.rqp``)."""
            chains = [(q, w) for q in range(npx) for w in range(pl.ocw)]
            for k0 in range(0, len(chains), ADD_CHAINS):
                batch = chains[k0:k0 + ADD_CHAINS]
                L.append(f"{ind}{{")
                L.append(f"{ind}    uint32_t " + ", ".join(f"pk{q}_{w} = 0" for q, w in batch)
                         + ";")
                loaded = set()
                for i in range(pl.lo):
                    for q, w in batch:
                        c = w * pl.lo + i
                        if c >= pl.cout:
                            continue
                        xs = []
                        for j, (lo, b, sg, ocw) in enumerate(lay):
                            wi = c // lo
                            v = f"w{j}_{q}_{wi}"
                            if v not in loaded:
                                L.append(f"{ind}    uint32_t {v} = s{j}[{q * ocw + wi}];")
                                loaded.add(v)
                            xs.append(_lane(v, c % lo, b, sg))
                        L.append(f"{ind}    pk{q}_{w} = mpq_rqp(pk{q}_{w}, (int32_t)((uint32_t)"
                                 f"{xs[0]} * (uint32_t)m0 + (uint32_t){xs[1]} * (uint32_t)m1), "
                                 "one);")
                for q, w in batch:
                    rest = pl.lo - len(range(w * pl.lo, min((w + 1) * pl.lo, pl.cout)))
                    L.append(f"{ind}    d[{q * pl.ocw + w}] = pk{q}_{w}"
                             + (f" >> {rest * pl.out_bits};" if rest else ";"))
                L.append(f"{ind}}}")

        g = max(1, min(ADD_CHAINS, -(-ADD_CHAINS // pl.ocw)))   # pixels per loop iteration
        if npix >= g:
            L.append(f"    for (int p = 0; p < {npix - npix % g}; p += {g}) {{")
            pixels(g, "        ")
            L += [f"        s0 += {g * lay[0][3]}; s1 += {g * lay[1][3]}; d += {g * pl.ocw};",
                  "    }"]
        if npix % g:
            pixels(npix % g, "    ")
        L += ["}", ""]
        return "\n".join(L)
    ts = [_elem_type(s.plan.out_bits, bool(s.layer.out_signed)) for s in ins]
    to = _elem_type(pl.out_bits, bool(l.out_signed))
    rq = f"{name}_rq"
    L = [_add_rq_baseline(rq, l),
         f"__attribute__((noinline)) static void {name}(void) {{",
         f"    const {ts[0]} *s0 = (const {ts[0]} *)({srcs[0]});",
         f"    const {ts[1]} *s1 = (const {ts[1]} *)({srcs[1]});",
         f"    {to} *d = ({to} *)({dst});",
         f"    int32_t m0 = {m0}, m1 = {m1};",
         "    __asm__ volatile (\"\" : \"+r\"(s0), \"+r\"(s1), \"+r\"(d), \"+r\"(m0), "
         "\"+r\"(m1));",
         f"    for (int p = 0; p < {npix}; p++) {{",
         f"        for (int c = 0; c < {pl.cout}; c++)",
         f"            d[c] = ({to}){rq}((int32_t)((uint32_t)s0[c] * (uint32_t)m0 + "
         "(uint32_t)s1[c] * (uint32_t)m1));",
         f"        s0 += {ins[0].plan.cout_pad}; s1 += {ins[1].plan.cout_pad}; "
         f"d += {pl.cout_pad};",
         "    }", "}", ""]
    return "\n".join(L)


def _c_array(ctype: str, name: str, values, const: bool = True) -> str:
    from rvmpq.sw.kernels.gen import _c_array as gen_array
    text = gen_array(ctype, name, values, 16 if ctype != "uint32_t" else 8)
    return text if const else text.replace("static const ", "static ", 1)


def emit_network(net: QNetwork, xq: np.ndarray, impl: str = "mpq") -> NetworkProgram:
    """The C program running ``net`` on the integer HWC batch ``xq`` (``(N, H, W, C)``, e.g.
    :func:`~rvmpq.sw.search.qnn.quantize_input`) with kernels ``impl`` (``mpq``|``baseline``).
    """
    from rvmpq.sw.kernels.gen import _baseline_types, emit_layer, pack_baseline, pack_mpq

    xq = np.asarray(xq, dtype=np.int64)
    if xq.ndim != 4 or xq.shape[0] < 1:
        raise DeployError(f"inputs must be an (N, H, W, C) integer batch with N >= 1, got "
                          f"shape {xq.shape}")
    stages = plan_network(net, impl)
    first = stages[0]
    if tuple(xq.shape[1:]) != tuple(first.layer.in_shape) and first.layer.kind == "conv":
        raise DeployError(f"inputs have shape {xq.shape[1:]}, the network expects "
                          f"{tuple(first.layer.in_shape)} (HWC)")
    n = xq.shape[0]
    L = ["/* generated by rvmpq.sw.deploy -- do not edit */", "#include <stdint.h>"]
    if impl == "mpq":
        L.append('#include "rvmpq_isa.h"')
    from rvmpq.sw.kernels.gen import RDCYCLE_C
    L.append(RDCYCLE_C)
    nbytes = 0

    # the batch, packed in the first layer's padded input layout
    pack = pack_mpq if impl == "mpq" else pack_baseline
    ins = [pack(first.layer, xq[i].reshape(-1) if first.layer.kind == "linear" else xq[i],
                first.plan)["act"] for i in range(n)]
    per_in = len(ins[0])
    if impl == "mpq":
        in_type, esz = "uint32_t", 4
    else:
        in_type = _baseline_types(first.plan, first.layer)[0]
        esz = 2 if "16" in in_type else 1
    L.append(_c_array(in_type, "dep_inputs", np.concatenate(ins)))
    nbytes += esz * per_in * n
    L += ["static const void *dep_in;   /* the current input (layer 0 reads it) */",
          "static void *dep_logits;     /* where the last layer writes the logits */"]

    # buffers, layers and glue
    names, kinds, calls, glue_text, helpers = [], [], [], [], set()
    out_buf, ptr_init = {}, []
    for st in stages:
        pl, k = st.plan, st.index
        ob = pl.out_bits
        if st.kind == "add":
            # its output buffer (its own layout), then the add function; its inputs are the
            # buffers of earlier stages, all static: a skip tensor stays where it is
            otype = "uint32_t" if impl == "mpq" else _elem_type(ob, bool(st.layer.out_signed))
            out_sym = out_buf[k] = f"dep_out{k}"
            L.append(f"static {otype} {out_sym}[{_out_units(pl)}] __attribute__((aligned(4)));")
            nbytes += (4 if impl == "mpq" else 2 if ob == 16 else 1) * _out_units(pl)
            nbytes += (-nbytes) % 4
            glue_text.append(_add_fn(f"a{k}", st, [stages[j] for j in st.inputs],
                                     [out_buf[j] for j in st.inputs], out_sym))
            a, b = (stages[j] for j in st.inputs)
            names.append(f"add {st.source.name} (INT{a.plan.out_bits} {a.source.name} + "
                         f"INT{b.plan.out_bits} {b.source.name} -> INT{ob})")
            kinds.append("add")
            calls.append(f"a{k}();")
            continue
        in_units, out_units = _in_units(pl), _out_units(pl)
        if impl == "mpq":
            otype, oesz = "uint32_t", 4
            itype, iesz = "uint32_t", 4
        else:
            at, _, ot = _baseline_types(pl, st.layer)
            otype, oesz = ot, (4 if ob == 32 else 2 if ob == 16 else 1)
            itype, iesz = at, 2 if "16" in at else 1
        # input symbol
        if k == 0:
            in_sym = "dep_in"
        elif st.glue == "alias":
            in_sym = out_buf[st.producer]
        else:
            in_sym = f"dep_buf{k}"
            halo = pack(st.layer, np.zeros(st.layer.in_shape, dtype=np.int64)
                        if st.layer.kind == "conv" else np.zeros(pl.cin, dtype=np.int64), pl)["act"]
            if np.any(np.asarray(halo) != 0):
                L.append(_c_array(itype, in_sym, halo, const=False))
            else:
                L.append(f"static {itype} {in_sym}[{in_units}] __attribute__((aligned(4)));")
            nbytes += iesz * in_units
        # output symbol
        if st is stages[-1]:
            out_sym = "dep_logits"
        else:
            out_sym = f"dep_out{k}"
            L.append(f"static {otype} {out_sym}[{out_units}] __attribute__((aligned(4)));")
            nbytes += oesz * out_units
            nbytes += (-nbytes) % 4
        out_buf[k] = out_sym
        # the kernel reads its buffers' addresses from pointer variables, as the one-layer
        # programs of the cost table do (rvmpq.sw.kernels.gen.emit_program): same code
        kin, kout = in_sym, out_sym
        if in_sym != "dep_in":
            kin = f"dep_pin{k}"
            L.append(f"static const void *{kin};")
            ptr_init.append(f"    {kin} = (const void *){in_sym};")
        if out_sym != "dep_logits":
            kout = f"dep_pout{k}"
            L.append(f"static void *{kout};")
            ptr_init.append(f"    {kout} = (void *){out_sym};")
        src = emit_layer(st.layer, pl, f"l{k}_", kin, kout)
        nbytes += 4 * pl.weight_words if impl == "mpq" else (
            (2 if pl.bits == 16 else 1) * pl.cout_pad * pl.kh * pl.kw
            * (1 if pl.variant == "depthwise" else pl.cin))
        nbytes += 8 * pl.cout_pad
        L.append(src.text)
        if k > 0 and st.parts:
            text, h = _concat_glue_fn(f"g{k}", st, [stages[j] for j in st.parts],
                                      [out_buf[j] for j in st.parts], in_sym)
            helpers |= h
            glue_text.append(text)
            what = (f"maxpool {st.pool[0]}x{st.pool[1]} + " if st.pool != (1, 1) else "") + \
                f"concat {st.concat.name} of {len(st.parts)} + copy"
            names.append(f"glue -> {st.source.kind} {st.source.name} ({what})")
            kinds.append("glue")
            calls.append(f"g{k}();")
        elif k > 0 and st.glue == "copy":
            text, h = _glue_fn(f"g{k}", st, stages[st.producer], out_buf[st.producer],
                               in_sym)
            helpers |= h
            glue_text.append(text)
            what = (f"maxpool {st.pool[0]}x{st.pool[1]} + copy" if st.pool != (1, 1)
                     else "copy")
            names.append(f"glue -> {st.source.kind} {st.source.name} ({what})")
            kinds.append("glue")
            calls.append(f"g{k}();")
        names.append(f"kernel {st.source.kind} {st.source.name} ({pl.variant} INT{pl.bits})")
        kinds.append("kernel")
        calls.append((src.setup + " " if src.setup else "") + src.call)
    L += [_vmax(b, s) for b, s in sorted(helpers)]
    L += glue_text

    logit_words = _out_units(stages[-1].plan)
    rec = len(calls) + 1 + logit_words
    sig_words = rec * n
    nbytes += 4 * sig_words
    from rvmpq.sw.kernels.gen import _SIG_ASM
    L.append(_SIG_ASM.format(nbytes=4 * sig_words))
    M = ["int main(void) {", *ptr_init,
         f"    for (int n = 0; n < {n}; n++) {{",
         f"        uint32_t *rec = (uint32_t *)&rvmpq_sig[n * {rec}];",
         f"        dep_in = (const void *)(dep_inputs + n * {per_in});",
         f"        dep_logits = (void *)(rec + {len(calls) + 1});",
         "        /* the stamp pointer in a register before the first stamp (as the kernel",
         "           programs of the cost table do): each window is stamp, call, stamp */",
         "        __asm__ volatile (\"\" : \"+r\"(rec));",
         "        rec[0] = rd_cycle();"]
    for i, c in enumerate(calls):
        M.append(f"        {c}")
        M.append(f"        rec[{i + 1}] = rd_cycle();")
    M += ["    }", "    return 0;", "}", ""]
    L += M
    return NetworkProgram("\n".join(L), impl, n, names, kinds, rec, nbytes, stages)


# ---- build and run ------------------------------------------------------------------------

_OVERFLOW = re.compile(r"section '([^']+)' will not fit in region '(\w+)': overflowed by (\d+) "
                       r"bytes")


def check_dmem_kib(kib) -> int:
    """Return ``kib`` if it is a DMEM size deploy can use (a power of two from
    :data:`DMEM_KIB_MIN` to :data:`DMEM_KIB_MAX` KiB), else raise :class:`DeployError`."""
    if (isinstance(kib, bool) or not isinstance(kib, int) or not
            DMEM_KIB_MIN <= kib <= DMEM_KIB_MAX or kib & (kib - 1)):
        sizes = ", ".join(str(1 << e) for e in range(DMEM_KIB_MIN.bit_length() - 1,
                                                     DMEM_KIB_MAX.bit_length()))
        raise DeployError(f"--dmem-kib {kib}: the DMEM size must be a power of two from "
                          f"{DMEM_KIB_MIN} to {DMEM_KIB_MAX} KiB ({sizes})")
    return kib


def dmem_kib_for(need: int, at_least: int = DEFAULT_DMEM_KIB,
                 at_most: int = DMEM_KIB_MAX) -> int | None:
    """The smallest power-of-two DMEM size in KiB, ``at_least`` or more, that holds ``need``
    bytes; None when that is more than ``at_most`` KiB."""
    kib = 1
    while kib < at_least or kib << 10 < need:
        kib <<= 1
    return kib if kib <= at_most else None


def build_network(prog: NetworkProgram, out_dir, name: str = "program",
                  dmem_kib: int = DEFAULT_DMEM_KIB) -> Path:
    """Compile ``prog`` to ``out_dir/<name>.elf`` (writes ``<name>.c`` too) for the SoC with a
    ``dmem_kib`` KiB DMEM (the memory map of :func:`rvmpq.sw.runtime.cc.memory_map`, the one
    the program then runs on).

    Raises :class:`ProgramTooLarge` (a :class:`DeployError`) when the program does not fit
    IMEM or DMEM, saying by how much; no ELF is left then.
    """
    from rvmpq.sw.kernels.run import CFLAGS, OPT
    from rvmpq.sw.runtime.cc import CompileError, compile_program, memory_map

    mm = memory_map(prog.impl, dmem_kib=dmem_kib)
    kib = mm.dmem_size >> 10

    def fix(need: int) -> str:
        larger = dmem_kib_for(need, 2 * kib)
        return ((f"use a larger DMEM (--dmem-kib {larger}), " if larger else "use ")
                + "fewer test inputs (--n) or lower precisions")

    out_dir = Path(out_dir)
    elf = out_dir / f"{name}.elf"
    elf.unlink(missing_ok=True)        # never leave an ELF linked for another memory map
    need = prog.data_bytes + STACK_RESERVE
    if need > mm.dmem_size:
        per_inf = 4 * prog.record_words
        raise ProgramTooLarge(
            f"the {prog.impl} program needs ~{need} bytes of DMEM (weights, {prog.n} inputs, "
            f"buffers, signature, {STACK_RESERVE} B stack) but DMEM has {mm.dmem_size} "
            f"({kib} KiB): over by {need - mm.dmem_size} bytes; {fix(need)} ({per_inf} B of "
            "signature per input)", "DMEM", mm.dmem_size, need)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = out_dir / f"{name}.c"
    c.write_text(prog.source)
    try:
        compile_program([c], elf, opt=OPT, config=prog.impl, extra_flags=CFLAGS,
                        memory_map_=mm)
    except CompileError as exc:
        m = _OVERFLOW.search(str(exc))
        if m:
            region, over = m.group(2), int(m.group(3))
            size = mm.imem_size if region == "IMEM" else mm.dmem_size
            need = size + over + (STACK_RESERVE if region == "DMEM" else 0)
            how = fix(need) if region == "DMEM" else ("use fewer/smaller layers or lower "
                                                      "precisions (IMEM holds the code)")
            raise ProgramTooLarge(
                f"the {prog.impl} program does not fit {region} ({size} bytes): section "
                f"{m.group(1)} overflows it by {over} bytes; {how}", region, size,
                need) from None
        raise
    _, used = _program_sizes(elf, mm)
    if used + STACK_RESERVE > mm.dmem_size:
        elf.unlink(missing_ok=True)
        raise ProgramTooLarge(
            f"the {prog.impl} program uses {used} bytes of DMEM, leaving less than "
            f"{STACK_RESERVE} bytes for the stack (DMEM {mm.dmem_size}): over by "
            f"{used + STACK_RESERVE - mm.dmem_size} bytes; {fix(used + STACK_RESERVE)}", "DMEM",
            mm.dmem_size, used + STACK_RESERVE)
    return elf


def build_network_fitting(prog: NetworkProgram, out_dir, name: str = "program",
                          dmem_kib: int = DEFAULT_DMEM_KIB, max_dmem_kib: int = DMEM_KIB_MAX,
                          log=None) -> tuple[Path, int]:
    """:func:`build_network` on a ``dmem_kib`` KiB DMEM, or, when the program does not fit
    there, on the smallest power-of-two DMEM up to ``max_dmem_kib`` KiB that it fits (cycle
    counts do not depend on the memory size: single-cycle memories). ``log`` gets one line
    when the size changes.

    Returns ``(elf, kib)``: the ELF and the DMEM size in KiB it is linked for (and must run
    on). Raises :class:`ProgramTooLarge` when it fits no DMEM up to ``max_dmem_kib`` or does
    not fit IMEM.
    """
    kib, first = dmem_kib, None
    while True:
        try:
            elf = build_network(prog, out_dir, name, kib)
        except ProgramTooLarge as exc:
            if exc.region != "DMEM":
                raise
            first = first or exc
            nxt = dmem_kib_for(exc.need, 2 * kib, max_dmem_kib)
            if nxt is None:
                raise ProgramTooLarge(
                    f"{name}: the {prog.impl} program needs at least {exc.need} bytes of DMEM, "
                    f"more than the largest DMEM tried ({max_dmem_kib} KiB); use fewer test "
                    f"inputs (--n)", "DMEM", max_dmem_kib << 10, exc.need) from None
            kib = nxt
            continue
        if first is not None and log:
            log(f"{name}: does not fit DMEM {dmem_kib} KiB (needs at least {first.need} B with "
                f"the stack); running it on a SoC with DMEM {kib} KiB instead (cycle counts do "
                "not depend on the memory size)")
        return elf, kib


def _program_sizes(elf, mm) -> tuple[int, int]:
    """(IMEM bytes, DMEM bytes) of an ELF linked for memory map ``mm`` (DMEM: from its base
    to the end of the last segment, ``.bss`` included)."""
    from rvmpq.sw.runtime.elf import load_elf

    img = load_elf(elf, mm)
    ends = {"i": [0], "d": [0]}
    for sg in img.segments:
        if mm.dmem_base <= sg.addr < mm.dmem_base + mm.dmem_size:
            ends["d"].append(sg.addr + len(sg.data) - mm.dmem_base)
        else:
            ends["i"].append(sg.addr + len(sg.data) - mm.imem_base)
    return max(ends["i"]), max(ends["d"])


@dataclasses.dataclass
class NetworkRun:
    """One network program run on the RTL.

    Attributes
    ----------
    impl : str
    logits : numpy.ndarray
        int64 ``(N, classes)`` from the RTL.
    cycles : numpy.ndarray
        Cycles of each inference (first stamp to last).
    stage_cycles : dict
        Stage name -> mean cycles per inference.
    kernel_cycles, glue_cycles : float
        Mean cycles per inference in kernels / in glue.
    total_cycles : int
        Cycles of the whole program run (start-up and all inferences).
    elf : Path
    imem_bytes, dmem_bytes : int
        Code size; DMEM used by data, buffers and signature (the stack comes on top).
    stage_kinds : list of str
        ``kernel``, ``glue`` or ``add`` per entry of ``stage_cycles``.
    dmem_kib : int
        DMEM size (KiB) of the SoC the program was linked for and ran on.
    requested_dmem_kib : int
        The DMEM size asked for; smaller than ``dmem_kib`` when the program did not fit it and
        was moved to a larger DMEM (:func:`build_network_fitting`).
    add_cycles : float
        Mean cycles per inference in residual-add stages.
    """

    impl: str
    logits: np.ndarray
    cycles: np.ndarray
    stage_cycles: dict
    kernel_cycles: float
    glue_cycles: float
    total_cycles: int
    elf: Path
    imem_bytes: int = 0
    dmem_bytes: int = 0
    stage_kinds: list = dataclasses.field(default_factory=list)
    dmem_kib: int = DEFAULT_DMEM_KIB
    requested_dmem_kib: int = DEFAULT_DMEM_KIB
    add_cycles: float = 0.0

    @property
    def cycles_per_inference(self) -> float:
        """Mean cycles of one inference."""
        return float(np.mean(self.cycles))


def run_network(net: QNetwork, xq: np.ndarray, impl: str = "mpq", out_dir=None,
                name: str = "program", max_cycles: int = DEFAULT_MAX_CYCLES,
                log=None, dmem_kib: int = DEFAULT_DMEM_KIB,
                max_dmem_kib: int | None = None) -> NetworkRun:
    """Generate, compile and run ``net`` on the integer batch ``xq`` on the RTL.

    ``out_dir`` (default a temporary folder) receives ``<name>.c`` and ``<name>.elf``. The SoC
    has a ``dmem_kib`` KiB DMEM (default 64; another size is a Verilator model of its own,
    built once and cached); with ``max_dmem_kib``, a program that does not fit it runs on the
    smallest power-of-two DMEM up to ``max_dmem_kib`` KiB that it fits
    (:func:`build_network_fitting`; ``NetworkRun.dmem_kib`` says which). Raises
    :class:`DeployError` (does not fit, bad network) or ``KernelRunError`` (trap, timeout).
    """
    from rvmpq.sw.kernels.gen import decode_output
    from rvmpq.sw.kernels.run import KernelRunError, soc_verilog_cached
    from rvmpq.sw.runtime.cc import memory_map
    from rvmpq.sw.runtime.runner import run_elf

    log = log or (lambda *_: None)
    prog = emit_network(net, xq, impl)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rvmpq-deploy-")
        out_dir = tmp.name
    try:
        log(f"{name}: compiling ({impl}, {len(prog.stages)} layers, {prog.n} inputs, "
            f"~{prog.data_bytes} B data)")
        if max_dmem_kib is None:
            elf, kib = build_network(prog, out_dir, name, dmem_kib), dmem_kib
        else:
            elf, kib = build_network_fitting(prog, out_dir, name, dmem_kib, max_dmem_kib, log)
        log(f"{name}: running on the RTL ({impl}"
            + (f", DMEM {kib} KiB)" if kib != DEFAULT_DMEM_KIB else ")"))
        t0 = time.time()
        res = run_elf(elf, config=impl, max_cycles=max_cycles, signature=True,
                      verilog=soc_verilog_cached(impl, kib), dmem_kib=kib)
        if res.timed_out:
            raise KernelRunError(f"{name} ({impl}) overran max_cycles={max_cycles}; raise "
                                 "--max-cycles or use fewer inputs (--n)")
        if res.exit_code != 0:
            raise KernelRunError(f"{name} ({impl}) exited with code {res.exit_code} ({elf}); "
                                 f"console: {res.console.decode(errors='replace')!r}")
        log(f"{name}: {res.cycles} cycles in {time.time() - t0:.1f} s")
        sizes = _program_sizes(elf, memory_map(impl, dmem_kib=kib))
    finally:
        if tmp is not None:
            tmp.cleanup()
    sig = np.asarray(res.signature, dtype=np.int64)
    ns = len(prog.stage_names)
    recs = sig[:prog.n * prog.record_words].reshape(prog.n, prog.record_words)
    stamps = recs[:, :ns + 1]
    d = (np.diff(stamps, axis=1)) & 0xFFFFFFFF
    last = prog.stages[-1]
    logits = np.stack([decode_output(last.layer, last.plan, list(r[ns + 1:])).reshape(-1)
                       for r in recs])
    stage_cycles = {nm: float(d[:, i].mean()) for i, nm in enumerate(prog.stage_names)}
    kern = float(sum(d[:, i].mean() for i, k in enumerate(prog.stage_kinds) if k == "kernel"))
    glue = float(sum(d[:, i].mean() for i, k in enumerate(prog.stage_kinds) if k == "glue"))
    adds = float(sum(d[:, i].mean() for i, k in enumerate(prog.stage_kinds) if k == "add"))
    return NetworkRun(impl, logits, d.sum(axis=1), stage_cycles, kern, glue, int(res.cycles),
                      Path(out_dir) / f"{name}.elf", *sizes, stage_kinds=list(prog.stage_kinds),
                      dmem_kib=kib, requested_dmem_kib=dmem_kib, add_cycles=adds)


# ---- cost prediction ----------------------------------------------------------------------

def predicted_cycles(net: QNetwork, cost_model=None) -> dict:
    """The whole-program cycles the cost model (default :class:`rvmpq.sw.costs.RtlCostModel`,
    measuring on the RTL what its cache lacks) predicts for ``net``: what the search sums for
    this configuration (:func:`rvmpq.sw.costs.network_prediction`: per layer its kernel with
    the output at the next layer's bits, plus the glue and the residual-add stages in front of
    it).

    Returns the dict of :func:`~rvmpq.sw.costs.network_prediction` (``layers``, ``kernels``,
    ``glue``, ``adds``, ``total``, ...)."""
    from rvmpq.sw.costs import network_prediction
    from rvmpq.sw.search.costs_api import network_shapes

    if cost_model is None:
        from rvmpq.sw.costs import RtlCostModel
        cost_model = RtlCostModel(verbose=False)
    shapes, links = network_shapes(net)
    bits = [max(w, a) for w, a in net.bits()]
    if hasattr(cost_model, "prefetch"):
        cost_model.prefetch(shapes, [(b, b) for b in dict.fromkeys(bits)], links)
    return network_prediction(cost_model, shapes, links, bits)


# ---- the command --------------------------------------------------------------------------

@dataclasses.dataclass
class DeployResult:
    """What :func:`deploy` measured (also written as ``deploy.json``).

    Attributes
    ----------
    model : str
    n : int
        Test inputs run.
    bits : list
        ``(w_bits, a_bits)`` per compute layer of the deployed network.
    runs : dict
        ``"mpq"`` (the searched network), ``"mpq-int8"``, ``"baseline-int8"`` -> summary dict:
        cycles per inference, per-stage cycles, kernel / glue cycles, ``bit_exact``,
        ``accuracy_rtl``, ``accuracy_numpy``, predicted cycles and error.
    speedups : dict
    out : Path
    cost_source : str
    versions : dict
        ``rtl_hash`` / ``kernel_hash`` of the hardware and kernel generator that ran.
    dmem_kib : int
        DMEM size (KiB) of the SoC the programs run on (``--dmem-kib``). A comparison program
        that does not fit it runs on a larger one: its run's ``dmem_kib`` says which, and its
        ``dmem_note`` why.
    """

    model: str
    n: int
    bits: list
    runs: dict
    speedups: dict
    out: Path
    cost_source: str = ""
    versions: dict = dataclasses.field(default_factory=dict)
    dmem_kib: int = DEFAULT_DMEM_KIB

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return d


def _test_data(model: str, data: str | None, n: int):
    from rvmpq.sw.search.models import load_dataset, model_data

    try:
        ds = load_dataset(model_data(model, data))
    except ValueError as exc:          # a missing or malformed .npz, an unknown name
        raise DeployError(str(exc)) from None
    if n < 1:
        raise DeployError(f"--n {n}: need at least one test input")
    if n > len(ds.y_test):
        raise DeployError(f"--n {n}: the {ds.name} test split has {len(ds.y_test)} inputs")
    return ds, ds.x_test[:n], ds.y_test[:n]


def _int8_network(model: str, data: str | None, ds, log):
    """The same model exported at uniform INT8 (PTQ, default calibration)."""
    from rvmpq.sw.search.models import BUILTIN_MODELS, get_trained_model, trace_model
    from rvmpq.sw.search.quantizer import Quantizer

    if model in BUILTIN_MODELS:
        m, _ = get_trained_model(model, log=log)
    else:
        from rvmpq.sw.search.pipeline import _load_model
        try:
            m, _ = _load_model(model, data, log)
        except ValueError as exc:      # UnsupportedModelError too: a changed or corrupt file
            raise DeployError(f"the uniform-INT8 comparison needs the model: {exc}") from None
    qz = Quantizer(trace_model(m, ds.x_val[:1]), ds.x_val)
    return qz.export([8] * qz.n_compute, [8] * qz.n_compute, meta={"model": model})


def _summary(run: NetworkRun, net: QNetwork, x, y, pred: dict | None) -> dict:
    from rvmpq.sw.search.qnn import int_forward

    ref = int_forward(net, x)
    exact = bool(np.array_equal(run.logits, ref))
    bad = np.argwhere(run.logits != ref)
    acc_rtl = float((run.logits.argmax(1) == y).mean() * 100)
    acc_np = float((ref.argmax(1) == y).mean() * 100)
    d = {"cycles_per_inference": run.cycles_per_inference,
         "cycles_min": int(run.cycles.min()), "cycles_max": int(run.cycles.max()),
         "kernel_cycles": run.kernel_cycles, "glue_cycles": run.glue_cycles,
         "add_cycles": run.add_cycles,
         "stage_cycles": run.stage_cycles, "program_cycles": run.total_cycles,
         "bit_exact": exact, "mismatches": int(len(bad)),
         "first_mismatch": None if exact else [int(v) for v in bad[0]],
         "accuracy_rtl": acc_rtl, "accuracy_numpy": acc_np, "bits": net.bits(),
         "elf": str(run.elf.name), "imem_bytes": run.imem_bytes, "dmem_bytes": run.dmem_bytes,
         "dmem_kib": run.dmem_kib}
    if run.dmem_kib != run.requested_dmem_kib:
        d["dmem_note"] = (f"{run.elf.stem}: DMEM {run.dmem_kib} KiB (does not fit "
                          f"{run.requested_dmem_kib})")
    if pred is not None:
        tot, kt, gt = pred["total"], pred["kernel_total"], pred["glue_total"]
        at = pred.get("add_total", 0.0)
        stages, k, adds = {}, 0, []
        for nm, kind in zip(run.stage_cycles, run.stage_kinds):
            if kind == "kernel":
                if adds:                 # the add stages since the last kernel: charged to
                    stages[adds[-1]] = pred["adds"][k]   # this layer (their sum on the last)
                    adds = []
                stages[nm] = pred["kernels"][k]
                k += 1
            elif kind == "add":
                adds.append(nm)
            else:                        # the glue in front of compute layer k
                stages[nm] = pred["glue"][k]
        d["predicted_layer_cycles"] = pred["layers"]
        d["predicted_stage_cycles"] = stages
        d["predicted_cycles"] = tot
        d["predicted_kernel_cycles"] = kt
        d["predicted_glue_cycles"] = gt
        d["predicted_add_cycles"] = at
        if pred.get("note"):
            d["prediction_note"] = pred["note"]
        d["prediction_error_pct"] = 100.0 * (tot - run.cycles_per_inference) / run.cycles_per_inference
        d["kernel_prediction_error_pct"] = 100.0 * (kt - run.kernel_cycles) / run.kernel_cycles
        d["glue_prediction_error_pct"] = (100.0 * (gt - run.glue_cycles) / run.glue_cycles
                                          if run.glue_cycles else None)
        d["add_prediction_error_pct"] = (100.0 * (at - run.add_cycles) / run.add_cycles
                                         if run.add_cycles else None)
    return d


def _report_md(res: DeployResult, cfg: dict) -> str:
    r = res.runs
    notes = [v["dmem_note"] for v in r.values() if v.get("dmem_note")]
    L = [f"# rvmpq deploy: {res.model}", "",
         f"{res.n} test inputs, one program per row, run on the Verilator model of the RTL; "
         "logits compared bit for bit with the numpy integer model (`int_forward`).", "",
         f"searched bits (w/a per compute layer): {res.bits}  ",
         f"search cost source: `{cfg.get('cost_source', '?')}`, search's predicted cycles: "
         f"{cfg.get('predicted_cycles', float('nan')):.0f}  ",
         f"cost-model prediction below: {res.cost_source}  ",
         f"RTL {res.versions.get('rtl_hash')}, kernels {res.versions.get('kernel_hash')}, "
         f"glue and add code {res.versions.get('glue_hash')}  ",
         f"SoC DMEM: {res.dmem_kib} KiB" + "".join(f"; {note}" for note in notes)
         + (" (cycle counts do not depend on the memory size: single-cycle memories)"
            if notes else ""), "",
         "| program | core | cycles / inference | kernels | glue | adds | predicted | "
         "whole-program error | kernels predicted / error | glue predicted / error | adds "
         "predicted / error | bit-exact | acc RTL | acc numpy |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def err(v, key):
        e = v.get(key)
        return "-" if e is None else f"{e:+.1f}%"
    for k, v in r.items():
        pc = f"{v['predicted_cycles']:.0f}" if "predicted_cycles" in v else "-"
        pk = (f"{v['predicted_kernel_cycles']:.0f} / {err(v, 'kernel_prediction_error_pct')}"
              if "predicted_kernel_cycles" in v else "-")
        pg = (f"{v['predicted_glue_cycles']:.0f} / {err(v, 'glue_prediction_error_pct')}"
              if "predicted_glue_cycles" in v else "-")
        pa = (f"{v['predicted_add_cycles']:.0f} / {err(v, 'add_prediction_error_pct')}"
              if "predicted_add_cycles" in v else "-")
        L.append(f"| {k} | {'mpq' if k.startswith('mpq') else 'baseline'} | "
                 f"{v['cycles_per_inference']:.0f} | {v['kernel_cycles']:.0f} | "
                 f"{v['glue_cycles']:.0f} | {v.get('add_cycles', 0.0):.0f} | {pc} | "
                 f"{err(v, 'prediction_error_pct')} | {pk} | {pg} | {pa} | "
                 f"{'yes' if v['bit_exact'] else 'NO'} | "
                 f"{v['accuracy_rtl']:.2f}% | {v['accuracy_numpy']:.2f}% |")
    L += ["", "Speedups: " + ", ".join(f"{k} {v:.2f}x" for k, v in res.speedups.items()), "",
          "The prediction is what the search sums for this configuration (docs/costs.md, "
          "\"Whole-program cost\"): per compute layer its kernel measured alone, corrected for "
          "the precision its output is requantized to (the next layer's), plus the glue in front "
          "of it (max pooling, the copy into its padded input buffer) measured with the deploy "
          "glue code, and the residual-add stages in front of it measured with the deploy add "
          "code at its precision, an add input at another layer's bits (a block's skip) "
          "unpacked at those bits and charged to that layer (not exactly separable: a few % "
          "of an add, docs/costs.md); every term measured on the RTL. The error is against "
          "the whole program (cycles / inference, every stage's timed window).", ""]
    L += [f"{k}: {v['prediction_note']}  " for k, v in r.items() if v.get("prediction_note")]
    for k, v in r.items():
        L += [f"## {k}: cycles per stage (mean per inference)", "",
              f"`{v['elf']}`: {v.get('imem_bytes', 0)} B code (IMEM), {v.get('dmem_bytes', 0)} B "
              f"data (DMEM, {res.n} inputs and their signature included), run with DMEM "
              f"{v.get('dmem_kib', res.dmem_kib)} KiB", "",
              "| stage | cycles | predicted |", "|---|---|---|"]
        pred = v.get("predicted_stage_cycles") or {}
        for nm, c in v["stage_cycles"].items():
            p = f"{pred[nm]:.0f}" if nm in pred else ""
            L.append(f"| {nm} | {c:.0f} | {p} |")
        L.append("")
    return "\n".join(L)


def deploy(config_path, n: int = DEFAULT_N, out=None, *, compare: bool = True,
           costs: str = "rtl", costs_cache=None, data: str | None = None,
           max_cycles: int = DEFAULT_MAX_CYCLES, dmem_kib: int = DEFAULT_DMEM_KIB,
           log=_log_default) -> DeployResult:
    """``rvmpq deploy``: run the searched network (and, with ``compare``, uniform INT8 on
    ``mpq`` and on ``baseline``) on the RTL; check bit-exactness and accuracy; write ``out``.

    Parameters
    ----------
    config_path : path
        ``config.json`` of ``rvmpq search`` (``qnet.json`` beside it).
    n : int
        Test inputs (the first ``n`` of the model's test split).
    out : path, optional
        Output folder, replaced atomically (default ``build_root() / "deploy"``, resolved at
        the call, so it follows ``$RVMPQ_BUILD``).
    compare : bool
        Also build and run the uniform INT8 network on ``mpq`` and ``baseline``.
    costs : {"rtl", "none"}
        Predict cycles with :class:`rvmpq.sw.costs.RtlCostModel` (measures what its cache lacks)
        or skip the prediction.
    costs_cache : path, optional
        Cache folder of the RTL cost measurements (default ``build_root() / "costs"``).
    data : str, optional
        Data set of a model that is not built in.
    max_cycles : int
        Cycle limit of each program run.
    dmem_kib : int
        DMEM size of the SoC in KiB (a power of two from :data:`DMEM_KIB_MIN` to
        :data:`DMEM_KIB_MAX`; default 64, whose Verilator models are those of the kernels and
        the cost table). The searched program must fit it; a comparison program that does not
        runs on the smallest power-of-two DMEM up to :data:`DMEM_KIB_MAX` KiB that it fits
        (logged, and recorded in ``deploy.json`` and ``report.md``): cycle counts do not
        depend on the memory size.

    Raises
    ------
    DeployError
        Bad input (config, network, memory size, a searched program that does not fit).
    NotBitExact
        The RTL's logits differ from the integer model (programs kept in ``<out>.failed/``).
    KernelRunError
        A program trapped or overran ``max_cycles``.
    """
    if costs not in ("rtl", "none"):
        raise DeployError(f"costs={costs!r}; allowed values: ['rtl', 'none']")
    check_dmem_kib(dmem_kib)
    log = log or (lambda *_: None)
    cfg, net = load_config(config_path)
    model = str(cfg.get("model") or net.meta.get("model") or "")
    out = Path(out) if out is not None else build_root() / "deploy"
    plan_network(net, "mpq")            # fail fast on unsupported layers
    ds, x, y = _test_data(model, data, n)
    c, h, w = ds.input_shape
    if net.layers and tuple(net.layers[0].in_shape) != (h, w, c):
        raise DeployError(f"the network takes (C, H, W) = ({net.layers[0].in_shape[2]}, "
                          f"{net.layers[0].in_shape[0]}, {net.layers[0].in_shape[1]}), the "
                          f"{ds.name} data set has {ds.input_shape}")
    from rvmpq.sw.search.qnn import quantize_input

    nets = {"mpq": (net, "mpq")}
    if compare:
        log(f"exporting {model} at uniform INT8 for the comparison")
        net8 = _int8_network(model, data, ds, log)
        nets["mpq-int8"] = (net8, "mpq")
        nets["baseline-int8"] = (net8, "baseline")
    cm = None
    cost_source = "none"
    if costs == "rtl":
        from rvmpq.sw.costs import RtlCostModel
        cm = RtlCostModel(cache_dir=costs_cache, verbose=False)
        cost_source = (f"rvmpq.sw.costs.RtlCostModel (RTL-measured per layer, cache "
                       f"{cm.dir})")
    from rvmpq.sw.kernels.gen import kernel_hash
    from rvmpq.sw.kernels.run import rtl_hash

    from rvmpq.sw.costs import glue_source_hash

    def source_versions() -> dict:
        # glue_hash: the version of this generator's glue and add code (and of the harness
        # that measures them), the key of the cost model's glue and add measurements (read
        # from the files each time, like the other two, so that the end check can see a change)
        return {"rtl_hash": rtl_hash(), "kernel_hash": kernel_hash(),
                "glue_hash": glue_source_hash()}

    versions = source_versions()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        runs = {}
        files = {"mpq": "program", "mpq-int8": "program_int8", "baseline-int8": "program_baseline"}
        for key, (nt, impl) in nets.items():
            xq = quantize_input(x, nt)
            # the searched program never changes size; a comparison program may grow
            run = run_network(nt, xq, impl, tmp, files[key], max_cycles, log, dmem_kib=dmem_kib,
                              max_dmem_kib=None if key == "mpq" else DMEM_KIB_MAX)
            pred, why = None, None
            if cm is not None and impl == "mpq":
                log(f"{files[key]}: cost-model prediction (measuring uncached layers on the RTL)")
                try:
                    pred = predicted_cycles(nt, cm)
                except (RuntimeError, ValueError) as exc:   # e.g. a layer it cannot measure
                    why = f"{type(exc).__name__}: {exc}"
                    log(f"{files[key]}: WARNING: no cost-model prediction ({why})")
            runs[key] = s = _summary(run, nt, x, y, pred)
            if why:
                s["prediction_unavailable"] = why
            adds = f", adds {s['add_cycles']:.0f}" if s.get("add_cycles") else ""
            log(f"{files[key]}: {s['cycles_per_inference']:.0f} cycles/inference (kernels "
                f"{s['kernel_cycles']:.0f}, glue {s['glue_cycles']:.0f}{adds}), bit-exact "
                f"{s['bit_exact']}, accuracy RTL {s['accuracy_rtl']:.2f}% numpy "
                f"{s['accuracy_numpy']:.2f}%")
            if not s["bit_exact"]:
                failed = out.with_name(out.name + ".failed")
                shutil.rmtree(failed, ignore_errors=True)
                tmp.rename(failed)
                raise NotBitExact(f"{key}: RTL logits differ from int_forward in "
                                  f"{s['mismatches']} values (first at input/class "
                                  f"{s['first_mismatch']}); programs kept in {failed}/")
            assert s["accuracy_rtl"] == s["accuracy_numpy"]
        sp = {}
        if compare:
            m, m8, b8 = (runs[k]["cycles_per_inference"] for k in ("mpq", "mpq-int8",
                                                                   "baseline-int8"))
            sp = {"baseline-int8 / mpq": b8 / m, "baseline-int8 / mpq-int8": b8 / m8,
                  "mpq-int8 / mpq": m8 / m}
        now = source_versions()
        if now != versions:
            raise RuntimeError(f"the RTL, kernel or glue sources changed while deploying "
                               f"({versions} -> {now}); the programs ran on mixed versions: "
                               "run again when hw/, sw/kernels/ and sw/deploy.py are stable")
        res = DeployResult(model, n, [list(b) for b in net.bits()], runs, sp, out, cost_source,
                           versions, dmem_kib)
        (tmp / "deploy.json").write_text(json.dumps(res.to_dict(), indent=1, default=float) + "\n")
        (tmp / "report.md").write_text(_report_md(res, cfg))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out}/ (program.c, program.elf, deploy.json, report.md)")
    return res


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rvmpq deploy``."""
    parser.add_argument("config", metavar="CONFIG.json",
                        help="config.json written by `rvmpq search` (qnet.json beside it)")
    parser.add_argument("--n", type=int, default=DEFAULT_N,
                        help=f"test inputs to run (default {DEFAULT_N})")
    # resolved when the parser is built (each `rvmpq deploy` run): follows $RVMPQ_BUILD
    parser.add_argument("-o", "--out", type=Path, default=build_root() / "deploy",
                        help=f"output folder (default: <build>/deploy, {BUILD_HELP})")
    parser.add_argument("--max-cycles", type=int, default=DEFAULT_MAX_CYCLES,
                        help="cycle limit of each program run")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the uniform-INT8 mpq and baseline programs")
    parser.add_argument("--dmem-kib", type=int, default=DEFAULT_DMEM_KIB, metavar="KIB",
                        help=f"DMEM of the SoC in KiB, a power of two from {DMEM_KIB_MIN} to "
                             f"{DMEM_KIB_MAX} (default {DEFAULT_DMEM_KIB}); the searched program "
                             "must fit it, a uniform-INT8 comparison program that does not runs "
                             "on the smallest power of two that fits (cycles do not depend on "
                             "the size)")
    parser.add_argument("--costs", choices=["rtl", "none"], default="rtl",
                        help="cost-model prediction: RTL-measured whole-program costs (what "
                             "the search sums), or none")
    parser.add_argument("--costs-cache", metavar="DIR", default=None,
                        help="cache folder of the RTL cost measurements (default: "
                             f"<build>/costs, {BUILD_HELP})")
    parser.add_argument("--data", type=data_spec, metavar="digits|mnist1d|PATH.npz",
                        help="data set, for a model that is not built in (as rvmpq search)")


def main(args: argparse.Namespace) -> int:
    """Run ``rvmpq deploy``; exit status 0 ok, 1 run failure, 2 bad input."""
    from rvmpq.sw.kernels.run import KernelRunError
    from rvmpq.sw.runtime.cc import CompileError
    from rvmpq.sw.runtime.runner import RunnerError

    try:
        res = deploy(args.config, args.n, args.out, compare=not args.no_compare,
                     costs=args.costs, costs_cache=args.costs_cache, data=args.data,
                     max_cycles=args.max_cycles, dmem_kib=args.dmem_kib)
    except DeployError as exc:
        print(f"rvmpq deploy: {exc}", file=sys.stderr)
        return 2
    except (KernelRunError, CompileError, RunnerError, NotBitExact, RuntimeError) as exc:
        print(f"rvmpq deploy: {exc}", file=sys.stderr)
        return 1
    print((Path(res.out) / "report.md").read_text())
    return 0
