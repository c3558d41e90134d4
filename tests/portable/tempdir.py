"""Temporary folders for portable tests (MicroPython has no tempfile module)."""
import os


def make_dir():
    try:
        import tempfile
    except ImportError:             # MicroPython
        path = "/tmp/evse-test-" + os.urandom(6).hex()
        os.mkdir(path)
        return path
    return tempfile.mkdtemp(prefix="evse-test-")


def remove_tree(path):
    for entry in os.listdir(path):
        child = path + "/" + entry
        try:
            os.remove(child)
        except OSError:
            remove_tree(child)
    os.rmdir(path)
