"""One writer per output folder (util.folderlock) and the clean-up of temporaries whose writer
is gone (util.fileio.remove_stale_temporaries): the other run is a real second process."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from util.fileio import remove_stale_temporaries, stale_temporaries, temporary_name
from util.folderlock import LOCK_NAME, FolderBusyError, FolderLock, lock_folder
from util.outputs import OutputPathError

HOLDER = textwrap.dedent("""
    import sys, time
    from util.folderlock import lock_folder
    from util.fileio import atomic_path
    with lock_folder(sys.argv[1]):
        with atomic_path(sys.argv[1] + "/recon/01.png") as tmp:
            open(tmp, "w").write("frame")
            print("holding", flush=True)
            sys.stdin.readline()  # the test says when to finish
""")


@pytest.fixture
def other_run(tmp_path):
    """A second process that holds tmp_path/save's lock and has a temporary open in it."""
    save = tmp_path / "save"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(save)], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "holding"
    yield save, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_writer_is_refused_in_one_line(other_run):
    save, proc = other_run
    with pytest.raises(FolderBusyError) as exc:
        lock_folder(save, "--save_dir")
    assert str(exc.value) == (f"--save_dir {save}: another run (pid {proc.pid}) is writing here; wait "
                              "for it to finish, or choose another --save_dir")


def test_the_first_run_finishes_complete_when_a_second_starts(other_run):
    """The second run neither cleans the first's temporary nor writes; the first publishes."""
    save, proc = other_run
    with pytest.raises(FolderBusyError):
        lock_folder(save)
    assert remove_stale_temporaries([save / "recon"]) == []  # its writer is alive
    proc.communicate("done\n", timeout=60)
    assert proc.returncode == 0
    assert (save / "recon" / "01.png").read_text() == "frame"
    assert sorted(p.name for p in save.rglob("*")) == ["01.png", "recon"]  # lock file removed


def test_a_killed_holder_leaves_no_lock_behind(other_run):
    save, proc = other_run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with lock_folder(save) as lock:
        assert lock.held and (save / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        removed = remove_stale_temporaries([save / "recon"])
    assert [p.name for p in removed] == [temporary_name("01.png", proc.pid)]
    assert not (save / LOCK_NAME).exists() and sorted(p.name for p in save.rglob("*")) == ["recon"]


def test_the_same_process_may_not_lock_twice(tmp_path):
    with FolderLock(tmp_path / "save"):
        with pytest.raises(FolderBusyError) as exc:
            FolderLock(tmp_path / "save").acquire()
        assert f"(pid {os.getpid()})" in str(exc.value)


def test_a_lock_file_that_is_a_link_is_refused(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    save = tmp_path / "save"
    save.mkdir()
    (save / LOCK_NAME).symlink_to(target)
    with pytest.raises(OutputPathError) as exc:
        lock_folder(save)
    assert "\n" not in str(exc.value) and str(save) in str(exc.value)
    assert target.read_text() == "keep me" and (save / LOCK_NAME).is_symlink()


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    gone, alive = dead_pid(), os.getpid()
    recon, progress = tmp_path / "recon", tmp_path / "progress"
    (progress / "done").mkdir(parents=True)
    recon.mkdir()
    (recon / temporary_name("a.png", gone)).write_text("half")
    (recon / temporary_name("b.png", alive)).write_text("being written")
    (recon / "c.png").write_text("output")
    (recon / ".notes.tmp").write_text("not ours: no pid")
    frames = progress / temporary_name("d", gone)
    frames.mkdir()
    (frames / "x_0001.png").write_text("frame")
    (progress / temporary_name("e", gone, old=True)).mkdir()
    (progress / "done" / temporary_name("x_0002.png", gone)).write_text("half")
    (progress / "done" / "x_0001.png").write_text("frame")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.png").write_text("source")
    (recon / temporary_name("link.png", gone)).symlink_to(precious)

    assert [p.name for p in stale_temporaries(recon)] == [temporary_name("a.png", gone),
                                                         temporary_name("link.png", gone)]
    removed = remove_stale_temporaries([recon, progress, tmp_path / "missing"], subfolders=True)
    assert len(removed) == 5
    assert sorted(p.name for p in recon.iterdir()) == sorted([temporary_name("b.png", alive), "c.png", ".notes.tmp"])
    assert sorted(p.name for p in progress.rglob("*")) == ["done", "x_0001.png"]
    assert (precious / "keep.png").read_text() == "source"  # a link is removed, never followed


def test_a_linked_output_folder_is_not_searched(tmp_path):
    gone = dead_pid()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / temporary_name("a.png", gone)).write_text("someone else's")
    (tmp_path / "recon").symlink_to(elsewhere)
    assert remove_stale_temporaries([tmp_path / "recon"]) == []
    assert (elsewhere / temporary_name("a.png", gone)).exists()


def test_temporary_names_parse_back(tmp_path):
    from util.fileio import TEMPORARY_NAME
    for name, old in (("01.png", False), ("a.b c.png", False), ("stem", True)):
        match = TEMPORARY_NAME.match(temporary_name(name, 4242, old))
        assert match["name"] == name and int(match["pid"]) == 4242
    assert Path(temporary_name("x")).name == f".x.{os.getpid()}.tmp"
