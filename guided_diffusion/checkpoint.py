"""Checkpoint audit and loading for the UNet: refuse any file that does not fit, loudly.

The released code loads the checkpoint inside ``try/except`` and, on any failure, goes on with
random weights; the fused images are then noise with no error. Here every failure (missing,
unreadable, not a state dict, wrong keys or shapes) raises :class:`CheckpointError` with one
line naming the file, what is wrong and the fix. Files are read with ``weights_only=True``, so
a checkpoint cannot run code while it is unpickled.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

# What create_model's default config expects; callers with another model can pass their own.
DEFAULT_EXPECTED = (
    "expected OpenAI's 256x256_diffusion_uncond.pt (unconditional ImageNet, learn_sigma) "
    "for configs/model_config_imagenet.yaml"
)
# How many mismatches an error message spells out before giving only the count.
SHOWN_MISMATCHES = 5
# Keys under which training scripts commonly nest the weights.
NESTED_STATE_DICT_KEYS = ("state_dict", "model")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the one-line message names the file and the fix."""


def _one_line(text: object, limit: int = 160) -> str:
    """First line of ``text`` without terminal colour codes, shortened to ``limit`` characters."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(text)).strip().splitlines()
    line = lines[0].strip() if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(int(size)) for size in shape) + "]"


def _shape_of(value) -> tuple[int, ...] | None:
    """Shape of a tensor or of a shape given as a list/tuple/torch.Size; None otherwise."""
    if torch.is_tensor(value):
        return tuple(value.shape)
    if isinstance(value, (list, tuple, torch.Size)) and all(isinstance(size, int) for size in value):
        return tuple(value)
    return None


def _expected_shapes(model_or_expected_shapes) -> dict[str, tuple[int, ...]]:
    if isinstance(model_or_expected_shapes, nn.Module):
        return {key: tuple(value.shape) for key, value in model_or_expected_shapes.state_dict().items()}
    if isinstance(model_or_expected_shapes, Mapping):
        nested = model_or_expected_shapes.get("state_dict")
        # A manifest ({"num_parameters": ..., "state_dict": {...}}) stands for its state dict.
        if isinstance(nested, Mapping):
            model_or_expected_shapes = nested
        shapes = {}
        for key, value in model_or_expected_shapes.items():
            shape = _shape_of(value)
            if shape is None:
                raise TypeError(f"expected shape for {key!r} is {type(value).__name__}, not a shape")
            shapes[key] = shape
        return shapes
    raise TypeError("audit_state_dict needs an nn.Module or a mapping of key -> shape")


def audit_state_dict(model_or_expected_shapes, state_dict: Mapping) -> list[str]:
    """List how ``state_dict`` differs from a model (or from a {key: shape} mapping).

    Returns one line per problem: missing keys and shape mismatches in the model's key order,
    then unexpected keys in the file's order. An empty list means the state dict fits exactly.
    """
    expected = _expected_shapes(model_or_expected_shapes)
    problems = []
    for key, expected_shape in expected.items():
        if key not in state_dict:
            problems.append(f"missing {key} {_shape_text(expected_shape)}")
            continue
        found_shape = _shape_of(state_dict[key])
        if found_shape is None:
            problems.append(f"{key} is a {type(state_dict[key]).__name__}, not a tensor")
        elif found_shape != expected_shape:
            problems.append(
                f"shape of {key}: file {_shape_text(found_shape)}, model {_shape_text(expected_shape)}"
            )
    for key, value in state_dict.items():
        if key not in expected:
            shape = _shape_of(value)
            shown = _shape_text(shape) if shape is not None else type(value).__name__
            problems.append(f"unexpected {key} {shown}")
    return problems


def _diagnosis(problems: list[str]) -> str:
    """A short guess at what kind of checkpoint was given, from its mismatches."""
    if any(problem.startswith("unexpected label_emb.") for problem in problems):
        return " (the file is class-conditional)"
    if any(problem.startswith("unexpected module.") for problem in problems):
        return " (keys carry a DataParallel 'module.' prefix)"
    if any(problem.startswith("shape of ") for problem in problems):
        return " (the file is for another model size or config)"
    return ""


def _unreadable(path: Path, error: Exception, expected: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} cannot be read ({type(error).__name__}: {_one_line(error, 100)}); "
        f"the file is truncated or corrupt, download it again; {expected}"
    )


def _torch_load(path: Path, expected: str):
    """``torch.load(path, weights_only=True)`` on the CPU, every failure as one CheckpointError."""
    # torch warns (several lines, before any error) about files in the legacy format saved with
    # another pickle protocol; the user gets one line, which says so.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # classified below, outside the warnings filter
            failure = error
        else:
            failure = None
    protocol = next((re.search(r"pickle protocol (\d+)", str(w.message)) for w in caught
                     if "pickle protocol" in str(w.message)), None)
    if failure is not None and protocol is not None:
        raise CheckpointError(
            f"checkpoint {path} was saved in torch's legacy format with pickle protocol "
            f"{protocol.group(1)}, which weights_only loading cannot read; load it once with the "
            f"torch that wrote it and re-save it with torch.save(state_dict, path); {expected}"
        ) from failure
    try:
        if failure is not None:
            raise failure
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise _unreadable(path, error, expected) from error
        # weights_only refuses pickled classes and callables (whole models, code); name the
        # first one torch reports rather than its multi-line advice.
        refused_global = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" ({refused_global.group(1)})" if refused_global else ""
        raise CheckpointError(
            f"checkpoint {path} holds pickled objects other than tensors{what}, refused by "
            f"weights_only loading (a whole model or code?); save model.state_dict() instead; "
            f"{expected}"
        ) from error
    except Exception as error:  # zip/pickle readers raise many types for damaged files
        raise _unreadable(path, error, expected) from error
    return loaded


def read_state_dict(path: str | os.PathLike, expected: str = DEFAULT_EXPECTED) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` onto the CPU, refusing anything else.

    Accepts a plain ``{name: tensor}`` mapping or one nested under "state_dict" or "model".
    Raises :class:`CheckpointError` for a missing, unreadable or non-state-dict file.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise CheckpointError(f"checkpoint {path} {what}; {expected}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes), download it again; {expected}")
    loaded = _torch_load(path, expected)

    state_dict = loaded
    if isinstance(loaded, Mapping):
        for nested_key in NESTED_STATE_DICT_KEYS:
            nested = loaded.get(nested_key)
            if isinstance(nested, Mapping) and not torch.is_tensor(nested):
                state_dict = nested
                break
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(loaded).__name__}, not a state dict; {expected}"
        )
    if not state_dict:
        raise CheckpointError(f"checkpoint {path} holds an empty state dict; {expected}")
    not_tensors = [key for key, value in state_dict.items() if not torch.is_tensor(value)]
    if not_tensors:
        shown = ", ".join(
            f"{key!s} ({type(state_dict[key]).__name__})" for key in not_tensors[:SHOWN_MISMATCHES]
        )
        raise CheckpointError(
            f"checkpoint {path} is not a state dict: {len(not_tensors)} entries are not tensors, "
            f"e.g. {shown}; {expected}"
        )
    return dict(state_dict)


def _first_few(items: list[str], sep: str, more: str) -> str:
    """The first SHOWN_MISMATCHES items joined by ``sep``, then ``more`` with the count left."""
    rest = len(items) - SHOWN_MISMATCHES
    return sep.join(items[:SHOWN_MISMATCHES]) + (more.format(rest) if rest > 0 else "")


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    expected: str = DEFAULT_EXPECTED,
    assign: bool = False,
) -> nn.Module:
    """Load the state dict at ``path`` into ``model`` after auditing it; return ``model``.

    Nothing is written into ``model`` unless every key and shape matches. ``assign=True``
    adopts the file's tensors (cast to the model's dtypes) instead of copying into existing
    ones, which lets a model built on the ``meta`` device be materialised by loading.
    """
    state_dict = read_state_dict(path, expected)
    problems = audit_state_dict(model, state_dict)
    if problems:
        shown = _first_few(problems, "; ", "; ... {} more")
        raise CheckpointError(
            f"checkpoint {path} does not fit the model{_diagnosis(problems)}: "
            f"{len(problems)} mismatch{'es' if len(problems) > 1 else ''}: {shown}; {expected}"
        )
    not_finite = [key for key, value in state_dict.items()
                  if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if not_finite:
        shown = _first_few(not_finite, ", ", " and {} more")
        raise CheckpointError(
            f"checkpoint {path} holds NaN or Inf weights in {len(not_finite)} tensor"
            f"{'s' if len(not_finite) > 1 else ''} ({shown}): every sample would be NaN; the "
            f"file is corrupt, download it again; {expected}"
        )
    if assign:
        model_tensors = model.state_dict()
        state_dict = {
            key: value.to(dtype=model_tensors[key].dtype) for key, value in state_dict.items()
        }
    model.load_state_dict(state_dict, strict=True, assign=assign)
    left_on_meta = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if left_on_meta:
        # Only reachable with assign=True on a meta model that has entries outside its state dict.
        raise CheckpointError(f"checkpoint {path} left {left_on_meta[0]} unloaded; {expected}")
    return model


def manifest_of(model: nn.Module) -> dict:
    """{"num_parameters": int, "state_dict": {key: shape list}}, the golden manifest's format."""
    return {
        "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "state_dict": {key: list(value.shape) for key, value in model.state_dict().items()},
    }
