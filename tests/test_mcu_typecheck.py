"""The microcontroller drivers type-checked against each port's MicroPython stubs (mypy).

The unix port that runs tests/portable has no machine.Pin/PWM/ADC/UART, so these checks are
what stands between a misused hardware API (a method one port lacks, a wrong argument type)
and a board. Each port is its own target with its own typeshed (spec/libraries.md §9): the
stub packages write machine.pyi and friends at the top of their folder, so esp32 and rp2
would overwrite each other (and shadow CPython's stdlib in a venv); they are installed with
`pip install --no-deps --target` into a cache folder per port and version instead
($EVSE_STUBS_CACHE, else ~/.cache/evse-agent/mcu-stubs).

- every port's files pass: hal/mp_drivers.py, hal/mp_pilot.py, hal/modbus_rtu.py and the
  port's own pilot module;
- the ESP32 pilot checked against the RP2 stubs fails on ADC.read_uv (the RP2 port has
  only read_u16), and deliberately wrong snippets fail on the port that lacks the API while
  passing on the one that has it, so a pass above means something.

Not caught by stubs (spec/libraries.md §9): missing stdlib modules (dataclasses, logging:
resolved from the CPython-shaped stdlib stubs) and `asyncio.Queue`; running tests/portable
under the unix port catches those.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDLIB_STUBS = "micropython-stdlib-stubs==1.29.0.post2"
PORTS = {
    "esp32": ("micropython-esp32-stubs==1.29.0.post1", "hal/mp_pilot_esp32.py"),
    "rp2": ("micropython-rp2-stubs==1.29.0.post1", "hal/mp_pilot_rp2.py"),
}
SHARED = ["hal/mp_drivers.py", "hal/mp_pilot.py", "hal/modbus_rtu.py"]

# check_untyped_defs: the drivers have no annotations (MicroPython style), and mypy skips
# unannotated bodies without it. The stubs' own internals have errors of their own; the
# agent core and the profile tables are CPython-shaped code checked elsewhere, followed only
# for their types (profiles: not at all, they are data whose inferred types get in the way).
MYPY_INI = """\
[mypy]
python_version = 3.10
check_untyped_defs = True
warn_unused_ignores = True

[mypy-machine,vfs,rp2,rp2.*,esp,esp32,_mpy_shed.*,stdlib.*]
ignore_errors = True

[mypy-agent.*,hal.interfaces,hal.modbus_meter]
ignore_errors = True

[mypy-hal.meter_profiles]
follow_imports = skip
"""


def _cache_root():
    return os.environ.get("EVSE_STUBS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "evse-agent", "mcu-stubs")


def stubs(port):
    """The folder holding `port`'s stubs (and the stdlib stubs), installed on first use."""
    package = PORTS[port][0]
    folder = os.path.join(_cache_root(), "%s-%s-%s" % (
        port, package.split("==")[1], STDLIB_STUBS.split("==")[1]))
    if os.path.exists(os.path.join(folder, "machine.pyi")):
        return folder
    os.makedirs(_cache_root(), exist_ok=True)
    partial = "%s.%d.partial" % (folder, os.getpid())
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--target", partial, package, STDLIB_STUBS],
        capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.fail("could not install %s + %s into %s:\n%s" % (
            package, STDLIB_STUBS, partial, done.stderr[-2000:]))
    try:
        os.rename(partial, folder)              # another run may have won the race: fine
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def mypy(port, files, tmp_path):
    """(exit status, output) of mypy on `files` against `port`'s stubs."""
    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is missing: pip install -e '.[dev]'")
    typeshed = stubs(port)
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_INI)
    env = dict(os.environ, MYPYPATH=typeshed)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config),
         "--custom-typeshed-dir", typeshed, "--cache-dir", str(tmp_path / "cache"),
         "--no-color-output", "--show-error-codes"] + list(files),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("port", sorted(PORTS))
def test_drivers_type_check_against_their_ports_stubs(port, tmp_path):
    status, output = mypy(port, SHARED + [PORTS[port][1]], tmp_path)
    assert status == 0, output
    assert "Success: no issues found in 4 source files" in output, output


def test_the_esp32_pilot_does_not_pass_as_rp2_code(tmp_path):
    status, output = mypy("rp2", ["hal/mp_pilot_esp32.py"], tmp_path)
    assert status == 1, output
    assert 'hal/mp_pilot_esp32.py' in output and \
        '"ADC" has no attribute "read_uv"' in output, output


# snippet -> {port: the error it must raise there, or None: must pass}
SNIPPETS = {
    # calibrated microvolts exist on ESP32 only
    "uses_read_uv": ("""
        from machine import ADC, Pin

        def pilot_uv():
            return ADC(Pin(26)).read_uv() // 1000
        """, {"esp32": None, "rp2": '"ADC" has no attribute "read_uv"'}),
    # the rp2 module (PIO state machines) exists on RP2 only
    "uses_pio": ("""
        import rp2
        from machine import Pin

        def sampler():
            return rp2.StateMachine(0, freq=2000, set_base=Pin(16))
        """, {"rp2": None, "esp32": 'Cannot find implementation or library stub for '
                                    'module named "rp2"'}),
    # wrong on every port: a duty cycle is an int
    "wrong_argument": ("""
        from machine import PWM, Pin

        def half():
            PWM(Pin(5), freq=1000).duty_u16("half")
        """, {"esp32": 'matches argument type "str"', "rp2": 'matches argument type "str"'}),
}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_misused_port_apis_are_caught(name, tmp_path):
    source, expected = SNIPPETS[name]
    path = tmp_path / (name + ".py")
    path.write_text(textwrap.dedent(source))
    for port, error in sorted(expected.items()):
        status, output = mypy(port, [str(path)], tmp_path / port)
        if error is None:
            assert status == 0, "%s on %s:\n%s" % (name, port, output)
        else:
            assert status == 1 and error in output, "%s on %s:\n%s" % (name, port, output)
