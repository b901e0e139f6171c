//! The fill simulator: the broker model of SPEC §4 steps 2, 3 and 8.
//!
//! It is a broker, not part of the decision logic: it holds the working market order and the
//! protective stop/target of the open position, and reports fills. The backtest wires it to the
//! engine directly; the paper broker of the live stream uses the same type, so a replay through
//! the stream fills exactly as the backtest does.

use serde::{Deserialize, Serialize};

use crate::machine::Bar;
use crate::params::Params;

/// Why a position was closed (the `exit_reason` column of SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum ExitReason {
    Signal = 0,
    Stop = 1,
    Target = 2,
    MaxDuration = 3,
    Eod = 4,
    Kill = 5,
    EndOfData = 6,
    /// A stop last set or moved by the trailing rule (SPEC §4.9).
    Trail = 7,
}

impl ExitReason {
    pub const ALL: [ExitReason; 8] = [
        ExitReason::Signal,
        ExitReason::Stop,
        ExitReason::Target,
        ExitReason::MaxDuration,
        ExitReason::Eod,
        ExitReason::Kill,
        ExitReason::EndOfData,
        ExitReason::Trail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitReason::Signal => "signal",
            ExitReason::Stop => "stop",
            ExitReason::Target => "target",
            ExitReason::MaxDuration => "max_duration",
            ExitReason::Eod => "eod",
            ExitReason::Kill => "kill",
            ExitReason::EndOfData => "end_of_data",
            ExitReason::Trail => "trail",
        }
    }

    pub fn from_name(name: &str) -> Option<ExitReason> {
        ExitReason::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// What an order does to the position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderKind {
    Entry,
    Exit(ExitReason),
}

/// A market order decided at a bar's close, for the next bar's open.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// +1 buy, -1 sell.
    pub action: i8,
    pub qty: i64,
    pub kind: OrderKind,
    /// An entry's initial stop and target distances in ticks, fixed at the decision (SPEC
    /// §4.9); 0 = none, and always 0 on exits.
    pub stop_ticks: i64,
    pub target_ticks: i64,
}

impl Order {
    pub fn exit(action: i8, qty: i64, reason: ExitReason) -> Self {
        Order { action, qty, kind: OrderKind::Exit(reason), stop_ticks: 0, target_ticks: 0 }
    }
}

/// An execution: `ts` is the start of the bar in which it happened (SPEC §4.7).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fill {
    pub ts: i64,
    pub action: i8,
    pub qty: i64,
    pub price: f64,
    pub kind: OrderKind,
}

/// What the adaptive slippage of a bar reads: the previous bar of the data (SPEC §4.9).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct PreviousBar {
    volume: i64,
    range: f64,
    /// The ATR at that bar (NaN while undefined or not needed).
    atr: f64,
}

/// The simulated broker: one working market order at most, and the open position's brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FillSim {
    pending: Option<Order>,
    side: i8,
    qty: i64,
    entry_ts: i64,
    stop: Option<f64>,
    target: Option<f64>,
    /// The stop was last set or moved by the trailing rule (its exits are `trail`).
    trailing: bool,
    /// Highest high (long) or lowest low (short) since the entry fill bar.
    extreme: f64,
    /// Slippage in price of the fills in the current bar.
    slip: f64,
    /// Adaptive slippage only: the previous bar.
    previous: Option<PreviousBar>,
}

impl Default for FillSim {
    fn default() -> Self {
        FillSim {
            pending: None,
            side: 0,
            qty: 0,
            entry_ts: i64::MIN,
            stop: None,
            target: None,
            trailing: false,
            extreme: f64::NAN,
            slip: 0.0,
            previous: None,
        }
    }
}

impl FillSim {
    pub fn submit(&mut self, order: Order) {
        self.pending = Some(order);
    }

    /// Cancels the working market order (a kill switch, or the end of the data).
    pub fn cancel(&mut self) -> Option<Order> {
        self.pending.take()
    }

    pub fn pending(&self) -> Option<Order> {
        self.pending
    }

    /// Side (+1/-1/0) and size of the simulated position.
    pub fn position(&self) -> (i8, i64) {
        (self.side, self.qty)
    }

    /// The open position's protective prices, if any.
    pub fn brackets(&self) -> (Option<f64>, Option<f64>) {
        (self.stop, self.target)
    }

    /// Steps 2 and 3 of SPEC §4 for a bar: the working market order fills at the open with
    /// slippage against us, then protective orders fill intrabar (stop before target); then the
    /// trailing stop follows the bar (§4.9, step 4), working from the next bar. `atr` is the
    /// ATR at this bar (NaN when undefined; read only by adaptive slippage, at the next bar).
    #[inline(always)]
    pub fn on_bar(&mut self, p: &Params, bar: &Bar, atr: f64, mut emit: impl FnMut(Fill)) {
        self.slip = self.bar_slippage(p, bar, atr);
        if let Some(order) = self.pending.take() {
            let price = bar.open + f64::from(order.action) * self.slip;
            emit(self.execute(p, bar.ts, order, price));
        }
        if self.side != 0 {
            if let Some(fill) = self.protective(p, bar.ts, bar.open, bar.high, bar.low) {
                emit(fill);
            }
        }
        if self.side != 0 && p.trail_ticks > 0 {
            self.trail(p, bar.high, bar.low);
        }
    }

    /// The slippage of the fills in this bar: `slippage_ticks`, plus with the adaptive model
    /// one tick after a thin previous bar and one after a wild one (SPEC §4.9).
    #[inline(always)]
    fn bar_slippage(&mut self, p: &Params, bar: &Bar, atr: f64) -> f64 {
        if !p.adaptive_slippage {
            return p.slippage();
        }
        let mut ticks = p.slippage_ticks;
        if let Some(prev) = self.previous {
            if p.low_volume > 0 && prev.volume < p.low_volume {
                ticks += 1;
            }
            if p.high_vol_atr > 0.0 && !prev.atr.is_nan() && prev.range >= p.high_vol_atr * prev.atr {
                ticks += 1;
            }
        }
        self.previous = Some(PreviousBar { volume: bar.volume, range: bar.high - bar.low, atr });
        ticks as f64 * p.tick_size
    }

    /// SPEC §4.9 trailing stop: the candidate `extreme ∓ trail_ticks` replaces the stop when
    /// there is none or it is strictly better.
    #[inline(always)]
    fn trail(&mut self, p: &Params, high: f64, low: f64) {
        let long = self.side > 0;
        let distance = p.trail_ticks as f64 * p.tick_size;
        let candidate = if long {
            self.extreme = self.extreme.max(high);
            self.extreme - distance
        } else {
            self.extreme = self.extreme.min(low);
            self.extreme + distance
        };
        let better = match self.stop {
            None => true,
            Some(stop) => (long && candidate > stop) || (!long && candidate < stop),
        };
        if better {
            self.stop = Some(candidate);
            self.trailing = true;
        }
    }

    /// End of data (SPEC §4.8): the working order is dropped, the position closes at `close`
    /// with the slippage of the last bar.
    pub fn close_out(&mut self, p: &Params, ts: i64, close: f64) -> Option<Fill> {
        self.pending = None;
        if self.side == 0 {
            return None;
        }
        let action = -self.side;
        let order = Order::exit(action, self.qty, ExitReason::EndOfData);
        Some(self.execute(p, ts, order, close + f64::from(action) * self.slip))
    }

    fn execute(&mut self, p: &Params, ts: i64, order: Order, price: f64) -> Fill {
        match order.kind {
            OrderKind::Entry => {
                let s = f64::from(order.action);
                self.side = order.action;
                self.qty = order.qty;
                self.entry_ts = ts;
                self.stop =
                    (order.stop_ticks > 0).then_some(price - s * order.stop_ticks as f64 * p.tick_size);
                self.target =
                    (order.target_ticks > 0).then_some(price + s * order.target_ticks as f64 * p.tick_size);
                self.trailing = false;
                // NaN never wins max/min, so the entry bar's high (low) starts the extreme.
                self.extreme = f64::NAN;
            }
            OrderKind::Exit(_) => self.flatten(),
        }
        Fill { ts, action: order.action, qty: order.qty, price, kind: order.kind }
    }

    fn flatten(&mut self) {
        self.side = 0;
        self.qty = 0;
        self.stop = None;
        self.target = None;
        self.trailing = false;
    }

    /// SPEC §4.3. Gap-through fills (at the open) apply only on bars after the entry bar: on the
    /// entry bar the open is where we got in.
    #[inline(always)]
    fn protective(&mut self, p: &Params, ts: i64, open: f64, high: f64, low: f64) -> Option<Fill> {
        let long = self.side > 0;
        let after_entry = ts != self.entry_ts;
        let slip = self.slip;
        let (adverse, favorable) = if long { (low, high) } else { (high, low) };
        // `beyond(a, b)`: price a is at or past level b in the position's losing direction.
        let losing = |a: f64, b: f64| if long { a <= b } else { a >= b };
        let winning = |a: f64, b: f64| if long { a >= b } else { a <= b };
        let s = f64::from(self.side);
        let hit = if let Some(stop) =
            self.stop.filter(|&stop| (after_entry && losing(open, stop)) || losing(adverse, stop))
        {
            let level = if after_entry && losing(open, stop) { open } else { stop };
            Some((level - s * slip, if self.trailing { ExitReason::Trail } else { ExitReason::Stop }))
        } else if let Some(target) =
            self.target.filter(|&target| (after_entry && winning(open, target)) || winning(favorable, target))
        {
            let level = if after_entry && winning(open, target) { open } else { target };
            Some((level, ExitReason::Target))
        } else {
            None
        };
        hit.map(|(price, reason)| self.execute(p, ts, Order::exit(-self.side, self.qty, reason), price))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f64 = f64::NAN;

    fn bar(ts: i64, open: f64, high: f64, low: f64, close: f64, volume: i64) -> Bar {
        Bar { ts, open, high, low, close, volume }
    }

    fn long_entry(stop_ticks: i64) -> Order {
        Order { action: 1, qty: 1, kind: OrderKind::Entry, stop_ticks, target_ticks: 0 }
    }

    fn fills(sim: &mut FillSim, p: &Params, b: Bar, atr: f64) -> Vec<Fill> {
        let mut out = Vec::new();
        sim.on_bar(p, &b, atr, |f| out.push(f));
        out
    }

    /// §4.9 "A stop set or moved this way works from the next bar": a stop moved on the entry bar
    /// to a price that bar already crossed fills at the next bar, by the gap rule, as `trail`.
    #[test]
    fn a_trailing_stop_moved_on_the_entry_bar_works_from_the_next_bar() {
        let p = Params { trail_ticks: 4, ..Params::default() }; // 1 point, slippage 1 tick
        let mut sim = FillSim::default();
        sim.submit(long_entry(0));
        let entry = fills(&mut sim, &p, bar(0, 100.0, 103.0, 100.0, 101.0, 10), NAN);
        assert_eq!(entry.len(), 1, "the stop at 102 (103 − 1) is not tested on the bar that set it");
        assert_eq!(sim.brackets().0, Some(102.0));
        let exit = fills(&mut sim, &p, bar(60, 101.5, 101.75, 101.0, 101.5, 10), NAN);
        assert_eq!(exit[0].price, 101.25, "gapped through: the open minus the slippage");
        assert_eq!(exit[0].kind, OrderKind::Exit(ExitReason::Trail));
    }

    /// §4.9 "at the initial stop it stays `stop`": a trail that never betters the initial stop
    /// leaves it the initial one.
    #[test]
    fn a_trail_that_never_betters_the_initial_stop_exits_as_stop() {
        let p = Params { trail_ticks: 40, slippage_ticks: 0, ..Params::default() };
        let mut sim = FillSim::default();
        sim.submit(long_entry(4)); // stop 99 below the 100 fill; the trail's candidate is 93
        fills(&mut sim, &p, bar(0, 100.0, 103.0, 99.5, 100.0, 10), NAN);
        assert_eq!(sim.brackets().0, Some(99.0));
        let exit = fills(&mut sim, &p, bar(60, 100.0, 100.0, 98.0, 98.5, 10), NAN);
        assert_eq!((exit[0].price, exit[0].kind), (99.0, OrderKind::Exit(ExitReason::Stop)));
    }

    /// §4.9 adaptive slippage reads bar k−1 (never the fill's own bar), nothing on the first bar
    /// of the data; targets never slip; the end-of-data fill uses the last bar's k−1 too.
    #[test]
    fn adaptive_slippage_reads_the_previous_bar() {
        let p = Params {
            adaptive_slippage: true,
            low_volume: 100,
            high_vol_atr: 1.5,
            slippage_ticks: 1,
            ..Params::default()
        };
        let mut sim = FillSim::default();
        sim.submit(long_entry(0));
        // First bar of the data: thin and wild, but no bar before it: 1 tick.
        let first = fills(&mut sim, &p, bar(0, 100.0, 104.0, 100.0, 103.0, 5), 1.0);
        assert_eq!(first[0].price, 100.25);
        // Bar 2: bar 1 was thin (5 < 100) and wild (4 ≥ 1.5 × 1.0): 3 ticks on the close-out.
        fills(&mut sim, &p, bar(60, 103.0, 103.0, 103.0, 103.0, 500), NAN);
        assert_eq!(sim.close_out(&p, 60, 103.0).unwrap().price, 102.25);
        // Bar 3: bar 2 had volume and its ATR was undefined: 1 tick.
        sim.submit(Order { action: -1, ..long_entry(0) });
        let third = fills(&mut sim, &p, bar(120, 103.0, 103.0, 103.0, 103.0, 500), 1.0);
        assert_eq!(third[0].price, 102.75);
    }
}
