"""Kernel generator: one layer -> a C program for the core (MPQ extension or plain RV32IM).

Layout and blocking (``mpq`` kernels, written against the generated ``rvmpq_isa.h``)
------------------------------------------------------------------------------------
* **Activations** HWC with channels packed into 32-bit words, ``LA = 32 // a_bits`` lanes per
  word, ``CW = ceil(Cin / LA)`` words per pixel; missing lanes are zero. The input buffer is
  stored *pre-padded* (``(H + 2 ph) x (W + 2 pw)`` pixels, halo = ``zp_in`` in every real lane),
  so the inner loop has no bounds checks. For a fixed kernel row ``ky`` the ``KW * CW`` words a
  pixel needs are contiguous in the padded row, so the inner loop is one linear walk.
* **Weights** pre-packed by the host per block of ``NB`` output channels:
  ``[block][ky][kx*CW + cw][j < NB]`` (the ``NB`` words used together are adjacent); padded
  output channels and padded input lanes are zero words / zero lanes.
* **conv / pointwise / linear** (``MPQ_GEMM = "ldot"``, the default): blocks of ``NB = 16``
  output channels, one core accumulator each, as the outer loop (the block's biases are loaded
  once with ``mpq.accld`` and its 16 multipliers stay in registers); per output pixel and input
  word one activation ``lw`` (one word ahead) and 16 ``mpq.ldot`` that read their weight words
  straight from memory at immediate offsets; then 16 ``mpq.rqpa`` (each re-arms its
  accumulator with the bias for the next pixel). ``MPQ_GEMM = "dot"`` keeps the k5 kernel:
  ``P`` pixels x ``NB`` channels register-blocked, ``P`` activation + ``NB`` weight loads per
  ``P*NB`` ``mpq.dot``.
* **depthwise**: a dot product reduces across lanes, which is wrong for a per-channel
  convolution, so each weight is stored one-hot (``w[c, tap]`` in lane ``c % LA``, zero
  elsewhere): one dot = one MAC. With ``ldot`` the channel words are the outer loop (one
  accumulator per lane) and per pixel and tap one activation ``lw`` feeds ``LA`` ``mpq.ldot``
  (no weight loads); otherwise (outputs wider than a channel word's lanes) ``mpq.dot``. (A
  lane-wise SIMD MAC would fix the one-hot waste; see the report.)
* **Requantization** fused: ``mpq.rqp`` pushes each output channel into a packed output word
  (per-channel ``mult``, per-layer ``shift``/``zp``/``bits`` in CSR ``mpq_rq``); ReLU is the clamp
  of the unsigned output. ``out_bits == 32`` stores the raw int32 accumulators (logits).
* Output HWC packed at ``LO = 32 // out_bits`` lanes, ``ceil(Cout_pad / LO)`` words per pixel,
  ``Cout_pad`` = ``Cout`` rounded up to ``NB`` (padded channels have zero weights, bias and mult);
  a last, partial output word is shifted down so that its unused top lanes are zero.

Baseline kernels: the same layers in plain C, int8 storage (int16 at 16 bits), 2 output pixels
x 4 output channels register-blocked (8 accumulators; depthwise: one channel at a time), the requantization of contracts.md 3 in C (64-bit product).

The program: data arrays (``.rodata`` in DMEM), the kernel, and ``main`` that reads
``rdcycle``/``rdinstret`` around the kernel call (the kernel writes the CSR) and leaves
``[cycles, instret, output...]``
between ``begin_signature``/``end_signature``.

Several layers in one C file: :func:`emit_layer`
------------------------------------------------
``emit_layer(layer, pl, prefix, in_sym, out_sym) -> LayerSource`` emits ONE layer: its constant
data arrays (``{prefix}wt``, ``{prefix}bias``, ``{prefix}mult``), its kernel function
``{prefix}kernel`` and helpers, every file-scope symbol prefixed, and every ``#define`` it makes
``#undef``'d at its end, so any number of layers (distinct prefixes) coexist in one C file.
``in_sym`` / ``out_sym`` are C expressions for the layer's input buffer (laid out as the plan's
padded input: ``pl.act_words`` words for ``mpq``, ``pl.hp*pl.wp*pl.cin`` elements of the
baseline ``act_t`` for ``baseline``) and its output buffer (``pl.out_words`` words / baseline
``out_t`` elements, see :func:`decode_output`). The caller declares both and fills the input's
halo (``zp_in``) and padded lanes. The kernel function is never inlined and writes its own
``mpq_rq`` CSR; the ``mpq.ldot`` kernels also hide their buffer pointers and multipliers from
the compiler (an empty asm), so a kernel's code is the same in every program and does not
depend on the multipliers' values (:attr:`LayerSource.setup` is empty, kept for callers).
:func:`emit_program` (one layer + ``main``) is built on it: one code path, and its timed
window (``rdcycle``, stamp store, call, ``rdcycle``) is the one of
:func:`rvmpq.sw.deploy.emit_network`, so a layer's cycles are the same in both.

How the bodies stay simple: the body emitters (``_emit_mpq_gemm``, ``_emit_mpq_depthwise``,
``_emit_baseline``) keep writing the plain names ``act``, ``out``, ``wt``, ``bias``, ``mult``,
``kernel``, ``act_t``/``wt_t``/``out_t``; :func:`emit_layer` maps them with ``#define`` to the
prefixed symbols and the caller's buffers, also maps every file-scope ``static`` function,
array or variable a body defines (a line starting with ``static``, found by
:data:`_STATIC_FN`), and ``#undef``'s all of it (and every ``#define`` of the body) afterwards.
A body emitter that adds a file-scope symbol not declared on a line starting with ``static``
must add its name to :data:`LAYER_SYMBOLS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np

from rvmpq.sw import golden
from rvmpq.sw.search.qnn import QLayer

from .layer import KernelLayerError, check_layer

__all__ = ["IMPLS", "KernelPlan", "plan_layer", "pack_mpq", "emit_layer", "LayerSource",
           "emit_program", "decode_output", "GENERATOR_VERSION", "kernel_hash",
           "estimate_dmem_bytes", "LAYER_SYMBOLS"]

#: Kernel implementations: ``mpq`` (MPQ extension, runs on config ``mpq``) and ``baseline``
#: (plain RV32IM C, runs on config ``baseline``).
IMPLS = ("mpq", "baseline")
#: Bumped whenever the generated code changes (part of the cost-cache key).
GENERATOR_VERSION = "k7"
#: How the ``mpq`` conv / pointwise / linear kernels compute: ``"ldot"`` (memory-operand
#: ``mpq.ldot`` into the core's accumulators, :func:`_emit_mpq_ldot`) or ``"dot"`` (the
#: register-blocked ``mpq.dot`` kernel of generator version k5, kept for the ablation in the
#: benchmark: set this before planning).
MPQ_GEMM = "ldot"
#: Output channels per block of the ``ldot`` kernel: one accumulator each.
LDOT_NB = 16
#: The ``ldot`` kernel unrolls its kernel-row loop while that code stays this small (it then
#: saves the loop's branch and pointer updates; larger rows keep the loop for IMEM space).
LDOT_UNROLL_BYTES = 6144

#: Attribute of every kernel function: never inlined, so that its code is the same in the
#: one-layer program of the cost table (:func:`emit_program`) and in a whole network
#: (:func:`rvmpq.sw.deploy.emit_network`), whatever the caller keeps in registers.
KERNEL_ATTR = "__attribute__((noinline))"
#: Output pixels register-blocked by the baseline kernel (x 4 output channels).
BASELINE_PIXELS = 2
#: Bytes of DMEM kept for the stack and the runtime.
STACK_RESERVE = 2048


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclasses.dataclass(frozen=True)
class KernelPlan:
    """Layout and blocking decisions for one layer (see the module docstring)."""

    impl: str
    variant: str
    bits: int
    out_bits: int
    la: int          # activation / weight lanes per word
    lo: int          # output lanes per word (1 for the int32 logits)
    cin: int
    cout: int
    cw: int          # input words per pixel
    cout_pad: int
    ocw: int         # output words per pixel
    nb: int          # output channels per register block
    p: int           # output pixels per register block
    h: int
    w: int
    hp: int
    wp: int
    ho: int
    wo: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int

    @property
    def act_words(self) -> int:
        """Words of the padded input buffer."""
        return self.hp * self.wp * self.cw

    @property
    def weight_words(self) -> int:
        """Words of packed weights."""
        if self.variant == "depthwise":
            return self.cw * self.la * self.kh * self.kw
        return self.cout_pad * self.kh * self.kw * self.cw

    @property
    def out_words(self) -> int:
        """Words of the output buffer."""
        return self.ho * self.wo * self.ocw


def plan_layer(layer: QLayer, impl: str = "mpq") -> KernelPlan:
    """Choose layout and blocking for ``layer`` on implementation ``impl`` (``mpq`` | ``baseline``).

    Raises :class:`~rvmpq.sw.kernels.layer.KernelLayerError` for unsupported layers.
    """
    if impl not in IMPLS:
        raise KernelLayerError(f"unknown kernel implementation {impl!r}; supported: {list(IMPLS)}")
    variant = check_layer(layer)
    h, w, cin = layer.in_shape
    cout = int(layer.weight.shape[0])
    kh, kw = layer.kernel
    sh, sw = layer.stride
    ph, pw = layer.padding
    if variant == "linear":
        h = w = kh = kw = sh = sw = 1
        ph = pw = 0
        cin = int(layer.weight.shape[1])
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    bits, ob = layer.a_bits, layer.out_bits
    if impl == "baseline":
        la = lo = 1
        nb = 4 if variant != "depthwise" else 1
        cw = cin
        cout_pad = _ceil(cout, nb) * nb
        return KernelPlan(impl, variant, bits, ob, 1, 1, cin, cout, cw, cout_pad, cout_pad, nb, 1,
                          h, w, h + 2 * ph, w + 2 * pw, ho, wo, kh, kw, sh, sw, ph, pw)
    la = 32 // bits
    lo = 1 if ob == 32 else 32 // ob
    cw = _ceil(cin, la)
    if variant == "depthwise":
        nb, p = 1, 1
        if ob != 32 and lo > la and cw % (lo // la):
            raise KernelLayerError(
                f"depthwise with {cin} channels at a_bits={bits} -> out_bits={ob}: the channel "
                f"words ({cw}) must be a multiple of {lo // la}; use a channel count that is a "
                f"multiple of {lo}")
        cout_pad = cw * la
        ocw = cout_pad if ob == 32 else _ceil(cout_pad, lo)
        cout_pad = ocw if ob == 32 else ocw * lo
    else:
        if MPQ_GEMM == "ldot":
            nb, p = LDOT_NB, 1
        elif variant == "linear":
            nb, p = 8, 1
        else:
            nb, p = 4, min(4, wo)
        cout_pad = _ceil(cout, nb) * nb
        ocw = _ceil(cout_pad, lo)
    return KernelPlan(impl, variant, bits, ob, la, lo, cin, cout, cw, cout_pad, ocw, nb, p,
                      h, w, h + 2 * ph, w + 2 * pw, ho, wo, kh, kw, sh, sw, ph, pw)


def _pad_input(layer: QLayer, a: np.ndarray, pl: KernelPlan) -> np.ndarray:
    """Spatially padded HWC input (halo = zp_in), channels padded to ``cw * la`` with zeros."""
    a = np.asarray(a, dtype=np.int64).reshape(pl.h, pl.w, pl.cin)
    out = np.full((pl.hp, pl.wp, pl.cw * pl.la), layer.zp_in, dtype=np.int64)
    out[..., pl.cin:] = 0
    out[pl.ph:pl.ph + pl.h, pl.pw:pl.pw + pl.w, :pl.cin] = a
    return out


def _weights_khwc(layer: QLayer, pl: KernelPlan) -> np.ndarray:
    """Weights as ``(Cout, kh, kw, Cin_per_group)`` int64."""
    wt = np.asarray(layer.weight, dtype=np.int64)
    if pl.variant == "linear":
        return wt.reshape(pl.cout, 1, 1, pl.cin)
    return wt


def pack_mpq(layer: QLayer, a: np.ndarray | None, pl: KernelPlan) -> dict[str, np.ndarray]:
    """Host-side packing for the ``mpq`` kernel: ``act``, ``wt`` (uint32 words), ``bias``,
    ``mult`` (int32, padded to ``cout_pad``). ``a=None``: no ``act`` (weights only)."""
    la, bits = pl.la, pl.bits
    d = {}
    if a is not None:
        act = _pad_input(layer, a, pl).reshape(pl.hp, pl.wp, pl.cw, la)
        d["act"] = golden.pack_lanes(act, bits).reshape(-1).astype(np.uint32)
    wt = _weights_khwc(layer, pl)
    if pl.variant == "depthwise":
        # one-hot: word (cw, j, ky, kx) holds w[c = cw*la + j, ky, kx] in lane j
        oh = np.zeros((pl.cw, la, pl.kh, pl.kw, la), dtype=np.int64)
        for c in range(pl.cout):
            oh[c // la, c % la, :, :, c % la] = wt[c, :, :, 0]
        w_words = golden.pack_lanes(oh, bits).reshape(-1)
    else:
        full = np.zeros((pl.cout_pad, pl.kh, pl.kw, pl.cw * la), dtype=np.int64)
        full[:pl.cout, :, :, :pl.cin] = wt
        # [block][ky][kx*cw + cw_i][j]
        words = golden.pack_lanes(full.reshape(pl.cout_pad, pl.kh, pl.kw, pl.cw, la), bits)
        nblk = pl.cout_pad // pl.nb
        words = words.reshape(nblk, pl.nb, pl.kh, pl.kw * pl.cw).transpose(0, 2, 3, 1)
        w_words = words.reshape(-1)
    bias = np.zeros(pl.cout_pad, dtype=np.int64)
    bias[:pl.cout] = layer.bias
    mult = np.zeros(pl.cout_pad, dtype=np.int64)
    if layer.mult is not None:
        mult[:pl.cout] = layer.mult
    d.update({"wt": w_words.astype(np.uint32), "bias": bias, "mult": mult})
    return d


def pack_baseline(layer: QLayer, a: np.ndarray | None, pl: KernelPlan) -> dict[str, np.ndarray]:
    """Host-side arrays for the baseline kernel (plain integers, padded input; ``a=None``: no
    ``act``)."""
    d = {} if a is None else {"act": _pad_input(layer, a, pl).reshape(-1)}
    wt = _weights_khwc(layer, pl)
    if pl.variant == "depthwise":
        w_flat = wt[:, :, :, 0].reshape(-1)           # [c][ky][kx]
    else:
        full = np.zeros((pl.cout_pad, pl.kh, pl.kw, pl.cin), dtype=np.int64)
        full[:pl.cout] = wt
        w_flat = full.reshape(-1)                      # [co][ky][kx*cin]
    bias = np.zeros(pl.cout_pad, dtype=np.int64)
    bias[:pl.cout] = layer.bias
    mult = np.zeros(pl.cout_pad, dtype=np.int64)
    if layer.mult is not None:
        mult[:pl.cout] = layer.mult
    d.update({"wt": w_flat, "bias": bias, "mult": mult})
    return d


def estimate_dmem_bytes(pl: KernelPlan) -> int:
    """DMEM bytes the program needs (data, output/signature, stack reserve)."""
    if pl.impl == "mpq":
        data = 4 * (pl.act_words + pl.weight_words + 2 * pl.cout_pad + pl.out_words + 2)
    else:
        esz = 2 if pl.bits == 16 else 1
        osz = 4 if pl.out_bits == 32 else (2 if pl.out_bits == 16 else 1)
        w_elems = pl.cout_pad * pl.kh * pl.kw * (1 if pl.variant == "depthwise" else pl.cin)
        data = (esz * pl.hp * pl.wp * pl.cin + esz * w_elems + 8 * pl.cout_pad
                + osz * pl.ho * pl.wo * pl.cout_pad + 8 + 16)
    return data + STACK_RESERVE


# ---- C emission -------------------------------------------------------------------------

def _c_array(ctype: str, name: str, values, per_line: int = 8) -> str:
    vals = [int(v) for v in np.asarray(values).reshape(-1)]
    if not vals:
        vals = [0]
    fmt = (lambda v: f"0x{v & 0xFFFFFFFF:08x}u") if ctype == "uint32_t" else str
    lines = []
    for i in range(0, len(vals), per_line):
        lines.append("    " + ", ".join(fmt(v) for v in vals[i:i + per_line]) + ",")
    return (f"static const {ctype} {name}[{len(vals)}] __attribute__((aligned(4))) = {{\n"
            + "\n".join(lines) + "\n};\n")


_SIG_ASM = """__asm__(".section .data.rvmpq_sig,\\"aw\\",@progbits\\n"
        ".balign 4\\n.globl begin_signature\\nbegin_signature:\\n"
        ".globl rvmpq_sig\\nrvmpq_sig:\\n.space {nbytes}\\n"
        ".globl end_signature\\nend_signature:\\n.text\\n");
extern volatile uint32_t rvmpq_sig[];
"""

#: ``rd_cycle()``: the ``rdcycle`` stamp of every timed window, here and in
#: :func:`rvmpq.sw.deploy.emit_network` (one definition: the same code around each kernel call).
RDCYCLE_C = ("static inline uint32_t rd_cycle(void) { uint32_t v; "
             "__asm__ volatile (\"rdcycle %0\" : \"=r\"(v) : : \"memory\"); return v; }")

_MAIN = """
{rdcycle}
static inline uint32_t rd_instret(void) {{
    uint32_t v; __asm__ volatile ("rdinstret %0" : "=r"(v) : : "memory"); return v; }}

int main(void) {{
    rvmpq_in = (const void *)act_in;
    rvmpq_out = (void *)&rvmpq_sig[2];
    uint32_t *rec = (uint32_t *)rvmpq_sig;
    /* the timed window as deploy's: stamp (the stamp pointer already in a register), the
       kernel call, stamp */
    __asm__ volatile ("" : "+r"(rec));
    uint32_t i0 = rd_instret();
    rec[0] = rd_cycle();
    {setup}{call}
    uint32_t c1 = rd_cycle();
    uint32_t i1 = rd_instret();
    rec[0] = c1 - rec[0];
    rec[1] = i1 - i0;
    return 0;
}}
"""


def _kernel_open(ap, layer: QLayer, pl: KernelPlan) -> None:
    """The kernel function's first line and, for an ``mpq`` layer that requantizes, its write
    of CSR ``mpq_rq`` (inside the kernel, so the code timed around a kernel call is the same
    ``rdcycle``, stamp store, ``call``, ``rdcycle`` in every program)."""
    ap(f"static void {KERNEL_ATTR} kernel(void) {{")
    if pl.impl == "mpq" and layer.out_bits != 32:
        ap(f"    mpq_rq_config_write(MPQ_RQ_CONFIG({int(layer.shift)}, {int(layer.zp_out)}, "
           f"{int(layer.out_bits)}, {int(bool(layer.out_signed))}));")


def _dot_name(pl: KernelPlan, a_signed: bool) -> str:
    return f"mpq_dot_w{pl.bits}_{'s' if a_signed else 'u'}s"


def _ldot_head(ap, layer: QLayer, pl: KernelPlan, var: str, nblocks: int, wstride: int,
               nb: int, raw: bool, ar_extra: str) -> None:
    """The opening both ``mpq.ldot`` kernels share: the ``LDW`` asm load, the kernel function,
    the block loop over ``var`` (``nblocks`` blocks of ``nb`` accumulators, ``wstride`` weight
    words each) with its ``mpq.accld`` of the biases and, unless ``raw``, the multipliers in
    locals, then the ``oy``/``ox`` loops and the pixel's activation pointer ``ar`` (plus
    ``ar_extra``)."""
    # the activations come from plain C stores (possibly of a previous layer in the same
    # program): the kernel's loads are asm, so a compiler barrier orders them after those
    ap("#define LDW(x, off, base) __asm__ volatile (\"lw %0, %1(%2)\" : \"=r\"(x) : "
       "\"i\"(off), \"r\"(base))")
    # The kernel's code must not depend on where it is called from or on the values of its
    # data (the cost table measures it alone, deploy runs it inside a network): it is a
    # function of its own (KERNEL_ATTR: never inlined into the caller), its input / output
    # pointers and its multipliers pass through an empty asm, so the compiler neither folds
    # the buffers' addresses nor the multipliers' values (it would re-materialise constant
    # multipliers per pixel in a value-dependent way).
    _kernel_open(ap, layer, pl)
    ap("    const uint32_t *act_r = act;")
    ap("    uint32_t *out_r = out;")
    ap("    const int32_t *mult_r = mult;")
    ap("    __asm__ volatile (\"\" : \"+r\"(act_r), \"+r\"(out_r), \"+r\"(mult_r) :: \"memory\");")
    ap(f"    for (int {var} = 0; {var} < {nblocks}; {var}++) {{")
    ap(f"        const uint32_t *wb = wt + {var} * {wstride};")
    ap(f"        const int32_t *bb = bias + {var} * {nb};")
    for j in range(nb):
        ap(f"        mpq_accld({j}, bb, {j});")
    if not raw:
        for j in range(nb):
            ap(f"        const int32_t m{j} = mult_r[{var} * {nb} + {j}];")
    ap(f"        for (int oy = 0; oy < {pl.ho}; oy++) {{")
    ap(f"          for (int ox = 0; ox < {pl.wo}; ox++) {{")
    ap(f"            const uint32_t *ar = act_r + ((oy * {pl.sh}) * {pl.wp} + ox * {pl.sw}) * "
       f"{pl.cw}{ar_extra};")


def _ldw(var: str, word: int, base: str) -> str:
    """The ``LDW`` of the activation word ``word`` words past ``base``: ``lw`` takes a byte
    offset of at most 2047, so from 512 words on the base moves by 512 words at a time (a
    kernel row of more than 512 words: many channels at high precision times a wide kernel)."""
    q, r = divmod(word, 512)
    return f"LDW({var}, {4 * r}, {base if q == 0 else f'({base} + {512 * q})'})"


def _ldot_tail(ap, pl: KernelPlan, var: str, nb: int, raw: bool) -> None:
    """The closing both ``mpq.ldot`` kernels share: the pixel's ``nb`` accumulators stored as
    int32 (``raw``, ``mpq.accrd``) or requantized and packed ``pl.lo`` per word
    (``mpq.rqpa``, which re-arms each accumulator with its bias), then the loops' ends."""
    words = nb if raw else nb // pl.lo
    ap(f"            uint32_t *op = out_r + (oy * {pl.wo} + ox) * {pl.ocw} + {var} * {words};")
    if raw:
        for j in range(nb):
            ap(f"            op[{j}] = mpq_accrd({j});")
    else:
        for k in range(words):
            ap("            {")
            ap("              uint32_t pk = 0;")
            for jj in range(pl.lo):
                j = k * pl.lo + jj
                ap(f"              pk = mpq_rqpa(pk, m{j}, {j});")
            ap(f"              op[{k}] = pk;")
            ap("            }")
    ap("          }")
    ap("        }")
    ap("    }")
    ap("    __asm__ volatile (\"\" ::: \"memory\");")
    ap("}")


def _emit_mpq_ldot(layer: QLayer, pl: KernelPlan) -> str:
    """Kernel body for conv / pointwise / linear with ``mpq.ldot`` into the accumulators.

    Blocks of ``NB = 16`` output channels (one accumulator each) are the outer loop, so the
    block's 16 multipliers stay in registers and its 16 biases are loaded once
    (``mpq.accld``; every read-out re-arms the accumulator with its bias). Per output pixel,
    per kernel row ``ky`` the ``KROW = KW * CW`` input words, fully unrolled: one activation
    ``lw`` (issued one word ahead, so no load-use bubble) and 16 ``mpq.ldot`` whose weight word
    is addressed by an immediate word offset (a base pointer per 8 input words: offsets
    0..127); the ``ky`` loop is unrolled too while the code stays under
    :data:`LDOT_UNROLL_BYTES`. Then ``mpq.rqpa`` pushes the 16 requantized outputs into packed
    words (one chain per word: one per cycle), or ``mpq.accrd`` reads raw int32 logits.
    """
    nb = pl.nb
    assert nb == LDOT_NB and pl.p == 1
    krow = pl.kw * pl.cw
    raw = pl.out_bits == 32
    ldot = f"mpq_ldot_w{pl.bits}_{'s' if layer.a_signed else 'u'}s"
    L = []
    ap = L.append
    _ldot_head(ap, layer, pl, "cb", pl.cout_pad // nb, pl.kh * krow * nb, nb, raw, "")
    ap("            const uint32_t *wp = wb;")
    unroll = pl.kh * krow * (nb + 1) * 4 <= LDOT_UNROLL_BYTES
    rows = range(pl.kh) if unroll else [None]
    if not unroll:
        ap(f"            for (int ky = 0; ky < {pl.kh}; ky++) {{")
    for ky in rows:
        ap("            {")
        ap("              uint32_t x0, x1;")
        # the row's activations: ar + ky * WPAD * CW words; its weights: wp + ky * KROW * NB
        aoff = 0 if ky is None else ky * pl.wp * pl.cw
        woff = 0 if ky is None else ky * krow * nb
        ap(f"              {_ldw('x0', aoff, 'ar')};")
        for t in range(krow):
            cur, nxt = f"x{t % 2}", f"x{(t + 1) % 2}"
            if t + 1 < krow:
                ap(f"              {_ldw(nxt, aoff + t + 1, 'ar')};")
            g, tt = divmod(t, 8)
            wo = woff + 128 * g
            base = "wp" if wo == 0 else f"(wp + {wo})"
            for j in range(nb):
                ap(f"              {ldot}({j}, {cur}, {base}, {tt * nb + j});")
        ap("            }")
    if not unroll:
        ap(f"              ar += {pl.wp * pl.cw};")
        ap(f"              wp += {krow * nb};")
        ap("            }")
    _ldot_tail(ap, pl, "cb", nb, raw)
    return "\n".join(L) + "\n"


def _emit_mpq_gemm(layer: QLayer, pl: KernelPlan) -> str:
    """Kernel body for conv / pointwise / linear on the MPQ extension (the ``ldot`` kernel when
    the plan was made for it, see :data:`MPQ_GEMM`)."""
    if pl.nb == LDOT_NB and pl.p == 1 and MPQ_GEMM == "ldot":
        return _emit_mpq_ldot(layer, pl)
    dot = _dot_name(pl, layer.a_signed)
    nb, lo = pl.nb, pl.lo
    krow = pl.kw * pl.cw
    raw = pl.out_bits == 32
    L = []
    ap = L.append
    ap(f"#define KROW {krow}")
    ap(f"#define KH {pl.kh}")
    ap(f"#define CW {pl.cw}")
    ap(f"#define WPAD {pl.wp}")
    ap(f"#define OCW {pl.ocw}")
    ap(f"#define NBLK {pl.cout_pad // nb}")

    def block_fn(p: int) -> None:
        """``blk{p}(arow, wp, cb)`` computes P pixels x NB channels of block ``cb``; returns via
        the accumulator out-array (fully inlined: the array is scalarised)."""
        ap(f"static inline __attribute__((always_inline)) void blk{p}(const uint32_t *arow, "
           f"const uint32_t *wp, const int32_t *bs, uint32_t acc[{p}][{nb}]) {{")
        for q in range(p):
            for j in range(nb):
                ap(f"    uint32_t a{q}_{j} = (uint32_t)bs[{j}];")
        # no unrolling of the row walk: unrolled or straight-line versions make clang hoist
        # loads and spill accumulators (measured: 54% -> 39% dot share at INT2)
        ap("    for (int ky = 0; ky < KH; ky++) {")
        ap("        const uint32_t *ar = arow + ky * (WPAD * CW);")
        ap("        _Pragma(\"clang loop unroll(disable)\")")
        ap("        for (int t = 0; t < KROW; t++) {")
        for j in range(nb):
            ap(f"            uint32_t w{j} = wp[{j}];")
        for q in range(p):
            ap(f"            uint32_t x{q} = ar[t + {q * pl.sw * pl.cw}];")
            for j in range(nb):
                ap(f"            a{q}_{j} = {dot}(a{q}_{j}, x{q}, w{j});")
        ap(f"            wp += {nb};")
        ap("        }")
        ap("    }")
        for q in range(p):
            for j in range(nb):
                ap(f"    acc[{q}][{j}] = a{q}_{j};")
        ap("}")

    ps = sorted({pl.p, pl.wo % pl.p} - {0})
    for p in ps:
        block_fn(p)

    def pixel_group(p: int, indent: str) -> None:
        """Code for ``p`` pixels starting at ``ox`` (all output channels)."""
        ap(f"{indent}const uint32_t *arow = act + ((oy * {pl.sh}) * WPAD + ox * {pl.sw}) * CW;")
        ap(f"{indent}uint32_t *op = out + (oy * {pl.wo} + ox) * OCW;")
        if raw:
            ap(f"{indent}for (int cb = 0; cb < NBLK; cb++) {{")
            ap(f"{indent}    uint32_t acc[{p}][{nb}];")
            ap(f"{indent}    blk{p}(arow, wt + cb * (KH * KROW * {nb}), bias + cb * {nb}, acc);")
            for q in range(p):
                for j in range(nb):
                    ap(f"{indent}    op[{q} * OCW + cb * {nb} + {j}] = acc[{q}][{j}];")
            ap(f"{indent}}}")
            return
        if nb <= lo:
            bpw = lo // nb      # blocks per output word
            full_words = pl.cout_pad // lo
            tail_blocks = (pl.cout_pad % lo) // nb

            def word(nblocks: int, g: str, ind: str) -> None:
                for q in range(p):
                    ap(f"{ind}uint32_t pk{q} = 0;")
                ap(f"{ind}for (int b = 0; b < {nblocks}; b++) {{")
                ap(f"{ind}    int cb = {g} * {bpw} + b;")
                ap(f"{ind}    uint32_t acc[{p}][{nb}];")
                ap(f"{ind}    blk{p}(arow, wt + cb * (KH * KROW * {nb}), bias + cb * {nb}, acc);")
                ap(f"{ind}    const int32_t *m = mult + cb * {nb};")
                for j in range(nb):
                    ap(f"{ind}    {{ int32_t mj = m[{j}];")
                    for q in range(p):
                        ap(f"{ind}      pk{q} = mpq_rqp(pk{q}, (int32_t)acc[{q}][{j}], mj);")
                    ap(f"{ind}    }}")
                ap(f"{ind}}}")
                # a partial word: move the pushed values from the top lanes down to lane 0
                sh = (lo - nblocks * nb) * pl.out_bits
                for q in range(p):
                    v = f"pk{q} >> {sh}" if sh else f"pk{q}"
                    ap(f"{ind}op[{q} * OCW + {g}] = {v};")

            if full_words:
                ap(f"{indent}for (int g = 0; g < {full_words}; g++) {{")
                word(bpw, "g", indent + "    ")
                ap(f"{indent}}}")
            if tail_blocks:
                ap(f"{indent}{{")
                word(tail_blocks, str(full_words), indent + "    ")
                ap(f"{indent}}}")
        else:
            wpb = nb // lo      # output words per block
            ap(f"{indent}for (int cb = 0; cb < NBLK; cb++) {{")
            ap(f"{indent}    uint32_t acc[{p}][{nb}];")
            ap(f"{indent}    blk{p}(arow, wt + cb * (KH * KROW * {nb}), bias + cb * {nb}, acc);")
            ap(f"{indent}    const int32_t *m = mult + cb * {nb};")
            for k in range(wpb):
                for q in range(p):
                    ap(f"{indent}    uint32_t pk{q}_{k} = 0;")
                for jj in range(lo):
                    j = k * lo + jj
                    ap(f"{indent}    {{ int32_t mj = m[{j}];")
                    for q in range(p):
                        ap(f"{indent}      pk{q}_{k} = mpq_rqp(pk{q}_{k}, (int32_t)acc[{q}][{j}], mj);")
                    ap(f"{indent}    }}")
                for q in range(p):
                    ap(f"{indent}    op[{q} * OCW + cb * {wpb} + {k}] = pk{q}_{k};")
            ap(f"{indent}}}")

    _kernel_open(ap, layer, pl)
    ap(f"    for (int oy = 0; oy < {pl.ho}; oy++) {{")
    main_w = pl.wo - pl.wo % pl.p
    if main_w:
        ap(f"        for (int ox = 0; ox < {main_w}; ox += {pl.p}) {{")
        pixel_group(pl.p, "            ")
        ap("        }")
    if pl.wo % pl.p:
        ap("        {")
        ap(f"            const int ox = {main_w};")
        pixel_group(pl.wo % pl.p, "            ")
        ap("        }")
    ap("    }")
    ap("}")
    return "\n".join(L) + "\n"


def _depthwise_weight_word(j: int, t: int, taps: int) -> tuple[str, int]:
    """Where the depthwise ``ldot`` kernel finds accumulator ``j``'s weight word of tap ``t``
    (word ``j * taps + t`` of the channel word's block at ``wb``): a base pointer and an
    ``mpq.ldot`` offset 0..127. A base serves up to 8 accumulators, fewer where their taps
    would reach past offset 127 (a kernel of more than 16 taps, such as a global average
    pooling), and a kernel of more than 128 taps moves the base every 128 words."""
    word = j * taps + t
    if taps <= 128:
        per = min(8, 128 // taps)
        first = j // per * per * taps
    else:
        first = word // 128 * 128
    return ("wb" if first == 0 else f"(wb + {first})"), word - first


def _emit_mpq_depthwise_ldot(layer: QLayer, pl: KernelPlan) -> str:
    """Depthwise conv with ``mpq.ldot`` (one-hot weight words, 1 MAC per ``ldot``).

    Channel words ``c`` (``LA`` channels, one accumulator each) are the outer loop: their biases
    are loaded once (``mpq.accld``; each read-out re-arms) and their multipliers stay in
    registers. Per output pixel and tap: one activation ``lw`` (one tap ahead) and ``LA``
    ``mpq.ldot`` whose one-hot weight word is addressed by an immediate offset; no weight loads.
    """
    la = pl.la
    taps = pl.kh * pl.kw
    raw = pl.out_bits == 32
    ldot = f"mpq_ldot_w{pl.bits}_{'s' if layer.a_signed else 'u'}s"
    L = []
    ap = L.append
    _ldot_head(ap, layer, pl, "c", pl.cw, la * taps, la, raw, " + c")
    ap("            uint32_t x0, x1;")
    tap_list = [(ky, kx) for ky in range(pl.kh) for kx in range(pl.kw)]

    def load(var, ky, kx):
        row = "ar" if ky == 0 else f"(ar + {ky * pl.wp * pl.cw})"
        ap(f"            {_ldw(var, kx * pl.cw, row)};")

    load("x0", *tap_list[0])
    for t, (ky, kx) in enumerate(tap_list):
        cur, nxt = f"x{t % 2}", f"x{(t + 1) % 2}"
        if t + 1 < len(tap_list):
            load(nxt, *tap_list[t + 1])
        for j in range(la):
            base, off = _depthwise_weight_word(j, t, taps)
            ap(f"            {ldot}({j}, {cur}, {base}, {off});")
    _ldot_tail(ap, pl, "c", la, raw)
    return "\n".join(L) + "\n"


def _emit_mpq_depthwise(layer: QLayer, pl: KernelPlan) -> str:
    """Kernel body for depthwise conv on the MPQ extension (one-hot weights, 1 MAC per dot;
    with ``mpq.ldot`` when :data:`MPQ_GEMM` is ``"ldot"`` and the output words do not span
    channel words)."""
    if MPQ_GEMM == "ldot" and (pl.out_bits == 32 or pl.la >= pl.lo):
        return _emit_mpq_depthwise_ldot(layer, pl)
    dot = _dot_name(pl, layer.a_signed)
    la, lo = pl.la, pl.lo
    taps = pl.kh * pl.kw
    raw = pl.out_bits == 32
    L = []
    ap = L.append
    _kernel_open(ap, layer, pl)
    ap(f"    for (int oy = 0; oy < {pl.ho}; oy++) {{")
    ap(f"      for (int ox = 0; ox < {pl.wo}; ox++) {{")
    ap(f"        const uint32_t *arow = act + ((oy * {pl.sh}) * {pl.wp} + ox * {pl.sw}) * {pl.cw};")
    ap(f"        uint32_t *op = out + (oy * {pl.wo} + ox) * {pl.ocw};")
    # the cw loop: each iteration yields la channels; stores every lo pushes
    if raw or la >= lo:
        ap(f"        for (int c = 0; c < {pl.cw}; c++) {{")
        body_cw = "c"
    else:
        per = lo // la
        ap(f"        for (int g = 0; g < {pl.ocw}; g++) {{")
        ap("          uint32_t pk = 0;")
        ap(f"          for (int s = 0; s < {per}; s++) {{")
        ap(f"            int c = g * {per} + s;")
        body_cw = "c"
    ap(f"          const uint32_t *wp = wt + {body_cw} * {la * taps};")
    for j in range(la):
        ap(f"          uint32_t a{j} = (uint32_t)bias[{body_cw} * {la} + {j}];")
    for ky in range(pl.kh):
        for kx in range(pl.kw):
            off = (ky * pl.wp + kx) * pl.cw
            ap(f"          {{ uint32_t x = arow[{off} + {body_cw}];")
            for j in range(la):
                ap(f"            a{j} = {dot}(a{j}, x, wp[{j * taps + ky * pl.kw + kx}]);")
            ap("          }")
    if raw:
        for j in range(la):
            ap(f"          op[c * {la} + {j}] = a{j};")
        ap("        }")
    elif la >= lo:
        ap(f"          const int32_t *m = mult + c * {la};")
        for k in range(la // lo):
            ap("          { uint32_t pk = 0;")
            for jj in range(lo):
                j = k * lo + jj
                ap(f"            pk = mpq_rqp(pk, (int32_t)a{j}, m[{j}]);")
            ap(f"            op[c * {la // lo} + {k}] = pk; }}")
        ap("        }")
    else:
        ap(f"          const int32_t *m = mult + c * {la};")
        for j in range(la):
            ap(f"          pk = mpq_rqp(pk, (int32_t)a{j}, m[{j}]);")
        ap("          }")
        ap("          op[g] = pk;")
        ap("        }")
    ap("      }")
    ap("    }")
    ap("}")
    return "\n".join(L) + "\n"


def _baseline_types(pl: KernelPlan, layer: QLayer) -> tuple[str, str, str]:
    if pl.bits == 16:
        at = "int16_t" if layer.a_signed else "uint16_t"
        wt = "int16_t"
    else:
        at = "int8_t" if layer.a_signed else "uint8_t"
        wt = "int8_t"
    if pl.out_bits == 32:
        ot = "int32_t"
    elif pl.out_bits == 16:
        ot = "int16_t" if layer.out_signed else "uint16_t"
    else:
        ot = "int8_t" if layer.out_signed else "uint8_t"
    return at, wt, ot


def _emit_baseline(layer: QLayer, pl: KernelPlan) -> str:
    """Plain RV32IM C kernel (no extension): int8/int16 storage, 4 output channels blocked.

    The sums are ``uint32_t``: they wrap modulo 2**32 as the integer model's int32
    accumulator does (``qnn.wrap32``), where a signed ``int32_t`` overflow would be undefined
    behaviour the compiler may assume away; each product of two 8- or 16-bit values fits an
    ``int32_t``."""
    raw = pl.out_bits == 32
    L = []
    ap = L.append
    if not raw:
        lo_, hi_ = ((-(1 << (pl.out_bits - 1)), (1 << (pl.out_bits - 1)) - 1) if layer.out_signed
                    else (0, (1 << pl.out_bits) - 1))
        sh = int(layer.shift)
        ap("static inline int32_t rq(int32_t acc, int32_t mult) {")
        ap("    int64_t p = (int64_t)acc * (int64_t)mult;")
        if sh:
            ap(f"    int64_t r = (p >> {sh}) + ((p >> {sh - 1}) & 1);")
        else:
            ap("    int64_t r = p;")
        ap(f"    if (r < {lo_ - 65536}) r = {lo_ - 65536};")
        ap(f"    if (r > {hi_ + 65536}) r = {hi_ + 65536};")
        ap(f"    int32_t y = (int32_t)r + ({int(layer.zp_out)});")
        ap(f"    return y < {lo_} ? {lo_} : (y > {hi_} ? {hi_} : y);")
        ap("}")
    _kernel_open(ap, layer, pl)
    if pl.variant == "depthwise":
        taps = pl.kh * pl.kw
        ap(f"    for (int oy = 0; oy < {pl.ho}; oy++)")
        ap(f"    for (int ox = 0; ox < {pl.wo}; ox++) {{")
        ap(f"        const act_t *ab = act + ((oy * {pl.sh}) * {pl.wp} + ox * {pl.sw}) * {pl.cin};")
        ap(f"        for (int c = 0; c < {pl.cin}; c++) {{")
        ap("            uint32_t s = (uint32_t)bias[c];")
        ap(f"            const wt_t *w = wt + c * {taps};")
        for ky in range(pl.kh):
            for kx in range(pl.kw):
                ap(f"            s += (uint32_t)((int32_t)ab[{(ky * pl.wp + kx) * pl.cin} + c] * "
                   f"(int32_t)w[{ky * pl.kw + kx}]);")
        o = "(int32_t)s" if raw else "rq((int32_t)s, mult[c])"
        ap(f"            out[(oy * {pl.wo} + ox) * {pl.cout_pad} + c] = {o};")
        ap("        }")
        ap("    }")
        ap("}")
        return "\n".join(L) + "\n"
    krow = pl.kw * pl.cin
    kk = pl.kh * krow

    def pixels(p: int, ind: str) -> None:
        """``p`` output pixels x 4 output channels register-blocked."""
        ap(f"{ind}const act_t *ab = act + ((oy * {pl.sh}) * {pl.wp} + ox * {pl.sw}) * {pl.cin};")
        ap(f"{ind}out_t *op = out + (oy * {pl.wo} + ox) * {pl.cout_pad};")
        ap(f"{ind}for (int co = 0; co < {pl.cout_pad}; co += 4) {{")
        for q in range(p):
            ap(f"{ind}    uint32_t " + ", ".join(f"s{q}_{j} = (uint32_t)bias[co + {j}]"
                                           for j in range(4)) + ";")
        ap(f"{ind}    const wt_t *w0 = wt + co * {kk};")
        ap(f"{ind}    for (int ky = 0; ky < {pl.kh}; ky++) {{")
        ap(f"{ind}        const act_t *ar = ab + ky * {pl.wp * pl.cin};")
        ap(f"{ind}        const wt_t *wr = w0 + ky * {krow};")
        ap(f"{ind}        for (int t = 0; t < {krow}; t++) {{")
        ap(f"{ind}            int32_t " + ", ".join(f"w{j} = wr[t + {j * kk}]" for j in range(4))
           + ";")
        for q in range(p):
            ap(f"{ind}            {{ int32_t x = ar[t + {q * pl.sw * pl.cin}];")
            ap(f"{ind}              " + " ".join(f"s{q}_{j} += (uint32_t)(x * w{j});"
                                                 for j in range(4)) + " }")
        ap(f"{ind}        }}")
        ap(f"{ind}    }}")
        for q in range(p):
            for j in range(4):
                o = f"(int32_t)s{q}_{j}" if raw else f"rq((int32_t)s{q}_{j}, mult[co + {j}])"
                ap(f"{ind}    op[{q * pl.cout_pad} + co + {j}] = {o};")
        ap(f"{ind}}}")

    bp = BASELINE_PIXELS if pl.wo >= BASELINE_PIXELS else 1
    main_w = pl.wo - pl.wo % bp
    ap(f"    for (int oy = 0; oy < {pl.ho}; oy++) {{")
    ap(f"        for (int ox = 0; ox < {main_w}; ox += {bp}) {{")
    pixels(bp, "            ")
    ap("        }")
    if pl.wo % bp:
        ap("        {")
        ap(f"            const int ox = {main_w};")
        pixels(pl.wo % bp, "            ")
        ap("        }")
    ap("    }")
    ap("}")
    return "\n".join(L) + "\n"


#: Plain names the body emitters use for a layer's file-scope symbols; :func:`emit_layer` maps
#: each to ``{prefix}name`` (``act``/``out`` to the caller's buffers).
LAYER_SYMBOLS = ("wt", "bias", "mult", "kernel", "act_t", "wt_t", "out_t")
#: A file-scope ``static`` function, array or variable defined by a body emitter (its name is
#: group 1), after removing ``__attribute__((...))``.
_STATIC_FN = re.compile(r"^static\b[^(\[=;]*?\b([A-Za-z_]\w*)\s*[(\[=;]", re.M)
_ATTR = re.compile(r"__attribute__\s*\(\(.*?\)\)")
_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)", re.M)


@dataclasses.dataclass(frozen=True)
class LayerSource:
    """One layer's C code from :func:`emit_layer`.

    Attributes
    ----------
    text : str
        File-scope C: typedefs, data arrays, helpers and the kernel function (all prefixed).
    setup : str
        Statements to run before the kernel: empty since generator version k7 (the kernel
        writes its own ``mpq_rq`` CSR, so a timed call is the call alone); kept for callers.
    call : str
        The statement that runs the kernel (``{prefix}kernel();``).
    plan : KernelPlan
    symbols : dict[str, str]
        Plain name -> prefixed C symbol (``wt``, ``bias``, ``mult``, ``kernel``, the body's
        ``static`` functions; ``act_t``/``wt_t``/``out_t`` for the baseline).
    """

    text: str
    setup: str
    call: str
    plan: KernelPlan
    symbols: dict


def emit_layer(layer: QLayer, pl: KernelPlan, prefix: str, in_sym: str,
               out_sym: str) -> LayerSource:
    """C code for one layer that can share a C file with other layers (see the module docstring).

    Parameters
    ----------
    layer : QLayer
    pl : KernelPlan
        From :func:`plan_layer` (its ``impl`` picks the kernel).
    prefix : str
        C identifier prefix of every file-scope symbol (e.g. ``"l3_"``); distinct per layer.
    in_sym, out_sym : str
        C expressions of the input / output buffers (cast to the kernel's element type).
    """
    if not re.fullmatch(r"[A-Za-z_]\w*", prefix):
        raise ValueError(f"prefix {prefix!r} must be a C identifier (letters, digits, _)")
    if pl.impl == "mpq":
        d = pack_mpq(layer, None, pl)
        types = None
        arrays = [_c_array("uint32_t", f"{prefix}wt", d["wt"])]
        body = (_emit_mpq_depthwise(layer, pl) if pl.variant == "depthwise"
                else _emit_mpq_gemm(layer, pl))
        act_expr = f"((const uint32_t *)({in_sym}))"
        out_expr = f"((uint32_t *)({out_sym}))"
    else:
        d = pack_baseline(layer, None, pl)
        types = _baseline_types(pl, layer)
        arrays = [_c_array(f"{prefix}wt_t", f"{prefix}wt", d["wt"], 16)]
        body = _emit_baseline(layer, pl)
        act_expr = f"((const {prefix}act_t *)({in_sym}))"
        out_expr = f"(({prefix}out_t *)({out_sym}))"
    arrays.append(_c_array("int32_t", f"{prefix}bias", d["bias"]))
    arrays.append(_c_array("int32_t", f"{prefix}mult", d["mult"]))
    names = list(LAYER_SYMBOLS)
    for fn in _STATIC_FN.findall(_ATTR.sub("", body)):
        if fn not in names:
            names.append(fn)
    if types is None:
        names = [n for n in names if n not in ("act_t", "wt_t", "out_t")]
    symbols = {n: prefix + n for n in names}
    L = [f"/* ---- layer {layer.name}: {pl.impl} {pl.variant} INT{pl.bits} -> "
         f"{pl.out_bits}-bit out ---- */"]
    if types is not None:
        L += [f"typedef {t} {prefix}{n};" for t, n in zip(types, ("act_t", "wt_t", "out_t"))]
    L += arrays
    L += [f"#define {n} {s}" for n, s in symbols.items()]
    L += [f"#define act {act_expr}", f"#define out {out_expr}"]
    L.append(body)
    undef = list(symbols) + ["act", "out"]
    undef += [m for m in dict.fromkeys(_DEFINE.findall(body)) if m not in undef]
    L += [f"#undef {n}" for n in undef]
    return LayerSource(text="\n".join(L) + "\n", setup="",
                       call=f"{symbols['kernel']}();", plan=pl, symbols=symbols)


def emit_program(layer: QLayer, a: np.ndarray, impl: str = "mpq") -> tuple[str, KernelPlan]:
    """The complete C program (data, kernel, main) for ``layer`` on input ``a``.

    Returns
    -------
    (str, KernelPlan)
        C source text and the plan it follows.
    """
    pl = plan_layer(layer, impl)
    L = ["/* generated by rvmpq.sw.kernels.gen -- do not edit */",
         "#include <stdint.h>"]
    if impl == "mpq":
        L.append('#include "rvmpq_isa.h"')
        L.append(_c_array("uint32_t", "act_in", pack_mpq(layer, a, pl)["act"]))
        nsig = 2 + pl.out_words
    else:
        at, _, ot = _baseline_types(pl, layer)
        L.append(_c_array(at, "act_in", pack_baseline(layer, a, pl)["act"], 16))
        osz = {"int32_t": 4, "int16_t": 2, "uint16_t": 2}.get(ot, 1)
        nsig = 2 + _ceil(osz * pl.ho * pl.wo * pl.cout_pad, 4)
    L.append(_SIG_ASM.format(nbytes=4 * nsig))
    # the buffers' addresses in pointer variables, as in a deployed network (emit_network)
    L.append("static const void *rvmpq_in;\nstatic void *rvmpq_out;")
    src = emit_layer(layer, pl, "l0_", "rvmpq_in", "rvmpq_out")
    L.append(src.text)
    setup = src.setup + " " if src.setup else ""
    L.append(_MAIN.format(rdcycle=RDCYCLE_C, setup=setup, call=src.call))
    return "\n".join(L), pl


def decode_output(layer: QLayer, pl: KernelPlan, words: list[int]) -> np.ndarray:
    """The layer output (int64 HWC ``layer.out_shape``) from the signature words after
    ``[cycles, instret]``."""
    w = np.asarray(words, dtype=np.int64).astype(np.uint32)
    ho, wo, cout = pl.ho, pl.wo, pl.cout
    if pl.impl == "mpq":
        w = w[:pl.out_words].reshape(ho, wo, pl.ocw)
        if pl.out_bits == 32:
            v = w.view(np.int32).astype(np.int64)
        else:
            v = golden.unpack_lanes(w, pl.out_bits, bool(layer.out_signed)).reshape(ho, wo, -1)
        return v[..., :cout].reshape(layer.out_shape)
    raw = w.astype("<u4").tobytes()
    if pl.out_bits == 32:
        dt = "<i4"
    elif pl.out_bits == 16:
        dt = "<i2" if layer.out_signed else "<u2"
    else:
        dt = "<i1" if layer.out_signed else "<u1"
    n = ho * wo * pl.cout_pad
    v = np.frombuffer(raw, dtype=dt)[:n].astype(np.int64).reshape(ho, wo, pl.cout_pad)
    return v[..., :cout].reshape(layer.out_shape)


def kernel_hash() -> str:
    """Hash of the kernel generator's source (part of the cost-cache key)."""
    h = hashlib.sha256(GENERATOR_VERSION.encode())
    for f in ("gen.py", "layer.py"):
        h.update((Path(__file__).parent / f).read_bytes())
    return h.hexdigest()[:16]
