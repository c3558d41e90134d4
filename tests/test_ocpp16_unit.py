"""ChargePoint16 driven directly (sans-I/O, no sockets): the frames it produces for events."""
import json

from agent.config import Config
from agent.evse import Evse
from agent.journal import Journal
from agent.ocpp16 import ChargePoint16
from agent.params import Params
from agent.rpc import Rpc
from agent.station import LocalAuthorizer, Station
from hal.interfaces import MeterSample
from hal.storage_fs import MemoryStorage


class Bench:
    """A booted charge point on one connector; `answer()` plays a CSMS that says yes."""

    def __init__(self, storage=None):
        self.storage = storage or MemoryStorage()
        self.evse = Evse(Params())
        self.evse.cp.state = "A"          # the pilot has been seen: statuses are reported
        self.station = Station([self.evse], LocalAuthorizer("list", ["T"]))
        self.config = Config(self.storage)
        self.cp = ChargePoint16(self.station, self.config, Journal(self.storage),
                                storage=self.storage, identity={"vendor": "v", "model": "m"},
                                wall_ms=1700000000000)
        self.cp.attach(Rpc(None))
        self.sent = []
        self.cp.connection_made(0)
        self.answer(0)                    # BootNotification accepted

    def frames(self):
        out = [json.loads(frame) for frame in self.cp.take_frames()]
        self.sent.extend(out)
        return out

    def answer(self, now, transaction_id=7):
        """Answer every CALL the charge point sends until it stops sending."""
        for _ in range(50):
            calls = [f for f in self.frames() if f[0] == 2]
            if not calls:
                return
            for call in calls:
                result = {"BootNotification": {"status": "Accepted", "interval": 300,
                                               "currentTime": "2024-01-01T00:00:00Z"},
                          "StartTransaction": {"transactionId": transaction_id,
                                               "idTagInfo": {"status": "Accepted"}},
                          "Authorize": {"idTagInfo": {"status": "Accepted"}},
                          "Heartbeat": {"currentTime": "2024-01-01T00:00:00Z"}}.get(call[2], {})
                self.cp.receive(now, json.dumps([3, call[1], result]))

    def actions(self, action):
        return [f[3] for f in self.sent if f[0] == 2 and f[2] == action]


def test_start_waits_for_the_first_meter_reading():
    bench = Bench()
    evse = bench.evse
    assert evse.energy_wh is None
    evse.session_active = True
    bench.cp.on_event(evse, (100, "session_started", "T"))
    bench.answer(100)
    assert bench.actions("StartTransaction") == []        # no reading: no guessed meterStart
    evse.meter_sample(900, MeterSample(energy_import_wh=4242, current_ma=(0, 0, 0)))
    for event in evse.take_events():
        bench.cp.on_event(evse, event)
    bench.answer(900)
    (start,) = bench.actions("StartTransaction")
    assert start["meterStart"] == 4242
    assert start["timestamp"] == "2024-01-01T00:00:00.100Z"   # when the session began


def test_session_ended_before_any_reading_still_starts_and_stops():
    bench = Bench()
    evse = bench.evse
    bench.cp.on_event(evse, (100, "session_started", "T"))
    evse.energy_stop_wh = None
    bench.cp.on_event(evse, (500, "session_ended", "local", 0))
    bench.answer(500)
    assert [s["meterStart"] for s in bench.actions("StartTransaction")] == [0]
    assert [s["reason"] for s in bench.actions("StopTransaction")] == ["Local"]


def test_authorization_cache_survives_a_reboot_and_clear_cache_empties_it():
    storage = MemoryStorage()
    bench = Bench(storage)
    bench.config.change("AuthorizationCacheEnabled", "true")
    bench.cp._remember("TAG1", "Accepted")
    rebooted = Bench(storage)
    assert rebooted.cp._auth_cache == {"TAG1": "Accepted"}
    rebooted.cp.connection_lost(10)
    # offline with LocalAuthorizeOffline (default true): the cached tag is accepted
    assert rebooted.cp.check(20, "TAG1") == "Accepted"
    assert rebooted.cp.check(20, "OTHER") == "Invalid"
    assert rebooted.cp.on_ClearCache(30, {}) == {"status": "Accepted"}
    assert Bench(storage).cp._auth_cache == {}


def test_minimum_status_duration_skips_short_statuses():
    bench = Bench()
    bench.config.change("MinimumStatusDuration", "5")
    bench.answer(0)
    before = len(bench.actions("StatusNotification"))
    evse = bench.evse
    # a status that lasts 2 s is never reported; one that lasts 5 s is, once
    evse.state = "faulted"
    bench.cp.on_event(evse, (1000, "session", "faulted"))
    evse.state = "idle"
    bench.cp.on_event(evse, (3000, "session", "idle"))
    bench.cp.poll(7000)
    bench.answer(7000)
    assert len(bench.actions("StatusNotification")) == before
    evse.state = "unavailable"
    bench.cp.on_event(evse, (8000, "session", "unavailable"))
    bench.cp.poll(12999)
    bench.answer(12999)
    assert len(bench.actions("StatusNotification")) == before
    bench.cp.poll(13000)
    bench.answer(13000)
    statuses = [s["status"] for s in bench.actions("StatusNotification")[before:]]
    assert statuses == ["Unavailable"]


def charging_then_power_cut(storage, reading_wh=4000):
    """A transaction open in `storage`, its last stored energy `reading_wh`."""
    bench = Bench(storage)
    evse = bench.evse
    evse.meter_sample(100, MeterSample(energy_import_wh=reading_wh, current_ma=(0, 0, 0)))
    evse.session_active = True
    bench.cp.on_event(evse, (200, "session_started", "T"))
    bench.answer(200)
    assert [s["meterStart"] for s in bench.actions("StartTransaction")] == [reading_wh]


def test_power_loss_stop_waits_for_the_meter_and_survives_a_second_cut():
    storage = MemoryStorage()
    charging_then_power_cut(storage)
    Bench(storage).cp.poll(50)          # boots, no reading yet: the second cut comes
    bench = Bench(storage)
    bench.cp.poll(50)
    bench.answer(50)
    assert bench.actions("StopTransaction") == []       # still waiting for a reading
    bench.evse.meter_sample(700, MeterSample(energy_import_wh=4031, current_ma=(0, 0, 0)))
    bench.cp.poll(700)
    bench.answer(700)
    (stop,) = bench.actions("StopTransaction")
    assert (stop["reason"], stop["meterStop"]) == ("PowerLoss", 4031)
    assert stop["timestamp"] == "2024-01-01T00:00:00.200Z"     # when it was last seen
    assert Bench(storage).actions("StopTransaction") == []      # closed once only


def test_power_loss_stop_keeps_the_stored_energy_when_the_meter_never_answers():
    storage = MemoryStorage()
    charging_then_power_cut(storage)
    bench = Bench(storage)
    bench.cp.poll(50)
    bench.cp.poll(50 + bench.evse.params.meter_timeout_ms - 1)
    bench.answer(50)
    assert bench.actions("StopTransaction") == []
    bench.cp.poll(50 + bench.evse.params.meter_timeout_ms)
    bench.answer(50 + bench.evse.params.meter_timeout_ms)
    (stop,) = bench.actions("StopTransaction")
    assert (stop["reason"], stop["meterStop"]) == ("PowerLoss", 4000)


class FullStorage(MemoryStorage):
    """A flash that is full for `names`: every write to them fails, as a full disk does."""

    def __init__(self, names=()):
        super().__init__()
        self.names = set(names)

    def write(self, name, data):
        if name in self.names:
            raise OSError(28, "No space left on device")
        super().write(name, data)

    def append(self, name, data):
        if name in self.names:
            raise OSError(28, "No space left on device")
        super().append(name, data)


def test_a_full_flash_is_reported_and_the_transaction_goes_on_in_ram():
    storage = FullStorage()
    bench = Bench(storage)
    notes = []
    bench.cp.log = lambda now, event: notes.append(event)
    storage.names = {"open_tx", "journal"}
    bench.evse.meter_sample(100, MeterSample(energy_import_wh=4000, current_ma=(0, 0, 0)))
    bench.evse.session_active = True
    bench.cp.on_event(bench.evse, (200, "session_started", "T"))
    bench.answer(200)
    bench.evse.energy_stop_wh = 4100
    bench.cp.on_event(bench.evse, (900, "session_ended", "local", 100))
    bench.answer(900)
    assert [s["meterStart"] for s in bench.actions("StartTransaction")] == [4000]
    assert [s["meterStop"] for s in bench.actions("StopTransaction")] == [4100]
    assert any(e[0] == "storage" and e[1].startswith("open_tx not saved") for e in notes)
    assert bench.cp.journal.write_error is not None
    assert bench.evse.state != "faulted"


def test_damaged_state_files_of_the_wrong_shape_do_not_stop_a_boot():
    for name, text in (("open_tx", "[1, 2]"), ("open_tx", '"str"'), ("open_tx", "null"),
                       ("open_tx", '{"1-1": 5}'), ("open_tx", '{"1-1": {"connector": 1}}'),
                       ("availability", "[1]"), ("availability", '{"x": false}'),
                       ("auth_cache", "[]")):
        storage = MemoryStorage()
        storage.write(name, text.encode())
        bench = Bench(storage)
        assert bench.actions("StopTransaction") == [], (name, text)
        assert bench.evse.state != "unavailable", (name, text)


def test_a_session_the_full_journal_refuses_is_told():
    bench = Bench()
    notes = []
    bench.cp.log = lambda now, event: notes.append(event)
    bench.cp.journal.max_records = 0        # as full as a long outage leaves it
    bench.evse.meter_sample(100, MeterSample(energy_import_wh=10, current_ma=(0, 0, 0)))
    bench.evse.session_active = True
    bench.cp.on_event(bench.evse, (200, "session_started", "T"))
    assert bench.actions("StartTransaction") == []
    assert [e for e in notes if e[0] == "journal"] == [
        ("journal", "full (0 records waiting for the CSMS): the session on connector 1 is "
                    "refused, nothing could record it")]


def test_meter_values_the_full_journal_drops_are_told():
    bench = Bench()
    notes = []
    bench.cp.log = lambda now, event: notes.append(event)
    bench.cp.connection_lost(50)            # offline: everything stays in the journal
    bench.evse.meter_sample(100, MeterSample(energy_import_wh=10, current_ma=(0, 0, 0)))
    bench.evse.session_active = True
    bench.cp.on_event(bench.evse, (200, "session_started", "T"))
    bench.cp.journal.hard_cap = 1           # the Start alone fills it
    bench.cp.poll(200 + 60000)              # MeterValueSampleInterval: one sample, dropped
    assert bench.cp.journal.dropped == 1
    assert ("journal", "full: 1 MeterValues dropped so far, oldest first (Start and Stop "
                       "are always kept)") in notes
