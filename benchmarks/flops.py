"""FLOPs of one UNet call, counted with ``torch.utils.flop_counter.FlopCounterMode``.

    python -m benchmarks.flops [--model_config full|tiny|PATH.yaml] [--size 256x256 480x640 ...]

The network is built on the ``meta`` device (no memory, no arithmetic), so counting the full
553M-parameter architecture at 1024x1024 takes about a second on any CPU. If a future operator
has no meta kernel, the count falls back to real tensors on the CPU (slow for big sizes, and
said so). The counter counts matrix work only -- convolutions, linear layers and the attention
batched matmuls, 2 FLOPs per multiply-add -- not norms, activations or the softmax (a few
percent of the memory traffic, well under 1% of the arithmetic).

Sizes are HEIGHTxWIDTH (480x640 is an MSRS image: 640 wide, 480 tall). Batch 1, one call; a
DDFM image at the released 100 steps is 100 calls.

The shared helpers here (model configs, size parsing) are also what ``bench_sample.py`` uses.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from ddfm.config import ModelConfig, load_model_config
from util.tables import render_table

# The golden tiny UNet's keys (tests/fixtures/golden/unet_tiny.yaml), embedded so the benchmarks run
# without the test fixtures; the weights are random anyway.
TINY_CONFIG = dict(image_size=64, num_channels=32, num_res_blocks=1, channel_mult="1,2,2",
                   learn_sigma=True, class_cond=False, use_checkpoint=False,
                   attention_resolutions="16,8", num_heads=4, num_head_channels=16,
                   num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
                   resblock_updown=True, use_fp16=False, use_new_attention_order=False)
FULL_CONFIG_PATH = REPO / "configs" / "model_config_imagenet.yaml"

# The figures stated before this counter existed for the full 256x256 architecture (TFLOP per UNet call, batch 1).
ISSUE_TFLOP = {(256, 256): 2.24, (480, 640): 10.7}


def model_config(spec: str) -> tuple[str, ModelConfig]:
    """``tiny``, ``full`` (= configs/model_config_imagenet.yaml) or a YAML path -> (label, config
    with model_path cleared: the benchmarks use random weights, never a checkpoint)."""
    if spec == "tiny":
        return "tiny (golden unet_tiny keys)", ModelConfig(**TINY_CONFIG)
    path = FULL_CONFIG_PATH if spec in ("full", "imagenet") else Path(spec)
    if not path.exists() and not path.is_absolute() and (REPO / path).exists():
        path = REPO / path
    cfg = replace(load_model_config(path), model_path=None)
    label = "full 256x256 ADM" if path.resolve() == FULL_CONFIG_PATH.resolve() else str(spec)
    return label, cfg


def parse_size(text: str) -> tuple[int, int]:
    """'480x640' -> (480, 640), HEIGHTxWIDTH; a single number means a square."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"size {text!r}: use HEIGHTxWIDTH, e.g. 480x640")


def size_label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@dataclass
class FlopCount:
    total: float                 # FLOPs of one call
    by_op: dict                  # aten op name -> FLOPs
    method: str                  # "meta" or "cpu tensors"

    @property
    def conv(self) -> float:
        return sum(v for k, v in self.by_op.items() if "conv" in k)

    @property
    def attention(self) -> float:
        return sum(v for k, v in self.by_op.items() if "bmm" in k or "attention" in k)

    @property
    def linear(self) -> float:
        return sum(v for k, v in self.by_op.items() if "mm" in k and "bmm" not in k)


def _count(model, height: int, width: int, batch: int, device) -> FlopCount:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, model.in_channels, height, width, device=device)
    t = torch.full((batch,), 999, dtype=torch.long, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x, t)
    by_op = {str(op).replace("aten.", ""): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return FlopCount(float(counter.get_total_flops()), by_op, "meta" if str(device) == "meta" else "cpu tensors")


_MODELS: dict = {}


def unet_flops(cfg: ModelConfig, height: int, width: int, batch: int = 1) -> FlopCount:
    """FLOPs of one UNet call at HEIGHTxWIDTH. Attention is counted with the legacy einsum
    kernel; SDPA does the same two matmuls (counted the same where the counter sees them), the
    chunked kernel the same matmuls in pieces."""
    from guided_diffusion.unet import create_model

    key = repr(cfg)
    if key not in _MODELS:
        try:
            with torch.device("meta"):
                _MODELS[key] = (create_model(**cfg.unet_kwargs(), model_path=None, attention="legacy"), "meta")
        except Exception:  # noqa: BLE001 - fall back to a real model below
            _MODELS[key] = (None, "meta failed")
    model, where = _MODELS[key]
    if model is not None:
        try:
            return _count(model, height, width, batch, "meta")
        except Exception:  # noqa: BLE001
            pass
    cpu_key = key + "/cpu"
    if cpu_key not in _MODELS:
        _MODELS[cpu_key] = (create_model(**cfg.unet_kwargs(), model_path=None, attention="chunked"), "cpu")
    return _count(_MODELS[cpu_key][0], height, width, batch, "cpu")


def parameter_count(cfg: ModelConfig) -> int:
    from guided_diffusion.unet import create_model
    with torch.device("meta"):
        model = create_model(**cfg.unet_kwargs(), model_path=None)
    return sum(p.numel() for p in model.parameters())


def flops_table(cfg: ModelConfig, sizes, full: bool) -> list[list[str]]:
    rows = []
    for size in sizes:
        c = unet_flops(cfg, *size)
        stated = ISSUE_TFLOP.get(tuple(size)) if full else None
        check = "" if stated is None else f"{stated:g} ({(c.total / 1e12 - stated) / stated * 100:+.2f}%)"
        rows.append([size_label(size), f"{c.total / 1e12:.4f}", f"{c.conv / 1e12:.4f}",
                     f"{c.attention / 1e12:.4f}", f"{c.linear / 1e9:.3f}",
                     f"{c.total * 100 / 1e15:.3f}", check, c.method])
    return rows


FLOPS_HEADER = ["size (HxW)", "TFLOP/call", "conv", "attn bmm", "linear GFLOP",
                "PFLOP/image @100 steps", "stated before", "counted on"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="FLOPs per UNet call (torch.utils.flop_counter).")
    p.add_argument("--model_config", default="full",
                   help="full (configs/model_config_imagenet.yaml), tiny, or a YAML path")
    p.add_argument("--size", nargs="+", type=parse_size, default=[(256, 256), (480, 640)],
                   help="HEIGHTxWIDTH sizes (default 256x256 480x640)")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    label, cfg = model_config(args.model_config)
    print(f"model: {label}, {parameter_count(cfg) / 1e6:.1f}M parameters; FLOPs of one UNet call, batch 1 "
          f"(2 per multiply-add; conv + linear + attention matmuls)")
    print(render_table(FLOPS_HEADER, flops_table(cfg, args.size, label.startswith("full")), args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
