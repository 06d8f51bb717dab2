"""The GPUs this process may use, through NVML where the driver is there (else torch): the one
inventory, for the Environment step (free memory, compute capability), the config checks and
the Train dashboard (memory in use, utilisation). Each honours ``CUDA_VISIBLE_DEVICES`` and
numbers the GPUs as CUDA does. No torch import where no GPU driver is loaded.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

GIB = 1024 ** 3


@dataclass
class GPU:
    index: int
    name: str
    total_gib: float
    free_gib: float
    capability: str      # e.g. "8.0"

    def to_dict(self) -> dict:
        return asdict(self)

def nvml():
    """pynvml (from nvidia-ml-py), initialised, or None where there is no NVIDIA driver."""
    try:
        import pynvml
        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None

def gpu_driver_present() -> bool:
    """Whether a GPU driver torch could use is loaded (Linux: NVIDIA's, or AMD's for ROCm).

    Where there is none, torch cannot see a GPU, so callers skip importing torch (2-3 s and
    ~400 MB in a process that may only launch a worker) to hear "no". Off Linux, torch decides.
    """
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))

def visible_gpu_indices(nv) -> list[int]:
    """NVML's indices of the GPUs this process may use: all of them, or those that
    ``CUDA_VISIBLE_DEVICES`` names (numbered from 0 in that order, as CUDA numbers them)."""
    indices = list(range(nv.nvmlDeviceGetCount()))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible not in (None, ""):
        wanted = [int(x) for x in visible.split(",") if x.strip().isdigit()]
        indices = [i for i in indices if i in wanted]
    return indices

def gpu_inventory(use_torch: bool = True) -> list[GPU]:
    """The visible GPUs with their free memory: NVML where the driver is there, else torch.

    ``use_torch=False`` skips the torch fallback (2-3 s to import) for quick answers.
    """
    nv = nvml()
    gpus: list[GPU] = []
    if nv is not None:
        try:
            for n, i in enumerate(visible_gpu_indices(nv)):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                name = nv.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else name
                major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
                gpus.append(GPU(n, name, mem.total / GIB, mem.free / GIB, f"{major}.{minor}"))
            return gpus
        except Exception:
            gpus = []
    if not use_torch or not gpu_driver_present():
        return gpus
    try:
        import torch
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                p = torch.cuda.get_device_properties(i)
                gpus.append(GPU(i, p.name, total / GIB, free / GIB, f"{p.major}.{p.minor}"))
    except Exception:
        pass
    return gpus


@dataclass(frozen=True)
class GpuStat:
    index: int
    name: str
    used_gib: float
    total_gib: float
    util: int | None


class GpuProbe:
    """GPU memory and utilisation through NVML (``pynvml``); ``read()`` is None without a GPU.

    The same GPUs, numbered the same way, as the Environment step (``gpu_inventory``):
    those ``CUDA_VISIBLE_DEVICES`` leaves visible."""

    def __init__(self):
        self._nvml = None
        self._failed = False

    def _init(self):
        if self._nvml is None and not self._failed:
            self._nvml = nvml()
            self._failed = self._nvml is None
        return self._nvml

    def read(self) -> list[GpuStat] | None:
        nvml = self._init()
        if nvml is None:
            return None
        try:
            out = []
            for n, i in enumerate(visible_gpu_indices(nvml)):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                try:
                    util = int(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
                except Exception:
                    util = None
                out.append(GpuStat(n, name, mem.used / 2**30, mem.total / 2**30, util))
            return out or None
        except Exception:
            return None


def format_gpus(gpus) -> str:
    if not gpus:
        return "no GPU"
    parts = []
    for g in gpus:
        util = f" {g.util}%" if g.util is not None else ""
        parts.append(f"GPU{g.index} {g.used_gib:.1f}/{g.total_gib:.0f} GiB{util}")
    return "  ".join(parts)
