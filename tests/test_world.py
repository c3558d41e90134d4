"""simulator.world, simulator.ev, simulator.clock: the simulated hardware in virtual time."""
import asyncio
import time

import pytest

from simulator import clock
from simulator.ev import EV_MACHINE, NOMINAL_VOLTAGE_DV, Ev
from simulator.world import (RCD_AC_TRIP_MA, RCD_DC_TRIP_MA, SUPPLY_OHMS_MILLI, SimConnector,
                             World)


def run(body, **connector_options):
    """Run `body(world, connector, loop)` in virtual time with one bound SimConnector."""
    async def main():
        world = World()
        connector = world.add(SimConnector(world, 1, **connector_options))
        world.bind()
        return await body(world, connector, asyncio.get_running_loop())
    return clock.run(main())


async def sleep_ms(ms):
    await asyncio.sleep(ms / 1000)


def virtual_ms(loop):
    return loop.clock.us // 1000


async def charging(world, c, ev, duty=533):
    """Plug `ev`, offer PWM, let the EV close S2 and close the contactor behind it; returns
    once the EV draws its current (plug + S2 delay + close_ms + current delay)."""
    c.plug(ev)
    c.pilot.set_pwm(duty)
    c.driver(True)
    await sleep_ms(ev.delay_ms)
    assert ev.state == "requesting"
    c.contactor.set(True)
    await sleep_ms(c.contactor.close_ms)
    assert c.contactor.closed
    await sleep_ms(ev.delay_ms)
    assert ev.current_ma > 0


# ------------------------------------------------------------------------------ virtual clock

def test_virtual_hour_takes_no_wall_time():
    async def main():
        loop = asyncio.get_running_loop()
        before = loop.time()
        await asyncio.sleep(3600)
        return before, loop.time(), loop.clock.us

    started = time.perf_counter()
    before, after, us = clock.run(main())
    assert time.perf_counter() - started < 0.5
    assert before == 0
    assert after - before == 3600
    assert us == 3_600_000_000


def test_virtual_clock_lands_on_exact_milliseconds():
    async def main():
        loop = asyncio.get_running_loop()
        stamps = []
        for ms in (1, 20, 30, 500, 999, 3000):
            await sleep_ms(ms)
            stamps.append(loop.clock.us)
        return stamps

    assert clock.run(main()) == [1000, 21000, 51000, 551000, 1550000, 4550000]


@pytest.mark.parametrize("ms", [1001, 1003, 2002, 2030, 4097])
def test_world_now_ms_is_the_virtual_millisecond(ms):
    """World.now_ms() must read the virtual clock exactly (the clock is integer us)."""
    async def body(world, c, loop):
        await sleep_ms(ms)
        return virtual_ms(loop), world.now_ms()

    assert run(body) == (ms, ms)


# ------------------------------------------------------------------------------ contactor

def test_contactor_travel_times_and_feedback():
    async def body(world, c, loop):
        k = c.contactor
        k.close_ms, k.open_ms = 30, 20
        seen = []
        k.set(True)
        await sleep_ms(29)
        seen.append((k.closed, k.feedback()))
        await sleep_ms(1)
        seen.append((k.closed, k.feedback()))
        k.set(False)
        await sleep_ms(19)
        seen.append((k.closed, k.feedback()))
        await sleep_ms(1)
        seen.append((k.closed, k.feedback()))
        return seen, k.commands

    seen, commands = run(body)
    assert seen == [(False, False), (True, True), (True, True), (False, False)]
    assert commands == [(0, True), (30, False)]


def test_contactor_custom_times():
    async def body(world, c, loop):
        k = c.contactor
        k.close_ms, k.open_ms = 250, 75
        k.set(True)
        await sleep_ms(249)
        a = k.closed
        await sleep_ms(1)
        b = k.closed
        k.set(False)
        await sleep_ms(74)
        d = k.closed
        await sleep_ms(1)
        return a, b, d, k.closed

    assert run(body) == (False, True, True, False)


def test_contactor_repeated_command_does_not_restart_travel():
    async def body(world, c, loop):
        k = c.contactor
        k.set(True)
        await sleep_ms(20)
        k.set(True)                 # same command again: the coil is already energised
        await sleep_ms(10)
        return k.closed

    assert run(body) is True


def test_contactor_reversed_mid_travel_never_closes():
    async def body(world, c, loop):
        k = c.contactor
        k.set(True)
        await sleep_ms(10)
        k.set(False)
        await sleep_ms(100)
        return k.closed

    assert run(body) is False


def test_contactor_without_feedback_contact():
    async def body(world, c, loop):
        c.contactor.set(True)
        await sleep_ms(30)
        return c.contactor.closed, c.contactor.feedback()

    assert run(body, contactor_feedback=False) == (True, None)


def test_welded_contactor_stays_closed_and_feedback_says_so():
    async def body(world, c, loop):
        k = c.contactor
        k.set(True)
        await sleep_ms(30)
        c.inject("contactor_weld", True)
        k.set(False)
        await sleep_ms(1000)
        welded = (k.closed, k.feedback())
        c.inject("contactor_weld", False)     # freed (cleared) while commanded open: opens
        freed = k.closed
        return welded, freed

    assert run(body) == ((True, True), False)


def test_weld_on_an_open_contactor_does_not_close_it():
    async def body(world, c, loop):
        c.inject("contactor_weld", True)
        await sleep_ms(100)
        return c.contactor.closed

    assert run(body) is False


def test_stuck_open_contactor_never_closes():
    async def body(world, c, loop):
        k = c.contactor
        c.inject("contactor_stuck_open", True)
        k.set(True)
        await sleep_ms(1000)
        stuck = (k.closed, k.feedback())
        c.inject("contactor_stuck_open", False)   # freed while commanded closed: closes
        return stuck, k.closed

    assert run(body) == ((False, False), True)


# ------------------------------------------------------------------------------ RCD

async def energized(world, c, leakage_ac=0, leakage_dc=0):
    c.plug(Ev(delay_ms=500))
    c.contactor.set(True)
    await sleep_ms(c.contactor.close_ms)
    assert c.powered()
    c.rcd.leakage_ac_ma, c.rcd.leakage_dc_ma = leakage_ac, leakage_dc
    c.refresh()


def test_rcd_thresholds():
    assert (RCD_DC_TRIP_MA, RCD_AC_TRIP_MA) == (6, 30)


@pytest.mark.parametrize("ac, dc, kind", [(0, 6, "dc"), (0, 8, "dc"), (30, 0, "ac"),
                                          (35, 0, "ac"), (35, 8, "dc")])
def test_rcd_trips_after_trip_ms(ac, dc, kind):
    async def body(world, c, loop):
        await energized(world, c, ac, dc)
        await sleep_ms(c.rcd.trip_ms - 1)
        before = (c.rcd.trip(), c.contactor.closed)
        await sleep_ms(1)
        return before, (c.rcd.trip(), c.contactor.closed, c.contactor.feedback())

    before, after = run(body)
    assert before == (None, True)
    assert after == (kind, False, False)      # the RCD cuts the contactor coil


@pytest.mark.parametrize("ac, dc", [(0, 5), (29, 0), (29, 5)])
def test_rcd_does_not_trip_below_threshold(ac, dc):
    async def body(world, c, loop):
        await energized(world, c, ac, dc)
        await sleep_ms(60000)
        return c.rcd.trip(), c.contactor.closed

    assert run(body) == (None, True)


def test_rcd_does_not_trip_while_not_energized():
    async def body(world, c, loop):
        c.plug(Ev())
        c.inject("rcd_dc", True)            # 8 mA DC, but the contactor is open
        c.inject("rcd_ac", True)            # 35 mA AC
        await sleep_ms(10000)
        open_ = c.rcd.trip()
        c.contactor.set(True)               # energize: trips trip_ms after the contacts close
        await sleep_ms(c.contactor.close_ms + c.rcd.trip_ms - 1)
        before = c.rcd.trip()
        await sleep_ms(1)
        return open_, before, c.rcd.trip()

    assert run(body) == (None, None, "dc")


def test_rcd_no_ev_no_trip():
    async def body(world, c, loop):
        c.contactor.set(True)
        await sleep_ms(30)
        c.inject("rcd_dc", True)
        await sleep_ms(1000)
        return c.contactor.closed, c.rcd.trip()

    assert run(body) == (True, None)


def test_rcd_leakage_gone_before_trip_time_does_not_trip():
    async def body(world, c, loop):
        await energized(world, c, 0, 8)
        await sleep_ms(10)
        c.inject("rcd_dc", False)
        await sleep_ms(100)
        return c.rcd.trip(), c.contactor.closed

    assert run(body) == (None, True)


def test_rcd_reset_fails_while_leakage_is_energized():
    async def body(world, c, loop):
        await energized(world, c, 0, 8)
        pending_reset = c.rcd.reset()       # residual current flowing right now
        await sleep_ms(c.rcd.trip_ms)
        tripped = c.rcd.trip()
        return pending_reset, tripped

    assert run(body) == (False, "dc")


def test_rcd_reset_with_welded_contactor_fails_then_succeeds_when_cleared():
    async def body(world, c, loop):
        await energized(world, c, 0, 0)
        c.inject("contactor_weld", True)
        c.inject("rcd_dc", True)
        await sleep_ms(c.rcd.trip_ms)
        tripped = (c.rcd.trip(), c.contactor.closed)       # the weld keeps it live
        failed = c.rcd.reset()
        still = c.rcd.trip()
        c.inject("rcd_dc", False)
        ok = c.rcd.reset()
        return tripped, failed, still, ok, c.rcd.trip()

    assert run(body) == (("dc", True), False, "dc", True, None)


def test_rcd_reset_after_trip_rearms_the_contactor():
    async def body(world, c, loop):
        await energized(world, c, 0, 8)
        await sleep_ms(c.rcd.trip_ms)
        assert c.rcd.trip() == "dc" and c.contactor.cut_by_rcd
        c.inject("rcd_dc", False)
        ok = c.rcd.reset()
        c.contactor.set(False)
        c.contactor.set(True)
        await sleep_ms(c.contactor.close_ms)
        return ok, c.rcd.trip(), c.contactor.closed

    assert run(body) == (True, None, True)


# ------------------------------------------------------------------------------ meter

def test_sagged_voltage_and_power_formula():
    # 16 A through 0.5 Ohm sags 8 V: 230.0 V -> 222.0 V, 3 x 222 V x 16 A = 10656 W
    assert SUPPLY_OHMS_MILLI == 500 and NOMINAL_VOLTAGE_DV == 2300
    sag_dv = 16000 * SUPPLY_OHMS_MILLI // 100000
    assert sag_dv == 80
    assert 3 * (2300 - sag_dv) * 16000 // 10000 == 10656

    async def body(world, c, loop):
        await charging(world, c, Ev(capacity_wh=100000, max_current_ma=16000))
        sample = c.meter.sample()
        return (c.phase_currents_ma(), c.phase_voltages_dv(), c.power_w(), sample.power_w,
                sample.power_w_phases, sample.current_ma, sample.voltage_dv,
                sample.frequency_mhz)

    assert run(body) == ((16000, 16000, 16000), (2220, 2220, 2220), 10656, 10656,
                         (3552, 3552, 3552), (16000, 16000, 16000), (2220, 2220, 2220), 50000)


def _exact_hour(offset_ms):
    async def body(world, c, loop):
        await sleep_ms(offset_ms)
        ev = Ev(capacity_wh=100000, soc_permille=200, max_current_ma=16000)
        await charging(world, c, ev)
        start = (c.meter.sample(), c.meter.import_wms)
        await asyncio.sleep(3600)
        end = (c.meter.sample(), c.meter.import_wms)
        return start, end, ev

    (s0, w0), (s1, w1), ev = run(body)
    return s0, s1, w1 - w0, ev


def test_meter_integrates_exactly_one_hour():
    s0, s1, wms, ev = _exact_hour(0)
    assert s1.timestamp_ms - s0.timestamp_ms == 3_600_000
    assert wms == 10656 * 3_600_000                  # W x ms, no rounding anywhere
    assert s0.energy_import_wh == 0
    assert s1.energy_import_wh == 10656
    assert s1.energy_export_wh == 0
    # the battery got the same energy: 20 % of 100 kWh + 10.656 kWh (milli-Wh)
    assert ev.energy_mwh == 100000 * 200 + 10656 * 1000


@pytest.mark.parametrize("offset_ms", [1000, 4000])
def test_meter_integrates_exactly_one_hour_from_any_start(offset_ms):
    """Starting at another instant of virtual time changes nothing (no float clock error)."""
    s0, s1, wms, ev = _exact_hour(offset_ms)
    assert s1.timestamp_ms - s0.timestamp_ms == 3_600_000
    assert wms == 10656 * 3_600_000
    assert s1.energy_import_wh == 10656


def test_single_phase_ev_on_three_phase_connector():
    async def body(world, c, loop):
        await charging(world, c, Ev(capacity_wh=100000, max_current_ma=16000, phases=1))
        w0 = c.meter.import_wms
        await asyncio.sleep(3600)
        c.meter.sample()
        return c.phase_currents_ma(), c.power_w(), c.meter.import_wms - w0

    assert run(body) == ((16000, 0, 0), 3552, 3552 * 3_600_000)


def test_meter_never_goes_backwards():
    async def body(world, c, loop):
        readings = []

        def read():
            s = c.meter.sample()
            readings.append((s.timestamp_ms, s.energy_import_wh, c.meter.import_wms))

        ev = Ev(capacity_wh=20000, soc_permille=600, max_current_ma=32000)
        await charging(world, c, ev)
        for step in range(40):
            await sleep_ms(37_000 + 1_013 * step)
            read()
            if step == 10:
                c.driver(False)                    # pause
            if step == 14:
                c.driver(True)                     # resume
            if step == 20:
                c.pilot.set_pwm(167)               # 10 A
            if step == 25:
                c.contactor.set(False)
            if step == 27:
                c.contactor.set(True)
        c.unplug()
        read()
        await sleep_ms(60_000)
        read()
        return readings, ev

    readings, ev = run(body)
    for before, after in zip(readings, readings[1:]):
        assert after[0] >= before[0]
        assert after[1] >= before[1]
        assert after[2] >= before[2]
    assert readings[-1][1] == readings[-2][1]          # nothing flows after unplug
    assert readings[-1][1] > 0


# ------------------------------------------------------------------------------ EV

def test_ev_closes_s2_after_its_delay():
    async def body(world, c, loop):
        ev = Ev(delay_ms=700)
        c.plug(ev)
        c.pilot.set_pwm(533)
        b = c.plateaus()
        c.driver(True)
        await sleep_ms(699)
        before = ev.state
        await sleep_ms(1)
        return b, before, ev.state, c.plateaus()

    assert run(body) == ((8978, -12000), "connected", "requesting", (5992, -12000))


def test_ev_does_not_ask_without_pwm():
    async def body(world, c, loop):
        ev = Ev()
        c.plug(ev)
        c.driver(True)
        await sleep_ms(10000)               # pilot x1: no current offered
        return ev.state, c.plateaus()

    assert run(body) == ("connected", (8978, 8978))


def test_ev_follows_pwm_change_after_delay():
    async def body(world, c, loop):
        ev = Ev(capacity_wh=100000, max_current_ma=32000, delay_ms=500)
        await charging(world, c, ev, duty=533)
        full = c.ev_current_ma()
        c.pilot.set_pwm(267)                # 16.02 A
        await sleep_ms(499)
        before = c.ev_current_ma()
        await sleep_ms(1)
        after = c.ev_current_ma()
        c.pilot.set_pwm(100)                # 6 A
        await sleep_ms(500)
        return full, before, after, c.ev_current_ma()

    assert run(body) == (31980, 31980, 16020, 6000)


def test_ev_opens_s2_after_pwm_stops():
    async def body(world, c, loop):
        ev = Ev(capacity_wh=100000, delay_ms=500)
        await charging(world, c, ev)
        c.pilot.set_static("x1")
        await sleep_ms(499)
        before = (ev.state, c.ev_current_ma())    # still drawing until S2 opens
        await sleep_ms(1)
        return before, ev.state, c.ev_current_ma(), c.plateaus()

    assert run(body) == (("requesting", 31980), "connected", 0, (8978, 8978))


def test_full_battery_opens_s2():
    async def body(world, c, loop):
        # 99 % of 10 kWh: the taper allows 32 A x (1000 - 990) / 200 = 1.6 A, just above 1 A
        ev = Ev(capacity_wh=10000, soc_permille=990, max_current_ma=32000, delay_ms=500)
        await charging(world, c, ev)
        start = c.ev_current_ma()
        for _ in range(600):
            await sleep_ms(1000)
            if ev.state != "requesting":
                break
        return start, ev.state, ev.full(), c.ev_current_ma(), c.plateaus()

    start, state, full, current, plateau = run(body)
    assert start == 1600
    assert state == "connected"
    assert full
    assert current == 0
    assert plateau == (8978, -12000)        # back to B while the PWM stays on


def test_ventilation_request_shows_d():
    async def body(world, c, loop):
        ev = Ev()
        c.plug(ev)
        c.pilot.set_pwm(533)
        c.driver(True)
        await sleep_ms(500)
        c.inject("ventilation", True)
        return ev.letter, c.plateaus()

    assert run(body) == ("D", (2923, -12000))


def test_unplug_returns_to_a():
    async def body(world, c, loop):
        ev = Ev()
        await charging(world, c, ev)
        c.unplug()
        return ev.state, ev.letter, c.plateaus(), c.ev_current_ma(), c.powered()

    assert run(body) == ("unplugged", "A", (12000, -12000), 0, False)


def test_cable_left_in_the_socket_keeps_its_pp_until_taken_out():
    """`unplug end=ev`: the pilot sees no EV, the socket's PP still reads the cable's
    resistor; the same cable then takes the car back, or leaves the socket (PP open)."""
    async def body(world, c, loop):
        ev = Ev()
        await charging(world, c, ev)
        c.unplug("ev")
        left = (c.ev, c.plateaus(), c.powered(), c.pp.read_ohms(), c.cable_in_socket)
        c.plug(Ev())                         # the car comes back to the same cable
        back = (c.ev.letter, c.pp.read_ohms())
        c.unplug("ev")
        c.unplug("socket")
        return left, back, (c.pp.read_ohms(), c.cable_in_socket)

    left, back, removed = run(body)
    assert left == (None, (12000, -12000), False, 220, True)
    assert back == ("B", 220)
    assert removed == (None, False)


def test_unplug_ends_of_the_cable():
    """`unplug` (both ends) and `unplug end=socket` free the socket; a tethered cable has
    no socket end to pull out."""
    async def socket(world, c, loop):
        found = []
        for end in ("both", "socket"):
            c.plug(Ev())
            c.unplug(end)
            found.append((c.ev, c.pp.read_ohms()))
        return found

    async def tethered(world, c, loop):
        c.plug(Ev())
        c.unplug("ev")                       # the cable stays on the charger: plain unplug
        gone = c.ev
        with pytest.raises(ValueError, match="tethered cable"):
            c.unplug("socket")
        return gone, c.cable_in_socket

    assert run(socket) == [(None, None), (None, None)]
    assert run(tethered, socket=False) == (None, False)


# ------------------------------------------------------------------------------ one machine

def test_one_machine_serves_many_evs():
    before = len(EV_MACHINE.models)
    evs = [Ev() for _ in range(50)]
    assert len(EV_MACHINE.models) == before + 50
    assert all(any(m is ev for m in EV_MACHINE.models) for ev in evs)
    evs[0].plug_in()
    evs[1].plug_in()
    evs[1].driver_wants_charge = True
    evs[1].pilot_mode, evs[1].duty = "pwm", 533
    evs[1].close_s2()
    evs[2].close_s2()                        # invalid from "unplugged": ignored
    assert [ev.state for ev in evs[:4]] == ["connected", "requesting", "unplugged", "unplugged"]
    assert all(ev.state == "unplugged" for ev in evs[2:])


def test_guard_keeps_s2_open_without_an_offer():
    ev = Ev()
    ev.plug_in()
    ev.driver_wants_charge = True
    assert ev.close_s2() is False and ev.state == "connected"     # x1: nothing offered
    ev.pilot_mode, ev.duty = "pwm", 533
    assert ev.close_s2() is True and ev.state == "requesting"
    assert ev.open_s2() is False and ev.state == "requesting"     # still wants power
    ev.driver_wants_charge = False
    assert ev.open_s2() is True and ev.state == "connected"
