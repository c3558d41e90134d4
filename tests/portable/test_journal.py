"""agent.journal: durable queue of transaction messages, recovery, compaction, size policy
(portable: MemoryStorage and FileStorage in a temporary folder)."""
import os

from agent.journal import KEEP, METER, OTHER, START, Journal, crc32, record_kind
from hal.storage_fs import FileStorage, MemoryStorage
try:
    from portable.tempdir import make_dir, remove_tree
except ImportError:          # tests/mp_run.py puts tests/portable itself on sys.path
    from tempdir import make_dir, remove_tree


def both(test):
    """Run test(storage) on a MemoryStorage and on a FileStorage in a fresh folder."""
    test(MemoryStorage())
    folder = make_dir()
    try:
        test(FileStorage(folder))
    finally:
        remove_tree(folder)


class ReadOnlyApi:
    """A Storage with only the interface's methods (no lines()): the journal falls back."""

    def __init__(self):
        self.inner = MemoryStorage()

    def read(self, name):
        return self.inner.read(name)

    def write(self, name, data):
        self.inner.write(name, data)

    def append(self, name, data):
        self.inner.append(name, data)

    def remove(self, name):
        self.inner.remove(name)

    def names(self):
        return self.inner.names()


def start(tx, tag="TAG1"):
    return {"action": "StartTransaction", "tx": tx, "attempts": 0,
            "payload": {"connectorId": 1, "idTag": tag, "meterStart": 0,
                        "timestamp": "2024-01-01T00:00:00Z"}}


def meter(tx, wh):
    return {"action": "MeterValues", "tx": tx, "attempts": 0,
            "payload": {"connectorId": 1, "meterValue": [
                {"timestamp": "2024-01-01T00:01:00Z",
                 "sampledValue": [{"value": str(wh), "measurand": "Energy.Active.Import.Register"}]}]}}


def stop(tx, wh=100):
    return {"action": "StopTransaction", "tx": tx, "attempts": 0,
            "payload": {"meterStop": wh, "timestamp": "2024-01-01T01:00:00Z", "reason": "Local"}}


def lines_of(storage, name="journal"):
    data = storage.read(name) or b""
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")


def seqs(journal):
    return [seq for seq, _ in journal.pending()]


# -- basics -----------------------------------------------------------------------------------
def test_append_update_done_pending():
    def check(s):
        j = Journal(s)
        assert j.pending() == [] and len(j) == 0 and j.first() is None
        a = j.append(start("1-1"))
        b = j.append(meter("1-1", 10))
        c = j.append(stop("1-1"))
        assert (a, b, c) == (1, 2, 3) and j.seq == 3
        assert j.pending() == [(1, start("1-1")), (2, meter("1-1", 10)), (3, stop("1-1"))]
        assert j.update(2, {"attempts": 2, "transaction_id": 77})
        expected = meter("1-1", 10)
        expected["attempts"] = 2
        expected["transaction_id"] = 77
        assert j.get(2) == expected
        assert j.done(1)
        assert j.pending() == [(2, expected), (3, stop("1-1"))]
        assert j.first() == (2, expected)
        assert j.pending(limit=1) == [(2, expected)]
        assert not j.done(1) and not j.done(99)        # not pending: nothing written
        assert not j.update(1, {"attempts": 5})
        assert j.recovered == 0 and not j.full
    both(check)


def test_replay_after_reboot_keeps_order_updates_and_dones():
    def check(s):
        j = Journal(s)
        for i in range(6):
            j.append(meter("1-1", i))
        j.update(3, {"transaction_id": 5})
        j.done(1)
        j.done(4)
        again = Journal(s)                             # reboot: new journal, same storage
        assert seqs(again) == [2, 3, 5, 6]
        assert again.get(3)["transaction_id"] == 5
        assert again.get(2) == meter("1-1", 1)
        assert again.recovered == 0
        assert again.append(stop("1-1")) == 7
    both(check)


def test_pending_returns_copies():
    j = Journal(MemoryStorage())
    j.append(meter("1-1", 1))
    seq, record = j.pending()[0]
    record["attempts"] = 99
    record["payload"]["connectorId"] = 2
    assert j.get(seq) == meter("1-1", 1)


def test_non_ascii_and_odd_values_round_trip():
    def check(s):
        record = {"action": "StartTransaction", "tx": "1-1",
                  "payload": {"idTag": "Zoë \u2603 \"quoted\"\nnewline", "n": -1, "f": 1.5,
                              "none": None, "list": [1, [2, {"x": True}]]}}
        j = Journal(s)
        j.append(record)
        assert Journal(s).pending() == [(1, record)]
    both(check)


def test_crc32_native_and_fallback_agree():
    import agent.journal as journal
    assert crc32(b"123456789") == 0xCBF43926          # the CRC-32/ISO-HDLC check value
    assert crc32(b"") == 0
    saved = journal._crc32
    try:
        journal._crc32 = None
        assert crc32(b"123456789") == 0xCBF43926
        data = bytes(range(256)) * 3
        slow = crc32(data)
    finally:
        journal._crc32 = saved
    assert crc32(data) == slow


def test_record_kinds():
    assert record_kind(start("1")) == START
    assert record_kind(meter("1", 1)) == METER
    assert record_kind(stop("1")) == KEEP
    assert record_kind({"action": "Heartbeat"}) == OTHER
    assert record_kind({"tx": 1}) == OTHER

    def event(kind, trigger="Authorized"):
        return {"action": "TransactionEvent",
                "payload": {"eventType": kind, "triggerReason": trigger,
                            "transactionInfo": {"transactionId": "abc"}}}
    assert record_kind(event("Started")) == START
    assert record_kind(event("Updated", "MeterValuePeriodic")) == METER
    assert record_kind(event("Updated", "ChargingStateChanged")) == METER
    assert record_kind(event("Ended")) == KEEP


# -- recovery -----------------------------------------------------------------------------------
def journal_with_three(s):
    j = Journal(s)
    j.append(start("1-1"))
    j.append(meter("1-1", 5))
    j.update(1, {"attempts": 1})
    j.append(stop("1-1"))                             # the last line
    return j


def test_torn_last_line_at_every_length_loses_only_that_record():
    def check(s):
        journal_with_three(s)
        whole = s.read("journal")
        last = len(lines_of(s)[-1]) + 1               # with its "\n"
        first_two = [(1, dict(start("1-1"), attempts=1)), (2, meter("1-1", 5))]
        for cut in range(1, last + 1):
            s.write("journal", whole[:len(whole) - cut])
            j = Journal(s)
            assert j.pending() == first_two, cut
            if cut < last:                             # a partial line was there
                assert j.recovered == 1, cut
                assert "torn" in j.recovery_notes[0], j.recovery_notes
            else:                                      # the whole line is gone: nothing torn
                assert j.recovered == 0, cut
            seq = j.append(stop("1-1", 7))             # must not glue onto the torn bytes
            again = Journal(s)
            assert again.recovered == 0, cut
            assert again.pending() == first_two + [(seq, stop("1-1", 7))], cut
            assert seq > 2
    both(check)


def test_torn_done_line_replays_the_record():
    def check(s):
        j = Journal(s)
        j.append(meter("1-1", 1))
        j.append(meter("1-1", 2))
        j.done(1)
        whole = s.read("journal")
        s.write("journal", whole[:-3])                # the D line torn: not durable
        again = Journal(s)
        assert again.recovered == 1
        assert seqs(again) == [1, 2]                  # sent again: at least once
    both(check)


def test_corrupt_middle_line_is_skipped_and_the_rest_kept():
    def check(s):
        j = Journal(s)
        for i in range(5):
            j.append(meter("1-1", i))
        lines = lines_of(s)
        bad = bytearray(lines[2])
        bad[len(bad) // 2] ^= 0x01                     # one flipped bit in record 3
        lines[2] = bytes(bad)
        s.write("journal", b"\n".join(lines) + b"\n")
        again = Journal(s)
        assert again.recovered == 1
        assert "line 3: checksum" in again.recovery_notes[0], again.recovery_notes
        assert seqs(again) == [1, 2, 4, 5]
        assert again.get(5) == meter("1-1", 4)
        assert again.append(stop("1-1")) == 6
        assert Journal(s).recovered == 0              # the file was rewritten clean
    both(check)


def test_garbage_never_raises_and_valid_lines_survive_it():
    s = MemoryStorage()
    j = Journal(s)
    j.append(meter("1-1", 1))
    good = s.read("journal")
    j2 = Journal(MemoryStorage())
    for _ in range(3):
        j2.append(meter("1-1", 2))
    third = lines_of(j2.storage)[2] + b"\n"           # seq 3, valid
    import agent.journal as journal
    garbage = [
        b"\n", b"\n\n\n", b"garbage\n", b"1 A 00000000 {}\n", b"x A 00000000 {}\n",
        b"1 A zzzzzzzz {}\n", b"1 A 0 {}\n", b"   \n", b"\xff\xfe\x00\x01\n",
        journal._line(7, "A", "[1, 2]"),              # valid checksum, not a record
        journal._line(8, "A", "{not json"),           # valid checksum, bad JSON
        journal._line(9, "Q", "{}"),                  # unknown op
        journal._line(10, "A", '"x"')[:-1] + b"\xff\n",  # a byte too many
        os.urandom(300).replace(b"\n", b"-") + b"\n",
    ]
    for junk in garbage:
        s.write("journal", good + junk + third)
        again = Journal(s)
        assert again.recovered >= 1, junk
        assert seqs(again) == [1, 3], junk
    s.write("journal", os.urandom(2000))
    again = Journal(s)
    assert again.pending() == [] or again.recovered >= 1
    s.write("journal", b"")
    assert Journal(s).pending() == []


class FlakyStorage(MemoryStorage):
    """Writes half of the next append (or fails the next write) and raises, like a full disk."""

    def __init__(self):
        super().__init__()
        self.fail_append = False
        self.fail_write = False

    def append(self, name, data):
        if self.fail_append:
            self.fail_append = False
            super().append(name, data[:len(data) // 2])
            raise OSError(28)
        super().append(name, data)

    def write(self, name, data):
        if self.fail_write:
            raise OSError(28)
        super().write(name, data)


def test_a_failed_write_loses_nothing_and_is_never_followed_by_a_glued_line():
    """Disk full: the record stands in RAM (it is sent as usual), the journal says why, and
    the next write that succeeds rewrites the file from RAM first: nothing lost, nothing
    glued to the torn half line."""
    s = FlakyStorage()
    j = Journal(s)
    j.append(meter("1-1", 1))
    s.fail_append = True
    s.fail_write = True                                # the repair cannot happen yet
    second = j.append(meter("1-1", 2))
    assert seqs(j) == [1, second] and j.write_error is not None
    third = j.append(meter("1-1", 3))
    assert seqs(j) == [1, second, third] and j.write_error is not None
    assert j.done(1) is True                           # delivered meanwhile: also in RAM
    s.fail_write = False
    fourth = j.append(meter("1-1", 4))                 # rewritten first, then appended
    assert j.write_error is None
    again = Journal(s)
    assert again.recovered == 0
    assert again.pending() == [(second, meter("1-1", 2)), (third, meter("1-1", 3)),
                               (fourth, meter("1-1", 4))]


def test_a_failed_automatic_compaction_is_not_an_error():
    s = FlakyStorage()
    j = Journal(s, max_records=10)
    s.fail_write = True
    for i in range(40):
        j.done(j.append(meter("1-1", i)))
    assert j.compactions == 0 and j.compact_error is not None
    s.fail_write = False
    j.append(meter("1-1", 99))
    assert j.compactions == 1 and j.compact_error is None
    assert [r["payload"]["meterValue"][0]["sampledValue"][0]["value"]
            for _, r in Journal(s).pending()] == ["99"]


def test_storage_without_lines_uses_read():
    s = ReadOnlyApi()
    journal_with_three(s)
    whole = s.read("journal")
    s.write("journal", whole[:-5])
    j = Journal(s)
    assert j.recovered == 1 and seqs(j) == [1, 2]
    assert j.get(1)["attempts"] == 1


# -- compaction -------------------------------------------------------------------------------
def test_compaction_keeps_pending_bounds_the_file_and_seq_stays_monotonic():
    def check(s):
        j = Journal(s, max_records=10)
        model = []
        last = 0
        for i in range(400):
            seq = j.append(meter("1-1", i))
            assert seq > last
            last = seq
            model.append(seq)
            if i % 7 == 0:
                j.update(seq, {"attempts": 1})
            while len(model) > (i % 9):               # vary the backlog 0..8
                j.done(model.pop(0))
            assert len(lines_of(s)) <= 2 * 10 + 2 + 1 + 9
        assert j.compactions > 5
        assert seqs(j) == model
        again = Journal(s, max_records=10)
        assert seqs(again) == model and again.recovered == 0
        for seq in model:
            again.done(seq)
        again.compact()
        assert len(lines_of(s)) == 1                  # only the seq floor
        assert Journal(s).append(stop("1-1")) == last + 1
    both(check)


def test_compact_writes_only_pending_records_with_their_seq():
    def check(s):
        j = Journal(s)
        for i in range(5):
            j.append(meter("1-1", i))
        j.update(2, {"attempts": 3})
        j.done(1)
        j.done(3)
        j.compact()
        assert len(lines_of(s)) == 1 + 3
        again = Journal(s)
        assert seqs(again) == [2, 4, 5]
        assert again.get(2)["attempts"] == 3
        j.done(5)
        assert seqs(Journal(s)) == [2, 4]
        assert Journal(s).append(meter("1-1", 9)) == 6
    both(check)


def test_compaction_when_every_record_is_done_keeps_seq():
    s = MemoryStorage()
    j = Journal(s)
    for i in range(100):
        j.done(j.append(meter("1-1", i)))
    assert j.compactions >= 1
    assert len(lines_of(s)) < 64
    assert Journal(s).append(meter("1-1", 0)) == 101


# -- size policy ------------------------------------------------------------------------------
def test_full_journal_refuses_a_new_start_but_not_its_open_transaction():
    s = MemoryStorage()
    j = Journal(s, max_records=5)
    assert j.hard_cap == 105
    for n in range(5):
        assert j.append(start("t%d" % n)) is not None
    assert j.full
    assert j.append(start("t5")) is None              # refused: no session without a record
    assert j.append({"action": "DataTransfer"}) is None
    assert j.full
    assert j.append(meter("t4", 1)) is not None       # the open transaction carries on
    assert j.append(stop("t4")) is not None
    assert len(j) == 7 and j.dropped == 0
    assert Journal(s, max_records=5).full             # also after a reboot
    for seq in (1, 2, 3):
        j.done(seq)
    assert not j.full
    assert j.append(start("t6")) is not None


def test_hard_cap_drops_the_oldest_meter_values_of_that_transaction():
    s = MemoryStorage()
    j = Journal(s, max_records=5, hard_cap=12)
    j.append(start("a"))
    j.append(meter("a", 0))                           # seq 2: a's oldest meter value
    j.append(start("b"))
    for wh in range(1, 10):
        j.append(meter("b", wh))                      # seqs 4..12
    assert len(j) == 12
    seq = j.append(meter("b", 10))                    # at the cap: b's oldest goes
    assert seq == 13 and len(j) == 12 and j.dropped == 1
    assert 4 not in seqs(j) and 2 in seqs(j)
    seq = j.append(stop("b"))                         # a Stop displaces b's next oldest
    assert 5 not in seqs(j) and seq in seqs(j)
    assert j.dropped == 2
    again = Journal(s, max_records=5, hard_cap=12)    # the drops are durable
    assert seqs(again) == seqs(j)
    assert [r["action"] for _, r in again.pending()].count("StartTransaction") == 2
    assert again.pending()[-1][1] == stop("b")
    seq = j.append(meter("c", 1))                     # c has none: the oldest of any (a's)
    assert seq is not None and 2 not in seqs(j)


def test_starts_and_stops_are_never_dropped_at_the_cap():
    j = Journal(MemoryStorage(), max_records=4, hard_cap=6)
    for n in range(4):
        j.append(start("t%d" % n))
    j.append(stop("t0"))
    j.append(stop("t1"))
    assert len(j) == 6
    assert j.append(meter("t2", 1)) is None           # nothing to displace: this one goes
    assert j.dropped == 1
    assert j.append(stop("t2")) is not None           # a Stop is kept above the cap
    assert len(j) == 7
    kinds = [record_kind(r) for _, r in j.pending()]
    assert kinds == [START] * 4 + [KEEP] * 3
