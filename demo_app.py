"""The Gradio app behind ``demo.py``: a page over the same code ``sample.py`` runs.

Every request's options are resolved and checked by ``ddfm.resolve_options`` (the rules of
every door), fused by a cached :class:`ddfm.Fuser` (the model loaded once; fusers of other
step counts share it through ``Fuser.respaced``) and written by
``ddfm.outputs.save_results``, so the PNG offered for download is the file ``sample.py`` writes for
the same pair and options. Sampling runs in a worker thread; its observing callback hands the
x0 estimate of every few steps to the page while it runs. Metrics are those of
``metrics/evaluator.py`` computed as ``evaluate.py`` does (grey re-read from the PNG, sources
cropped to its size).
"""
from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
import gradio as gr  # noqa: E402

from ddfm import PRIOR_LABELS, PRIORS, SetupError, check_pair, load_source, resolve_options  # noqa: E402
from ddfm.fusion import FusionError, to_gray_uint8  # noqa: E402
from ddfm.outputs import save_results  # noqa: E402
from ddfm.runner import is_out_of_memory, make_fuser  # noqa: E402
from util.images import IMAGE_EXTENSIONS, ImageError, Pair, find_pairs, peek_size, read_gray  # noqa: E402
from metrics.evaluator import evaluate_pair  # noqa: E402
from util.presets import presets_for  # noqa: E402

PRIOR_NAMES = {"diffusion": "diffusion", "none": "EM-only", "gaussian": "Gaussian"}  # in status lines

REPO = Path(__file__).resolve().parent
METRICS = ("EN", "SD", "MI", "VIF", "Qabf", "SSIM")  # DDFM's Table 1
GALLERY_FRAMES = 10   # about this many x0 estimates per run
KEEP_REQUESTS = 8     # output folders kept on disk (older ones are removed)
FUSION_LOCK = threading.Lock()  # one fusion at a time, even after a cancelled request
log = logging.getLogger("ddfm.demo")


class DemoError(Exception):
    """A request that cannot be fused; the message (one line) is shown on the page."""


@dataclass
class Settings:
    """What every request shares: the options naming the model and the device."""
    base_options: dict
    default_prior: str
    checkpoint_missing: str  # "" when the checkpoint is there, else the note shown on the page
    default_steps: int
    max_steps: int
    max_side: int
    workdir: Path


# ------------------------------------------------------------------------------------ setup

BASE_OPTIONS = ("model_config", "diffusion_config", "precision", "gpu", "attention", "noise_device",
                "channels_last", "compile")



def missing_checkpoint_note(model_cfg) -> str:
    path = model_cfg.model_path
    if path is not None and Path(path).exists():
        return ""
    from util.download import CHECKPOINT_URL
    where = path or "models/256x256_diffusion_uncond.pt"
    return (f"**No checkpoint at `{where}`: running the EM-only prior (`none`).** For DDFM's diffusion "
            f"prior download it (about 2.2 GB) and restart: `python demo.py --download_checkpoint` "
            f"(or by hand: `curl -L -C - -o {where} {CHECKPOINT_URL}`).")


def make_settings(options: dict, max_side: int = 1024) -> Settings:
    """``options``: demo.py's command line (sample.py's names); the configs are checked once, at
    start (ddfm.SetupError on a bad one)."""
    base = {name: options[name] for name in BASE_OPTIONS if name in options} | {"quiet": True}
    probe = resolve_options(base | {"prior": "diffusion"})
    model_cfg, diff_cfg = probe.model, probe.diffusion
    note = missing_checkpoint_note(model_cfg)
    chosen = options.get("prior", "diffusion")
    prior = "none" if note and chosen == "diffusion" else chosen
    respacing = diff_cfg.timestep_respacing
    steps = int(respacing) if str(respacing).isdigit() else diff_cfg.diffusion_steps
    workdir = Path(tempfile.mkdtemp(prefix="ddfm-demo-"))
    return Settings(base, prior, note, steps, min(diff_cfg.diffusion_steps, max(250, steps)),
                    max_side, workdir)


def modality_presets() -> dict:
    """Label -> (modalities, colour): infrared-visible and the medical presets of configs/presets."""
    ivf = presets_for("ivf")
    out = {"infrared-visible": (ivf[0].modalities, any(p.color for p in ivf))}
    for p in presets_for("mif"):
        out[p.name] = (p.modalities, p.color)
    return out


def source_labels(preset: str) -> tuple:
    a, b = modality_presets()[preset][0]
    return f"{a} (infrared role)", f"{b} (visible role)"


# --------------------------------------------------------------------------------- requests

def read_upload(payload, role: str, max_side: int):
    """An uploaded file (gradio's FileData as a dict) as a ddfm.Source named for the page."""
    if payload and not isinstance(payload, dict):  # a malformed API call: say what is expected
        raise DemoError(f"the {role} image must be an uploaded file (gradio FileData: a dict with a "
                        f"'path'), got {type(payload).__name__}")
    if not payload or not payload.get("path"):
        raise DemoError(f"no {role} image: upload one, or pick an example below")
    path = Path(payload["path"])
    name = Path(payload.get("orig_name") or path.name)
    label = f"{role} image {name.name}"
    if name.suffix.lower() not in IMAGE_EXTENSIONS:  # what sample.py reads from a folder, no more
        raise DemoError(f"{label}: {name.suffix or 'no extension'} is not a source format sample.py reads; "
                        f"give one of {', '.join(IMAGE_EXTENSIONS)}")
    shape = peek_size(path)
    if shape is not None and max(shape) > max_side:
        raise DemoError(f"{label}: {shape[1]}x{shape[0]} is larger than this demo's {max_side} px a side; "
                        f"resize it, or start demo.py with --max_side {max(shape)}")
    try:
        source = load_source(path)
    except ImageError as exc:
        raise DemoError(str(exc).replace(str(path), label)) from None
    return replace(source, name=label)


def number(name: str, value, whole: bool = False, low=None, high=None) -> float:
    """A form value as a finite number (within low..high), or a DemoError saying what to enter."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    ok = x == x and abs(x) != float("inf") and (not whole or x == int(x))
    if not ok or (low is not None and x < low) or (high is not None and x > high):
        kind = "a whole number" if whole else "a number"
        span = f" from {low} to {high}" if low is not None and high is not None else ""
        raise DemoError(f"{name} must be {kind}{span}, got {value!r}")
    return x


def request_config(settings: Settings, prior, steps, seed, lamb, rho, color):
    """The options of one request, checked by the rules every door uses (ddfm.config)."""
    steps = int(number("steps", steps, True, 1, settings.max_steps))
    seed = int(number("seed", seed, True))
    lamb, rho = number("lamb", lamb), number("rho", rho)
    if prior not in PRIORS:
        raise DemoError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    if prior == "diffusion" and settings.checkpoint_missing:
        raise DemoError(settings.checkpoint_missing.replace("*", "").replace("`", "'"))
    try:  # named as Python and the page name them: "lamb", not "--lamb"
        return resolve_options(settings.base_options | dict(prior=prior, steps=steps, seed=seed, lamb=lamb,
                                                            rho=rho, color=bool(color)))
    except SetupError as exc:
        raise DemoError(str(exc)) from None


class FuserCache:
    """One Fuser per (prior, steps); those of one prior share its model (``Fuser.respaced``)."""

    def __init__(self):
        self._fusers = {}

    def get(self, config):
        prior, respacing = config.fuser.prior, config.diffusion.timestep_respacing
        key = (prior, respacing)
        if key not in self._fusers:
            base = next((f for (p, _), f in self._fusers.items() if p == prior), None)
            try:
                self._fusers[key] = base.respaced(respacing) if base is not None else make_fuser(config)
            except SetupError as exc:
                raise DemoError(str(exc)) from None
        return self._fusers[key]


def request_folder(settings: Settings) -> Path:
    """A fresh output folder for one request; the oldest beyond KEEP_REQUESTS are removed."""
    old = sorted(p for p in settings.workdir.iterdir() if p.is_dir())
    for folder in old[:max(0, len(old) - KEEP_REQUESTS + 1)]:
        shutil.rmtree(folder, ignore_errors=True)
    number = int(old[-1].name) + 1 if old else 1
    folder = settings.workdir / f"{number:06d}"
    folder.mkdir()
    return folder


def safe_stem(payload) -> str:
    name = Path((payload or {}).get("orig_name") or "fused").stem
    return re.sub(r"[^\w.-]", "_", name)[:100].strip(".") or "fused"


def metrics_rows(recon_png: Path, ir, vis) -> list:
    """evaluate.py's numbers for one pair: the PNG re-read as grey, sources cropped to its size."""
    fused = read_gray(recon_png)
    h, w = fused.shape
    values = evaluate_pair(fused, ir.gray[:h, :w], vis.gray[:h, :w], "reference")
    return [[round(values[k], 4) for k in METRICS]]


# --------------------------------------------------------------------------------- sampling

class Cancelled(Exception):
    pass


class Sampling:
    """``fuse_sources`` in a worker thread; step events (with every few steps the x0 estimate
    as 8-bit grey) come out through a queue, then ("done", result) or ("error", exception)."""

    def __init__(self, fuser, ir, vis, opts, steps: int):
        self.events: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.every = max(1, round(steps / GALLERY_FRAMES))
        self.count = 0
        self.thread = threading.Thread(target=self._run, args=(fuser, ir, vis, opts), daemon=True)
        self.thread.start()

    def _observe(self, info):
        if self.cancelled.is_set():
            raise Cancelled
        self.count += 1
        frame = None
        if self.count % self.every == 0 or info["step"] == 0:
            h, w = info["sample"].shape[-2:]
            frame = to_gray_uint8(info["x0_pred"][..., :h, :w], rounding="progress")[0].cpu().numpy()
        self.events.put(("step", (self.count, info["step"], frame)))

    def _run(self, fuser, ir, vis, opts):
        try:
            with FUSION_LOCK:
                result = fuser.fuse_sources([ir], [vis], opts, callback=self._observe)[0]
            self.events.put(("done", result))
        except BaseException as exc:  # handed to the request, which reports it
            self.events.put(("error", exc))

    def __iter__(self):
        while True:
            kind, value = self.events.get()
            yield kind, value
            if kind != "step":
                return


def error_message(exc: BaseException, ir) -> str:
    """One line for the page; unexpected errors are logged in full on the server only."""
    if isinstance(exc, (ImageError, FusionError, ValueError)):
        return str(exc)
    if is_out_of_memory(exc):
        h, w = ir.gray.shape
        return (f"out of memory fusing {w}x{h}; try smaller images, fewer pixels, or start "
                "demo.py with --precision bf16")
    log.error("fusion failed", exc_info=exc)
    return f"internal error ({exc.__class__.__name__}: {exc}); the server log has the details"


# ------------------------------------------------------------------------------ the request

OUTPUTS = ("status", "gray", "color", "files", "ir_source", "vis_source", "gallery", "metrics")


def updates(**values) -> tuple:
    """One value per output, in OUTPUTS order; those not named stay as they are."""
    return tuple(values.get(name, gr.skip()) for name in OUTPUTS)


def make_fuse(settings: Settings, cache: FuserCache):
    """The event handler: a generator yielding the page's updates while sampling runs."""

    def fuse(ir_upload, vis_upload, preset, color, steps, seed, lamb, rho, prior, progress=gr.Progress()):
        try:
            yield from fuse_request(settings, cache, (ir_upload, vis_upload, preset, color, steps, seed,
                                                      lamb, rho, prior), progress)
        except DemoError as exc:  # in the status box and as gradio's error (a toast, the client's AppError)
            yield updates(status=f"**error:** {exc}")
            raise gr.Error(str(exc), duration=None, print_exception=False) from None
    return fuse


def checked_request(settings, values):
    """The request's options and decoded sources, or a DemoError: everything that can be refused
    without the model (run before the request joins the queue, and again inside it)."""
    ir_upload, vis_upload, preset, color, steps, seed, lamb, rho, prior = values
    roles = modality_presets().get(preset, modality_presets()["infrared-visible"])[0]
    config = request_config(settings, prior, steps, seed, lamb, rho, color)
    ir = read_upload(ir_upload, roles[0], settings.max_side)
    vis = read_upload(vis_upload, roles[1], settings.max_side)
    try:
        check_pair(ir, vis, config.fuse.crop_multiple)
    except ImageError as exc:
        raise DemoError(str(exc)) from None
    return config, ir, vis


def make_check(settings: Settings):
    """The click's first handler, outside the queue: a bad request is refused at once, never after
    waiting behind another user's fusion."""

    def check(*values):
        try:
            checked_request(settings, values)
        except DemoError as exc:
            raise gr.Error(str(exc), duration=None, print_exception=False) from None
    return check


def fuse_request(settings, cache, values, progress):
    ir_upload, vis_upload, preset, color, steps, seed, lamb, rho, prior = values
    config, ir, vis = checked_request(settings, values)
    opts = config.fuse
    started = time.monotonic()
    sources = dict(ir_source=ir_upload["path"], vis_source=vis_upload["path"])
    yield updates(status=f"Fusing with the {PRIOR_NAMES[prior]} prior ...",
                  gallery=[], gray=None, color=None, files=None, metrics=None, **sources)
    fuser = cache.get(config)  # the first request of a prior loads its model
    frames = []
    result = yield from sample_with_gallery(fuser, ir, vis, opts, prior, progress, frames)
    folder = request_folder(settings)
    stem = safe_stem(ir_upload)
    pair = Pair(stem, Path(ir_upload["path"]), Path(vis_upload["path"]))
    errors = save_results([(pair, ir, vis)], [result], config.run, opts, PRIOR_LABELS[prior], folder)
    if errors:
        raise DemoError(errors[0])
    recon = folder / "recon" / f"{stem}.png"
    colour = folder / "color" / f"{stem}.png" if opts.color else None
    downloads = [recon]
    if colour is not None:  # one download folder, so the colour PNG gets a name of its own
        downloads.append(folder / "download" / f"{stem}_color.png")
        downloads[-1].parent.mkdir()
        shutil.copyfile(colour, downloads[-1])
    h, w = result["gray"].shape
    yield updates(status=done_text(ir, (h, w), prior, steps, seed, lamb, rho, time.monotonic() - started),
                  gray=str(recon), color=str(colour) if colour else None, files=[str(p) for p in downloads],
                  metrics=metrics_rows(recon, ir, vis), gallery=frames, **sources)


def sample_with_gallery(fuser, ir, vis, opts, prior, progress, frames: list):
    """Run the sampling, yielding the gallery (``frames``) as it grows; return the result."""
    total = fuser.schedule.num_steps if prior != "none" else None
    progress(0, desc="sampling" if total else "EM iterations")
    run = Sampling(fuser, ir, vis, opts, total or 1)
    try:
        for kind, value in run:
            if kind == "step":
                count, step, frame = value
                progress((count, total), desc="sampling", unit="steps")
                if frame is not None:
                    frames.append((frame, f"x0 at t={step}"))
                    yield updates(gallery=list(frames))
            elif kind == "error":
                raise DemoError(error_message(value, ir))
            elif "error" in value:
                raise DemoError(value["error"])
            else:
                return value
    finally:
        run.cancelled.set()  # a request left early stops its sampling at the next step


def done_text(ir, size, prior, steps, seed, lamb, rho, seconds) -> str:
    h, w = size
    sh, sw = ir.gray.shape
    crop = "" if (h, w) == (sh, sw) else f" (cropped from {sw}x{sh} to multiples of 32)"
    how = f"{PRIOR_NAMES[prior]} prior, {int(steps)} steps" if prior != "none" else f"EM only, {int(steps)} iterations"
    return (f"Done in {seconds:.1f} s: {w}x{h}{crop}, {how}, seed {int(seed)}, lamb {lamb:g}, "
            f"rho {rho:g}. The PNGs are the files `sample.py` writes for these options.")


# ------------------------------------------------------------------------------------ page

INTRO = ("# DDFM: diffusion-based multi-modality image fusion\n"
         "Two registered images of one scene, the first in the infrared role (infrared, CT, PET, "
         "SPECT), the second in the visible role (visible, MRI). Pick an example below or upload a "
         "pair, then **Fuse**. The x0 estimate of every few steps appears while sampling runs.")


def input_panel(settings: Settings) -> dict:
    presets = list(modality_presets())
    ir_label, vis_label = source_labels(presets[0])
    c = {}
    with gr.Row():
        c["ir_upload"] = gr.Image(label=ir_label, type="filepath", sources=["upload", "clipboard"],
                                elem_id="ir-input", height=260)
        c["vis_upload"] = gr.Image(label=vis_label, type="filepath", sources=["upload", "clipboard"],
                                elem_id="vis-input", height=260)
    with gr.Row():
        c["preset"] = gr.Dropdown(presets, value=presets[0], label="modality preset")
        c["color"] = gr.Checkbox(value=modality_presets()[presets[0]][1], label="colour output")
        c["prior"] = gr.Radio([("diffusion (DDFM)", "diffusion"), ("none (EM only)", "none"),
                               ("gaussian (DDFM, Gaussian prior, no checkpoint)", "gaussian")],
                              value=settings.default_prior, label="prior")
    with gr.Row():
        c["steps"] = gr.Slider(1, settings.max_steps, value=settings.default_steps, step=1,
                               label="steps (EM iterations with prior none)")
        c["seed"] = gr.Number(3407, precision=0, label="seed")
        c["lamb"] = gr.Number(0.5, label="lamb (EM lambda, > 0)")
        c["rho"] = gr.Number(0.001, label="rho (EM rho, >= 0)")
    c["button"] = gr.Button("Fuse", variant="primary", elem_id="fuse-button")
    return c


def output_panel() -> dict:
    c = {"status": gr.Markdown("Ready.", elem_id="status")}
    with gr.Row():
        c["ir_source"] = gr.Image(label="source (infrared role)", interactive=False, height=260)
        c["vis_source"] = gr.Image(label="source (visible role)", interactive=False, height=260)
        c["gray"] = gr.Image(label="fused (grey)", interactive=False, height=260, format="png",
                             elem_id="fused-gray")
        c["color"] = gr.Image(label="fused (colour)", interactive=False, height=260, format="png",
                              elem_id="fused-color")
    c["gallery"] = gr.Gallery(label="x0 estimate while sampling", columns=GALLERY_FRAMES, height=150,
                              fit_columns=False, object_fit="contain",
                              elem_id="x0-gallery")
    with gr.Row():
        c["metrics"] = gr.Dataframe(headers=list(METRICS), datatype="number", interactive=False,
                                    label="metrics (metrics/evaluator.py, as evaluate.py computes them)",
                                    elem_id="metrics", scale=3)
        c["files"] = gr.File(label="download", file_count="multiple", interactive=False, scale=1,
                             elem_id="downloads")
    return c


def examples(inputs: dict) -> None:
    pairs, _ = find_pairs(REPO / "input", ("ir", "vi"))
    gr.Examples([[str(p.ir), str(p.vis), "infrared-visible"] for p in pairs],
                [inputs["ir_upload"], inputs["vis_upload"], inputs["preset"]],
                label="bundled pairs (input/)", elem_id="examples")


def on_preset(preset):
    ir_label, vis_label = source_labels(preset)
    return gr.update(label=ir_label), gr.update(label=vis_label), modality_presets()[preset][1]


def build_app(settings: Settings):
    cache = FuserCache()
    with gr.Blocks(title="DDFM demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(INTRO)
        gr.Markdown(settings.checkpoint_missing, visible=bool(settings.checkpoint_missing),
                    elem_id="checkpoint-note")
        inputs = input_panel(settings)
        examples(inputs)
        outputs = output_panel()
        inputs["preset"].change(on_preset, inputs["preset"],
                                [inputs["ir_upload"], inputs["vis_upload"], inputs["color"]], queue=False)
        names = ("ir_upload", "vis_upload", "preset", "color", "steps", "seed", "lamb", "rho", "prior")
        inputs["button"].click(make_check(settings), [inputs[n] for n in names], None, queue=False,
                               preprocess=False, api_name=False).success(
            make_fuse(settings, cache), [inputs[n] for n in names], [outputs[n] for n in OUTPUTS],
            api_name="fuse", preprocess=False, concurrency_limit=1)
    return app


def launch(app, settings: Settings, host: str, port: int, max_file_size: str) -> None:
    """Serve until interrupted; requests wait in one queue, one fusion at a time."""
    app.queue(default_concurrency_limit=1, max_size=32)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    try:
        app.launch(server_name=host, server_port=port, show_error=False, max_file_size=max_file_size,
                   allowed_paths=[str(settings.workdir), str(REPO / "input")], ssr_mode=False,
                   theme=theme, footer_links=["api"])
    finally:
        shutil.rmtree(settings.workdir, ignore_errors=True)
