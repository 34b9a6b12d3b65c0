"""Dataset presets (``configs/presets/*.yaml``): where a test set's pairs live and how to read
them. Keys: name, task (ivf | mif), folder (under a data root), modalities (infrared role
first), color (write colour output), paper_pairs (test-set size the paper states, or null)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from util.config import ConfigError, load_yaml

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "presets"
KEYS = ("name", "task", "folder", "modalities", "color", "paper_pairs")
TASKS = ("ivf", "mif")


class PresetError(ValueError):
    pass


@dataclass(frozen=True)
class Preset:
    key: str
    name: str
    task: str
    folder: str
    modalities: tuple
    color: bool
    paper_pairs: Optional[int]


def available() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path) -> Preset:
    """A preset by name (``configs/presets/<name>.yaml``) or by path. A file that exists but
    is not a preset is named as such; "not found" only when neither exists."""
    text = str(name_or_path)
    path = Path(name_or_path)
    named = PRESET_DIR / f"{text}.yaml"
    is_name = not path.suffix and "/" not in text and os.sep not in text
    if is_name and named.is_file():
        path = named
    elif not path.exists():
        if is_name:
            raise PresetError(f"preset {text!r} not found; use one of {', '.join(available())} "
                              "or a YAML path")
        raise PresetError(f"preset file {path} not found; give an existing preset YAML or one of "
                          f"{', '.join(available())}")
    if path.is_dir():
        raise PresetError(f"--preset {path} is a folder, not a preset file; give a preset YAML "
                          f"(keys {', '.join(KEYS)}) or one of {', '.join(available())}")
    not_preset = f"{path}: not a preset file"
    try:
        data = load_yaml(path)
    except ConfigError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise PresetError(f"{not_preset} ({reason}); give a preset YAML (keys {', '.join(KEYS)}) "
                          f"or one of {', '.join(available())}") from None
    unknown = sorted(set(data) - set(KEYS))
    missing = [k for k in KEYS if k not in data]
    if unknown or missing:
        what = f"unknown key '{unknown[0]}'" if unknown else f"missing key '{missing[0]}'"
        raise PresetError(f"{not_preset} ({what}); preset keys are {', '.join(KEYS)}")
    mods = data["modalities"]
    if not (isinstance(mods, list) and len(mods) == 2 and all(isinstance(m, str) and m for m in mods)):
        raise PresetError(f"{path}: key 'modalities' must be a list of two folder names")
    if data["task"] not in TASKS:
        raise PresetError(f"{path}: key 'task' must be one of {', '.join(TASKS)}")
    if not isinstance(data["color"], bool):
        raise PresetError(f"{path}: key 'color' must be true/false")
    pairs = data["paper_pairs"]
    if pairs is not None and (not isinstance(pairs, int) or pairs < 1):
        raise PresetError(f"{path}: key 'paper_pairs' must be a positive integer or null")
    return Preset(key=path.stem, name=str(data["name"]), task=data["task"], folder=str(data["folder"]),
                  modalities=tuple(mods), color=data["color"], paper_pairs=pairs)


def presets_for(task: str) -> list[Preset]:
    return [p for p in (load_preset(k) for k in available()) if p.task == task]
