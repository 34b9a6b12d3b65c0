"""DDFM from Python: build a fuser once (the model loaded once), call it on many pairs.

    from ddfm import Fuser
    fuser = Fuser("configs/model_config_imagenet.yaml", "configs/diffusion_config.yaml")
    fused = fuser("input/ir/FLIR_03952.jpg", "input/vi/FLIR_03952.jpg")   # (H, W) uint8
    rgb = fuser(ir_array, vis_pil_image, color=True, seed=1)               # (H, W, 3) uint8

``sample.py`` runs exactly this code for every batch of pairs; nothing here touches the
output folders.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

# Fewer fragmentation failures near the memory limit (1024x768 bf16 then fits in 8 GiB of
# allocations); read when CUDA first allocates, so setting it here is in time. Yours wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from guided_diffusion.diffusion import SamplerOptions, make_schedule
from guided_diffusion.fusion import (EM_ROLES, FusionError, FusionOptions,
                                     em_only_fusion, fuse, normalise_to_uint8)
from util.color import luma_bt601, rgb_from_ycbcr_full, ycbcr_full_from_rgb
from util.config import DiffusionConfig, ModelConfig, load_diffusion_config, load_model_config
from util.images import ImageError, read_rgb, rgb_to_gray_float

PRIORS = ("diffusion", "none")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
SIZES = ("crop", "pad")
NOISE_DEVICES = ("run", "cpu")
BATCHED_UNET = ("auto", "on", "off")  # auto: one UNet call per batch under tf32/bf16/fp16, per pair in fp32
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile modes offered
# where torch.compile's caches live unless --compile_cache or TORCHINDUCTOR_CACHE_DIR says otherwise
DEFAULT_COMPILE_CACHE = Path("~/.cache/ddfm/inductor")
ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]


@dataclass(frozen=True)
class FuseOptions:
    """Per-call settings that change the output (all defaults reproduce the release)."""
    seed: int = 3407             # reset for every pair, as released
    lamb: float = 0.5
    rho: float = 0.001
    em_roles: str = "release"    # see guided_diffusion.fusion.EM_ROLES
    size: str = "crop"           # crop: top-left to multiples (released); pad: reflect-pad, crop back
    crop_multiple: int = 32
    color: bool = False          # also return Y-fused / CbCr-from-the-colour-source RGB

    def validate(self) -> "FuseOptions":
        if not self.lamb > 0:
            raise ValueError(f"lamb must be > 0, got {self.lamb}")
        if not self.rho >= 0:
            raise ValueError(f"rho must be >= 0, got {self.rho}")
        if self.em_roles not in EM_ROLES:
            raise ValueError(f"em_roles must be one of {', '.join(EM_ROLES)}, got {self.em_roles!r}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.crop_multiple < 1:
            raise ValueError(f"crop_multiple must be >= 1, got {self.crop_multiple}")
        return self


@dataclass
class Source:
    """One decoded source image: RGB as decoded and its grey (0..255 float32, the release's)."""
    rgb: np.ndarray
    gray: np.ndarray
    name: str

    @property
    def has_chroma(self) -> bool:
        return not (np.array_equal(self.rgb[..., 0], self.rgb[..., 1])
                    and np.array_equal(self.rgb[..., 1], self.rgb[..., 2]))


def load_source(image: ImageLike, name: str = "image") -> Source:
    """Paths, PIL images, (H, W) grey arrays (0..255) and (H, W, 3) RGB uint8 arrays."""
    if isinstance(image, (str, os.PathLike)):
        rgb = read_rgb(image)
        return Source(rgb, rgb_to_gray_float(rgb), str(image))
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL image
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return Source(rgb, rgb_to_gray_float(rgb), name)
    array = np.asarray(image)
    if array.ndim == 2:
        gray = array.astype(np.float32)
        if gray.size and (gray.min() < 0 or gray.max() > 255):
            raise ImageError(f"{name}: grey values must lie in 0..255, got {gray.min()}..{gray.max()}")
        rgb8 = np.repeat(np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        return Source(rgb8, np.round(gray).astype(np.float32), name)
    if array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype == np.uint8:
        rgb = np.ascontiguousarray(array[..., :3])
        return Source(rgb, rgb_to_gray_float(rgb), name)
    raise ImageError(f"{name}: expected (H, W) grey or (H, W, 3) uint8 RGB, got shape "
                     f"{array.shape} dtype {array.dtype}")


def check_pair(ir: Source, vis: Source, crop_multiple: int = 32) -> None:
    """Raise :class:`ImageError` naming the file when a pair cannot be fused: sizes that differ,
    or a side shorter than ``crop_multiple``."""
    (h, w), (hb, wb) = ir.gray.shape, vis.gray.shape
    if (h, w) != (hb, wb):
        raise ImageError(f"{ir.name}: size {w}x{h} differs from its partner {vis.name} ({wb}x{hb}); "
                         "resize one to match")
    if min(h, w) < crop_multiple:
        raise ImageError(f"{ir.name}: {w}x{h} is smaller than {crop_multiple} px on a side; "
                         f"use images of at least {crop_multiple}x{crop_multiple}")


def pick_device(device=None, gpu: int = 0) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        if not 0 <= gpu < torch.cuda.device_count():
            raise ValueError(f"gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device(f"cuda:{gpu}")
    return torch.device("cpu")


class Fuser:
    """The DDFM pipeline with its model and schedule built once.

    ``prior="none"`` builds no UNet and needs no checkpoint: the EM fusion model is iterated on
    its own (``em_iterations``, default: as many as the sampler has steps).
    """

    def __init__(self, model_config: Union[str, os.PathLike, ModelConfig] = "configs/model_config_imagenet.yaml",
                 diffusion_config: Union[str, os.PathLike, DiffusionConfig] = "configs/diffusion_config.yaml",
                 *, device=None, gpu: int = 0, prior: str = "diffusion", attention: str = "auto",
                 precision: str = "fp32", compile: bool = False, channels_last: bool = False,
                 steps=None, eta: Optional[float] = None, sampler: Optional[str] = None,
                 em_iterations: Optional[int] = None, download_checkpoint: bool = False,
                 allow_random_weights: bool = False, batched_unet: Union[str, bool] = "auto",
                 noise_device: str = "run", compile_mode: str = "default",
                 compile_cache: Union[str, os.PathLike, None] = None):
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = pick_device(device, gpu)
        self.prior = prior
        self.precision = precision
        self.channels_last = channels_last
        self.batched_unet = resolve_batched_unet(batched_unet, precision)
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}")
        if compile and compile_mode == "reduce-overhead" and self.device.type != "cuda":
            raise ValueError(f"compile_mode reduce-overhead records CUDA graphs and needs a CUDA device, "
                             f"not {self.device.type}; use compile_mode default")
        self.compile_mode = compile_mode if compile else None
        self.compile_cache = None      # the folder of torch.compile's caches, set when compiling
        self.compile_seconds = None    # wall time of the first UNet call (compilation included)
        if noise_device not in NOISE_DEVICES:
            raise ValueError(f"noise_device must be one of {', '.join(NOISE_DEVICES)}, got {noise_device!r}")
        # "run": noise drawn on the run device, as released (CUDA and CPU generators differ);
        # "cpu": drawn on the CPU and moved, so every device starts from the same numbers.
        self.noise_device = None if noise_device == "run" else torch.device("cpu")
        diff_cfg = (diffusion_config if isinstance(diffusion_config, DiffusionConfig)
                    else load_diffusion_config(diffusion_config))
        self.diffusion_config = diff_cfg.with_overrides(eta=eta, sampler=sampler, timestep_respacing=steps)
        self.schedule = make_schedule(self.diffusion_config.noise_schedule, self.diffusion_config.steps,
                                      self.diffusion_config.timestep_respacing, self.device)
        d = self.diffusion_config
        # the sampler's options are the diffusion config's keys of the same names
        self.sampler_options = SamplerOptions(**{f.name: getattr(d, f.name) for f in fields(SamplerOptions)})
        self.em_iterations = em_iterations if em_iterations is not None else self.schedule.num_steps
        self.compile_cache_request = compile_cache
        self.model = None
        self.model_config = None
        self.size_multiple = 1  # the UNet's input sides must be multiples of this
        if prior == "diffusion":
            self.model_config = (model_config if isinstance(model_config, ModelConfig)
                                 else load_model_config(model_config))
            self.size_multiple = self.model_config.size_multiple
            self.model = self._load_model(attention, compile, download_checkpoint, allow_random_weights)
        _set_tf32(precision == "tf32")

    # -- model -------------------------------------------------------------------------------
    def _load_model(self, attention, compile, download_checkpoint, allow_random_weights):
        from guided_diffusion.unet import create_model
        from util.download import ensure_checkpoint

        path = self.model_config.model_path
        if path is None and not allow_random_weights:
            raise ValueError("model_path is empty in the model config; set it to "
                             "256x256_diffusion_uncond.pt (allow_random_weights=True for timing runs)")
        if path is not None:
            path = str(ensure_checkpoint(Path(path), assume_yes=download_checkpoint))
        model = create_model(**self.model_config.unet_kwargs(), model_path=path, attention=attention)
        # inference only: no autograd state, and autocast keeps no grad-tracking weight casts
        model = model.to(self.device).eval().requires_grad_(False)
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if low is not None:
            # weights stored in the low precision (half the memory) and norms computed in it;
            # autocast still runs the remaining ops as it would
            model = model.to(low).set_low_precision_norms(True)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile:
            self.compile_cache = configure_compile_cache(self.compile_cache_request)
            model = torch.compile(model, dynamic=True, mode=self.compile_mode)
        return model

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def model_fn(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network as the sampler calls it, in the chosen precision; output float32.

        A batch of pairs goes through the UNet one pair at a time unless ``batched_unet`` (the
        default under tf32/bf16/fp16, see :func:`resolve_batched_unet`):
        convolution and GEMM kernels round differently at different batch sizes (seen here on
        the first 3x3 convolution, ~1e-6), so only per-pair calls make a pair's output
        identical whatever the batch. The EM step, FFTs and sampler updates stay batched."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compile_mode is not None and self.compile_seconds is None:
            return self._first_compiled_call(x, t)
        with self._autocast():
            if self.batched_unet or x.shape[0] == 1:
                out = self.model(x, t)
            else:
                out = torch.cat([self.model(x[k:k + 1], t[k:k + 1]) for k in range(x.shape[0])])
        if self.compile_mode == "reduce-overhead":
            # CUDA graphs replay into the same output buffers: keep this step's result our own
            return out.float().clone()
        return out.float()

    def _first_compiled_call(self, x, t):
        """The first call compiles the UNet: time it (synchronised) and say so, once."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        self.compile_seconds = 0.0  # so the call below runs the ordinary path
        out = self.model_fn(x, t)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.compile_seconds = time.perf_counter() - start
        _report(f"compile: {self.compile_seconds:.1f} s (first UNet call, compilation included; "
                f"cache: {self.compile_cache})")
        return out

    # -- geometry ----------------------------------------------------------------------------
    @staticmethod
    def working_size(height: int, width: int, opts: FuseOptions) -> tuple[int, int]:
        m = opts.crop_multiple
        if opts.size == "crop":
            return height - height % m, width - width % m
        return -(-height // m) * m, -(-width // m) * m

    def _to_tensor(self, grays: Sequence[np.ndarray], opts: FuseOptions) -> torch.Tensor:
        """Grey 0..255 -> (N, 1, h, w) in [-1, 1] on the device: each image cropped top-left to
        its working size ("crop") or reflect-padded up to it ("pad")."""
        tensors = []
        for gray in grays:
            height, width = gray.shape
            work_h, work_w = self.working_size(height, width, opts)
            t = torch.from_numpy(np.ascontiguousarray(gray[:min(height, work_h), :min(width, work_w)]))
            t = ((t[None, None] / 255) * 2 - 1).to(self.device)
            if (work_h, work_w) != tuple(t.shape[-2:]):
                t = F.pad(t, (0, work_w - t.shape[-1], 0, work_h - t.shape[-2]), mode="reflect")
            tensors.append(t)
        return torch.cat(tensors)

    # -- fusion ------------------------------------------------------------------------------
    def fuse_sources(self, ir: Sequence[Source], vis: Sequence[Source], opts: FuseOptions = FuseOptions(),
                     *, callback: Optional[Callable[[dict], None]] = None, progress: bool = False,
                     desc: str = "steps") -> list[dict]:
        """Fuse a batch of same-size pairs. Returns per pair {"gray": (h, w) uint8, and with
        ``opts.color`` "color": (h, w, 3) uint8}; h, w are the cropped size, or the source size
        with ``size="pad"``. The callback observes each step, its "sample" cut to that size."""
        opts = opts.validate()
        if not ir or len(ir) != len(vis):
            raise ValueError("need the same positive number of infrared and visible sources")
        m = opts.crop_multiple
        if m % self.size_multiple:
            raise ValueError(f"crop_multiple {m} does not fit the UNet, whose input sides must be "
                             f"multiples of {self.size_multiple}; use {self.size_multiple} or a multiple of it")
        for a, b in zip(ir, vis):
            check_pair(a, b, m)
        height, width = ir[0].gray.shape
        work_h, work_w = self.working_size(height, width, opts)
        same = (lambda a: a.gray.shape == (height, width)) if opts.size == "pad" else \
            (lambda a: self.working_size(*a.gray.shape, opts) == (work_h, work_w))
        if not all(same(a) for a in ir):
            raise ValueError("the pairs of one batch must share one working size "
                             "(sample.py groups them; call once per size)")
        out_h, out_w = (work_h, work_w) if opts.size == "crop" else (height, width)
        ir_t = self._to_tensor([s.gray for s in ir], opts)
        vis_t = self._to_tensor([s.gray for s in vis], opts)
        fusion = FusionOptions(lamb=opts.lamb, rho=opts.rho, em_roles=opts.em_roles)

        with torch.inference_mode():
            if self.prior == "none":
                luma = em_only_fusion(ir_t, vis_t, fusion, self.em_iterations)
            else:
                def observer(info):  # the observer sees the sample at the output size
                    callback({**info, "sample": info["sample"][..., :out_h, :out_w]})
                rgb = fuse(self.model_fn, self.schedule, self.sampler_options, ir_t, vis_t,
                           [opts.seed] * len(ir), fusion, callback=observer if callback else None,
                           progress=progress, desc=desc, noise_device=self.noise_device)
                luma = luma_bt601(rgb)
            luma = luma[..., :out_h, :out_w]
            finite = torch.isfinite(luma).flatten(1).all(dim=1).cpu().tolist()
            gray = normalise_to_uint8(luma, rounding="recon").cpu().numpy()

        results = []
        for k in range(len(ir)):
            if not finite[k]:
                results.append({"error": f"{ir[k].name}: the sample holds NaN or Inf, nothing saved; "
                                         "try another --seed or --precision fp32"})
                continue
            result = {"gray": gray[k]}
            if opts.color:
                result["color"] = colorize(gray[k], ir[k], vis[k], out_h, out_w)
            results.append(result)
        return results

    def __call__(self, ir: ImageLike, vis: ImageLike, **options) -> np.ndarray:
        """Fuse one pair; options are :class:`FuseOptions` fields. Returns (H, W) uint8 grey, or
        with ``color=True`` (H, W, 3) uint8 RGB."""
        opts = replace(FuseOptions(), **options)
        result = self.fuse_sources([load_source(ir, "ir")], [load_source(vis, "vis")], opts)[0]
        if "error" in result:
            raise FusionError(result["error"])
        return result["color"] if opts.color else result["gray"]


def colour_source(ir: Source, vis: Source) -> Optional[Source]:
    """Where chroma comes from: the visible-role image if it has colour (infrared-visible),
    else the infrared-role image if it has (PET/SPECT pseudo-colour), else none (grey)."""
    for candidate in (vis, ir):
        if candidate.has_chroma:
            return candidate
    return None


def colorize(gray: np.ndarray, ir: Source, vis: Source, height: int, width: int) -> np.ndarray:
    """Fused luminance with the colour source's chroma: Y = the fused grey, Cb/Cr = those of
    the colour source (full-range BT.601, the field's convention), back to 8-bit RGB. With no
    colour source the grey result is returned as RGB (grey stays grey)."""
    source = colour_source(ir, vis)
    if source is None:
        return np.repeat(gray[..., None], 3, axis=2)
    src = torch.from_numpy(source.rgb[:height, :width].astype(np.float32)).permute(2, 0, 1)[None]
    ycbcr = ycbcr_full_from_rgb(src)
    ycbcr[:, 0] = torch.from_numpy(gray.astype(np.float32))
    rgb = rgb_from_ycbcr_full(ycbcr)[0].permute(1, 2, 0)
    return torch.round(rgb).clamp(0, 255).to(torch.uint8).numpy()


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


def _report(line: str) -> None:
    """One diagnostic line on stderr, above any progress bar."""
    try:
        from tqdm.auto import tqdm
        tqdm.write(line, file=sys.stderr)
    except ImportError:
        print(line, file=sys.stderr, flush=True)


def _set_tf32(enabled: bool) -> None:
    """fp32 is faithful only with TF32 off (cuDNN allows it by default); tf32 turns it on."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
