"""DDFM from Python: build a fuser once (the model loaded once), call it on many pairs.

    from ddfm import Fuser
    fuser = Fuser("configs/model_config_imagenet.yaml", "configs/diffusion_config.yaml")
    fused = fuser("input/ir/FLIR_03952.jpg", "input/vi/FLIR_03952.jpg")   # (H, W) uint8
    rgb = fuser(ir_array, vis_pil_image, color=True, seed=1)               # (H, W, 3) uint8

The package: ``em`` (one EM step of the fusion model), ``fusion`` (the EM step as the
sampler's x0 hook, seeded noise, 8-bit output), ``color`` (colour transforms), ``sources``
(decoded source images), ``options`` (the options and their choices), ``speed`` (batched UNet
calls, the compile cache), ``fuser`` (the Fuser).
The generic diffusion parts (UNet, schedules, the sampler loop) are in ``guided_diffusion``.
"""
import os

# Fewer fragmentation failures near the memory limit (1024x768 bf16 then fits in 8 GiB of
# allocations); read when CUDA first allocates, so setting it on import is in time. Yours wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

from ddfm.fuser import Fuser, pick_device, set_tf32  # noqa: E402
from ddfm.fusion import FusionError  # noqa: E402
from ddfm.options import (BATCHED_UNET, COMPILE_MODES, EM_ROLES, NOISE_DEVICES, PRECISIONS,  # noqa: E402
                          PRIORS, SIZES, FuseOptions, FuserOptions)
from ddfm.speed import configure_compile_cache, resolve_batched_unet  # noqa: E402
from ddfm.sources import ImageLike, Source, check_pair, load_source  # noqa: E402

__all__ = ["Fuser", "FuseOptions", "FuserOptions", "FusionError", "Source", "ImageLike", "load_source", "check_pair",
           "pick_device", "set_tf32", "configure_compile_cache", "resolve_batched_unet", "BATCHED_UNET",
           "COMPILE_MODES", "EM_ROLES", "NOISE_DEVICES", "PRECISIONS", "PRIORS", "SIZES"]
