"""scalper: systematic intraday trading of CME micro equity-index futures.

The library imports no orchestrator (Dagster, Prefect, Bytewax); those live in `assets/`, `flows/`
and `streams/` and call into this package, which calls the Rust engine `scalper._engine`.
"""

__version__ = "0.1.0"
