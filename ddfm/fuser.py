"""The Fuser: DDFM's model and schedule built once, then any number of same-size batches fused.

``sample.py`` runs exactly this code for every batch of pairs; nothing here touches the
output folders.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ddfm.color import colorize, luma_bt601
from ddfm.fusion import FusionError, FusionOptions, em_only_fusion, fuse, normalise_to_uint8
from ddfm.options import NOISE_DEVICES, PRECISIONS, PRIORS, FuseOptions
from ddfm.sources import ImageLike, Source, check_pair, load_source
from guided_diffusion.diffusion import SamplerOptions, make_schedule
from util.config import DiffusionConfig, ModelConfig, load_diffusion_config, load_model_config


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
                 allow_random_weights: bool = False, batched_unet: bool = False,
                 noise_device: str = "run"):
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = pick_device(device, gpu)
        self.prior = prior
        self.precision = precision
        self.channels_last = channels_last
        self.batched_unet = batched_unet
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
        self.model = None
        self.model_config = None
        self.size_multiple = 1  # the UNet's input sides must be multiples of this
        if prior == "diffusion":
            self.model_config = (model_config if isinstance(model_config, ModelConfig)
                                 else load_model_config(model_config))
            self.size_multiple = self.model_config.size_multiple
            self.model = self._load_model(attention, compile, download_checkpoint, allow_random_weights)
        set_tf32(precision == "tf32")

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
            model = torch.compile(model, dynamic=True)
        return model

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def model_fn(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network as the sampler calls it, in the chosen precision; output float32.

        A batch of pairs goes through the UNet one pair at a time unless ``batched_unet``:
        convolution and GEMM kernels round differently at different batch sizes (seen here on
        the first 3x3 convolution, ~1e-6), so only per-pair calls make a pair's output
        identical whatever the batch. The EM step, FFTs and sampler updates stay batched."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            if self.batched_unet or x.shape[0] == 1:
                return self.model(x, t).float()
            return torch.cat([self.model(x[k:k + 1], t[k:k + 1]) for k in range(x.shape[0])]).float()

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


def set_tf32(enabled: bool) -> None:
    """fp32 is faithful only with TF32 off (cuDNN allows it by default); tf32 turns it on."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
