"""hal.storage_fs: FileStorage (atomic write, append, leftover .tmp) and MemoryStorage (portable)."""
import os

from hal.interfaces import Storage
from hal.storage_fs import FileStorage, MemoryStorage
try:
    from portable.tempdir import make_dir, remove_tree
except ImportError:          # tests/mp_run.py puts tests/portable itself on sys.path
    from tempdir import make_dir, remove_tree


def raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type:
        return True
    return False


def both(test):
    """Run test(storage, folder) on a MemoryStorage and on a FileStorage in a fresh folder."""
    test(MemoryStorage(), None)
    folder = make_dir()
    try:
        test(FileStorage(folder), folder)
    finally:
        remove_tree(folder)


def put_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def test_read_write_overwrite():
    def check(s, folder):
        assert isinstance(s, Storage)
        assert s.read("config") is None
        assert s.names() == []
        s.write("config", b"one")
        assert s.read("config") == b"one"
        s.write("config", b"two, longer than one")
        assert s.read("config") == b"two, longer than one"
        s.write("config", b"3")                        # shorter: no old tail left behind
        assert s.read("config") == b"3"
        s.write("empty", b"")
        assert s.read("empty") == b""
    both(check)


def test_append_remove_names():
    def check(s, folder):
        s.append("journal", b"a\n")
        s.append("journal", b"b\n")
        assert s.read("journal") == b"a\nb\n"
        s.write("config", b"{}")
        assert s.names() == ["config", "journal"]
        s.remove("config")
        s.remove("config")                             # missing: no error
        s.remove("never-there")
        assert s.read("config") is None
        assert s.names() == ["journal"]
        if folder is not None:
            assert os.listdir(folder) == ["journal"]   # no temporary left behind
    both(check)


def test_write_accepts_str_bytearray_and_memoryview():
    def check(s, folder):
        s.write("a", "text é")
        assert s.read("a") == "text é".encode("utf-8")
        s.write("b", bytearray(b"xy"))
        s.append("b", memoryview(b"z"))
        assert s.read("b") == b"xyz"
        assert isinstance(s.read("b"), bytes)
    both(check)


def test_lines_yield_each_line_and_a_torn_tail():
    def check(s, folder):
        assert list(s.lines("nothing")) == []
        s.write("j", b"1\n22\n\n333")
        assert list(s.lines("j")) == [b"1\n", b"22\n", b"\n", b"333"]
        s.write("j", b"1\n")
        assert list(s.lines("j")) == [b"1\n"]
    both(check)


def test_bad_names_are_rejected():
    def check(s, folder):
        for name in ("", "a/b", "/etc/passwd", "..", ".", "../x", ".hidden", "x.tmp",
                     "a\\b", "a\0b", None, 3):
            for call in (lambda: s.read(name), lambda: s.write(name, b"x"),
                         lambda: s.append(name, b"x"), lambda: s.remove(name)):
                assert raises(ValueError, call), name
        assert s.names() == []
    both(check)


class CrashBeforeRename(FileStorage):
    """A power cut after the temporary file was written and synced, before the rename."""

    def _rename(self, src, dst):
        raise OSError(5)


def test_write_is_atomic_old_content_survives_a_crash_before_the_rename():
    folder = make_dir()
    try:
        FileStorage(folder).write("config", b"old")
        crashing = CrashBeforeRename(folder)
        assert raises(OSError, crashing.write, "config", b"new and longer")
        assert "config.tmp" in os.listdir(folder)      # the crash left the temporary
        after = FileStorage(folder)                    # reboot
        assert after.read("config") == b"old"          # old content, whole
        assert after.names() == ["config"]             # the temporary is not a name
        after.write("config", b"new")
        assert after.read("config") == b"new"
        assert sorted(os.listdir(folder)) == ["config"]
    finally:
        remove_tree(folder)


def test_leftover_tmp_files_are_ignored_then_swept_by_the_next_write():
    folder = make_dir()
    try:
        put_file(folder + "/journal", b"kept\n")
        put_file(folder + "/journal.tmp", b"half a compac")   # crash during a compaction
        put_file(folder + "/orphan.tmp", b"x")                # its file never existed
        s = FileStorage(folder)
        assert s.read("journal") == b"kept\n"
        assert s.read("orphan") is None
        assert s.names() == ["journal"]
        s.append("journal", b"more\n")                       # appends do not touch them
        assert "journal.tmp" in os.listdir(folder)
        s.write("config", b"{}")
        assert sorted(os.listdir(folder)) == ["config", "journal"]
        assert s.read("journal") == b"kept\nmore\n"
    finally:
        remove_tree(folder)


def test_root_folder_is_created_with_its_parents():
    folder = make_dir()
    try:
        s = FileStorage(folder + "/state/charger-1/")
        s.write("config", b"{}")
        assert os.listdir(folder + "/state/charger-1") == ["config"]
        assert FileStorage(folder + "/state/charger-1").read("config") == b"{}"
    finally:
        remove_tree(folder)


def test_memory_storage_keeps_nothing_shared_between_instances():
    a, b = MemoryStorage(), MemoryStorage()
    a.write("x", b"1")
    data = bytearray(b"2")
    b.write("x", data)
    data[0] = 0x39                                     # the caller's buffer is copied
    assert a.read("x") == b"1" and b.read("x") == b"2"
