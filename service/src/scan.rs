//! The fast path of [`crate::validate`]: a hand-written scanner for the one
//! shape nearly every predict body has, `{"data":[{five numbers}, ...]}`.
//!
//! It reads the bytes once, left to right, with no allocation but the trips
//! (one vector sized from the body's length, so it never grows), and keeps
//! nothing it would have to undo. It only ever answers "these are the
//! trips" for a body the full parser would read as exactly these trips;
//! anything else — another key, a duplicate, an escape in a key, a value
//! that is not a plain number, a number it cannot convert exactly as
//! serde_json does, a value a rule refuses, too few or too many rows — is
//! [`Scan::Other`], and the full streaming parser reads the body from the
//! start and words its errors as it always has. So every error answer is
//! the full parser's, byte for byte, and the scanner needs no error code.
//!
//! Numbers: serde_json turns a decimal into `significand / 10^k` (or
//! `× 10^k`) with one floating-point operation, and with its
//! `float_roundtrip` feature rounds correctly. When the significand is
//! below 2^53 and |k| ≤ 22 both operands are exact, so that one operation
//! *is* the correctly rounded value and both ways agree to the bit; the
//! scanner converts only such numbers (every coordinate with up to 15
//! digits) and leaves the others to serde_json.

use std::sync::atomic::{AtomicBool, Ordering};

use model::{Field, Trip};

/// What the scanner made of a body.
#[derive(Debug, PartialEq)]
pub(crate) enum Scan {
    /// The body is a valid batch: these are its trips, in order.
    Trips(Vec<Trip>),
    /// The request went away during the scan.
    Cancelled,
    /// Not the plain shape, or not valid: the full parser decides.
    Other,
}

/// The fewest bytes one row takes: five keys, five one-digit values, the
/// punctuation and the comma before the next row (`admission` charges
/// rows by the same figure).
const MIN_ROW_BYTES: usize = 105;

/// Exact powers of ten as `f64` (10^22 is the largest one).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The five field names, in [`Field::ALL`] order.
const FIELD_NAMES: [&[u8]; 5] = {
    let mut names: [&[u8]; 5] = [b""; 5];
    let mut i = 0;
    while i < 5 {
        names[i] = Field::ALL[i].name().as_bytes();
        i += 1;
    }
    names
};

/// The most digits a significand may have: 19 of them always fit a `u64`.
const MAX_DIGITS: u32 = 19;

/// The largest significand the scanner converts: 2^53, below which every
/// integer is exact as an `f64`.
const MAX_EXACT: u64 = 1 << 53;

/// Scans a body (BOM already stripped) of at most `max_rows` rows, checking
/// `cancelled` every `check_every` rows.
pub(crate) fn scan(
    body: &[u8],
    max_rows: usize,
    check_every: usize,
    cancelled: &AtomicBool,
) -> Scan {
    let mut scanner = Scanner { bytes: body, at: 0 };
    match scanner.batch(max_rows, check_every, cancelled) {
        Some(Ok(trips)) => Scan::Trips(trips),
        Some(Err(Gone)) => Scan::Cancelled,
        None => Scan::Other,
    }
}

/// The request is gone.
struct Gone;

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    /// The whole body: `{"data":[rows]}` and nothing after but whitespace.
    fn batch(
        &mut self,
        max_rows: usize,
        check_every: usize,
        cancelled: &AtomicBool,
    ) -> Option<Result<Vec<Trip>, Gone>> {
        self.expect(b'{')?;
        self.expect(b'"')?;
        self.name(b"data")?;
        self.expect(b':')?;
        self.expect(b'[')?;
        let capacity = (self.bytes.len() / MIN_ROW_BYTES + 1).min(max_rows);
        let mut trips = Vec::with_capacity(capacity);
        let check_every = check_every.max(1);
        let mut until_check = check_every;
        loop {
            if trips.len() == max_rows {
                return None;
            }
            if until_check == 0 {
                if cancelled.load(Ordering::Relaxed) {
                    return Some(Err(Gone));
                }
                until_check = check_every;
            }
            until_check -= 1;
            trips.push(self.row()?);
            match self.next()? {
                b',' => {}
                b']' => break,
                _ => return None,
            }
        }
        self.expect(b'}')?;
        self.skip_whitespace();
        (self.at == self.bytes.len()).then_some(Ok(trips))
    }

    /// One row: the five fields, each once, with plain numbers that pass
    /// the trip rules.
    fn row(&mut self) -> Option<Trip> {
        self.expect(b'{')?;
        let mut values = [0.0; 5];
        let mut seen = 0u8;
        loop {
            let field = self.field()?;
            if seen & (1 << field) != 0 {
                return None;
            }
            seen |= 1 << field;
            self.expect(b':')?;
            values[field] = self.number()?;
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        if seen != 0b1_1111 {
            return None;
        }
        Trip::from_values(values).ok()
    }

    /// A key that is one of the five fields, as its index in
    /// [`Field::ALL`]; any other key (or one with an escape) fails.
    fn field(&mut self) -> Option<usize> {
        self.expect(b'"')?;
        let rest = &self.bytes[self.at..];
        // Two bytes tell the five names apart: the first two, then the
        // first letter after `pickup_` or `dropoff_` and one more.
        let field = match (rest.first()?, rest.get(1)?) {
            (b'p', b'a') => 4,
            (b'p', _) => match rest.get(8)? {
                b'a' => 0,
                _ => 1,
            },
            _ => match rest.get(9)? {
                b'a' => 2,
                _ => 3,
            },
        };
        // Each name a constant, so that the comparison is a few loads
        // rather than a call to memcmp.
        match field {
            0 => self.name(FIELD_NAMES[0])?,
            1 => self.name(FIELD_NAMES[1])?,
            2 => self.name(FIELD_NAMES[2])?,
            3 => self.name(FIELD_NAMES[3])?,
            _ => self.name(FIELD_NAMES[4])?,
        }
        Some(field)
    }

    /// Consumes `name` and the closing quote of a key that must be it.
    #[inline(always)]
    fn name(&mut self, name: &[u8]) -> Option<()> {
        let end = self.at + name.len();
        if self.bytes.get(self.at..end)? != name || *self.bytes.get(end)? != b'"' {
            return None;
        }
        self.at = end + 1;
        Some(())
    }

    /// A JSON number that converts exactly (see the module doc).
    fn number(&mut self) -> Option<f64> {
        self.skip_whitespace();
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let mut significand: u64 = 0;
        let integer_start = self.at;
        match self.peek()? {
            b'0' => {
                self.at += 1;
                // No leading zeros in JSON.
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => significand = self.digits(0)?.0,
            _ => return None,
        }
        let mut exponent: i32 = 0;
        if self.peek() == Some(b'.') {
            self.at += 1;
            let (s, count) = self.digits(significand)?;
            // At least one digit, and at most MAX_DIGITS in all.
            if count == 0 || self.at - integer_start > MAX_DIGITS as usize + 1 {
                return None;
            }
            significand = s;
            exponent = -i32::try_from(count).ok()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            let sign = match self.peek() {
                Some(b'-') => {
                    self.at += 1;
                    -1
                }
                Some(b'+') => {
                    self.at += 1;
                    1
                }
                _ => 1,
            };
            let (e, count) = self.digits(0)?;
            // More than three digits is far out of the exact range anyway.
            if count == 0 || count > 3 {
                return None;
            }
            exponent += sign * i32::try_from(e).ok()?;
        }
        if significand > MAX_EXACT {
            return None;
        }
        let power = *POW10.get(usize::try_from(exponent.unsigned_abs()).ok()?)?;
        let magnitude =
            if exponent >= 0 { significand as f64 * power } else { significand as f64 / power };
        Some(if negative { -magnitude } else { magnitude })
    }

    /// Digits appended to `significand`, and how many there were; `None`
    /// past [`MAX_DIGITS`] (left to the parser), so no sum can overflow.
    fn digits(&mut self, mut significand: u64) -> Option<(u64, u32)> {
        let start = self.at;
        while let Some(&b) = self.bytes.get(self.at) {
            if !b.is_ascii_digit() {
                break;
            }
            significand = significand.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
            self.at += 1;
        }
        let count = u32::try_from(self.at - start).ok()?;
        (count <= MAX_DIGITS).then_some((significand, count))
    }

    /// The next byte after whitespace, consumed.
    fn next(&mut self) -> Option<u8> {
        self.skip_whitespace();
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// Consumes `byte` after whitespace, or fails.
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = r#"{"pickup_latitude":40.7,"pickup_longitude":-73.9,"dropoff_latitude":40.8,"dropoff_longitude":-73.95,"passenger_count":1}"#;

    fn run(body: &str) -> Scan {
        scan(body.as_bytes(), 3, 512, &AtomicBool::new(false))
    }

    fn one_value(text: &str) -> Option<f64> {
        Scanner { bytes: text.as_bytes(), at: 0 }.number()
    }

    #[test]
    fn reads_the_plain_shape_with_any_whitespace_and_key_order() {
        let body = " {\n \"data\" : [ {\"passenger_count\" : 2 ,\t\"dropoff_longitude\":4,\
                    \"dropoff_latitude\":3,\"pickup_longitude\":2e0,\"pickup_latitude\":1.0} ] } \r\n";
        let Scan::Trips(trips) = run(body) else { panic!("not scanned") };
        assert_eq!(trips[0].values(), [1.0, 2.0, 3.0, 4.0, 2.0]);
    }

    #[test]
    fn leaves_everything_else_to_the_parser() {
        let with = |row: &str| format!(r#"{{"data":[{row}]}}"#);
        for body in
            [
                String::new(),
                "{}".to_owned(),
                r#"{"data":[]}"#.to_owned(),
                format!(r#"{{"data":[{ROW},{ROW},{ROW},{ROW}]}}"#),
                format!(r#"{{"data":[{ROW}],"x":1}}"#),
                format!(r#"{{"data":[{ROW}]}} x"#),
                format!(r#"{{"data":[{ROW}]"#),
                with(&ROW.replace("\"passenger_count\":1", "\"passenger_count\":1,\"extra\":1")),
                with(&ROW.replace(
                    "\"passenger_count\":1",
                    "\"passenger_count\":1,\"passenger_count\":2",
                )),
                with(&ROW.replace(",\"passenger_count\":1", "")),
                with(&ROW.replace("\"passenger_count\":1", "\"passenger_count\":1.5")),
                with(&ROW.replace("\"passenger_count\":1", "\"passenger_count\":\"1\"")),
                with(&ROW.replace("40.7", "95")),
                with(&ROW.replace("pickup_latitude", "pickup_l\\u0061titude")),
                with(&ROW.replace("40.7", "040.7")),
                with(&ROW.replace("40.7", "40.")),
                with(&ROW.replace("40.7", "+40.7")),
                with(&ROW.replace("40.7", "40.7x")),
                with(&ROW.replace("40.7", "40.7000000000000000000001")),
                with(&ROW.replace("40.7", "4.07e1000")),
                with("[]"),
            ]
        {
            assert_eq!(run(&body), Scan::Other, "{body}");
        }
    }

    #[test]
    fn numbers_convert_as_serde_json_does() {
        for text in [
            "0",
            "-0",
            "-0.0",
            "1",
            "-1",
            "40.7614",
            "-73.9776",
            "0.1",
            "0.3",
            "1e2",
            "1.5E-3",
            "123456789.123456",
            "9007199254740992",
            "-180",
            "89.999999999999",
            "1e22",
            "1e-22",
            "0.000001",
            "40.704563",
            "-74.010984",
        ] {
            let want: f64 = serde_json::from_str(text).unwrap();
            let got = one_value(text).unwrap_or_else(|| panic!("{text} not converted"));
            assert_eq!(got.to_bits(), want.to_bits(), "{text}");
        }
        // Beyond the exact range: left to serde_json.
        for text in ["9007199254740993", "1e23", "1e-23", "123456789012345678901"] {
            assert_eq!(one_value(text), None, "{text}");
        }
    }

    /// The scanner and the full parser agree to the bit on every body the
    /// scanner accepts, over numbers written every way JSON allows.
    #[test]
    fn a_gone_request_stops_the_scan() {
        let rows = [ROW; 5].join(",");
        let body = format!(r#"{{"data":[{rows}]}}"#);
        assert_eq!(scan(body.as_bytes(), 10, 2, &AtomicBool::new(true)), Scan::Cancelled);
        assert!(
            matches!(scan(body.as_bytes(), 10, 2, &AtomicBool::new(false)), Scan::Trips(t) if t.len() == 5)
        );
    }
}
