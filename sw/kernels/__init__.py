"""Quantized layer kernels on the MPQ ISA (conv KxK / 1x1 / depthwise, fully connected;
INT2/4/8/16), the plain RV32IM baseline, and their benchmark.

See :mod:`rvmpq.sw.kernels.gen` for layouts and blocking, :mod:`rvmpq.sw.kernels.run` to run a
layer on the RTL, :mod:`rvmpq.sw.kernels.bench` for the speedup benchmark.
"""

from .gen import IMPLS, KernelPlan, emit_program, plan_layer
from .layer import BITS, KINDS, KernelLayerError, random_input, random_layer, reference_output
from .run import KernelRun, KernelRunError, run_layer

__all__ = ["IMPLS", "BITS", "KINDS", "KernelPlan", "KernelLayerError", "KernelRun",
           "KernelRunError", "emit_program", "plan_layer", "random_layer", "random_input",
           "reference_output", "run_layer"]
