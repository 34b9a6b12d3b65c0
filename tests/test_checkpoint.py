"""Checkpoint audit and loading: every unusable file is refused with one clear line, the model
is left untouched, and nothing ever falls back to random weights."""
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from guided_diffusion.unet import create_model
from guided_diffusion.checkpoint import CheckpointError, audit_state_dict, load_checkpoint, manifest_of


@pytest.fixture(scope="module")
def tiny_weights(golden) -> Path:
    return golden / "unet_tiny.pt"


@pytest.fixture(scope="module")
def tiny_state(tiny_weights) -> dict:
    return torch.load(tiny_weights, weights_only=True)


@pytest.fixture
def fresh_model(golden):
    """A tiny UNet with its own random weights (no checkpoint loaded)."""
    config = yaml.safe_load((golden / "unet_tiny.yaml").read_text())
    config["model_path"] = None
    torch.manual_seed(0)
    return create_model(**config)


def snapshot(model) -> dict:
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_unchanged(model, before: dict) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], before[key]) for key in before)


def refused(model, path: Path, *fragments: str) -> str:
    """Load must raise a one-line CheckpointError naming ``path`` and each fragment, and leave
    the model's weights as they were."""
    before = snapshot(model)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(model, path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert_unchanged(model, before)
    return message


# --- accepted files --------------------------------------------------------------------------
def test_plain_state_dict_loads(fresh_model, tiny_weights, tiny_state):
    assert load_checkpoint(fresh_model, tiny_weights) is fresh_model
    assert_unchanged(fresh_model, tiny_state)


@pytest.mark.parametrize("nesting_key", ["state_dict", "model"])
def test_nested_state_dict_loads(fresh_model, tiny_state, tmp_path, nesting_key):
    path = tmp_path / "nested.pt"
    torch.save({nesting_key: tiny_state, "epoch": 7}, path)
    load_checkpoint(fresh_model, path)
    assert_unchanged(fresh_model, tiny_state)


# --- unreadable files ------------------------------------------------------------------------
def test_missing_file(fresh_model, tmp_path):
    message = refused(fresh_model, tmp_path / "256x256_diffusion_uncond.pt", "not found")
    assert "256x256_diffusion_uncond.pt" in message


def test_zero_byte_file(fresh_model, tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    refused(fresh_model, path, "empty (0 bytes)")


def test_truncated_file(fresh_model, tiny_weights, tmp_path):
    path = tmp_path / "truncated.pt"
    data = tiny_weights.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    refused(fresh_model, path, "truncated or corrupt")


def test_directory_instead_of_file(fresh_model, tmp_path):
    refused(fresh_model, tmp_path, "directory")


# --- files that are not state dicts ----------------------------------------------------------
def test_pickled_whole_model_is_refused(fresh_model, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    refused(fresh_model, path, "weights_only", "torch.nn.modules.linear.Linear", "state_dict()")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ({"epoch": 3, "lr": 0.1}, "not tensors"),
        ([torch.zeros(2)], "list, not a state dict"),
        (torch.zeros(3), "Tensor, not a state dict"),
        ({}, "empty state dict"),
    ],
    ids=["dict-of-numbers", "list", "bare-tensor", "empty-dict"],
)
def test_non_state_dict_content_is_refused(fresh_model, tmp_path, content, fragment):
    path = tmp_path / "not_a_state_dict.pt"
    torch.save(content, path)
    refused(fresh_model, path, fragment)


class _OpensAFile:
    """Unpickles into ``open(target, "w")``: a pickle that runs code when loaded."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_weights_only_refuses_code_executing_pickle(fresh_model, tmp_path):
    path = tmp_path / "payload.pt"
    torch.save({"time_embed.0.weight": _OpensAFile(tmp_path / "ran.txt")}, path)
    # Proof that the payload is live: an unrestricted load runs it.
    torch.load(path, weights_only=False)["time_embed.0.weight"].close()
    assert (tmp_path / "ran.txt").exists()
    (tmp_path / "ran.txt").unlink()

    refused(fresh_model, path, "weights_only", "open)")
    assert not (tmp_path / "ran.txt").exists()


# --- state dicts that do not fit -------------------------------------------------------------
def save_variant(tmp_path: Path, state: dict, name: str) -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_removed_key(fresh_model, tiny_state, tmp_path):
    state = dict(tiny_state)
    del state["middle_block.1.qkv.weight"]
    path = save_variant(tmp_path, state, "missing_key.pt")
    refused(fresh_model, path, "1 mismatch:", "missing middle_block.1.qkv.weight [192, 64, 1]")


def test_changed_shape(fresh_model, tiny_state, tmp_path):
    state = dict(tiny_state)
    state["out.2.weight"] = torch.zeros(3, 32, 3, 3)  # a learn_sigma=False head
    path = save_variant(tmp_path, state, "shape.pt")
    refused(fresh_model, path, "shape of out.2.weight: file [3, 32, 3, 3], model [6, 32, 3, 3]")


def test_class_conditional_extra_key(fresh_model, tiny_state, tmp_path):
    state = dict(tiny_state, **{"label_emb.weight": torch.zeros(1000, 128)})
    path = save_variant(tmp_path, state, "class_cond.pt")
    refused(fresh_model, path, "class-conditional", "unexpected label_emb.weight [1000, 128]")


def test_many_mismatches_show_five_and_a_count(fresh_model, tiny_state, tmp_path):
    state = {"module." + key: value for key, value in tiny_state.items()}
    path = save_variant(tmp_path, state, "data_parallel.pt")
    message = refused(fresh_model, path, f"{2 * len(tiny_state)} mismatches", "more", "module.")
    assert message.count("missing ") == 5


def test_other_model_size_is_refused(golden, tmp_path):
    """A checkpoint of another config (here: tiny weights for a wider model) never loads."""
    config = yaml.safe_load((golden / "unet_tiny.yaml").read_text())
    config["model_path"] = str(golden / "unet_tiny.pt")
    with pytest.raises(CheckpointError, match="another model size"):
        create_model(**{**config, "num_channels": 64})


def test_create_model_never_falls_back_to_random_weights(golden, tmp_path):
    config = yaml.safe_load((golden / "unet_tiny.yaml").read_text())
    config["model_path"] = str(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="not found"):
        create_model(**config)


# --- audit and manifest ----------------------------------------------------------------------
def test_audit_accepts_shapes_and_lists_every_kind(fresh_model, tiny_state):
    expected = {key: list(value.shape) for key, value in tiny_state.items()}
    assert audit_state_dict(expected, tiny_state) == []
    assert audit_state_dict(fresh_model, tiny_state) == []
    state = dict(tiny_state)
    del state["out.2.bias"]
    state["out.0.weight"] = torch.zeros(5)
    state["extra"] = torch.zeros(1)
    assert audit_state_dict(fresh_model, state) == [
        "shape of out.0.weight: file [5], model [32]",
        "missing out.2.bias [6]",
        "unexpected extra [1]",
    ]


def test_manifest_of_tiny_model(fresh_model, tiny_state):
    manifest = manifest_of(fresh_model)
    assert manifest["num_parameters"] == sum(value.numel() for value in tiny_state.values())
    assert manifest["state_dict"] == {key: list(value.shape) for key, value in tiny_state.items()}


def test_refused_file_leaves_a_copy_untouched(tiny_weights, tmp_path):
    """Loading never writes to the checkpoint file."""
    copy = tmp_path / "copy.pt"
    shutil.copy(tiny_weights, copy)
    before = copy.read_bytes()
    model = create_model(**{**yaml.safe_load((tiny_weights.parent / "unet_tiny.yaml").read_text()),
                            "model_path": str(copy)})
    assert copy.read_bytes() == before
    assert not model.training
