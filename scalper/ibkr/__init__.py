"""Interactive Brokers through ib_async: the system's edge to IB Gateway / TWS.

* `connection` — connecting, with one clear error line when the gateway is unreachable;
* `pacing`     — a scheduler that keeps historical-data requests within IB's pacing rules;
* `history`    — the historical bar download (chunked, paced, resumable), returning `BAR_SCHEMA`
  frames with bars stamped at their start in UTC.

ib_async is imported by these modules only; the rest of the library never needs it, and the CLI
imports them lazily, so the package can be installed without the broker extras.
"""
