"""One writer at a time for a directory: an advisory lock that names its holder when refused.

`tfrobust evaluate --report DIR` holds `DIR/.lock` while it writes, so a second run
into the same directory stops at once instead of rewriting the first one's report.
The lock is `flock` on the lock file: the operating system releases it when the
holder exits, however it exits, so a stale lock never blocks a later run (the file
itself stays, holding the last holder's description). Shards of one evaluation
take it shared (`shared=True`); a whole run takes it exclusively.

`flock` is local to one machine on most network file systems; directories shared
between machines rely on the atomic writes of the cache instead (see docs/evaluation.md).
"""

import json
import os
import socket
import time

LOCK_FILE = ".lock"


class DirectoryLockedError(RuntimeError):
    """Another process holds the directory's lock."""


class DirectoryLock:
    """`with DirectoryLock(directory, what):` holds `directory/.lock` for the block.

    Args:
        directory: an existing directory.
        what: a description of the holder for a refused process's message
            (e.g. the command line).
        shared: take the lock shared (many shared holders at once; none while an
            exclusive holder has it).
    """

    def __init__(self, directory, what, shared=False):
        self.path = os.path.join(directory, LOCK_FILE)
        self.what = what
        self.shared = shared
        self._handle = None

    def __enter__(self):
        import fcntl

        handle = open(self.path, "a+")
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DirectoryLockedError(
                f"Expected no other writer in {os.path.dirname(self.path)!r}. Received: it is "
                f"locked by {holder}. Wait for that run to finish, or choose another "
                "directory.") from None
        if not self.shared:
            handle.seek(0)
            handle.truncate()
        handle.write(self.describe() + "\n")
        handle.flush()
        self._handle = handle
        return self

    def describe(self):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": started,
                           "command": self.what})

    def __exit__(self, *exc_info):
        import fcntl

        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None
        return False
