"""helpers.downloads against a real HTTP server on 127.0.0.1."""

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from helpers.downloads import DownloadError, fetch, md5sum

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    requests: list = []

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        Handler.requests.append(self.path)
        body = PAYLOAD
        if self.path.startswith("/cut"):  # promises the whole file, sends a third, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.close()
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
    Handler.requests = []
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
    with pytest.raises(DownloadError, match="has MD5 .* expected 0{32}; nothing was kept"):
        fetch(f"{server}/model.pth", dest, "0" * 32)
    assert _leftovers(tmp_path) == []


def test_cut_connection_fails_cleanly_and_a_retry_succeeds(server, tmp_path):
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError):
        fetch(f"{server}/cut/model.pth", dest, MD5)
    assert _leftovers(tmp_path) == []
    assert fetch(f"{server}/model.pth", dest, MD5).read_bytes() == PAYLOAD


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
