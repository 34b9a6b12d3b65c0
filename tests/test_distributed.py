"""torchrun: two CPU processes (gloo) write exactly the files one process writes."""
import os
import subprocess
import sys

from PIL import Image

from conftest import REPO


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _small_pairs(golden, root):
    """The three FLIR pairs, cut to 64x96 (what is tested is how the ranks share the pairs)."""
    for path in sorted((golden / "pipeline" / "flir_10steps" / "input").glob("*/*.jpg")):
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im.crop((0, 0, 96, 64)).save(root / path.parent.name / f"{path.stem}.png")
    return root


def test_two_process_torchrun_equals_one_process(golden, tmp_path):
    common = ["sample.py", "--model_config", str(golden / "unet_tiny.yaml"),
              "--diffusion_config", str(golden / "pipeline" / "small_10steps" / "diffusion_config.yaml"),
              "--input", str(_small_pairs(golden, tmp_path / "input")),
              "--steps", "2", "--quiet", "--color"]
    # torchrun gives each process one thread; CPU kernels round differently with other thread
    # counts, so the single-process reference runs with one thread too.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    hang_s = 1800  # catches a hung run only; a busy machine may be many times slower than idle
    multi, single = tmp_path / "multi", tmp_path / "single"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", *common, "--save_dir", str(multi)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=hang_s)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "done: 3 fused, 0 skipped" in run.stderr  # totals gathered over both ranks
    run = subprocess.run([sys.executable, *common, "--save_dir", str(single)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=hang_s)
    assert run.returncode == 0, run.stderr[-2000:]
    multi_files, single_files = _files(multi), _files(single)
    assert len(single_files) == 6
    assert multi_files.keys() == single_files.keys()
    for name in single_files:
        assert multi_files[name] == single_files[name], name
