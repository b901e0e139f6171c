//! Python bindings (`scalper._engine`): NumPy columns in without copying, results out as NumPy
//! arrays and plain dicts. The GIL is released while the engine runs.

use numpy::{IntoPyArray, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::batch::{self, Columns};
use crate::indicators::Atr;
use crate::machine::{Bar, Engine, Trade};
use crate::metrics::Metrics;
use crate::params::{Params, Rule, NS_PER_MIN, NS_PER_SEC};
use crate::sim::{ExitReason, Fill, FillSim, Order, OrderKind};
use crate::wire;

/// The keys of the flat parameter mapping built by `scalper.engine.engine_params`.
const PARAM_KEYS: [&str; 45] = [
    "tick_size",
    "point_value",
    "bar_seconds",
    "strategy",
    "lookback",
    "entry_z",
    "exit_z",
    "k",
    "period",
    "oversold",
    "overbought",
    "min_volume",
    "position_size",
    "stop_loss_ticks",
    "take_profit_ticks",
    "daily_loss_limit",
    "daily_drawdown_limit",
    "max_consecutive_losses",
    "loss_pause_minutes",
    "max_trades_per_day",
    "max_position_minutes",
    "starting_capital",
    "kill_switch_loss",
    "min_account_balance",
    "timezone",
    "entry_start",
    "entry_end",
    "flatten_at",
    "session_end",
    "commission_per_side",
    "slippage_ticks",
    "early_closes",
    "early_entry_end_minutes",
    "early_flatten_minutes",
    "atr_period",
    "stop_atr",
    "target_atr",
    "trail_ticks",
    "size_tiers",
    "max_risk_per_trade",
    "reduce_size_at",
    "reduce_size_factor",
    "slippage_model",
    "low_volume",
    "high_vol_atr",
];

/// Keys that may be left out, with the value they then take: the SPEC §5 defaults of the §4.9
/// rules (all off), so a mapping written before them still means the same.
fn get_or<'py, T: FromPyObject<'py>>(d: &Bound<'py, PyDict>, key: &str, default: T) -> PyResult<T> {
    if d.contains(key)? {
        get(d, key)
    } else {
        Ok(default)
    }
}

/// `early_closes`: (session day, local close seconds) pairs, one per day, any order.
fn early_closes(d: &Bound<'_, PyDict>) -> PyResult<Vec<(i32, i32)>> {
    let mut closes: Vec<(i32, i32)> = get_or(d, "early_closes", Vec::new())?;
    closes.sort_unstable();
    if let Some(w) = closes.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(value_error(format!("engine parameter \"early_closes\": session day {} twice", w[0].0)));
    }
    if let Some((day, secs)) = closes.iter().find(|(_, s)| !(0..86_400).contains(s)) {
        return Err(value_error(format!(
            "engine parameter \"early_closes\": close {secs} s of day {day} is not a time of day"
        )));
    }
    Ok(closes)
}

/// `size_tiers`: `[min_balance, contracts]` pairs, as lists or tuples.
fn size_tiers(d: &Bound<'_, PyDict>) -> PyResult<Vec<(f64, i64)>> {
    let items: Vec<Bound<'_, PyAny>> = get_or(d, "size_tiers", Vec::new())?;
    items
        .iter()
        .map(|tier| {
            let pair: Vec<Bound<'_, PyAny>> = tier.extract()?;
            match pair.as_slice() {
                [balance, contracts] => Ok((balance.extract()?, contracts.extract()?)),
                _ => Err(value_error(format!(
                    "engine parameter \"size_tiers\": {tier} is not a [min_balance, contracts] pair"
                ))),
            }
        })
        .collect::<PyResult<_>>()
        .map_err(|e| value_error(format!("engine parameter \"size_tiers\": {e}")))
}

fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

fn get<'py, T: FromPyObject<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    d.get_item(key)?
        .ok_or_else(|| value_error(format!("engine parameter {key:?} is missing")))?
        .extract()
        .map_err(|e| value_error(format!("engine parameter {key:?}: {e}")))
}

fn params_from_dict(d: &Bound<'_, PyDict>) -> PyResult<Params> {
    for key in d.keys() {
        let key: String = key.extract()?;
        if !PARAM_KEYS.contains(&key.as_str()) {
            return Err(value_error(format!("unknown engine parameter {key:?}")));
        }
    }
    let strategy: String = get(d, "strategy")?;
    let lookback: usize = get(d, "lookback")?;
    let rule = match strategy.as_str() {
        "zscore" => Rule::ZScore { lookback, entry: get(d, "entry_z")?, exit: get(d, "exit_z")? },
        "bollinger" => Rule::ZScore { lookback, entry: get(d, "k")?, exit: 0.0 },
        "rsi" => Rule::Rsi {
            period: get(d, "period")?,
            oversold: get(d, "oversold")?,
            overbought: get(d, "overbought")?,
        },
        other => return Err(value_error(format!("unknown strategy kind {other:?}"))),
    };
    let p = Params {
        tick_size: get(d, "tick_size")?,
        point_value: get(d, "point_value")?,
        bar_ns: get::<i64>(d, "bar_seconds")? * NS_PER_SEC,
        rule,
        min_volume: get(d, "min_volume")?,
        position_size: get(d, "position_size")?,
        stop_loss_ticks: get(d, "stop_loss_ticks")?,
        take_profit_ticks: get(d, "take_profit_ticks")?,
        daily_loss_limit: get(d, "daily_loss_limit")?,
        daily_drawdown_limit: get(d, "daily_drawdown_limit")?,
        max_consecutive_losses: get(d, "max_consecutive_losses")?,
        loss_pause_ns: get::<i64>(d, "loss_pause_minutes")? * NS_PER_MIN,
        max_trades_per_day: get(d, "max_trades_per_day")?,
        max_position_ns: get::<i64>(d, "max_position_minutes")? * NS_PER_MIN,
        starting_capital: get(d, "starting_capital")?,
        kill_switch_loss: get(d, "kill_switch_loss")?,
        min_account_balance: get(d, "min_account_balance")?,
        timezone: get(d, "timezone")?,
        entry_start: get(d, "entry_start")?,
        entry_end: get(d, "entry_end")?,
        flatten_at: get(d, "flatten_at")?,
        session_end: get(d, "session_end")?,
        commission_per_side: get(d, "commission_per_side")?,
        slippage_ticks: get(d, "slippage_ticks")?,
        early_closes: early_closes(d)?,
        early_entry_end: get_or::<i32>(d, "early_entry_end_minutes", 20)? * 60,
        early_flatten: get_or::<i32>(d, "early_flatten_minutes", 10)? * 60,
        atr_period: get_or(d, "atr_period", 14)?,
        stop_atr: get_or(d, "stop_atr", 0.0)?,
        target_atr: get_or(d, "target_atr", 0.0)?,
        trail_ticks: get_or(d, "trail_ticks", 0)?,
        size_tiers: size_tiers(d)?,
        max_risk_per_trade: get_or(d, "max_risk_per_trade", 0.0)?,
        reduce_size_at: get_or(d, "reduce_size_at", None)?,
        reduce_size_factor: get_or(d, "reduce_size_factor", 0.5)?,
        adaptive_slippage: match get_or(d, "slippage_model", "fixed".to_string())?.as_str() {
            "fixed" => false,
            "adaptive" => true,
            other => return Err(value_error(format!("unknown slippage model {other:?}"))),
        },
        low_volume: get_or(d, "low_volume", 0)?,
        high_vol_atr: get_or(d, "high_vol_atr", 0.0)?,
    };
    risk_model_problem(&p).map_or(Ok(()), |why| Err(value_error(why)))?;
    let window_ok = match p.rule {
        Rule::ZScore { lookback, .. } => lookback >= 2,
        Rule::Rsi { period, .. } => period >= 1,
    };
    let early_ok = (0..=1440 * 60).contains(&p.early_entry_end) && (0..=1440 * 60).contains(&p.early_flatten);
    if !window_ok || !early_ok || p.bar_ns <= 0 || p.tick_size <= 0.0 || p.position_size < 1 {
        return Err(value_error(format!("engine parameters out of range: {p:?}")));
    }
    Ok(p)
}

/// Why the SPEC §4.9 parameters cannot be run, if they cannot (the configuration says it
/// first, with the file and key; this guards the boundary).
fn risk_model_problem(p: &Params) -> Option<String> {
    let ascending = p.size_tiers.windows(2).all(|w| w[0].0 < w[1].0);
    if p.stop_loss_ticks > 0 && p.stop_atr > 0.0 {
        Some("engine parameters: a stop in ticks and in ATRs at once".to_string())
    } else if p.take_profit_ticks > 0 && p.target_atr > 0.0 {
        Some("engine parameters: a target in ticks and in ATRs at once".to_string())
    } else if !ascending || p.size_tiers.iter().any(|&(b, q)| !b.is_finite() || q < 0) {
        let tiers = &p.size_tiers;
        Some(format!(
            "engine parameter \"size_tiers\": min_balance must ascend strictly, contracts be >= 0: {tiers:?}"
        ))
    } else if !(p.reduce_size_factor > 0.0 && p.reduce_size_factor <= 1.0) {
        Some(format!("engine parameter \"reduce_size_factor\" must be in (0, 1]: {}", p.reduce_size_factor))
    } else if p.reduce_size_at.is_some_and(|t| !(0..86_400).contains(&t)) {
        Some(format!("engine parameter \"reduce_size_at\" is not a time of day: {:?}", p.reduce_size_at))
    } else if p.atr_period < 1
        || [p.stop_atr, p.target_atr, p.max_risk_per_trade, p.high_vol_atr]
            .iter()
            .any(|x| x.is_nan() || *x < 0.0)
        || p.trail_ticks < 0
        || p.low_volume < 0
    {
        Some(format!("engine parameters out of range: {p:?}"))
    } else {
        None
    }
}

fn action_name(action: i8) -> &'static str {
    if action > 0 {
        "BUY"
    } else {
        "SELL"
    }
}

fn parse_action(action: &str) -> PyResult<i8> {
    match action {
        "BUY" | "buy" => Ok(1),
        "SELL" | "sell" => Ok(-1),
        other => Err(value_error(format!("order action must be BUY or SELL, not {other:?}"))),
    }
}

/// An exit by its reason name (SPEC §4 `exit_reason`); no reason is a strategy exit.
fn exit_kind(reason: Option<&str>) -> PyResult<OrderKind> {
    let name = reason.unwrap_or("signal");
    ExitReason::from_name(name)
        .map(OrderKind::Exit)
        .ok_or_else(|| value_error(format!("unknown exit reason {name:?}")))
}

fn session_date(day: i32) -> String {
    chrono::DateTime::from_timestamp(i64::from(day) * 86_400, 0)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default()
}

fn reason_of(kind: OrderKind) -> Option<&'static str> {
    match kind {
        OrderKind::Entry => None,
        OrderKind::Exit(r) => Some(r.name()),
    }
}

fn order_dict<'py>(
    py: Python<'py>,
    order: &Order,
    engine: &Engine,
    bar: &Bar,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let day = engine.book.session_day.unwrap_or_default();
    d.set_item("session", session_date(day))?;
    d.set_item("seq", engine.book.order_seq)?;
    d.set_item("action", action_name(order.action))?;
    d.set_item("qty", order.qty)?;
    d.set_item("kind", if order.kind == OrderKind::Entry { "entry" } else { "exit" })?;
    d.set_item("reason", reason_of(order.kind))?;
    d.set_item("bar_ts", bar.ts)?;
    d.set_item("decided_ts", bar.ts + engine.params.bar_ns)?;
    // An entry's bracket is the order's own (fixed at the decision, SPEC §4.9).
    let (stop, target) = match order.kind {
        OrderKind::Entry => (order.stop_ticks, order.target_ticks),
        OrderKind::Exit(_) => (engine.params.stop_loss_ticks, engine.params.take_profit_ticks),
    };
    d.set_item("stop_loss_ticks", stop)?;
    d.set_item("take_profit_ticks", target)?;
    Ok(d)
}

fn fill_dict<'py>(py: Python<'py>, fill: &Fill) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ts", fill.ts)?;
    d.set_item("action", action_name(fill.action))?;
    d.set_item("qty", fill.qty)?;
    d.set_item("price", fill.price)?;
    d.set_item("kind", if fill.kind == OrderKind::Entry { "entry" } else { "exit" })?;
    d.set_item("reason", reason_of(fill.kind))?;
    Ok(d)
}

fn trade_dict<'py>(py: Python<'py>, t: &Trade) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("entry_ts", t.entry_ts)?;
    d.set_item("exit_ts", t.exit_ts)?;
    d.set_item("side", if t.side > 0 { "long" } else { "short" })?;
    d.set_item("qty", t.qty)?;
    d.set_item("entry_price", t.entry_price)?;
    d.set_item("exit_price", t.exit_price)?;
    d.set_item("pnl", t.pnl)?;
    d.set_item("exit_reason", t.reason.name())?;
    Ok(d)
}

fn metrics_dict<'py>(py: Python<'py>, m: &Metrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("trades", m.trades)?;
    d.set_item("sessions", m.sessions)?;
    for (name, value) in Metrics::NAMES.iter().zip(m.values()) {
        if !d.contains(*name)? {
            d.set_item(*name, value)?;
        }
    }
    Ok(d)
}

/// The bar columns as a mapping of contiguous NumPy arrays (borrowed, never copied).
#[derive(FromPyObject)]
struct BarArrays<'py> {
    #[pyo3(item)]
    ts: PyReadonlyArray1<'py, i64>,
    #[pyo3(item)]
    open: PyReadonlyArray1<'py, f64>,
    #[pyo3(item)]
    high: PyReadonlyArray1<'py, f64>,
    #[pyo3(item)]
    low: PyReadonlyArray1<'py, f64>,
    #[pyo3(item)]
    close: PyReadonlyArray1<'py, f64>,
    #[pyo3(item)]
    volume: PyReadonlyArray1<'py, i64>,
}

impl BarArrays<'_> {
    fn columns(&self) -> PyResult<Columns<'_>> {
        let cols = Columns {
            ts: contiguous("ts", &self.ts)?,
            open: contiguous("open", &self.open)?,
            high: contiguous("high", &self.high)?,
            low: contiguous("low", &self.low)?,
            close: contiguous("close", &self.close)?,
            volume: contiguous("volume", &self.volume)?,
        };
        cols.check().map_err(value_error)?;
        Ok(cols)
    }
}

fn contiguous<'a, T: numpy::Element>(name: &str, array: &'a PyReadonlyArray1<'_, T>) -> PyResult<&'a [T]> {
    array.as_slice().map_err(|_| {
        let dtype = std::any::type_name::<T>();
        value_error(format!("bar column {name} must be a contiguous {dtype} array"))
    })
}

/// Backtest over columns: returns trade columns, per-bar equity, per-session P&L and metrics.
#[pyfunction]
fn backtest<'py>(
    py: Python<'py>,
    columns: BarArrays<'py>,
    params: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let p = params_from_dict(params)?;
    let cols = columns.columns()?;
    let out = py.allow_threads(|| batch::backtest(&p, &cols)).map_err(value_error)?;
    let t = &out.trades;
    let d = PyDict::new(py);
    d.set_item("entry_ts", t.iter().map(|x| x.entry_ts).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("exit_ts", t.iter().map(|x| x.exit_ts).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("side", t.iter().map(|x| x.side).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("qty", t.iter().map(|x| x.qty).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("entry_price", t.iter().map(|x| x.entry_price).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("exit_price", t.iter().map(|x| x.exit_price).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("pnl", t.iter().map(|x| x.pnl).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("exit_reason", t.iter().map(|x| x.reason as u8).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("equity", out.equity.into_pyarray(py))?;
    d.set_item("session_day", out.session_days.into_pyarray(py))?;
    d.set_item("session_pnl", out.session_pnl.into_pyarray(py))?;
    d.set_item("metrics", metrics_dict(py, &out.metrics)?)?;
    let refused = PyDict::new(py);
    refused.set_item("atr", out.refused_atr)?;
    refused.set_item("size", out.refused_size)?;
    d.set_item("gate_refusals", refused)?;
    Ok(d)
}

/// Many parameter sets over the same bars, in parallel; one metrics column per field.
#[pyfunction]
#[pyo3(signature = (columns, param_sets, threads=None))]
fn sweep<'py>(
    py: Python<'py>,
    columns: BarArrays<'py>,
    param_sets: &Bound<'py, PyList>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let sets = param_sets
        .iter()
        .map(|item| params_from_dict(item.downcast::<PyDict>()?))
        .collect::<PyResult<Vec<_>>>()?;
    let cols = columns.columns()?;
    let results = py.allow_threads(|| batch::sweep(&sets, &cols, threads)).map_err(value_error)?;
    let d = PyDict::new(py);
    for (j, name) in Metrics::NAMES.iter().enumerate() {
        let column: Vec<f64> = results.iter().map(|m| m.values()[j]).collect();
        d.set_item(*name, column.into_pyarray(py))?;
    }
    Ok(d)
}

/// What `__reduce__` returns: the class's `restore` and its argument, the `snapshot()` bytes.
type Reduced = (PyObject, (PyObject,));

/// Pickling through `snapshot`/`restore`, for both classes: the pickle is the snapshot format,
/// versioned and exact, rather than a second encoding of the same state.
fn reduce_via_snapshot(obj: &Bound<'_, PyAny>) -> PyResult<Reduced> {
    let restore = obj.getattr("restore")?.unbind();
    let snapshot = obj.call_method0("snapshot")?.unbind();
    Ok((restore, (snapshot,)))
}

/// The incremental engine: `on_bar` per bar returns the order decided at its close, or None.
#[pyclass(name = "Engine", module = "scalper._engine")]
struct PyEngine {
    inner: Engine,
    fills: Vec<Fill>,
    trades: Vec<Trade>,
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (params, simulate_fills=true))]
    fn new(params: &Bound<'_, PyDict>, simulate_fills: bool) -> PyResult<Self> {
        let engine = Engine::new(params_from_dict(params)?, simulate_fills).map_err(value_error)?;
        Ok(PyEngine { inner: engine, fills: Vec::new(), trades: Vec::new() })
    }

    /// Feeds one bar (invalid bars raise ValueError and change nothing).
    #[allow(clippy::too_many_arguments)]
    fn on_bar<'py>(
        &mut self,
        py: Python<'py>,
        ts: i64,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: i64,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let bar = Bar { ts, open, high, low, close, volume };
        let (order, events) = self.inner.on_bar(bar).map_err(value_error)?;
        for (fill, trade) in events {
            self.fills.push(fill);
            self.trades.extend(trade);
        }
        order.map(|o| order_dict(py, &o, &self.inner, &bar)).transpose()
    }

    /// A fill from an outside broker; returns the closed trade for an exit fill (which
    /// `take_trades` does not report again).
    #[pyo3(signature = (ts, action, qty, price, reason=None))]
    fn on_fill<'py>(
        &mut self,
        py: Python<'py>,
        ts: i64,
        action: &str,
        qty: i64,
        price: f64,
        reason: Option<&str>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let action = parse_action(action)?;
        let kind = if self.inner.book.side == 0 {
            OrderKind::Entry
        } else {
            let pending = self.inner.book.in_flight.and_then(|o| reason_of(o.kind));
            exit_kind(reason.or(pending))?
        };
        let fill = Fill { ts, action, qty, price, kind };
        // Returned, not queued: `take_fills`/`take_trades` hold what only the engine knows of
        // (its simulated fills); the caller of `on_fill` has this fill and trade already.
        let trade = self.inner.on_fill(fill).map_err(value_error)?;
        trade.map(|t| trade_dict(py, &t)).transpose()
    }

    /// Whether an order decided here waits for its fill: the live trader asks at every bar,
    /// so it is a plain flag, not the `state()` mapping.
    fn order_in_flight(&self) -> bool {
        self.inner.book.in_flight.is_some()
    }

    /// The broker refused the order in flight.
    fn on_reject(&mut self) -> bool {
        self.inner.on_reject().is_some()
    }

    /// End of data: closes an open position at the last close (simulated fills only).
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let trade = self.inner.finish();
        self.trades.extend(trade);
        trade.map(|t| trade_dict(py, &t)).transpose()
    }

    /// Fills since the last call (simulated fills only).
    fn take_fills<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.fills.drain(..).map(|f| fill_dict(py, &f)).collect()
    }

    /// Trades closed since the last call.
    fn take_trades<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.trades.drain(..).map(|t| trade_dict(py, &t)).collect()
    }

    /// Stops new entries and flattens at the next decision (kill switch); permanent until reset.
    fn halt(&mut self) {
        self.inner.book.halted = true;
    }

    /// The kill switch: halt now and return the flattening exit order (None when flat).
    fn kill<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let order = self.inner.kill();
        match (order, self.inner.last_bar) {
            (Some(o), Some(bar)) => Ok(Some(order_dict(py, &o, &self.inner, &bar)?)),
            _ => Ok(None),
        }
    }

    /// Applies new parameters from the next bar on, keeping position, account and counters;
    /// `recent_closes` (oldest first) warm up the new indicator.
    fn reload(&mut self, params: &Bound<'_, PyDict>, recent_closes: Vec<f64>) -> PyResult<()> {
        self.inner.reload(params_from_dict(params)?, &recent_closes).map_err(value_error)
    }

    /// The manual reset of a halt.
    fn reset_halt(&mut self) {
        self.inner.book.halted = false;
    }

    /// Pauses (True) or resumes (False) entries; exits keep running.
    fn pause_entries(&mut self, paused: bool) {
        self.inner.book.entries_paused = paused;
    }

    /// The decision state, for status pages and reconciliation.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let b = &self.inner.book;
        let d = PyDict::new(py);
        d.set_item("session", b.session_day.map(session_date))?;
        d.set_item("position", i64::from(b.side) * b.qty)?;
        d.set_item("entry_price", (b.side != 0).then_some(b.entry_price))?;
        d.set_item("entry_ts", (b.side != 0).then_some(b.entry_ts))?;
        d.set_item("daily_pnl", b.daily_pnl)?;
        d.set_item("daily_peak", b.daily_peak)?;
        d.set_item("cumulative_pnl", b.cumulative_pnl)?;
        d.set_item("trades_today", b.trades_today)?;
        d.set_item("consecutive_losses", b.consecutive_losses)?;
        d.set_item("pause_until", (b.pause_until != i64::MIN).then_some(b.pause_until))?;
        d.set_item("halted", b.halted)?;
        d.set_item("entries_paused", b.entries_paused)?;
        d.set_item("order_in_flight", b.in_flight.is_some())?;
        d.set_item("order_seq", b.order_seq)?;
        d.set_item("bars_seen", self.inner.bars_seen)?;
        let refused = PyDict::new(py);
        refused.set_item("atr", b.refused_atr)?;
        refused.set_item("size", b.refused_size)?;
        d.set_item("gate_refusals", refused)?;
        d.set_item("last_bar_ts", self.inner.last_bar.map(|b| b.ts))?;
        Ok(d)
    }

    /// The whole state as bytes (`Engine.restore` brings it back, bit for bit).
    fn snapshot<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.snapshot())
    }

    #[staticmethod]
    fn restore(data: &[u8]) -> PyResult<Self> {
        Ok(PyEngine {
            inner: Engine::restore(data).map_err(value_error)?,
            fills: Vec::new(),
            trades: Vec::new(),
        })
    }

    /// Pickling goes through the snapshot, so Bytewax recovery stores the exact state.
    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<Reduced> {
        reduce_via_snapshot(slf.as_any())
    }
}

/// Prefix of a `FillSimulator` snapshot: a tag and the format version (v1 had none).
const SIMULATOR_SNAPSHOT: [u8; 3] = *b"FS\x02";

/// The simulated broker (fills at the next open with slippage, brackets intrabar), for the paper
/// broker of the live stream: the same code the backtest fills with.
#[pyclass(name = "FillSimulator", module = "scalper._engine")]
struct PyFillSimulator {
    params: Params,
    sim: FillSim,
    /// The ATR adaptive slippage reads (SPEC §4.9), kept here as the engine keeps its own.
    atr: Option<Atr>,
}

#[pymethods]
impl PyFillSimulator {
    #[new]
    fn new(params: &Bound<'_, PyDict>) -> PyResult<Self> {
        let params = params_from_dict(params)?;
        let atr = params.slips_on_atr().then(|| Atr::new(params.atr_period));
        Ok(PyFillSimulator { params, sim: FillSim::default(), atr })
    }

    /// Queues a market order for the next bar's open. An entry's stop and target distances in
    /// ticks are its own (the engine's order carries them), else the parameters'.
    #[pyo3(signature = (action, qty, kind, reason=None, stop_ticks=None, target_ticks=None))]
    fn submit(
        &mut self,
        action: &str,
        qty: i64,
        kind: &str,
        reason: Option<&str>,
        stop_ticks: Option<i64>,
        target_ticks: Option<i64>,
    ) -> PyResult<()> {
        let action = parse_action(action)?;
        let order = match kind {
            "entry" => Order {
                action,
                qty,
                kind: OrderKind::Entry,
                stop_ticks: stop_ticks.unwrap_or(self.params.stop_loss_ticks),
                target_ticks: target_ticks.unwrap_or(self.params.take_profit_ticks),
            },
            "exit" => Order { kind: exit_kind(reason)?, ..Order::exit(action, qty, ExitReason::Signal) },
            other => return Err(value_error(format!("order kind must be entry or exit, not {other:?}"))),
        };
        self.sim.submit(order);
        Ok(())
    }

    /// Cancels the working market order; True if there was one.
    fn cancel(&mut self) -> bool {
        self.sim.cancel().is_some()
    }

    /// Fills produced by one bar (the working order at the open, then stop/target intrabar).
    /// The adaptive slippage model reads every bar's close and volume (SPEC §4.9).
    #[pyo3(signature = (ts, open, high, low, close=None, volume=None))]
    #[allow(clippy::too_many_arguments)]
    fn on_bar<'py>(
        &mut self,
        py: Python<'py>,
        ts: i64,
        open: f64,
        high: f64,
        low: f64,
        close: Option<f64>,
        volume: Option<i64>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let (close, volume) = match (close, volume) {
            (Some(c), Some(v)) => (c, v),
            _ if self.params.adaptive_slippage => {
                return Err(value_error("the adaptive slippage model needs each bar's close and volume"))
            }
            _ => (open, 0),
        };
        let bar = Bar { ts, open, high, low, close, volume };
        let atr = self.atr.as_mut().map_or(f64::NAN, |a| a.update(high, low, close));
        let mut fills = Vec::new();
        self.sim.on_bar(&self.params, &bar, atr, |f| fills.push(f));
        fills.iter().map(|f| fill_dict(py, f)).collect()
    }

    /// Closes the position at `close` with slippage (end of data).
    fn close_out<'py>(
        &mut self,
        py: Python<'py>,
        ts: i64,
        close: f64,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.sim.close_out(&self.params, ts, close).map(|f| fill_dict(py, &f)).transpose()
    }

    /// Signed position (contracts).
    fn position(&self) -> i64 {
        let (side, qty) = self.sim.position();
        i64::from(side) * qty
    }

    fn has_pending(&self) -> bool {
        self.sim.pending().is_some()
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut bytes = SIMULATOR_SNAPSHOT.to_vec();
        let state = (&self.params, &self.sim, &self.atr);
        bytes.extend(postcard::to_stdvec(&state).map_err(|e| value_error(e.to_string()))?);
        Ok(PyBytes::new(py, &bytes))
    }

    #[staticmethod]
    fn restore(data: &[u8]) -> PyResult<Self> {
        let body = data.strip_prefix(SIMULATOR_SNAPSHOT.as_slice()).ok_or_else(|| {
            value_error("simulator snapshot of another version (expected the SPEC §4.9 format, v2)")
        })?;
        let (params, sim, atr): (Params, FillSim, Option<Atr>) = postcard::from_bytes(body)
            .map_err(|e| value_error(format!("corrupt simulator snapshot: {e}")))?;
        Ok(PyFillSimulator { params, sim, atr })
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<Reduced> {
        reduce_via_snapshot(slf.as_any())
    }
}

/// The fields of a `bars.<symbol>` message in its common form, as a tuple in `Bar`'s order, or
/// None for anything else (which the Python decoder then reads or explains): `crate::wire`.
#[pyfunction]
fn parse_plain_bar(value: &[u8]) -> Option<(i64, f64, f64, f64, f64, i64, String)> {
    wire::parse_plain_bar(value)
        .map(|wire::WireBar { bar: b, symbol }| (b.ts, b.open, b.high, b.low, b.close, b.volume, symbol))
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(parse_plain_bar, m)?)?;
    m.add_function(wrap_pyfunction!(backtest, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_class::<PyEngine>()?;
    m.add_class::<PyFillSimulator>()?;
    m.add("EXIT_REASONS", ExitReason::ALL.map(|r| r.name()).to_vec())?;
    m.add("PARAM_KEYS", PARAM_KEYS.to_vec())?;
    Ok(())
}
