//! The fill simulator: the broker model of SPEC §4 steps 2, 3 and 8.
//!
//! It is a broker, not part of the decision logic: it holds the working market order and the
//! protective stop/target of the open position, and reports fills. The backtest wires it to the
//! engine directly; the paper broker of the live stream uses the same type, so a replay through
//! the stream fills exactly as the backtest does.

use serde::{Deserialize, Serialize};

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
}

impl ExitReason {
    pub const ALL: [ExitReason; 7] = [
        ExitReason::Signal,
        ExitReason::Stop,
        ExitReason::Target,
        ExitReason::MaxDuration,
        ExitReason::Eod,
        ExitReason::Kill,
        ExitReason::EndOfData,
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

/// The simulated broker: one working market order at most, and the open position's brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FillSim {
    pending: Option<Order>,
    side: i8,
    qty: i64,
    entry_ts: i64,
    stop: Option<f64>,
    target: Option<f64>,
}

impl Default for FillSim {
    fn default() -> Self {
        FillSim { pending: None, side: 0, qty: 0, entry_ts: i64::MIN, stop: None, target: None }
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
    /// slippage against us, then protective orders fill intrabar (stop before target).
    #[inline(always)]
    pub fn on_bar(
        &mut self,
        p: &Params,
        ts: i64,
        open: f64,
        high: f64,
        low: f64,
        mut emit: impl FnMut(Fill),
    ) {
        if let Some(order) = self.pending.take() {
            let price = open + f64::from(order.action) * p.slippage();
            emit(self.execute(p, ts, order, price));
        }
        if self.side != 0 {
            if let Some(fill) = self.protective(p, ts, open, high, low) {
                emit(fill);
            }
        }
    }

    /// End of data (SPEC §4.8): the working order is dropped, the position closes at `close`
    /// with slippage.
    pub fn close_out(&mut self, p: &Params, ts: i64, close: f64) -> Option<Fill> {
        self.pending = None;
        if self.side == 0 {
            return None;
        }
        let action = -self.side;
        let order = Order { action, qty: self.qty, kind: OrderKind::Exit(ExitReason::EndOfData) };
        Some(self.execute(p, ts, order, close + f64::from(action) * p.slippage()))
    }

    fn execute(&mut self, p: &Params, ts: i64, order: Order, price: f64) -> Fill {
        match order.kind {
            OrderKind::Entry => {
                let s = f64::from(order.action);
                self.side = order.action;
                self.qty = order.qty;
                self.entry_ts = ts;
                self.stop =
                    (p.stop_loss_ticks > 0).then_some(price - s * p.stop_loss_ticks as f64 * p.tick_size);
                self.target =
                    (p.take_profit_ticks > 0).then_some(price + s * p.take_profit_ticks as f64 * p.tick_size);
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
    }

    /// SPEC §4.3. Gap-through fills (at the open) apply only on bars after the entry bar: on the
    /// entry bar the open is where we got in.
    #[inline(always)]
    fn protective(&mut self, p: &Params, ts: i64, open: f64, high: f64, low: f64) -> Option<Fill> {
        let long = self.side > 0;
        let after_entry = ts != self.entry_ts;
        let slip = p.slippage();
        let (adverse, favorable) = if long { (low, high) } else { (high, low) };
        // `beyond(a, b)`: price a is at or past level b in the position's losing direction.
        let losing = |a: f64, b: f64| if long { a <= b } else { a >= b };
        let winning = |a: f64, b: f64| if long { a >= b } else { a <= b };
        let s = f64::from(self.side);
        let hit = if let Some(stop) =
            self.stop.filter(|&stop| (after_entry && losing(open, stop)) || losing(adverse, stop))
        {
            let level = if after_entry && losing(open, stop) { open } else { stop };
            Some((level - s * slip, ExitReason::Stop))
        } else if let Some(target) =
            self.target.filter(|&target| (after_entry && winning(open, target)) || winning(favorable, target))
        {
            let level = if after_entry && winning(open, target) { open } else { target };
            Some((level, ExitReason::Target))
        } else {
            None
        };
        hit.map(|(price, reason)| {
            let order = Order { action: -self.side, qty: self.qty, kind: OrderKind::Exit(reason) };
            self.execute(p, ts, order, price)
        })
    }
}
