# Makes these modules `portable.test_*` under pytest, so a tests/test_fsm.py or
# tests/test_pilot.py elsewhere in the suite cannot clash with them by basename.
# tests/mp_run.py imports them by their plain name from tests/portable and ignores this file.
