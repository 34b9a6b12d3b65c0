"""Helpers the benchmark scripts share: device sync, peak memory (GPU and process RSS), a
fuser with random weights at a given step count, seeded test pairs, grey differences."""
from __future__ import annotations

import contextlib
import gc
import math
import os
import resource
import sys
import threading

import numpy as np
import torch
import torch.nn as nn

GiB = 1024 ** 3
_SCHEDULES: dict = {}  # (steps, device) -> the respaced schedule, built once


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def process_peak_rss() -> int:
    """getrusage maxrss: the process's all-time peak (kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class RssSampler:
    """Highest resident set size seen while active, sampled every ``interval`` s from
    /proc/self/statm (torch's allocations are invisible to tracemalloc)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.base is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            now = rss_bytes()
            if now is not None and now > self.peak:
                self.peak = now
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        now = rss_bytes()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    @property
    def growth(self) -> int | None:
        return None if self.base is None else self.peak - self.base


class Memory:
    """Peak memory of a block: CUDA allocator peak, or sampled RSS growth on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = self.reserved = self.at_start = None

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.at_start = torch.cuda.memory_allocated(self.device)
        else:
            self._rss = RssSampler().__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            self.reserved = torch.cuda.max_memory_reserved(self.device)
        else:
            self._rss.__exit__(*exc)
            self.peak = self._rss.growth


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # hand freed heap back so RSS growth is measurable
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def redraw_zero_layers(model: nn.Module, seed: int) -> int:
    """Re-draw every all-zero conv/linear layer (ADM's zero_module init) from PyTorch's default
    uniform(+-1/sqrt(fan_in)), with a CPU generator so the weights do not depend on the device."""
    gen = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) or module.weight.any():
                continue
            bound = 1 / math.sqrt(module.weight[0].numel())
            for param in (module.weight, module.bias):
                if param is not None:
                    draw = (torch.rand(param.shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound
                    param.copy_(draw.to(param.device, param.dtype))
            count += 1
    return count


def set_steps(fuser, steps: int) -> None:
    """Point the fuser at a ``steps``-step respacing of its diffusion config."""
    from guided_diffusion.diffusion import make_schedule

    d = fuser.diffusion_config
    key = (steps, str(fuser.device))
    if key not in _SCHEDULES:
        if steps == 1:  # a 1-step respacing has no posterior variance; run the last step of 2
            two = make_schedule(d.noise_schedule, d.diffusion_steps, 2, fuser.device)
            _SCHEDULES[key] = type(two)(**{k: (v[:1] if torch.is_tensor(v) else v)
                                           for k, v in two.__dict__.items()})
        else:
            _SCHEDULES[key] = make_schedule(d.noise_schedule, d.diffusion_steps, steps, fuser.device)
    fuser.schedule = _SCHEDULES[key]


def gray_pair(size, seed: int):
    """Two random grey sources of HEIGHTxWIDTH (smooth structure plus noise), fixed seed."""
    from ddfm import load_source

    h, w = size
    rng = np.random.default_rng(seed + 7919 * h + w)
    out = []
    for name in ("ir", "vis"):
        coarse = rng.uniform(0, 255, size=(max(h // 16, 2), max(w // 16, 2)))
        smooth = np.kron(coarse, np.ones((16, 16)))[:h, :w]
        if smooth.shape != (h, w):
            smooth = np.pad(smooth, ((0, h - smooth.shape[0]), (0, w - smooth.shape[1])), mode="edge")
        img = np.clip(0.7 * smooth + 0.3 * rng.uniform(0, 255, size=(h, w)), 0, 255).round()
        out.append(load_source(img.astype(np.uint8), name))
    return out


def gray_difference(gray, ref) -> tuple[int, float]:
    """Largest difference and PSNR (dB, inf when equal) of two 8-bit grey images."""
    a, b = gray.astype(np.float64), ref.astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    return int(np.abs(a - b).max()), math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)
