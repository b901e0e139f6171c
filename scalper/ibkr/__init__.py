"""Interactive Brokers through ib_async: the system's edge to IB Gateway / TWS.

Historical data:

* `connection` — connecting, with one clear error line when the gateway is unreachable (or the
  client id is taken), and the account id kept out of ib_async's log lines;
* `pacing`     — a scheduler that keeps historical-data requests within IB's pacing rules;
* `history`    — the historical bar download (chunked, paced, resumable), returning `BAR_SCHEMA`
  frames with bars stamped at their start in UTC.

Live trading:

* `connectivity` — IB's connectivity notices (1100, 1102, 2103, ...) as a state: may entries go;
* `link`     — a self-healing connection: backoff, automatic reconnect, link state files;
* `loop`     — an asyncio loop on its own thread, where ib_async lives for synchronous callers;
* `orders`   — engine intents to IB orders (market, bracket with OCA, exits) and executions
  back to the engine's fills (partial fills summed, commissions kept);
* `adapter`  — `IbkrBroker`, the stream's broker: orders, fills per bar, reconciliation;
* `account`  — positions, working orders and flattening, for the operations;
* `bridge`   — IB real-time 5-second bars of the front contract into Kafka.

ib_async is imported by these modules only; the rest of the library never needs it, and the CLI
imports them lazily, so the package can be installed without the broker extras.
"""
