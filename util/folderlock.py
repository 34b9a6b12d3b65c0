"""One writer per output folder: an advisory lock (``flock``) on ``<folder>/.ddfm.lock``.

The first run holds the lock until it ends (a killed process releases it with its file
descriptors: no stale lock survives a crash). A second run on the same folder is refused in one
line naming the folder and the first run's pid, before it cleans or writes anything. On a file
system without ``flock`` support the lock is not held (``FolderLock.held`` is False) and the run
goes on, as before.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import Union

from util.outputs import OutputPathError

LOCK_NAME = ".ddfm.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FolderBusyError(OutputPathError):
    """Another process holds the folder's lock; ``str()`` names the folder, its pid and the fix."""


class FolderLock:
    """``with FolderLock(save_dir, "--save_dir"):`` (or :meth:`acquire` / :meth:`release`).
    The folder is made when missing (take the lock after the setup that may fail, so a refused
    run leaves no folder behind)."""

    def __init__(self, folder: Union[str, os.PathLike], what: str = "--save_dir"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self.fd = None
        self.held = False

    def acquire(self) -> "FolderLock":
        """Take the lock; :class:`FolderBusyError` when another process (or another FolderLock
        of this one) holds it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for _ in range(5):  # the lock file may be unlinked by its holder between open and flock
                if self._try_once():
                    return self
        except OSError as exc:
            if isinstance(exc, OutputPathError):
                raise
            raise OutputPathError(f"{self.what} {self.folder}: cannot lock it ({exc.strerror}); "
                                  "choose a writable folder") from None
        raise FolderBusyError(f"{self.what} {self.folder}: its lock file {LOCK_NAME} keeps changing; "
                              "another run is starting there, choose another folder")

    def _try_once(self) -> bool:
        """Open and lock the lock file; True when held (or when locks are unsupported)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputPathError(f"{self.what} {self.folder}: {LOCK_NAME} there is not a plain "
                                      "file; remove it")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"another run (pid {holder})" if holder else "another run"
            raise FolderBusyError(f"{self.what} {self.folder}: {who} is writing here; wait for it to "
                                  f"finish, or choose another {self.what}") from None
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED or isinstance(exc, OutputPathError):
                os.close(fd)
                raise
            self.fd, self.held = fd, False  # no locking on this file system: go on unlocked
            return True
        if not _same_file(fd, self.path):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd, self.held = fd, True
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        if self.held and _same_file(self.fd, self.path):
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self.fd)
        self.fd, self.held = None, False

    def __enter__(self) -> "FolderLock":
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is still the file at ``path`` (not unlinked or replaced)."""
    try:
        st, now = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def lock_folder(folder: Union[str, os.PathLike], what: str = "--save_dir") -> FolderLock:
    """Take ``folder``'s lock and return it (release it with ``.release()``, or at exit)."""
    return FolderLock(folder, what).acquire()
