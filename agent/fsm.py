"""A small table-driven state machine engine that runs on CPython and MicroPython.

A `Machine` is the table: states and rows `(sources, event, target, guard, action)`. It is
immutable and shared: the current state lives on the model (`model.state`), so one machine
serves every connector, as `transitions` does with `add_model`. Guards and actions are
*names* of model methods, which keeps the table plain data that can be listed, drawn
(`mermaid()`) and property-tested.

Row fields:
- sources: a state name, a tuple of names, or "*" for any state.
- event:   the name passed to `fire`.
- target:  the next state, or None for an internal transition. A row whose target is the
           current state is internal too (no exit/entry actions): "fault" from faulted
           does not re-enter it.
- guard:   None, or the name of a model method or boolean attribute; "!name" negates it. The first row whose source
           matches and whose guard holds wins, so guarded rows come before the fallback.
- action:  None, or a model method name called with the event argument.

Order on a transition: source's exit action, the row's action, state change, target's
entry action (entry sees the new state).
"""

ANY = "*"


# Rows are used as written, never copied: on MicroPython a table literal stays in memory
# with its module's code whatever is done with it, so a compiled copy would hold the table
# twice (agent.evse imported in 1.9 KB more on 32-bit MicroPython with the copies).
SOURCES, EVENT, TARGET, GUARD, ACTION = 0, 1, 2, 3, 4


def row_matches(row, state):
    sources = row[SOURCES]
    if isinstance(sources, str):
        return sources == ANY or sources == state
    return ANY in sources or state in sources


def _sources(row):
    """A row's sources as a tuple (a new one for a single state: not for the hot path)."""
    sources = row[SOURCES]
    return (sources,) if isinstance(sources, str) else sources


def row_label(row):
    text = row[EVENT]
    guard = row[GUARD]
    if guard:
        text += " [" + ("not " + guard[1:] if guard[0] == "!" else guard) + "]"
    if row[ACTION]:
        text += " / " + row[ACTION]
    return text


def _holds(model, guard):
    """A guard names a model method or a plain attribute."""
    value = getattr(model, guard)
    if callable(value):
        value = value()
    return bool(value)


class Machine:
    def __init__(self, name, initial, states, rows, entry=None, exit=None):
        """`states`: names in display order; `entry`/`exit`: {state: method name}."""
        self.name = name
        self.initial = initial
        self.states = tuple(states)
        self.entry = entry or {}
        self.exit = exit or {}
        if initial not in self.states:
            raise ValueError("%s: unknown initial state %r" % (name, initial))
        self.rows = tuple(rows)
        self._by_event = {}
        # "!name" guards: name, sliced once here rather than at every fire
        self._negated = {}
        for row in self.rows:
            for source in _sources(row):
                if source != ANY and source not in self.states:
                    raise ValueError("%s: unknown source state %r" % (name, source))
            guard = row[GUARD]
            if guard is not None and guard in ("", "!"):
                raise ValueError("%s: empty guard in row for event %r" % (name, row[EVENT]))
            if guard is not None and guard[0] == "!":
                self._negated[guard] = guard[1:]
            if row[TARGET] is not None and row[TARGET] not in self.states:
                raise ValueError("%s: unknown target state %r" % (name, row[TARGET]))
            self._by_event.setdefault(row[EVENT], []).append(row)
        for table in (self.entry, self.exit):
            for state in table:
                if state not in self.states:
                    raise ValueError("%s: action for unknown state %r" % (name, state))

    def events(self):
        return tuple(self._by_event)

    def fire(self, model, event, arg=None):
        """Run the first matching row for `event`; return True if one ran."""
        rows = self._by_event.get(event)
        if not rows:
            return False
        state = model.state
        for row in rows:
            if not row_matches(row, state):
                continue
            if row[GUARD] is not None and not self._guard_holds(model, row[GUARD]):
                continue
            target = row[TARGET]
            changing = target is not None and target != state
            if changing and state in self.exit:
                getattr(model, self.exit[state])(arg)
            if row[ACTION] is not None:
                getattr(model, row[ACTION])(arg)
            if changing:
                model.state = target
                if target in self.entry:
                    getattr(model, self.entry[target])(arg)
            return True
        return False

    def _guard_holds(self, model, guard):
        name = self._negated.get(guard)
        return _holds(model, guard) if name is None else not _holds(model, name)

    def can_fire(self, model, event):
        for row in self._by_event.get(event, ()):
            if row_matches(row, model.state) and (
                    row[GUARD] is None or self._guard_holds(model, row[GUARD])):
                return True
        return False

    def mermaid(self):
        """The table as a Mermaid stateDiagram-v2 ("*" rows are drawn from every state)."""
        lines = ["stateDiagram-v2", "    [*] --> " + self.initial]
        for state in self.states:
            notes = []
            if state in self.entry:
                notes.append("entry / " + self.entry[state])
            if state in self.exit:
                notes.append("exit / " + self.exit[state])
            if notes:
                lines.append("    %s : %s" % (state, "; ".join(notes)))
        for row in self.rows:
            every = ANY in _sources(row)
            for source in self.states if every else _sources(row):
                target = source if row[TARGET] is None else row[TARGET]
                if every and target == source and row[TARGET] is not None:
                    continue
                lines.append("    %s --> %s : %s" % (source, target, row_label(row)))
        return "\n".join(lines)
