"""The live trader of the stream driver, free of any orchestrator (Bytewax wraps it in `streams`).

- `inbound`: Kafka messages to trader input, or dead letters;
- `aggregator`: source bars (IB's 5-second bars) to the strategy's bar size, in event time;
- `trader`: one symbol's state and step: broker fills, engine decision, risk-gated sink;
- `sink`: the risk-gated order sink (exactly once, independent entry check);
- `brokers`: the broker of a worker thread: the paper broker, or one IB connection per symbol;
- `events`: what the trader publishes on `orders`, `fills`, `risk-events`, `dead-letter`;
- `settings`: a worker's configuration per symbol and its run folder;
- `worker` and `replay`: starting workers, and replaying a bars file end to end.
"""
