"""Atomic file writes: a temporary file in the target's folder, renamed into place only when
complete, so an interrupt or crash never leaves a partial output; the check that an output
folder can be made at all; reports written all or none; and the removal of temporaries whose
writer is gone.

Every write goes through :func:`util.outputs.check_output_path`: a path that lands on or inside
an input, or whose name is a symbolic link, device, FIFO or socket, is refused in one line.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterable, Mapping, Optional, Union

from util.outputs import (OutputPathError, check_output_path, ensure_replaceable, is_stdout,
                          nearest_writable_folder)

PathLike = Union[str, os.PathLike]
# the temporaries this project makes: ".<name>.<pid>.tmp", and ".<name>.<pid>.old.tmp" for a
# folder being replaced; the pid says whose they are
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:\.old)?\.tmp$")


def temporary_name(name: str, pid: Optional[int] = None, old: bool = False) -> str:
    """The hidden name of ``name``'s temporary in this process (``pid``: another's)."""
    return f".{name}.{os.getpid() if pid is None else pid}{'.old' if old else ''}.tmp"


@contextlib.contextmanager
def atomic_path(path: PathLike, inputs: Iterable[PathLike] = (), what: str = "output"):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any
    exception (KeyboardInterrupt included) it is removed. The path is checked first
    (:func:`util.outputs.check_output_path`, with the run's ``inputs``) and the temporary is
    made in the folder it resolves to. The name is ``.<name>.<pid>.tmp``: known before the file
    exists, so even an interrupt inside ``open`` is cleaned up, and distinct per process. A run
    killed outright leaves such files; :func:`remove_stale_temporaries` removes them once
    their process is gone."""
    real = check_output_path(path, inputs, what)
    real.parent.mkdir(parents=True, exist_ok=True)
    tmp = real.with_name(temporary_name(real.name))
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        ensure_replaceable(real, path, what)
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: PathLike, text: str, inputs: Iterable[PathLike] = (), what: str = "output") -> None:
    """Write ``text`` as UTF-8 atomically; ``-`` writes it to standard output."""
    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_path(path, inputs, what) as tmp:
        Path(tmp).write_text(text, encoding="utf-8", newline="")


def write_bytes_atomic(path: PathLike, data: bytes, inputs: Iterable[PathLike] = (), what: str = "output") -> None:
    with atomic_path(path, inputs, what) as tmp:
        Path(tmp).write_bytes(data)


def file_in_the_way(folder: PathLike, subfolders: Iterable[str] = ()) -> Optional[Path]:
    """The first of ``folder``'s ancestors, ``folder`` itself and ``folder/<sub>`` that exists
    but is not a folder (so the output folder cannot be made there), or None."""
    folder = Path(folder)
    for path in [*reversed(folder.parents), folder, *(folder / name for name in subfolders)]:
        if path.exists() and not path.is_dir():
            return path
    return None


# --------------------------------------------------------------------------------------------
# Reports: every output checked before any work, written all or none
# --------------------------------------------------------------------------------------------

def check_report_outputs(outputs: Mapping[str, Optional[PathLike]], inputs: Iterable[PathLike] = ()) -> dict:
    """Check, before any work starts, that every report output can be written: ``outputs``
    maps a flag (``"--csv"``) to its path (None: not asked for). Returns flag -> resolved path
    (``-`` kept as is). :class:`OutputPathError` (one line, nothing created) when a path lands
    on or inside an input, is a link, folder, device, FIFO or socket, when two outputs are one
    file or both ``-``, or when its folder cannot be written."""
    inputs = list(inputs)
    resolved, seen = {}, {}
    for flag, path in outputs.items():
        if path is None:
            continue
        key = "-" if is_stdout(path) else check_output_path(path, inputs, flag)
        if key in seen:
            same = "standard output" if key == "-" else "the same file"
            raise OutputPathError(f"{flag} {path}: {seen[key]} writes to {same}; give each output its own path")
        seen[key] = flag
        if key != "-":
            folder, writable = nearest_writable_folder(key)
            if not writable:
                raise OutputPathError(f"{flag} {path}: cannot write in {folder} (permission denied); "
                                      "choose a writable folder")
        resolved[flag] = key
    return resolved


def write_all_or_none(outputs: Mapping[str, tuple], inputs: Iterable[PathLike] = ()) -> None:
    """Write several outputs so that either all of them are published or none is changed.
    ``outputs``: flag -> (path, text or bytes). Every file is checked, then written to its
    temporary; only when all are complete are they renamed into place (``-`` goes to standard
    output last). A failure (full disk, permission) removes every temporary and is one
    :class:`OutputPathError` line saying that nothing was written."""
    real = check_report_outputs({flag: path for flag, (path, _) in outputs.items()}, inputs)
    temporaries = {}
    try:
        for flag, target in real.items():
            if target == "-":
                continue
            data = outputs[flag][1]
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporaries[flag] = target.with_name(temporary_name(target.name))
            _write_synced(tmp, data.encode("utf-8") if isinstance(data, str) else data)
        for flag, tmp in temporaries.items():
            ensure_replaceable(real[flag], outputs[flag][0], flag)
        for flag, tmp in list(temporaries.items()):
            os.replace(tmp, real[flag])
            del temporaries[flag]
    except OutputPathError:
        raise
    except OSError as exc:
        path = getattr(exc, "filename", None) or "?"
        raise OutputPathError(f"cannot write {path} ({exc.strerror}); nothing was written: free "
                              "space or choose another folder") from None
    finally:
        for tmp in temporaries.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    for flag, target in real.items():
        if target == "-":
            write_text_atomic("-", outputs[flag][1])


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------------------------
# Temporaries left by a run killed outright
# --------------------------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine); a process of another user counts."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def stale_temporaries(folder: PathLike) -> list[Path]:
    """The temporaries in ``folder`` (named by :func:`temporary_name`) whose process is gone;
    a running writer's, this process's included, are never listed."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    stale = []
    for entry in sorted(folder.iterdir()):
        match = TEMPORARY_NAME.match(entry.name)
        if match and not pid_alive(int(match["pid"])):
            stale.append(entry)
    return stale


def remove_stale_temporaries(folders: Iterable[PathLike], subfolders: bool = False) -> list[Path]:
    """Remove the temporaries (files, or folders of frames) that a run killed outright left in
    ``folders`` (with ``subfolders``: in their plain subfolders too), only those whose process
    is gone: another run still writing keeps its own. Links are never followed or removed
    through. Returns what was removed."""
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir() or folder.is_symlink():
            continue
        search = [folder]
        if subfolders:
            search += [p for p in sorted(folder.iterdir())
                       if p.is_dir() and not p.is_symlink() and not TEMPORARY_NAME.match(p.name)]
        for where in search:
            for entry in stale_temporaries(where):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
                removed.append(entry)
    return removed
