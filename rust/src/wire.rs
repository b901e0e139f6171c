//! The fast path of the stream's bar decoder: a `bars.<symbol>` message in its common form.
//!
//! Decoding the JSON envelope was a quarter of a stream worker's time per bar in Python. This
//! module recognises the common case only — a version-1 envelope whose fields are exactly what
//! the Python encoder writes (integer `ts` and `volume` in range, finite float prices with the
//! high and low around the others, a valid symbol) — and returns its fields. Anything else,
//! valid or not, is `None`, and the Python decoder (`scalper.kafka.messages`) handles it as
//! before: it alone accepts the unusual but valid forms and names what is wrong with the rest.
//! So this path may only ever accept a message the Python decoder turns into the very same bar;
//! `tests/test_kafka.py` checks that on generated and hostile messages.
//!
//! Numbers are parsed with serde_json's `float_roundtrip`, correctly rounded as Python's
//! `float()` is; JSON integers and floats stay apart (Python's `int` and `float`).

use crate::machine::Bar;
use serde::Deserialize;
use serde_json::Number;
use std::borrow::Cow;

/// The envelope version the encoder writes (`scalper.kafka.messages.VERSION`).
pub const VERSION: u64 = 1;

/// A bar of a `bars.<symbol>` message: the engine's bar and whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct WireBar {
    pub bar: Bar,
    pub symbol: String,
}

/// The envelope as sent; other fields are ignored, as the Python decoder ignores them.
#[derive(Deserialize)]
struct Envelope<'a> {
    v: Number,
    ts: Number,
    open: Number,
    high: Number,
    low: Number,
    close: Number,
    volume: Number,
    #[serde(borrow)]
    symbol: Cow<'a, str>,
}

/// The bar in `value` when it is in the common form, else `None` (see the module docs).
pub fn parse_plain_bar(value: &[u8]) -> Option<WireBar> {
    let e: Envelope = serde_json::from_slice(value).ok()?;
    if e.v.as_u64() != Some(VERSION) {
        return None;
    }
    let bar = Bar {
        ts: integer(&e.ts)?,
        open: float(&e.open)?,
        high: float(&e.high)?,
        low: float(&e.low)?,
        close: float(&e.close)?,
        volume: integer(&e.volume)?,
    };
    let ordered =
        bar.low <= bar.open && bar.open <= bar.high && bar.low <= bar.close && bar.close <= bar.high;
    (ordered && valid_symbol(&e.symbol)).then(|| WireBar { bar, symbol: e.symbol.into_owned() })
}

/// A JSON integer in `0..=i64::MAX` (Python: `type(x) is int and 0 <= x <= 2**63 - 1`).
fn integer(n: &Number) -> Option<i64> {
    if n.is_f64() {
        return None;
    }
    n.as_u64().and_then(|x| i64::try_from(x).ok())
}

/// A finite JSON float, written with a fraction or an exponent (Python's `float`).
fn float(n: &Number) -> Option<f64> {
    if !n.is_f64() {
        return None;
    }
    n.as_f64().filter(|x| x.is_finite())
}

/// `scalper.kafka.topics.is_valid_symbol`: 1-32 of `[A-Za-z0-9_-]`.
fn valid_symbol(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"{"v":1,"ts":1700000000000000000,"open":5000.25,"high":5001.0,"low":4999.5,"close":5000.75,"volume":12,"symbol":"MES"}"#;

    #[test]
    fn the_common_form_is_read() {
        let WireBar { bar, symbol } = parse_plain_bar(PLAIN.as_bytes()).unwrap();
        assert_eq!(bar.ts, 1_700_000_000_000_000_000);
        assert_eq!((bar.open, bar.high, bar.low, bar.close), (5000.25, 5001.0, 4999.5, 5000.75));
        assert_eq!((bar.volume, symbol.as_str()), (12, "MES"));
    }

    #[test]
    fn everything_else_is_left_to_python() {
        let cases = [
            PLAIN.replace(r#""v":1"#, r#""v":2"#),
            PLAIN.replace(r#""v":1"#, r#""v":1.0"#),
            PLAIN.replace(r#""open":5000.25"#, r#""open":5000"#), // an int price: Python converts
            PLAIN.replace(r#""volume":12"#, r#""volume":12.0"#),
            PLAIN.replace(r#""volume":12"#, r#""volume":-1"#),
            PLAIN.replace("1700000000000000000", "9223372036854775808"),
            PLAIN.replace(r#""high":5001.0"#, r#""high":4000.0"#),
            PLAIN.replace(r#""low":4999.5"#, r#""low":1e400"#),
            PLAIN.replace(r#""open":5000.25"#, r#""open":NaN"#),
            PLAIN.replace("MES", "bars.MES"),
            PLAIN.replace(r#","symbol":"MES""#, ""),
            PLAIN.replace(r#""ts":"#, r#""ts":true,"x":"#),
            "[1,2]".to_string(),
            String::new(),
        ];
        for case in cases {
            assert_eq!(parse_plain_bar(case.as_bytes()), None, "{case}");
        }
        assert_eq!(parse_plain_bar(&[0xff, 0xfe]), None);
    }

    #[test]
    fn other_fields_are_ignored_as_python_does() {
        let extra = PLAIN.replace(r#""v":1,"#, r#""v":1,"source":{"a":[1,2]},"#);
        assert_eq!(parse_plain_bar(extra.as_bytes()), parse_plain_bar(PLAIN.as_bytes()));
    }
}
