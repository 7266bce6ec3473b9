"""Downloads into the cache folder: progress bar, length and hash checks, never a half file.

Introduced in notebook 01 (SAM checkpoints); notebooks 03 and 04 fetch their data sets
and Mask R-CNN's COCO weights through it. What a course needs around a transfer:

- the file is written into a temporary folder next to its destination; the bytes
  received are compared with the server's Content-Length (Python's ``http.client``, and
  so torchvision's ``download_url``, return a short body without an error when a
  connection is cut); a cut transfer is resumed where the server allows it (an HTTP
  Range request) and restarted where it does not, a few times; then the hash is checked
  (MD5, or the SHA-256 prefix that torch.hub file names carry), and only then is the file
  renamed into place. A file that fails any check is never left where the next run
  trusts it;
- a file already in place is reused without a network call, its hash checked once (the
  result is remembered in a ``.md5-ok`` stamp beside it);
- temporary folders record their owner (host and process); the next run removes those
  whose process is gone (killed downloads or extractions), on Google Drive too;
- no network: an error that says what was being fetched, where it belongs and where to
  get it.
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
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..course.runtime import progress

log = logging.getLogger(__name__)

OWNER_FILE = ".owner"  # in every temporary folder: "<host> <pid>"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or gave the wrong bytes; the message says what to do."""


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


def sweep_stale(folder: str | Path, prefix: str, min_age_s: float = 60.0) -> list[Path]:
    """Remove the temporary folders in ``folder`` whose names start with ``prefix`` and
    whose owner is gone: a process of this host that no longer runs, or another host (a
    Colab runtime before a reconnect). A folder without an owner file (a run killed
    before it wrote one) is stale once older than ``min_age_s``. Returns what was removed."""
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
            stale = host != socket.gethostname() or not _process_alive(int(pid))
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
def temporary_dir(folder: str | Path, prefix: str):
    """A temporary folder in ``folder`` (on the same file system as the final place, so a
    rename moves it), owned by this process, removed on exit whatever happens; stale ones
    of earlier runs with the same prefix are swept first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale(folder, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    try:
        (tmp / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    """The file at ``dest``, downloaded from ``url`` first if it is not there.

    Args:
        url: where to download from.
        dest: the final path (its folder is created).
        md5: the expected hex MD5; sha256_prefix: the start of the expected hex SHA-256
            (torch.hub's file names carry one). With neither, the MD5 of what was
            downloaded is logged, so that a user can pin it.
        what: a name for messages (default: the file name).
        attempts: transfers tried when the connection is cut (each resumes if it can).

    Raises:
        DownloadError: the transfer failed (no network, HTTP error, a connection cut
            ``attempts`` times) or the bytes have the wrong hash. Nothing is left at
            ``dest`` in either case.
    """
    dest = Path(dest)
    what = what or dest.name
    sweep_stale(dest.parent, f".{dest.name}.")
    if dest.is_file():
        return _check_in_place(dest, url, md5, sha256_prefix, what)

    with temporary_dir(dest.parent, f".{dest.name}.") as tmp:
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
                raise DownloadError(
                    f"could not download {what} from {url} ({type(err).__name__}: {err}). "
                    f"Without network, download it elsewhere and place it at {dest}."
                ) from err
        if md5 is not None or sha256_prefix is not None:
            log.info("checking the %s of %s", "SHA-256" if sha256_prefix else "MD5", what)
        _check_hash(part, md5, sha256_prefix, what, url, kept=False)
        part.replace(dest)
        if md5 is not None or sha256_prefix is not None:
            _stamp(dest).write_text("ok\n")
    return dest


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
    if (md5 is None and sha256_prefix is None) or _stamp(dest).is_file():
        return dest
    log.info("checking the %s of %s (once)", "SHA-256" if sha256_prefix else "MD5", dest)
    _check_hash(dest, md5, sha256_prefix, what, url, kept=True)
    _stamp(dest).write_text("ok\n")
    return dest
