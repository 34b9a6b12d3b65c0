"""The command line's rules for option values, for every caller: a value given from Python is
converted to the plain type (numpy integers and floats accepted, as ``int``/``float``) and
checked by the same rule the CLI applies, with a one-line ValueError naming the option, the
rule and the value, never a bare TypeError.

:func:`checked_fuse_options` and :func:`checked_fuser_options` return the options with every
field checked and converted; the options' ``validate()`` methods call them.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import replace
from typing import Iterable, Optional

import numpy as np

from ddfm.options import (BATCHED_UNET, COMPILE_MODES, EM_ROLES, NOISE_DEVICES, PRECISIONS, PRIORS,
                          SEED_MAX, SEED_MIN, SIZES)
from guided_diffusion.unet import ATTENTION_MODES


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def whole_number(name: str, value, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` as an ``int`` (Python or numpy integer; not a bool, float or string) within
    ``low``..``high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number, got {_shown(value)} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        rule = (f"from {low} to {high}" if low is not None and high is not None
                else f">= {low}" if low is not None else f"<= {high}")
        raise ValueError(f"{name} must be {rule}, got {value}")
    return value


def real_number(name: str, value, above: Optional[float] = None, at_least: Optional[float] = None) -> float:
    """``value`` as a finite ``float`` (any real number type; not a bool or string), ``> above``
    or ``>= at_least``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {_shown(value)} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or (above is not None and value <= above) or \
            (at_least is not None and value < at_least):
        rule = f"> {above:g}" if above is not None else f">= {at_least:g}" if at_least is not None else ""
        raise ValueError(f"{name} must be a finite number{' ' + rule if rule else ''}, got {value}")
    return value


def one_of(name: str, value, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {_shown(value)}")
    return value


def switch(name: str, value) -> bool:
    """``value`` as a ``bool`` (Python or numpy bool only: 0, 1 or "yes" are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {_shown(value)} ({type(value).__name__})")
    return bool(value)


def checked_fuse_options(opts):
    """A :class:`~ddfm.options.FuseOptions` with every field checked and converted."""
    return replace(
        opts,
        seed=whole_number("seed", opts.seed, SEED_MIN, SEED_MAX),
        lamb=real_number("lamb", opts.lamb, above=0),
        rho=real_number("rho", opts.rho, at_least=0),
        em_roles=one_of("em_roles", opts.em_roles, EM_ROLES),
        size=one_of("size", opts.size, SIZES),
        crop_multiple=whole_number("crop_multiple", opts.crop_multiple, 1),
        color=switch("color", opts.color))


def checked_fuser_options(opts):
    """A :class:`~ddfm.options.FuserOptions` with every field checked and converted, and the
    CLI's rules between fields: ``em_iterations`` only with ``prior="none"`` (the diffusion
    prior runs one EM step per sampler step), ``compile_mode``/``compile_cache`` only with
    ``compile``."""
    prior = one_of("prior", opts.prior, PRIORS)
    em_iterations = opts.em_iterations
    if em_iterations is not None:
        em_iterations = whole_number("em_iterations", em_iterations, 1)
        if prior != "none":
            raise ValueError("em_iterations applies to prior none only (the diffusion prior runs one "
                             "EM step per sampler step); drop it or use prior none")
    compile_ = switch("compile", opts.compile)
    for name in ("compile_mode", "compile_cache"):
        if getattr(opts, name) is not None and not compile_:
            raise ValueError(f"{name} applies to a compiled UNet; add compile=True or drop {name}")
    if opts.compile_cache is not None and not isinstance(opts.compile_cache, (str, bytes)) \
            and not hasattr(opts.compile_cache, "__fspath__"):
        raise ValueError(f"compile_cache must be a folder path, got {_shown(opts.compile_cache)}")
    batched = opts.batched_unet
    batched = switch("batched_unet", batched) if not isinstance(batched, str) else \
        one_of("batched_unet", batched, BATCHED_UNET)
    return replace(
        opts, prior=prior, em_iterations=em_iterations, compile=compile_, batched_unet=batched,
        gpu=whole_number("gpu", opts.gpu, 0),
        noise_device=one_of("noise_device", opts.noise_device, NOISE_DEVICES),
        precision=one_of("precision", opts.precision, PRECISIONS),
        attention=one_of("attention", opts.attention, ATTENTION_MODES),
        compile_mode=None if opts.compile_mode is None else one_of("compile_mode", opts.compile_mode, COMPILE_MODES),
        channels_last=switch("channels_last", opts.channels_last),
        download_checkpoint=switch("download_checkpoint", opts.download_checkpoint),
        allow_random_weights=switch("allow_random_weights", opts.allow_random_weights))
