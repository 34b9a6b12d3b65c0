"""The downloader against a real HTTP server on 127.0.0.1 (http.server in a daemon thread).

The handler serves in-memory files, honours ``Range: bytes=N-`` (206 / 416), and can be told to
cut the connection after N bytes once, to announce more bytes than it sends, to ignore Range,
to omit Content-Length, or to fail the next request with a status code.
"""
from __future__ import annotations

import io
import os
import re
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from util import download as dl
from util.download import (CHECKPOINT_NAME, CHECKPOINT_URL, DownloadError, download,
                           download_files, ensure_checkpoint)

PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(200_003))  # odd size, not periodic
# socket timeout for every download in this module (seconds): a safety net only, no test waits
# for it to fire, so it is long enough for a machine busy with other work
T = 60


class Config:
    def __init__(self):
        self.files: dict[str, bytes] = {"/file.bin": PAYLOAD}
        self.cut_after: int | None = None  # cut the next body after this many bytes (once)
        self.extra_length = 0              # announce this many bytes more than are sent
        self.ignore_range = False          # answer 200 with the whole file to a Range request
        self.no_length = False             # send no Content-Length (body ends at close)
        self.fail_next: int | None = None  # answer the next request with this status (once)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection; the body ends at close
    timeout = T

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        cfg: Config = self.server.cfg
        rng = self.headers.get("Range")
        cfg.requests.append((self.path, rng))
        if cfg.fail_next is not None:
            code, cfg.fail_next = cfg.fail_next, None
            self.send_error(code)
            return
        data = cfg.files.get(urllib.parse.unquote(self.path))
        if data is None:
            self.send_error(404)
            return
        total = len(data)
        start, status = 0, 200
        if rng and not cfg.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            assert m, rng
            start = int(m.group(1))
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        announced_total = total + cfg.extra_length
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range",
                             f"bytes {start}-{announced_total - 1}/{announced_total}")
        if not cfg.no_length:
            self.send_header("Content-Length", str(len(body) + cfg.extra_length))
        self.end_headers()
        if cfg.cut_after is not None:
            n, cfg.cut_after = cfg.cut_after, None
            body = body[:n]
        try:
            self.wfile.write(body)
        except OSError:
            pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a cut connection is expected here
        pass


@pytest.fixture
def server():
    srv = Server(("127.0.0.1", 0), Handler)
    srv.cfg = Config()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=T)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _assert_one_line(msg: str):
    assert "\n" not in msg and "Traceback" not in msg and msg.strip() == msg, msg


def _get(server, dest, **kw):
    kw.setdefault("timeout", T)
    kw.setdefault("progress", False)
    kw.setdefault("chunk_size", 8192)
    return download(server.base + "/file.bin", dest, **kw)


# ------------------------------------------------------------------------------- download

def test_complete_download(server, tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    out = _get(server, dest, expected_size=len(PAYLOAD))
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()
    assert server.cfg.requests == [("/file.bin", None)]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]


def test_progress_false_prints_nothing_and_true_shows_a_bar(server, tmp_path, capsys):
    _get(server, tmp_path / "a.bin")
    assert capsys.readouterr().err == ""
    _get(server, tmp_path / "b.bin", progress=True)
    assert "b.bin" in capsys.readouterr().err


def test_resume_after_cut_connection(server, tmp_path):
    server.cfg.cut_after = 70_000
    dest = tmp_path / "file.bin"
    _get(server, dest, retries=2)
    assert dest.read_bytes() == PAYLOAD and not _part(dest).exists()
    assert server.cfg.requests == [("/file.bin", None), ("/file.bin", "bytes=70000-")]


def test_cut_without_retries_keeps_part_and_next_run_resumes(server, tmp_path):
    server.cfg.cut_after = 50_000
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError) as err:
        _get(server, dest, retries=0)
    msg = str(err.value)
    _assert_one_line(msg)
    assert "short" in msg and str(_part(dest)) in msg and "resume" in msg
    assert not dest.exists() and _part(dest).read_bytes() == PAYLOAD[:50_000]
    _get(server, dest, retries=0)
    assert dest.read_bytes() == PAYLOAD and not _part(dest).exists()
    assert server.cfg.requests[-1] == ("/file.bin", "bytes=50000-")


def test_preexisting_part_is_resumed(server, tmp_path):
    dest = tmp_path / "file.bin"
    _part(dest).write_bytes(PAYLOAD[:123_456])
    _get(server, dest, expected_size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and not _part(dest).exists()
    assert server.cfg.requests == [("/file.bin", "bytes=123456-")]


def test_complete_part_is_renamed_after_416(server, tmp_path):
    dest = tmp_path / "file.bin"
    _part(dest).write_bytes(PAYLOAD)
    _get(server, dest)
    assert dest.read_bytes() == PAYLOAD and not _part(dest).exists()
    assert server.cfg.requests == [("/file.bin", f"bytes={len(PAYLOAD)}-")]


def test_complete_part_with_expected_size_needs_no_network(tmp_path):
    dest = tmp_path / "file.bin"
    _part(dest).write_bytes(PAYLOAD)
    download(f"http://127.0.0.1:{_closed_port()}/never", dest, expected_size=len(PAYLOAD),
             progress=False, timeout=T)
    assert dest.read_bytes() == PAYLOAD


def test_stale_part_larger_than_file_restarts(server, tmp_path):
    dest = tmp_path / "file.bin"
    _part(dest).write_bytes(b"x" * (len(PAYLOAD) + 10))
    _get(server, dest, retries=1)
    assert dest.read_bytes() == PAYLOAD and not _part(dest).exists()
    assert [r for _, r in server.cfg.requests] == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.cfg.ignore_range = True
    dest = tmp_path / "file.bin"
    _part(dest).write_bytes(b"junk that is not the file's start")
    _get(server, dest)
    assert dest.read_bytes() == PAYLOAD and not _part(dest).exists()
    assert len(server.cfg.requests) == 1 and server.cfg.requests[0][1] is not None


def test_cut_then_server_ignores_range(server, tmp_path):
    server.cfg.cut_after = 30_000
    server.cfg.ignore_range = True
    dest = tmp_path / "file.bin"
    _get(server, dest, retries=1)
    assert dest.read_bytes() == PAYLOAD


def test_short_body_against_content_length_is_refused(server, tmp_path):
    server.cfg.extra_length = 1000  # announces 1000 bytes more than it ever sends
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError) as err:
        _get(server, dest, retries=0)
    msg = str(err.value)
    _assert_one_line(msg)
    assert "short" in msg and server.base in msg and "kept" in msg and str(_part(dest)) in msg
    assert f"{len(PAYLOAD):,} of {len(PAYLOAD) + 1000:,}" in msg
    assert not dest.exists()
    assert _part(dest).read_bytes() == PAYLOAD  # kept for a later resume


def test_short_body_with_retries_is_refused_on_inconsistent_sizes(server, tmp_path):
    server.cfg.extra_length = 1000
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError) as err:
        _get(server, dest, retries=3)
    msg = str(err.value)
    _assert_one_line(msg)
    # The resume request gets 416 */N: fewer bytes than the N+1000 first announced.
    assert "short" in msg and f"{len(PAYLOAD) + 1000:,}" in msg and "kept" in msg
    assert not dest.exists() and _part(dest).exists()
    assert [r for _, r in server.cfg.requests] == [None, f"bytes={len(PAYLOAD)}-"]


def test_expected_size_larger_than_server_file_is_refused(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError) as err:
        _get(server, dest, expected_size=len(PAYLOAD) + 1)
    msg = str(err.value)
    _assert_one_line(msg)
    assert server.base in msg and f"{len(PAYLOAD) + 1:,}" in msg
    assert not dest.exists()
    assert len(server.cfg.requests) == 1  # refused from the headers, not retried


def test_expected_size_larger_without_content_length(server, tmp_path):
    server.cfg.no_length = True
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError) as err:
        _get(server, dest, expected_size=len(PAYLOAD) + 5, retries=0)
    msg = str(err.value)
    _assert_one_line(msg)
    assert "short" in msg and "kept" in msg
    assert not dest.exists() and _part(dest).read_bytes() == PAYLOAD
    # Running again: the server proves (416 */N) the file is N bytes, not the expected N+5.
    with pytest.raises(DownloadError, match="expected"):
        _get(server, dest, expected_size=len(PAYLOAD) + 5, retries=0)
    assert not dest.exists()


def test_no_content_length_still_downloads(server, tmp_path):
    server.cfg.no_length = True
    dest = tmp_path / "file.bin"
    _get(server, dest)
    assert dest.read_bytes() == PAYLOAD


def test_server_error_is_retried(server, tmp_path):
    server.cfg.fail_next = 503
    dest = tmp_path / "file.bin"
    _get(server, dest, retries=1)
    assert dest.read_bytes() == PAYLOAD and len(server.cfg.requests) == 2


def test_http_404_is_one_line_and_not_retried(server, tmp_path):
    dest = tmp_path / "missing.bin"
    with pytest.raises(DownloadError) as err:
        download(server.base + "/missing.bin", dest, progress=False, timeout=T, retries=3)
    msg = str(err.value)
    _assert_one_line(msg)
    assert "404" in msg and server.base + "/missing.bin" in msg and str(dest) in msg
    assert len(server.cfg.requests) == 1
    assert not dest.exists() and not _part(dest).exists()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_connection_refused_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/{CHECKPOINT_NAME}"
    dest = tmp_path / CHECKPOINT_NAME
    with pytest.raises(DownloadError) as err:
        download(url, dest, progress=False, timeout=T)
    msg = str(err.value)
    _assert_one_line(msg)
    assert msg.startswith("cannot reach 127.0.0.1: ")
    assert "refused" in msg.lower() and url in msg and str(dest) in msg and "by hand" in msg
    assert "Errno" not in msg and "URLError" not in msg and "<" not in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not dest.exists() and not _part(dest).exists()


def test_dns_failure_is_one_line(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    url = "https://no-such-host.invalid/x.pt"
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "x.pt", progress=False, timeout=T)
    msg = str(err.value)
    _assert_one_line(msg)
    assert msg.startswith("cannot reach no-such-host.invalid: Name or service not known;")
    assert url in msg


def test_offline_with_partial_mentions_kept_part(tmp_path):
    dest = tmp_path / "file.bin"
    _part(dest).write_bytes(b"abc")
    with pytest.raises(DownloadError) as err:
        download(f"http://127.0.0.1:{_closed_port()}/f", dest, progress=False, timeout=T)
    assert "kept" in str(err.value) and _part(dest).read_bytes() == b"abc"


def test_existing_dest_replaced_only_when_complete(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    server.cfg.cut_after = 1000
    with pytest.raises(DownloadError):
        _get(server, dest, retries=0)
    assert dest.read_bytes() == b"old"
    _get(server, dest)
    assert dest.read_bytes() == PAYLOAD


# ------------------------------------------------------------------------- ensure_checkpoint

def _ckpt_server(server):
    server.cfg.files = {"/" + CHECKPOINT_NAME: PAYLOAD}
    return f"{server.base}/{CHECKPOINT_NAME}"


def test_ensure_checkpoint_non_interactive_raises_with_path_and_url(server, tmp_path):
    url = _ckpt_server(server)
    path = tmp_path / "models" / CHECKPOINT_NAME
    with pytest.raises(DownloadError) as err:
        ensure_checkpoint(path, url, interactive=False)
    msg = str(err.value)
    _assert_one_line(msg)
    assert str(path) in msg and url in msg and "--download_checkpoint" in msg
    assert not path.exists() and server.cfg.requests == []


def test_ensure_checkpoint_default_url_in_message(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a TTY
    path = tmp_path / CHECKPOINT_NAME
    with pytest.raises(DownloadError) as err:
        ensure_checkpoint(path)
    assert CHECKPOINT_URL in str(err.value) and str(path) in str(err.value)
    assert CHECKPOINT_URL.startswith("https://openaipublic.blob.core.windows.net/")


def test_ensure_checkpoint_assume_yes_downloads(server, tmp_path):
    url = _ckpt_server(server)
    path = tmp_path / "models" / CHECKPOINT_NAME
    assert ensure_checkpoint(path, url, assume_yes=True, interactive=False) == path
    assert path.read_bytes() == PAYLOAD and not _part(path).exists()


def test_ensure_checkpoint_asks_on_a_terminal(server, tmp_path, monkeypatch, capsys):
    url = _ckpt_server(server)
    path = tmp_path / CHECKPOINT_NAME
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    ensure_checkpoint(path, url, interactive=True)
    assert path.read_bytes() == PAYLOAD
    question = capsys.readouterr().err
    assert "about 2.2 GB" in question and url in question and str(path) in question
    assert "[y/N]" in question


@pytest.mark.parametrize("answer", ["n\n", "\n", ""])
def test_ensure_checkpoint_declined(server, tmp_path, monkeypatch, answer):
    url = _ckpt_server(server)
    path = tmp_path / CHECKPOINT_NAME
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    with pytest.raises(DownloadError) as err:
        ensure_checkpoint(path, url, interactive=True)
    msg = str(err.value)
    _assert_one_line(msg)
    assert "declined" in msg and str(path) in msg and url in msg
    assert not path.exists() and server.cfg.requests == []


def test_ensure_checkpoint_existing_file_untouched(server, tmp_path):
    url = _ckpt_server(server)
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(b"my weights")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert ensure_checkpoint(path, url, assume_yes=True) == path
    assert path.read_bytes() == b"my weights" and path.stat().st_mtime == 1_000_000_000
    assert server.cfg.requests == []


def test_ensure_checkpoint_offline_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/{CHECKPOINT_NAME}"
    path = tmp_path / CHECKPOINT_NAME
    with pytest.raises(DownloadError) as err:
        ensure_checkpoint(path, url, assume_yes=True, progress=False)
    _assert_one_line(str(err.value))
    assert str(path) in str(err.value) and not path.exists()


# ---------------------------------------------------------------------------- download_files

def test_download_files_continues_past_failures(server, tmp_path):
    server.cfg.files = {"/data/ir/001 a.png": b"ir-one", "/data/vi/001 a.png": b"vi-one",
                        "/data/ir/002.png": b"ir-two"}
    names = ["ir/001 a.png", "vi/001 a.png", "vi/002.png", "ir/002.png", "../evil.png"]
    sizes = {"ir/002.png": 999}
    ok, failed = download_files(server.base + "/data", names, tmp_path / "d", sizes,
                                progress=False, timeout=T, retries=0)
    assert ok == [tmp_path / "d" / "ir/001 a.png", tmp_path / "d" / "vi/001 a.png"]
    assert (tmp_path / "d" / "ir" / "001 a.png").read_bytes() == b"ir-one"
    assert [n for n, _ in failed] == ["vi/002.png", "ir/002.png", "../evil.png"]
    assert "404" in failed[0][1] and "999" in failed[1][1] and "unsafe" in failed[2][1]
    for _, msg in failed:
        _assert_one_line(msg)
    assert not (tmp_path / "evil.png").exists()
    assert not any(p.name.endswith(".part") for p in (tmp_path / "d").rglob("*"))


def test_download_files_skips_present_files(server, tmp_path):
    server.cfg.files = {"/a.png": b"aaaa", "/b.png": b"bbbb"}
    (tmp_path / "a.png").write_bytes(b"aaaa")
    (tmp_path / "b.png").write_bytes(b"stale-and-wrong-size")
    ok, failed = download_files(server.base, ["a.png", "b.png"], tmp_path, [4, 4],
                                progress=False, timeout=T)
    assert failed == [] and ok == [tmp_path / "a.png", tmp_path / "b.png"]
    assert (tmp_path / "b.png").read_bytes() == b"bbbb"
    assert [p for p, _ in server.cfg.requests] == ["/b.png"]
