"""Downloads into the cache folder: progress bar, length and hash checks, never a half file
(SAM checkpoints, the data sets, Mask R-CNN's COCO weights).

- A transfer goes to a temporary folder beside its destination; its length is checked
  against Content-Length (``http.client`` returns a short body without an error when a
  connection is cut); a cut transfer resumes with a Range request where the server allows
  it, else restarts; the hash (MD5, or torch.hub's SHA-256 prefix) is checked; only then
  is the file renamed into place. A file in place is reused, its hash checked once (a
  ``.md5-ok`` stamp records which).
- Processes on one host or several sharing a folder (``torchrun``, SLURM, Colab on Drive):
  a lock (:func:`exclusive`) lets one transfer while the others wait; it is taken over
  only when its holder is provably gone (a dead process of this host, or another host's
  lock not refreshed for ``STALE_AFTER_S``). Temporary folders of gone owners are swept.
- No network: an error that says what was fetched, where it belongs, where to get it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..course.runtime import progress

log = logging.getLogger(__name__)

OWNER_FILE = ".owner"  # in every temporary folder: "<host> <pid>"
CHUNK = 1 << 20
HOST_ENV = "SEGCOURSE_HOSTNAME"  # the host name this process gives (tests play other hosts)
HEARTBEAT_S = 5.0  # how often the holder of a lock refreshes it
STALE_AFTER_S = 60.0  # another host's lock not refreshed for this long: its holder is gone


def host_name() -> str:
    """This host's name in owner and lock files: ``SEGCOURSE_HOSTNAME`` if set (a test
    playing another host), else ``socket.gethostname()``."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


class DownloadError(RuntimeError):
    """A download failed or gave the wrong bytes; the message says what to do.

    ``url``, ``dest`` and ``reason`` (the cause in one line) are set when the transfer
    itself failed, so that a caller fetching several files can list them all."""

    def __init__(self, message: str, url: str = "", dest: Path | None = None, reason: str = ""):
        super().__init__(message)
        self.url, self.dest, self.reason = url, dest, reason


class _Incomplete(Exception):
    def __init__(self, received: int, expected: int):
        super().__init__(f"{received} of {expected} bytes")
        self.received, self.expected = received, expected


def md5sum(path: str | Path, chunk: int = CHUNK) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    return _digest(path, hashlib.md5(), chunk)


def sha256sum(path: str | Path, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file (torch.hub names its files after its first hex digits)."""
    return _digest(path, hashlib.sha256(), chunk)


def _digest(path, digest, chunk: int) -> str:
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".md5-ok")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def sweep_stale(
    folder: str | Path, prefix: str, min_age_s: float = 60.0, locked: bool = False
) -> list[Path]:
    """Remove the temporary folders in ``folder`` whose names start with ``prefix`` and
    whose owner is gone: a process of this host that no longer runs; another host's only
    when ``locked`` (the caller holds the lock of the work these folders belong to, so
    no one else can be using them: its owner died, or lost the folder). A folder without
    an owner file (a run killed before it wrote one) is stale once older than
    ``min_age_s``. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if not (path.name.startswith(prefix) and path.is_dir()):
            continue
        owner = path / OWNER_FILE
        try:
            host, pid = owner.read_text().split()
            if host == host_name():
                stale = not _process_alive(int(pid))
            else:
                stale = locked
        except (OSError, ValueError):
            stale = time.time() - path.stat().st_mtime > min_age_s
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        n = len(removed)
        log.info("removed %d temporary folder(s) left by an interrupted run in %s", n, folder)
    return removed


@contextlib.contextmanager
def temporary_dir(folder: str | Path, prefix: str, locked: bool = False):
    """A temporary folder in ``folder`` (on the same file system as the final place, so a
    rename moves it), owned by this process, removed on exit whatever happens; stale ones
    of earlier runs with the same prefix are swept first (``locked``: see
    :func:`sweep_stale`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale(folder, prefix, locked=locked)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    try:
        (tmp / OWNER_FILE).write_text(f"{host_name()} {os.getpid()}\n")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Heartbeat(threading.Thread):
    """Refreshes a lock file's time every ``HEARTBEAT_S`` until stopped."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.stop = path, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)


def _lock_is_stale(lock: Path, text: str) -> bool:
    """True when the holder recorded in ``text`` (``host pid token``) is provably gone."""
    try:
        host, pid, _ = text.split()
        if host == host_name():
            return not _process_alive(int(pid))
    except ValueError:  # being written, or not ours: judge it by its age alone
        pass
    try:
        return time.time() - lock.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False  # gone already


#: How long a process waits for another one's download or extraction before giving up
#: with an error that names the holder and the lock (a 2.6 GB vit_h checkpoint on a slow
#: line takes hours; a holder that died is detected long before this).
WAIT_LIMIT_S = 12 * 3600.0


@contextlib.contextmanager
def exclusive(
    target: str | Path, what: str | None = None, poll_s: float = 0.5, wait_s: float | None = None
):
    """Hold the lock of ``target`` (the file ``.<name>.lock`` beside it) while the body
    runs: one process at a time, on this host or any other that shares the folder.

    Waits while another process holds it, saying so once; takes over a lock whose holder
    is provably gone (a dead process of this host, or another host's lock not refreshed
    for ``STALE_AFTER_S``). The holder's lock is refreshed by a thread and removed on
    exit, whatever happens.

    Raises:
        DownloadError: still held by a live holder after ``wait_s`` seconds (default
            ``WAIT_LIMIT_S``); the message names the holder and the lock file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    mine = f"{host_name()} {os.getpid()} {os.urandom(8).hex()}\n"
    said, started = False, time.monotonic()
    limit = WAIT_LIMIT_S if wait_s is None else wait_s
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                text = lock.read_text()
            except OSError:  # released in between
                continue
            if _lock_is_stale(lock, text):
                with contextlib.suppress(OSError):
                    if lock.read_text() == text:  # still the gone holder's, not a new one
                        lock.unlink()
                        log.info("%s: took over a lock its holder (%s) left", lock, text.strip())
                continue
            holder = " ".join(text.split()[:2]) or "another process"
            if not said:
                log.info("%s: waiting for %s, which is fetching it", what or target.name, holder)
                said = True
            if time.monotonic() - started > limit:
                raise DownloadError(
                    f"{what or target.name}: waited {limit:.0f} s for {holder} (host, process), "
                    f"which holds {lock} and keeps it alive. If that process is gone, delete "
                    "the lock file and run again."
                ) from None
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(mine)
        break
    beat = _Heartbeat(lock)
    beat.start()
    try:
        yield
    finally:
        beat.stop.set()
        beat.join()
        with contextlib.suppress(OSError):
            if lock.read_text() == mine:
                lock.unlink()


def _transfer(url: str, part: Path, what: str) -> None:
    """Download ``url`` into ``part``, resuming from ``part``'s size when it exists and
    the server answers a Range request (206); else from the start.

    Raises:
        _Incomplete: fewer bytes arrived than the server announced.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "segcourse-helpers"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:
        length = resp.headers.get("Content-Length")
        if have and resp.status == 206:
            mode, total = "ab", have + int(length) if length is not None else None
        else:
            mode, have = "wb", 0
            total = int(length) if length is not None else None
        read = getattr(resp, "read1", resp.read)  # what has arrived, up to CHUNK: a live bar
        with open(part, mode) as fh:
            bar = progress(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=what
            )
            try:
                while True:
                    try:
                        chunk = read(CHUNK)
                    except http.client.IncompleteRead as err:  # some servers surface it so
                        chunk = err.partial
                        fh.write(chunk)
                        have += len(chunk)
                        break
                    if not chunk:
                        break
                    fh.write(chunk)
                    have += len(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
    if total is not None and have != total:
        raise _Incomplete(have, total)


def fetch(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    what: str | None = None,
    sha256_prefix: str | None = None,
    attempts: int = 3,
) -> Path:
    """The file at ``dest`` (its folder created), downloaded from ``url`` if absent.

    Args:
        md5, sha256_prefix: the expected hex MD5, or the start of the hex SHA-256 (as
            torch.hub's names carry); with neither, the MD5 is logged for pinning.
        what: a name for messages (default: the file name).
        attempts: transfers tried when the connection is cut (each resumes if it can).

    Raises:
        DownloadError: no network, an HTTP error, ``attempts`` cuts or the wrong hash;
            nothing is left at ``dest``."""
    dest = Path(dest)
    what = what or dest.name
    with exclusive(dest, what):  # one transfer, however many processes ask at once
        sweep_stale(dest.parent, f".{dest.name}.", locked=True)
        if dest.is_file():
            return _check_in_place(dest, url, md5, sha256_prefix, what)
        return _download(url, dest, md5, sha256_prefix, what, attempts)


def _download(url: str, dest: Path, md5, sha256_prefix, what: str, attempts: int) -> Path:
    with temporary_dir(dest.parent, f".{dest.name}.", locked=True) as tmp:
        part = tmp / dest.name
        log.info("downloading %s from %s", what, url)
        for attempt in range(1, attempts + 1):
            try:
                _transfer(url, part, what)
                break
            except _Incomplete as err:
                cut = f"{what}: connection cut after {err.received:,} of {err.expected:,} bytes"
                log.warning("%s (try %d of %d)", cut, attempt, attempts)
                if attempt == attempts:
                    raise DownloadError(
                        f"{what}: the connection to {url} was cut {attempts} times, last after "
                        f"{err.received:,} of {err.expected:,} bytes; nothing was kept at {dest}. "
                        "Try again later, or download it elsewhere and place it there."
                    ) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
                reason = f"{type(err).__name__}: {err}"
                raise DownloadError(
                    f"could not download {what} from {url} ({reason}). "
                    f"Without network, download it elsewhere and place it at {dest}.",
                    url=url,
                    dest=dest,
                    reason=reason,
                ) from None  # the cause is in the message; urllib's traceback adds nothing
        if md5 is not None or sha256_prefix is not None:
            log.info("checking the %s of %s", "SHA-256" if sha256_prefix else "MD5", what)
        _check_hash(part, md5, sha256_prefix, what, url, kept=False)
        part.replace(dest)
        if md5 is not None or sha256_prefix is not None:
            _stamp(dest).write_text(_checked(md5, sha256_prefix))
    return dest


def fetch_and_extract(
    what: str,
    files: list[tuple[str, Path, str | None]],
    target: Path,
    unpack: Callable[[list[Path], Path], Path],
    hint: str = "",
) -> Path:
    """The folder ``target``, made once from downloaded archives (``files``: ``(url,
    archive path, MD5 or None)``) and reused after: a ``.complete`` marker says it is whole.
    One process works while the others wait (:func:`exclusive`); every archive is fetched
    (:func:`fetch`), ``unpack(archives, tmp)`` extracts and checks them in a temporary folder
    beside ``target`` and returns the folder to put in place; only then is ``target``
    replaced and marked.

    Raises:
        DownloadError: archives that could not be downloaded (one error lists them all, where
            each comes from and where to place it, then ``hint``), or a wrong hash."""
    marker = target / ".complete"
    if marker.is_file():
        return target
    with exclusive(target, what):  # one process fetches and extracts; the others wait
        if marker.is_file():  # done by another process while this one waited
            return target
        archives, failures = [], []
        for url, dest, md5 in files:  # every archive is tried: one error lists all
            try:
                archives.append(fetch(url, dest, md5, dest.name))
            except DownloadError as err:
                if not err.url:  # a wrong checksum, not a missing file: its own message
                    raise
                failures.append(err)
        if failures:
            lines = [f"  {e.dest.name}: from {e.url}\n    place it at {e.dest}" for e in failures]
            raise DownloadError(
                f"{what}: {len(failures)} file(s) could not be downloaded "
                f"({failures[0].reason or failures[0]}). Without network, download them "
                "elsewhere and place them:\n" + "\n".join(lines) + (f"\n{hint}" if hint else "")
            ) from None
        with temporary_dir(target.parent, ".extract-", locked=True) as tmp:
            made = unpack(archives, tmp)
            if target.exists():
                shutil.rmtree(target)
            made.replace(target)
            marker.write_text("ok\n")
    return target


def _checked(md5, sha256_prefix) -> str:
    """What a stamp records: the hash that was checked (a later, other one is checked)."""
    return f"sha256:{sha256_prefix}\n" if sha256_prefix is not None else f"md5:{md5}\n"


def _check_hash(path: Path, md5, sha256_prefix, what: str, url: str, kept: bool) -> None:
    if sha256_prefix is not None:
        got = sha256sum(path)
        if not got.startswith(sha256_prefix):
            got, expected = f"SHA-256 is {got[:12]}...", f"{sha256_prefix}..."
            raise DownloadError(_wrong(path, what, url, got, expected, kept))
    elif md5 is not None:
        got = md5sum(path)
        if got != md5:
            raise DownloadError(_wrong(path, what, url, f"MD5 is {got}", md5, kept))
    else:
        digest = md5sum(path)
        log.warning("%s has no known checksum; its MD5 is %s (pin it in the code)", what, digest)


def _wrong(path: Path, what: str, url: str, got: str, expected: str, kept: bool) -> str:
    if kept:
        return (
            f"{path}: {what} is there but its {got}, expected {expected} (a partial copy?). "
            f"Delete it to download again from {url}."
        )
    return (
        f"{what} downloaded from {url} is wrong: its {got}, expected {expected}; nothing was kept. "
        "Try again (a proxy or a cut connection?)."
    )


def _check_in_place(dest: Path, url: str, md5, sha256_prefix, what: str) -> Path:
    if md5 is None and sha256_prefix is None:
        return dest
    stamp = _stamp(dest)
    with contextlib.suppress(OSError):
        if stamp.read_text() == _checked(md5, sha256_prefix):
            return dest
    log.info("checking the %s of %s (once)", "SHA-256" if sha256_prefix else "MD5", dest)
    _check_hash(dest, md5, sha256_prefix, what, url, kept=True)
    stamp.write_text(_checked(md5, sha256_prefix))
    return dest
