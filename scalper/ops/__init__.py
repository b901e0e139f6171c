"""The trading day's operations: what the Prefect flows (`flows/`) and the CLI run.

Each operation is a plain function over an `Operations` context (configuration, ledger, broker
view, control topic, alerts), so the flows are thin shells that schedule and record them, and
`scalper kill` / `scalper resume` / `scalper status` run the very same code without Prefect.
This package imports no orchestrator.

* `context`    — `Operations`: what every operation needs, from one configuration file;
* `broker`     — the broker as the operations see it: positions, working orders, flattening,
  for IBKR (a connection of its own) and for the paper broker (its state in the ledger);
* `procedures` — session open (reconcile, approved parameters, daily state), the end-of-day
  watchdog, the kill switch and resume;
* `summary`    — the daily summary (alert text and an HTML page);
* `supervisor` — the stream worker's health, its start and restart;
* `status`     — everything `scalper status` shows;
* `prefect`    — the local Prefect server's environment and processes (no Prefect import).
"""
