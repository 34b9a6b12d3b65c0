#!/usr/bin/env python3
"""DDFM in the browser: fuse a pair, watch the x0 estimate form, read the metrics.

    pip install -r requirements-demo.txt
    python demo.py                                  # http://127.0.0.1:7860
    python demo.py --host 0.0.0.0 --port 8080 --precision bf16

The page runs the code ``sample.py`` runs (see ``demo_app.py``); its PNGs are the files
``sample.py`` writes for the same pair and options. Without the checkpoint it starts on the
EM-only prior and says how to get it. Exit status 2 on a setup error (bad option or config,
missing gradio, port in use).
"""
from __future__ import annotations

import argparse
import sys

from ddfm import PRECISIONS, PRIORS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DDFM fusion demo (a local Gradio web app).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--model_config", default="configs/model_config_imagenet.yaml", help="UNet config, as sample.py")
    p.add_argument("--diffusion_config", default="configs/diffusion_config.yaml", help="diffusion config, as sample.py")
    p.add_argument("--prior", choices=PRIORS, default="diffusion",
                   help="prior selected when the page opens (none when the checkpoint is missing)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="UNet precision, as sample.py")
    p.add_argument("--gpu", type=int, default=0, help="CUDA device index (CPU when no CUDA)")
    p.add_argument("--attention", choices=("auto", "legacy", "sdpa", "chunked"), default="auto",
                   help="attention kernel, as sample.py")
    p.add_argument("--noise_device", choices=("run", "cpu"), default="run", help="as sample.py")
    p.add_argument("--channels_last", action="store_true", help="as sample.py")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet, as sample.py")
    p.add_argument("--max_side", type=int, default=1024,
                   help="refuse sources longer than this on a side (default 1024)")
    p.add_argument("--max_file_size", default="50mb", help="largest upload gradio accepts (default 50mb)")
    p.add_argument("--download_checkpoint", action="store_true",
                   help="download the checkpoint first when it is missing (about 2.2 GB)")
    return p


def download_checkpoint(model_config: str) -> None:
    from sample import SetupError
    from util.config import ConfigError, load_model_config
    from util.download import DownloadError, ensure_checkpoint
    try:
        path = load_model_config(model_config).model_path
        if path is not None:
            ensure_checkpoint(path, assume_yes=True)
    except (ConfigError, DownloadError) as exc:
        raise SetupError(str(exc)) from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import demo_app
    except ImportError as exc:
        print(f"error: the demo needs gradio ({exc}); install it with "
              "`pip install -r requirements-demo.txt`", file=sys.stderr)
        return 2
    from sample import SetupError
    try:
        if args.download_checkpoint:
            download_checkpoint(args.model_config)
        settings = demo_app.make_settings(args)
        app = demo_app.build_app(settings)
        demo_app.launch(app, settings, args.host, args.port, args.max_file_size)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # gradio: the port is taken, or the address cannot be bound
        print(f"error: cannot serve on {args.host}:{args.port} ({exc}); pass another --port or --host",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
