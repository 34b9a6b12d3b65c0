"""The throughput path: one UNet call per batch by default under tf32/bf16/fp16 (fp32
stays per pair), torch.compile with a persistent cache and its time reported, CUDA graphs refused
off CUDA, and ``python -m benchmarks.bench_dataset`` end to end on the tiny UNet."""
import contextlib
import importlib
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import sample
from conftest import GOLDEN, REPO
from tolerance import ulps
from ddfm import FuseOptions, Fuser, FuserOptions, configure_compile_cache, load_source, resolve_batched_unet

TINY_MODEL = GOLDEN / "unet_tiny.yaml"
TINY_DIFFUSION = GOLDEN / "pipeline" / "small_10steps" / "diffusion_config.yaml"


def crops_of_input_pairs(h=64, w=96):
    """The repo's three FLIR pairs, cropped top-left to one size: a real batch of three."""
    stems = ["FLIR_03952", "FLIR_04071", "FLIR_04598"]
    ir = [load_source(REPO / "input" / "ir" / f"{s}.jpg") for s in stems]
    vis = [load_source(REPO / "input" / "vi" / f"{s}.jpg") for s in stems]
    cut = lambda src: load_source(src.rgb[:h, :w].copy(), src.name)  # noqa: E731
    return [cut(s) for s in ir], [cut(s) for s in vis]


# ------------------------------------------------------------------------ batched UNet: auto

@pytest.mark.parametrize("precision, expected", [("fp32", False), ("tf32", True), ("bf16", True), ("fp16", True)])
def test_auto_batches_the_unet_except_in_fp32(precision, expected):
    assert resolve_batched_unet("auto", precision) is expected
    assert resolve_batched_unet("on", precision) is True
    assert resolve_batched_unet("off", precision) is False
    assert resolve_batched_unet(True, precision) is True    # the former bool API still works
    assert resolve_batched_unet(False, precision) is False


def test_batched_unet_value_checked():
    with pytest.raises(ValueError, match="batched_unet must be one of auto, on, off"):
        resolve_batched_unet("yes", "fp32")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fuser_and_cli_resolve_auto(precision):
    assert Fuser(TINY_MODEL, TINY_DIFFUSION, precision=precision).unet.batched is (precision != "fp32")
    parser = sample.build_parser()
    assert parser.parse_args([]).batched_unet is None  # not given: the option's default, auto
    assert FuserOptions().batched_unet == "auto"
    assert parser.parse_args(["--batched_unet"]).batched_unet == "on"    # as the old flag
    assert parser.parse_args(["--batched_unet", "off"]).batched_unet == "off"


@pytest.mark.numeric
def test_batched_unet_equals_per_pair_to_float_rounding():
    """fp32 on the CPU: the whole batch in one UNet call against one call per pair."""
    fuser = Fuser(TINY_MODEL, TINY_DIFFUSION, steps=2, batched_unet="off")
    x = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 999)
    with torch.inference_mode():
        per_pair = fuser.model_fn(x, t)
        fuser.unet.batched = True
        batched = fuser.model_fn(x, t)
    # the same layers over a batch of 3: convolutions and matmuls may block the sums otherwise,
    # a few units of float32 resolution of the output's scale per layer (as test_unet.py's 64)
    assert ulps(batched, per_pair, scale="max") <= 64, ulps(batched, per_pair, scale="max")

    ir, vis = crops_of_input_pairs()
    fuser.unet.batched = False
    ref = fuser.fuse_sources(ir, vis, FuseOptions())
    fuser.unet.batched = True
    got = fuser.fuse_sources(ir, vis, FuseOptions())
    assert_agree_to_rounding(ref, got)


def assert_agree_to_rounding(ref, got):
    """Each pair's grey PNG: none off by more than 1, at least 99.9 % identical."""
    for a, b in zip(ref, got):
        diff = np.abs(a["gray"].astype(int) - b["gray"].astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.999


def test_bf16_default_batches_and_matches_bf16_per_pair():
    """The new bf16 default (one UNet call for the batch) changes nothing but float rounding
    against bf16 with one call per pair (bf16's own distance from fp32 is test_precision's)."""
    ir, vis = crops_of_input_pairs(32, 32)  # bf16 is emulated on most CPUs: slow
    fast = Fuser(TINY_MODEL, TINY_DIFFUSION, steps=2, precision="bf16")
    assert fast.unet.batched
    got = fast.fuse_sources(ir, vis, FuseOptions())
    fast.unet.batched = False
    ref = fast.fuse_sources(ir, vis, FuseOptions())
    assert_agree_to_rounding(ref, got)


# ------------------------------------------------------------------------ no host syncs

HOST_SYNCS = ("item", "tolist", "numpy", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__")


@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 0.0)])
def test_step_loop_never_waits_for_the_device(monkeypatch, sampler, eta):
    """The whole sampler loop (UNet, x0, EM step with its FFTs, eps, update, noise) runs with
    every Tensor method that copies a value to the host made to fail: on a GPU the loop queues
    its kernels without waiting, which CUDA graphs require. (A Python ``if`` on a tensor is
    ``__bool__``, a tensor used as an index or a range bound ``__index__``.)"""
    from ddfm.fusion import fuse

    fuser = Fuser(TINY_MODEL, TINY_DIFFUSION, steps=3, sampler=sampler, eta=eta)
    gen = torch.Generator().manual_seed(0)
    ir, vis = (torch.rand(2, 1, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
    with torch.inference_mode():
        reference = fuse(fuser.model_fn, fuser.schedule, fuser.diffusion_config, ir, vis, [1, 2])

    def trap(name):
        def host_sync(self, *args, **kwargs):
            raise AssertionError(f"the step loop copies a value to the host: Tensor.{name}")
        return host_sync

    for name in HOST_SYNCS:
        monkeypatch.setattr(torch.Tensor, name, trap(name))
    with torch.inference_mode():
        out = fuse(fuser.model_fn, fuser.schedule, fuser.diffusion_config, ir, vis, [1, 2])
    monkeypatch.undo()
    assert torch.equal(out, reference)


# ------------------------------------------------------------------------ compile options

class ReplayingUNet(torch.nn.Module):
    """A stand-in for a UNet under CUDA graphs (reduce-overhead): every call writes its result
    into the same output buffer, as a graph replay does."""

    def __init__(self):
        super().__init__()
        self.buffer = None

    def forward(self, x, t):
        result = x * 2 + t.view(-1, 1, 1, 1)
        if self.buffer is None or self.buffer.shape != result.shape:
            self.buffer = torch.empty_like(result)
        return self.buffer.copy_(result)


@pytest.mark.parametrize("batched_unet", [False, True])
def test_unet_outputs_survive_output_buffer_reuse(batched_unet):
    """Under CUDA graphs each UNet call overwrites the previous call's output: the per-pair
    outputs of one step and a step's output kept by the sampler must be copies (CPU stand-in)."""
    fuser = Fuser(TINY_MODEL, TINY_DIFFUSION, steps=2, batched_unet="on" if batched_unet else "off")
    fuser.unet.model = ReplayingUNet()
    # as after the first (compiling) call
    fuser.unet.compile_mode, fuser.unet.compile_seconds = "reduce-overhead", 0.0
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    t = torch.tensor([10, 20])
    first = fuser.model_fn(x, t)
    kept = first.clone()
    fuser.model_fn(x + 1, t)  # the next step's call
    assert torch.equal(first, x * 2 + t.view(-1, 1, 1, 1)) and torch.equal(first, kept)


def test_reduce_overhead_refused_off_cuda(capsys, tmp_path):
    with pytest.raises(ValueError, match="reduce-overhead records CUDA graphs and needs a CUDA device"):
        Fuser(TINY_MODEL, TINY_DIFFUSION, device="cpu", compile=True, compile_mode="reduce-overhead")
    rc = sample.main(["--model_config", str(TINY_MODEL), "--diffusion_config", str(TINY_DIFFUSION),
                      "--input", str(REPO / "input"), "--save_dir", str(tmp_path / "out"), "--quiet",
                      "--compile", "--compile_mode", "reduce-overhead"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "CUDA" in err[0], err
    assert not list((tmp_path / "out" / "recon").glob("*.png"))


def test_compile_options_need_compile(capsys, tmp_path):
    rc = sample.main(["--model_config", str(TINY_MODEL), "--input", str(REPO / "input"),
                      "--save_dir", str(tmp_path / "out"), "--compile_cache", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: --compile_cache applies to a compiled UNet; add --compile or drop --compile_cache"


def test_compile_cache_folder_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "from_env"))
    assert configure_compile_cache() == (tmp_path / "from_env").resolve()
    assert configure_compile_cache(tmp_path / "given") == (tmp_path / "given").resolve()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "given").resolve())
    import torch._inductor.config as inductor_config
    assert inductor_config.fx_graph_cache is True
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot create it"):
        configure_compile_cache(tmp_path / "file" / "below")


COMPILE_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from torch._dynamo.utils import counters
    from ddfm import Fuser
    fuser = Fuser(sys.argv[1], sys.argv[2], compile=True, compile_cache=sys.argv[3])
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([999])
    with torch.inference_mode():
        compiled = fuser.model_fn(x, t)
        again = fuser.model_fn(x, t)
        eager = fuser.model._orig_mod(x, t).float()
    print(json.dumps(dict(counters=dict(counters["inductor"]), seconds=fuser.compile_seconds,
                          diff=float((compiled - eager).abs().max()),
                          scale=float(eager.abs().max()), again=float((again - compiled).abs().max()))))
""")


@pytest.mark.slow  # compiling the tiny UNet: ~4 min cold on 2 CPU cores, up to ~15 min when they are shared
def test_compiled_unet_matches_eager_and_reuses_its_cache(tmp_path):
    cache = tmp_path / "cache"
    runs = []
    for _ in range(2):  # two fresh processes sharing one cache folder
        proc = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, str(TINY_MODEL), str(TINY_DIFFUSION),
                               str(cache)], cwd=REPO, capture_output=True, text=True, timeout=2400,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("compile: ")]
        assert len(lines) == 1 and f"cache: {cache.resolve()}" in lines[0], proc.stderr[-2000:]
        assert math.isfinite(report["seconds"]) and report["seconds"] > 0
        # inductor fuses and reorders every layer's float32 arithmetic: 840 units of resolution
        # of the output's scale (a wrong kernel is off by the output's own size)
        assert report["diff"] <= 1e-4 * max(report["scale"], 1.0), report
        assert report["again"] == 0.0
        runs.append(report["counters"])
    assert runs[0].get("fxgraph_cache_miss", 0) >= 1 and runs[0].get("fxgraph_cache_hit", 0) == 0, runs
    assert runs[1].get("fxgraph_cache_hit", 0) >= 1 and runs[1].get("fxgraph_cache_miss", 0) == 0, runs
    assert any(cache.rglob("*")), "nothing written to the compile cache"


# ------------------------------------------------------------------------ bench_dataset.py

def test_bench_dataset_tiny_end_to_end(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_dataset", "--tiny", "--device", "cpu",
                           "--datasets", "MSRS,Harvard", "--precision", "fp32", "--peak", "1",
                           "--release_peak", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    jsons = list(out.glob("bench_dataset_cpu_*.json"))
    assert len(jsons) == 1 and jsons[0].with_suffix(".md").exists()
    def refuse(constant):
        raise AssertionError(f"{constant} in the raw JSON: not standard JSON")

    raw = json.loads(jsons[0].read_text(), parse_constant=refuse)  # fp32: PSNR inf, written "inf"
    assert raw["columns"][:6] == ["set", "pairs", "size (HxW)", "path", "batch", "s/step"]
    table = raw["table"]
    assert [(r[0], r[3]) for r in table] == [("MSRS", "release"), ("MSRS", "chosen"),
                                             ("Harvard", "release"), ("Harvard", "chosen")]
    for row in table:
        assert len(row) == len(raw["columns"])
        numbers = [float(c) for c in row[5:13]]  # s/step ... peak memory
        assert all(math.isfinite(v) for v in numbers), row
        assert float(row[5]) > 0 and float(row[7]) > 0
    for r in raw["rows"]:
        assert r["batch"] == (1 if r["path"] == "release" else 2)
        # the projection is the timing scaled: ceil(pairs / batch) batches x 100 steps
        assert r["set_minutes"] == pytest.approx(math.ceil(r["pairs"] / r["batch"]) * 100 * r["s_step"] / 60)
        assert r["pairs_per_hour"] == pytest.approx(3600 * r["batch"] / (100 * r["s_step"]))
    # fidelity of the chosen path on the same weights, sources and noise: fp32 with SDPA against
    # the release's einsum attention, so equal up to a grey level at rounding boundaries
    psnr_col, diff_col = raw["columns"].index("PSNR dB"), raw["columns"].index("max |d|")
    for row in table:
        if row[3] == "release":
            assert row[psnr_col] == row[diff_col] == "-"
        else:
            assert row[psnr_col] == "inf" or float(row[psnr_col]) > 45, row
            assert int(row[diff_col]) <= 2, row
    assert all(("psnr_vs_release" in r) == (r["path"] == "chosen") for r in raw["rows"])
    # the EM step's own time per set, and its share of the chosen path's step
    assert all(r["em_ms_step"] > 0 for r in raw["rows"] if r["path"] == "chosen")
    em_notes = [n for n in raw["notes"] if "the EM step" in n]
    assert [n.split(":")[0] for n in em_notes] == ["MSRS", "Harvard"] and all(" %)" in n for n in em_notes)
    assert "MSRS" in proc.stdout and "x release" in proc.stdout


# torch's defaults of the switches bench_dataset sets
BACKEND_DEFAULTS = {(torch.backends.cudnn, "allow_tf32"): True,
                    (torch.backends.cuda.matmul, "allow_tf32"): False,
                    (torch.backends.cudnn, "benchmark"): False}


@contextlib.contextmanager
def backend_switches(values):
    """Set torch backend switches for a block, then put back what they were. They are
    properties (setters calling into torch), not plain attributes: monkeypatch would undo one it
    could not read by deleting it, which these objects refuse; so read and restore them through
    their own getters and setters."""
    saved = {key: getattr(*key) for key in values}
    try:
        for (module, name), value in values.items():
            setattr(module, name, value)
        yield
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


def test_backend_switches_are_restored_through_their_setters():
    before = {key: getattr(*key) for key in BACKEND_DEFAULTS}
    flipped = {key: not value for key, value in before.items()}
    with backend_switches(flipped):
        assert {key: getattr(*key) for key in BACKEND_DEFAULTS} == flipped
    assert {key: getattr(*key) for key in BACKEND_DEFAULTS} == before


def test_bench_dataset_sets_each_paths_backend_switches(tmp_path, monkeypatch):
    """The release path is timed in faithful fp32 (TF32 off: cuDNN allows it in convolutions by
    default) and without cuDNN's algorithm search; the chosen path gets TF32 only under tf32 and
    the search only with --cudnn_benchmark. Recorded while each path is timed."""
    bench = importlib.import_module("benchmarks.bench_dataset")
    seen = []
    timed = bench.time_set

    def spy(fuser, size, batch, args, device):
        seen.append((batch, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
                     torch.backends.cudnn.benchmark))
        return timed(fuser, size, batch, args, device)

    monkeypatch.setattr(bench, "time_set", spy)
    argv = ["--tiny", "--device", "cpu", "--datasets", "Harvard", "--out", str(tmp_path)]
    with backend_switches(BACKEND_DEFAULTS):
        assert bench.main(argv + ["--precision", "tf32", "--cudnn_benchmark"]) == 0
        assert bench.main(argv + ["--precision", "fp32"]) == 0
    # (batch, cuDNN TF32, matmul TF32, cuDNN benchmark): release is batch 1, chosen batch 2
    assert seen == [(1, False, False, False), (2, True, True, True),
                    (1, False, False, False), (2, False, False, False)]


# ------------------------------------------------------------------------ the GPU scripts

def script_commands(script):
    """Each ``python3 -m benchmarks.X ARGS`` of a shell script, variables filled in with what a
    run would use (the first value of a ``for`` loop), as (line, module name, argv)."""
    import re
    import shlex

    text = (REPO / "benchmarks" / script).read_text()
    values = {"B": "benchmarks.bench_dataset", "OUT": "/tmp/out", "CACHE": "/tmp/cache"}
    values.update({name: first for name, first in re.findall(r"for (\w+) in (\S+)", text)})
    commands = []
    for line in text.splitlines():
        match = re.search(r"python3 -m ((?:benchmarks\.\w+|\$B)\b.*)", line)
        if not match or line.lstrip().startswith("#"):
            continue
        words = re.split(r";|\||2>&1", match.group(1))[0]
        words = re.sub(r"\$(\w+)", lambda m: values[m.group(1)], words)
        module, *argv = shlex.split(words)
        commands.append((line.strip(), module, argv))
    return commands


@pytest.mark.parametrize("script, expected", [("gpu_throughput.sh", 9), ("gpu_check.sh", 4)])
def test_gpu_scripts_are_valid_shell_and_every_command_parses(script, expected):
    """The GPU scripts run where device time is scarce: a bad flag, a misspelt data set or golden
    case must be found here, on the CPU, not after minutes of a lent GPU."""
    syntax = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    commands = script_commands(script)
    assert len(commands) == expected, [c[0] for c in commands]
    for line, module, argv in commands:
        try:
            importlib.import_module(module).parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{script}: {line!r} does not parse (exit {exc.code})")


def test_gpu_throughput_runs_its_parts_in_order(tmp_path):
    """gpu_throughput.sh with python3 and nvidia-smi stubbed (they only log their arguments):
    the default parts run in order, every step once; chosen parts only; an unknown part is
    refused before anything runs."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls.log"
    for name in ("python3", "nvidia-smi"):
        (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        (stubs / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"),
           "CACHE": str(tmp_path / "cache")}

    def run(*parts):
        log.write_text("")
        proc = subprocess.run(["bash", "benchmarks/gpu_throughput.sh", *parts], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)  # a hang only
        calls = [line.split(" ", 2)[2] for line in log.read_text().splitlines()
                 if line.startswith("python3 -m benchmarks.")]
        return proc, calls

    proc, calls = run()
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 9 and [c.split()[0] for c in calls][:5] == [
        "benchmarks.bench_dataset"] * 4 + ["benchmarks.gpu_fidelity"]
    assert calls[0] == (f"benchmarks.bench_dataset --device cuda --precision bf16 --batch 4 --markdown "
                        f"--out {tmp_path}/out/results")
    assert "--compile" in calls[1] and "--cudnn_benchmark" in calls[3] and "reduce-overhead" in calls[-1]
    assert (tmp_path / "out" / "throughput.log").exists()

    proc, calls = run("graphs", "fp32")
    assert proc.returncode == 0 and len(calls) == 3 and "reduce-overhead" in calls[0]
    proc, calls = run("sets", "bogus")
    assert proc.returncode == 2 and "unknown part bogus" in proc.stderr and calls == []


def test_gpu_fidelity_runs_on_the_cpu_and_reproduces_the_golden_case():
    """benchmarks/gpu_fidelity.py end to end (it runs on whatever device is there): fp32 on the
    CPU reproduces small_10steps' recon PNG pixel for pixel."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_fidelity", "--cases", "small_10steps"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| small_10steps")]
    assert len(rows) == 1 and "| 100.000 % | 0 | inf |" in rows[0], proc.stdout
