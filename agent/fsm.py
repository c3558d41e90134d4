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


class Row:
    __slots__ = ("sources", "event", "target", "guard", "negate", "action")

    def __init__(self, sources, event, target, guard, action):
        if isinstance(sources, str):
            sources = (sources,)
        self.sources = tuple(sources)
        self.event = event
        self.target = target
        if guard is not None and guard in ("", "!"):
            raise ValueError("empty guard in row for event %r" % event)
        self.negate = bool(guard) and guard[0] == "!"
        self.guard = guard[1:] if self.negate else guard
        self.action = action

    def matches(self, state):
        return ANY in self.sources or state in self.sources

    def label(self):
        text = self.event
        if self.guard:
            text += " [" + ("not " if self.negate else "") + self.guard + "]"
        if self.action:
            text += " / " + self.action
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
        self.rows = tuple(Row(*row) for row in rows)
        self._by_event = {}
        for row in self.rows:
            for source in row.sources:
                if source != ANY and source not in self.states:
                    raise ValueError("%s: unknown source state %r" % (name, source))
            if row.target is not None and row.target not in self.states:
                raise ValueError("%s: unknown target state %r" % (name, row.target))
            self._by_event.setdefault(row.event, []).append(row)
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
            if not row.matches(state):
                continue
            if row.guard is not None and _holds(model, row.guard) == row.negate:
                continue
            target = row.target
            changing = target is not None and target != state
            if changing and state in self.exit:
                getattr(model, self.exit[state])(arg)
            if row.action is not None:
                getattr(model, row.action)(arg)
            if changing:
                model.state = target
                if target in self.entry:
                    getattr(model, self.entry[target])(arg)
            return True
        return False

    def can_fire(self, model, event):
        for row in self._by_event.get(event, ()):
            if row.matches(model.state) and (
                    row.guard is None or _holds(model, row.guard) != row.negate):
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
            sources = self.states if ANY in row.sources else row.sources
            for source in sources:
                target = source if row.target is None else row.target
                if ANY in row.sources and target == source and row.target is not None:
                    continue
                lines.append("    %s --> %s : %s" % (source, target, row.label()))
        return "\n".join(lines)
