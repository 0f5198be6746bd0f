"""Atomic file writes: a temp file in the destination folder, then ``os.replace``.

An interrupted or failed write never leaves a file at the destination that later loads as
valid: the destination is either absent, its previous complete version, or the new one.
"""
from __future__ import annotations

import csv
import errno
import os
import tempfile

from cbcn_tf.errors import OutputError


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: _write(tmp, text.encode("utf-8")))


def write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: _write(tmp, data))


def write_csv(path, rows) -> None:
    """Write dict ``rows`` as CSV atomically; columns are every key, in first-seen order."""

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            if rows:
                fields = list(dict.fromkeys(key for row in rows for key in row))
                writer = csv.DictWriter(handle, fieldnames=fields, restval="NA")
                writer.writeheader()
                writer.writerows(rows)

    atomic_write(path, write)


def _write(path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)``, then ``os.replace(tmp_path, path)``.

    The temp file sits in ``path``'s folder (``os.replace`` is atomic only within one file
    system), is created exclusively under an unpredictable name (``tempfile.mkstemp``: a
    symlink planted in the folder is never followed) and keeps ``path``'s extension (writers
    such as h5py or matplotlib look at it). ``write`` must write to the file at ``tmp_path``
    (open it for writing, which truncates the empty file). If anything fails, the temp file is
    removed and ``path`` is left as it was: absent, or the previous complete version. OSErrors
    (read-only or full disk, a missing folder, ...) are re-raised as
    `cbcn_tf.errors.OutputError` naming the file and what to do.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
        >>> atomic_write(path, lambda tmp: open(tmp, "w").write("hi"))
        >>> open(path).read()
        'hi'
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    if not os.path.isdir(directory):
        raise OutputError(errno.ENOENT, f"Could not write {path}: the folder {directory} does "
                          "not exist. Create it first or choose another destination.")
    try:
        # Created exclusively (O_CREAT | O_EXCL, mode 0600) under a random name: a file or
        # symlink someone planted in the folder is never opened or followed.
        handle, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=directory)
        os.close(handle)
    except OSError as exc:
        raise OutputError(exc.errno, f"Could not write {path}: {os_error_hint(exc)}") from exc
    try:
        write(tmp)
        _keep_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, OutputError)):
            raise OutputError(exc.errno, f"Could not write {path}: {os_error_hint(exc)}") from exc
        raise


def _keep_mode(tmp, path) -> None:
    """Give the new file the mode an ordinary ``open(path, "w")`` would (mkstemp uses 0600)."""
    try:
        mode = os.stat(path).st_mode & 0o7777  # replacing a file: keep its permissions
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


def os_error_hint(exc: OSError) -> str:
    """What a failed write means for the user, and what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return f"{reason} (the disk is full). Free some space or choose another output folder."
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{reason} (the output folder is not writable). Choose a writable output "
                "folder or fix its permissions.")
    return f"{reason}."
