"""Reading a YAML file of ``key: value`` lines, with one-line errors (:class:`ConfigError`).

What the keys mean and which values they take is the caller's business (``ddfm.config``)."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import yaml

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
