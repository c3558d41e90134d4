"""The portable core: runs unchanged on CPython and MicroPython (see DESIGN.md)."""
