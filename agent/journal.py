"""The persistent journal of transaction messages (portable; DESIGN.md decision 6).

StartTransaction, transaction MeterValues and StopTransaction (and 2.0.1 TransactionEvent)
are appended here *before* they are sent, and marked done once the CSMS answered (or the
attempts are spent). What is pending after a reboot is replayed, in order.

    j = Journal(storage)                  # any hal.interfaces.Storage; loads and recovers
    seq = j.append(record)                # durable when it returns; None = refused (full)
    j.update(seq, {"attempts": 2})        # shallow merge into the pending record, durable
    j.done(seq)                           # delivered or given up: never replayed again
    for seq, record in j.pending(): ...   # oldest first; records are fresh copies

Records are JSON-able dicts shaped {"action": OCPP action, "tx": the agent's own key of the
transaction, "payload": {...}, ...anything else}. The journal reads only "action", "tx" and
(TransactionEvent) payload["eventType"], for the size policy below.

File format: one line per change, "<seq> <op> <crc32 hex8> <json>\\n", the CRC over
"<seq> <op> <json>". Ops: A = a record was appended (json = the record), U = fields merged
into record seq, D = record seq is done (json = null or a reason), S = seq floor (the highest
seq ever given; written at the head of a compacted file so seq numbers never go back).

Crash safety. append/update/done each add one line with Storage.append, which fsyncs before
returning: a record append() returned for survives kill -9 and power loss. A line lost in the
middle of being written (no "\\n", bad checksum, bad JSON) is dropped on load and counted in
`recovered` (with the reasons in `recovery_notes`); a bad line in the middle of the file is
skipped the same way and the lines after it still count. Loading never raises on garbage.
After a recovery, or a write that failed (disk full, I/O error: part of a line may be there),
the file is rewritten before anything else is appended, so no line is glued to a torn one.
A write that fails does not undo the change: the record (or its update, or its end) stands
in RAM, is sent as usual, and reaches the file with the next write that succeeds (which
rewrites the file whole from RAM first); `write_error` says why until then. So a full
flash loses nothing while the process lives, and the agent is told, not stopped.
A failed automatic compaction is not an error (the old file is intact): `compact_error`.
A torn D line only means the record is sent again: delivery is at least once.

Compaction: when the lines that no longer matter (done records, their D lines, applied U
lines) exceed max_records, or number at least 64 and three times the live lines, the file
is rewritten with Storage.write (temporary file + fsync + rename: old or new file after a
crash, never a mix) holding an S line and the pending records, each with its seq.

Flash wear: normal operation only appends short lines (one per message, one per answer);
a rewrite needs at least 64 dead lines (or max_records + 1, if smaller) and copies only the
pending records, which are few while the CSMS is reachable. Nothing is rewritten in place.
Measured on an ext4 VM disk (CPython, fsync each): ~1700-3600 appends/s; loading 1000
pending records (~400 KB) takes ~8-11 ms.

Size policy (bounded, stated; cf. spec/embedded.md §A.6 and §D.3):
- With max_records (default 1000) records pending, a new transaction's Start
  (StartTransaction, TransactionEvent eventType Started) is refused: append returns None
  and `full` is True. The agent then refuses to start the session rather than charge
  without a record. Records of unknown actions are refused the same way. `full` goes False
  again as soon as records are done.
- Records of an open transaction (MeterValues, StopTransaction, TransactionEvent Updated /
  Ended) are always accepted, up to a hard cap of max_records + 100 pending. At the cap, each
  new one makes the oldest pending intermediate record (MeterValues, TransactionEvent
  Updated) of the same transaction be dropped (else the oldest of any transaction); an
  intermediate record with nothing to displace is itself dropped (append returns None).
  Starts and Stops (StopTransaction, TransactionEvent Ended) are never dropped: a Stop with
  nothing to displace is accepted above the cap. No transaction starts while the journal is
  full, so the pending count never exceeds the hard cap plus one Stop per transaction open
  at that moment (one per connector). `dropped` counts the records lost to this policy.

RAM: pending records are held as their JSON text (about a third of the size of parsed
dicts on MicroPython), parsed on every pending()/get(). An MCU board sizes max_records to
its heap (text of the pending records, about twice that during a compaction).
"""
import json

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover - MicroPython ports built without binascii.crc32
    _crc32 = None

# record kinds for the size policy
START = 0       # opens a transaction: refused when full
KEEP = 1        # closes a transaction, never dropped (StopTransaction, TransactionEvent Ended)
METER = 2       # intermediate (MeterValues, TransactionEvent Updated): dropped oldest-first
OTHER = 3       # unknown action: refused when full, like a Start

HARD_CAP_EXTRA = 100
COMPACT_MIN_DEAD = 64

_TABLE = None


def crc32(data):
    """CRC-32 (IEEE, as zlib/binascii) of bytes; pure Python when binascii lacks it."""
    if _crc32 is not None:
        return _crc32(data) & 0xFFFFFFFF
    global _TABLE
    if _TABLE is None:                      # nibble table: 16 entries, small on an MCU
        table = []
        for n in range(16):
            c = n
            for _ in range(4):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            table.append(c)
        _TABLE = table
    table = _TABLE
    c = 0xFFFFFFFF
    for byte in data:
        c ^= byte
        c = (c >> 4) ^ table[c & 15]
        c = (c >> 4) ^ table[c & 15]
    return c ^ 0xFFFFFFFF


def record_kind(record):
    """START, KEEP, METER or OTHER: how the size policy treats a record."""
    action = record.get("action")
    if action == "StartTransaction":
        return START
    if action == "StopTransaction":
        return KEEP
    if action == "MeterValues":
        return METER
    if action == "TransactionEvent":
        payload = record.get("payload")
        if not isinstance(payload, dict):
            return KEEP
        event = payload.get("eventType")
        if event == "Started":
            return START
        if event == "Updated":
            return METER
        return KEEP
    return OTHER


def _tx_of(record):
    tx = record.get("tx")
    if tx is None:
        payload = record.get("payload")
        if isinstance(payload, dict):
            tx = payload.get("transactionId")
            if tx is None and isinstance(payload.get("transactionInfo"), dict):
                tx = payload["transactionInfo"].get("transactionId")
    return tx


def _dumps(value):
    return json.dumps(value, separators=(",", ":"))


def _line(seq, op, body):
    content = ("%d %s %s" % (seq, op, body)).encode("utf-8")
    crc = crc32(content)
    return ("%d %s %08x %s\n" % (seq, op, crc, body)).encode("utf-8")


def _parse(raw):
    """(seq, op, body text) of one stored line, or raise ValueError saying why not."""
    if not raw.endswith(b"\n"):
        raise ValueError("torn (no end of line)")
    parts = raw[:-1].split(b" ", 3)
    if len(parts) != 4 or len(parts[2]) != 8:
        raise ValueError("malformed")
    seq_text, op, crc_text, body = parts
    try:
        crc = int(crc_text.decode(), 16)
        seq = int(seq_text.decode())
        op = op.decode()
    except Exception:
        raise ValueError("malformed")
    if crc32(seq_text + b" " + op.encode() + b" " + body) != crc:
        raise ValueError("checksum mismatch")
    try:
        return seq, op, body.decode("utf-8")
    except Exception:
        raise ValueError("not UTF-8")


class Journal:
    """Append-only persistent queue of transaction messages (see the module docstring)."""

    def __init__(self, storage, name="journal", max_records=1000, hard_cap=None):
        self.storage = storage
        self.name = name
        self.max_records = max_records
        self.hard_cap = max_records + HARD_CAP_EXTRA if hard_cap is None else hard_cap
        self.seq = 0                # the highest seq ever given out
        self.full = False
        self.dropped = 0            # records lost to the hard cap since load
        self.recovered = 0          # bad lines dropped by the last load
        self.recovery_notes = []    # "line N: reason" for (up to 8 of) them
        self.compactions = 0
        self.compact_error = None   # the last automatic compaction's failure, if any
        self.write_error = None     # why the last write failed, until one succeeds
        self._broken = False        # a failed write may have left a partial line
        self._entries = {}          # seq -> [json text, kind, tx]
        self._order = []            # pending seqs, ascending
        self._lines = 0             # lines in the file
        self._load()

    # -- reading ---------------------------------------------------------------------------
    def __len__(self):
        return len(self._order)

    def pending(self, limit=None):
        """[(seq, record)] oldest first, without the done ones (fresh dicts each call)."""
        order = self._order if limit is None else self._order[:limit]
        return [(seq, json.loads(self._entries[seq][0])) for seq in order]

    def first(self):
        """(seq, record) of the oldest pending record, or None."""
        if not self._order:
            return None
        seq = self._order[0]
        return seq, json.loads(self._entries[seq][0])

    def get(self, seq):
        entry = self._entries.get(seq)
        return None if entry is None else json.loads(entry[0])

    # -- changes ---------------------------------------------------------------------------
    def append(self, record):
        """Journal a record; returns its seq (durable unless `write_error`), or None when
        refused."""
        kind = record_kind(record)
        tx = _tx_of(record)
        count = len(self._order)
        if kind in (START, OTHER) and count >= self.max_records:
            self.full = True
            return None
        victim = None
        if count >= self.hard_cap:
            victim = self._victim(tx)
            if victim is None and kind == METER:
                self.dropped += 1
                return None
        text = _dumps(record)
        seq = self.seq + 1
        data = _line(seq, "A", text)
        if victim is not None:
            data += _line(victim, "D", '"dropped"')
        self._write(data)                       # one write, one fsync for both lines
        self.seq = seq
        self._entries[seq] = [text, kind, tx]
        self._order.append(seq)
        self._lines += 1
        if victim is not None:
            self._forget(victim)
            self._lines += 1
            self.dropped += 1
        self._changed()
        return seq

    def update(self, seq, fields):
        """Merge `fields` into pending record seq (durable). False if it is not pending."""
        entry = self._entries.get(seq)
        if entry is None:
            return False
        self._write(_line(seq, "U", _dumps(fields)))
        self._lines += 1
        self._apply_update(entry, fields)
        self._changed()
        return True

    def done(self, seq, reason=None):
        """Record seq was delivered (or given up): persist it; it is never replayed again.
        False if seq is not pending."""
        if seq not in self._entries:
            return False
        self._write(_line(seq, "D", _dumps(reason)))
        self._lines += 1
        self._forget(seq)
        self._changed()
        return True

    def compact(self):
        """Rewrite the file with only the pending records (atomic, via Storage.write)."""
        parts = [_line(self.seq, "S", "null")]
        for seq in self._order:
            parts.append(_line(seq, "A", self._entries[seq][0]))
        self.storage.write(self.name, b"".join(parts))
        self._lines = len(parts)
        self._broken = False
        self.write_error = None             # the file holds what RAM does again
        self.compactions += 1

    # -- internals -------------------------------------------------------------------------
    def _write(self, data):
        """Append `data` durably; False if the storage failed (see the module docstring)."""
        try:
            if self._broken:
                self.compact()          # never append after a torn line
            self.storage.append(self.name, data)
        except OSError as error:
            self._broken = True         # part of the line may be in the file
            self.write_error = str(error)
            return False
        self.write_error = None
        return True

    def _victim(self, tx):
        """The oldest pending METER record of transaction tx, else of any transaction."""
        fallback = None
        for seq in self._order:
            entry = self._entries[seq]
            if entry[1] == METER:
                if entry[2] == tx:
                    return seq
                if fallback is None:
                    fallback = seq
        return fallback

    def _forget(self, seq):
        del self._entries[seq]
        self._order.remove(seq)

    @staticmethod
    def _apply_update(entry, fields):
        record = json.loads(entry[0])
        for key in fields:
            record[key] = fields[key]
        entry[0] = _dumps(record)
        entry[1] = record_kind(record)
        entry[2] = _tx_of(record)

    def _changed(self):
        live = len(self._order) + 1
        dead = self._lines - live
        if self._broken or dead > self.max_records or \
                (dead >= COMPACT_MIN_DEAD and dead >= 3 * live):
            try:
                self.compact()
                self.compact_error = None
            except Exception as exc:    # the old file is intact (atomic write): go on
                self.compact_error = exc
        self.full = len(self._order) >= self.max_records

    def _note(self, number, reason):
        self.recovered += 1
        if len(self.recovery_notes) < 8:
            self.recovery_notes.append("line %d: %s" % (number, reason))

    def _raw_lines(self):
        lines = getattr(self.storage, "lines", None)
        if lines is not None:
            return lines(self.name)
        data = self.storage.read(self.name)
        if not data:
            return ()
        out = data.split(b"\n")
        last = out.pop()                 # b"" when the file ends with "\n"
        out = [part + b"\n" for part in out]
        if last:
            out.append(last)
        return out

    def _load(self):
        entries = self._entries
        number = 0
        top = 0
        for raw in self._raw_lines():
            number += 1
            try:
                seq, op, body = _parse(raw)
                value = json.loads(body)
            except Exception as exc:    # never raise on garbage: drop the line, say why
                self._note(number, exc.args[0] if exc.args and isinstance(exc.args[0], str)
                           else "bad JSON")
                continue
            if op == "A" and isinstance(value, dict) and seq not in entries:
                entries[seq] = [body, record_kind(value), _tx_of(value)]
            elif op == "U" and isinstance(value, dict):
                entry = entries.get(seq)
                if entry is not None:
                    self._apply_update(entry, value)
            elif op == "D":
                entries.pop(seq, None)
            elif op != "S":
                self._note(number, "unknown record %r" % op)
                continue
            if seq > top:
                top = seq
        self.seq = top
        self._lines = number
        order = list(entries)
        order.sort()
        self._order = order
        if self.recovered:
            self._broken = True         # rewrite now: the next line must not follow a torn one
        self._changed()
