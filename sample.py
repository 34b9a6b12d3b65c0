#!/usr/bin/env python3
"""DDFM fusion from the command line: configs -> model + sampler -> for each pair: load, fuse, save.

    python sample.py                                   # released defaults: input/ -> output/
    python sample.py --input DIR --save_dir OUT --record
    python sample.py --config my_run.yaml --lamb 0.3   # options from a file, flags win
    torchrun --nproc_per_node 4 sample.py --input DIR  # pairs split across processes

Outputs (each written atomically): ``SAVE_DIR/recon/<stem>.png`` (8-bit grey, as released),
with ``--color`` ``color/<stem>.png``, with ``--record`` ``progress/<stem>/x_<step:04d>.png``,
with ``--sheet`` ``sheet/<stem>.png``, with ``--trace`` ``trace/<stem>.npz``.
Exit status: 0 when every pair was fused (or skipped), 1 when any pair failed, 2 on a setup
error (bad option, config, input folder or checkpoint), 130 when interrupted.

This file only parses the command line; the runner is :mod:`ddfm.runner`, the options and
their rules are :mod:`ddfm.config`.
"""
from __future__ import annotations

import argparse
import sys

from ddfm.config import OPTION_CLASSES, Door, add_run_options
from util.options import given_values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DDFM: fuse infrared-visible or medical image pairs.")
    add_run_options(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from ddfm import SetupError, fuse_folder, resolve_options, set_tf32
    from ddfm.speed import prefer_expandable_segments
    try:
        config = resolve_options(given_values(OPTION_CLASSES, args), Door.CLI)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prefer_expandable_segments()
    set_tf32(config.fuser.precision == "tf32")  # process-wide: fp32 is faithful only with TF32 off
    return fuse_folder(config)


if __name__ == "__main__":
    sys.exit(main())
