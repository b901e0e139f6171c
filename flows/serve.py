"""Serve the operations flows on their schedules, against the local Prefect server.

`python -m flows.serve [--config C]` (what `scalper ops serve` runs, with the environment of
`scalper.ops.prefect.prefect_env`): one process serves every deployment and runs each flow on
time. Schedules are cron in the session's time zone (New York by default, DST-correct), on
weekdays:

* `session-open`      at `ops.session_open_at`;
* `eod-watchdog`      at `session.flatten_at` + `ops.eod_grace_seconds`, and at the earlier
  flatten time + grace of each early close of the coming year (SPEC §4.9): each schedule names
  its time, and a run does nothing on a day whose watch time is another;
* `daily-summary`     at `ops.summary_at`;
* `stream-supervisor` every `ops.supervise_every_seconds`, only with `ops.supervise_worker`: it
  starts the stream worker, which trades, so it is never served unasked;
* `kill-switch`       no schedule: run from the UI (or `scalper kill`, which needs no server).

Any of them runs once, without the server, by `scalper ops run <name>`.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, time
from typing import Any

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval

from flows.operations import (
    daily_summary_flow,
    eod_watchdog,
    kill_switch,
    session_open,
    stream_supervisor,
)
from scalper.config import Config, load_config
from scalper.ops.procedures import eod_watch_times

WEEKDAYS = "1-5"


def weekday_cron(at: time, timezone: str, parameters: dict[str, Any] | None = None) -> Cron:
    """A cron schedule at `at` (to the minute) on weekdays, in `timezone`."""
    return Cron(f"{at.minute} {at.hour} * * {WEEKDAYS}", timezone=timezone, parameters=parameters)


def deployments(cfg: Config, config_path: str | None) -> list[RunnerDeployment]:
    """The deployments of the operations flows, scheduled from the configuration."""
    zone = cfg.session.timezone
    parameters = {"config": config_path}
    watches = [
        weekday_cron(at, zone, {**parameters, "at": f"{at:%H:%M}"})
        for at in eod_watch_times(cfg, datetime.now(UTC).date())
    ]
    return [
        session_open.to_deployment(
            "session-open", schedule=weekday_cron(cfg.ops.session_open_at, zone),
            parameters=parameters,
        ),
        eod_watchdog.to_deployment("eod-watchdog", schedules=watches, parameters=parameters),
        daily_summary_flow.to_deployment(
            "daily-summary", schedule=weekday_cron(cfg.ops.summary_at, zone),
            parameters=parameters,
        ),
        kill_switch.to_deployment("kill-switch", parameters=parameters),
    ] + ([
        stream_supervisor.to_deployment(
            "stream-supervisor", schedule=Interval(cfg.ops.supervise_every_seconds),
            parameters=parameters,
        ),
    ] if cfg.ops.supervise_worker else [])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="configuration YAML (default: built-in defaults)")
    args = parser.parse_args()
    serve(*deployments(load_config(args.config), args.config))


if __name__ == "__main__":
    main()
