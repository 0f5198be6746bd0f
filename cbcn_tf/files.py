"""Atomic file writes (a temp file in the destination folder, then ``os.replace``) and
exclusive lock files.

An interrupted or failed write never leaves a file at the destination that later loads as
valid: the destination is either absent, its previous complete version, or the new one.
"""
from __future__ import annotations

import csv
import errno
import os
import tempfile

from cbcn_tf.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no flock; `FileLock` then locks nothing
    fcntl = None


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


class FileLock:
    """An exclusive advisory lock (``flock``) on the file ``path``, which holds the owner's pid.

    `acquire` creates the file (never through a symlink: ``O_NOFOLLOW``) and takes the lock
    without waiting; it returns False if another process holds it (`holder` then reads that
    process' pid). The operating system drops the lock when its process ends, however it
    ends, so a killed owner never leaves a stale lock, only the file. `release` deletes the
    file, then unlocks; `acquire` checks after locking that the file it locked is still the
    one at ``path``, so a process that opened the file just before its owner deleted it
    cannot take a lock nobody else sees. Without ``fcntl`` (Windows) nothing is locked.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), ".lock")
        >>> lock = FileLock(path)
        >>> lock.acquire(), FileLock(path).acquire()
        (True, False)
        >>> lock.release(); os.path.exists(path)
        False
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.fd = None

    def acquire(self) -> bool:
        """Take the lock and write this pid into the file; False if another process has it.

        Raises OSError if the file cannot be opened (``ELOOP``: ``path`` is a symlink).
        """
        if fcntl is None:
            return True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                current = os.lstat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                break
            os.close(fd)  # its owner deleted it in between: lock the new file instead
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid only names the owner to others; a full disk must not stop the lock
        return True

    def holder(self) -> str:
        """The pid written by the process holding the lock ("" if not known)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return ""
        try:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        return text if text.isdigit() else ""

    def release(self) -> None:
        """Delete the lock file and unlock (no-op if not held)."""
        if self.fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self.fd), os.lstat(self.path)):
                os.remove(self.path)  # not a file another process made after ours was deleted
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
