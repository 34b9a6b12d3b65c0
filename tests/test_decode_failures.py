"""Running out of memory while decoding one source is that pair's failure, in one line; the
good pairs before and after it are fused (sample.py decodes inside its per-pair handling, and
util.images turns the MemoryError into an ImageError naming the file)."""
import hashlib

import numpy as np
from PIL import Image, ImageFile

import sample
from conftest import REPO


def test_out_of_memory_decoding_one_file_fails_that_pair_only(tmp_path, capsys, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(3)
    for stem in ("a", "b", "c"):
        for side in ("ir", "vi"):
            (inp / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(inp / side / f"{stem}.png")
    before = {p: hashlib.sha256(p.read_bytes()).digest() for p in inp.rglob("*.png")}
    real_load = ImageFile.ImageFile.load

    def load(self):
        if getattr(self, "filename", "").endswith("vi/b.png"):
            raise MemoryError  # as numpy or Pillow raise it for a huge image
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    rc = sample.main(["--input", str(inp), "--save_dir", str(out), "--prior", "none", "--steps", "2",
                      "--diffusion_config", str(REPO / "configs" / "diffusion_config.yaml"), "--quiet"])
    text = "".join(capsys.readouterr())
    assert rc == 1 and "Traceback" not in text
    failed = [line for line in text.splitlines() if line.startswith("failed: ")]
    assert failed == [f"failed: {inp / 'vi' / 'b.png'}: 64x64 px, not enough memory to decode it; use a "
                      "smaller image or free memory"]
    assert sorted(p.name for p in (out / "recon").iterdir()) == ["a.png", "c.png"]
    assert {p: hashlib.sha256(p.read_bytes()).digest() for p in inp.rglob("*.png")} == before
