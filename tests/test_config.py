"""ddfm/config.py: the released configs load unchanged, bad files are one line, and every
option's bad value is refused with the same message through all three doors (command line,
YAML options file, Python)."""
import dataclasses

import pytest

import sample
from conftest import REPO
from ddfm import Fuser, FuseOptions, SetupError, resolve_options
from ddfm.config import (OPTION_CLASSES, ConfigError, DiffusionConfig, FuserOptions, RunOptions, checked,
                         load_diffusion_config, load_model_config)
from util.options import cli_fields, flag_of


def test_released_configs_load_with_released_values():
    model = load_model_config(REPO / "configs/model_config_imagenet.yaml")
    assert (model.image_size, model.num_channels, model.num_res_blocks) == (256, 256, 2)
    assert model.attention_resolutions == "32,16,8" and model.learn_sigma
    diff = load_diffusion_config(REPO / "configs/diffusion_config.yaml")
    # the released key "steps" is the base schedule's length: diffusion_steps here
    assert (diff.sampler, diff.diffusion_steps, diff.noise_schedule, diff.timestep_respacing) == \
        ("ddim", 1000, "linear", 100)
    assert (diff.model_mean_type, diff.model_var_type) == ("epsilon", "learned_range")
    assert diff.clip_denoised and not diff.dynamic_threshold and not diff.rescale_timesteps
    assert diff.eta == 0.0


def test_both_spellings_of_the_base_schedule_length(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text("steps: 500\ntimestep_respacing: 10\n")
    new.write_text("diffusion_steps: 500\ntimestep_respacing: 10\n")
    assert load_diffusion_config(old) == load_diffusion_config(new)
    assert load_diffusion_config(old).diffusion_steps == 500


def test_model_path_resolved_beside_yaml(golden, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_model_config(golden / "unet_tiny.yaml")
    assert cfg.model_path == str(golden / "unet_tiny.pt")


def test_default_config_paths_work_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = resolve_options({"prior": "none"})
    assert config.diffusion.timestep_respacing == 100 and config.model is None


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needle", [
    ("sampler: ddim\ntimestep_respacng: 10\n", "unknown key 'timestep_respacng' (did you mean 'timestep_respacing'?)"),
    ("sampler: dpm\n", "key 'sampler' must be one of"),
    ("noise_schedule: quadratic\n", "key 'noise_schedule'"),
    ("steps: many\n", "key 'steps' must be an integer"),
    ("clip_denoised: 3\n", "key 'clip_denoised' must be true or false"),
    ("timestep_respacing: 2000\n", "key 'timestep_respacing'"),
    ("eta: -1\n", "key 'eta' must be >= 0"),
    ("- a\n- b\n", "expected a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_diffusion_configs_are_one_line_errors(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_diffusion_config(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_model_config(tmp_path / "nope.yaml")


def test_model_config_rejects_unknown_key(tmp_path):
    path = _write(tmp_path, "image_size: 64\nnum_channels: 32\nnum_res_blocks: 1\nnum_head: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'num_heads'"):
        load_model_config(path)


def test_one_step_respacing_is_refused(tmp_path):
    path = _write(tmp_path, "timestep_respacing: 1\n")
    with pytest.raises(ConfigError, match="at least 2 are needed"):
        load_diffusion_config(path)


# -- one rule, three doors ---------------------------------------------------------------------
# A bad value for every option that has a rule or a list of choices (type-correct, so that each
# door reaches the rule itself rather than its own parsing).
BAD = {"modalities": "ir,ir", "batch": 0, "seed": 2 ** 64, "lamb": -1.0, "rho": float("nan"),
       "em_roles": "both", "size": "stretch", "crop_multiple": 0, "sampler": "euler", "eta": -0.5,
       "timestep_respacing": 1, "spacing": "karras", "prior": "gan", "em_iterations": 0, "gpu": -1, "batched_unet": "maybe",
       "noise_device": "gpu", "precision": "fp8", "attention": "flash", "compile_mode": "fast"}
RULED = [f.name for cls in OPTION_CLASSES for f in cli_fields(cls)
         if "rule" in f.metadata or "choices" in f.metadata] + ["timestep_respacing"]  # checked across fields
FIELDS = {f.name: f for cls in OPTION_CLASSES for f in cli_fields(cls)}


def test_every_ruled_option_has_a_bad_value_here():
    assert sorted(BAD) == sorted(RULED)


def _cli_text(value) -> str:
    return repr(value) if isinstance(value, float) and value != value else str(value)


def _context(name) -> dict:
    # options that only apply beside another one are tried beside it
    return {"compile_mode": {"compile": True}, "em_iterations": {"prior": "none"}}.get(name, {})


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_gets_the_same_message_through_every_door(name, tmp_path, capsys):
    value = BAD[name]
    context = {"prior": "none"} | _context(name) if name != "prior" else {}
    # Python
    with pytest.raises(SetupError) as info:
        resolve_options({**context, name: value})
    python = str(info.value)
    # YAML options file
    options_file = tmp_path / "run.yaml"
    lines = [f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in context.items()]
    options_file.write_text("\n".join(lines + [f"{name}: {value!r}" if isinstance(value, str) else
                                               f"{name}: {'.nan' if value != value else value}"]) + "\n")
    with pytest.raises(SetupError) as info:
        resolve_options({"config": str(options_file)})
    from_yaml = str(info.value)
    # command line
    flags = [f for k, v in context.items() for f in ([flag_of(FIELDS[k])] if v is True
                                                      else [flag_of(FIELDS[k]), str(v)])]
    assert sample.main(flags + [flag_of(FIELDS[name]), _cli_text(value), "--save_dir", str(tmp_path / "o")]) == 2
    cli = capsys.readouterr().err.strip()
    assert cli.startswith("error: ") and "\n" not in cli and "\n" not in python and "\n" not in from_yaml
    # the rule's words, after the option's name, are the same everywhere
    spelled = {"python": FIELDS[name].metadata.get("api_name", name),
               "yaml": f"key '{name}'", "cli": flag_of(FIELDS[name])}
    rule = python.split(spelled["python"], 1)[1]
    assert from_yaml == f"{options_file}: {spelled['yaml']}{rule}"
    assert cli == f"error: {spelled['cli']}{rule}"
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_python_api_objects_check_the_same_rules():
    with pytest.raises(ConfigError, match=r"^lamb must be a finite number > 0, got -1.0$"):
        FuseOptions(lamb=-1.0).validate()
    with pytest.raises(ConfigError, match=r"^em_iterations must be >= 1, got -5$"):
        FuserOptions(prior="none", em_iterations=-5).validate()
    with pytest.raises(ConfigError, match="^steps .*at least 2 are needed"):
        Fuser(prior="none", steps=1)
    with pytest.raises(SetupError, match="^unknown option 'lamda' \\(did you mean 'lamb'\\?\\)$"):
        resolve_options({"lamda": 0.3})


def test_numpy_numbers_become_plain_ones():
    import numpy as np
    opts = FuseOptions(seed=np.int64(7), lamb=np.float32(0.25), crop_multiple=np.uint8(32), color=np.True_).validate()
    assert (opts.seed, opts.lamb, opts.crop_multiple, opts.color) == (7, 0.25, 32, True)
    assert type(opts.seed) is int and type(opts.lamb) is float and type(opts.color) is bool
    assert FuseOptions(seed=np.uint64(2 ** 64 - 1)).validate().seed == 2 ** 64 - 1


@pytest.mark.parametrize("cls", [RunOptions, FuseOptions, DiffusionConfig, FuserOptions])
def test_every_field_refuses_a_value_of_no_sensible_type(cls):
    """A field added without a type the checks know fails here: each is refused in one line
    that names it."""
    base = cls(prior="none") if cls is FuserOptions else cls()
    for f in dataclasses.fields(cls):
        with pytest.raises(ConfigError) as info:
            checked(dataclasses.replace(base, **{f.name: object()}))
        spelled = f.metadata.get("api_name", f.name)
        assert str(info.value).startswith(spelled + " ") and "\n" not in str(info.value), f.name


def test_wrong_types_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^seed must be an integer, got '7'$"):
        FuseOptions(seed="7").validate()
    with pytest.raises(ConfigError, match=r"^color must be true or false, got 1$"):
        FuseOptions(color=1).validate()


def test_the_options_classes_are_frozen_and_documented():
    for cls in (RunOptions, FuseOptions, DiffusionConfig, FuserOptions):
        assert cls.__dataclass_params__.frozen
        for f in cli_fields(cls):
            assert f.metadata["help"].strip()
    assert dataclasses.fields(DiffusionConfig)[0].name == "sampler"
