"""rvmpq: a RISC-V core with a hierarchical INT2/4/8/16 mixed-precision SIMD unit.

Sub-packages: :mod:`rvmpq.hw` (Amaranth generator), :mod:`rvmpq.sw` (host side: golden models,
toolchain, RTL runner, kernels, costs, search) and :mod:`rvmpq.synth` (Yosys / nextpnr flows).
"""

__version__ = "0.1.0"
