"""Storage (hal.interfaces.Storage) on a filesystem folder, and in memory (portable).

`FileStorage(root)`: one file per name in `root` (created if missing).
- `read(name)` -> bytes, or None if there is no such file.
- `write(name, data)` is atomic: the data goes to `name.tmp`, which is flushed and fsynced,
  then renamed over `name`; on CPython the folder is fsynced too, so the rename itself is
  durable. After a crash the file holds the old or the new content, never a mix.
- `append(name, data)`: open "ab", write, flush, fsync. A crash in the middle can leave a torn
  last record: the reader detects it (agent/journal.py checksums every line).
- `remove(name)` (no error if missing), `names()` (sorted, without leftover `*.tmp`).
- `lines(name)`: the file's lines one at a time (bytes, "\\n" kept; the last may lack it), so a
  reader need not hold the whole file in RAM. An extension; generic code falls back to read().

Durability per interpreter: CPython calls `os.fsync` on the file (and on the folder after a
rename or a file creation). MicroPython has no `os.fsync`: `flush()` is the barrier there (the
unix port's flush calls fsync(2); LittleFS's flush commits the file). A rename is atomic on
POSIX and LittleFS; FAT gives no such guarantee, so boards keep state on LittleFS.

A leftover `NAME.tmp` (a crash between writing the temporary file and the rename) is ignored
by read() and names() and removed by the next write(). Names are plain file names: "/", "\\",
NUL, a leading "." (so "." and "..") and a ".tmp" suffix are refused with ValueError.

`MemoryStorage()`: the same API over a dict, for tests and the simulator's fresh-state runs.
"""
import os

from hal.interfaces import Storage

TMP = ".tmp"

_fsync = getattr(os, "fsync", None)          # missing on MicroPython


def check_name(name):
    if not isinstance(name, str) or not name:
        raise ValueError("storage name must be a non-empty string: %r" % (name,))
    if "/" in name or "\\" in name or "\0" in name or name[0] == "." or name.endswith(TMP):
        raise ValueError("bad storage name %r (a plain file name, no '/', '..' or .tmp)"
                         % (name,))
    return name


def _as_bytes(data):
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


def _sync_file(f):
    f.flush()
    if _fsync is not None:
        _fsync(f.fileno())


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _makedirs(path):
    if not path or _exists(path):
        return
    parent = path.rstrip("/")
    i = parent.rfind("/")
    if i > 0:
        _makedirs(parent[:i])
    try:
        os.mkdir(path)
    except OSError:
        if not _exists(path):
            raise


class FileStorage(Storage):
    """hal.interfaces.Storage on the folder `root` (see the module docstring)."""

    def __init__(self, root):
        root = root.rstrip("/") or "/"
        _makedirs(root)
        self.root = root
        self._swept = False

    def path(self, name):
        return self.root + "/" + check_name(name)

    # -- the Storage interface -----------------------------------------------------------
    def read(self, name):
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except OSError:
            if _exists(self.path(name)):
                raise
            return None

    def lines(self, name):
        """Yield the file's lines (bytes, with their "\\n"); nothing if it does not exist."""
        try:
            f = open(self.path(name), "rb")
        except OSError:
            if _exists(self.path(name)):
                raise
            return
        try:
            while True:
                line = f.readline()
                if not line:
                    break
                yield line
        finally:
            f.close()

    def write(self, name, data):
        path = self.path(name)
        data = _as_bytes(data)
        if not self._swept:
            self._sweep()
        tmp = path + TMP
        with open(tmp, "wb") as f:
            f.write(data)
            _sync_file(f)
        self._rename(tmp, path)
        self._sync_dir()

    def append(self, name, data):
        path = self.path(name)
        data = _as_bytes(data)
        created = _fsync is not None and not _exists(path)
        with open(path, "ab") as f:
            f.write(data)
            _sync_file(f)
        if created:
            self._sync_dir()            # the new directory entry must be durable too

    def remove(self, name):
        try:
            os.remove(self.path(name))
        except OSError:
            if _exists(self.path(name)):
                raise
        self._sync_dir()

    def names(self):
        out = []
        for name in os.listdir(self.root):
            if name.endswith(TMP) or name[:1] == ".":
                continue
            out.append(name)
        out.sort()
        return out

    # -- helpers -------------------------------------------------------------------------
    def _rename(self, src, dst):
        """os.rename; a method so that tests can simulate a crash before the rename."""
        os.rename(src, dst)

    def _sweep(self):
        """Remove every leftover *.tmp (crash before a rename); once, at the first write."""
        for name in os.listdir(self.root):
            if name.endswith(TMP):
                try:
                    os.remove(self.root + "/" + name)
                except OSError:
                    pass
        self._swept = True

    def _sync_dir(self):
        if _fsync is None or not hasattr(os, "open"):
            return
        try:
            fd = os.open(self.root, os.O_RDONLY)
        except OSError:
            return
        try:
            _fsync(fd)
        except OSError:
            pass                        # some filesystems refuse fsync on a folder
        finally:
            os.close(fd)


class MemoryStorage(Storage):
    """The Storage API over a dict name -> bytearray (nothing survives the process)."""

    def __init__(self):
        self.files = {}

    def read(self, name):
        data = self.files.get(check_name(name))
        return None if data is None else bytes(data)

    def lines(self, name):
        data = self.files.get(check_name(name))
        if not data:
            return
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end + 1
            yield bytes(data[start:end])
            start = end

    def write(self, name, data):
        self.files[check_name(name)] = bytearray(_as_bytes(data))

    def append(self, name, data):
        name = check_name(name)
        held = self.files.get(name)
        if held is None:
            self.files[name] = bytearray(_as_bytes(data))
        else:
            held.extend(_as_bytes(data))

    def remove(self, name):
        self.files.pop(check_name(name), None)

    def names(self):
        out = list(self.files)
        out.sort()
        return out
