"""The nightly market-data job and its schedule.

**When.** 20:30 New York time, Sunday to Friday. The store's partitions are UTC days (SPEC §3),
and a UTC day ends at 19:00 New York in winter and 20:00 in summer; at the CME close (17:00) the
day is still open, and at 18:00 the next session starts writing into it. 20:30 is the first time
after the close at which the day is complete in both seasons, so the night's run stores it whole
and never has to come back for the rest.

**What.** The UTC day that has just ended, i.e. the New York date of the tick, for the configured
instrument (`instrument.symbol`). That day holds the session that closed at 17:00 (from UTC
midnight on) and the first hour of the next one; the session's earlier hours, from its 18:00 open,
were stored with the previous night's day. Sunday's run stores the first hour of Monday's
session; Saturday has no bars (Globex is closed) and no run.

**Backfill.** History is not the schedule's business: see `assets.market_data` (UI backfill over a
date range, or `assets.demo.materialize_days`).
"""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    MultiPartitionKey,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from assets.market_data import MARKET_DATA_ASSETS, MARKET_PARTITIONS
from assets.resources import ScalperConfig

NIGHTLY_CRON = "30 20 * * 0-5"
NIGHTLY_TIMEZONE = "America/New_York"

market_data_job = define_asset_job(
    "market_data",
    selection=AssetSelection.assets(*MARKET_DATA_ASSETS),
    partitions_def=MARKET_PARTITIONS,
    description="raw_bars → validated_bars → continuous_bars for the selected days and symbols.",
)


@schedule(
    job=market_data_job,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone=NIGHTLY_TIMEZONE,
    default_status=DefaultScheduleStatus.STOPPED,  # the default source is the simulator
    description="After the CME close: store, validate and stitch the UTC day that just ended.",
)
def nightly_market_data(
    context: ScheduleEvaluationContext, scalper_config: ScalperConfig
) -> RunRequest:
    """One run for the configured instrument and the UTC day that ended before the tick."""
    day = context.scheduled_execution_time.date().isoformat()  # the tick's New York date
    symbol = scalper_config.load().instrument.symbol
    return RunRequest(
        run_key=f"{symbol}|{day}",
        partition_key=MultiPartitionKey({"date": day, "symbol": symbol}),
    )
