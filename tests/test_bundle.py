"""`evse bundle` / `evse flash` (tools/bundle.py): what goes onto a MicroPython board."""
import hashlib
import json
import os
import sys

import pytest

from tools import boardfile
from tools.bundle import flash_plan
from tools.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIX = os.path.join(ROOT, "boards", "unix.toml")


@pytest.fixture(scope="module")
def unix_bundle(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bundle"))
    assert main(["bundle", "--board", UNIX, "--out", out]) == 0
    with open(os.path.join(out, "manifest.json")) as file:
        return out, json.load(file)


def test_the_bundle_holds_compiled_portable_modules_and_the_board(unix_bundle):
    out, manifest = unix_bundle
    files = manifest["files"]
    assert "main.py" in files and "board.json" in files
    assert "agent/ocpp16.mpy" in files and "hal/unix_sim.mpy" in files
    # CPython-only modules and source never go onto a board
    assert "agent/transport_ws.mpy" not in files and "agent/ocpp_schemas.mpy" not in files
    assert not [p for p in files if p.endswith(".py") and p != "main.py"]
    with open(os.path.join(out, "agent", "ocpp16.mpy"), "rb") as file:
        assert file.read(1) == b"M"                      # the .mpy magic byte


def test_the_manifest_sizes_and_hashes_are_the_files(unix_bundle):
    out, manifest = unix_bundle
    for path, entry in manifest["files"].items():
        with open(os.path.join(out, path), "rb") as file:
            data = file.read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
    assert manifest["total_bytes"] == sum(f["size"] for f in manifest["files"].values())


def test_board_json_is_the_validated_board(unix_bundle):
    out, _ = unix_bundle
    with open(os.path.join(out, "board.json")) as file:
        data = json.load(file)
    expected = json.loads(json.dumps(boardfile.load(UNIX)))
    expected.pop("path")
    assert data == expected


def test_a_bad_board_is_refused_naming_the_key(tmp_path, capsys):
    text = open(UNIX).read().replace('charge = "20s"', 'charge = "soon"')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["bundle", "--board", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    line = text.splitlines().index('charge = "soon"                # then the EV is full and '
                                   'opens S2') + 1 if 'charge = "soon"                #' in \
        text else None
    assert "unix.charge" in err and (line is None or ":%d:" % line in err), err
    assert not (tmp_path / "out").exists()


def test_a_linux_board_is_not_bundled(tmp_path, capsys):
    board = os.path.join(ROOT, "boards", "rpi-pilot-hat.toml")
    assert main(["bundle", "--board", board, "--out", str(tmp_path)]) == 2
    assert "is not a MicroPython board" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["", "tree"])
def test_a_folder_that_is_not_a_bundle_is_never_emptied(tmp_path, capsys, monkeypatch, out):
    """A bundle replaces its own agent/ and hal/: pointed at a source tree (here a folder
    with agent/ and hal/ of its own, or "" for the current folder) it refuses, touching
    nothing."""
    tree = tmp_path / "tree"
    for package in ("agent", "hal"):
        (tree / package).mkdir(parents=True)
        (tree / package / "mine.py").write_text("work = 1\n")
    monkeypatch.chdir(tmp_path if out else tree)
    assert main(["bundle", "--board", UNIX, "--out", out]) == 2
    assert "--out" in capsys.readouterr().err
    assert sorted(p.name for p in tree.rglob("*.py")) == ["mine.py", "mine.py"]
    assert not list(tree.rglob("*.mpy"))


def test_a_relative_out_is_filled_and_rebundling_into_it_is_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):              # the second time over its own earlier bundle
        assert main(["bundle", "--board", UNIX, "--out", "build/unix"]) == 0
    with open(tmp_path / "build" / "unix" / "manifest.json") as file:
        files = json.load(file)["files"]
    assert "agent/evse.mpy" in files
    assert all((tmp_path / "build" / "unix" / path).is_file() for path in files)


def test_a_board_that_does_not_answer_is_one_line_not_a_hang():
    from tools.bundle import BundleError, _run
    with pytest.raises(BundleError, match="no answer within"):
        _run([sys.executable, "-c", "import time; time.sleep(5)"], "/dev/pts/99", timeout=0.3)


def test_flash_dry_run_lists_every_copy_then_verify_and_reset(capsys):
    board = os.path.join(ROOT, "boards", "esp32-devkitc.toml")
    assert main(["flash", "--board", board, "--port", "/dev/ttyACM0", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    copies = [line for line in lines if " fs cp " in line]
    assert any(line.endswith("fs cp agent/ocpp16.mpy :agent/ocpp16.mpy") for line in copies)
    assert any(line.endswith("fs cp hal/mp_pilot_esp32.mpy :hal/mp_pilot_esp32.mpy")
               for line in copies)
    assert any(line.endswith("fs cp main.py :main.py") for line in copies)
    assert not any(" resume " in line for line in lines)       # a real board: soft resets
    assert all("connect /dev/ttyACM0" in line for line in lines[1:])
    assert lines[-1].endswith("connect /dev/ttyACM0 reset")
    assert "verify" in lines[-2]


def test_flash_copies_only_what_differs_on_the_board(unix_bundle):
    _, manifest = unix_bundle
    on_board = {path: entry["sha256"] for path, entry in manifest["files"].items()}
    on_board["agent/evse.mpy"] = "0" * 64            # an older build of one module
    del on_board["board.json"]                        # never copied yet
    changed, plan = flash_plan(manifest, "PORT", on_board)
    assert sorted(changed) == ["agent/evse.mpy", "board.json"]
    assert [c[3:] for c in plan] == [["fs", "mkdir", ":agent"],
                                     ["fs", "cp", "agent/evse.mpy", ":agent/evse.mpy"],
                                     ["fs", "cp", "board.json", ":board.json"]]


@pytest.mark.parametrize("name, port", [("esp32-devkitc", "esp32"), ("rp2040-pico", "rp2")])
def test_a_microcontroller_bundle_holds_its_ports_drivers_only(tmp_path, name, port):
    from tools.bundle import bundle
    board = boardfile.load(os.path.join(ROOT, "boards", name + ".toml"))
    manifest = bundle(board, str(tmp_path))
    files = manifest["files"]
    assert "hal/mp_pilot_%s.mpy" % port in files and "hal/mp_drivers.mpy" in files
    assert "hal/modbus_rtu.mpy" in files
    # the board's own meter map travels in board.json; the maps of every meter stay home
    assert "hal/meter_profiles.mpy" not in files
    from hal.meter_profiles import PROFILES
    with open(os.path.join(str(tmp_path), "board.json")) as file:
        meter = json.load(file)["meter"]
    assert [tuple(row) for row in meter["profile"]["rows"]] == \
        list(PROFILES[meter["model"]]["rows"])
    other = "rp2" if port == "esp32" else "esp32"
    assert "hal/mp_pilot_%s.mpy" % other not in files and "hal/unix_sim.mpy" not in files


def test_a_microcontroller_board_without_its_port_names_the_key(tmp_path):
    text = open(os.path.join(ROOT, "boards", "rp2040-pico.toml")).read()
    path = tmp_path / "board.toml"
    path.write_text(text.replace('port = "rp2"\n', ""))
    with pytest.raises(boardfile.BoardError) as caught:
        boardfile.load(str(path))
    assert any("mcu.port: hal = \"micropython\" needs port" in p for p in caught.value.problems)


@pytest.fixture
def unix_port_on_a_pty(tmp_path):
    """A MicroPython unix port REPL behind a pty pair, its files in tmp_path/board: what
    mpremote sees of a board on a serial port."""
    import subprocess
    import tty
    from simulator.rs485 import Rs485Line
    folder = tmp_path / "board"
    folder.mkdir()
    line = Rs485Line(baud=115200, pace=False).start()
    fd = os.open(line.device_path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    repl = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "micropython")],
                            stdin=fd, stdout=fd, stderr=fd, cwd=str(folder))
    try:
        yield line.client_path, folder
    finally:
        repl.kill()
        repl.wait()
        os.close(fd)
        line.stop()


def test_flash_to_the_unix_port_through_a_pty_copies_what_differs_and_verifies(
        unix_port_on_a_pty, capsys):
    port, folder = unix_port_on_a_pty
    assert main(["flash", "--board", UNIX, "--port", port]) == 0
    first = capsys.readouterr().out
    manifest_files = _bundled_manifest()["files"]
    for path, entry in manifest_files.items():
        data = (folder / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], path
    assert first.startswith("%d of %d files copied" % (len(manifest_files),
                                                        len(manifest_files)))
    (folder / "agent" / "evse.mpy").write_bytes(b"an older build")
    assert main(["flash", "--board", UNIX, "--port", port]) == 0
    assert capsys.readouterr().out.startswith("1 of %d files copied, all verified" %
                                              len(manifest_files))


def _bundled_manifest():
    import tempfile
    from tools.bundle import bundle
    with tempfile.TemporaryDirectory() as out:
        return bundle(boardfile.load(UNIX), out)


def test_flash_romfs_dry_run_deploys_the_image_then_clears_stale_modules(capsys):
    board = os.path.join(ROOT, "boards", "rp2040-pico.toml")
    assert main(["flash", "--board", board, "--port", "/dev/ttyACM0", "--dry-run",
                 "--romfs"]) == 0
    commands = [line.split(" connect /dev/ttyACM0 ")[1] for line in
                capsys.readouterr().out.splitlines()[1:]]
    assert commands == ["exec <print the SHA-256 of each bundle file>",
                        "romfs deploy romfs.img", "fs rm -r :agent", "fs rm -r :hal",
                        "fs cp board.json :board.json", "fs cp main.py :main.py",
                        "exec <verify the SHA-256 of each file>", "reset"]


def test_a_romfs_bundle_holds_every_module_in_its_image(tmp_path):
    from tools.bundle import ROMFS_IMAGE, bundle, expected_on_board
    board = boardfile.load(os.path.join(ROOT, "boards", "esp32-devkitc.toml"))
    manifest = bundle(board, str(tmp_path / "rom"), romfs=True)
    plain = bundle(board, str(tmp_path / "plain"))
    # the same compiled modules, now inside the image; the filesystem gets two files
    assert manifest["romfs"] == {p: e for p, e in plain["files"].items() if p.endswith(".mpy")}
    assert sorted(manifest["files"]) == ["board.json", "main.py"]
    image = (tmp_path / "rom" / ROMFS_IMAGE).read_bytes()
    assert manifest["romfs_image"]["sha256"] == hashlib.sha256(image).hexdigest()
    assert image.startswith(b"\xd2\xcd\x31")           # the ROMFS header
    expected = expected_on_board(manifest)
    assert expected["/rom/agent/evse.mpy"] == plain["files"]["agent/evse.mpy"]["sha256"]
    assert expected["agent/evse.mpy"] is None          # no stale copy may shadow the image


def test_flash_romfs_redeploys_only_when_a_module_in_the_image_differs(tmp_path):
    from tools.bundle import bundle, expected_on_board
    board = boardfile.load(os.path.join(ROOT, "boards", "esp32-devkitc.toml"))
    manifest = bundle(board, str(tmp_path), romfs=True)
    on_board = expected_on_board(manifest)
    assert flash_plan(manifest, "PORT", on_board) == ([], [])
    on_board["agent/evse.mpy"] = "0" * 64            # a module folder left from before
    assert [c[3:] for c in flash_plan(manifest, "PORT", on_board)[1]] == \
        [["fs", "rm", "-r", ":agent"]]
    on_board = dict(expected_on_board(manifest), **{"/rom/hal/mp_drivers.mpy": "1" * 64})
    changed, plan = flash_plan(manifest, "PORT", on_board)
    assert changed == ["romfs.img"] and [c[3:] for c in plan] == [
        ["romfs", "deploy", "romfs.img"]]


def test_flash_romfs_to_the_unix_port_copies_the_image_as_a_file(unix_port_on_a_pty, capsys):
    port, folder = unix_port_on_a_pty
    assert main(["flash", "--board", UNIX, "--port", port, "--romfs"]) == 0
    assert capsys.readouterr().out.startswith("3 of 3 files copied, all verified")
    assert sorted(p.name for p in folder.iterdir()) == ["board.json", "main.py", "romfs.img"]
