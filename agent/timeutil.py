"""UTC timestamps as OCPP writes them, from integer Unix milliseconds (portable).

Pure integer civil-date arithmetic (H. Hinnant's days_from_civil), so the result does not
depend on an interpreter's `time.gmtime` or its epoch: MicroPython ports count from 2000.
"""


def days_from_civil(year, month, day):
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days):
    days += 719468
    era = (days if days >= 0 else days - 146096) // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    year = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return year + (month <= 2), month, day


def iso_utc(unix_ms):
    """2024-06-03T07:30:00.000Z"""
    days, ms = divmod(unix_ms, 86400000)
    year, month, day = civil_from_days(days)
    seconds, millis = divmod(ms, 1000)
    hour, rest = divmod(seconds, 3600)
    minute, second = divmod(rest, 60)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (year, month, day, hour, minute, second,
                                                    millis)


def parse_iso(text):
    """Unix ms from an RFC 3339 timestamp (Z or +hh:mm offset, optional fraction).
    ValueError on anything else."""
    try:
        date, clock = text[:10], text[11:]
        if len(text) < 20 or text[4] != "-" or text[7] != "-" or text[10] not in "Tt":
            raise ValueError
        year, month, day = int(date[0:4]), int(date[5:7]), int(date[8:10])
        hour, minute, second = int(clock[0:2]), int(clock[3:5]), int(clock[6:8])
        rest = clock[8:]
        millis = 0
        if rest.startswith("."):
            digits = 1
            while digits < len(rest) and rest[digits].isdigit():
                digits += 1
            fraction = rest[1:digits]
            if not fraction:
                raise ValueError
            millis = int((fraction + "000")[:3])
            rest = rest[digits:]
        if rest in ("Z", "z"):
            offset = 0
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            offset = (int(rest[1:3]) * 60 + int(rest[4:6])) * (1 if rest[0] == "+" else -1)
        else:
            raise ValueError
        if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60
                and second < 61):
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError("not an RFC 3339 timestamp: %r" % (text,))
    days = days_from_civil(year, month, day)
    return ((days * 86400 + hour * 3600 + minute * 60 + second - offset * 60) * 1000
            + millis)
