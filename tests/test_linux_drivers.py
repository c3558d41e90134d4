"""hal/linux.py, the drivers of `evse run` on a Linux board, against sysfs trees made in a
temporary folder: by hand for the corner cases, and by simulator/sysfs_board.py (which
answers exports and plays the hardware) where the hardware has to react."""
import asyncio
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal import linux
from simulator.runner import world_from_board
from simulator.sysfs_board import SysfsBoard
from tools import boardfile

BUNDLED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "boards", "rpi-pilot-hat.toml")


def node(root, relative, **attributes):
    folder = os.path.join(str(root), relative)
    os.makedirs(folder, exist_ok=True)
    for name, value in attributes.items():
        with open(os.path.join(folder, name), "w") as file:
            file.write("%s\n" % value)
    return folder


def test_an_active_low_input_is_active_at_0_and_an_output_is_written_inverted(tmp_path):
    node(tmp_path, "class/gpio/gpio22", direction="in", value=0)
    node(tmp_path, "class/gpio/gpio24", direction="in", value=0)
    trip = linux.GpioLine(str(tmp_path), "!gpio22", output=False)
    assert trip.get() is True
    lock = linux.GpioLine(str(tmp_path), "!gpio24", output=True)
    # direction "high" = output, inactive for active-low, in one write (no glitch)
    assert (tmp_path / "class/gpio/gpio24/direction").read_text() == "high"
    lock.set(True)
    assert (tmp_path / "class/gpio/gpio24/value").read_text() == "0"


def test_an_input_is_read_fresh_from_the_same_descriptor(tmp_path):
    node(tmp_path, "class/gpio/gpio27", direction="in", value=0)
    line = linux.GpioLine(str(tmp_path), "gpio27", output=False)
    assert line.get() is False
    with open(tmp_path / "class/gpio/gpio27/value", "r+") as file:
        file.write("1\n")
    assert line.get() is True


def pilot(tmp_path, inverted=False):
    node(tmp_path, "class/pwm/pwmchip0/pwm0", period=0, duty_cycle=0, enable=0)
    node(tmp_path, "bus/iio/devices/iio:device0", in_voltage0_raw=4000, in_voltage1_raw=96,
         in_voltage_scale="0.8056640625")
    return linux.SysfsPilot(str(tmp_path), "pwmchip0/pwm0", "iio:device0/in_voltage0",
                            "iio:device0/in_voltage1",
                            linux.Calibration([[0, -12000], [3300, 12000]]), inverted)


def pwm(tmp_path, name):
    return int((tmp_path / "class/pwm/pwmchip0/pwm0" / name).read_text())


def test_pilot_duty_in_nanoseconds_and_static_levels(tmp_path):
    generator = pilot(tmp_path)
    assert (pwm(tmp_path, "period"), pwm(tmp_path, "duty_cycle"), pwm(tmp_path, "enable")) == \
        (1000000, 1000000, 1)                  # +12 V at start: no offer
    generator.set_pwm(533)
    assert pwm(tmp_path, "duty_cycle") == 533000
    generator.set_static("f")
    assert pwm(tmp_path, "duty_cycle") == 0 and pwm(tmp_path, "enable") == 1
    with pytest.raises(linux.SysfsError):
        generator.set_static("e")              # this front-end cannot output 0 V


def test_an_inverting_front_end_gets_the_complement(tmp_path):
    generator = pilot(tmp_path, inverted=True)
    generator.set_pwm(100)
    assert pwm(tmp_path, "duty_cycle") == 900000


def test_plateaus_through_the_calibration_and_a_torn_read_keeps_the_last(tmp_path):
    generator = pilot(tmp_path)
    high, low = generator.read()
    # 4000 counts x 0.8057 mV = 3222.66 mV -> -12 V + 3222.66 x 24/3.3 = +11.4375 V;
    # 96 counts = 77.34 mV -> -11.4375 V (rounded to the even millivolt)
    assert (high, low) == (11438, -11438)
    (tmp_path / "bus/iio/devices/iio:device0/in_voltage0_raw").write_text("")
    assert generator.read() == (11438, -11438)


@given(st.integers(-12000, 12000))
def test_calibration_inverts_exactly_at_the_millivolt(pilot_mv):
    calibration = linux.Calibration([[150, -12000], [3150, 12000]])
    assert calibration.value(calibration.adc_mv(pilot_mv)) == pilot_mv


@pytest.mark.parametrize("ohms", [100, 220, 680, 1500])
def test_pp_resistance_from_the_pull_up_divider(tmp_path, ohms):
    """IEC 61851-1 Table B.2 coding resistors through a 1 kOhm pull-up to 3.3 V, as a
    12-bit ADC sees them (one count is 0.8 mV): within 1 %."""
    counts = round(3300 * ohms / (ohms + 1000) / 0.8056640625)
    node(tmp_path, "bus/iio/devices/iio:device0", in_voltage2_raw=counts,
         in_voltage_scale="0.8056640625")
    pp = linux.AdcProximityPilot(str(tmp_path), "iio:device0/in_voltage2", 1000, 3300)
    assert abs(pp.read_ohms() - ohms) <= ohms // 100 + 1
    (tmp_path / "bus/iio/devices/iio:device0/in_voltage2_raw").write_text("4095")
    assert pp.read_ohms() is None              # no plug: the pull-up alone


def test_an_export_that_never_appears_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(linux, "EXPORT_WAIT_S", 0.05)
    node(tmp_path, "class/gpio")
    (tmp_path / "class/gpio/export").write_text("")
    with pytest.raises(linux.SysfsError, match="gpio17: did not appear after export"):
        linux.GpioLine(str(tmp_path), "gpio17", output=True)
    assert (tmp_path / "class/gpio/export").read_text() == "17"


def test_a_name_that_is_not_a_device_is_refused():
    with pytest.raises(linux.SysfsError, match="not a GPIO name"):
        linux.GpioLine("/nonexistent", "GPIO17", output=True)


# ---------------------------------------------------------------- with the simulated board

def bench_board(tmp_path):
    text = open(BUNDLED).read().replace('sysfs = "/sys"', 'sysfs = "%s"' % (tmp_path / "sys"))
    path = tmp_path / "board.toml"
    path.write_text(text)
    board = boardfile.load(str(path))
    return board, world_from_board(board)


def with_bench(tmp_path, work, prepare=None):
    """Run `work(hardware)` in a thread (the drivers block, as on the board) while the
    simulated board answers in the event loop."""
    board, world = bench_board(tmp_path)
    if prepare:
        prepare(world.connectors[1])

    async def main():
        sysfs = SysfsBoard(board, world)
        task = asyncio.ensure_future(sysfs.run())
        loop = asyncio.get_running_loop()
        try:
            hardware = await loop.run_in_executor(None, linux.board_hardware, board)
            return await loop.run_in_executor(None, work, hardware[1])
        finally:
            task.cancel()
    return asyncio.run(main())


def test_rcd_self_test_passes_when_the_module_trips_and_releases(tmp_path):
    assert with_bench(tmp_path, lambda hw: (hw.rcd.self_test(), hw.rcd.trip())) == (True, None)


def test_rcd_self_test_fails_when_the_module_does_not_trip(tmp_path):
    def broken(connector):
        connector.rcd.selftest_broken = True
    assert with_bench(tmp_path, lambda hw: hw.rcd.self_test(), broken) is False


def test_every_device_of_the_bundled_board_comes_up(tmp_path):
    def survey(hw):
        return (hw.pilot.read(), hw.contactor.has_feedback, hw.contactor.feedback(),
                hw.lock.feedback(), hw.rcd.trip(), hw.pp.read_ohms())
    high, low = with_bench(tmp_path, survey)[0]
    assert abs(high - 12000) <= 10 and abs(low - 12000) <= 10      # +12 V, no EV
    assert with_bench(tmp_path, survey)[1:] == (True, False, False, None, None)


def test_a_tree_left_by_an_earlier_run_shows_the_world_before_the_first_step(tmp_path):
    """`evse run` again over the same sysfs folder: the nodes the last run exported are
    still there, so the drivers need no export and may read at once. Every input already
    shows the world (no cable: PP open, +12 V pilot), and stepping the board works with the
    nodes taken over."""
    def survey(hw):
        return (hw.pilot.read(), hw.lock.feedback(), hw.pp.read_ohms())
    first = with_bench(tmp_path, survey)            # exports every node
    board, world = bench_board(tmp_path)

    async def main():
        world.bind()
        sysfs = SysfsBoard(board, world)            # no step yet
        hardware = linux.board_hardware(board)[1]
        before = survey(hardware)
        sysfs.step()
        return before, survey(hardware)
    before, after = asyncio.run(main())
    assert before == after == first
    assert first[2] is None and abs(first[0][0] - 12000) <= 10
