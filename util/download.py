"""Resumable, verified downloads: the diffusion checkpoint and optional data files.

Guarantees of :func:`download`:

* bytes go to ``DEST.part`` in the destination folder; ``DEST`` itself appears only through
  ``os.replace`` once the file is complete and its size verified, so ``DEST`` is never partial;
* an existing ``DEST.part`` is resumed with an HTTP ``Range: bytes=N-`` request (a server that
  answers ``200`` instead of ``206`` restarts from zero; ``416`` means the part is already
  whole, or is stale and is discarded);
* a connection cut mid-transfer is retried from where it stopped (``retries`` times);
* the size is checked against ``expected_size`` and against the total the server announced
  (``Content-Length`` / ``Content-Range``); a short file is refused and its ``.part`` kept;
* every failure is a :class:`DownloadError` whose message is one line naming the URL or the path
  and the fix.

Standard library and tqdm only.
"""
from __future__ import annotations

import functools
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from tqdm import tqdm

CHECKPOINT_NAME = "256x256_diffusion_uncond.pt"
CHECKPOINT_URL = ("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
                  + CHECKPOINT_NAME)
CHECKPOINT_SIZE_TEXT = "about 2.2 GB"
# The sample.py flag that answers "yes" to the download question (wired by sample.py).
DOWNLOAD_FLAG = "--download_checkpoint"

# Seconds to wait before retry k (k = 1, 2, ...): RETRY_BACKOFF_S * 2**(k-1), at most 30 s.
# Tests set it to 0.
RETRY_BACKOFF_S = 1.0
_USER_AGENT = "ddfm-download/1.0 (+python-urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.I)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.I)


class DownloadError(Exception):
    """A download that could not be completed; the message is one line with the fix."""


class _Transient(Exception):
    """A failure worth retrying (cut connection, timeout, 5xx, short body)."""


class _State:
    """What is known across attempts: the size the complete file must have."""

    def __init__(self, total: int | None):
        self.total = total


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _reason(exc: BaseException) -> str:
    """Short human reason for a socket-level error: 'Connection refused', not a repr."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        inner = exc.reason
        if isinstance(inner, BaseException):
            return _reason(inner)
        return _one_line(inner)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(exc.strerror)
    text = _one_line(exc)
    return text or exc.__class__.__name__


def _is_transient_connect_error(exc: BaseException) -> bool:
    inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(inner, (TimeoutError, socket.timeout, ConnectionResetError,
                              ConnectionAbortedError, BrokenPipeError,
                              http.client.HTTPException))


def _size_text(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def download(url: str, dest: str | os.PathLike, *, expected_size: int | None = None,
             progress: bool = True, timeout: float = 30, chunk_size: int = 1 << 20,
             retries: int = 3) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``; return ``dest`` as a :class:`Path`.

    Resumes an existing ``.part``, retries a cut connection up to ``retries`` times, verifies the
    size and renames only when complete. Raises :class:`DownloadError` (one line) on failure; a
    short ``.part`` is kept so that running again resumes it.
    """
    dest = Path(dest)
    part = _part_path(dest)
    split = urllib.parse.urlsplit(url)
    if split.scheme.lower() not in ("http", "https") or not split.hostname:
        raise DownloadError(f"invalid URL {url!r} for {dest}: give an http:// or https:// URL")
    by_hand = f"download {url} by hand to {dest}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create folder {dest.parent}: {_reason(exc)}; "
                            "choose a writable location") from None
    if dest.is_dir():
        raise DownloadError(f"{dest} is a folder; remove it or choose another file name")

    state = _State(expected_size)  # state.total: the size the whole file must have, once known
    bar = tqdm(total=expected_size, initial=0, unit="B", unit_scale=True, unit_divisor=1024,
               desc=dest.name, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        _fetch_with_retries(url, dest, part, state, expected_size, timeout, chunk_size, retries, bar)
    finally:
        bar.close()

    final = _file_size(part)
    if state.total is not None and final != state.total:  # pragma: no cover - defensive
        raise DownloadError(f"size check failed for {url}: {_size_text(final)} bytes, expected "
                            f"{_size_text(state.total)}{_kept(part)}; or {by_hand}")
    try:
        os.replace(part, dest)
    except OSError as exc:
        raise DownloadError(f"cannot rename {part} to {dest}: {_reason(exc)}; "
                            f"rename it by hand") from None
    return dest


def _kept(part: Path) -> str:
    size = _file_size(part)
    if size:
        return (f"; the partial file {part} ({_size_text(size)} bytes) is kept: "
                "run again to resume")
    return ""


def _fetch_with_retries(url: str, dest: Path, part: Path, state: _State, expected_size: int | None,
                        timeout: float, chunk_size: int, retries: int, bar: tqdm) -> None:
    """Fetch into ``part`` until it is whole, resuming after each transient failure."""
    host = urllib.parse.urlsplit(url).hostname
    by_hand = f"download {url} by hand to {dest}"
    failures = 0
    last_problem = ""
    kept = functools.partial(_kept, part)
    while True:
        offset = _file_size(part)
        if state.total is not None and offset > state.total:
            _unlink(part)  # stale part from another file: start over
            offset = 0
        if expected_size and offset == expected_size:
            break  # already whole: no network needed
        bar.reset(total=state.total)
        bar.update(offset)
        try:
            _fetch(url, part, offset, state, expected_size, timeout, chunk_size, bar, dest)
            break
        except _Transient as exc:
            last_problem = str(exc)
            failures += 1
            if failures > retries:
                got = _file_size(part)
                if state.total is not None and got < state.total:
                    raise DownloadError(
                        f"incomplete download of {url}: short file, {_size_text(got)} of "
                        f"{_size_text(state.total)} bytes after {failures} attempt(s) "
                        f"(last: {last_problem}){kept()}; or {by_hand}") from None
                raise DownloadError(
                    f"download of {url} failed after {failures} attempt(s) "
                    f"(last: {last_problem}){kept()}; or {by_hand}") from None
            time.sleep(min(30.0, RETRY_BACKOFF_S * 2 ** (failures - 1)))
        except urllib.error.URLError as exc:  # cannot connect at all: do not retry
            raise DownloadError(f"cannot reach {host}: {_reason(exc)}; {by_hand}"
                                f"{kept()}") from None


def _parse_total_200(resp) -> int | None:
    length = resp.headers.get("Content-Length")
    try:
        return int(length) if length is not None else None
    except ValueError:
        return None


def _fetch(url: str, part: Path, offset: int, state: _State, expected_size: int | None,
           timeout: float, chunk_size: int, bar: tqdm, dest: Path) -> None:
    """One request, appending to ``part``. Returns when ``part`` is complete; raises
    :class:`_Transient` for a failure worth retrying, :class:`DownloadError` for a fatal one,
    and ``URLError`` when the host cannot be reached at all."""
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    by_hand = f"download {url} by hand to {dest}"
    try:
        request = urllib.request.Request(url, headers=headers)
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        _http_error(exc, url, part, offset, state, expected_size, dest, by_hand)
        return  # HTTP 416 for a part that already holds the whole file
    except urllib.error.URLError as exc:
        if _is_transient_connect_error(exc):
            raise _Transient(_reason(exc)) from None
        raise
    except (http.client.HTTPException, TimeoutError, socket.timeout, ConnectionError) as exc:
        raise _Transient(_reason(exc)) from None
    except ValueError as exc:
        raise DownloadError(f"invalid URL {url!r}: {_one_line(exc)}; give an http(s) URL") from None

    with resp:
        offset, end = _response_range(resp, url, part, offset, state, expected_size, bar, dest)
        _copy_body(resp, part, offset, end, chunk_size, bar)
    _check_complete(url, part, state, end, expected_size)


def _http_error(exc, url: str, part: Path, offset: int, state: _State, expected_size: int | None,
                dest: Path, by_hand: str) -> None:
    """An HTTP error status: return when a 416 means the part is already whole, else raise
    :class:`_Transient` or :class:`DownloadError`."""
    code = exc.code
    content_range = exc.headers.get("Content-Range", "") if exc.headers else ""
    exc.close()
    if code == 416 and offset:
        m = _UNSATISFIED_RANGE.search(content_range)
        server_total = int(m.group(1)) if m else None
        if (server_total is not None and expected_size is not None
                and server_total != expected_size):
            raise DownloadError(
                f"{url} is {server_total:,} bytes on the server but {expected_size:,} "
                f"were expected (short or different file); nothing was kept as {dest}; "
                "check the URL")
        if server_total is not None and server_total == offset and (
                state.total is None or state.total == server_total):
            state.total = server_total
            return  # the part already holds the whole file
        if (server_total is not None and state.total is not None
                and server_total < state.total):
            raise DownloadError(
                f"incomplete download of {url}: short file, the server announced "
                f"{state.total:,} bytes but now reports {server_total:,}; the partial file "
                f"{part} is kept: delete it to start over, or {by_hand}")
        _unlink(part)  # part is larger than the file, or the file changed: start over
        raise _Transient(f"server refused to resume at byte {offset:,} (HTTP 416); "
                         "restarting from zero")
    if code in (408, 429) or code >= 500:
        raise _Transient(f"HTTP {code} {_one_line(exc.reason)}")
    raise DownloadError(f"HTTP {code} {_one_line(exc.reason)} for {url}; check the URL, "
                        f"or {by_hand}") from None


def _response_range(resp, url: str, part: Path, offset: int, state: _State,
                    expected_size: int | None, bar: tqdm, dest: Path) -> tuple[int, int | None]:
    """Check the response's status and announced size against the part and the expected
    size; return (the offset its body starts at, the byte its body ends at or None)."""
    status = getattr(resp, "status", None) or resp.getcode()
    length = _parse_total_200(resp)  # bytes in this response body, when announced
    if status == 206:
        m = _CONTENT_RANGE.search(resp.headers.get("Content-Range", ""))
        start = int(m.group(1)) if m else offset
        server_total = int(m.group(3)) if m and m.group(3) != "*" else None
        if start != offset:
            _unlink(part)
            raise _Transient(f"server resumed at byte {start:,} instead of {offset:,}; "
                             "restarting from zero")
    else:
        start = 0
        server_total = length
        if offset:
            offset = 0  # the server ignored Range: the body is the whole file again
            bar.reset(total=server_total)

    if server_total is not None:
        if expected_size is not None and server_total != expected_size:
            raise DownloadError(
                f"{url} is {server_total:,} bytes on the server but {expected_size:,} "
                f"were expected (short or different file); nothing was kept as {dest}; "
                "check the URL")
        if state.total is not None and server_total != state.total and status == 206:
            # The file changed on the server since the part was started: start over.
            previous, state.total = state.total, server_total
            _unlink(part)
            raise _Transient(f"server size changed from {previous:,} to "
                             f"{server_total:,} bytes; restarting from zero")
        # (A 200 body is the whole file, written from zero: its size simply becomes the target.)
        state.total = server_total
        bar.total = server_total
        bar.refresh()
    end = start + length if length is not None else state.total
    return offset, end


def _copy_body(resp, part: Path, offset: int, end: int | None, chunk_size: int, bar: tqdm) -> None:
    """Append the response body to ``part`` (from ``offset``; truncating when 0), synced."""
    try:
        fh = open(part, "ab" if offset else "wb")
    except OSError as exc:
        raise DownloadError(f"cannot write {part}: {_reason(exc)}; choose a writable "
                            "location with enough free space") from None
    with fh:
        pos = offset
        try:
            while True:
                if end is not None and pos >= end:
                    break
                want = chunk_size if end is None else min(chunk_size, end - pos)
                try:
                    chunk = resp.read(want)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(f"connection lost at byte {pos:,}: {_reason(exc)}") \
                        from None
                if not chunk:
                    break
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise DownloadError(
                        f"cannot write {part}: {_reason(exc)}; free disk space and run "
                        "again to resume") from None
                pos += len(chunk)
                bar.update(len(chunk))
        finally:
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except OSError:
                pass


def _check_complete(url: str, part: Path, state: _State, end: int | None,
                    expected_size: int | None) -> None:
    """Raise unless ``part`` now holds exactly the whole file."""
    got = _file_size(part)
    target = state.total if state.total is not None else end
    if target is not None and got < target:
        raise _Transient(f"connection closed at byte {got:,} of {target:,}")
    if target is not None and got > target:
        _unlink(part)
        raise _Transient(f"received {got:,} bytes, more than the {target:,} announced; "
                         "restarting from zero")
    if expected_size is not None and got != expected_size:
        # Only reachable when the server announced no size.
        if got > expected_size:
            _unlink(part)
            raise DownloadError(f"{url} sent {got:,} bytes but {expected_size:,} were expected "
                                "(different file); check the URL")
        raise _Transient(f"stream ended at byte {got:,} of {expected_size:,}")


# --------------------------------------------------------------------------------- checkpoint

def _ask(question: str) -> str:
    """Print ``question`` on stderr and read one answer line from stdin ('' on EOF)."""
    sys.stderr.write(question + " ")
    sys.stderr.flush()
    try:
        line = sys.stdin.readline()
    except (OSError, ValueError):
        return ""
    return line.strip()


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def ensure_checkpoint(path: str | os.PathLike, url: str = CHECKPOINT_URL, *,
                      assume_yes: bool = False, interactive: bool | None = None,
                      expected_size: int | None = None, progress: bool = True) -> Path:
    """Return ``path`` if it exists; otherwise download it from ``url`` (after asking on a
    terminal, or directly when ``assume_yes``). Raises :class:`DownloadError` with one line
    naming the path and how to get the file when declined, non-interactive, or failed."""
    path = Path(path)
    if path.exists():
        return path
    how = (f"get it with `python sample.py {DOWNLOAD_FLAG}` or download {url} by hand "
           f"to {path}")
    if not assume_yes:
        if interactive is None:
            interactive = _stdin_is_tty()
        if not interactive:
            raise DownloadError(f"checkpoint {path} not found; {how}")
        part = _part_path(path)
        resume = _file_size(part)
        note = f" (resuming {resume:,} bytes already in {part.name})" if resume else ""
        answer = _ask(f"Download {CHECKPOINT_NAME} ({CHECKPOINT_SIZE_TEXT}) from {url} to "
                      f"{path}{note}? [y/N]")
        if answer.lower() not in ("y", "yes"):
            raise DownloadError(f"checkpoint {path} not found and download declined; {how}")
    else:
        print(f"downloading {url} to {path}", file=sys.stderr)
    return download(url, path, expected_size=expected_size, progress=progress)


# ------------------------------------------------------------------------------- file lists

def _safe_relative(name: str) -> Path | None:
    """``name`` as a relative path inside the destination folder, or None if it escapes."""
    p = Path(name)
    if not name or p.is_absolute() or ".." in p.parts or name.startswith(("/", "\\")):
        return None
    return p


def download_files(base_url: str, names: Iterable[str], dest_dir: str | os.PathLike,
                   sizes: Mapping[str, int] | Sequence[int | None] | None = None, *,
                   progress: bool = True, timeout: float = 30, retries: int = 3,
                   ) -> tuple[list[Path], list[tuple[str, str]]]:
    """Download ``base_url/NAME`` to ``dest_dir/NAME`` for every name (``NAME`` may contain
    ``/``), with :func:`download`'s guarantees. A file already present with the right size (or
    any size when none is given) is kept. Continues past failures.

    ``sizes`` maps a name to its size in bytes, or lists sizes in the order of ``names``.
    Returns ``(ok, failed)``: the paths present when done, and ``(name, one-line reason)`` for
    each file that could not be fetched.
    """
    names = list(names)
    dest_dir = Path(dest_dir)
    if sizes is None:
        size_of: dict[str, int | None] = {}
    elif isinstance(sizes, Mapping):
        size_of = dict(sizes)
    else:
        sizes = list(sizes)
        if len(sizes) != len(names):
            raise ValueError(f"sizes has {len(sizes)} entries for {len(names)} names")
        size_of = dict(zip(names, sizes))
    base = base_url if base_url.endswith("/") else base_url + "/"
    ok: list[Path] = []
    failed: list[tuple[str, str]] = []
    for name in tqdm(names, desc="files", unit="file", disable=not progress or len(names) < 2):
        rel = _safe_relative(name)
        if rel is None:
            failed.append((name, f"{name!r}: unsafe file name (absolute or containing '..'); "
                                 "skipped"))
            continue
        dest = dest_dir / rel
        want = size_of.get(name)
        if dest.is_file() and (want is None or dest.stat().st_size == want):
            ok.append(dest)
            continue
        url = base + urllib.parse.quote(rel.as_posix(), safe="/")
        try:
            ok.append(download(url, dest, expected_size=want, progress=progress,
                               timeout=timeout, retries=retries))
        except DownloadError as exc:
            failed.append((name, str(exc)))
    return ok, failed
