//! The trading state machine of SPEC §4: session roll, decisions at the bar close through the risk
//! gate, and trade accounting at every exit fill.
//!
//! `Book` is the whole decision state. It never fills anything itself: fills come from a broker,
//! the simulated one (`FillSim`) in backtests and paper trading or a real one live. `step` is the
//! one per-bar sequence that every driver runs: the batch backtest, the sweep and the incremental
//! `Engine` all call it, so they cannot disagree.

use serde::{Deserialize, Serialize};

use crate::calendar::{in_window, SessionClock};
use crate::indicators::{Atr, Indicator};
use crate::params::{Params, SessionTimes};
use crate::sim::{ExitReason, Fill, FillSim, Order, OrderKind};

/// A closed round trip, as in the trades output of SPEC §4.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    pub entry_ts: i64,
    pub exit_ts: i64,
    pub side: i8,
    pub qty: i64,
    pub entry_price: f64,
    pub exit_price: f64,
    pub pnl: f64,
    pub reason: ExitReason,
}

/// One bar as it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    pub ts: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: i64,
}

impl Bar {
    /// Why this bar must not be traded on, if it must not (the engine refuses it unchanged).
    pub fn problem(&self, previous: Option<&Bar>) -> Option<String> {
        let prices = [self.open, self.high, self.low, self.close];
        if prices.iter().any(|x| !x.is_finite() || *x <= 0.0) {
            Some("prices must be finite and positive".to_string())
        } else if self.high < self.open.max(self.close) || self.low > self.open.min(self.close) {
            Some("high/low do not contain open and close".to_string())
        } else if self.volume < 0 {
            Some("negative volume".to_string())
        } else {
            previous
                .filter(|prev| self.ts <= prev.ts)
                .map(|prev| format!("ts {} is not after the previous bar's ts {}", self.ts, prev.ts))
        }
    }
}

/// What the calendar and the indicator say about a bar (precomputed by sweeps, computed on the
/// fly by the incremental engine).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BarContext {
    /// Session day of the bar (from its start time).
    pub session_day: i32,
    /// Local seconds-of-day of the bar's close time `ts + bar_seconds`.
    pub close_seconds: i32,
    /// Indicator value after this bar's close (NaN while undefined).
    pub indicator: f64,
    /// The ATR at this bar (NaN while undefined, or when nothing reads it).
    pub atr: f64,
}

/// Position, daily risk counters and the account, everything a decision depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Book {
    pub session_day: Option<i32>,
    pub daily_pnl: f64,
    pub daily_peak: f64,
    pub trades_today: i64,
    pub consecutive_losses: i64,
    pub pause_until: i64,
    pub cumulative_pnl: f64,
    pub halted: bool,
    /// Entries refused by an operator (pause), unlike `halted` exits still run.
    pub entries_paused: bool,
    pub side: i8,
    pub qty: i64,
    pub entry_price: f64,
    pub entry_ts: i64,
    /// An order was decided and its fill has not arrived yet; no new decision until it does.
    pub in_flight: Option<Order>,
    /// Sequence number of the last order decided in this session (for client order ids).
    pub order_seq: u32,
    /// This session's entry end and flatten time (moved by an early close, SPEC §4.9).
    pub times: SessionTimes,
    /// Entries the risk gate refused for want of an ATR, and for a size of 0 (SPEC §4.9).
    pub refused_atr: u64,
    pub refused_size: u64,
}

impl Default for Book {
    fn default() -> Self {
        Book {
            session_day: None,
            daily_pnl: 0.0,
            daily_peak: 0.0,
            trades_today: 0,
            consecutive_losses: 0,
            pause_until: i64::MIN,
            cumulative_pnl: 0.0,
            halted: false,
            entries_paused: false,
            side: 0,
            qty: 0,
            entry_price: 0.0,
            entry_ts: 0,
            in_flight: None,
            order_seq: 0,
            times: SessionTimes { entry_end: 0, flatten_at: 0 },
            refused_atr: 0,
            refused_size: 0,
        }
    }
}

impl Book {
    /// SPEC §4.1: a new session date resets the daily counters and looks up the session's
    /// times (§4.9). Returns whether it rolled.
    #[inline(always)]
    pub fn roll(&mut self, p: &Params, session_day: i32) -> bool {
        if self.session_day == Some(session_day) {
            return false;
        }
        self.session_day = Some(session_day);
        self.times = p.session_times(session_day);
        self.daily_pnl = 0.0;
        self.daily_peak = 0.0;
        self.trades_today = 0;
        self.consecutive_losses = 0;
        self.pause_until = i64::MIN;
        self.order_seq = 0;
        true
    }

    /// Applies a fill; an exit fill closes the position and returns the trade (SPEC §4.7).
    #[inline(always)]
    pub fn apply_fill(&mut self, p: &Params, fill: &Fill) -> Option<Trade> {
        self.in_flight = None;
        match fill.kind {
            OrderKind::Entry => {
                self.side = fill.action;
                self.qty = fill.qty;
                self.entry_price = fill.price;
                self.entry_ts = fill.ts;
                self.trades_today += 1;
                None
            }
            OrderKind::Exit(reason) => {
                let qty = self.qty as f64;
                let pnl = f64::from(self.side) * (fill.price - self.entry_price) * qty * p.point_value
                    - 2.0 * p.commission_per_side * qty;
                let trade = Trade {
                    entry_ts: self.entry_ts,
                    exit_ts: fill.ts,
                    side: self.side,
                    qty: self.qty,
                    entry_price: self.entry_price,
                    exit_price: fill.price,
                    pnl,
                    reason,
                };
                self.side = 0;
                self.qty = 0;
                self.account(p, pnl, fill.ts);
                Some(trade)
            }
        }
    }

    fn account(&mut self, p: &Params, pnl: f64, ts: i64) {
        self.daily_pnl += pnl;
        self.cumulative_pnl += pnl;
        self.daily_peak = self.daily_peak.max(self.daily_pnl);
        if pnl < 0.0 {
            self.consecutive_losses += 1;
            if p.max_consecutive_losses > 0 && self.consecutive_losses >= p.max_consecutive_losses {
                self.pause_until = ts + p.loss_pause_ns;
            }
        } else {
            self.consecutive_losses = 0;
        }
        let killed = p.kill_switch_loss > 0.0 && self.cumulative_pnl <= -p.kill_switch_loss;
        let broke =
            p.min_account_balance > 0.0 && p.starting_capital + self.cumulative_pnl < p.min_account_balance;
        if killed || broke {
            self.halted = true;
        }
    }

    /// SPEC §4.5–4.6: the decision at a bar's close `c`, as a market order for the next bar.
    #[inline(always)]
    pub fn decide(
        &mut self,
        p: &Params,
        c: i64,
        close_seconds: i32,
        volume: i64,
        x: f64,
        atr: f64,
    ) -> Option<Order> {
        if self.in_flight.is_some() {
            return None;
        }
        let order = if self.side != 0 {
            let reason = self.exit_reason(p, c, close_seconds, x)?;
            Order::exit(-self.side, self.qty, reason)
        } else {
            let side = p.rule.entry_side(x);
            if side == 0 || volume < p.min_volume || !self.gate_open(p, c, close_seconds) {
                return None;
            }
            self.sized_entry(p, side, close_seconds, atr)?
        };
        self.in_flight = Some(order);
        self.order_seq += 1;
        Some(order)
    }

    /// The last gate checks of SPEC §4.9: the stop and target distances (refused, reason `atr`,
    /// when they are in ATRs and the ATR is undefined), then the size (refused at 0, `size`).
    #[inline(always)]
    fn sized_entry(&mut self, p: &Params, side: i8, close_seconds: i32, atr: f64) -> Option<Order> {
        let mut stop_ticks = p.stop_loss_ticks;
        let mut target_ticks = p.take_profit_ticks;
        if p.decides_on_atr() {
            if atr.is_nan() {
                self.refused_atr += 1;
                return None;
            }
            if p.stop_atr > 0.0 {
                stop_ticks = p.atr_ticks(p.stop_atr, atr);
            }
            if p.target_atr > 0.0 {
                target_ticks = p.atr_ticks(p.target_atr, atr);
            }
        }
        let qty = self.entry_size(p, close_seconds, stop_ticks);
        if qty <= 0 {
            self.refused_size += 1;
            return None;
        }
        Some(Order { action: side, qty, kind: OrderKind::Entry, stop_ticks, target_ticks })
    }

    /// SPEC §4.9 position size: the balance's tier, reduced late in the day, capped by the
    /// dollars the initial stop may lose.
    #[inline(always)]
    fn entry_size(&self, p: &Params, close_seconds: i32, stop_ticks: i64) -> i64 {
        let mut q = p.tier_size(p.starting_capital + self.cumulative_pnl);
        if let Some(at) = p.reduce_size_at {
            if in_window(close_seconds, at, p.session_end) {
                q = (q as f64 * p.reduce_size_factor).floor() as i64;
            }
        }
        if p.max_risk_per_trade > 0.0 && stop_ticks > 0 {
            let risk = stop_ticks as f64 * p.tick_size * p.point_value;
            q = q.min((p.max_risk_per_trade / risk + 1e-9).floor() as i64);
        }
        q
    }

    #[inline(always)]
    fn exit_reason(&self, p: &Params, c: i64, close_seconds: i32, x: f64) -> Option<ExitReason> {
        if self.halted {
            Some(ExitReason::Kill)
        } else if in_window(close_seconds, self.times.flatten_at, p.session_end) {
            Some(ExitReason::Eod)
        } else if p.max_position_ns > 0 && c - self.entry_ts >= p.max_position_ns {
            Some(ExitReason::MaxDuration)
        } else if p.rule.exits(self.side, x) {
            Some(ExitReason::Signal)
        } else {
            None
        }
    }

    /// The risk gate of SPEC §4.6 (a limit of 0 disables its check).
    #[inline(always)]
    pub fn gate_open(&self, p: &Params, c: i64, close_seconds: i32) -> bool {
        !self.halted
            && !self.entries_paused
            && in_window(close_seconds, p.entry_start, self.times.entry_end)
            && (p.daily_loss_limit == 0.0 || self.daily_pnl > -p.daily_loss_limit)
            && (p.daily_drawdown_limit == 0.0 || self.daily_peak - self.daily_pnl < p.daily_drawdown_limit)
            && c >= self.pause_until
            && (p.max_trades_per_day == 0 || self.trades_today < p.max_trades_per_day)
    }
}

/// One bar of SPEC §4 with the simulated broker: roll, fills at the open and intrabar, then (if
/// `decide`) the decision at the close, which goes to the simulator as the next bar's order.
#[inline(always)]
pub fn step(
    p: &Params,
    book: &mut Book,
    sim: &mut FillSim,
    bar: &Bar,
    at: &BarContext,
    decide: bool,
    mut on_fill: impl FnMut(&Fill, Option<Trade>),
) -> Option<Order> {
    book.roll(p, at.session_day);
    sim.on_bar(p, bar, at.atr, |fill| {
        let trade = book.apply_fill(p, &fill);
        on_fill(&fill, trade);
    });
    if !decide {
        return None;
    }
    let order = book.decide(p, bar.ts + p.bar_ns, at.close_seconds, bar.volume, at.indicator, at.atr);
    if let Some(order) = order {
        sim.submit(order);
    }
    order
}

/// The incremental engine: bars one at a time, orders out, fills in (from its own simulator or
/// from outside), and its whole state as bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Engine {
    pub params: Params,
    #[serde(skip, default)]
    clock: Option<SessionClock>,
    indicator: Indicator,
    /// The ATR of SPEC §4.9, kept only when decisions or the simulated slippage read it.
    atr: Option<Atr>,
    pub book: Book,
    /// `Some` when the engine fills its own orders (backtest semantics, paper trading).
    pub sim: Option<FillSim>,
    pub last_bar: Option<Bar>,
    pub bars_seen: u64,
}

/// What one bar produced: the order decided at its close, and the simulator's fills (with the
/// trades they closed) inside it.
pub type BarOutcome = (Option<Order>, Vec<(Fill, Option<Trade>)>);

/// Snapshot format version; bump when the serialized layout changes.
const SNAPSHOT_VERSION: u8 = 3;

impl Engine {
    pub fn new(params: Params, simulate_fills: bool) -> Result<Self, String> {
        let clock = SessionClock::new(&params.timezone, params.session_end)?;
        Ok(Engine {
            indicator: Indicator::for_rule(&params.rule),
            atr: params.reads_atr().then(|| Atr::new(params.atr_period)),
            clock: Some(clock),
            params,
            book: Book::default(),
            sim: simulate_fills.then(FillSim::default),
            last_bar: None,
            bars_seen: 0,
        })
    }

    fn clock(&mut self) -> &mut SessionClock {
        let p = &self.params;
        self.clock.get_or_insert_with(|| {
            SessionClock::new(&p.timezone, p.session_end).expect("validated at construction")
        })
    }

    /// Session day of a timestamp (the roll of SPEC §4.1 is driven by it).
    pub fn session_day(&mut self, ts: i64) -> i32 {
        self.clock().local(ts).session_day
    }

    /// Feeds one bar. Returns the order decided at its close (if any) and the fills/trades that
    /// the simulator produced inside it (empty with external fills). An invalid bar is refused
    /// and changes nothing: no trade is ever taken on invalid data.
    pub fn on_bar(&mut self, bar: Bar) -> Result<BarOutcome, String> {
        if let Some(why) = bar.problem(self.last_bar.as_ref()) {
            return Err(format!("invalid bar at ts {}: {why}", bar.ts));
        }
        let close_ts = bar.ts + self.params.bar_ns;
        let session_day = self.clock().local(bar.ts).session_day;
        let close_seconds = self.clock().local(close_ts).seconds_of_day;
        let atr = self.atr.as_mut().map_or(f64::NAN, |a| a.update(bar.high, bar.low, bar.close));
        let at = BarContext { session_day, close_seconds, indicator: self.indicator.update(bar.close), atr };
        self.last_bar = Some(bar);
        self.bars_seen += 1;
        let mut fills = Vec::new();
        let order = match self.sim.as_mut() {
            Some(sim) => step(&self.params, &mut self.book, sim, &bar, &at, true, |f, t| fills.push((*f, t))),
            None => {
                self.book.roll(&self.params, at.session_day);
                self.book.decide(&self.params, close_ts, close_seconds, bar.volume, at.indicator, at.atr)
            }
        };
        Ok((order, fills))
    }

    /// A fill from an outside broker. The session roll runs first, as it would at the start of
    /// the bar in which the fill happened.
    pub fn on_fill(&mut self, fill: Fill) -> Result<Option<Trade>, String> {
        let expected = self.book.in_flight;
        match (fill.kind, self.book.side) {
            (OrderKind::Entry, 0) => {}
            (OrderKind::Exit(_), side) if side != 0 && fill.action == -side && fill.qty == self.book.qty => {}
            _ => {
                return Err(format!(
                    "fill {:?} does not match the position (side {}, qty {}, in flight {:?})",
                    fill, self.book.side, self.book.qty, expected
                ))
            }
        }
        let day = self.session_day(fill.ts);
        self.book.roll(&self.params, day);
        Ok(self.book.apply_fill(&self.params, &fill))
    }

    /// The broker refused or cancelled the order in flight: decisions resume at the next bar.
    pub fn on_reject(&mut self) -> Option<Order> {
        self.book.in_flight.take()
    }

    /// The kill switch: halts (permanently, until a manual reset), drops a working entry, and
    /// decides the flattening exit now instead of at the next bar's close. Returns that exit
    /// order; None when flat or an exit is already working. With outside fills the driver must
    /// also cancel a working entry at its broker.
    pub fn kill(&mut self) -> Option<Order> {
        self.book.halted = true;
        if matches!(self.book.in_flight, Some(Order { kind: OrderKind::Entry, .. })) {
            self.book.in_flight = None;
            if let Some(sim) = self.sim.as_mut() {
                sim.cancel();
            }
        }
        if self.book.side == 0 || self.book.in_flight.is_some() {
            return None;
        }
        let order = Order::exit(-self.book.side, self.book.qty, ExitReason::Kill);
        self.book.in_flight = Some(order);
        self.book.order_seq += 1;
        if let Some(sim) = self.sim.as_mut() {
            sim.submit(order);
        }
        Some(order)
    }

    /// New parameters from the next bar on (the stream applies approved parameters at a session
    /// roll). Position, account and risk counters carry over; the indicator is rebuilt from
    /// `recent_closes` (oldest first) so that a new lookback is warm at once. The ATR carries
    /// over while its period stays; a new period starts it again (closes alone cannot warm it).
    pub fn reload(&mut self, params: Params, recent_closes: &[f64]) -> Result<(), String> {
        let clock = SessionClock::new(&params.timezone, params.session_end)?;
        let mut indicator = Indicator::for_rule(&params.rule);
        for &close in recent_closes {
            indicator.update(close);
        }
        if let Some(day) = self.book.session_day {
            self.book.times = params.session_times(day); // the running session's, by the new rules
        }
        let same_atr = self.atr.as_ref().filter(|a| a.period() == params.atr_period).cloned();
        self.atr = params.reads_atr().then(|| same_atr.unwrap_or_else(|| Atr::new(params.atr_period)));
        self.clock = Some(clock);
        self.indicator = indicator;
        self.params = params;
        Ok(())
    }

    /// End of data (SPEC §4.8): drops the working order, closes the position at the last close.
    pub fn finish(&mut self) -> Option<Trade> {
        let bar = self.last_bar?;
        self.book.in_flight = None;
        let sim = self.sim.as_mut()?;
        let fill = sim.close_out(&self.params, bar.ts, bar.close)?;
        self.book.apply_fill(&self.params, &fill)
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend(postcard::to_stdvec(self).expect("engine state serializes"));
        out
    }

    pub fn restore(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&SNAPSHOT_VERSION, body)) => {
                let mut engine: Engine =
                    postcard::from_bytes(body).map_err(|e| format!("corrupt engine snapshot: {e}"))?;
                engine.clock = Some(SessionClock::new(&engine.params.timezone, engine.params.session_end)?);
                Ok(engine)
            }
            Some((v, _)) => Err(format!("engine snapshot version {v}, expected {SNAPSHOT_VERSION}")),
            None => Err("empty engine snapshot".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i32 = 3600;
    const EARLY: i32 = 20_055; // 2024-11-28, Thanksgiving: the CME closes 13:00 New York

    fn thanksgiving() -> Params {
        Params { early_closes: vec![(EARLY, 13 * H)], daily_loss_limit: 0.0, ..Params::default() }
    }

    fn long_book(p: &Params, day: i32) -> Book {
        let mut book = Book::default();
        book.roll(p, day);
        book.side = 1;
        book.qty = 1;
        book
    }

    #[test]
    fn early_close_flattens_at_its_own_flatten_time() {
        let p = thanksgiving();
        let eod = Some(Order::exit(-1, 1, ExitReason::Eod));
        let nan = f64::NAN;
        assert_eq!(long_book(&p, EARLY).decide(&p, 0, 12 * H + 50 * 60, 0, nan, nan), eod);
        assert_eq!(long_book(&p, EARLY).decide(&p, 0, 12 * H + 49 * 60, 0, nan, nan), None);
        assert_eq!(long_book(&p, EARLY + 1).decide(&p, 0, 12 * H + 50 * 60, 0, nan, nan), None);
    }

    #[test]
    fn early_close_ends_entries_early() {
        let p = thanksgiving();
        let mut book = Book::default();
        book.roll(&p, EARLY);
        assert!(book.gate_open(&p, 0, 12 * H + 39 * 60));
        assert!(!book.gate_open(&p, 0, 12 * H + 40 * 60));
        book.roll(&p, EARLY + 1);
        assert!(book.gate_open(&p, 0, 12 * H + 40 * 60));
    }

    #[test]
    fn snapshot_and_reload_keep_the_sessions_times() {
        let mut engine = Engine::new(thanksgiving(), true).unwrap();
        engine.book.roll(&engine.params.clone(), EARLY);
        let restored = Engine::restore(&engine.snapshot()).unwrap();
        assert_eq!(restored.book.times, engine.params.session_times(EARLY));
        assert_eq!(restored.params.early_closes, vec![(EARLY, 13 * H)]);
        engine.reload(Params::default(), &[]).unwrap(); // new rules without the early close
        assert_eq!(engine.book.times, Params::default().session_times(EARLY));
    }

    fn sized(p: &Params, cumulative_pnl: f64, close_seconds: i32, atr: f64) -> (Option<Order>, Book) {
        let mut book = Book { cumulative_pnl, ..Book::default() };
        book.roll(p, 0);
        let order = book.decide(p, 0, close_seconds, 0, -9.0, atr); // z = −9: a long entry
        (order, book)
    }

    /// §4.9 sizing: tier, then `reduce_size_at` (3 × 0.7 floors to 2), then the risk cap, which
    /// reads the initial stop distance (here 12 ticks = $15 a contract: 45 / 15 = 3 exactly).
    #[test]
    fn size_is_the_tier_reduced_late_then_capped_by_the_risk_of_the_stop() {
        let p = Params {
            size_tiers: vec![(0.0, 1), (1040.0, 2), (1200.0, 4)],
            max_risk_per_trade: 45.0,
            stop_loss_ticks: 12,
            reduce_size_at: Some(14 * H),
            reduce_size_factor: 0.7,
            daily_loss_limit: 0.0,
            ..Params::default()
        };
        let morning = 10 * H;
        assert_eq!(sized(&p, 0.0, morning, f64::NAN).0.unwrap().qty, 1);
        assert_eq!(sized(&p, 40.0, morning, f64::NAN).0.unwrap().qty, 2);
        assert_eq!(sized(&p, 300.0, morning, f64::NAN).0.unwrap().qty, 3, "4 capped to 3");
        assert_eq!(sized(&p, 300.0, 14 * H, f64::NAN).0.unwrap().qty, 2, "floor(4 × 0.7)");
        // [reduce_size_at, session_end) does not wrap: the evening opens the next session.
        let all_day = Params { entry_start: 0, entry_end: 24 * H, ..p.clone() };
        assert_eq!(sized(&all_day, 300.0, 18 * H + 60, f64::NAN).0.unwrap().qty, 3);
        let (order, book) = sized(&p, 0.0, 14 * H, f64::NAN); // floor(1 × 0.7) = 0
        assert_eq!((order, book.refused_size), (None, 1));
        let below = Params { size_tiers: vec![(1001.0, 1)], ..p.clone() };
        assert_eq!(sized(&below, 0.0, morning, f64::NAN).1.refused_size, 1);
    }

    /// §4.9: ATR distances are fixed at the decision (ceil, at least 1 tick) and carried by the
    /// order; an undefined ATR refuses the entry (`atr`), after every check of §4's gate.
    #[test]
    fn atr_distances_ride_on_the_order_and_an_undefined_atr_refuses() {
        let p = Params { stop_atr: 1.5, target_atr: 2.0, daily_loss_limit: 0.0, ..Params::default() };
        let (order, _) = sized(&p, 0.0, 10 * H, 2.1); // 12.6 → 13 ticks, 16.8 → 17
        let order = order.unwrap();
        assert_eq!((order.stop_ticks, order.target_ticks), (13, 17));
        let (order, book) = sized(&p, 0.0, 10 * H, f64::NAN);
        assert_eq!((order, book.refused_atr), (None, 1));
        let (_, closed) = sized(&p, 0.0, 8 * H, f64::NAN); // outside the entry window
        assert_eq!(closed.refused_atr, 0, "the gate of §4 refused first");
    }

    /// The trailing state survives a snapshot, and the ATR with it (SPEC §4.9).
    #[test]
    fn snapshot_carries_the_atr_and_the_trailing_stop() {
        let p = Params {
            trail_ticks: 4,
            atr_period: 2,
            adaptive_slippage: true,
            high_vol_atr: 1.0,
            ..Params::default()
        };
        let mut engine = Engine::new(p, true).unwrap();
        let entry = Order { action: 1, qty: 1, kind: OrderKind::Entry, stop_ticks: 0, target_ticks: 0 };
        engine.sim.as_mut().unwrap().submit(entry);
        for (i, close) in [100.0, 102.0, 104.0].into_iter().enumerate() {
            let ts = i as i64 * 60_000_000_000;
            engine
                .on_bar(Bar { ts, open: close, high: close + 1.0, low: close - 1.0, close, volume: 1 })
                .unwrap();
        }
        assert_eq!(engine.book.side, 1);
        let restored = Engine::restore(&engine.snapshot()).unwrap();
        assert_eq!(restored.snapshot(), engine.snapshot());
        assert_eq!(restored.sim.as_ref().unwrap().brackets(), (Some(104.0), None)); // 105 − 1
        assert_eq!(restored.atr.as_ref().unwrap().value(), engine.atr.as_ref().unwrap().value());
    }
}
