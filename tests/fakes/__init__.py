"""Fakes at the system's edges, for tests only.

The one allowed fake is the broker's gateway (`tests.fakes.tws`): everything inside the system is
the real component, and the real ib_async client talks to the fake over a real TCP socket, so the
tests exercise the exact bytes a production IB Gateway would exchange. `tests.fakes.clock` is the
manual clock shared by the fake gateway and the code under test, so time-based rules (IB's
pacing windows) are tested without waiting real seconds.
"""
