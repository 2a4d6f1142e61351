"""Named core configurations, in one place.

A :class:`CoreConfig` holds the feature flags of :class:`~rvmpq.hw.core.core.Core`; each flag
gates both the decoder rows and the unit behind them. ``baseline`` is the same pipeline without
the MPQ extension (its instructions and the ``mpq_rq`` CSR are illegal there); ``mpq`` is the
default.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CoreConfig", "CONFIGS", "get_config"]


@dataclass(frozen=True)
class CoreConfig:
    """Feature flags of the core.

    Parameters
    ----------
    name : str
        Configuration name (``baseline`` / ``mpq``).
    with_muldiv : bool
        RV32M: MUL* on the shared multiplier, DIV*/REM* on the iterative divider.
    with_mpq : bool
        The MPQ extension: ``mpq.dot.*`` on the shared SIMD multiplier, ``mpq.rq``/``mpq.rqp``
        on the requantization unit, and the ``mpq_rq`` CSR.
    with_counters : bool
        Zicntr (cycle/instret and their high halves) and mcycle/minstret.
    reset_pc : int
        Address of the first instruction fetched after reset.
    mul_impl : str
        Multiplier: ``"simd"`` (the shared :class:`~rvmpq.hw.simd.SimdMulUnit`, needed by the
        MPQ extension) or ``"rv32m"`` (:class:`~rvmpq.hw.core.core.Rv32mMulUnit`, a plain
        33x33 product that maps onto DSP blocks; only without ``with_mpq``).
    """

    name: str = "mpq"
    with_muldiv: bool = True
    with_mpq: bool = True
    with_counters: bool = True
    reset_pc: int = 0
    mul_impl: str = "simd"

    def __post_init__(self):
        if self.mul_impl not in ("simd", "rv32m"):
            raise ValueError(f"mul_impl = {self.mul_impl!r}; choose 'simd' or 'rv32m'")
        if self.mul_impl == "rv32m" and self.with_mpq:
            raise ValueError("mul_impl = 'rv32m' has no dot products: use 'simd' with with_mpq")


#: The named configurations.
CONFIGS: dict[str, CoreConfig] = {
    "baseline": CoreConfig(name="baseline", with_mpq=False, mul_impl="rv32m"),
    "mpq": CoreConfig(name="mpq"),
}


def get_config(config: "str | CoreConfig") -> CoreConfig:
    """A :class:`CoreConfig` from its name (or the config itself); ``ValueError`` naming the
    known names otherwise."""
    if isinstance(config, CoreConfig):
        return config
    try:
        return CONFIGS[config]
    except (KeyError, TypeError):
        raise ValueError(f"unknown core configuration {config!r}; choose one of "
                         f"{sorted(CONFIGS)}") from None
