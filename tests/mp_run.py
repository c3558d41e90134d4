"""Run the portable tests (tests/portable/test_*.py) under MicroPython.

From the repository root:

    MICROPYPATH=.frozen:. micropython -X heapsize=256k tests/mp_run.py [NAME[::TEST] ...]

- `MICROPYPATH` *replaces* MicroPython's default sys.path (spec/libraries.md §6): `.frozen` keeps
  the built-in `asyncio` importable (agent/compat.py needs it) and `.` (the repo root, since the
  command runs there) makes `agent` and `hal` importable. The interpreter puts the script's
  folder (`tests/`) in front by itself; the runner adds `tests/portable` for the test modules.
- `-X heapsize=` is the RAM budget: a test that does not fit fails with MemoryError.
- NAME selects test modules whose name contains it (`pilot`, `test_fsm`, `test_fsm.py`);
  `NAME::TEST` also selects the test functions whose name contains TEST.

Each module is imported, then every module-level callable named `test_*` is called without
arguments, in name order (MicroPython dicts do not keep definition order). The last line is
`N passed, M failed`; the exit status is 1 if anything failed (an import error counts as one
failure) and 5, as pytest's, if nothing was selected. The same file also runs on CPython
(`python tests/mp_run.py`, with the project installed), without the heap figures.
.ci/run uses this command with its measured heap budget.
"""
import gc
import os
import sys

try:
    _mem_alloc = gc.mem_alloc          # MicroPython only
except AttributeError:
    _mem_alloc = None


def _print_exception(exc):
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)       # MicroPython
    else:
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__)


def _dirname(path):
    i = path.rfind("/")
    if i < 0:
        return "."
    return path[:i] or "/"


def _alloc():
    gc.collect()
    return _mem_alloc() if _mem_alloc else 0


def _kb(n):
    return "%d.%d KB" % (n // 1024, (n % 1024) * 10 // 1024)


def _selected(filters, module, test=None):
    if not filters:
        return True
    for f in filters:
        mod, _, name = f.partition("::")
        if mod.endswith(".py"):
            mod = mod[:-3]
        if mod not in module:
            continue
        if test is None or not name or name in test:
            return True
    return False


def _run_module(module_name, filters, counts, heap):
    filename = module_name + ".py"
    try:
        module = __import__(module_name)
    except Exception as exc:  # an import error fails the whole file
        counts[1] += 1
        print("FAIL %s (import): %r" % (filename, exc))
        _print_exception(exc)
        return
    after_import = _alloc()
    if after_import > heap[0]:
        heap[0], heap[1] = after_import, filename + " (import)"
    names = []
    for name in dir(module):
        if name.startswith("test_") and callable(getattr(module, name)) \
                and _selected(filters, module_name, name):
            names.append(name)
    names.sort()
    for name in names:
        test = getattr(module, name)
        gc.collect()
        try:
            test()
        except Exception as exc:
            counts[1] += 1
            print("FAIL %s::%s: %r" % (filename, name, exc))
            _print_exception(exc)
        else:
            counts[0] += 1
            print("ok   %s::%s" % (filename, name))
        # Not collected yet: what the test allocated and left for the GC is counted too,
        # which is what the heap had to hold at the test's end.
        if _mem_alloc:
            used = _mem_alloc()
            if used > heap[0]:
                heap[0], heap[1] = used, "%s::%s" % (filename, name)
    if _mem_alloc:
        print("     %s: heap after import %s" % (filename, _kb(after_import)))


def main(argv):
    tests_dir = _dirname(argv[0]) if argv and argv[0] else "tests"
    portable = tests_dir + "/portable"
    if portable not in sys.path:
        sys.path.insert(0, portable)
    filters = argv[1:]

    modules = []
    for name in os.listdir(portable):
        if name.startswith("test_") and name.endswith(".py") and _selected(filters, name[:-3]):
            modules.append(name[:-3])
    modules.sort()

    counts = [0, 0]            # passed, failed
    base = _alloc()
    heap = [base, "start"]     # peak, where
    for module_name in modules:
        loaded = set(sys.modules)
        _run_module(module_name, filters, counts, heap)
        # Unload the test module and what it imported: MicroPython keeps a finished frame's
        # values alive, and each kept module would raise the peak of the next file's compile.
        for name in list(sys.modules):
            if name not in loaded:
                del sys.modules[name]
        gc.collect()
    passed, failed = counts
    peak, peak_where = heap

    if not passed and not failed:
        print("no tests selected from %s/test_*.py" % portable)
    if _mem_alloc:
        total = _mem_alloc() + gc.mem_free()
        print("heap: start %s, peak %s (at %s), heap size %s" % (
            _kb(base), _kb(peak), peak_where, _kb(total)))
    else:
        print("heap: not measured (no gc.mem_alloc on %s)" % sys.implementation.name)
    print("%d passed, %d failed" % (passed, failed))
    if failed:
        sys.exit(1)
    if not passed:
        sys.exit(5)


main(sys.argv)
