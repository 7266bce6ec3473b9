"""Downloads into the cache folder: progress bar, hash check, never a half file.

Introduced in notebook 01 (SAM checkpoints); notebooks 03 and 04 fetch their data sets
through it. The transfer itself is torchvision's ``download_url`` (progress bar, redirects);
this module adds what a course needs around it:

- the file is downloaded into a temporary folder next to its destination, its MD5 is
  checked, and only then is it renamed into place, so an interrupted or corrupt download
  never leaves a file that passes for the real one (a retry starts clean);
- a file already in place is reused without a network call, and its hash is checked
  once (the result is remembered in a ``.md5-ok`` stamp beside it);
- no network: an error that says what was being fetched, where it was expected and how
  to place it by hand.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A download failed or gave the wrong bytes; the message says what to do."""


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".md5-ok")


def fetch(url: str, dest: str | Path, md5: str | None = None, what: str | None = None) -> Path:
    """The file at ``dest``, downloaded from ``url`` first if it is not there.

    Args:
        url: where to download from.
        dest: the final path (its folder is created).
        md5: the expected hex MD5, or None where no hash is known (the MD5 of what was
            downloaded is then logged, so a user can pin it).
        what: a name for messages (default: the file name).

    Raises:
        DownloadError: the transfer failed (no network, HTTP error, cut connection) or
            the bytes have the wrong MD5. Nothing is left at ``dest`` in either case.
    """
    dest = Path(dest)
    what = what or dest.name
    if dest.is_file():
        if md5 is None or _stamp(dest).is_file():
            return dest
        got = md5sum(dest)
        if got != md5:
            raise DownloadError(
                f"{dest}: {what} is there but its MD5 is {got}, expected {md5} (a partial "
                f"copy?). Delete it to download again from {url}."
            )
        _stamp(dest).write_text(got + "\n")
        return dest

    from torchvision.datasets.utils import download_url

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        log.info("downloading %s from %s", what, url)
        try:
            download_url(url, root=str(tmp_dir), filename=dest.name)
        except Exception as err:  # URLError, HTTPError, IncompleteRead, OSError ...
            raise DownloadError(
                f"could not download {what} from {url} ({type(err).__name__}: {err}). "
                f"Without network, download it elsewhere and place it at {dest}."
            ) from err
        got = md5sum(tmp_dir / dest.name)
        if md5 is not None and got != md5:
            raise DownloadError(
                f"{what} downloaded from {url} has MD5 {got}, expected {md5}; "
                "nothing was kept. Try again (a proxy or a cut connection?)."
            )
        if md5 is None:
            log.warning(
                "%s has no known checksum; its MD5 is %s (pin it to detect changes)", what, got
            )
        (tmp_dir / dest.name).replace(dest)
        if md5 is not None:
            _stamp(dest).write_text(got + "\n")
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return dest
