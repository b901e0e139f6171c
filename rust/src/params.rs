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
    /// SPEC §4.9, every rule off by default. Wilder ATR window (bars).
    pub atr_period: usize,
    /// Stop and target distances in ATRs at the decision (0 = in ticks, or none).
    pub stop_atr: f64,
    pub target_atr: f64,
    /// Trailing stop distance from the extreme since the entry fill (0 = none).
    pub trail_ticks: i64,
    /// `(min_balance, contracts)`, strictly ascending; empty = `position_size`.
    pub size_tiers: Vec<(f64, i64)>,
    /// Dollars an entry may lose at its initial stop (0 = no cap).
    pub max_risk_per_trade: f64,
    /// Local seconds of day from which entries are `reduce_size_factor` smaller (None = never).
    pub reduce_size_at: Option<i32>,
    pub reduce_size_factor: f64,
    /// `slippage_model: adaptive`: one tick more after a thin bar, one more after a wild one.
    pub adaptive_slippage: bool,
    pub low_volume: i64,
    pub high_vol_atr: f64,
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

    /// Whether decisions read the ATR (stop or target in ATRs).
    #[inline(always)]
    pub fn decides_on_atr(&self) -> bool {
        self.stop_atr > 0.0 || self.target_atr > 0.0
    }

    /// Whether the slippage of a bar reads the previous bar's ATR.
    #[inline(always)]
    pub fn slips_on_atr(&self) -> bool {
        self.adaptive_slippage && self.high_vol_atr > 0.0
    }

    /// Whether anything reads the ATR (else it is never computed).
    #[inline(always)]
    pub fn reads_atr(&self) -> bool {
        self.decides_on_atr() || self.slips_on_atr()
    }

    /// A distance of `multiple` ATRs in whole ticks, rounded up, at least 1 (SPEC §4.9).
    #[inline(always)]
    pub fn atr_ticks(&self, multiple: f64, atr: f64) -> i64 {
        ((multiple * atr / self.tick_size - 1e-6).ceil() as i64).max(1)
    }

    /// The contracts of the last size tier the balance reaches (`position_size` without tiers,
    /// 0 below the first tier).
    #[inline(always)]
    pub fn tier_size(&self, balance: f64) -> i64 {
        if self.size_tiers.is_empty() {
            return self.position_size;
        }
        self.size_tiers.iter().take_while(|&&(min, _)| min <= balance).last().map_or(0, |&(_, q)| q)
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
            atr_period: 14,
            stop_atr: 0.0,
            target_atr: 0.0,
            trail_ticks: 0,
            size_tiers: Vec::new(),
            max_risk_per_trade: 0.0,
            reduce_size_at: None,
            reduce_size_factor: 0.5,
            adaptive_slippage: false,
            low_volume: 0,
            high_vol_atr: 0.0,
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

    #[test]
    fn atr_distances_round_up_to_whole_ticks_and_at_least_one() {
        let p = Params::default();
        assert_eq!(p.atr_ticks(1.5, 2.0), 12); // exactly 12 ticks stays 12
        assert_eq!(p.atr_ticks(1.5, 2.01), 13);
        assert_eq!(p.atr_ticks(1.0, 0.01), 1);
    }

    #[test]
    fn the_last_tier_reached_sets_the_size() {
        let p = Params { size_tiers: vec![(500.0, 1), (1040.0, 2), (1200.0, 4)], ..Params::default() };
        assert_eq!(p.tier_size(499.99), 0);
        assert_eq!(p.tier_size(1040.0), 2);
        assert_eq!(p.tier_size(5000.0), 4);
        assert_eq!(Params::default().tier_size(0.0), 1);
    }
}
