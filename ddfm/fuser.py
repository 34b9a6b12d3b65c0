"""The Fuser: DDFM's model and schedule built once, then any number of same-size batches fused.

``sample.py`` runs exactly this code for every batch of pairs; nothing here touches the
output folders.
"""
from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from ddfm.color import colorize, luma_bt601
from ddfm.fusion import FusionError, em_only_fusion, fuse, normalise_to_uint8
from ddfm.gaussian import build_gaussian_prior
from ddfm.config import (CONFIG_DIR, ConfigError, DiffusionConfig, Door, FuseOptions, FuserOptions, ModelConfig,
                         RunOptions, checked, from_mapping, load_diffusion_config, load_model_config,
                         split_options)
from ddfm.sources import ImageLike, Source, load_source
from ddfm.geometry import check_batch, to_tensor, working_size
from ddfm.speed import LOW_PRECISION, UNetCall, configure_compile_cache, resolve_batched_unet
from guided_diffusion.diffusion import make_schedule



RELEASED_MODEL_CONFIG = CONFIG_DIR / "model_config_imagenet.yaml"
RELEASED_DIFFUSION_CONFIG = CONFIG_DIR / "diffusion_config.yaml"


def pick_device(device=None, gpu: int = 0) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        if not 0 <= gpu < torch.cuda.device_count():
            raise ValueError(f"gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device(f"cuda:{gpu}")
    return torch.device("cpu")


PathOrConfig = Union[str, os.PathLike]


def checkpoint_expected(model_config: ModelConfig, config_path: Optional[Path]) -> Optional[str]:
    """What a checkpoint error says was expected: the released checkpoint for the released
    config (None: the checkpoint loader's default), else a state dict of the config's UNet."""
    if config_path is not None and config_path.resolve() == RELEASED_MODEL_CONFIG:
        return None
    named = f"the model config {config_path}" if config_path is not None else "the given model config"
    cfg = model_config
    return (f"expected a state dict of the UNet that {named} describes (image_size "
            f"{cfg.image_size}, num_channels {cfg.num_channels}, learn_sigma {cfg.learn_sigma}, "
            f"class_cond {cfg.class_cond})")


def load_unet(model_config: ModelConfig, options: FuserOptions, device: torch.device,
              config_path: Optional[Path] = None) -> torch.nn.Module:
    """The UNet of ``model_config`` on ``device``, in inference mode, with the options'
    attention kernel, precision, memory format and compilation; the checkpoint is fetched when
    missing (asked, or without asking with ``download_checkpoint``). ``config_path``, where the
    config was read, is named in checkpoint errors."""
    from guided_diffusion.unet import create_model
    from util.download import ensure_checkpoint

    path = model_config.model_path
    if path is None and not options.allow_random_weights:
        raise ValueError("model_path is empty in the model config; set it to "
                         "256x256_diffusion_uncond.pt (allow_random_weights=True for timing runs)")
    if path is not None:
        path = str(ensure_checkpoint(Path(path), assume_yes=options.download_checkpoint))
    model = create_model(**model_config.unet_kwargs(), model_path=path, attention=options.attention,
                         checkpoint_expected=checkpoint_expected(model_config, config_path))
    # inference only: no autograd state, and autocast keeps no grad-tracking weight casts
    model = model.to(device).eval().requires_grad_(False)
    low = LOW_PRECISION.get(options.precision)
    if low is not None:
        # weights stored in the low precision (half the memory) and norms computed in it;
        # autocast still runs the remaining ops as it would
        model = model.to(low).set_low_precision_norms(True)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.compile:  # the caller has pointed the compile caches somewhere (configure_compile_cache)
        model = torch.compile(model, dynamic=True, mode=options.compile_mode or "default")
    return model


def load_prior_model(prior: str, model_config: Optional[ModelConfig], diffusion_config: DiffusionConfig,
                     options: FuserOptions, device: torch.device,
                     config_path: Optional[Path] = None) -> Optional[torch.nn.Module]:
    """The network a prior samples with: the UNet (``diffusion``), the exact denoiser of the
    fitted Gaussian image prior (``gaussian``: no checkpoint, any size), or None (``none``: the
    EM model alone)."""
    if prior == "diffusion":
        return load_unet(model_config, options, device, config_path)
    if prior == "gaussian":
        return build_gaussian_prior(diffusion_config.noise_schedule, diffusion_config.diffusion_steps, device)
    return None


def split_overrides(overrides: dict) -> tuple[dict, dict]:
    """Keyword overrides of :class:`Fuser` -> (FuserOptions fields, DiffusionConfig keys);
    ``steps`` is the Python name of ``timestep_respacing``. None keeps the config's value."""
    groups = split_options({k: v for k, v in overrides.items() if v is not None}, Door.PYTHON)
    for cls in (RunOptions, FuseOptions):
        for key in groups[cls]:
            raise ConfigError(f"{key} is not an option of the Fuser: give it per call, "
                              f"fuser(ir, vis, {key}=...), or to ddfm.fuse_folder")
    return groups[FuserOptions], groups[DiffusionConfig]


class Fuser:
    """The DDFM pipeline with its model and schedule built once.

    ``Fuser(model_config, diffusion_config, options, device=..., **overrides)``: the configs as
    paths or loaded objects; ``options`` a :class:`FuserOptions` (default: its defaults);
    ``overrides`` any of its fields (``prior=``, ``precision=``, ...) and any diffusion config key
    (``eta=``, ``sampler=``, ``steps=`` for ``timestep_respacing``; None keeps the config's).

    ``prior="none"`` builds no UNet and needs no checkpoint: the EM fusion model is iterated on
    its own (``em_iterations``, default: as many as the sampler has steps). TF32 is a process-wide
    switch: the entry points set it; from Python call :func:`set_tf32` (off for faithful fp32 on
    CUDA, whose cuDNN allows TF32 by default).
    """

    def __init__(self, model_config: Union[PathOrConfig, ModelConfig] = RELEASED_MODEL_CONFIG,
                 diffusion_config: Union[PathOrConfig, DiffusionConfig] = RELEASED_DIFFUSION_CONFIG,
                 options: Optional[FuserOptions] = None, *, device=None, **overrides):
        builder, diffusion = split_overrides(overrides)
        self.options = checked(replace(options or FuserOptions(), **builder))
        self.device = pick_device(device, self.options.gpu)
        self.noise_device = None if self.options.noise_device == "run" else torch.device("cpu")
        compiling = self.options.compile and self.prior == "diffusion"
        compile_mode = (self.options.compile_mode or "default") if compiling else None
        if compile_mode == "reduce-overhead" and self.device.type != "cuda":
            raise ValueError(f"compile_mode reduce-overhead records CUDA graphs and needs a CUDA device, "
                             f"not {self.device.type}; use compile_mode default")
        # the folder of torch.compile's caches
        compile_cache = configure_compile_cache(self.options.compile_cache) if compiling else None
        diff_cfg = (diffusion_config if isinstance(diffusion_config, DiffusionConfig)
                    else load_diffusion_config(diffusion_config))
        self._set_sampler(checked(replace(diff_cfg, **diffusion)))
        self.model_config = None
        self.size_multiple = 1  # the UNet's input sides must be multiples of this
        config_path = None
        if self.prior == "diffusion":
            self.model_config = (model_config if isinstance(model_config, ModelConfig)
                                 else load_model_config(model_config))
            config_path = None if isinstance(model_config, ModelConfig) else Path(model_config)
            self.size_multiple = self.model_config.size_multiple
        model = load_prior_model(self.prior, self.model_config, self.diffusion_config, self.options, self.device,
                                 config_path)
        self.unet = UNetCall(model, self.device, self.precision,
                             resolve_batched_unet(self.options.batched_unet, self.precision),
                             self.options.channels_last, compile_mode, compile_cache)

    def _set_sampler(self, diffusion_config: DiffusionConfig) -> None:
        self.diffusion_config = d = diffusion_config
        self.schedule = make_schedule(d.noise_schedule, d.diffusion_steps, d.timestep_respacing, self.device,
                                      spacing=d.spacing)
        self.em_iterations = (self.options.em_iterations if self.options.em_iterations is not None
                              else self.schedule.num_steps)

    def respaced(self, steps) -> "Fuser":
        """This fuser with another ``timestep_respacing`` (as ``steps=``), sharing its model:
        nothing is loaded again. Outputs equal those of a Fuser built with ``steps=steps``."""
        other = copy.copy(self)
        other._set_sampler(checked(replace(self.diffusion_config, timestep_respacing=steps)))
        return other

    def with_sampler(self, **changes) -> "Fuser":
        """This fuser with other diffusion config keys (``sampler=``, ``spacing=``, ``steps=`` for
        ``timestep_respacing``, ``eta=``), sharing its model: nothing is loaded again."""
        builder, diffusion = split_overrides(changes)
        if builder:
            raise ConfigError(f"{next(iter(builder))} needs a new Fuser (it changes the model); "
                              "with_sampler takes the sampler's options")
        other = copy.copy(self)
        other._set_sampler(checked(replace(self.diffusion_config, **diffusion)))
        return other

    @property
    def prior(self) -> str:
        return self.options.prior

    @property
    def precision(self) -> str:
        return self.options.precision

    @property
    def model(self) -> Optional[torch.nn.Module]:
        return self.unet.model

    @property
    def compile_seconds(self) -> Optional[float]:
        """Wall time of the first, compiling UNet call (None before it, or not compiling)."""
        return self.unet.compile_seconds

    def model_fn(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network as the sampler calls it (see :class:`ddfm.speed.UNetCall`)."""
        return self.unet(x, t)

    working_size = staticmethod(working_size)

    def check_batch(self, ir: Sequence[Source], vis: Sequence[Source], opts: FuseOptions) -> tuple[int, int]:
        """Raise when the batch cannot be fused as one; return its output size (h, w)."""
        return check_batch(ir, vis, opts, self.size_multiple)

    def fuse_luma(self, ir_t: torch.Tensor, vis_t: torch.Tensor, opts: FuseOptions, out_size, *,
                  callback=None, progress: bool = False, desc: str = "steps") -> torch.Tensor:
        """The fused luminance (N, 1, h, w) of a batch of working-size tensors, cut to
        ``out_size``: DDFM's sampler with the EM hook, or the EM model alone (``prior="none"``)."""
        out_h, out_w = out_size
        if self.prior == "none":
            luma = em_only_fusion(ir_t, vis_t, opts, self.em_iterations)
        else:
            def observer(info):  # the observer sees the sample at the output size
                callback({**info, "sample": info["sample"][..., :out_h, :out_w]})
            # the diffusion config is the sampler's options (DiffusionConfig extends SamplerOptions)
            rgb = fuse(self.model_fn, self.schedule, self.diffusion_config, ir_t, vis_t,
                       [opts.seed] * ir_t.shape[0], opts, callback=observer if callback else None,
                       progress=progress, desc=desc, noise_device=self.noise_device)
            luma = luma_bt601(rgb)
        return luma[..., :out_h, :out_w]

    def fuse_sources(self, ir: Sequence[Source], vis: Sequence[Source], opts: FuseOptions = FuseOptions(),
                     *, callback: Optional[Callable[[dict], None]] = None, progress: bool = False,
                     desc: str = "steps") -> list[dict]:
        """Fuse a batch of same-size pairs. Returns per pair {"gray": (h, w) uint8, and with
        ``opts.color`` "color": (h, w, 3) uint8}; h, w are the cropped size, or the source size
        with ``size="pad"``. The callback observes each step, its "sample" cut to that size."""
        opts = opts.validate()
        out_size = self.check_batch(ir, vis, opts)
        ir_t = to_tensor([s.gray for s in ir], opts, self.device)
        vis_t = to_tensor([s.gray for s in vis], opts, self.device)
        with torch.inference_mode():
            luma = self.fuse_luma(ir_t, vis_t, opts, out_size, callback=callback,
                                  progress=progress, desc=desc)
            return postprocess(luma, ir, vis, opts)

    def __call__(self, ir: ImageLike, vis: ImageLike, **options) -> np.ndarray:
        """Fuse one pair; options are :class:`FuseOptions` fields. Returns (H, W) uint8 grey, or
        with ``color=True`` (H, W, 3) uint8 RGB."""
        opts = from_mapping(FuseOptions, options, Door.PYTHON, base=FuseOptions())
        result = self.fuse_sources([load_source(ir, "ir")], [load_source(vis, "vis")], opts)[0]
        if "error" in result:
            raise FusionError(result["error"])
        return result["color"] if opts.color else result["gray"]


def set_tf32(enabled: bool) -> None:
    """fp32 is faithful only with TF32 off (cuDNN allows it by default); tf32 turns it on."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def postprocess(luma: torch.Tensor, ir: Sequence[Source], vis: Sequence[Source],
                opts: FuseOptions) -> list[dict]:
    """Fused luminance -> per pair {"gray", and with ``opts.color`` "color"} as uint8, or
    {"error"} for a pair whose sample is not finite."""
    out_h, out_w = luma.shape[-2:]
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
