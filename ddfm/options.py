"""The options of DDFM that change its output, and the choice lists, each defined once."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

from guided_diffusion.unet import ATTENTION_MODES
from util.options import option

PRIORS = ("diffusion", "none", "gaussian")
PRIOR_LABELS = {"diffusion": "DDFM", "none": "EM only", "gaussian": "DDFM, Gaussian prior"}  # for captions
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
SIZES = ("crop", "pad")
NOISE_DEVICES = ("run", "cpu")
BATCHED_UNET = ("auto", "on", "off")  # auto: one UNet call per batch under tf32/bf16/fp16, per pair in fp32
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile modes offered
# Which source plays which role in the EM model (y = I - V, x = f - V, f = I - x):
#   "release": I = the visible image (vi/), V = the infrared image (ir/), as the released code
#              passes them (its sample.py reads vi/ into `inf_img` and ir/ into `vis_img`);
#   "paper":   I = infrared, V = visible, the assignment the paper's Eq. 13 describes.
EM_ROLES = ("release", "paper")
SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1  # what torch.Generator.manual_seed accepts


@dataclass(frozen=True)
class FuseOptions:
    """Per-call settings that change the output (all defaults reproduce the release)."""
    seed: int = option(3407, group="fusion", help="seed, reset for every pair (default 3407)")
    lamb: float = option(0.5, group="fusion", help="EM lambda (default 0.5)")
    rho: float = option(0.001, group="fusion", help="EM rho (default 0.001)")
    em_roles: str = option("release", group="fusion", choices=EM_ROLES,
                           help="which source is the EM's I: release = visible (as the released code), "
                                "paper = infrared (paper Eq. 13)")
    size: str = option("crop", group="fusion", choices=SIZES,
                       help="crop: top-left to multiples of --crop_multiple (released); "
                            "pad: reflect-pad, fuse, crop back to the exact source size")
    crop_multiple: int = option(32, group="fusion", help="size multiple (default 32)")
    # None on the command line: a --preset may set it
    color: bool = option(False, group="io", cli_default=None,
                         help="also write SAVE_DIR/color/<stem>.png: fused Y with the colour source's CbCr")

    def validate(self) -> "FuseOptions":
        if not (isinstance(self.seed, int) and SEED_MIN <= self.seed <= SEED_MAX):
            raise ValueError(f"seed must be an integer from {SEED_MIN} to {SEED_MAX} (torch's "
                             f"generator range), got {self.seed}")
        if not (math.isfinite(self.lamb) and self.lamb > 0):
            raise ValueError(f"lamb must be a finite number > 0, got {self.lamb}")
        if not (math.isfinite(self.rho) and self.rho >= 0):
            raise ValueError(f"rho must be a finite number >= 0, got {self.rho}")
        if self.em_roles not in EM_ROLES:
            raise ValueError(f"em_roles must be one of {', '.join(EM_ROLES)}, got {self.em_roles!r}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.crop_multiple < 1:
            raise ValueError(f"crop_multiple must be >= 1, got {self.crop_multiple}")
        return self


@dataclass(frozen=True)
class FuserOptions:
    """How a :class:`~ddfm.Fuser` is built: the prior, the device, the UNet's precision and
    kernels. Outputs equal the defaults' to float rounding unless the help says otherwise."""
    prior: str = option("diffusion", group="fusion", choices=PRIORS,
                        help="diffusion (DDFM), none (the EM fusion alone, no UNet, no checkpoint) or "
                             "gaussian (DDFM with a fitted Gaussian image prior whose denoiser is exact; no "
                             "checkpoint)")
    em_iterations: Optional[int] = option(
        None, group="fusion", aliases=("--em_iters",),
        help="with --prior none: EM iterations (default: the sampler's step count)")
    gpu: int = option(0, group="speed", help="CUDA device index (CPU when no CUDA)")
    # a bare --batched_unet means on (the flag was a switch before auto became the default)
    batched_unet: Union[str, bool] = option(
        "auto", group="speed", choices=BATCHED_UNET, const="on", parse=str,
        help="with --batch: one UNet call for the whole batch (on; equal to the per-pair result to "
             "float rounding) or one per pair (off; outputs identical whatever the batch); auto "
             "(default) = on under tf32/bf16/fp16, off in fp32")
    # "run": noise drawn on the run device, as released (CUDA and CPU generators differ);
    # "cpu": drawn on the CPU and moved, so every device starts from the same numbers.
    noise_device: str = option("run", group="speed", choices=NOISE_DEVICES,
                               help="where seeded noise is drawn: run = the run device (released; a GPU run "
                                    "then differs from a CPU run), cpu = same numbers on every device")
    precision: str = option("fp32", group="speed", choices=PRECISIONS,
                            help="UNet precision: fp32 (faithful), tf32, bf16, fp16 (EM and FFT stay fp32)")
    attention: str = option("auto", group="speed", choices=ATTENTION_MODES,
                            help="attention kernel: auto = SDPA; chunked = legacy maths 128 queries at a "
                                 "time (bit-identical to legacy); legacy = the original")
    compile: bool = option(False, group="speed",
                           help="torch.compile the UNet (the first step compiles; its time is printed)")
    compile_mode: Optional[str] = option(
        None, group="speed", choices=COMPILE_MODES,
        help="with --compile: default, reduce-overhead (CUDA graphs; CUDA only) or max-autotune")
    compile_cache: Optional[str] = option(
        None, group="speed", metavar="DIR",
        help="with --compile: folder of the compile caches, reused by later runs "
             "(default $TORCHINDUCTOR_CACHE_DIR, else ~/.cache/ddfm/inductor)")
    channels_last: bool = option(False, group="speed", help="channels_last memory format")
    download_checkpoint: bool = option(False, group="speed",
                                       help="download the checkpoint without asking when it is missing")
    allow_random_weights: bool = option(False, group="speed",
                                        help="run an untrained UNet when model_path is empty (timing only)")

    def validate(self) -> "FuserOptions":
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.compile_mode not in (None, *COMPILE_MODES):
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.noise_device not in NOISE_DEVICES:
            raise ValueError(f"noise_device must be one of {', '.join(NOISE_DEVICES)}, "
                             f"got {self.noise_device!r}")
        return self
