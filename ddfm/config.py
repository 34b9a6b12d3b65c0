"""Every option of DDFM and every rule it must satisfy, in one module.

The options, grouped by who reads them (each group a frozen dataclass; a field's metadata holds
its help, its choices and its rule, see :func:`util.options.option`):

==================  ==========================================================================
``RunOptions``      the folder runner (``sample.py``): inputs, outputs, batching, config files
``FuseOptions``     per pair: seed, lamb, rho, the EM roles, size handling, colour
``DiffusionConfig`` the released ``diffusion_config.yaml`` keys plus ``eta``: the schedule and
                    the sampler (it extends the sampler's ``SamplerOptions``)
``FuserOptions``    how the :class:`~ddfm.Fuser` is built: prior, device, precision, kernels
``ModelConfig``     the released ``model_config_imagenet.yaml`` keys: the UNet's shape
==================  ==========================================================================

Three doors lead in, and all three call :func:`checked` with the same rules, so a bad value
gets the same message through each, only the option spelled as that door spells it:

* the command line (flags generated from the fields): ``--lamb must be ..., got -1.0``
* YAML files (the two released configs, or an options file given with ``--config``):
  ``run.yaml: key 'lamb' must be ..., got -1.0``
* Python (the dataclasses, :class:`~ddfm.Fuser` keywords, :func:`ddfm.runner.run`):
  ``lamb must be ..., got -1.0``

Names that meant two things in the release get one meaning each: ``diffusion_steps`` is the
base schedule's length (the released YAML spells it ``steps``, still read); the respaced
sampler's step count is ``timestep_respacing`` (on the command line ``--steps`` as before, and
``steps=`` in Python).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from guided_diffusion.diffusion import (DPMPP_ORDERS, MEAN_TYPES, SAMPLERS, SCHEDULES, SPACINGS, VAR_TYPES,
                                        SamplerOptions, kept_timesteps, named_beta_schedule)
from guided_diffusion.unet import ATTENTION_MODES, parse_attention_rates, parse_channel_mult
from util.config import ConfigError, load_yaml
from util.options import add_options, cli_fields, flag_of, option

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
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
# Base diffusion steps: the release uses 1000; far more make 1 - alpha_bar of the first steps
# round to 0 in float32 (from about 1e6 with the cosine schedule, 1e7 linear): NaN samples.
MAX_STEPS = 100_000


# -- rules ---------------------------------------------------------------------------------------
def _finite_positive(v) -> bool:
    return math.isfinite(v) and v > 0


def _finite_nonnegative(v) -> bool:
    return math.isfinite(v) and v >= 0


POSITIVE = (lambda v: v >= 1, ">= 1")
FINITE_POSITIVE = (_finite_positive, "a finite number > 0")
FINITE_NONNEGATIVE = (_finite_nonnegative, "a finite number >= 0")


def _modalities_ok(text: str) -> bool:
    names = [m.strip() for m in text.split(",")]
    return len(names) == 2 and all(names) and names[0] != names[1]


class Door:
    """How one way in names an option and where it was given: ``Door.CLI`` (``--lamb``),
    ``Door.PYTHON`` (``lamb``), ``Door.yaml(path)`` (``path: key 'lamb'``)."""

    def __init__(self, where: Optional[str], spell: Callable[[dataclasses.Field], str]):
        self.where, self.spell = where, spell

    def error(self, f: dataclasses.Field, text: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.spell(f)} {text}" if self.where else f"{self.spell(f)} {text}")

    @staticmethod
    def yaml(path) -> "Door":
        return Door(str(path), lambda f: f"key '{f.metadata.get('yaml_key', f.name)}'")


Door.CLI = Door(None, flag_of)
Door.PYTHON = Door(None, lambda f: f.metadata.get("api_name", f.name))

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(value: Any, allowed: tuple):
    """``value`` as one of the ``allowed`` types where the conversion loses nothing (numpy
    integers, an int for a float, an int for a string); else raise TypeError."""
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, np.bool_):
        value = bool(value)
    if bool in allowed and isinstance(value, bool):
        return value
    if isinstance(value, bool):
        raise TypeError
    if int in allowed and isinstance(value, numbers.Integral):
        return int(value)
    if float in allowed and isinstance(value, numbers.Real):
        return float(value)
    if str in allowed and isinstance(value, (str, numbers.Integral)):
        return str(value)
    raise TypeError


def _allowed_types(tp) -> tuple:
    """int -> (int,); Optional[Union[int, str]] -> (int, str, NoneType)."""
    return tuple(typing.get_args(tp)) if typing.get_origin(tp) is Union else (tp,)


def _check_field(f: dataclasses.Field, tp, value, door: Door):
    allowed = _allowed_types(tp)
    try:
        value = _coerce(value, allowed)
    except TypeError:
        names = " or ".join(_TYPE_NAMES.get(t, str(t)) for t in allowed if t is not type(None))
        raise door.error(f, f"must be {names}, got {value!r}") from None
    choices = f.metadata.get("choices")
    if choices is not None and value is not None and value not in choices:
        raise door.error(f, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
    rule = f.metadata.get("rule")
    if rule is not None and value is not None and not rule[0](value):
        raise door.error(f, f"must be {rule[1]}, got {value!r}")
    return value


def checked(obj, door: Door = Door.PYTHON):
    """``obj`` with every field's type and rule checked (numbers converted where lossless),
    then the class's rules across fields (``cross_check``); a bad value raises one
    :class:`ConfigError` line that names the option as ``door`` spells it."""
    hints = typing.get_type_hints(type(obj))
    values = {f.name: _check_field(f, hints[f.name], getattr(obj, f.name), door) for f in fields(obj)}
    obj = dataclasses.replace(obj, **values)
    cross = getattr(obj, "cross_check", None)
    if cross is not None:
        cross(door)
    return obj


def field_named(cls, name: str) -> dataclasses.Field:
    return next(f for f in fields(cls) if f.name == name)


def unknown_key(key, known, door: Door, list_known: bool = False) -> ConfigError:
    """The one line for a key no option has: the closest known one, or (``list_known``) all."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = (f" (did you mean '{close[0]}'?)" if close else
            f"; known keys: {', '.join(known)}" if list_known else "")
    return ConfigError(f"{door.where}: unknown key '{key}'{hint}" if door.where else f"unknown option '{key}'{hint}")


def from_mapping(cls, data: Mapping[str, Any], door: Door, base=None):
    """``cls`` (or a copy of ``base``) with ``data``'s keys, checked; unknown keys refused with the
    closest known one. Keys may use a field's ``yaml_key`` (its older spelling)."""
    known = {f.metadata.get("yaml_key", f.name): f.name for f in fields(cls)}
    known.update({f.name: f.name for f in fields(cls)})
    values = {}
    for key, value in data.items():
        if key not in known:
            raise unknown_key(key, known, door, list_known=True)
        values[known[key]] = value
    missing = [f.name for f in fields(cls) if f.default is dataclasses.MISSING and f.name not in values]
    if base is None and missing:
        raise ConfigError(f"{door.where}: missing key '{missing[0]}'")
    return checked(cls(**values) if base is None else dataclasses.replace(base, **values), door)


# -- the options ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOptions:
    """The folder runner's options (inputs, outputs, batching, which config files)."""
    model_config: str = option(str(CONFIG_DIR / "model_config_imagenet.yaml"),
                               help="UNet config (the released keys; default configs/model_config_imagenet.yaml "
                                    "of this repository); model_path inside it")
    diffusion_config: str = option(str(CONFIG_DIR / "diffusion_config.yaml"),
                                   help="diffusion/sampler config (the released keys, plus eta; default "
                                        "configs/diffusion_config.yaml of this repository)")
    config: Optional[str] = option(None, metavar="YAML",
                                   help="options file: any option of this list as 'name: value' "
                                        "lines (flags given here win)")
    preset: Optional[str] = option(None, help="dataset preset: a name in configs/presets/ (e.g. roadscene, "
                                              "harvard_mri_pet) or a YAML path; sets --modalities and --color "
                                              "unless given")
    input: str = option("input", help="folder holding the two modality folders")
    modalities: str = option("ir,vi",
                             rule=(_modalities_ok, "two different folder names, e.g. ir,vi"),
                             help="the two subfolders of --input, infrared role first (default ir,vi)")
    save_dir: str = option("output", help="output folder")
    record: bool = option(False, help="save the sample after every step under SAVE_DIR/progress/<stem>/")
    trace: bool = option(False, help="save every step's tensors to SAVE_DIR/trace/<stem>.npz "
                                     "(keys as the golden trace)")
    sheet: bool = option(False, help="also write SAVE_DIR/sheet/<stem>.png: sources and result side by side")
    overwrite: bool = option(False, help="fuse pairs whose outputs already exist")
    quiet: bool = option(False, help="no progress bars")
    batch: int = option(1, group="speed", rule=POSITIVE,
                        help="pairs of the same size fused together (each with its own seeded noise)")

    @property
    def modality_names(self) -> tuple[str, str]:
        ir_name, vis_name = (m.strip() for m in self.modalities.split(","))
        return ir_name, vis_name


@dataclass(frozen=True)
class FuseOptions:
    """Per-call settings that change the output (all defaults reproduce the release)."""
    seed: int = option(3407, group="fusion", rule=(lambda v: SEED_MIN <= v <= SEED_MAX,
                                                   f"an integer from {SEED_MIN} to {SEED_MAX} (torch's "
                                                   "generator range)"),
                       help="seed, reset for every pair (default 3407)")
    lamb: float = option(0.5, group="fusion", rule=FINITE_POSITIVE, help="EM lambda (default 0.5)")
    rho: float = option(0.001, group="fusion", rule=FINITE_NONNEGATIVE, help="EM rho (default 0.001)")
    em_roles: str = option("release", group="fusion", choices=EM_ROLES,
                           help="which source is the EM's I: release = visible (as the released code), "
                                "paper = infrared (paper Eq. 13)")
    size: str = option("crop", group="fusion", choices=SIZES,
                       help="crop: top-left to multiples of --crop_multiple (released); "
                            "pad: reflect-pad, fuse, crop back to the exact source size")
    crop_multiple: int = option(32, group="fusion", rule=POSITIVE, help="size multiple (default 32)")
    # a --preset sets it unless given
    color: bool = option(False, group="io",
                         help="also write SAVE_DIR/color/<stem>.png: fused Y with the colour source's CbCr")

    def validate(self) -> "FuseOptions":
        return checked(self)


def max_ddim_eta(noise_schedule: str, steps: int, kept) -> float:
    """The largest DDIM eta for which ``1 - abar_prev - sigma**2`` stays >= 0 at every respaced
    step (eta <= 1 always does; above, it depends on the schedule)."""
    abar = np.cumprod(1.0 - named_beta_schedule(noise_schedule, steps))[sorted(kept)]
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    ratio = (1 - abar[1:] / abar_prev[1:]) / (1 - abar[1:])  # the step with abar_prev = 1 has sigma 0
    return float(1 / np.sqrt(ratio.max())) if ratio.size and ratio.max() > 0 else math.inf


def parse_respacing(text):
    """A --steps value: digits as an int (that many steps), anything else as written."""
    if text is None:
        return None
    text = str(text).strip()
    return int(text) if text.isdigit() else text


@dataclass(frozen=True)
class DiffusionConfig(SamplerOptions):
    """The released ``diffusion_config.yaml`` keys, plus ``eta`` (DDIM eta; 0.0 as released):
    the sampler's options (inherited, re-declared here with their rules) and the schedule's."""
    sampler: str = option("ddim", group="fusion", choices=SAMPLERS,
                          help="override the config: ddim (released), ddpm (paper Algorithm 1), dpmpp_2m or "
                               "dpmpp_3m (DPM-Solver++ multistep, 2nd/3rd order, on the EM-corrected x0)")
    model_mean_type: str = option("epsilon", choices=MEAN_TYPES)
    model_var_type: str = option("learned_range", choices=VAR_TYPES)
    eta: float = option(0.0, group="fusion", rule=(_finite_nonnegative, ">= 0 and finite"),
                        help="DDIM eta (overrides the config; 0 as released)")
    # the released YAML calls this "steps"; --steps on the command line is timestep_respacing
    diffusion_steps: int = option(1000, yaml_key="steps",
                                  rule=(lambda v: 2 <= v <= MAX_STEPS,
                                        f"2 to {MAX_STEPS} (released: 1000; with more, the first noise "
                                        "levels round to 1 in float32 and every sample is NaN)"))
    noise_schedule: str = option("linear", choices=SCHEDULES)
    timestep_respacing: Optional[Union[int, str]] = option(
        None, group="fusion", flag="steps", aliases=("--timestep_respacing",), api_name="steps",
        parse=parse_respacing, help="sampler steps (timestep_respacing override): 100, 25, '10,5,5', ddim50")
    spacing: str = option("uniform", group="fusion", choices=SPACINGS,
                          help="where the --steps steps fall among the original ones: uniform (released), "
                               "logsnr (uniform in log-SNR) or quadratic (uniform in sqrt(t)); logsnr and "
                               "quadratic take a step count")

    def cross_check(self, door: Door) -> None:
        """The respacing must fit the schedule, and DDIM's eta must keep its variance real."""
        respacing = self.timestep_respacing
        f = field_named(DiffusionConfig, "timestep_respacing")
        fix = (f"give 2 to {self.diffusion_steps} steps, sections such as '10,5,5', or ddimN"
               if self.spacing == "uniform" else
               f"give 2 to {self.diffusion_steps} steps (spacing {self.spacing} takes a step count)")
        if self.sampler in DPMPP_ORDERS and self.eta > 0:
            raise door.error(field_named(DiffusionConfig, "eta"),
                             f"= {self.eta} applies to the ddim sampler only; {self.sampler} is "
                             "deterministic: leave eta at 0")
        try:
            abar = np.cumprod(1.0 - named_beta_schedule(self.noise_schedule, self.diffusion_steps))
            kept = kept_timesteps(abar, respacing, self.spacing)
        except ValueError as exc:
            raise door.error(f, f"= {respacing!r} does not fit {self.diffusion_steps} diffusion steps "
                                f"({exc}); {fix}") from None
        if len(kept) < 2:
            # the respaced process needs two steps: its clipped posterior log-variance takes
            # the second step's value for the first, as guided-diffusion defines it
            raise door.error(f, f"= {respacing!r} keeps {len(kept)} step(s), at least 2 are needed; {fix}")
        if self.sampler == "ddim" and self.eta > 1:
            limit = max_ddim_eta(self.noise_schedule, self.diffusion_steps, kept)
            if self.eta > limit:
                raise door.error(field_named(DiffusionConfig, "eta"),
                                 f"= {self.eta} makes the DDIM update take the square root of a negative "
                                 f"number (every sample NaN) with this schedule; use eta <= "
                                 f"{math.floor(limit * 1000) / 1000:g}")


@dataclass(frozen=True)
class FuserOptions:
    """How a :class:`~ddfm.Fuser` is built: the prior, the device, the UNet's precision and
    kernels. Outputs equal the defaults' to float rounding unless the help says otherwise."""
    prior: str = option("diffusion", group="fusion", choices=PRIORS,
                        help="diffusion (DDFM) or none: the EM fusion alone, no UNet, no checkpoint")
    em_iterations: Optional[int] = option(
        None, group="fusion", aliases=("--em_iters",), rule=POSITIVE,
        help="with --prior none: EM iterations (default: the sampler's step count)")
    gpu: int = option(0, group="speed", rule=(lambda v: v >= 0, ">= 0"),
                      help="CUDA device index (CPU when no CUDA)")
    # a bare --batched_unet means on (the flag was a switch before auto became the default)
    batched_unet: str = option(
        "auto", group="speed", choices=BATCHED_UNET, const="on",
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

    def cross_check(self, door: Door) -> None:
        for name in ("compile_mode", "compile_cache"):
            if getattr(self, name) is not None and not self.compile:
                raise door.error(field_named(FuserOptions, name),
                                 f"applies to a compiled UNet; add {door.spell(field_named(FuserOptions, 'compile'))}"
                                 f" or drop {door.spell(field_named(FuserOptions, name))}")
        if self.em_iterations is not None and self.prior != "none":
            raise door.error(field_named(FuserOptions, "em_iterations"),
                             "applies to the EM fusion alone (prior none); with the diffusion prior "
                             "the EM step runs once per sampler step: leave it out")

    def validate(self) -> "FuserOptions":
        return checked(self)


@dataclass(frozen=True)
class ModelConfig:
    """The released ``model_config_imagenet.yaml`` keys (guided-diffusion's create_model)."""
    image_size: int = option(dataclasses.MISSING, rule=POSITIVE)
    num_channels: int = option(dataclasses.MISSING, rule=POSITIVE)
    num_res_blocks: int = option(dataclasses.MISSING, rule=POSITIVE)
    channel_mult: str = ""
    learn_sigma: bool = False
    class_cond: bool = False
    use_checkpoint: bool = False
    attention_resolutions: str = "16"
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    dropout: float = option(0.0, rule=(lambda v: 0.0 <= v < 1.0, "in [0, 1)"))
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False
    model_path: Optional[str] = None

    def cross_check(self, door: Door) -> None:
        for key, parse, example in (("channel_mult", parse_channel_mult, "1,1,2,2,4,4"),
                                    ("attention_resolutions", parse_attention_rates, "32,16,8")):
            try:
                parse(getattr(self, key), self.image_size)
            except (ValueError, ZeroDivisionError) as exc:
                raise door.error(field_named(ModelConfig, key),
                                 f"= {getattr(self, key)!r} cannot be used ({exc}); give comma-separated "
                                 f"positive integers such as {example}") from None

    @property
    def size_multiple(self) -> int:
        """The UNet's input sides must be multiples of this (one halving per level)."""
        return 2 ** (len(parse_channel_mult(self.channel_mult, self.image_size)) - 1)

    def unet_kwargs(self) -> dict:
        """Keyword arguments of ``create_model`` (without model_path)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model_path"}


#: where the options come from, in the order --help lists them within a group
OPTION_CLASSES = (RunOptions, FuseOptions, DiffusionConfig, FuserOptions)
OPTION_GROUPS = {"io": "inputs and outputs", "fusion": "fusion (each changes the output)",
                 "speed": "speed and devices (outputs equal to float rounding unless noted)"}
DEFAULT_GROUPS = {RunOptions: "io", DiffusionConfig: "fusion"}


def add_run_options(parser) -> None:
    """Every option as a command-line flag of ``parser`` (sample.py's, and reproduce.py's
    pass-through), in argument groups; each defaults to None, "not given"."""
    groups = {key: parser.add_argument_group(title) for key, title in OPTION_GROUPS.items()}
    for cls in OPTION_CLASSES:
        add_options(parser, cls, groups, DEFAULT_GROUPS.get(cls))


# -- loading -------------------------------------------------------------------------------------
def load_model_config(path: Union[str, Path]) -> ModelConfig:
    path = Path(path)
    cfg = from_mapping(ModelConfig, load_yaml(path), Door.yaml(path))
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
    return from_mapping(DiffusionConfig, load_yaml(path), Door.yaml(path))


def option_names() -> dict[str, type]:
    """Every option (a command-line flag) -> the class that holds it."""
    return {f.name: cls for cls in OPTION_CLASSES for f in cli_fields(cls)}


def split_options(values: Mapping[str, Any], door: Door) -> dict[type, dict]:
    """Option values by name (Python spellings accepted, e.g. ``steps``) -> {class: values};
    an unknown name is refused with the closest known one."""
    by_name = option_names()
    aliases = {f.metadata["api_name"]: f.name for cls in OPTION_CLASSES for f in fields(cls)
               if "api_name" in f.metadata}
    out: dict[type, dict] = {cls: {} for cls in OPTION_CLASSES}
    for key, value in values.items():
        name = aliases.get(key, key)
        if name not in by_name:
            raise unknown_key(key, [*by_name, *aliases], door)
        out[by_name[name]][name] = value
    return out


def load_options_file(path: Union[str, Path]) -> dict[type, dict]:
    """An options file (``--config``): any option as ``name: value``, each checked by its rule
    as the command line checks it. Returns {class: values}."""
    path = Path(path)
    door = Door.yaml(path)
    groups = split_options(load_yaml(path), door)
    for cls, values in groups.items():
        if values:  # type and rule of each value, named as the file names it
            hints = typing.get_type_hints(cls)
            for name, value in values.items():
                values[name] = _check_field(field_named(cls, name), hints[name], value, door)
    return groups
