"""The one check every writer makes before it writes: where an output path really lands.

An output path is resolved (every symbolic link in it followed; a link that loops is a
one-line :class:`OutputPathError`, never a traceback) and refused when

- it lands on or inside one of the run's inputs (followed through links, and compared by
  device and inode, so a bind mount or a second name of an input folder is caught too);
- its final name is a symbolic link, a folder, a device, a FIFO or a socket: an atomic write
  renames a temporary file onto the name, which would replace the link (or, as root, the
  device node) instead of writing through it;
- a file stands where one of its folders must be.

``-`` means standard output for text outputs (:func:`is_stdout`).
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterable, Optional, Union

PathLike = Union[str, os.PathLike]
STDOUT = "-"


class OutputPathError(OSError, ValueError):
    """An output that cannot or must not be written; ``str()`` is one line naming the path and
    the fix. An OSError (so a writer's existing ``except OSError`` reports it as a failed write)
    and a ValueError (a bad argument)."""


def is_stdout(path: Optional[PathLike]) -> bool:
    """Whether ``path`` is ``-``, standard output."""
    return path is not None and os.fspath(path) == STDOUT


def _stat_reason(path: Path, exc: OSError, what: str) -> str:
    if exc.errno == errno.ELOOP:
        return f"{what} {path}: a symbolic link in it loops back on itself; fix or remove the link"
    if exc.errno == errno.ENOTDIR:
        return f"{what} {path}: a file stands where a folder of this path must be; move it or choose another path"
    return f"{what} {path}: cannot use this path ({exc.strerror}); choose another"


def real_path(path: PathLike, what: str = "output") -> Path:
    """``path`` absolute with every symbolic link followed. A loop, a broken link, or a file
    where a folder of the path must be, is an :class:`OutputPathError`; a part that does not
    exist yet is kept as written."""
    given = Path(os.fspath(path))
    real = Path(os.path.realpath(given))
    try:
        os.stat(real)
    except FileNotFoundError:
        pass  # not made yet: its nearest existing folder was resolved
    except OSError as exc:
        raise OutputPathError(_stat_reason(given, exc, what)) from None
    absolute = Path(os.path.abspath(given))
    for part in (absolute, *absolute.parents):
        if os.path.islink(part) and not os.path.exists(part):
            raise OutputPathError(f"{what} {given}: {part} is a broken symbolic link (to "
                                  f"{os.readlink(part)}); folders are never made through it, fix or "
                                  "remove the link")
    return real


def _identities(paths: Iterable[PathLike]) -> dict:
    """(device, inode) -> path of every input that exists."""
    found = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        found[(st.st_dev, st.st_ino)] = Path(path)
    return found


def landing_input(real: Path, inputs: Iterable[PathLike]) -> Optional[Path]:
    """The input that the resolved output path ``real`` is, or lies inside; None when it is
    clear of them all."""
    identities = _identities(inputs)
    if not identities:
        return None
    for candidate in (real, *real.parents):
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        hit = identities.get((st.st_dev, st.st_ino))
        if hit is not None:
            return hit
    return None


def special_kind(path: PathLike) -> Optional[str]:
    """What ``path`` is when it is not a plain file that a rename may replace (a symbolic link,
    folder, device, FIFO or socket), else None (a plain file, or nothing there)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # nothing there (or a loop above it, which real_path reports)
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def _refuse_special(path: Path, kind: str, what: str) -> OutputPathError:
    fix = {"a folder": "give a file name inside it",
           "a symbolic link": "outputs never replace a link or write through it; give the path of a plain file"}
    return OutputPathError(f"{what} {path}: is {kind}, not a plain file; "
                           f"{fix.get(kind, 'give a file path (or - for standard output)')}")


def _refuse_input(path: Path, real: Path, hit: Path, what: str) -> OutputPathError:
    via = "" if real == Path(os.path.abspath(path)) else f" (it resolves to {real})"
    where = "is" if real == Path(os.path.realpath(hit)) else "lies inside"
    return OutputPathError(f"{what} {path}: {where} the input {hit}{via}; inputs are never "
                           "written, choose a path outside them")


def check_output_path(path: PathLike, inputs: Iterable[PathLike] = (), what: str = "output") -> Path:
    """The resolved path to write the file ``path`` at; :class:`OutputPathError` when it lands
    on or inside an input, when its name is a link, folder, device, FIFO or socket, or when a
    link in it loops. Its folders need not exist yet."""
    given = Path(os.fspath(path))
    if is_stdout(given):
        raise OutputPathError(f"{what} -: standard output takes text reports only; give a file name")
    real = real_path(given.parent, what) / given.name
    kind = special_kind(given) or special_kind(real)
    if kind:
        raise _refuse_special(given, kind, what)
    hit = landing_input(real, inputs)
    if hit is not None:
        raise _refuse_input(given, real, hit, what)
    blocking = next((p for p in real.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputPathError(f"{what} {given}: {blocking} is a file, not a folder; move it or choose another path")
    return real


def check_output_folder(folder: PathLike, inputs: Iterable[PathLike] = (), what: str = "output folder") -> Path:
    """The resolved folder to write in; :class:`OutputPathError` when it (through any link)
    is or lies inside an input, is a file, or loops. It need not exist yet."""
    given = Path(os.fspath(folder))
    real = real_path(given, what)
    hit = landing_input(real, inputs)
    if hit is not None:
        raise _refuse_input(given, real, hit, what)
    blocking = next((p for p in (real, *real.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputPathError(f"{what} {given}: {blocking} is a file, not a folder; move it or choose another path")
    return real


def check_output_tree(save_dir: PathLike, subfolders: Iterable[str], inputs: Iterable[PathLike] = (),
                      what: str = "--save_dir") -> Path:
    """:func:`check_output_folder` for ``save_dir`` and each ``save_dir/<sub>`` (any of which may
    be a link: ``SAVE_DIR/recon`` linked into the input is refused, not taken for outputs).
    Returns the resolved ``save_dir``; nothing is created."""
    inputs = list(inputs)
    real = check_output_folder(save_dir, inputs, what)
    for name in subfolders:
        check_output_folder(Path(os.fspath(save_dir)) / name, inputs, what)
    return real


def ensure_replaceable(real: Path, shown: PathLike, what: str = "output") -> None:
    """Raise :class:`OutputPathError` when the resolved output ``real`` has become something a
    rename must not replace (checked again just before the rename)."""
    kind = special_kind(real)
    if kind:
        raise _refuse_special(Path(os.fspath(shown)), kind, what)


def nearest_writable_folder(real: Path) -> tuple[Path, bool]:
    """The nearest existing folder of ``real`` (which must be resolved) and whether this process
    may create files in it."""
    folder = real.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder, os.access(folder, os.W_OK | os.X_OK)
