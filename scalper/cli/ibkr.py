"""Interactive Brokers commands: `scalper data download` and `scalper stream ib-bridge`.

**`scalper data download`**: historical bars from Interactive Brokers into the bar store.

Connects to the gateway of `broker` in the configuration (host, port, client id), downloads with
`scalper.ibkr.history` (chunked, paced to IB's rules, resumable: an interrupted run continues
where it stopped when run again) and stores the series, whole UTC days, replacing those days.
`--contract front` (the default) stores the front-contract series under the product symbol, each
bar naming its contract; `--contract MESH4` stores that contract under its own name.

It is an action of `scalper data` (`register_data`, listed in `DATA_ACTION_MODULES` of
`scalper.cli.data`), so ib_async is imported only when a download runs.

**`scalper stream ib-bridge`**: IB's real-time 5-second bars of the front contract, published
to `bars.<symbol>` as they arrive (`scalper.ibkr.bridge`), until stopped; it connects with its
own client id (`broker.client_id + 1`) and survives gateway restarts. It is an action of
`scalper stream` (`register_stream`, for the stream command's action modules).
"""

from __future__ import annotations

import argparse
import logging

from scalper.cli import instrument_symbol, iso_date


def register_data(actions: argparse._SubParsersAction) -> None:
    """Add `download` to the actions of `scalper data`."""
    download = actions.add_parser("download", help="download bars from IB into the store")
    download.add_argument("--start", type=iso_date, required=True, help="first UTC day")
    download.add_argument("--end", type=iso_date, required=True, help="last UTC day (included)")
    download.add_argument(
        "--bar-seconds", type=int, help="bar size in seconds (default: data.bar_seconds)"
    )
    download.add_argument(
        "--contract",
        default="front",
        help="front (roll rule, default), continuous (IB's CONTFUT, recent only) or a local "
        "symbol such as MESH4",
    )
    _add_ib_options(download, "broker.client_id + 3")
    download.set_defaults(func=_download)


def _add_ib_options(parser: argparse.ArgumentParser, client_id_default: str) -> None:
    """The options every IB action takes: the instrument, the API client id, the configuration."""
    parser.add_argument(
        "--symbol", type=instrument_symbol, help="instrument (default: instrument.symbol)"
    )
    parser.add_argument(
        "--client-id", type=int, help=f"IB API client id (default: {client_id_default})"
    )
    parser.add_argument("--config", help="configuration YAML (default: built-in defaults)")


def _download(args: argparse.Namespace) -> int:
    from scalper.config import load_config
    from scalper.ibkr.history import download_history
    from scalper.store import root_dir, write_bars_partitioned

    # ib_async logs every IB error itself (a "no data" weekend, a refused connection); the
    # download interprets each one and reports what matters in one line, so its log stays quiet.
    logging.getLogger("ib_async").setLevel(logging.CRITICAL)
    cfg = load_config(args.config)
    symbol = args.symbol or cfg.instrument.symbol
    bars = download_history(
        cfg.broker,
        symbol,
        args.start,
        args.end,
        bar_seconds=args.bar_seconds or cfg.data.bar_seconds,
        contract=args.contract,
        roll_days=cfg.instrument.roll_days_before_expiry,
        client_id=args.client_id,
    )
    span = f"{args.start} .. {args.end}"
    if bars.height == 0:
        print(f"scalper data: IB has no {symbol} bars for {span} (market closed?); nothing stored")
        return 0
    series = bars.get_column("symbol")[0]
    days = write_bars_partitioned(bars, series, source="ibkr")  # the raw stage: its origin
    contracts = ", ".join(bars.get_column("contract").unique(maintain_order=True))
    print(
        f"scalper data: downloaded {bars.height:,} {series} bars ({contracts}), "
        f"{len(days)} days ({span}), into {root_dir()}"
    )
    return 0


def register_stream(actions: argparse._SubParsersAction) -> None:
    """Add `ib-bridge` to the actions of `scalper stream`."""
    bridge = actions.add_parser(
        "ib-bridge", help="publish IB's real-time 5-second bars of the front contract to Kafka"
    )
    _add_ib_options(bridge, "broker.client_id + 1")
    bridge.set_defaults(func=_bridge)


def _bridge(args: argparse.Namespace) -> int:
    """Run the bridge until interrupted (SIGINT or SIGTERM); it reconnects by itself meanwhile."""
    import signal

    from scalper.config import load_config
    from scalper.ibkr.bridge import BarBridge, BridgeThread
    from scalper.ibkr.link import role_client_id
    from scalper.kafka.clients import publish
    from scalper.kafka.topics import LIVE, ensure_topics

    logging.getLogger("ib_async").setLevel(logging.CRITICAL)
    cfg = load_config(args.config)
    symbol = args.symbol or cfg.instrument.symbol
    client_id = args.client_id
    if client_id is None:
        client_id = role_client_id(cfg.broker, "bridge")
    roll_days = cfg.instrument.roll_days_before_expiry
    ensure_topics(cfg.kafka.bootstrap, [symbol])
    thread = BridgeThread(
        lambda emit: BarBridge(cfg.broker, symbol, roll_days, emit, client_id=client_id)
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a service stop ends it cleanly
    try:
        thread.start(attempts=None)
        print(f"scalper stream: bridging IB {symbol} bars to {LIVE.bars(symbol)}", flush=True)
        publish(cfg.kafka.bootstrap, LIVE.bars(symbol), thread.messages())
    finally:
        thread.stop()
    return 0
