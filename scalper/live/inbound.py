"""From Kafka messages to the traders' input: decoded, checked for form, addressed to a symbol.

The first line of defence of SPEC §3: whatever arrives, a message becomes either input for the
trader of one or more symbols, or a dead letter that says why (with the raw bytes). Checks that
need the previous bar (order, duplicates) belong to the trader, which has it.

`bars.<symbol>` carries that symbol's bars and, after the last bar of a replayed file, the
`end_of_data` command: in-band, because only within one partition does Kafka keep a message
behind the bars before it. Only a replay's data ends: on a live topic the marker is a dead letter,
as acting on it would trade the open bucket as a bar and close the position at a stale price.
`control` carries operator commands; `*` addresses every symbol. The topics are those of the
worker's namespace (`scalper.kafka.topics`), and each message keeps the time Kafka stamped it
with, by which a live trader judges a bar's age.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from scalper.kafka.messages import ALL_SYMBOLS, Bar, Control, decode_bar, decode_control
from scalper.kafka.topics import Namespace
from scalper.live.events import Event, dead_letter

END_OF_DATA = "end_of_data"


class Inbound(NamedTuple):
    """A decoded message for the trader of `symbol`, with where it came from and when Kafka
    took it (epoch ns; None when Kafka did not stamp it on append, which a live trader takes
    as now)."""

    symbol: str
    item: Bar | Control
    raw: bytes | None
    topic: str
    partition: int
    offset: int
    published_ns: int | None = None


class Decoder:
    """Decodes the messages of one worker's topics (its symbols' bars and `control`, in its
    namespace)."""

    def __init__(self, symbols: Iterable[str], namespace: Namespace) -> None:
        self._symbols = tuple(symbols)
        self._bars_topics = {namespace.bars(symbol): symbol for symbol in self._symbols}
        self._control = namespace.control
        self._live = namespace.is_live

    def __call__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        published_ns: int | None = None,
    ) -> list[Inbound | Event]:
        """Trader input (one per addressed symbol), or one dead letter."""
        found: Inbound | list[Inbound] | str
        try:
            if topic == self._control:
                found = self._command(topic, partition, offset, value)
            else:
                symbol = self._bars_topics[topic]
                found = self._bar(symbol, topic, partition, offset, value, published_ns)
        except Exception as exc:
            # The codecs never raise on bad input; should one ever, the message must not crash
            # the worker: it would be read again after every restart, a poison pill.
            found = f"undecodable: {type(exc).__name__}: {str(exc)[:80]}"
        if isinstance(found, str):
            return [dead_letter(found, value, topic, partition, offset, key)]
        return found if isinstance(found, list) else [found]

    def _bar(
        self,
        symbol: str,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        published_ns: int | None,
    ) -> Inbound | str:
        bar = decode_bar(value)
        if isinstance(bar, Bar):
            if bar.symbol != symbol:
                return f"bar of {bar.symbol} on {topic}"
            return Inbound(symbol, bar, value, topic, partition, offset, published_ns)
        control = decode_control(value)
        if not isinstance(control, Control):
            return bar  # the reason it is no bar
        if control.command != END_OF_DATA or control.symbol != symbol:
            return (
                f"command {control.command} for {control.symbol} on {topic}: only "
                f"{END_OF_DATA} for {symbol} travels with the bars"
            )
        if self._live:
            return f"{END_OF_DATA} on {topic}: a live market has no end of data, only a replay"
        return Inbound(symbol, control, value, topic, partition, offset)

    def _command(
        self, topic: str, partition: int, offset: int, value: bytes | None
    ) -> list[Inbound] | str:
        control = decode_control(value)
        if not isinstance(control, Control):
            return control
        if control.command == END_OF_DATA:
            return f"{END_OF_DATA} must follow the last bar on bars.<symbol>, not come on {topic}"
        if control.symbol == ALL_SYMBOLS:
            targets = self._symbols
        elif control.symbol in self._symbols:
            targets = (control.symbol,)
        else:
            return f"command for {control.symbol}, which this worker does not trade"
        return [Inbound(symbol, control, value, topic, partition, offset) for symbol in targets]
