"""Layer kernels on the RTL, bit for bit against the integer network model (sw/search/qnn.py).

Every kernel variant (conv KxK, pointwise 1x1, depthwise 3x3 / 5x5 / 12x12, fully connected) at
every precision (INT2/4/8/16), on the ``mpq`` core (MPQ kernels) and on the ``baseline`` core
(plain RV32IM kernels), with random small shapes, data and requantization parameters.

Seeded: the seed is printed; replay a failure with ``RVMPQ_KERNEL_SEED=<seed> pytest
verif/test_kernels.py -k <test id>``.
"""

from __future__ import annotations

import dataclasses
import os
import zlib

import numpy as np
import pytest

from rvmpq.sw.kernels import (KernelLayerError, random_input, random_layer, reference_output,
                              run_layer)
from rvmpq.sw.kernels.gen import plan_layer

BASE_SEED = int(os.environ.get("RVMPQ_KERNEL_SEED", "20240"))

#: (variant, cin, cout, h, w, k, stride, out_bits or None)
SHAPES = {
    "conv": ("conv", 5, 6, 5, 6, 3, 1, None),           # channels not lane multiples
    "conv-s2": ("conv", 3, 9, 6, 5, 3, 2, None),
    "pointwise": ("pointwise", 20, 10, 3, 5, 1, 1, None),
    "depthwise": ("depthwise", 8, 8, 5, 4, 3, 1, None),
    # outputs narrower than the inputs (a packed output word spans channel words: the
    # mpq.dot kernel, not ldot, below INT2 inputs)
    "depthwise-out2": ("depthwise", 16, 16, 4, 4, 3, 1, 2),
    "linear-logits": ("linear", 37, 10, 1, 1, 1, 1, 32),
    # more taps than 8 accumulators' mpq.ldot offsets (0..127) reach: 25, and 144 (more than
    # 128; the kernel over its whole input, as a global average pooling runs)
    "depthwise-5x5": ("depthwise", 16, 16, 6, 5, 5, 1, None),
    "depthwise-global": ("depthwise", 16, 16, 12, 12, 12, 1, None),
}


def _seed(name: str, bits: int, impl: str) -> int:
    return BASE_SEED + zlib.crc32(f"{name}-{bits}-{impl}".encode()) % 100000


def _check(name: str, bits: int, impl: str):
    variant, cin, cout, h, w, k, s, ob = SHAPES[name]
    seed = _seed(name, bits, impl)
    print(f"seed {seed} (replay: RVMPQ_KERNEL_SEED={BASE_SEED} pytest "
          f"verif/test_kernels.py -k '{name} and {bits} and {impl}')")
    rng = np.random.default_rng(seed)
    layer = random_layer(variant, bits, cin, cout, h, w, k, s, rng=rng, out_bits=ob)
    a = random_input(layer, rng)
    ref = reference_output(layer, a)
    res = run_layer(layer, a, impl)
    bad = np.argwhere(res.output != ref)
    assert bad.size == 0, (f"{name} INT{bits} {impl}: {len(bad)} outputs differ, first at "
                           f"{bad[0].tolist()}: got {res.output[tuple(bad[0])]}, want "
                           f"{ref[tuple(bad[0])]} (seed {seed}, {res.elf})")
    assert res.cycles > 0 and res.instret > 0
    return res


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_mpq_kernel_exact(name, bits):
    res = _check(name, bits, "mpq")
    # the inner loop really uses the extension
    assert res.instret < 10 ** 7


@pytest.mark.parametrize("bits", [2, 8, 16])
@pytest.mark.parametrize("name", ["conv", "depthwise", "linear-logits"])
def test_baseline_kernel_exact(name, bits):
    _check(name, bits, "baseline")


@pytest.mark.parametrize("impl", ["mpq", "baseline"])
@pytest.mark.parametrize("name", ["pointwise", "linear-logits"])
def test_sums_that_wrap_are_bit_exact(name, impl):
    """INT16 weights at +-32767 and unsigned INT16 inputs near 65535: most int32 sums wrap
    around (counted here in exact integers), as the integer model's accumulators do
    (``qnn.wrap32``), and the kernels wrap the same way (the baseline C sums are
    ``uint32_t``: a signed ``int32_t`` overflow would be undefined behaviour)."""
    variant, cin, cout, h, w, k, s, ob = SHAPES[name]
    seed = _seed(name, 16, impl + "-wrap")
    print(f"seed {seed} (replay: RVMPQ_KERNEL_SEED={BASE_SEED} pytest "
          f"verif/test_kernels.py -k 'wrap and {name} and {impl}')")
    rng = np.random.default_rng(seed)
    layer = random_layer(variant, 16, cin, cout, h, w, k, s, rng=rng, out_bits=ob,
                         a_signed=False)
    wt = np.where(rng.random(layer.weight.shape) < 0.8, 32767, -32767)
    layer = dataclasses.replace(layer, weight=wt.astype(layer.weight.dtype))
    a = rng.integers(60000, 65536, layer.in_shape)
    # exact sums, in Python integers: the 1x1 / linear dot product of every output
    pix = a.reshape(-1, cin).tolist()
    wrows = wt.reshape(cout, cin).tolist()
    sums = [sum(x * v for x, v in zip(p, r)) + int(b) for p in pix
            for r, b in zip(wrows, layer.bias.tolist())]
    wrapped = sum(not -2 ** 31 <= v < 2 ** 31 for v in sums)
    assert wrapped > len(sums) // 2, (wrapped, len(sums))
    ref = reference_output(layer, a)
    res = run_layer(layer, a, impl)
    bad = np.argwhere(res.output != ref)
    assert bad.size == 0, (f"{name} {impl}: {len(bad)} of {ref.size} outputs differ "
                           f"({wrapped} sums wrap; seed {seed}, {res.elf})")


def test_mpq_beats_baseline():
    """The extension must be much faster than plain RV32IM on a conv layer at INT2."""
    rng = np.random.default_rng(BASE_SEED)
    print(f"seed {BASE_SEED}")
    layer = random_layer("conv", 2, 16, 16, 6, 6, 3, 1, rng=rng, a_signed=False, relu=True)
    a = random_input(layer, rng)
    m = run_layer(layer, a, "mpq")
    b = run_layer(layer, a, "baseline")
    ref = reference_output(layer, a)
    assert np.array_equal(m.output, ref) and np.array_equal(b.output, ref)
    assert b.cycles > 8 * m.cycles, (b.cycles, m.cycles)


def test_bad_layers_rejected():
    rng = np.random.default_rng(0)
    layer = random_layer("conv", 8, 4, 4, 4, 4, 3, 1, rng=rng)
    layer.w_bits = 4
    with pytest.raises(KernelLayerError, match="w_bits == a_bits"):
        plan_layer(layer)
    layer.w_bits = layer.a_bits = 3
    with pytest.raises(KernelLayerError, match=r"\[2, 4, 8, 16\]"):
        plan_layer(layer)
    with pytest.raises(KernelLayerError, match="supported"):
        random_layer("pool", 8, 4, 4, rng=rng)
    layer = random_layer("conv", 8, 4, 4, 4, 4, 3, 1, rng=rng)
    layer.groups = 2
    with pytest.raises(KernelLayerError, match="groups"):
        plan_layer(layer)
    with pytest.raises(KernelLayerError, match="implementation"):
        plan_layer(random_layer("conv", 8, 4, 4, 4, 4, 3, 1, rng=rng), "fast")


@pytest.mark.parametrize("variant,bits", [("conv", 8), ("depthwise", 4)])
def test_cycles_do_not_depend_on_multiplier_values(seed, variant, bits):
    """A one-block layer (the multipliers were compile-time constants up to generator k6) costs
    the same cycles whatever its multipliers: the cost table's random ones (2^14..2^15) and
    network-like ones (about 2^30, and a mix of both); outputs stay exact. Under k6 the digits
    CNN's first conv took 13919 cycles with random multipliers and 11784 with its own."""
    rng = np.random.default_rng(seed)
    cin = 1 if variant == "conv" else 8
    layer = random_layer(variant, bits, cin, 16 if variant == "conv" else 8, 6, 6, 3, 1,
                         rng=rng, out_bits=bits, a_signed=False, relu=True)
    a = random_input(layer, rng)
    n = len(layer.mult)
    mults = [layer.mult, rng.integers(1 << 29, 1 << 31, size=n),
             np.where(np.arange(n) % 2, rng.integers(1 << 29, 1 << 31, size=n), layer.mult)]
    cycles = []
    for m in mults:
        lm = dataclasses.replace(layer, mult=np.asarray(m, dtype=np.int64))
        r = run_layer(lm, a, "mpq")
        assert np.array_equal(r.output, reference_output(lm, a)), f"mult {list(m)}: output"
        cycles.append(r.cycles)
    print(f"{variant} INT{bits}: cycles per multiplier set {cycles}")
    assert len(set(cycles)) == 1, cycles


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("kind", ["conv-1x33", "depthwise-1x40"])
def test_kernel_rows_beyond_the_lw_offsets_are_exact(kind, bits):
    """Kernel rows of more than 512 words at INT16 (an ``lw`` reaches 2047 bytes past its
    base): a 1x33 conv of 32 channels (528 words; a dilated 1-D conv as the intake runs it)
    and a 1x40 depthwise over the whole signal (a global average pooling of 32 channels: the
    last tap 624 words on); exact at every precision."""
    from rvmpq.sw.costs import shape_layer
    from rvmpq.sw.search.costs_api import LayerShape

    shape = (LayerShape("conv", 32, 16, 1, 40, 1, 33, (1, 1), (0, 16)) if kind == "conv-1x33"
             else LayerShape("conv", 32, 32, 1, 40, 1, 40, (1, 1), (0, 0), groups=32))
    layer, a = shape_layer(shape, bits, seed=BASE_SEED)
    print(f"seed {BASE_SEED} (replay: RVMPQ_KERNEL_SEED={BASE_SEED} pytest "
          f"verif/test_kernels.py -k 'rows_beyond and {kind} and {bits}')")
    res = run_layer(layer, a, "mpq")
    assert np.array_equal(res.output, reference_output(layer, a)), res.elf


def test_layer_too_big_for_dmem():
    from rvmpq.sw.kernels.run import build_layer_program, layer_dmem_kib
    rng = np.random.default_rng(1)
    layer = random_layer("conv", 16, 64, 64, 24, 24, 3, 1, rng=rng)
    with pytest.raises(KernelLayerError, match="DMEM"):
        build_layer_program(layer, random_input(layer, rng), "mpq")
    assert layer_dmem_kib(layer) == 256
    with pytest.raises(KernelLayerError, match="but the SoC has 65536"):
        layer_dmem_kib(layer, grow=False)
    huge = random_layer("conv", 16, 256, 256, 32, 32, 3, 1, rng=rng)
    with pytest.raises(KernelLayerError, match="but the SoC has 1048576"):
        layer_dmem_kib(huge)


def test_a_layer_beyond_64_kib_runs_on_a_larger_dmem_in_the_same_cycles():
    """A layer whose weights and maps do not fit the SoC's 64 KiB runs (bit-exact) on the
    smallest power-of-two DMEM that holds it, so its cost can be measured; a layer that fits
    takes the same cycles on 64 and 128 KiB (no cache: the DMEM size changes addresses only)."""
    from rvmpq.sw.kernels.run import build_layer_program, soc_verilog_cached
    from rvmpq.sw.runtime.runner import run_elf

    rng = np.random.default_rng(3)
    big = random_layer("conv", 16, 48, 48, 6, 6, 5, 1, rng=rng)   # 115 KiB of INT16 weights
    a = random_input(big, rng)
    r = run_layer(big, a, "mpq")
    assert np.array_equal(r.output, reference_output(big, a)) and "-d128-" in r.elf.name
    small = random_layer("conv", 16, 32, 32, 6, 6, 3, 1, rng=rng)
    a = random_input(small, rng)
    r64 = run_layer(small, a, "mpq")
    elf, _ = build_layer_program(small, a, "mpq", None, 128)
    r128 = run_elf(elf, config="mpq", max_cycles=10 ** 8, signature=True,
                   verilog=soc_verilog_cached("mpq", 128), dmem_kib=128)
    assert r128.exit_code == 0 and r128.signature[0] == r64.cycles, (r128.signature[0],
                                                                     r64.cycles)


def test_overrun_fails_loudly():
    from rvmpq.sw.kernels import KernelRunError
    rng = np.random.default_rng(2)
    layer = random_layer("conv", 8, 8, 8, 6, 6, 3, 1, rng=rng)
    with pytest.raises(KernelRunError, match="max_cycles"):
        run_layer(layer, random_input(layer, rng), "mpq", max_cycles=500)


def test_inner_loop_finds_branch_and_jump_loops():
    """The bench's loop finder: a loop closes with a backward conditional branch, or with a
    backward ``jal x0`` when its body is too long for a branch (the INT8 conv kernel); calls
    (``jal ra``) and forward jumps are not loops. Words encoded here by hand."""
    from rvmpq.sw.kernels.bench import _back_offset

    def jal(rd, imm):
        imm &= 0x1F_FFFF
        return (((imm >> 20) & 1) << 31) | (((imm >> 1) & 0x3FF) << 21) | \
            (((imm >> 11) & 1) << 20) | (((imm >> 12) & 0xFF) << 12) | (rd << 7) | 0x6F

    def bne(rs1, rs2, imm):
        imm &= 0x1FFF
        return (((imm >> 12) & 1) << 31) | (((imm >> 5) & 0x3F) << 25) | (rs2 << 20) | \
            (rs1 << 15) | (1 << 12) | (((imm >> 1) & 0xF) << 8) | (((imm >> 11) & 1) << 7) | 0x63

    assert _back_offset(jal(0, -8)) == -8
    assert _back_offset(jal(0, -5000)) == -5000
    assert _back_offset(jal(1, -8)) is None        # a call
    assert _back_offset(jal(0, 64)) is None        # forward
    assert _back_offset(bne(5, 6, -4096)) == -4096
    assert _back_offset(bne(5, 6, 12)) is None
