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
import signal
import sys

from ddfm.config import OPTION_CLASSES
from util.options import add_options, given_values

# sample.py's options that the page's model and device take from the command line
SHARED = ("model_config", "diffusion_config", "prior", "precision", "gpu", "attention", "noise_device",
          "channels_last", "compile", "download_checkpoint")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="DDFM fusion demo (a local Gradio web app). The prior "
                                            "given is the one selected when the page opens (none when "
                                            "the checkpoint is missing).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    for cls in OPTION_CLASSES:
        add_options(p, cls, {}, only=SHARED)
    p.add_argument("--max_side", type=int, default=1024,
                   help="refuse sources longer than this on a side (default 1024)")
    p.add_argument("--max_file_size", default="50mb", help="largest upload gradio accepts (default 50mb)")
    return p


def download_checkpoint(model_config) -> None:
    from ddfm import SetupError
    from util.download import DownloadError, ensure_checkpoint
    try:
        if model_config.model_path is not None:
            ensure_checkpoint(model_config.model_path, assume_yes=True)
    except DownloadError as exc:
        raise SetupError(str(exc)) from None


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import demo_app
    except ImportError as exc:
        print(f"error: the demo needs gradio ({exc}); install it with "
              "`pip install -r requirements-demo.txt`", file=sys.stderr)
        return 2
    from ddfm import SetupError
    from ddfm.speed import prefer_expandable_segments
    prefer_expandable_segments()
    signal.signal(signal.SIGTERM, _stop)  # as Ctrl-C: the page's temporary folder is removed
    try:
        options = given_values(OPTION_CLASSES, args)
        if options.get("download_checkpoint"):
            download_checkpoint(demo_app.resolve_options(options | {"prior": "diffusion"}).model)
        settings = demo_app.make_settings(options, args.max_side)
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
