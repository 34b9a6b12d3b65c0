"""The one output-path check (util.outputs) and the writers that go through it (util.fileio,
util.images): hostile outputs are built in a temporary folder (symbolic links into the
inputs, link loops, FIFOs, sockets); each is refused in one line naming the path, and no input
byte changes. Devices are checked on /dev/null by stat only: nothing is ever written to it."""
import hashlib
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

from util.fileio import (atomic_path, check_report_outputs, write_all_or_none, write_bytes_atomic,
                         write_text_atomic)
from util.images import encode_png, write_png_atomic
from util.outputs import (OutputPathError, check_output_folder, check_output_path, real_path,
                          special_kind)


def snapshot(root: Path) -> dict:
    """Every file under ``root`` (links not followed) -> its bytes' digest, and every link -> its target."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path)] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def inputs(tmp_path):
    """An input folder with two image files, and its snapshot."""
    root = tmp_path / "input"
    for side in ("ir", "vi"):
        (root / side).mkdir(parents=True)
        (root / side / "01.png").write_bytes(encode_png(np.full((8, 8), 7, np.uint8)))
    return root


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_link_into_the_input_is_refused_and_the_source_kept(tmp_path, inputs):
    before = snapshot(inputs)
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.csv").symlink_to(inputs / "ir" / "01.png")
    with pytest.raises(OutputPathError) as exc:
        write_text_atomic(out / "scores.csv", "a,b\n", inputs=[inputs], what="--csv")
    assert "--csv" in one_line(exc) and "symbolic link" in str(exc.value)
    assert snapshot(inputs) == before


def test_a_folder_link_into_the_input_is_refused(tmp_path, inputs):
    """SAVE_DIR/recon -> input/ir: the sources must not be taken for outputs or replaced."""
    before = snapshot(inputs)
    save = tmp_path / "save"
    save.mkdir()
    (save / "recon").symlink_to(inputs / "ir")
    with pytest.raises(OutputPathError) as exc:
        check_output_folder(save / "recon", [inputs], "--save_dir")
    assert "lies inside the input" in one_line(exc) and str(inputs) in str(exc.value)
    with pytest.raises(OutputPathError):
        write_png_atomic(save / "recon" / "01.png", np.zeros((8, 8), np.uint8), inputs=[inputs])
    assert snapshot(inputs) == before


def test_an_output_tree_with_a_subfolder_linked_into_the_input(tmp_path, inputs):
    from util.outputs import check_output_tree
    save = tmp_path / "save"
    assert check_output_tree(save, ("recon", "color"), [inputs]) == save
    assert not save.exists()  # nothing created
    save.mkdir()
    (save / "color").symlink_to(inputs / "vi")
    with pytest.raises(OutputPathError) as exc:
        check_output_tree(save, ("recon", "color"), [inputs])
    assert one_line(exc) == (f"--save_dir {save / 'color'}: lies inside the input {inputs} (it resolves to "
                             f"{inputs / 'vi'}); inputs are never written, choose a path outside them")


def test_the_input_itself_or_a_path_inside_it_is_refused(inputs):
    with pytest.raises(OutputPathError) as exc:
        check_output_path(inputs / "ir" / "01.png", [inputs / "ir" / "01.png"], "--json")
    assert ": is the input" in one_line(exc)
    with pytest.raises(OutputPathError) as exc:
        check_output_path(inputs / "new" / "deeper" / "x.csv", [inputs], "--csv")
    assert "lies inside the input" in one_line(exc)


def test_a_second_name_of_the_input_through_a_parent_link(tmp_path, inputs):
    """A link to the input's parent is a second path to the input."""
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path)
    with pytest.raises(OutputPathError):
        check_output_path(alias / "input" / "vi" / "x.md", [inputs], "--md")


def _bind_mount_works(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    run = subprocess.run(["unshare", "-m", "mount", "--bind", str(probe), str(probe)],
                         capture_output=True)
    return shutil.which("unshare") is not None and run.returncode == 0


def test_a_bind_mount_of_the_input_is_caught_by_inode(tmp_path, inputs):
    """A bind mount is a second name no link resolves: the check compares device and inode.
    It runs in a private mount namespace (root, or user namespaces), else it is skipped."""
    if shutil.which("unshare") is None or not _bind_mount_works(tmp_path):
        pytest.skip("no private mount namespace here (needs unshare -m and mount --bind)")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    code = ("import sys; from util.outputs import check_output_path, OutputPathError\n"
            "try: check_output_path(sys.argv[1], [sys.argv[2]], '--csv')\n"
            "except OutputPathError as exc: print(exc)")
    script = f'mount --bind "{inputs}" "{mirror}" && exec "{sys.executable}" -c "$0" "$1" "$2"'
    run = subprocess.run(["unshare", "-m", "sh", "-c", script, code, str(mirror / "ir" / "x.csv"), str(inputs)],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (f"--csv {mirror / 'ir' / 'x.csv'}: lies inside the input {inputs}; inputs "
                                  "are never written, choose a path outside them")


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "folder"])
def test_special_files_are_never_replaced(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
        sock.close()
    elif kind == "device":
        target = Path("/dev/null")  # only stat'ed: the check refuses before anything is opened
    else:
        target.mkdir()
    mode_before = os.lstat(target).st_mode
    with pytest.raises(OutputPathError) as exc:
        write_text_atomic(target, "x\n", what="--csv")
    expected = {"fifo": "FIFO", "socket": "socket", "device": "device", "folder": "folder"}[kind]
    assert expected in one_line(exc) and str(target) in str(exc.value)
    assert os.lstat(target).st_mode == mode_before
    assert not stat.S_ISREG(os.lstat(target).st_mode)


def test_dev_null_is_a_device():
    assert special_kind("/dev/null") == "a device"


@pytest.mark.parametrize("where", ["final", "parent"])
def test_a_link_loop_is_one_line(tmp_path, where):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    path = tmp_path / "loop" if where == "final" else tmp_path / "loop" / "out.csv"
    with pytest.raises(OutputPathError) as exc:
        check_output_path(path, [], "--csv")
    assert "--csv" in one_line(exc) and ("loops" in str(exc.value) or "symbolic link" in str(exc.value))
    with pytest.raises(OutputPathError) as exc:
        check_output_folder(tmp_path / "loop", [], "--save_dir")
    assert "loops back on itself" in one_line(exc)
    with pytest.raises(OutputPathError):
        real_path(tmp_path / "loop" / "a" / "b")


def test_a_file_where_a_folder_must_be(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OutputPathError) as exc:
        check_output_path(tmp_path / "plain" / "sub" / "x.csv", [], "--csv")
    assert "not a folder" in one_line(exc) or "folder of this path" in str(exc.value)


def test_a_linked_output_folder_outside_the_inputs_is_written_through(tmp_path, inputs):
    """A --save_dir that is a link to a folder elsewhere is fine: the file lands in the target."""
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "save").symlink_to(real)
    write_png_atomic(tmp_path / "save" / "recon" / "01.png", np.full((4, 4), 9, np.uint8), inputs=[inputs])
    assert (real / "recon" / "01.png").is_file()
    assert [p.name for p in (real / "recon").iterdir()] == ["01.png"]


def test_dash_writes_text_to_stdout(capsys, tmp_path):
    write_text_atomic("-", "a,b\n1,2\n")
    assert capsys.readouterr().out == "a,b\n1,2\n"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputPathError) as exc:
        write_bytes_atomic("-", b"\x89PNG")
    assert "standard output" in one_line(exc)


def test_atomic_path_leaves_nothing_on_refusal(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OutputPathError):
        with atomic_path(tmp_path / "pipe"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_report_outputs_are_checked_before_any_work(tmp_path, inputs):
    ok = check_report_outputs({"--csv": tmp_path / "r.csv", "--json": "-", "--md": None}, [inputs])
    assert ok == {"--csv": tmp_path / "r.csv", "--json": "-"}
    with pytest.raises(OutputPathError) as exc:
        check_report_outputs({"--csv": tmp_path / "r", "--json": tmp_path / "r"}, [inputs])
    assert "--json" in one_line(exc) and "--csv" in str(exc.value)
    with pytest.raises(OutputPathError) as exc:
        check_report_outputs({"--csv": "-", "--md": "-"})
    assert "standard output" in one_line(exc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]  # nothing created


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any folder mode")
def test_report_outputs_in_a_read_only_folder_are_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputPathError) as exc:
            check_report_outputs({"--csv": locked / "sub" / "r.csv"})
        assert "permission denied" in one_line(exc) and str(locked) in str(exc.value)
    finally:
        locked.chmod(0o700)


def test_a_folder_this_process_cannot_write_is_refused(tmp_path, monkeypatch):
    """The same refusal as a read-only folder for a non-root user (os.access says no)."""
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(OutputPathError) as exc:
        check_report_outputs({"--md": tmp_path / "new" / "r.md"})
    assert f"cannot write in {tmp_path} (permission denied)" in one_line(exc)


def test_write_all_or_none_publishes_every_file(tmp_path, capsys):
    write_all_or_none({"--csv": (tmp_path / "a.csv", "x\n"), "--json": (tmp_path / "sub" / "a.json", "{}"),
                       "--md": ("-", "| a |\n")})
    assert (tmp_path / "a.csv").read_text() == "x\n" and (tmp_path / "sub" / "a.json").read_text() == "{}"
    assert capsys.readouterr().out == "| a |\n"
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_write_all_or_none_changes_nothing_when_one_write_fails(tmp_path, monkeypatch):
    (tmp_path / "a.csv").write_text("old csv\n")
    (tmp_path / "a.json").write_text("old json\n")
    import util.fileio as fileio
    real_write = fileio._write_synced

    def disk_full_on_json(path, data):
        if path.name.startswith(".a.json."):
            raise OSError(28, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(fileio, "_write_synced", disk_full_on_json)
    with pytest.raises(OutputPathError) as exc:
        write_all_or_none({"--csv": (tmp_path / "a.csv", "new\n"), "--json": (tmp_path / "a.json", "new\n")})
    assert "nothing was written" in one_line(exc) and "No space left" in str(exc.value)
    assert (tmp_path / "a.csv").read_text() == "old csv\n"
    assert (tmp_path / "a.json").read_text() == "old json\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.json"]


def test_a_pairs_images_are_published_together_or_not_at_all(tmp_path, monkeypatch):
    """recon and color of one pair as PNG bytes: a full disk on the second keeps the first out
    too, so a pair reported as failed leaves no output."""
    import util.fileio as fileio
    grey = np.full((8, 8), 50, np.uint8)
    outputs = {"recon": (tmp_path / "recon" / "01.png", encode_png(grey)),
               "color": (tmp_path / "color" / "01.png", encode_png(np.stack([grey] * 3, axis=2)))}
    real_write = fileio._write_synced

    def disk_full_on_color(path, data):
        if path.parent.name == "color":
            raise OSError(28, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(fileio, "_write_synced", disk_full_on_color)
    with pytest.raises(OSError):  # OutputPathError is an OSError: a writer's except OSError reports it
        write_all_or_none(outputs)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    monkeypatch.setattr(fileio, "_write_synced", real_write)
    write_all_or_none(outputs)
    from util.images import read_gray
    assert np.array_equal(read_gray(tmp_path / "recon" / "01.png"), grey.astype(np.float32))


def test_no_folder_is_made_through_a_broken_link(tmp_path):
    save = tmp_path / "save"
    save.mkdir()
    (save / "recon").symlink_to(tmp_path / "gone" / "deeper")
    with pytest.raises(OutputPathError) as exc:
        write_png_atomic(save / "recon" / "01.png", np.zeros((4, 4), np.uint8))
    assert "is a broken symbolic link" in one_line(exc) and str(save / "recon") in str(exc.value)
    assert not (tmp_path / "gone").exists()
