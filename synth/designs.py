"""Designs that the synthesis flow compares side by side, and the lazy registry that names them.

Every design here has the same flat, stream-free ports, so that one harness, one flow and one
formal miter serve all of them:

==========  =====  ===============  ==================================================
member      dir    shape            meaning
==========  =====  ===============  ==================================================
``mode``    In     ``MulMode``      operation (see :mod:`rvmpq.hw.modes`)
``a``       In     32               first operand word
``b``       In     32               second operand word
``acc``     In     32               accumulator added by DOT
``result``  Out    32               result, :attr:`LATENCY` cycles after the inputs
==========  =====  ===============  ==================================================

and the same I/O registering (one register stage on every input and on the output) so that the
figures compare the logic between registers and not the pads.

The reference designs (not part of the core):

``mul16``
    a plain signed 16x16 ``*`` on the low halves of ``a`` and ``b``; what a 16-bit MCU has.
``mul33``
    a plain RV32M multiplier: two 33-bit signed operands built from ``a``/``b`` and the
    signedness bits, a 64-bit product, ``result`` = high or low word by ``mode.op``.
``separate``
    one dot-product unit per precision (INT2/4/8/16, each its own lane multipliers and adder
    tree) plus the RV32M 33x33 multiplier, results selected by ``mode``.

``simd`` is our unit, :class:`rvmpq.hw.simd.SimdMulUnit`, behind a wrapper giving it these
ports. The registry is lazy: designs whose generator module is not installed (or not written
yet) are dropped from :func:`available_designs` instead of breaking the others.

Core configurations join the registry through a hook: a module listed in
:data:`DESIGN_PROVIDERS` may define ``synth_designs() -> dict[str, DesignSpec]``.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rvmpq.hw.modes import WIDTHS, ElemWidth, MulMode, MulOp

__all__ = [
    "DesignSpec", "FLAT_SIGNATURE", "FlatMulPorts", "PlainMul16", "RV32MMul33", "SeparateUnits", "SimdFlat",
    "Registered", "DESIGN_PROVIDERS", "available_designs", "get_design", "emit_component_verilog",
    "emit_design_verilog",
]


# --------------------------------------------------------------------------------------------
# common ports

#: The flat port set of every compared design.
FLAT_SIGNATURE = wiring.Signature({
    "mode": In(MulMode), "a": In(32), "b": In(32), "acc": In(32), "result": Out(32),
})

class FlatMulPorts(wiring.Component):
    """Base class: the flat port set shared by every compared design (see the module docstring).

    Members
    -------
    mode : In(MulMode)
        Operation, see :mod:`rvmpq.hw.modes`.
    a, b, acc : In(32)
        Operands and accumulator.
    result : Out(32)
        Result.
    """

    def __init__(self):
        super().__init__(FLAT_SIGNATURE)


def _operand(word, lo: int, width: int, is_signed):
    """Bits ``[lo, lo + width)`` of ``word`` widened by one bit: the sign bit when ``is_signed``
    (a 1-bit value), else 0; the result is a ``signed(width + 1)`` value."""
    field = word[lo:lo + width]
    return Cat(field, field[-1] & is_signed).as_signed()


def _tree_sum(terms: list):
    """Sum of ``terms`` as a balanced adder tree (widths grow by one bit per level)."""
    while len(terms) > 1:
        nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def _mul33(m: Module, mode, a, b):
    """The RV32M 33x33 product: returns the 32-bit MULLO/MULHI result selected by ``mode.op``."""
    prod = Signal(signed(66))
    m.d.comb += prod.eq(_operand(a, 0, 32, mode.a_signed) * _operand(b, 0, 32, mode.b_signed))
    return Mux(mode.op == MulOp.MULHI, prod[32:64], prod[0:32])


# --------------------------------------------------------------------------------------------
# combinational cores of the reference designs

class PlainMul16(FlatMulPorts):
    """Combinational signed 16x16 multiplier: ``result = a[0:16] * b[0:16]`` (signed).

    Members: see :class:`FlatMulPorts` (``mode`` and ``acc`` are unused).
    """

    def elaborate(self, platform):
        """Amaranth elaboration: one combinational signed 16x16 product."""
        m = Module()
        m.d.comb += self.result.eq(self.a[0:16].as_signed() * self.b[0:16].as_signed())
        return m


class RV32MMul33(FlatMulPorts):
    """Combinational RV32M multiplier: a 33x33 signed product of the sign-extended operands.

    ``result`` is the high word for ``MulOp.MULHI`` and the low word otherwise; ``a_signed`` and
    ``b_signed`` choose MULH / MULHSU / MULHU. Members: see :class:`FlatMulPorts`.
    """

    def elaborate(self, platform):
        """Amaranth elaboration: one combinational 33x33 product, its low or high word selected by
        ``mode.op``."""
        m = Module()
        m.d.comb += self.result.eq(_mul33(m, self.mode, self.a, self.b))
        return m


class SeparateUnits(FlatMulPorts):
    """Combinational "separate units" design: one dot-product unit per element width.

    Each of INT2/4/8/16 has its own ``32 // w`` lane multipliers of ``(w+1) x (w+1)`` bits
    (the extra bit carries the signedness) and its own adder tree; an RV32M 33x33 multiplier
    serves MULLO/MULHI; ``mode`` selects the result. Members: see :class:`FlatMulPorts`.
    """

    def elaborate(self, platform):
        """Amaranth elaboration: one dot-product unit per element width and the 33x33 multiplier,
        muxed by ``mode``."""
        m = Module()
        mode = self.mode
        dots = {}
        for w in WIDTHS:
            prods = []
            for i in range(32 // w):
                p = Signal(signed(2 * w + 2), name=f"p{w}_{i}")
                m.d.comb += p.eq(_operand(self.a, i * w, w, mode.a_signed)
                                 * _operand(self.b, i * w, w, mode.b_signed))
                prods.append(p)
            s = Signal(32, name=f"dot{w}")
            m.d.comb += s.eq(self.acc + _tree_sum(prods))
            dots[w] = s
        dot = Signal(32)
        with m.Switch(mode.a_width):
            for w in WIDTHS:
                with m.Case(ElemWidth(WIDTHS.index(w))):
                    m.d.comb += dot.eq(dots[w])
        m.d.comb += self.result.eq(Mux(mode.op == MulOp.DOT, dot, _mul33(m, mode, self.a, self.b)))
        return m


# --------------------------------------------------------------------------------------------
# I/O registering

class Registered(FlatMulPorts):
    """Registers every input and the output of a combinational :class:`FlatMulPorts` core.

    Parameters
    ----------
    core : FlatMulPorts
        The combinational core.

    Attributes
    ----------
    LATENCY : int
        2: inputs at cycle t give ``result`` at cycle t + 2.

    Members: see :class:`FlatMulPorts`.
    """

    LATENCY = 2

    def __init__(self, core: FlatMulPorts):
        self._core = core
        super().__init__()

    def elaborate(self, platform):
        """Amaranth elaboration: the wrapped design between input and output registers."""
        m = Module()
        m.submodules.core = core = self._core
        m.d.sync += [core.mode.eq(self.mode), core.a.eq(self.a), core.b.eq(self.b),
                     core.acc.eq(self.acc), self.result.eq(core.result)]
        return m


class SimdFlat(FlatMulPorts):
    """:class:`rvmpq.hw.simd.SimdMulUnit` behind the flat ports, with the same I/O registers.

    The unit's ``i.valid`` and ``o.ready`` are held at 1 (one operation per cycle, never
    stalled), so ``result`` follows the inputs after ``SimdMulUnit.LATENCY + 2`` cycles.

    Parameters
    ----------
    unit : wiring.Component, optional
        The unit to wrap (default: a new ``SimdMulUnit()``).

    Attributes
    ----------
    LATENCY : int
        ``unit.LATENCY + 2``.

    Members: see :class:`FlatMulPorts`.
    """

    def __init__(self, unit=None):
        if unit is None:
            from rvmpq.hw.simd import SimdMulUnit
            unit = SimdMulUnit()
        self._unit = unit
        self.LATENCY = int(type(unit).LATENCY if hasattr(type(unit), "LATENCY") else unit.LATENCY) + 2
        super().__init__()

    def elaborate(self, platform):
        """Amaranth elaboration: the SIMD unit, always valid and ready, between flat input and
        output registers."""
        m = Module()
        m.submodules.unit = unit = self._unit
        p = unit.i.payload
        m.d.comb += [unit.i.valid.eq(1), unit.o.ready.eq(1)]
        m.d.sync += [p.mode.eq(self.mode), p.a.eq(self.a), p.b.eq(self.b), p.acc.eq(self.acc),
                     self.result.eq(unit.o.payload.result)]
        return m


# --------------------------------------------------------------------------------------------
# registry

@dataclasses.dataclass(frozen=True)
class DesignSpec:
    """One design the flow can synthesize.

    Attributes
    ----------
    name : str
        Registry key (``--design NAME``).
    description : str
        One line for reports.
    build : Callable[[], wiring.Component]
        Returns a fresh component (its ports become the Verilog top's ports).
    top : str
        Verilog top module name.
    flat_ports : bool
        True when the component has the :class:`FlatMulPorts` port set and a ``LATENCY``
        (usable by the formal miter).
    """

    name: str
    description: str
    build: Callable[[], wiring.Component]
    top: str = "top"
    flat_ports: bool = True


def _builtin_specs() -> dict[str, DesignSpec]:
    specs = {
        "mul16": DesignSpec("mul16", "plain signed 16x16 multiplier",
                            lambda: Registered(PlainMul16()), "mul16"),
        "mul33": DesignSpec("mul33", "plain RV32M 33x33 multiplier (MUL/MULH/MULHSU/MULHU)",
                            lambda: Registered(RV32MMul33()), "mul33"),
        "separate": DesignSpec("separate", "separate INT2/4/8/16 dot units + RV32M 33x33, muxed",
                               lambda: Registered(SeparateUnits()), "separate"),
    }
    try:
        importlib.import_module("rvmpq.hw.simd")
    except ModuleNotFoundError as exc:
        if not (exc.name and "rvmpq.hw.simd".startswith(exc.name)):
            raise
    else:
        specs = {"simd": DesignSpec("simd", "rvmpq hierarchical SIMD unit (SimdMulUnit)",
                                    SimdFlat, "simd"), **specs}
    return specs


#: Modules that may add designs through ``synth_designs() -> dict[str, DesignSpec]`` (e.g. core
#: configurations ``core_baseline`` / ``core_mpq``); a missing module or hook is skipped.
DESIGN_PROVIDERS: tuple[str, ...] = ("rvmpq.hw.core", "rvmpq.hw.soc")


def available_designs() -> dict[str, DesignSpec]:
    """All designs that can be built with the modules installed now, in report order.

    Returns
    -------
    dict[str, DesignSpec]
        ``simd`` (when :mod:`rvmpq.hw.simd` exists), ``mul16``, ``mul33``, ``separate``, then
        whatever the :data:`DESIGN_PROVIDERS` hooks add.
    """
    specs = _builtin_specs()
    for modname in DESIGN_PROVIDERS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name and modname.startswith(exc.name):
                continue
            raise
        hook = getattr(mod, "synth_designs", None)
        if hook is None:
            continue
        try:
            extra = hook()
        except Exception as exc:  # a broken provider must not take the reference designs down
            warnings.warn(f"{modname}.synth_designs() failed, its designs are skipped: {exc}")
            continue
        for name, spec in extra.items():
            specs.setdefault(name, spec)
    return specs


def get_design(name: str) -> DesignSpec:
    """The registered design called ``name``; ``KeyError`` naming the available ones otherwise."""
    specs = available_designs()
    try:
        return specs[name]
    except KeyError:
        raise KeyError(f"unknown design {name!r}; available: {', '.join(specs)}") from None


def emit_component_verilog(comp: wiring.Component, top: str) -> str:
    """Verilog text of a component, top module named ``top``, ports ``clk``/``rst`` + members."""
    from amaranth.back import verilog
    return verilog.convert(comp, name=top, emit_src=False)


def emit_design_verilog(spec: DesignSpec) -> str:
    """Verilog text of a fresh instance of a registered design (see :func:`emit_component_verilog`)."""
    return emit_component_verilog(spec.build(), spec.top)
