"""Human text for the agent's events and OCPP messages, one line each (portable).

The simulator's timeline, `evse run`'s log and a microcontroller's console all print these,
so a line reads the same wherever the agent runs.
"""
import json

from agent import evse as evse_mod


def _pilot_text(mode, duty):
    if mode == evse_mod.PWM:
        return "PWM %d.%d %%" % (duty // 10, duty % 10)
    return "pilot " + mode.upper()


def describe(event):
    """Human text for one controller or station event tuple (time, kind, *data)."""
    kind, data = event[1], event[2:]
    if kind == "cp":
        return "CP " + data[0]
    if kind == "session":
        return "session " + data[0]
    if kind == "pilot":
        return _pilot_text(*data)
    if kind == "contactor":
        return "close contactor" if data[0] else "open contactor"
    if kind == "fault":
        return ("FAULT " if data[1] else "cleared ") + data[0]
    if kind == "session_started":
        return "session started (%s)" % data[0]
    if kind == "session_ended":
        return "session ended: %s, %d Wh" % (data[0], data[1])
    if kind == "token":
        return "token %s: %s" % (data[0], data[1])
    if kind == "info":
        return data[0]
    return " ".join(str(d) for d in (kind,) + data)


def describe_ocpp(event):
    """Human text for one OCPP event: `-> Action {payload}` out, `<- ...` in, or a note."""
    kind = event[0]
    if kind not in ("sent", "received"):
        return "OCPP %s: %s" % (kind, " ".join(str(d) for d in event[1:]))
    message_type, action, payload = event[1], event[2], event[3]
    arrow = "->" if kind == "sent" else "<-"
    label = {2: action, 3: action + " result", 4: "CALLERROR " + action}[message_type]
    text = json.dumps(payload, separators=(",", ":"))
    if len(text) > 160:
        text = text[:157] + "..."
    return "%s %s %s" % (arrow, label, text)
