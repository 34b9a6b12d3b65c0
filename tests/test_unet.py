"""The UNet: layout against the released checkpoint's manifest, numbers against the golden
forward pass, and agreement of the attention kernels. Only the tiny config is ever computed;
the full 256x256 model is built on the ``meta`` device (shapes only, no memory)."""
import math
from pathlib import Path

import pytest
import torch
import yaml

from guided_diffusion.nn import timestep_embedding
from guided_diffusion.unet import ATTENTION_MODES, QKVAttention, UNetModel, create_model
from guided_diffusion.checkpoint import audit_state_dict, manifest_of
from tolerance import EPS32, ulps

REPO = Path(__file__).resolve().parents[1]
IMAGENET_PARAMETERS = 552_814_086


def imagenet_config() -> dict:
    config = yaml.safe_load((REPO / "configs" / "model_config_imagenet.yaml").read_text())
    config.pop("model_path")
    return config


def tiny_config(golden: Path, with_weights: bool = True) -> dict:
    yaml_path = golden / "unet_tiny.yaml"
    config = yaml.safe_load(yaml_path.read_text())
    # model_path is relative to the YAML that names it.
    config["model_path"] = str(yaml_path.parent / config["model_path"]) if with_weights else None
    return config


# The tiny UNet against the release's forward pass, in units of float32 resolution of the
# output's largest value: ~20 layers, each rounding its convolution sums, group norms and
# softmax by a few units of its scale. Measured 12-15 units (AVX2, scalar and 1-thread kernels,
# every attention mode); a different head layout or label embedding moves it by > 8000.
GOLDEN_ULPS = 64


@pytest.fixture(scope="module")
def tiny_model(golden):
    return create_model(**tiny_config(golden))


@pytest.fixture(scope="module")
def imagenet_meta_model():
    with torch.device("meta"):
        return create_model(**imagenet_config())


# --- layout ----------------------------------------------------------------------------------
def test_imagenet_config_matches_released_manifest(imagenet_meta_model, manifest):
    built = manifest_of(imagenet_meta_model)
    assert built["num_parameters"] == manifest["num_parameters"] == IMAGENET_PARAMETERS
    # Same keys, same shapes, same order.
    assert list(built["state_dict"].items()) == list(manifest["state_dict"].items())
    assert audit_state_dict(manifest, imagenet_meta_model.state_dict()) == []


def test_imagenet_model_is_eval_and_float32(imagenet_meta_model):
    assert not imagenet_meta_model.training
    assert all(p.dtype == torch.float32 for p in imagenet_meta_model.parameters())


def test_class_conditional_model_differs_only_by_label_embedding(manifest):
    with torch.device("meta"):
        model = create_model(**{**imagenet_config(), "class_cond": True})
    assert audit_state_dict(manifest, model.state_dict()) == ["unexpected label_emb.weight [1000, 1024]"]


def test_attention_mode_never_changes_state_dict_keys(manifest):
    for mode in ATTENTION_MODES:
        with torch.device("meta"):
            model = create_model(**imagenet_config(), attention=mode)
        assert list(model.state_dict()) == list(manifest["state_dict"])


@pytest.mark.parametrize(
    "image_size, expected",
    [(512, (0.5, 1, 1, 2, 2, 4, 4)), (256, (1, 1, 2, 2, 4, 4)), (128, (1, 1, 2, 3, 4)), (64, (1, 2, 3, 4))],
)
def test_empty_channel_mult_follows_image_size(image_size, expected):
    with torch.device("meta"):
        model = create_model(image_size, 64, 1, channel_mult="", attention_resolutions="16")
    assert model.channel_mult == expected


def test_config_strings_are_parsed(golden):
    with torch.device("meta"):
        model = create_model(**tiny_config(golden, with_weights=False))
    assert model.channel_mult == (1, 2, 2)
    assert model.attention_resolutions == (4, 8)  # 64 // 16, 64 // 8
    assert model.out_channels == 6  # learn_sigma


def test_unknown_image_size_and_attention_mode_are_refused():
    with pytest.raises(ValueError, match="channel_mult"):
        create_model(96, 32, 1)
    with pytest.raises(ValueError, match="attention"):
        create_model(64, 32, 1, channel_mult="1,2", attention="flash")


# --- numbers ---------------------------------------------------------------------------------
@pytest.mark.numeric
@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_tiny_model_reproduces_golden_forward(tiny_model, tiny_forward, mode):
    assert not tiny_model.training
    tiny_model.set_attention(mode)
    x = torch.from_numpy(tiny_forward["x"])
    timesteps = torch.from_numpy(tiny_forward["t"])
    assert timesteps.dtype == torch.int64
    with torch.no_grad():
        out = tiny_model(x, timesteps)
    reference = torch.from_numpy(tiny_forward["out"])
    assert out.shape == reference.shape == (2, 6, 64, 96)
    assert ulps(out, reference, scale="max") <= GOLDEN_ULPS


@pytest.mark.numeric
@pytest.mark.parametrize("new_order", [False, True])
def test_attention_kernels_agree_with_legacy(golden, new_order):
    """sdpa and chunked equal legacy; 48x80 gives 240 tokens at the attention level, so the
    chunked loop runs with a ragged last chunk."""
    model = create_model(**{**tiny_config(golden, with_weights=False), "use_new_attention_order": new_order})
    # Non-zero weights everywhere (a fresh model has zeroed output convs and attention
    # projections, which would hide the attention from the output).
    model.load_state_dict(torch.load(golden / "unet_tiny.pt", weights_only=True))
    torch.manual_seed(0)
    x = torch.randn(1, 3, 48, 80)
    timesteps = torch.tensor([17])
    outputs = {}
    with torch.no_grad():
        for mode in ("legacy", "chunked", "sdpa", "auto"):
            outputs[mode] = model.set_attention(mode)(x, timesteps)
    for mode in ("chunked", "sdpa", "auto"):
        # the same attention summed in other orders: a few units of the output's scale
        assert ulps(outputs[mode], outputs["legacy"], scale="max") <= GOLDEN_ULPS, mode


@pytest.mark.numeric
def test_new_attention_order_changes_the_function(golden):
    """Same weights, other head layout, other output: the flag is really honoured."""
    state = torch.load(golden / "unet_tiny.pt", weights_only=True)
    torch.manual_seed(3)
    x, timesteps = torch.randn(1, 3, 32, 32), torch.tensor([500])
    outputs = []
    for new_order in (False, True):
        model = create_model(**{**tiny_config(golden, with_weights=False), "use_new_attention_order": new_order})
        model.load_state_dict(state)
        with torch.no_grad():
            outputs.append(model(x, timesteps))
    assert ulps(outputs[0], outputs[1], scale="max") > 100 * GOLDEN_ULPS


def _reference_attention(qkv: torch.Tensor, heads: int, new_order: bool) -> torch.Tensor:
    """Per-head attention in float64 with the head layout spelled out channel by channel."""
    batch, width, length = qkv.shape
    ch = width // (3 * heads)
    qkv = qkv.double()
    outputs = []
    for head in range(heads):
        if new_order:  # [q of all heads; k of all heads; v of all heads]
            q, k, v = (qkv[:, part * heads * ch + head * ch:][:, :ch] for part in range(3))
        else:  # [q, k, v of head 0; q, k, v of head 1; ...]
            q, k, v = (qkv[:, head * 3 * ch + part * ch:][:, :ch] for part in range(3))
        weight = torch.softmax(torch.einsum("nct,ncs->nts", q, k) / math.sqrt(ch), dim=-1)
        outputs.append(torch.einsum("nts,ncs->nct", weight, v))
    return torch.cat(outputs, dim=1)


@pytest.mark.numeric
@pytest.mark.parametrize("new_order", [False, True])
@pytest.mark.parametrize("mode", ["legacy", "chunked", "sdpa"])
def test_qkv_attention_head_layout(mode, new_order):
    torch.manual_seed(1)
    heads, ch, length = 3, 8, 300
    qkv = torch.randn(2, 3 * heads * ch, length)
    out = QKVAttention(heads, new_order=new_order, mode=mode)(qkv)
    reference = _reference_attention(qkv, heads, new_order)
    assert out.shape == (2, heads * ch, length)
    # float32 softmax and two 300-term products against float64: a few units of the output
    assert ulps(out, reference, scale="max") <= 64


# --- shapes and inputs -----------------------------------------------------------------------
def test_imagenet_model_takes_non_square_inputs(imagenet_meta_model):
    """288x512 through the 256x256 config, traced on meta tensors: also proves the forward
    needs no tensor values (no .item(), no branching on data), which meta tensors lack."""
    x = torch.empty(1, 3, 288, 512, device="meta")
    timesteps = torch.empty(1, dtype=torch.int64, device="meta")
    with torch.no_grad():
        out = imagenet_meta_model(x, timesteps)
    assert out.shape == (1, 6, 288, 512)


def test_tiny_model_non_square_and_size_check(tiny_model):
    tiny_model.set_attention("auto")
    with torch.no_grad():
        out = tiny_model(torch.randn(1, 3, 36, 52), torch.tensor([3]))
    assert out.shape == (1, 6, 36, 52) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="multiple of 4"):
        tiny_model(torch.randn(1, 3, 34, 52), torch.tensor([3]))


def test_class_conditional_forward_needs_labels(golden):
    model = create_model(**{**tiny_config(golden, with_weights=False), "class_cond": True})
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert model(x, torch.tensor([1, 2]), y=torch.tensor([3, 4])).shape == (2, 6, 16, 16)
    with pytest.raises(ValueError, match="class-conditional"):
        model(x, torch.tensor([1, 2]))


@pytest.mark.numeric
def test_timestep_embedding_matches_formula():
    timesteps = torch.tensor([0, 17, 999])
    embedding = timestep_embedding(timesteps, 32)
    frequencies = torch.exp(-math.log(10000) * torch.arange(16, dtype=torch.float64) / 16)
    angles = timesteps[:, None].double() * frequencies
    expected = torch.cat([angles.cos(), angles.sin()], dim=1)
    assert embedding.dtype == torch.float32 and embedding.shape == (3, 32)
    # float32 angles up to 999 rad are rounded by up to 999 * 2**-24 = 6e-5, which cos and sin
    # pass on: 16 such units
    assert (embedding.double() - expected).abs().max().item() <= 16 * 999 * EPS32 / 2
    assert torch.equal(embedding, timestep_embedding(timesteps.float(), 32))
    assert timestep_embedding(timesteps, 33).shape == (3, 33)


@pytest.mark.numeric
def test_use_fp16_converts_the_torso_like_the_release(golden, tiny_model):
    model = create_model(**{**tiny_config(golden), "use_fp16": True})
    assert model.dtype == torch.float16
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert model.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # norm
    assert model.time_embed[0].weight.dtype == torch.float32
    assert model.out[2].weight.dtype == torch.float32
    torch.manual_seed(2)
    x, timesteps = torch.randn(1, 3, 16, 24), torch.tensor([999])
    with torch.no_grad():
        out = model(x, timesteps)
        reference = tiny_model.set_attention("legacy")(x, timesteps)
    assert out.dtype == torch.float32
    # the torso in float16 (resolution 2**-10): ~20 units of that over the network's layers
    assert ulps(out, reference, scale="max", eps=2 ** -10) <= 20


def test_loaded_model_is_materialised(tiny_model):
    assert isinstance(tiny_model, UNetModel)
    assert not any(t.is_meta for t in tiny_model.state_dict().values())
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    assert all(isinstance(p, torch.nn.Parameter) for p in tiny_model.parameters())
    assert len(list(tiny_model.parameters())) == len(tiny_model.state_dict())
