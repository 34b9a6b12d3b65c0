"""A compile cache that cannot be written is refused at setup in one line
(ddfm.speed.configure_compile_cache), not by Inductor after compiling for a while. A truly
read-only folder is made with a read-only bind mount in a private mount namespace (skipped
where there is none) and, for a non-root user, with chmod."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from ddfm.speed import check_compile_cache_writable, configure_compile_cache

CHECK = ("import sys\nfrom ddfm.speed import configure_compile_cache\n"
         "try: configure_compile_cache(sys.argv[1])\nexcept ValueError as exc: print(exc)\n"
         "else: print('accepted')")


def _namespace_works(tmp_path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    run = subprocess.run(["unshare", "-m", "mount", "--bind", "-o", "ro", str(probe), str(probe)],
                         capture_output=True)
    return run.returncode == 0


def test_a_read_only_mount_is_refused_at_setup(tmp_path):
    if not _namespace_works(tmp_path):
        pytest.skip("no private mount namespace here (needs unshare -m and mount --bind)")
    cache = tmp_path / "cache"
    (cache / "fxgraph").mkdir(parents=True)
    script = (f'mount --bind "{cache}" "{cache}" && mount -o remount,bind,ro "{cache}" && '
              f'exec "{sys.executable}" -c "$0" "$1"')
    run = subprocess.run(["unshare", "-m", "sh", "-c", script, CHECK, str(cache)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (f"compile cache {cache.resolve()}: not writable (Read-only file system); give "
                                  "a writable folder with --compile_cache, or run without --compile")
    assert os.listdir(cache) == ["fxgraph"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any folder mode")
def test_a_read_only_folder_is_refused_at_setup(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        with pytest.raises(ValueError) as exc:
            configure_compile_cache(cache)
        assert "not writable (Permission denied)" in str(exc.value)
    finally:
        cache.chmod(0o700)


def test_a_read_only_folder_inside_the_cache_is_refused(tmp_path, monkeypatch):
    """Inductor writes into the cache's subfolders; one this process cannot write is named."""
    cache = tmp_path / "cache"
    (cache / "aotautograd" / "ab").mkdir(parents=True)
    (cache / "fxgraph").mkdir()
    blocked = cache / "aotautograd" / "ab"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: path != blocked and real_access(path, mode))
    with pytest.raises(ValueError) as exc:
        check_compile_cache_writable(cache)
    assert str(exc.value) == (f"compile cache {cache}: {blocked} inside it is not writable; make it "
                              "writable, give another folder with --compile_cache, or run without --compile")


def test_a_writable_cache_is_left_as_it_was(tmp_path):
    cache = tmp_path / "cache"
    (cache / "fxgraph").mkdir(parents=True)
    check_compile_cache_writable(cache)
    assert os.listdir(cache) == ["fxgraph"]  # the probe file is gone
