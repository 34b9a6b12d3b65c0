"""Atomic file writes: a temporary file in the target's folder, renamed into place only when
complete, so an interrupt or crash never leaves a partial output; and the check that an output
folder can be made at all."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Optional


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any
    exception (KeyboardInterrupt included) it is removed. The name is ``.<name>.<pid>.tmp``:
    known before the file exists, so even an interrupt inside ``open`` is cleaned up, and
    distinct per process. A run killed outright leaves such files; ``sample.py`` removes them
    on its next start."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8", newline="")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def file_in_the_way(folder: str | os.PathLike, subfolders: Iterable[str] = ()) -> Optional[Path]:
    """The first of ``folder``'s ancestors, ``folder`` itself and ``folder/<sub>`` that exists
    but is not a folder (so the output folder cannot be made there), or None."""
    folder = Path(folder)
    for path in [*reversed(folder.parents), folder, *(folder / name for name in subfolders)]:
        if path.exists() and not path.is_dir():
            return path
    return None
