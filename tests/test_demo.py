"""``python demo.py``, the Gradio page over the Fuser ``sample.py`` uses.

A real ``demo.py`` server (tiny golden UNet, 2 steps by default) is started on 127.0.0.1 and
driven through ``gradio_client`` (its PNGs are compared byte for byte with the files
``sample.py`` writes for the same pair and options, its metrics with ``evaluate.py``'s) and
through a headless Chromium. gradio, gradio_client, selenium and chromium/chromedriver are
optional: without them these tests skip with the reason, unless ``DDFM_REQUIRE_DEMO=1`` (CI),
where a missing one fails. ``DDFM_DEMO_SCREENSHOT=PATH`` saves the browser test's screenshot.
"""
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
import sample
from conftest import GOLDEN, REPO
from ddfm import Fuser
from ddfm.config import OPTION_CLASSES
from util.options import given_values

TINY_MODEL = GOLDEN / "unet_tiny.yaml"
TINY_DIFFUSION = GOLDEN / "pipeline" / "small_10steps" / "diffusion_config.yaml"
PAIR = "FLIR_03952.jpg"
REQUIRE = os.environ.get("DDFM_REQUIRE_DEMO") == "1"
INSTALL = "pip install -r requirements-demo.txt"


def need(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if REQUIRE:
            pytest.fail(f"DDFM_REQUIRE_DEMO=1 but {module} cannot be imported ({exc}); {INSTALL}")
        pytest.skip(f"demo test needs {module} ({INSTALL})")


def need_chromium() -> tuple:
    paths = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(paths):
        why = "chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        if REQUIRE:
            pytest.fail(f"DDFM_REQUIRE_DEMO=1 but {why} are missing")
        pytest.skip(f"browser test needs {why}")
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(proc, url: str, log: Path) -> None:
    """Until the page answers; fails with the server's output if it exits first."""
    for _ in range(600):
        if proc.poll() is not None:
            pytest.fail(f"demo.py exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    pytest.fail(f"demo.py did not answer at {url}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A demo.py subprocess on 127.0.0.1 with the tiny UNet; its default is 2 steps."""
    need("gradio")
    need("gradio_client")
    folder = tmp_path_factory.mktemp("demo")
    diffusion = folder / "diffusion_2steps.yaml"
    diffusion.write_text(TINY_DIFFUSION.read_text().replace("timestep_respacing: 10", "timestep_respacing: 2"))
    port, log = free_port(), folder / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "demo.py", "--port", str(port), "--model_config",
                                 str(TINY_MODEL), "--diffusion_config", str(diffusion)],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(proc, url, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_pair(root: Path, name: str = PAIR) -> Path:
    for side in ("ir", "vi"):
        (root / side).mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "input" / side / name, root / side / name)
    return root


def fuse(url, a, b, *, prior="diffusion", steps=2, seed=5, lamb=0.7, rho=0.002, color=True):
    from gradio_client import Client, handle_file
    client = Client(url, verbose=False)
    return client.predict(handle_file(str(a)), handle_file(str(b)), "infrared-visible", color, steps,
                          seed, lamb, rho, prior, api_name="/fuse")


def sample_py(tmp_path: Path, *options) -> Path:
    """sample.py's outputs for the repo's pair PAIR with these options (tiny UNet)."""
    out = tmp_path / "sample_out"
    rc = sample.main(["--input", str(one_pair(tmp_path / "in")), "--save_dir", str(out), "--quiet",
                      "--model_config", str(TINY_MODEL), "--diffusion_config", str(TINY_DIFFUSION),
                      *map(str, options)])
    assert rc == 0
    return out


# ------------------------------------------------------------------------ through the client

def test_fusion_equals_sample_py_and_evaluate_py(server, tmp_path, capsys):
    status, gray, color, files, ir_source, vis_source, gallery, metrics = fuse(
        server, REPO / "input" / "ir" / PAIR, REPO / "input" / "vi" / PAIR)
    out = sample_py(tmp_path, "--steps", 2, "--seed", 5, "--lamb", 0.7, "--rho", 0.002, "--color")
    stem = Path(PAIR).stem
    recon, colour = (out / "recon" / f"{stem}.png").read_bytes(), (out / "color" / f"{stem}.png").read_bytes()
    assert Path(gray).read_bytes() == recon and Path(color).read_bytes() == colour
    assert sorted(Path(f).read_bytes() for f in files) == sorted([recon, colour])  # the downloads
    assert [Path(f).name for f in files] == [f"{stem}.png", f"{stem}_color.png"]
    assert status.startswith("Done") and "2 steps" in status
    assert len(gallery) == 2  # every step's x0 estimate (2 steps)
    for item in gallery:
        frame = np.asarray(Image.open(item["image"]))
        assert frame.shape[:2] == (288, 512) and frame.std() > 0
        assert item["caption"].startswith("x0 at t=")
    assert Image.open(ir_source).size == (532, 294)

    capsys.readouterr()
    assert evaluate.main(["--input", str(tmp_path / "in"), "--fused", str(out / "recon"),
                          "--json", str(tmp_path / "m.json")]) == 0
    expected = json.loads((tmp_path / "m.json").read_text())["methods"]["recon"]["per_image"][stem]
    assert metrics["headers"] == ["EN", "SD", "MI", "VIF", "Qabf", "SSIM"]
    assert metrics["data"] == [[round(expected[k], 4) for k in metrics["headers"]]]


def bad_images(tmp_path: Path) -> dict:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    big = tmp_path / "big.png"
    Image.fromarray(np.full((40, 1100), 128, np.uint8)).save(big)
    return {"text": text, "big": big}


def test_bad_uploads_give_the_message_and_the_server_keeps_serving(server, tmp_path):
    from gradio_client.exceptions import AppError
    bad = bad_images(tmp_path)
    ir, vi = REPO / "input" / "ir", REPO / "input" / "vi"
    cases = [((bad["text"], vi / PAIR), r"ir image notes\.png: not an image .*; re-export it"),
             ((ir / PAIR, ir / "FLIR_04071.jpg"), r"differs from its partner .*; resize one to match"),
             ((bad["big"], bad["big"]), r"1100x40 is larger than this demo's 1024 px .* --max_side 1100"),
             ((ir / PAIR, vi / PAIR), r"^lamb must be a finite number > 0, got 0\.0$")]
    for k, ((a, b), message) in enumerate(cases):
        with pytest.raises(AppError, match=message) as info:
            fuse(server, a, b, lamb=0.0 if k == 3 else 0.7)
        assert "Traceback" not in str(info.value)
    # the next good request works: EM only, equal to sample.py --prior none
    _, gray, _, files, *_ = fuse(server, ir / PAIR, vi / PAIR, prior="none", steps=4, color=False)
    out = sample_py(tmp_path, "--prior", "none", "--steps", 4, "--seed", 5, "--lamb", 0.7, "--rho", 0.002)
    assert Path(gray).read_bytes() == (out / "recon" / f"{Path(PAIR).stem}.png").read_bytes()
    assert len(files) == 1


# ------------------------------------------------------------------------- in a real browser

def chrome(driver_path: str, binary: str, profile: str):
    webdriver = need("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.binary_location = binary
    return webdriver.Chrome(service=Service(driver_path), options=options)


def save_screenshot(driver, path: str) -> None:
    """The page, shrunk to 1000 px wide and 256 colours (well under 300 KB)."""
    png = Path(tempfile.mkdtemp()) / "page.png"
    driver.save_screenshot(str(png))
    image = Image.open(png).convert("RGB")
    image = image.resize((1000, round(image.height * 1000 / image.width)), Image.LANCZOS)
    image.quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


@pytest.fixture(scope="module")
def chromium():
    """(chromium, chromedriver) paths, checked before the server starts."""
    paths = need_chromium()
    need("selenium")
    return paths


def test_browser_runs_a_bundled_example(chromium, server, tmp_path):
    binary, driver_path = chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver = chrome(driver_path, binary, str(tmp_path / "profile"))
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 600)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#examples [data-testid="dataset-cell-0-0"]'))
        driver.find_element(By.CSS_SELECTOR, '#examples [data-testid="dataset-cell-0-0"]').click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#vis-input img"))
        driver.find_element(By.ID, "fuse-button").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
        wait.until(lambda d: "Qabf" in d.find_element(By.ID, "metrics").text
                   and len(d.find_elements(By.CSS_SELECTOR, "#x0-gallery img")) == 2)
        fused = driver.find_element(By.CSS_SELECTOR, "#fused-gray img")
        wait.until(lambda d: fused.get_attribute("naturalWidth") == "512")
        table = driver.find_element(By.ID, "metrics").text.split()
        assert table[table.index("SSIM") + 1].replace(".", "").isdigit()  # EN's value follows
        if os.environ.get("DDFM_DEMO_SCREENSHOT"):
            save_screenshot(driver, os.environ["DDFM_DEMO_SCREENSHOT"])
    finally:
        driver.quit()


# --------------------------------------------------------------------------- without a server

def test_respaced_fuser_shares_the_model_and_equals_a_fresh_one():
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    vis = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    base = Fuser(TINY_MODEL, TINY_DIFFUSION, steps=2, device="cpu")
    other = base.respaced(3)
    assert other.model is base.model and other.schedule.num_steps == 3 and base.schedule.num_steps == 2
    fresh = Fuser(TINY_MODEL, TINY_DIFFUSION, steps=3, device="cpu")
    assert np.array_equal(other(ir, vis, seed=1), fresh(ir, vis, seed=1))


def test_without_checkpoint_it_starts_em_only_and_says_how_to_get_it(tmp_path):
    need("gradio")
    import demo
    import demo_app
    config = tmp_path / "model.yaml"
    config.write_text(TINY_MODEL.read_text().replace("model_path: unet_tiny.pt", "model_path: missing.pt"))
    args = demo.build_parser().parse_args(["--model_config", str(config)])
    assert args.host == "127.0.0.1"
    settings = demo_app.make_settings(given_values(OPTION_CLASSES, args))
    try:
        assert settings.default_prior == "none"
        assert "python demo.py --download_checkpoint" in settings.checkpoint_missing
        page = json.dumps(demo_app.build_app(settings).get_config_file())
        assert "python demo.py --download_checkpoint" in page and "No checkpoint at" in page
        with pytest.raises(demo_app.DemoError, match="download_checkpoint"):
            demo_app.request_config(settings, "diffusion", 3, 1, 0.5, 0.001, False)
    finally:
        shutil.rmtree(settings.workdir)


def test_fuser_cache_loads_the_model_once_per_prior():
    need("gradio")
    import demo
    import demo_app
    args = demo.build_parser().parse_args(["--model_config", str(TINY_MODEL),
                                           "--diffusion_config", str(TINY_DIFFUSION)])
    settings = demo_app.make_settings(given_values(OPTION_CLASSES, args))
    try:
        assert settings.default_prior == "diffusion" and settings.default_steps == 10
        cache = demo_app.FuserCache()

        def get(prior, steps):
            return cache.get(demo_app.request_config(settings, prior, steps, 1, 0.5, 0.001, False))
        two, three, none = get("diffusion", 2), get("diffusion", 3), get("none", 3)
        assert three.model is two.model and get("diffusion", 2) is two
        assert (two.schedule.num_steps, three.schedule.num_steps) == (2, 3)
        assert none.model is None and none.em_iterations == 3
    finally:
        shutil.rmtree(settings.workdir)


def test_gaussian_prior_is_offered_beside_em_only_without_a_checkpoint(tmp_path):
    need("gradio")
    import demo
    import demo_app
    config = tmp_path / "model.yaml"
    config.write_text(TINY_MODEL.read_text().replace("model_path: unet_tiny.pt", "model_path: missing.pt"))
    settings = demo_app.make_settings(given_values(OPTION_CLASSES, demo.build_parser().parse_args(
        ["--model_config", str(config), "--prior", "gaussian"])))
    try:
        page = json.dumps(demo_app.build_app(settings).get_config_file())
        assert '"gaussian"' in page and '"none"' in page
        fuser = demo_app.FuserCache().get(demo_app.request_config(settings, "gaussian", 3, 1, 0.5, 0.001, False))
        assert fuser.prior == "gaussian" and fuser.schedule.num_steps == 3
        assert "Gaussian prior, 3 steps" in demo_app.done_text(load_source_stub(), (32, 32), "gaussian",
                                                               3, 1, 0.5, 0.001, 1.0)
    finally:
        shutil.rmtree(settings.workdir)


def load_source_stub():
    from ddfm import load_source
    return load_source(np.zeros((32, 32), dtype=np.uint8), "ir")
