"""rvmpq.hw.core: the pipelined (F, F2, D, X, M, W) RV32IM + Zicsr + Zicntr core with the MPQ
extension.

:class:`~rvmpq.hw.core.core.Core` is the core without memories (the synthesis top);
:data:`~rvmpq.hw.core.config.CONFIGS` holds the named configurations (``baseline``, ``mpq``).
"""

from .config import CONFIGS, CoreConfig, get_config
from .core import Core, MemMap

__all__ = ["Core", "MemMap", "CoreConfig", "CONFIGS", "get_config"]
from .synth_top import synth_designs  # noqa: F401  (hook read by rvmpq.synth.designs)
