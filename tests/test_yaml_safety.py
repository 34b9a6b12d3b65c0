"""Configs are read by util.yamlfile's loader: aliases, anchors, deep nesting and oversized
files are refused in one line (a ConfigError naming the file) before anything is built."""
import pytest
import yaml

from ddfm.config import load_diffusion_config
from util.config import ConfigError, load_yaml
from util.yamlfile import MAX_BYTES, MAX_DEPTH, YamlRefused, load_config_text


def alias_bomb(levels: int = 9) -> str:
    """The billion-laughs document: each level lists the previous one nine times (9^levels)."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(9))}]" for i in range(1, levels + 1)]
    lines.append(f"timestep_respacing: *a{levels}")
    return "\n".join(lines) + "\n"


def refused(tmp_path, text: str) -> str:
    path = tmp_path / "diffusion_config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_diffusion_config(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert len(message) < 300  # the refused value is never printed
    return message


def test_an_alias_bomb_is_refused_at_its_first_anchor(tmp_path):
    message = refused(tmp_path, alias_bomb())
    assert "anchor &a0 at line 1" in message and "write the value out" in message


def test_a_lone_alias_is_refused(tmp_path):
    with pytest.raises(YamlRefused) as exc:
        load_config_text("steps: 1000\nsampler: *x\n")
    assert "alias *x at line 2" in str(exc.value)


@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, style):
    # flow: far past Python's recursion limit for PyYAML's composer; block: 400 levels of
    # indentation (160 KB, under the size limit)
    depth = 5000 if style == "flow" else 400
    text = ("steps: " + "[" * depth + "]" * depth + "\n" if style == "flow"
            else "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n")
    message = refused(tmp_path, text)
    assert f"nesting deeper than {MAX_DEPTH} levels" in message


def test_nesting_up_to_the_limit_loads():
    lists = MAX_DEPTH - 1  # the outer mapping is the first level
    value = load_config_text("k: " + "[" * lists + "1" + "]" * lists + "\n")["k"]
    for _ in range(lists):
        value = value[0]
    assert value == 1
    with pytest.raises(YamlRefused):
        load_config_text("k: " + "[" * (lists + 1) + "1" + "]" * (lists + 1) + "\n")


def test_an_oversized_file_is_refused(tmp_path):
    message = refused(tmp_path, "# padding\n" * (MAX_BYTES // 10 + 1) + "steps: 1000\n")
    assert "larger than 1024 KiB" in message


def test_tags_stay_refused(tmp_path):
    message = refused(tmp_path, "steps: !!python/object/apply:os.system ['true']\n")
    assert "not valid YAML" in message


def test_the_released_configs_still_load(tmp_path):
    from conftest import REPO
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        assert isinstance(load_yaml(path), dict), path
    assert yaml.safe_load(alias_bomb(2))  # the same text PyYAML's own safe loader would expand
