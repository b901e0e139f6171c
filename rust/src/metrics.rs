//! Performance metrics of SPEC §4, accumulated in one pass so that a sweep of a thousand parameter
//! sets never stores a trade list.

use serde::{Deserialize, Serialize};

const TRADING_DAYS: f64 = 252.0;

/// Running totals from which every metric is derived.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetricsAcc {
    capital: f64,
    trades: u64,
    wins: u64,
    losses: u64,
    gross_win: f64,
    gross_loss: f64,
    net: f64,
    peak: f64,
    max_dd: f64,
    max_dd_pct: f64,
    sessions: u64,
    ret_mean: f64,
    ret_m2: f64,
    downside_sq: f64,
    bars: u64,
    bars_in_position: u64,
}

/// The metrics of one run. `NaN` where a ratio is undefined (no trades, no losses and no wins,
/// fewer than two sessions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub trades: u64,
    pub net_pnl: f64,
    pub win_rate: f64,
    pub profit_factor: f64,
    pub max_drawdown: f64,
    pub max_drawdown_pct: f64,
    pub sharpe: f64,
    pub sortino: f64,
    pub calmar: f64,
    pub expectancy: f64,
    pub avg_trade: f64,
    pub avg_win: f64,
    pub avg_loss: f64,
    pub exposure: f64,
    pub sessions: u64,
    pub return_pct: f64,
}

impl MetricsAcc {
    pub fn new(starting_capital: f64) -> Self {
        MetricsAcc { capital: starting_capital, peak: starting_capital, ..Default::default() }
    }

    /// A closed trade: counts, and the closed-trade equity curve for the drawdown.
    #[inline(always)]
    pub fn trade(&mut self, pnl: f64) {
        self.trades += 1;
        if pnl > 0.0 {
            self.wins += 1;
            self.gross_win += pnl;
        } else if pnl < 0.0 {
            self.losses += 1;
            self.gross_loss -= pnl;
        }
        self.net += pnl;
        let equity = self.capital + self.net;
        if equity > self.peak {
            self.peak = equity;
        }
        let dd = self.peak - equity;
        if dd > self.max_dd {
            self.max_dd = dd;
        }
        if self.peak > 0.0 && dd / self.peak > self.max_dd_pct {
            self.max_dd_pct = dd / self.peak;
        }
    }

    /// A session's realized P&L, as a return on starting capital (Welford for mean/variance).
    #[inline(always)]
    pub fn session(&mut self, pnl: f64) {
        let r = pnl / self.capital;
        self.sessions += 1;
        let delta = r - self.ret_mean;
        self.ret_mean += delta / self.sessions as f64;
        self.ret_m2 += delta * (r - self.ret_mean);
        if r < 0.0 {
            self.downside_sq += r * r;
        }
    }

    #[inline(always)]
    pub fn bar(&mut self, in_position: bool) {
        self.bars += 1;
        self.bars_in_position += u64::from(in_position);
    }

    pub fn finish(&self) -> Metrics {
        let n = self.trades as f64;
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                a / b
            } else if a > 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        };
        let mean_or_nan = |sum: f64, count: u64| if count > 0 { sum / count as f64 } else { f64::NAN };
        let sessions = self.sessions as f64;
        let std = if self.sessions > 1 { (self.ret_m2 / (sessions - 1.0)).sqrt() } else { f64::NAN };
        let downside = if self.sessions > 0 { (self.downside_sq / sessions).sqrt() } else { f64::NAN };
        let annual = self.ret_mean * TRADING_DAYS;
        let avg_loss = mean_or_nan(self.gross_loss, self.losses);
        let avg_trade = mean_or_nan(self.net, self.trades);
        Metrics {
            trades: self.trades,
            net_pnl: self.net,
            win_rate: if self.trades > 0 { self.wins as f64 / n } else { f64::NAN },
            profit_factor: ratio(self.gross_win, self.gross_loss),
            max_drawdown: self.max_dd,
            max_drawdown_pct: self.max_dd_pct,
            sharpe: ratio_or_nan(self.ret_mean, std) * TRADING_DAYS.sqrt(),
            sortino: ratio_or_nan(self.ret_mean, downside) * TRADING_DAYS.sqrt(),
            calmar: ratio_or_nan(annual, self.max_dd_pct),
            // Expectancy in R: the average trade per dollar of the average loss (Van Tharp).
            expectancy: ratio_or_nan(avg_trade, avg_loss),
            avg_trade,
            avg_win: mean_or_nan(self.gross_win, self.wins),
            avg_loss: -avg_loss,
            exposure: if self.bars > 0 { self.bars_in_position as f64 / self.bars as f64 } else { f64::NAN },
            sessions: self.sessions,
            return_pct: if self.capital > 0.0 { self.net / self.capital } else { f64::NAN },
        }
    }
}

fn ratio_or_nan(a: f64, b: f64) -> f64 {
    if b > 0.0 && b.is_finite() {
        a / b
    } else {
        f64::NAN
    }
}

impl Metrics {
    /// Field names in a fixed order (the columns of a sweep table).
    pub const NAMES: [&'static str; 16] = [
        "trades",
        "net_pnl",
        "win_rate",
        "profit_factor",
        "max_drawdown",
        "max_drawdown_pct",
        "sharpe",
        "sortino",
        "calmar",
        "expectancy",
        "avg_trade",
        "avg_win",
        "avg_loss",
        "exposure",
        "sessions",
        "return_pct",
    ];

    /// Values in the order of `NAMES`.
    pub fn values(&self) -> [f64; 16] {
        [
            self.trades as f64,
            self.net_pnl,
            self.win_rate,
            self.profit_factor,
            self.max_drawdown,
            self.max_drawdown_pct,
            self.sharpe,
            self.sortino,
            self.calmar,
            self.expectancy,
            self.avg_trade,
            self.avg_win,
            self.avg_loss,
            self.exposure,
            self.sessions as f64,
            self.return_pct,
        ]
    }
}
