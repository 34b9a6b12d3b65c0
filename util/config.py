"""YAML configs validated once into typed, frozen objects.

Unknown or misspelled keys, wrong types and out-of-range values are a :class:`ConfigError`
whose message is one line naming the file, the key and the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from guided_diffusion.diffusion import SamplerOptions
from util.options import option
from util.yamlfile import YamlRefused, load_config_text


class ConfigError(ValueError):
    """A config problem; ``str()`` is one line naming the file, the key and the fix."""


def load_yaml(path: Union[str, Path]) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start} is not UTF-8); give a YAML file saved as UTF-8 text") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file; give the YAML file's path") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        data = load_config_text(text)
    except YamlRefused as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; check indentation and 'key: value' syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of 'key: value' lines, got {type(data).__name__}")
    return data


def parse_respacing(text):
    """A --steps value: digits as an int (that many steps), anything else as written."""
    if text is None:
        return None
    text = str(text).strip()
    return int(text) if text.isdigit() else text


def _type_name(tp) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _check(value: Any, tp, where: str, key: str):
    """Coerce ``value`` to ``tp`` where YAML's typing is loose; raise ConfigError otherwise."""
    allowed = tp if isinstance(tp, tuple) else (tp,)
    if value is None and type(None) in allowed:
        return None
    if bool in allowed and isinstance(value, bool):
        return value
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if float in allowed and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if str in allowed and isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    names = " or ".join(_type_name(t) for t in allowed if t is not type(None))
    raise ConfigError(f"{where}: key '{key}' must be {names}, got {value!r}")


def _allowed_types(tp) -> tuple:
    """int -> (int,); Optional[Union[int, str]] -> (int, str, NoneType): what _check accepts."""
    args = typing.get_args(tp)
    return tuple(args) if typing.get_origin(tp) is Union else (tp,)


def _build(cls, data: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    types = {name: _allowed_types(tp) for name, tp in typing.get_type_hints(cls).items()}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
    values = {}
    for name, field in known.items():
        if name in data:
            values[name] = _check(data[name], types[name], where, name)
        elif field.default is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing key '{name}'")
    obj = cls(**values)
    obj.validate(where)
    return obj


def _one_of(value, choices, where, key):
    if value not in choices:
        raise ConfigError(f"{where}: key '{key}' is {value!r}; use one of {', '.join(map(str, choices))}")


# Base diffusion steps: the release uses 1000; far more make 1 - alpha_bar of the first steps
# round to 0 in float32 (from about 1e6 with the cosine schedule, 1e7 linear): NaN samples.
MAX_STEPS = 100_000


def max_ddim_eta(noise_schedule: str, steps: int, kept) -> float:
    """The largest DDIM eta for which ``1 - abar_prev - sigma**2`` stays >= 0 at every respaced
    step (eta <= 1 always does; above, it depends on the schedule)."""
    import numpy as np
    from guided_diffusion.diffusion import named_beta_schedule
    abar = np.cumprod(1.0 - named_beta_schedule(noise_schedule, steps))[sorted(kept)]
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    ratio = (1 - abar[1:] / abar_prev[1:]) / (1 - abar[1:])  # the step with abar_prev = 1 has sigma 0
    return float(1 / np.sqrt(ratio.max())) if ratio.size and ratio.max() > 0 else math.inf


@dataclass(frozen=True)
class ModelConfig:
    """The released ``model_config_imagenet.yaml`` keys (guided-diffusion's create_model)."""
    image_size: int
    num_channels: int
    num_res_blocks: int
    channel_mult: str = ""
    learn_sigma: bool = False
    class_cond: bool = False
    use_checkpoint: bool = False
    attention_resolutions: str = "16"
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    dropout: float = 0.0
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False
    model_path: Optional[str] = None

    def validate(self, where):
        for key in ("image_size", "num_channels", "num_res_blocks"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{where}: key '{key}' must be positive, got {getattr(self, key)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}: key 'dropout' must be in [0, 1), got {self.dropout}")
        from guided_diffusion.unet import _parse_attention_rates, _parse_channel_mult
        for key, parse, example in (("channel_mult", _parse_channel_mult, "1,1,2,2,4,4"),
                                    ("attention_resolutions", _parse_attention_rates, "32,16,8")):
            try:
                parse(getattr(self, key), self.image_size)
            except (ValueError, ZeroDivisionError) as exc:
                raise ConfigError(f"{where}: key '{key}' = {getattr(self, key)!r} cannot be used ({exc}); "
                                  f"give comma-separated positive integers such as {example}") from None

    @property
    def size_multiple(self) -> int:
        """The UNet's input sides must be multiples of this (one halving per level)."""
        from guided_diffusion.unet import _parse_channel_mult
        return 2 ** (len(_parse_channel_mult(self.channel_mult, self.image_size)) - 1)

    def unet_kwargs(self) -> dict:
        """Keyword arguments of ``create_model`` (without model_path)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model_path"}


@dataclass(frozen=True)
class DiffusionConfig(SamplerOptions):
    """The released ``diffusion_config.yaml`` keys, plus ``eta`` (DDIM eta; 0.0 as released):
    the sampler's options (inherited) and the schedule's."""
    steps: int = 1000
    noise_schedule: str = "linear"
    timestep_respacing: Optional[Union[int, str]] = option(
        None, flag="steps", parse=parse_respacing,
        help="timestep_respacing override: 100, 25, '10,5,5', ddim50")

    def validate(self, where, names: Optional[dict] = None):
        """``names`` shows keys as the caller spells them (e.g. timestep_respacing -> --steps)."""
        from guided_diffusion.diffusion import (MEAN_TYPES, SAMPLERS, SCHEDULES, VAR_TYPES,
                                                space_timesteps)
        _one_of(self.sampler, SAMPLERS, where, "sampler")
        _one_of(self.noise_schedule, SCHEDULES, where, "noise_schedule")
        _one_of(self.model_mean_type, MEAN_TYPES, where, "model_mean_type")
        _one_of(self.model_var_type, VAR_TYPES, where, "model_var_type")
        if not 2 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"{where}: key 'steps' must be 2 to {MAX_STEPS}, got {self.steps} (released: "
                              "1000; with more, the first noise levels round to 1 in float32 and every "
                              "sample is NaN)")
        eta_name = names["eta"] if names and "eta" in names else "key 'eta'"
        if not (math.isfinite(self.eta) and self.eta >= 0):
            raise ConfigError(f"{where}: {eta_name} must be >= 0 and finite, got {self.eta}")
        respacing = self.timestep_respacing
        name = (f"{names['timestep_respacing']} {respacing}" if names and "timestep_respacing" in names
                else f"key 'timestep_respacing' = {respacing!r}")
        fix = f"give 2 to {self.steps} steps, sections such as '10,5,5', or ddimN"
        try:
            kept = space_timesteps(self.steps, respacing)
        except ValueError as exc:
            raise ConfigError(f"{where}: {name} does not fit steps = {self.steps} ({exc}); {fix}") from None
        if len(kept) < 2:
            # the respaced process needs two steps: its clipped posterior log-variance takes
            # the second step's value for the first, as guided-diffusion defines it
            raise ConfigError(f"{where}: {name} keeps {len(kept)} step(s), at least 2 are needed; {fix}")
        if self.sampler == "ddim" and self.eta > 1:
            limit = max_ddim_eta(self.noise_schedule, self.steps, kept)
            if self.eta > limit:
                raise ConfigError(f"{where}: {eta_name} = {self.eta} makes the DDIM update take the square "
                                  f"root of a negative number (every sample NaN) with this schedule; "
                                  f"use eta <= {math.floor(limit * 1000) / 1000:g}")

    def with_overrides(self, where: str = "command line", names: Optional[dict] = None,
                       **changes) -> "DiffusionConfig":
        """A copy with the non-None ``changes``, validated; errors name ``where`` and the keys
        as ``names`` spells them."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            return self
        obj = dataclasses.replace(self, **changes)
        obj.validate(where, {k: v for k, v in (names or {}).items() if k in changes})
        return obj


def load_model_config(path: Union[str, Path]) -> ModelConfig:
    path = Path(path)
    cfg = _build(ModelConfig, load_yaml(path), str(path))
    return dataclasses.replace(cfg, model_path=resolve_model_path(cfg.model_path, path))


def resolve_model_path(model_path: Optional[str], config_path: Path) -> Optional[str]:
    """``model_path`` as written if it exists from the working directory, else relative to the
    YAML file's folder if it exists there; otherwise as written (the loader then names it)."""
    if model_path is None or str(model_path).strip() == "":
        return None
    candidate = Path(model_path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return str(candidate)
    beside = config_path.parent / candidate
    if beside.exists():
        return str(beside)
    return str(candidate)


def load_diffusion_config(path: Union[str, Path]) -> DiffusionConfig:
    path = Path(path)
    return _build(DiffusionConfig, load_yaml(path), str(path))
