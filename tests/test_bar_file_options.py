"""Every command that reads a bars file reads its times alike: `--ts-column`, `--ts-unit` and
`--stamped` (one helper adds them), over the configuration's `data:` answers; a file stamped at
bar ends is refused until declared, and then trades exactly as the start-stamped file.

The commands run in-process (`scalper.cli.main`): the file is refused or read before any work,
so each case costs a file read, not a sweep or a Kafka broker.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from scalper import store
from scalper.bars import read_bars, write_bars
from scalper.cli import main
from tests.shared import CONFORMANCE, REAL_DATA

ES_FRONT = REAL_DATA / "es_front_1m_2013_2020.csv"
CONFIG = CONFORMANCE / "02_stops_targets" / "config.yaml"
MINUTE = 60 * 10**9

# Every command that reads a bars file, with FILE where the file goes.
COMMANDS = {
    "backtest": ["backtest", "--config", str(CONFIG), "--data", "FILE"],
    "optimize": ["optimize", "--data", "FILE"],
    "walk-forward": ["walk-forward", "--data", "FILE"],
    "report": ["report", "--data", "FILE"],
    "data import": ["data", "import", "FILE", "--format", "normalized", "--symbol", "ES"],
    "validate": ["validate", "--symbol", "ES", "--file", "FILE"],
    "stream replay": ["stream", "replay", "--data", "FILE"],
}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCALPER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def start_stamped() -> pl.DataFrame:
    return read_bars(ES_FRONT)


@pytest.fixture(scope="module")
def vendor_file(tmp_path_factory: pytest.TempPathFactory, start_stamped: pl.DataFrame) -> Path:
    """The real ES bars as another vendor writes them: stamped at the bar's END, in epoch
    milliseconds, in a column named `time`."""
    path = tmp_path_factory.mktemp("vendor") / "es_ends_ms.csv"
    ends_ms = (pl.col("ts") + MINUTE) // 1_000_000
    start_stamped.with_columns(ends_ms).rename({"ts": "time"}).write_csv(path)
    return path


def command(name: str, path: Path, *options: str) -> list[str]:
    return [str(path) if word == "FILE" else word for word in COMMANDS[name]] + list(options)


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("scalper: error: "), lines
    return errors[0]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_that_reads_bars_takes_the_time_stamp_options(
    name: str, vendor_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The file's times are in `time`: the error says which option names them ...
    assert "--ts-column" in one_line_error(command(name, vendor_file), capsys)
    # ... named, their unit is found by size and the stamps are seen to be bar ends ...
    named = command(name, vendor_file, "--ts-column", "time")
    ends = one_line_error(named, capsys)
    assert "look like bar ends" in ends and "Give --stamped end" in ends
    # ... and a unit given is the unit used (ms read as seconds overflow: refused, not guessed).
    wrong_unit = one_line_error([*named, "--ts-unit", "s", "--stamped", "end"], capsys)
    assert "in seconds is beyond the year 2262; check --ts-unit" in wrong_unit


def test_a_declared_end_stamped_file_trades_as_the_start_stamped_one(
    tmp_path: Path, vendor_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    starts_out, ends_out = tmp_path / "starts.csv", tmp_path / "ends.csv"
    argv = ["backtest", "--config", str(CONFIG), "--json", "--trades-out"]
    assert main([*argv, str(starts_out), "--data", str(ES_FRONT)]) == 0
    declared = ["--ts-column", "time", "--stamped", "end"]
    assert main([*argv, str(ends_out), "--data", str(vendor_file), *declared]) == 0
    trades = pl.read_csv(starts_out)
    assert trades.height > 10
    assert pl.read_csv(ends_out).equals(trades)
    assert "tick grid" not in capsys.readouterr().err  # ES prices are on MES's 0.25 grid


def test_the_configuration_can_declare_the_files_of_its_source(
    tmp_path: Path, vendor_file: Path, start_stamped: pl.DataFrame
) -> None:
    config = tmp_path / "vendor.yaml"
    config.write_text("data: {ts_column: time, ts_unit: ms, stamped: end}\n")
    imported = ["data", "import", str(vendor_file), "--symbol", "ES", "--config", str(config)]
    assert main(imported) == 0
    stored = store.read_range("ES", *_days(start_stamped), store.stage_root("raw"))
    assert stored["ts"].to_list() == start_stamped["ts"].to_list()


def _days(bars: pl.DataFrame) -> tuple:
    days = pl.from_epoch(bars["ts"], time_unit="ns").dt.date()
    return days.min(), days.max()


def test_off_tick_prices_are_one_warning_in_a_backtest_and_refuse_a_replay(
    tmp_path: Path, start_stamped: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    nudged = pl.when(pl.int_range(pl.len()) % 100 == 7).then(pl.col("high") + 0.1)
    data = tmp_path / "off_tick.csv"
    write_bars(start_stamped.with_columns(nudged.otherwise(pl.col("high")).alias("high")), data)
    assert main(["backtest", "--config", str(CONFIG), "--data", str(data), "--json"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    (warning,) = [line for line in lines if "tick grid" in line]
    assert warning.startswith(f"warning: {data}: 191 of 19,083 bars have prices off the 0.25")
    # A replay feeds the live path, where such a bar is a dead letter: refused before Kafka.
    error = one_line_error(["stream", "replay", "--data", str(data)], capsys)
    assert "191 of 19,083 bars have prices off the 0.25" in error
    assert error.endswith("; the live worker refuses such bars")


def test_time_stamp_options_without_a_file_are_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = one_line_error(["optimize", "--symbol", "ES", "--stamped", "end"], capsys)
    assert "--stamped: they say how to read a --data file, not the store" in error
    error = one_line_error(["validate", "--symbol", "ES", "--ts-unit", "ms"], capsys)
    assert "--ts-unit: they say how to read a --file, not the store" in error


@pytest.mark.parametrize("name", ["backtest", "data import", "validate"])
def test_times_nothing_confirms_as_bar_starts_are_a_warning_until_declared(
    name: str, tmp_path: Path, start_stamped: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stretch of one session without a trading pause (cut at minute 37) cannot be told
    from its end-stamped twin, which read as starts trades every bar a bar early: before, both
    were taken without a word; refusing them would refuse good files. The user hears it."""
    hours = pl.from_epoch("ts", time_unit="ns").dt.hour()
    first = start_stamped.filter(hours == 13).get_column("ts")[37]
    stretch = start_stamped.filter(pl.col("ts").is_between(first, first + 300 * MINUTE))
    data = tmp_path / "stretch.csv"
    write_bars(stretch.with_columns(pl.col("ts") + MINUTE), data)  # stamped at the bar ends
    main(command(name, data))
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "bar starts" in line]
    assert warning.startswith(f"warning: {data}: nothing shows whether the times are bar starts")
    assert "say which with --stamped start|end" in warning
    main(command(name, data, "--stamped", "start"))  # declared: the user's word
    assert "bar starts" not in capsys.readouterr().err
    main(command(name, ES_FRONT))  # a file with its trading pauses tells by itself
    assert "bar starts" not in capsys.readouterr().err


@pytest.mark.parametrize("name", ["backtest", "data import", "validate"])
def test_times_of_another_zone_written_without_an_offset_are_a_warning(
    name: str, tmp_path: Path, start_stamped: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chicago wall clock without an offset is read as UTC (SPEC §3): every bar five or six
    hours early, the sessions wrong; a backtest of it traded without a word. The trading days
    then open at 12:00 or 13:00 New York, never at the Globex open: the user hears it."""
    chicago = pl.from_epoch("ts", time_unit="ns").dt.replace_time_zone("UTC")
    chicago = chicago.dt.convert_time_zone("America/Chicago").dt.replace_time_zone(None)
    data = tmp_path / "chicago.parquet"
    start_stamped.with_columns(chicago.alias("ts")).write_parquet(data)
    main(command(name, data))
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "zone" in line]
    assert warning.startswith(f"warning: {data}: the trading days open at 1")
    assert "New York here" in warning and "the CME's at 18:00" in warning
    assert "are the times wall clock of a zone at UTC-0" in warning
    main(command(name, ES_FRONT))  # in UTC: the days open at 18:00 New York
    assert "zone" not in capsys.readouterr().err


def test_a_file_naming_another_instrument_is_refused_before_it_is_traded(
    tmp_path: Path, start_stamped: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file whose `symbol` column says NQ, read with an MES configuration, was backtested,
    optimized (its approved sets recorded for NQ) and replayed with MES's point value and
    rules; the import refused it already. Every reader refuses it now; the case of a symbol
    is no difference."""
    data = tmp_path / "nq.csv"
    write_bars(start_stamped.with_columns(symbol=pl.lit("NQ")), data)
    for argv in (
        ["backtest", "--config", str(CONFIG), "--data", str(data)],
        ["optimize", "--data", str(data)],
        ["stream", "replay", "--data", str(data)],
    ):
        assert one_line_error(argv, capsys).endswith(f"{data}: holds bars of NQ, not MES"), argv
    error = one_line_error(["data", "import", str(data), "--symbol", "ES"], capsys)
    assert error.endswith(f"{data}: holds bars of NQ, not ES")
    lower = tmp_path / "mes.csv"
    write_bars(start_stamped.with_columns(symbol=pl.lit("mes")), lower)
    assert main(["data", "import", str(lower), "--symbol", "MES"]) == 0


def test_research_on_a_file_records_the_configured_instruments_spelling(
    tmp_path: Path, start_stamped: pl.DataFrame
) -> None:
    """A file whose symbol column spells the instrument in lower case is the configured
    instrument's; its research is recorded under the table's spelling, which session open
    compares with (it took the file's `mes` before)."""
    from scalper.cli import build_parser
    from scalper.cli.research import _inputs

    data = tmp_path / "mes.csv"
    write_bars(start_stamped.head(100).with_columns(symbol=pl.lit("mes")), data)
    args = build_parser().parse_args(["optimize", "--data", str(data)])
    assert _inputs(args, "backtest_sessions")[2] == "MES"
