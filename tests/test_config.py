import pytest

from util.config import ConfigError, load_diffusion_config, load_model_config

from conftest import REPO


def test_released_configs_load_with_released_values():
    model = load_model_config(REPO / "configs/model_config_imagenet.yaml")
    assert (model.image_size, model.num_channels, model.num_res_blocks) == (256, 256, 2)
    assert model.attention_resolutions == "32,16,8" and model.learn_sigma
    diff = load_diffusion_config(REPO / "configs/diffusion_config.yaml")
    assert (diff.sampler, diff.steps, diff.noise_schedule, diff.timestep_respacing) == ("ddim", 1000, "linear", 100)
    assert (diff.model_mean_type, diff.model_var_type) == ("epsilon", "learned_range")
    assert diff.clip_denoised and not diff.dynamic_threshold and not diff.rescale_timesteps
    assert diff.eta == 0.0


def test_model_path_resolved_beside_yaml(golden, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_model_config(golden / "unet_tiny.yaml")
    assert cfg.model_path == str(golden / "unet_tiny.pt")


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needle", [
    ("sampler: ddim\ntimestep_respacng: 10\n", "unknown key 'timestep_respacng' (did you mean 'timestep_respacing'?)"),
    ("sampler: dpm\n", "key 'sampler' is 'dpm'"),
    ("noise_schedule: quadratic\n", "key 'noise_schedule'"),
    ("steps: many\n", "key 'steps' must be an integer"),
    ("clip_denoised: 3\n", "key 'clip_denoised' must be true/false"),
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
