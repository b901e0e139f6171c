"""Bytewax dataflows of the stream driver (`live`); the trading logic they run is `scalper.live`."""
