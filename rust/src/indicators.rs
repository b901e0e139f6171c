//! Rolling statistics behind the strategies: the z-score of the close and Wilder's RSI.
//!
//! Both are incremental (one close in, one value out, O(1)), which is what the live stream needs;
//! the batch and the sweep run the very same update over a column.

use serde::{Deserialize, Serialize};

use crate::params::Rule;

/// Below this standard deviation the z-score is undefined (a flat window has no scale).
pub const MIN_STD: f64 = 1e-9;

/// Z-score of the latest close over the last `lookback` closes (sample std, ddof = 1).
///
/// Sums are kept relative to an anchor price and rebuilt from the window every `lookback`
/// updates. With prices on a tick grid the anchored sums are exact, so the variance is rounded
/// once, from `n·Σd² − (Σd)²`; with arbitrary prices the rebuild stops drift from accumulating.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollingZ {
    window: Vec<f64>,
    next: usize,
    seen: usize,
    anchor: f64,
    sum: f64,
    sum_sq: f64,
}

impl RollingZ {
    pub fn new(lookback: usize) -> Self {
        RollingZ { window: vec![0.0; lookback.max(2)], next: 0, seen: 0, anchor: 0.0, sum: 0.0, sum_sq: 0.0 }
    }

    /// Adds `close`, returns the z-score of it (NaN while undefined).
    #[inline(always)]
    pub fn update(&mut self, close: f64) -> f64 {
        let n = self.window.len();
        if self.seen == 0 {
            self.anchor = close;
        }
        if self.seen >= n {
            let old = self.window[self.next] - self.anchor;
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        self.window[self.next] = close;
        let d = close - self.anchor;
        self.sum += d;
        self.sum_sq += d * d;
        self.next += 1;
        self.seen += 1;
        if self.next == n {
            self.next = 0;
            self.rebuild(close);
        }
        if self.seen < n {
            return f64::NAN;
        }
        let nf = n as f64;
        let var = (nf * self.sum_sq - self.sum * self.sum) / (nf * (nf - 1.0));
        let std = var.max(0.0).sqrt();
        if std < MIN_STD {
            return f64::NAN;
        }
        ((close - self.anchor) - self.sum / nf) / std
    }

    fn rebuild(&mut self, anchor: f64) {
        let count = self.seen.min(self.window.len());
        self.anchor = anchor;
        self.sum = 0.0;
        self.sum_sq = 0.0;
        for &x in &self.window[..count] {
            let d = x - anchor;
            self.sum += d;
            self.sum_sq += d * d;
        }
    }
}

/// Wilder's RSI: the first averages are simple means of the first `period` changes, then
/// `avg = (prev·(period − 1) + x) / period`; RSI = 100 while the average loss is 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WilderRsi {
    period: usize,
    prev_close: f64,
    changes: usize,
    avg_gain: f64,
    avg_loss: f64,
}

impl WilderRsi {
    pub fn new(period: usize) -> Self {
        WilderRsi { period: period.max(1), prev_close: f64::NAN, changes: 0, avg_gain: 0.0, avg_loss: 0.0 }
    }

    #[inline(always)]
    pub fn update(&mut self, close: f64) -> f64 {
        if self.prev_close.is_nan() {
            self.prev_close = close;
            return f64::NAN;
        }
        let change = close - self.prev_close;
        self.prev_close = close;
        let (gain, loss) = if change > 0.0 { (change, 0.0) } else { (0.0, -change) };
        let p = self.period as f64;
        self.changes += 1;
        if self.changes <= self.period {
            self.avg_gain += gain;
            self.avg_loss += loss;
            if self.changes < self.period {
                return f64::NAN;
            }
            self.avg_gain /= p;
            self.avg_loss /= p;
        } else {
            self.avg_gain = (self.avg_gain * (p - 1.0) + gain) / p;
            self.avg_loss = (self.avg_loss * (p - 1.0) + loss) / p;
        }
        if self.avg_loss == 0.0 {
            100.0
        } else {
            100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss)
        }
    }
}

/// Wilder's ATR (SPEC §4.9): the true range is `high − low` on the first bar of the data, else
/// also against the previous close; the first value is the simple mean of the first `period`
/// true ranges (summed in bar order), then `atr = (prev·(period − 1) + tr) / period`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Atr {
    period: usize,
    prev_close: f64,
    seen: usize,
    value: f64,
}

impl Atr {
    pub fn new(period: usize) -> Self {
        Atr { period: period.max(1), prev_close: f64::NAN, seen: 0, value: 0.0 }
    }

    pub fn period(&self) -> usize {
        self.period
    }

    /// Adds a bar, returns the ATR including it (NaN while undefined).
    #[inline(always)]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> f64 {
        let range = high - low;
        let tr = if self.prev_close.is_nan() {
            range
        } else {
            range.max((high - self.prev_close).abs()).max((low - self.prev_close).abs())
        };
        self.prev_close = close;
        let n = self.period as f64;
        self.seen += 1;
        if self.seen <= self.period {
            self.value += tr;
            if self.seen < self.period {
                return f64::NAN;
            }
            self.value /= n;
        } else {
            self.value = (self.value * (n - 1.0) + tr) / n;
        }
        self.value
    }

    /// The current value (NaN while undefined).
    pub fn value(&self) -> f64 {
        if self.seen >= self.period {
            self.value
        } else {
            f64::NAN
        }
    }
}

/// The indicator a rule reads, as one value type so the engine state can own and snapshot it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Indicator {
    Z(RollingZ),
    Rsi(WilderRsi),
}

impl Indicator {
    pub fn for_rule(rule: &Rule) -> Self {
        match *rule {
            Rule::ZScore { lookback, .. } => Indicator::Z(RollingZ::new(lookback)),
            Rule::Rsi { period, .. } => Indicator::Rsi(WilderRsi::new(period)),
        }
    }

    #[inline(always)]
    pub fn update(&mut self, close: f64) -> f64 {
        match self {
            Indicator::Z(z) => z.update(close),
            Indicator::Rsi(r) => r.update(close),
        }
    }

    /// The indicator over a whole column (what sweeps share between parameter sets).
    pub fn series(rule: &Rule, closes: &[f64]) -> Vec<f64> {
        let mut ind = Indicator::for_rule(rule);
        closes.iter().map(|&c| ind.update(c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_pass_z(w: &[f64]) -> f64 {
        let n = w.len() as f64;
        let mean = w.iter().sum::<f64>() / n;
        let var = w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (w[w.len() - 1] - mean) / var.sqrt()
    }

    #[test]
    fn z_matches_two_pass_over_a_long_series() {
        let closes: Vec<f64> =
            (0..5000).map(|i| 5000.0 + ((i * 7919) % 37) as f64 * 0.25 - (i as f64) * 0.01).collect();
        let mut z = RollingZ::new(20);
        for (i, &c) in closes.iter().enumerate() {
            let got = z.update(c);
            if i >= 19 {
                let want = two_pass_z(&closes[i - 19..=i]);
                assert!((got - want).abs() < 1e-9, "bar {i}: {got} vs {want}");
            } else {
                assert!(got.is_nan());
            }
        }
    }

    #[test]
    fn flat_window_is_undefined() {
        let mut z = RollingZ::new(3);
        for _ in 0..10 {
            assert!(z.update(100.0).is_nan());
        }
    }

    #[test]
    fn rsi_is_100_without_losses_and_wilder_smoothed_after() {
        let mut r = WilderRsi::new(3);
        assert!(r.update(1.0).is_nan());
        assert!(r.update(2.0).is_nan());
        assert!(r.update(3.0).is_nan());
        assert_eq!(r.update(4.0), 100.0);
        // avg_gain = (1*2 + 0)/3, avg_loss = (0*2 + 2)/3 -> rs = 1 -> 50
        assert!((r.update(2.0) - 50.0).abs() < 1e-12);
    }
    #[test]
    fn atr_is_the_mean_of_the_first_true_ranges_then_wilder_smoothed() {
        let mut a = Atr::new(2);
        assert!(a.update(10.0, 9.0, 9.5).is_nan()); // tr 1 (first bar: high - low)
        assert_eq!(a.update(12.0, 11.0, 11.5), 1.75); // tr max(1, 2.5, 1.5) = 2.5
        assert_eq!(a.update(11.5, 11.0, 11.0), 1.125); // tr 0.5: (1.75 + 0.5) / 2
        assert_eq!(a.value(), 1.125);
    }
}
