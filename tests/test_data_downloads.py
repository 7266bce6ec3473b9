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

import helpers.data.downloads as downloads
from helpers.data.downloads import OWNER_FILE, DownloadError, exclusive, fetch, md5sum, sweep_stale

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
        if self.path.startswith("/throttled"):  # ~1 s for the MiB: long enough to overlap
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(0, len(body), 65536):
                self.wfile.write(body[i : i + 65536])
                self.wfile.flush()
                time.sleep(0.06)
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
    removed = sweep_stale(tmp_path, ".data.zip.")  # another host's folder: not provably gone
    assert sorted(p.name.removeprefix(".data.zip.") for p in removed) == [
        "dead-process",
        "no-owner-old",
    ]
    # with the lock of the work held, another host's folder can only be left behind
    removed = sweep_stale(tmp_path, ".data.zip.", locked=True)
    assert [p.name for p in removed] == [".data.zip.other-host"]
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
    left = sorted(p.name for p in tmp_path.iterdir())  # its temporary folder and its lock
    assert len(left) == 2 and ".data.zip.lock" in left
    assert all(name.startswith(".data.zip.") for name in left)
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


def _fetch_in_a_process(url: str, dest: Path, host: str) -> subprocess.Popen:
    code = f"from helpers.data.downloads import fetch; fetch({url!r}, {str(dest)!r}, {MD5!r})"
    env = {**os.environ, "TQDM_DISABLE": "1", downloads.HOST_ENV: host}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)


def test_three_processes_on_two_hosts_share_one_transfer(server, tmp_path):
    """Two ranks of one host and one of another ask for the same file in a shared folder
    at once (a SLURM job's first run): all get it, and the server sends it once."""
    dest = tmp_path / "shared" / "VOC.tar"
    url = f"{server}/throttled/VOC.tar"
    procs = [_fetch_in_a_process(url, dest, host) for host in ("node-a", "node-a", "node-b")]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0, 0]
    assert dest.read_bytes() == PAYLOAD
    assert Handler.requests.count("/throttled/VOC.tar") == 1
    assert _leftovers(dest.parent) == ["VOC.tar", "VOC.tar.md5-ok"]  # no lock, no temporary


def test_a_killed_holder_of_the_lock_is_taken_over_on_its_host(server, tmp_path):
    dest = tmp_path / "data.zip"
    proc = _fetch_in_a_process(f"{server}/slow/data.zip", dest, downloads.host_name())
    lock = tmp_path / ".data.zip.lock"
    try:
        deadline = time.time() + 60
        while not any(p.stat().st_size > 0 for p in tmp_path.glob(".data.zip.*/data.zip")):
            assert time.time() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.05)
        assert lock.is_file()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock.is_file()  # left by the killed process
    assert fetch(f"{server}/data.zip", dest, MD5).read_bytes() == PAYLOAD  # not a hang
    assert _leftovers(tmp_path) == ["data.zip", "data.zip.md5-ok"]


def test_another_hosts_lock_is_honoured_until_it_stops_being_refreshed(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "STALE_AFTER_S", 2.0)
    lock = tmp_path / ".data.zip.lock"
    lock.write_text(f"other-node {os.getpid()} abc\n")  # alive elsewhere, as far as we know
    with pytest.raises(DownloadError, match="other-node"):  # kept while fresh: not ours
        with exclusive(tmp_path / "data.zip", poll_s=0.05, wait_s=0.5):
            pytest.fail("took another host's fresh lock")
    assert lock.read_text() == f"other-node {os.getpid()} abc\n"  # left as it was
    os.utime(lock, (time.time() - 3600,) * 2)  # its host stopped refreshing it long ago
    with exclusive(tmp_path / "data.zip", wait_s=30):
        assert "other-node" not in lock.read_text()  # taken over at once, not after the wait
    assert not lock.exists()  # released by its new holder


def test_the_holder_refreshes_its_lock_while_it_works(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "HEARTBEAT_S", 0.05)
    lock = tmp_path / ".data.zip.lock"
    with exclusive(tmp_path / "data.zip"):
        old = time.time() - 3600
        os.utime(lock, (old, old))
        for _ in range(600):  # until the refreshing thread touches it (at most a minute)
            if lock.stat().st_mtime > old + 60:
                break
            time.sleep(0.1)
        assert lock.stat().st_mtime > old + 60, "the lock was not refreshed"


def test_a_later_pinned_checksum_is_checked_even_after_a_stamp(server, tmp_path):
    dest = tmp_path / "data.zip"
    fetch(f"{server}/data.zip", dest, sha256_prefix=SHA256[:8])  # stamped for the SHA-256
    with pytest.raises(DownloadError, match="MD5 is .* expected 0{32}"):
        fetch(f"{server}/data.zip", dest, md5="0" * 32)  # a new pin is not taken on trust
    fetch(f"{server}/data.zip", tmp_path / "plain.zip")  # no checksum: no stamp
    assert not (tmp_path / "plain.zip.md5-ok").exists()


def test_offline_voc_names_every_missing_archive_and_where_it_goes(tmp_path, monkeypatch):
    from helpers.data.voc import download_voc2007, voc2007_sources

    sources = [
        {**s, "url": "http://127.0.0.1:9/" + s["filename"]} for s in voc2007_sources()
    ]  # nothing listens on port 9: as offline
    with pytest.raises(DownloadError) as info:
        download_voc2007(tmp_path / "data", sources, archive_dir=tmp_path / "archives")
    message = str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    for s in sources:
        assert s["filename"] in message
        assert str(tmp_path / "archives" / s["filename"]) in message
    assert "SEGCOURSE_SMOKE=1" in message
    assert message.count("ConnectionRefusedError") <= 1  # the cause once, not per file


def test_a_live_holder_that_never_finishes_ends_the_wait_with_a_named_error(tmp_path):
    import socket as socket_module

    lock = tmp_path / ".data.zip.lock"
    lock.write_text(f"{socket_module.gethostname()} {os.getpid()} abc\n")  # alive, ours
    with pytest.raises(DownloadError, match=r"waited 1 s for .* holds .*data.zip.lock"):
        with exclusive(tmp_path / "data.zip", poll_s=0.1, wait_s=1):
            pass
