"""Prefect flows: the trading day's operations (`operations`) and their schedules (`serve`).

The flows are shells: each loads the configuration, runs one procedure of `scalper.ops` and
reports what it did; Prefect schedules them in New York time and keeps their history in the
local server (`scalper ops serve`). Nothing here decides a trade.
"""
