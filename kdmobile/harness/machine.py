"""The machine and the tool versions a report was measured with, and the same-run matmul probe.

    python -c "from kdmobile.harness.machine import machine_info; print(machine_info())"

``machine_class`` names a class of machines whose latencies are comparable (architecture, CPU model, cores):
``kdmobile check`` flags a baseline from another class and then judges latency only on same-run ratios.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

# Distributions whose versions a report records (the runtimes, their converters, and the harness tools).
VERSIONED = (
    "torch",
    "numpy",
    "onnxruntime",
    "onnx",
    "executorch",
    "ai-edge-litert",
    "litert-torch",
    "coremltools",
    "transformers",
    "playwright",
)

# Versions that decide latency: a change here means same-machine absolute latencies are not comparable.
LATENCY_RELEVANT = ("torch", "onnxruntime", "executorch", "ai-edge-litert", "onnxruntime-web", "chromium")


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_class(info: dict[str, Any] | None = None) -> str:
    """A file-name-safe class, e.g. ``x86_64-amd-epyc-2c``: same class ⇒ absolute latencies comparable."""
    info = info or machine_info()
    raw = f"{info['arch']}-{info['cpu_model']}-{info['cores']}c"
    raw = re.sub(r"\((r|tm)\)|cpu|processor|@.*?(?=-\d+c$)", "", raw, flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9_]+", "-", raw.lower()).strip("-")


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, OS; plus ``machine_class``."""
    import psutil

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "arch": platform.machine(),
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": int(psutil.virtual_memory().total),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    info["machine_class"] = machine_class(info)
    return info


def tool_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Installed versions of kdmobile and every runtime/tool in ``VERSIONED`` (missing ones are left out)."""
    from kdmobile import __version__

    out = {"kdmobile": __version__, "python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    out.update(extra or {})
    return out


def matmul_rate(threads: int = 1, size: int = 256, seconds: float = 0.3) -> dict[str, float]:
    """Measured fp32 matrix-multiply rate (GFLOP/s) of PyTorch on this machine, now, with ``threads``.

    The compute floor of a model is ``FLOPs / rate``: the time it would take if it were nothing but
    matmuls running at this machine's matmul speed. The median of many timed ``size``³ products is used.
    """
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        out = torch.empty(size, size)
        for _ in range(5):
            torch.mm(a, b, out=out)
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 20:
            t0 = time.perf_counter_ns()
            torch.mm(a, b, out=out)
            times.append(time.perf_counter_ns() - t0)
        med_s = float(sorted(times)[len(times) // 2]) * 1e-9
    finally:
        torch.set_num_threads(prev)
    flops = 2.0 * size**3
    return {"gflops": flops / med_s / 1e9, "size": size, "threads": threads, "runs": len(times)}


def model_flops(model: Any, inputs: tuple[Any, ...]) -> int:
    """FLOPs of one forward pass, counted by ``torch.utils.flop_counter`` (matmul-like ops; gathers are free)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


if __name__ == "__main__":  # `python -m kdmobile.harness.machine` prints this machine's class
    print(machine_class())
