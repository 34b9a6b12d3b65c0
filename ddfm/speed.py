"""Speed switches of the Fuser that keep the maths: one UNet call per batch, torch.compile and
its on-disk cache."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Union

from ddfm.options import BATCHED_UNET

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
