"""Speed levers of the CUDA training path, read from the environment (issue 15).

They live in environment variables, not in :func:`wdist.estimate_w1`'s
signature, so that ``benchmarks/gpu.py`` can measure each one on and off on a
GPU and the defaults can follow the measurements.  None of them applies on
the CPU, where results stay bitwise what they were.

============================  =======  ==========================================
variable                      default  effect on a CUDA device
============================  =======  ==========================================
``WDIST_PIN_MEMORY``          1        batches go through pinned host memory, so
                                       the ``non_blocking`` copy to the GPU is
                                       asynchronous (a copy from pageable memory
                                       waits for the GPU's queued work first)
``WDIST_CUDNN_BENCHMARK``     1        cuDNN times its convolution algorithms once
                                       per shape and keeps the fastest
                                       (``torch.backends.cudnn.benchmark``); set
                                       only while a critic trains
``WDIST_AUTOCAST``            off      ``bf16``: training steps' forward and
                                       backward under bf16 autocast; constrained
                                       kernels are still built in float32
                                       (:class:`wdist.nn.cache.CachedParametrization`)
                                       and every evaluation (validation, test) is
                                       float32, so the reported value is the
                                       certified float32 critic's
``WDIST_COMPILE``             0        1: ``torch.compile`` the critic for the
                                       training steps (evaluations run eagerly)
============================  =======  ==========================================

The certificate never depends on any of them: :func:`wdist.lipschitz_bound`
reads the float32 weights as they are, in float64.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["CudaOptions"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    value = value.strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"{name}: expected 0 or 1, got {value!r}")
    return value in _TRUE


@dataclass(frozen=True)
class CudaOptions:
    """Which levers the training path uses; all off on the CPU."""

    pin_memory: bool = False
    cudnn_benchmark: bool = False
    autocast_bf16: bool = False
    compile: bool = False

    @classmethod
    def for_device(cls, device: torch.device | str) -> "CudaOptions":
        """The levers for ``device``: the environment's choice on CUDA, none elsewhere.

        Raises
        ------
        ValueError
            Naming the variable, for a value that is not 0/1 (``WDIST_AUTOCAST``: off/bf16).
        """
        if torch.device(device).type != "cuda":
            return cls()
        autocast = os.environ.get("WDIST_AUTOCAST", "off").strip().lower()
        if autocast not in ("off", "bf16", "0", ""):
            raise ValueError(f"WDIST_AUTOCAST: expected off or bf16, got {autocast!r}")
        return cls(
            pin_memory=_flag("WDIST_PIN_MEMORY", True),
            cudnn_benchmark=_flag("WDIST_CUDNN_BENCHMARK", True),
            autocast_bf16=autocast == "bf16",
            compile=_flag("WDIST_COMPILE", False),
        )
