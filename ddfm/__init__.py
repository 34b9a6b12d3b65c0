"""DDFM from Python: build a fuser once (the model loaded once), call it on many pairs.

    from ddfm import Fuser
    fuser = Fuser()                                                        # the released configs
    fused = fuser("input/ir/FLIR_03952.jpg", "input/vi/FLIR_03952.jpg")   # (H, W) uint8
    rgb = fuser(ir_array, vis_pil_image, color=True, seed=1)               # (H, W, 3) uint8

    from ddfm import fuse_folder                                           # what sample.py runs
    status = fuse_folder(input="input", save_dir="output", prior="none")

The package: ``config`` (every option and its rule), ``em`` (one EM step of the fusion model),
``fusion`` (the EM step as the sampler's x0 hook, seeded noise, 8-bit output), ``color``
(colour transforms), ``sources`` (decoded source images), ``speed`` (batched UNet calls, the
compile cache), ``fuser`` (the Fuser), ``outputs`` (the output folder), ``runner`` (the
folder runner). The generic diffusion parts (UNet, schedules, the sampler loop) are in
``guided_diffusion``. Importing the package changes nothing in the process.
"""
from ddfm.config import (BATCHED_UNET, COMPILE_MODES, EM_ROLES, NOISE_DEVICES, PRECISIONS, PRIOR_LABELS, PRIORS, SIZES,
                         ConfigError, DiffusionConfig, FuseOptions, FuserOptions, ModelConfig, RunOptions)
from ddfm.fuser import Fuser, pick_device, set_tf32
from ddfm.fusion import FusionError
from ddfm.runner import SetupError, fuse_folder, resolve_options
from ddfm.sources import ImageLike, Source, check_pair, load_source
from ddfm.speed import configure_compile_cache, resolve_batched_unet

__all__ = ["Fuser", "FuseOptions", "FuserOptions", "RunOptions", "DiffusionConfig", "ModelConfig",
           "ConfigError", "FusionError", "SetupError", "Source", "ImageLike", "load_source", "check_pair",
           "fuse_folder", "resolve_options", "pick_device", "set_tf32", "configure_compile_cache",
           "resolve_batched_unet", "BATCHED_UNET", "COMPILE_MODES", "EM_ROLES", "NOISE_DEVICES", "PRECISIONS",
           "PRIOR_LABELS", "PRIORS", "SIZES"]
