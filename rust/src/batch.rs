//! Batch drivers: a backtest over columns, and a sweep of many parameter sets in parallel.
//!
//! Both run `machine::step` bar by bar with the simulated broker. The sweep computes what the
//! parameter sets have in common once (the calendar columns per session setup, the indicator
//! series per lookback/period) and shares it across all sets and threads.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::calendar::SessionClock;
use crate::indicators::{Atr, Indicator};
use crate::machine::{step, Bar, BarContext, Book, Trade};
use crate::metrics::{Metrics, MetricsAcc};
use crate::params::Params;
use crate::sim::FillSim;

/// The bar columns, borrowed (zero-copy from NumPy/Arrow).
#[derive(Clone, Copy)]
pub struct Columns<'a> {
    pub ts: &'a [i64],
    pub open: &'a [f64],
    pub high: &'a [f64],
    pub low: &'a [f64],
    pub close: &'a [f64],
    pub volume: &'a [i64],
}

impl<'a> Columns<'a> {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn check(&self) -> Result<(), String> {
        let n = self.ts.len();
        let lens = [self.open.len(), self.high.len(), self.low.len(), self.close.len(), self.volume.len()];
        if lens.iter().any(|&l| l != n) {
            return Err(format!("bar columns differ in length: ts {n}, open/high/low/close/volume {lens:?}"));
        }
        Ok(())
    }

    #[inline(always)]
    fn bar(&self, i: usize) -> Bar {
        Bar {
            ts: self.ts[i],
            open: self.open[i],
            high: self.high[i],
            low: self.low[i],
            close: self.close[i],
            volume: self.volume[i],
        }
    }
}

/// What a run reports besides the decisions themselves.
pub trait Recorder {
    fn trade(&mut self, trade: &Trade);
    fn session(&mut self, day: i32, pnl: f64);
    fn bar(&mut self, p: &Params, book: &Book, close: f64);
}

/// Runs SPEC §4 over all bars: no decision at the last bar, then the end-of-data close.
/// Returns the final book (its account and the gate's refusal counts).
#[inline(always)]
pub fn run<R: Recorder>(
    p: &Params,
    cols: &Columns,
    mut context: impl FnMut(usize) -> BarContext,
    rec: &mut R,
) -> Book {
    let n = cols.len();
    let mut book = Book::default();
    let mut sim = FillSim::default();
    for i in 0..n {
        let at = context(i);
        if let Some(day) = book.session_day.filter(|&d| d != at.session_day) {
            rec.session(day, book.daily_pnl);
        }
        let bar = cols.bar(i);
        let last = i + 1 == n;
        step(p, &mut book, &mut sim, &bar, &at, !last, |_, trade| {
            if let Some(t) = trade {
                rec.trade(&t);
            }
        });
        if last {
            if let Some(fill) = sim.close_out(p, bar.ts, bar.close) {
                if let Some(t) = book.apply_fill(p, &fill) {
                    rec.trade(&t);
                }
            }
            if let Some(day) = book.session_day {
                rec.session(day, book.daily_pnl);
            }
        }
        rec.bar(p, &book, bar.close);
    }
    book
}

/// Everything a single backtest returns.
pub struct BacktestOutput {
    pub trades: Vec<Trade>,
    /// Mark-to-market equity at each bar's close (realized + open P&L, before exit costs).
    pub equity: Vec<f64>,
    pub session_days: Vec<i32>,
    pub session_pnl: Vec<f64>,
    pub metrics: Metrics,
    /// Entries the risk gate refused for want of an ATR, and for a size of 0 (SPEC §4.9).
    pub refused_atr: u64,
    pub refused_size: u64,
}

struct FullRecorder {
    acc: MetricsAcc,
    trades: Vec<Trade>,
    equity: Vec<f64>,
    session_days: Vec<i32>,
    session_pnl: Vec<f64>,
}

impl Recorder for FullRecorder {
    fn trade(&mut self, trade: &Trade) {
        self.acc.trade(trade.pnl);
        self.trades.push(*trade);
    }

    fn session(&mut self, day: i32, pnl: f64) {
        self.acc.session(pnl);
        self.session_days.push(day);
        self.session_pnl.push(pnl);
    }

    #[inline(always)]
    fn bar(&mut self, p: &Params, book: &Book, close: f64) {
        self.acc.bar(book.side != 0);
        let open_pnl = if book.side != 0 {
            f64::from(book.side) * (close - book.entry_price) * book.qty as f64 * p.point_value
        } else {
            0.0
        };
        self.equity.push(p.starting_capital + book.cumulative_pnl + open_pnl);
    }
}

struct MetricsOnly(MetricsAcc);

impl Recorder for MetricsOnly {
    #[inline(always)]
    fn trade(&mut self, trade: &Trade) {
        self.0.trade(trade.pnl);
    }

    fn session(&mut self, _day: i32, pnl: f64) {
        self.0.session(pnl);
    }

    #[inline(always)]
    fn bar(&mut self, _p: &Params, book: &Book, _close: f64) {
        self.0.bar(book.side != 0);
    }
}

/// One backtest: calendar and indicator computed inline, trades and equity recorded.
pub fn backtest(p: &Params, cols: &Columns) -> Result<BacktestOutput, String> {
    cols.check()?;
    let mut clock = SessionClock::new(&p.timezone, p.session_end)?;
    let mut indicator = Indicator::for_rule(&p.rule);
    let mut atr = p.reads_atr().then(|| Atr::new(p.atr_period));
    let mut rec = FullRecorder {
        acc: MetricsAcc::new(p.starting_capital),
        trades: Vec::new(),
        equity: Vec::with_capacity(cols.len()),
        session_days: Vec::new(),
        session_pnl: Vec::new(),
    };
    let book = run(
        p,
        cols,
        |i| BarContext {
            session_day: clock.local(cols.ts[i]).session_day,
            close_seconds: clock.local(cols.ts[i] + p.bar_ns).seconds_of_day,
            indicator: indicator.update(cols.close[i]),
            atr: atr.as_mut().map_or(f64::NAN, |a| a.update(cols.high[i], cols.low[i], cols.close[i])),
        },
        &mut rec,
    );
    Ok(BacktestOutput {
        metrics: rec.acc.finish(),
        trades: rec.trades,
        equity: rec.equity,
        session_days: rec.session_days,
        session_pnl: rec.session_pnl,
        refused_atr: book.refused_atr,
        refused_size: book.refused_size,
    })
}

/// Per-bar calendar columns shared by every parameter set with the same session setup.
struct CalendarColumns {
    session_day: Vec<i32>,
    close_seconds: Vec<i32>,
}

fn calendar_columns(p: &Params, ts: &[i64]) -> Result<CalendarColumns, String> {
    let mut clock = SessionClock::new(&p.timezone, p.session_end)?;
    let session_day = ts.iter().map(|&t| clock.local(t).session_day).collect();
    let close_seconds = ts.iter().map(|&t| clock.local(t + p.bar_ns).seconds_of_day).collect();
    Ok(CalendarColumns { session_day, close_seconds })
}

/// Runs every parameter set over the same bars on `threads` threads (all cores when `None`);
/// returns their metrics in input order.
pub fn sweep(sets: &[Params], cols: &Columns, threads: Option<usize>) -> Result<Vec<Metrics>, String> {
    cols.check()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(|e| format!("cannot start sweep threads: {e}"))?;
    pool.install(|| {
        let mut calendars: HashMap<(String, i32, i64), CalendarColumns> = HashMap::new();
        for p in sets {
            if let std::collections::hash_map::Entry::Vacant(slot) = calendars.entry(p.calendar_key()) {
                slot.insert(calendar_columns(p, cols.ts)?);
            }
        }
        let mut rules: Vec<_> = sets.iter().map(|p| (p.rule.indicator_key(), p.rule)).collect();
        rules.sort_by_key(|(k, _)| *k);
        rules.dedup_by_key(|(k, _)| *k);
        let indicators: HashMap<(u8, usize), Vec<f64>> =
            rules.par_iter().map(|(key, rule)| (*key, Indicator::series(rule, cols.close))).collect();
        let mut periods: Vec<usize> = sets.iter().filter(|p| p.reads_atr()).map(|p| p.atr_period).collect();
        periods.sort_unstable();
        periods.dedup();
        let atrs: HashMap<usize, Vec<f64>> = periods.par_iter().map(|&n| (n, atr_series(n, cols))).collect();
        Ok(sets
            .par_iter()
            .map(|p| {
                let cal = &calendars[&p.calendar_key()];
                let ind = &indicators[&p.rule.indicator_key()];
                let atr: &[f64] = if p.reads_atr() { &atrs[&p.atr_period] } else { &[] };
                let mut rec = MetricsOnly(MetricsAcc::new(p.starting_capital));
                run(
                    p,
                    cols,
                    |i| BarContext {
                        session_day: cal.session_day[i],
                        close_seconds: cal.close_seconds[i],
                        indicator: ind[i],
                        atr: atr.get(i).copied().unwrap_or(f64::NAN),
                    },
                    &mut rec,
                );
                rec.0.finish()
            })
            .collect())
    })
}

/// The ATR over the bar columns (what sweeps share between parameter sets).
fn atr_series(period: usize, cols: &Columns) -> Vec<f64> {
    let mut atr = Atr::new(period);
    (0..cols.len()).map(|i| atr.update(cols.high[i], cols.low[i], cols.close[i])).collect()
}
