//! Engine parameters: the numeric form of the configuration (SPEC §5) that the state machine reads.
//!
//! Python validates the YAML and hands over a flat mapping; this module only holds the values in
//! the units the hot loop wants (nanoseconds, seconds of day, ticks) so nothing is converted per bar.

use serde::{Deserialize, Serialize};

pub const NS_PER_SEC: i64 = 1_000_000_000;
pub const NS_PER_MIN: i64 = 60 * NS_PER_SEC;

/// The decision rule applied to an indicator value.
///
/// Bollinger is the z-score rule with `entry = k` and `exit = 0`, so it shares `ZScore`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    ZScore { lookback: usize, entry: f64, exit: f64 },
    Rsi { period: usize, oversold: f64, overbought: f64 },
}

impl Rule {
    /// Entry direction for indicator value `x`: +1 long, -1 short, 0 none. NaN (undefined) is 0.
    #[inline(always)]
    pub fn entry_side(&self, x: f64) -> i8 {
        match *self {
            Rule::ZScore { entry, .. } => {
                if x >= entry {
                    -1
                } else if x <= -entry {
                    1
                } else {
                    0
                }
            }
            Rule::Rsi { oversold, overbought, .. } => {
                if x <= oversold {
                    1
                } else if x >= overbought {
                    -1
                } else {
                    0
                }
            }
        }
    }

    /// Whether a position on `side` (+1 long, -1 short) exits on indicator value `x`.
    #[inline(always)]
    pub fn exits(&self, side: i8, x: f64) -> bool {
        match *self {
            Rule::ZScore { exit, .. } => {
                if side > 0 {
                    x >= -exit
                } else {
                    x <= exit
                }
            }
            Rule::Rsi { .. } => {
                if side > 0 {
                    x >= 50.0
                } else {
                    x <= 50.0
                }
            }
        }
    }

    /// The key under which sweeps share indicator series: same kind and window, same values.
    pub fn indicator_key(&self) -> (u8, usize) {
        match *self {
            Rule::ZScore { lookback, .. } => (0, lookback),
            Rule::Rsi { period, .. } => (1, period),
        }
    }
}

/// Every parameter of SPEC §4/§5 the engine needs, in hot-loop units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub tick_size: f64,
    pub point_value: f64,
    pub bar_ns: i64,
    pub rule: Rule,
    pub min_volume: i64,
    pub position_size: i64,
    pub stop_loss_ticks: i64,
    pub take_profit_ticks: i64,
    pub daily_loss_limit: f64,
    pub daily_drawdown_limit: f64,
    pub max_consecutive_losses: i64,
    pub loss_pause_ns: i64,
    pub max_trades_per_day: i64,
    pub max_position_ns: i64,
    pub starting_capital: f64,
    pub kill_switch_loss: f64,
    pub min_account_balance: f64,
    /// IANA time zone of the session times (America/New_York).
    pub timezone: String,
    /// Session times as seconds after local midnight.
    pub entry_start: i32,
    pub entry_end: i32,
    pub flatten_at: i32,
    pub session_end: i32,
    pub commission_per_side: f64,
    pub slippage_ticks: i64,
    /// The exchange's early closes (SPEC §4.9): (session day, local seconds of the close),
    /// sorted by day, one per day. Holidays need nothing here: they have no bars.
    pub early_closes: Vec<(i32, i32)>,
    /// Seconds before an early close that entries end and positions flatten.
    pub early_entry_end: i32,
    pub early_flatten: i32,
}

/// The session times that can move with the exchange calendar, for one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTimes {
    pub entry_end: i32,
    pub flatten_at: i32,
}

impl Params {
    /// Slippage in price units, always against us.
    #[inline(always)]
    pub fn slippage(&self) -> f64 {
        self.slippage_ticks as f64 * self.tick_size
    }

    /// `entry_end` and `flatten_at` of session `day`: on an early close `E`,
    /// `min(entry_end, E − early_entry_end)` and `min(flatten_at, E − early_flatten)` (SPEC §4.9).
    /// Looked up once per session roll, never per bar.
    pub fn session_times(&self, day: i32) -> SessionTimes {
        let normal = SessionTimes { entry_end: self.entry_end, flatten_at: self.flatten_at };
        match self.early_closes.binary_search_by_key(&day, |&(d, _)| d) {
            Ok(i) => {
                let close = self.early_closes[i].1;
                SessionTimes {
                    entry_end: normal.entry_end.min(close - self.early_entry_end),
                    flatten_at: normal.flatten_at.min(close - self.early_flatten),
                }
            }
            Err(_) => normal,
        }
    }

    /// Parameters that must agree for two runs to share the per-bar calendar columns (session
    /// day and local close time of each bar). The early closes are not among them: they move
    /// no bar to another session, and each run resolves them at its own session rolls.
    pub fn calendar_key(&self) -> (String, i32, i64) {
        (self.timezone.clone(), self.session_end, self.bar_ns)
    }
}

impl Default for Params {
    /// The defaults of SPEC §5 (used by Rust tests; Python always passes every value).
    fn default() -> Self {
        Params {
            tick_size: 0.25,
            point_value: 5.0,
            bar_ns: 60 * NS_PER_SEC,
            rule: Rule::ZScore { lookback: 20, entry: 2.0, exit: 0.5 },
            min_volume: 0,
            position_size: 1,
            stop_loss_ticks: 0,
            take_profit_ticks: 0,
            daily_loss_limit: 50.0,
            daily_drawdown_limit: 75.0,
            max_consecutive_losses: 5,
            loss_pause_ns: 30 * NS_PER_MIN,
            max_trades_per_day: 50,
            max_position_ns: 0,
            starting_capital: 1000.0,
            kill_switch_loss: 300.0,
            min_account_balance: 700.0,
            timezone: "America/New_York".to_string(),
            entry_start: 9 * 3600 + 30 * 60,
            entry_end: 16 * 3600 + 15 * 60,
            flatten_at: 16 * 3600 + 25 * 60,
            session_end: 18 * 3600,
            commission_per_side: 0.42,
            slippage_ticks: 1,
            early_closes: Vec::new(),
            early_entry_end: 20 * 60,
            early_flatten: 10 * 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i32 = 3600;

    #[test]
    fn an_early_close_moves_entry_end_and_flatten_for_its_session_only() {
        let p = Params { early_closes: vec![(100, 13 * H), (101, 13 * H + 15 * 60)], ..Params::default() };
        let normal = SessionTimes { entry_end: 16 * H + 15 * 60, flatten_at: 16 * H + 25 * 60 };
        assert_eq!(p.session_times(99), normal);
        assert_eq!(
            p.session_times(100),
            SessionTimes { entry_end: 12 * H + 40 * 60, flatten_at: 12 * H + 50 * 60 }
        );
        assert_eq!(
            p.session_times(101),
            SessionTimes { entry_end: 12 * H + 55 * 60, flatten_at: 13 * H + 5 * 60 }
        );
        assert_eq!(p.session_times(102), normal);
    }

    #[test]
    fn a_late_early_close_never_moves_the_times_later() {
        let p = Params { early_closes: vec![(7, 17 * H)], ..Params::default() };
        assert_eq!(
            p.session_times(7),
            SessionTimes { entry_end: 16 * H + 15 * 60, flatten_at: 16 * H + 25 * 60 }
        );
    }
}
