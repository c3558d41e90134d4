"""agent.fsm.Machine, the table-driven engine behind the CP and session state machines.

Portable: plain functions and asserts, so pytest runs this file on CPython and
tests/mp_run.py runs it on MicroPython.
"""
from agent.fsm import ANY, Machine


def _raises(exc_type, func, *args, **kwargs):
    try:
        func(*args, **kwargs)
    except exc_type:
        return True
    return False


class Model:
    """Records every call in `log`; guards come from `flags` (methods) or attributes."""

    def __init__(self, state="idle"):
        self.state = state
        self.log = []
        self.ready = False          # attribute guard
        self.allowed = False        # method guard, see allowed_now()

    def allowed_now(self):
        self.log.append("guard")
        return self.allowed

    def __getattr__(self, name):
        # any other method name in a table is a recorder: on_x(arg) appends ("on_x", arg, state)
        if name.startswith("do_") or name.startswith("enter_") or name.startswith("exit_"):
            def record(arg):
                self.log.append((name, arg, self.state))
            return record
        raise AttributeError(name)


STATES = ("idle", "ready", "busy", "error")


def _machine(rows, entry=None, exit=None):
    return Machine("test", "idle", STATES, rows, entry=entry, exit=exit)


def test_fire_runs_matching_row_and_changes_state():
    m = _machine((("idle", "go", "busy", None, None),))
    model = Model()
    assert m.fire(model, "go")
    assert model.state == "busy"


def test_fire_unknown_event_or_no_matching_source_returns_false():
    m = _machine((("idle", "go", "busy", None, None),))
    model = Model("ready")
    assert not m.fire(model, "go")
    assert not m.fire(model, "nonsense")
    assert model.state == "ready"
    assert model.log == []


def test_tuple_of_sources():
    m = _machine(((("idle", "ready"), "go", "busy", None, None),))
    for start in ("idle", "ready"):
        model = Model(start)
        assert m.fire(model, "go")
        assert model.state == "busy"
    model = Model("error")
    assert not m.fire(model, "go")


def test_first_matching_row_wins():
    m = _machine((
        ("idle", "go", "ready", None, "do_first"),
        ("idle", "go", "busy", None, "do_second"),
    ))
    model = Model()
    assert m.fire(model, "go")
    assert model.state == "ready"
    assert model.log == [("do_first", None, "idle")]


def test_guard_by_attribute():
    m = _machine((
        ("idle", "go", "busy", "ready", None),
        ("idle", "go", "error", None, None),
    ))
    model = Model()
    model.ready = True
    assert m.fire(model, "go")
    assert model.state == "busy"
    model = Model()
    model.ready = False
    assert m.fire(model, "go")
    assert model.state == "error"


def test_guard_by_method_is_called():
    m = _machine((
        ("idle", "go", "busy", "allowed_now", None),
        ("idle", "go", "error", None, None),
    ))
    model = Model()
    model.allowed = True
    assert m.fire(model, "go")
    assert model.state == "busy"
    assert model.log == ["guard"]
    model = Model()
    assert m.fire(model, "go")
    assert model.state == "error"
    assert model.log == ["guard"]


def test_negated_guard():
    m = _machine((
        ("idle", "go", "busy", "!ready", None),
        ("idle", "go", "error", None, None),
    ))
    model = Model()
    assert m.fire(model, "go")
    assert model.state == "busy"
    model = Model()
    model.ready = True
    assert m.fire(model, "go")
    assert model.state == "error"
    m = _machine((("idle", "go", "busy", "!allowed_now", None),))
    model = Model()
    model.allowed = True
    assert not m.fire(model, "go")
    assert model.state == "idle"
    assert model.log == ["guard"]


def test_failing_guard_without_fallback_returns_false():
    m = _machine((("idle", "go", "busy", "ready", "do_it"),))
    model = Model()
    assert not m.fire(model, "go")
    assert model.state == "idle"
    assert model.log == []


def test_any_source():
    m = _machine(((ANY, "fail", "error", None, None),))
    for start in STATES:
        model = Model(start)
        assert m.fire(model, "fail"), start
        assert model.state == "error"
    assert ANY == "*"


def test_specific_row_before_any_row_wins():
    m = _machine((
        ("busy", "fail", "idle", None, None),
        (ANY, "fail", "error", None, None),
    ))
    model = Model("busy")
    m.fire(model, "fail")
    assert model.state == "idle"
    model = Model("ready")
    m.fire(model, "fail")
    assert model.state == "error"


def test_action_receives_the_event_argument():
    m = _machine((("idle", "go", "busy", None, "do_go"),))
    model = Model()
    m.fire(model, "go", 16000)
    assert model.log == [("do_go", 16000, "idle")]


def test_exit_action_entry_order():
    m = _machine((("idle", "go", "busy", None, "do_go"),),
                 entry={"busy": "enter_busy", "idle": "enter_idle"},
                 exit={"idle": "exit_idle", "busy": "exit_busy"})
    model = Model()
    assert m.fire(model, "go", "x")
    # exit and action see the old state, entry sees the new one
    assert model.log == [("exit_idle", "x", "idle"), ("do_go", "x", "idle"),
                         ("enter_busy", "x", "busy")]


def test_internal_transition_runs_no_exit_or_entry():
    m = _machine((("busy", "tick", None, None, "do_tick"),),
                 entry={"busy": "enter_busy"}, exit={"busy": "exit_busy"})
    model = Model("busy")
    assert m.fire(model, "tick", 1)
    assert model.state == "busy"
    assert model.log == [("do_tick", 1, "busy")]


def test_internal_transition_from_any_state():
    m = _machine(((ANY, "tick", None, None, "do_tick"),), entry={"ready": "enter_ready"})
    for start in STATES:
        model = Model(start)
        assert m.fire(model, "tick")
        assert model.state == start
        assert model.log == [("do_tick", None, start)]


def test_row_to_the_current_state_runs_no_exit_or_entry():
    # agent/evse.py relies on this: a second fault while faulted does not re-enter "faulted"
    m = _machine(((ANY, "fail", "error", None, "do_fail"),),
                 entry={"error": "enter_error"}, exit={"error": "exit_error"})
    model = Model("error")
    assert m.fire(model, "fail")
    assert model.state == "error"
    assert model.log == [("do_fail", None, "error")]


def test_state_without_entry_or_exit_actions():
    m = _machine((("idle", "go", "busy", None, None),), entry={"ready": "enter_ready"})
    model = Model()
    assert m.fire(model, "go")
    assert model.log == []


def test_one_machine_serves_many_models():
    m = _machine((("idle", "go", "busy", None, None), ("busy", "stop", "idle", None, None)))
    a = Model()
    b = Model()
    m.fire(a, "go")
    assert a.state == "busy"
    assert b.state == "idle"
    m.fire(a, "stop")
    m.fire(b, "go")
    assert a.state == "idle"
    assert b.state == "busy"


def test_unknown_state_in_table_raises_value_error():
    assert _raises(ValueError, _machine, (("nowhere", "go", "busy", None, None),))
    assert _raises(ValueError, _machine, ((("idle", "nowhere"), "go", "busy", None, None),))
    assert _raises(ValueError, _machine, (("idle", "go", "nowhere", None, None),))
    assert _raises(ValueError, _machine, (), entry={"nowhere": "enter_x"})
    assert _raises(ValueError, _machine, (), exit={"nowhere": "exit_x"})
    # the valid forms do not raise
    _machine(((ANY, "go", None, None, None), ("idle", "go", "busy", None, None)),
             entry={"busy": "enter_busy"}, exit={"idle": "exit_idle"})


def test_can_fire():
    m = _machine((
        ("idle", "go", "busy", "ready", None),
        ("busy", "stop", "idle", "!ready", "do_stop"),
        (ANY, "tick", None, None, "do_tick"),
    ))
    model = Model()
    assert not m.can_fire(model, "go")
    model.ready = True
    assert m.can_fire(model, "go")
    assert not m.can_fire(model, "stop")        # wrong source
    assert m.can_fire(model, "tick")
    assert not m.can_fire(model, "nonsense")
    model.state = "busy"
    assert not m.can_fire(model, "stop")        # negated guard fails
    model.ready = False
    assert m.can_fire(model, "stop")
    # can_fire never acts
    assert model.log == []
    assert model.state == "busy"


def test_can_fire_agrees_with_fire():
    m = _machine((
        ("idle", "go", "busy", "allowed_now", None),
        ("ready", "go", "busy", "!ready", None),
    ))
    for start in STATES:
        for ready in (False, True):
            for allowed in (False, True):
                model = Model(start)
                model.ready = ready
                model.allowed = allowed
                expected = m.can_fire(model, "go")
                assert m.fire(model, "go") == expected, (start, ready, allowed)


def test_events():
    m = _machine((("idle", "go", "busy", None, None), ("busy", "stop", "idle", None, None),
                  ("ready", "go", "busy", None, None)))
    assert sorted(m.events()) == ["go", "stop"]


def test_machine_attributes():
    m = _machine(())
    assert m.name == "test"
    assert m.initial == "idle"
    assert m.states == STATES


def test_mermaid():
    m = _machine(
        (
            ("idle", "go", "busy", None, None),
            ("busy", "stop", "idle", "ready", "do_stop"),
            ("busy", "tick", None, "!ready", None),
            (ANY, "fail", "error", None, None),
        ),
        entry={"busy": "enter_busy"}, exit={"busy": "exit_busy", "error": "exit_error"},
    )
    lines = m.mermaid().split("\n")
    assert lines[0] == "stateDiagram-v2"
    assert lines[1] == "    [*] --> idle"
    for expected in (
        "    busy : entry / enter_busy; exit / exit_busy",
        "    error : exit / exit_error",
        "    idle --> busy : go",
        "    busy --> idle : stop [ready] / do_stop",
        "    busy --> busy : tick [not ready]",
        "    idle --> error : fail",
        "    ready --> error : fail",
        "    busy --> error : fail",
    ):
        assert expected in lines, expected
    # an ANY row is drawn from every other state, with no self-loop on its target
    assert "    error --> error : fail" not in lines
    assert len(lines) == 2 + 2 + 1 + 1 + 1 + 3


def test_mermaid_draws_any_internal_transition_on_every_state():
    m = _machine(((ANY, "tick", None, None, "do_tick"),))
    lines = m.mermaid().split("\n")
    for state in STATES:
        assert "    %s --> %s : tick / do_tick" % (state, state) in lines, state
