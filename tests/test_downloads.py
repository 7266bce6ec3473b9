"""helpers.data.downloads against a real HTTP server on 127.0.0.1."""

import hashlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers.data.downloads import OWNER_FILE, DownloadError, fetch, md5sum, sweep_stale

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
REPO = Path(__file__).resolve().parents[1]


class Handler(http.server.BaseHTTPRequestHandler):
    """/cut...: always promises the whole file, sends a third and hangs up (no Range);
    /flaky...: cuts the first transfer, then answers Range requests with 206;
    /norange...: cuts the first transfer, then ignores Range (a full 200);
    /slow...: sends a little, then trickles (for a process killed mid-transfer);
    /missing...: 404."""

    requests: list = []
    ranges: list = []
    served: dict = {}

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def _cut(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 3])
        self.wfile.flush()
        self.connection.close()

    def do_GET(self):
        Handler.requests.append(self.path)
        Handler.ranges.append(self.headers.get("Range"))
        first = Handler.served.setdefault(self.path, 0) == 0
        Handler.served[self.path] += 1
        body = PAYLOAD
        if self.path.startswith("/cut") or (self.path.startswith(("/flaky", "/norange")) and first):
            self._cut(body)
            return
        rng = self.headers.get("Range")
        if self.path.startswith("/flaky") and rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])
            return
        if self.path.startswith("/slow"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(0, len(body), 4096):
                self.wfile.write(body[i : i + 4096])
                self.wfile.flush()
                time.sleep(0.05)
            return
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.requests, Handler.ranges, Handler.served = [], [], {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fetch_downloads_checks_the_hash_and_reuses_the_file(server, tmp_path, capsys):
    dest = tmp_path / "ckpt" / "model.pth"
    assert fetch(f"{server}/model.pth", dest, MD5) == dest
    assert dest.read_bytes() == PAYLOAD and md5sum(dest) == MD5
    assert _leftovers(dest.parent) == ["model.pth", "model.pth.md5-ok"]
    n = len(Handler.requests)
    assert fetch(f"{server}/model.pth", dest, MD5) == dest  # cache hit: no request
    assert len(Handler.requests) == n


def test_wrong_hash_fails_and_leaves_nothing_that_passes_for_the_file(server, tmp_path):
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="its MD5 is .* expected 0{32}; nothing was kept"):
        fetch(f"{server}/model.pth", dest, "0" * 32)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("md5", [MD5, None], ids=["with-md5", "without-checksum"])
def test_cut_connection_is_caught_during_the_transfer_and_leaves_nothing(server, tmp_path, md5):
    # Without a checksum (LabPics) only the byte count can tell: a short body is no file.
    dest = tmp_path / "data.zip"
    with pytest.raises(DownloadError, match=r"cut 3 times, last after 349,525 of 1,048,576 bytes"):
        fetch(f"{server}/cut/data.zip", dest, md5)
    assert Handler.requests == ["/cut/data.zip"] * 3
    assert _leftovers(tmp_path) == []
    assert fetch(f"{server}/data.zip", dest, md5).read_bytes() == PAYLOAD


def test_a_cut_transfer_resumes_with_a_range_request(server, tmp_path):
    dest = tmp_path / "data.zip"
    assert fetch(f"{server}/flaky/data.zip", dest, MD5).read_bytes() == PAYLOAD
    assert Handler.ranges == [None, f"bytes={len(PAYLOAD) // 3}-"]


def test_a_cut_transfer_restarts_where_the_server_ignores_range(server, tmp_path):
    dest = tmp_path / "data.zip"
    assert fetch(f"{server}/norange/data.zip", dest, md5=None).read_bytes() == PAYLOAD
    assert len(Handler.requests) == 2


def test_sha256_prefix_as_torch_hub_names_its_files(server, tmp_path):
    dest = tmp_path / f"model-{SHA256[:8]}.pth"
    assert fetch(f"{server}/model.pth", dest, sha256_prefix=SHA256[:8]).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=r"its SHA-256 is .* expected 00000000\.\.\."):
        fetch(f"{server}/model.pth", tmp_path / "other.pth", sha256_prefix="00000000")
    assert not (tmp_path / "other.pth").exists()


def test_stale_temporary_folders_are_swept_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    owners = {
        "dead-process": f"{host} {dead.pid}",
        "other-host": f"colab-vm-before-reconnect {os.getpid()}",
        "alive": f"{host} {os.getpid()}",
    }
    for name, owner in owners.items():
        (tmp_path / f".data.zip.{name}").mkdir()
        (tmp_path / f".data.zip.{name}" / OWNER_FILE).write_text(owner)
    (tmp_path / ".data.zip.no-owner-old").mkdir()
    os.utime(tmp_path / ".data.zip.no-owner-old", (time.time() - 3600,) * 2)
    (tmp_path / ".data.zip.no-owner-new").mkdir()  # being created right now, maybe
    (tmp_path / ".other.zip.dead-process").mkdir()  # another prefix: not ours to judge
    removed = sweep_stale(tmp_path, ".data.zip.")
    assert sorted(p.name.removeprefix(".data.zip.") for p in removed) == [
        "dead-process",
        "no-owner-old",
        "other-host",
    ]
    assert _leftovers(tmp_path) == [
        ".data.zip.alive",
        ".data.zip.no-owner-new",
        ".other.zip.dead-process",
    ]


def test_a_killed_download_leaves_a_folder_that_the_next_run_removes(server, tmp_path):
    dest = tmp_path / "data.zip"
    url = f"{server}/slow/data.zip"
    code = f"from helpers.data.downloads import fetch; fetch({url!r}, {str(dest)!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    try:
        deadline = time.time() + 30
        while not any(p.stat().st_size > 0 for p in tmp_path.glob(".data.zip.*/data.zip")):
            assert time.time() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [p.name.startswith(".data.zip.") for p in tmp_path.iterdir()] == [True]
    assert fetch(f"{server}/data.zip", dest, MD5).read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["data.zip", "data.zip.md5-ok"]


def test_http_error_and_no_network_say_where_the_file_belongs(server, tmp_path):
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match=rf"could not download .*place it at {dest}"):
        fetch(f"{server}/missing/model.pth", dest, MD5)
    with pytest.raises(DownloadError, match="could not download"):
        fetch("http://127.0.0.1:9/model.pth", dest, MD5)  # nothing listens on port 9
    assert _leftovers(tmp_path) == []


def test_a_partial_file_in_place_is_reported_not_trusted(tmp_path):
    dest = tmp_path / "model.pth"
    dest.write_bytes(PAYLOAD[:1000])
    with pytest.raises(DownloadError, match="MD5 is .* expected .* Delete it"):
        fetch("http://127.0.0.1:9/model.pth", dest, MD5)


def test_unknown_checksum_logs_the_md5_of_what_was_downloaded(server, tmp_path, caplog):
    fetch(f"{server}/data.zip", tmp_path / "data.zip", md5=None)
    assert MD5 in caplog.text
