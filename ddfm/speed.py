"""Speed switches of the Fuser that keep the maths: the UNet call (precision, one call per
batch or per pair, CUDA-graph output buffers, compile timing), torch.compile's on-disk cache."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Union

import torch

from ddfm.config import BATCHED_UNET

LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}

# where torch.compile's caches live unless --compile_cache or TORCHINDUCTOR_CACHE_DIR says otherwise
DEFAULT_COMPILE_CACHE = Path("~/.cache/ddfm/inductor")


def resolve_batched_unet(batched_unet: Union[str, bool], precision: str) -> bool:
    """Whether a batch goes through the UNet in one call. ``auto`` (the default): yes under
    tf32/bf16/fp16, which round differently from the release anyway; no in fp32, which stays
    batch-invariant (a pair's output identical whatever the batch). ``on``/``off`` (or a bool)
    force it."""
    if isinstance(batched_unet, bool):
        return batched_unet
    if batched_unet not in BATCHED_UNET:
        raise ValueError(f"batched_unet must be one of {', '.join(BATCHED_UNET)}, got {batched_unet!r}")
    if batched_unet == "auto":
        return precision != "fp32"
    return batched_unet == "on"


def configure_compile_cache(folder: Union[str, os.PathLike, None] = None) -> Path:
    """Point torch.compile's on-disk caches (Inductor's FX graph cache and the AOTAutograd
    cache, under ``TORCHINDUCTOR_CACHE_DIR``) at a persistent folder, before compiling, so a
    later run reuses the compiled kernels. ``folder``: given > ``$TORCHINDUCTOR_CACHE_DIR`` >
    ``~/.cache/ddfm/inductor``. Returns the folder used."""
    if folder is not None:
        path = Path(folder).expanduser()
    elif os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        path = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).expanduser()
    else:
        path = DEFAULT_COMPILE_CACHE.expanduser()
    path = path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"compile cache {path}: cannot create it ({exc.strerror}); "
                         "give a writable folder with --compile_cache") from None
    check_compile_cache_writable(path)
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") != str(path):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
        with contextlib.suppress(Exception):  # forget a folder an earlier compile resolved
            from torch._inductor.utils import clear_caches
            clear_caches()
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return path


def check_compile_cache_writable(path: Path) -> None:
    """ValueError (one line) unless files can be made in the compile cache ``path`` and in
    every folder already inside it: checked at setup, where Inductor would otherwise fail on
    the first step, after compiling for a while, with a long traceback."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".ddfm-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"compile cache {path}: not writable ({exc.strerror}); give a writable "
                         "folder with --compile_cache, or run without --compile") from None
    for folder, subfolders, _ in os.walk(path):
        for name in subfolders:
            inner = Path(folder) / name
            if not os.access(inner, os.W_OK | os.X_OK):
                raise ValueError(f"compile cache {path}: {inner} inside it is not writable; make it "
                                 "writable, give another folder with --compile_cache, or run "
                                 "without --compile")


def report(line: str) -> None:
    """One diagnostic line on stderr, above any progress bar."""
    try:
        from tqdm.auto import tqdm
        tqdm.write(line, file=sys.stderr)
    except ImportError:
        print(line, file=sys.stderr, flush=True)


def prefer_expandable_segments() -> None:
    """Fewer fragmentation failures near the memory limit (1024x768 bf16 then fits in 8 GiB of
    allocations). CUDA reads the setting when it first allocates; a value already set wins.
    The entry points call this; importing ``ddfm`` changes nothing."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


class UNetCall:
    """The network as the sampler calls it, in the chosen precision; output float32.

    A batch of pairs goes through the UNet one pair at a time unless ``batched`` (the default
    under tf32/bf16/fp16, see :func:`resolve_batched_unet`): convolution and GEMM kernels round
    differently at different batch sizes (seen here on the first 3x3 convolution, ~1e-6), so
    only per-pair calls make a pair's output identical whatever the batch. The EM step, FFTs
    and sampler updates stay batched. With ``compile_mode`` set, the first call (which
    compiles) is timed and reported once (``compile_seconds``)."""

    def __init__(self, model, device: torch.device, precision: str, batched: bool,
                 channels_last: bool = False, compile_mode: Optional[str] = None,
                 compile_cache: Optional[Path] = None):
        self.model, self.device, self.precision, self.batched = model, device, precision, batched
        self.channels_last, self.compile_mode, self.compile_cache = channels_last, compile_mode, compile_cache
        self.compile_seconds: Optional[float] = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compile_mode is not None and self.compile_seconds is None:
            return self._first_compiled_call(x, t)
        with self._autocast():
            if self.batched or x.shape[0] == 1:
                out = self._owned(self.model(x, t))
            else:
                out = torch.cat([self._owned(self.model(x[k:k + 1], t[k:k + 1])) for k in range(x.shape[0])])
        return out.float()

    def _autocast(self):
        dtype = LOW_PRECISION.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _owned(self, out: torch.Tensor) -> torch.Tensor:
        """A UNet output that the next UNet call cannot overwrite: CUDA graphs (reduce-overhead)
        replay into the same output buffers, and each call starts a new graph iteration, so a
        per-pair output is copied before the next pair's call and a step's before the next step."""
        return out.clone() if self.compile_mode == "reduce-overhead" else out

    def _first_compiled_call(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The first call compiles the UNet: time it (synchronised) and say so, once."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        self.compile_seconds = 0.0  # so the call below runs the ordinary path
        out = self(x, t)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.compile_seconds = time.perf_counter() - start
        report(f"compile: {self.compile_seconds:.1f} s (first UNet call, compilation included; "
               f"cache: {self.compile_cache})")
        return out
