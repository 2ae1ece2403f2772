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
//! digits) and leaves the others to serde_json. Which method finds the
//! significand does not matter (it is an integer, exact either way), so
//! the scanner reads digits eight at a time from one word (SWAR) rather
//! than byte by byte, and the one rounding is the same operation.
//!
//! Keys are told apart by the words of their bytes: the sixteen after the
//! opening quote as two `u64` and at most two more, compared with each
//! name (and its closing quote) as constants.

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

/// A key's bytes after its opening quote (its name, then the closing
/// quote), as the scanner compares them: the first sixteen as two
/// little-endian words, the rest (at most two) as a masked `u16`.
#[derive(Debug, Clone, Copy)]
struct KeyPattern {
    head: [u64; 2],
    tail: u16,
    tail_mask: u16,
    /// The name and its closing quote.
    len: usize,
}

impl KeyPattern {
    const fn of(name: &[u8]) -> KeyPattern {
        let len = name.len() + 1;
        assert!(len >= 16 && len <= 18, "every field name is 15 to 17 bytes");
        let mut head = [0u64; 2];
        let mut i = 0;
        while i < 16 {
            head[i / 8] |= (Self::byte(name, i) as u64) << (8 * (i % 8));
            i += 1;
        }
        let (mut tail, mut tail_mask) = (0u16, 0u16);
        while i < len {
            tail |= (Self::byte(name, i) as u16) << (8 * (i - 16));
            tail_mask |= 0xFF << (8 * (i - 16));
            i += 1;
        }
        KeyPattern { head, tail, tail_mask, len }
    }

    /// Byte `i` of the name followed by its closing quote.
    const fn byte(name: &[u8], i: usize) -> u8 {
        if i < name.len() { name[i] } else { b'"' }
    }
}

/// The five keys, in [`Field::ALL`] order.
const KEYS: [KeyPattern; 5] = {
    let mut keys = [KeyPattern { head: [0; 2], tail: 0, tail_mask: 0, len: 0 }; 5];
    let mut i = 0;
    while i < 5 {
        keys[i] = KeyPattern::of(Field::ALL[i].name().as_bytes());
        i += 1;
    }
    // `Scanner::field` tells the keys apart by their first word: two
    // pairs that share one, and passenger_count.
    assert!(keys[0].head[0] == keys[1].head[0] && keys[2].head[0] == keys[3].head[0]);
    assert!(keys[0].head[0] != keys[2].head[0] && keys[4].head[0] != keys[0].head[0]);
    assert!(keys[4].head[0] != keys[2].head[0] && keys[0].head[1] != keys[1].head[1]);
    assert!(keys[2].head[1] != keys[3].head[1]);
    keys
};

/// A key with its quotes and the colon after it, `"name":`, as three
/// little-endian words, the last masked to the bytes it has (18 to 20 in
/// all).
#[derive(Debug, Clone, Copy)]
struct QuotedKey {
    words: [u64; 3],
    mask: u64,
    len: usize,
}

impl QuotedKey {
    const fn of(name: &[u8]) -> QuotedKey {
        let len = name.len() + 3;
        assert!(len >= 17 && len <= 24, "the words hold every field name");
        let mut words = [0u64; 3];
        let mut i = 0;
        while i < len {
            let byte = if i == 0 || i == len - 2 {
                b'"'
            } else if i == len - 1 {
                b':'
            } else {
                name[i - 1]
            };
            words[i / 8] |= (byte as u64) << (8 * (i % 8));
            i += 1;
        }
        let mask = if len >= 24 { u64::MAX } else { (1u64 << (8 * (len - 16))) - 1 };
        QuotedKey { words, mask, len }
    }
}

/// The five quoted keys, in [`Field::ALL`] order.
const QUOTED_KEYS: [QuotedKey; 5] = {
    let mut keys = [QuotedKey { words: [0; 3], mask: 0, len: 0 }; 5];
    let mut i = 0;
    while i < 5 {
        keys[i] = QuotedKey::of(Field::ALL[i].name().as_bytes());
        i += 1;
    }
    keys
};

/// The most digits a significand may have: 19 of them always fit a `u64`.
const MAX_DIGITS: usize = 19;

/// Powers of ten as integers, 10^0 to 10^19 (the largest below 2^64).
const POW10_U64: [u64; 20] = {
    let mut powers = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        powers[i] = powers[i - 1] * 10;
        i += 1;
    }
    powers
};

/// A byte repeated in every lane of a word.
const fn lanes(byte: u8) -> u64 {
    0x0101_0101_0101_0101 * byte as u64
}

/// The eight bytes at `at` as a little-endian word, if there are eight.
#[inline(always)]
fn word(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(*bytes.get(at..)?.first_chunk::<8>()?))
}

/// How many of a word's bytes, from its first, are ASCII digits (0 to 8).
/// A byte is a digit when it XOR `'0'` is at most 9: bit 7 of each lane of
/// `non_digit` says it is not (no sum carries into the next lane).
#[inline(always)]
fn leading_digits(word: u64) -> usize {
    let values = word ^ lanes(b'0');
    let non_digit = (values | ((values & lanes(0x7F)) + lanes(0x76))) & lanes(0x80);
    (non_digit.trailing_zeros() / 8) as usize
}

/// The value of a word's first `n` (1 to 8) bytes, all digits: shifted to
/// the top of the word, so the lanes below are leading zeros, and summed
/// pairwise in three multiplications (digits, pairs, quads).
#[inline(always)]
fn digits_value(word: u64, n: usize) -> u64 {
    let values = (word ^ lanes(b'0')) << (8 * (8 - n));
    let pairs = (values.wrapping_mul(10 * 256 + 1) >> 8) & 0x00FF_00FF_00FF_00FF;
    let quads = (pairs.wrapping_mul(100 * 65_536 + 1) >> 16) & 0x0000_FFFF_0000_FFFF;
    quads.wrapping_mul(10_000 * (1 << 32) + 1) >> 32
}

/// The largest significand the scanner converts: 2^53, below which every
/// integer is exact as an `f64`.
const MAX_EXACT: u64 = 1 << 53;

/// A number of the shapes nearly every value has, `-?D{1,7}` or
/// `-?D{1,7}.D{1,7}` not followed by an exponent, read from the word of its
/// integer digits and the word of its fraction: its value and length.
/// Anything else is `None`, for [`Scanner::any_number`], which also
/// refuses what JSON does.
/// With at most 14 digits the significand is below 2^53, and one division
/// by an exact power of ten rounds as serde_json's does.
#[inline(always)]
fn plain_number(bytes: &[u8]) -> Option<(f64, usize)> {
    match bytes.first_chunk::<17>() {
        Some(window) => plain_number_in(window),
        None => {
            // A body's last bytes: the same on a copy padded with a byte
            // that ends a number as the end of the body does.
            let mut window = [b' '; 17];
            window.get_mut(..bytes.len())?.copy_from_slice(bytes);
            plain_number_in(&window)
        }
    }
}

/// 10^0 to 10^7, then the same negated: [`plain_number_in`] divides by
/// (or, 10^0, multiplies by) the one of the number's sign.
const SIGNED_POW10: [[f64; 8]; 2] =
    [[1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7], [-1e0, -1e1, -1e2, -1e3, -1e4, -1e5, -1e6, -1e7]];

/// Which of the sixteen bytes are ASCII digits, one bit each (bit `i` for
/// byte `i`): SSE2, part of every x86_64, classifies them in four
/// instructions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn digit_mask(bytes: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_set1_epi8,
        _mm_sub_epi8,
    };
    // SAFETY: SSE2 is in the x86_64 baseline (every x86_64 CPU has it and
    // the target enables it), so these intrinsics' one requirement holds;
    // `_mm_loadu_si128` reads 16 bytes with no alignment requirement, and
    // `bytes` is exactly 16 readable bytes.
    unsafe {
        let v = _mm_loadu_si128(bytes.as_ptr().cast());
        // A byte is a digit when it minus `'0'` (wrapping) is at most 9.
        let values = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
        let digit = _mm_cmpeq_epi8(_mm_min_epu8(values, _mm_set1_epi8(9)), values);
        _mm_movemask_epi8(digit) as u32
    }
}

/// [`digit_mask`] byte by byte, for targets without SSE2.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn digit_mask(bytes: &[u8; 16]) -> u32 {
    let mut mask = 0;
    for (i, b) in bytes.iter().enumerate() {
        mask |= u32::from(b.is_ascii_digit()) << i;
    }
    mask
}

/// [`plain_number`] in a window that holds every byte it may read (a sign,
/// seven digits, a point and the word of the fraction): one length check
/// for them all. The digits of all sixteen bytes after the sign are told
/// at once ([`digit_mask`]), so the integer's and the fraction's lengths
/// are two bit counts.
#[inline(always)]
fn plain_number_in(window: &[u8; 17]) -> Option<(f64, usize)> {
    let negative = window[0] == b'-';
    let start = usize::from(negative);
    let digits = window.get(start..)?.first_chunk::<16>()?;
    // The non-digits, and a stop past the sixteenth byte.
    let non_digits = !digit_mask(digits) | (1 << 16);
    let n = non_digits.trailing_zeros() as usize;
    // A digit, and no leading zero before another digit.
    if n == 0 || n > 7 || (n > 1 && digits[0] == b'0') {
        return None;
    }
    let integer = u64::from_le_bytes(*digits.first_chunk::<8>()?);
    let after = digits[n];
    if after != b'.' {
        if after | 0x20 == b'e' {
            return None;
        }
        // Below 10^7, so exact as an `i64` and an `f64`; times ±1, exact.
        let value = digits_value(integer, n) as i64 as f64 * SIGNED_POW10[start][0];
        return Some((value, start + n));
    }
    let f = (non_digits >> (n + 1)).trailing_zeros() as usize;
    // n + 1 + f ≤ 15: the byte after the fraction is in the window.
    if f == 0 || f > 7 || digits[n + 1 + f] | 0x20 == b'e' {
        return None;
    }
    let fraction = u64::from_le_bytes(*digits.get(n + 1..)?.first_chunk::<8>()?);
    let significand = if n + f <= 8 {
        // Every digit fits one word (a coordinate's usually do): the
        // integer's, then the fraction's in place of the point, one sum.
        let integer_digits = integer & ((1 << (8 * n)) - 1);
        digits_value(integer_digits | (fraction << (8 * n)), n + f)
    } else {
        digits_value(integer, n) * POW10_U64[f] + digits_value(fraction, f)
    };
    // Below 10^14, so exact as an `i64` (whose conversion is one
    // instruction, an unsigned one's several) and as an `f64`; divided by
    // ±10^f, the sign in the divisor (rounding is symmetric: the same bits
    // as the division by 10^f negated).
    Some((significand as i64 as f64 / SIGNED_POW10[start][f], start + n + 1 + f))
}

/// The keys of a row in the order the row before had them (`fields`, a
/// permutation of the five), each as [`QuotedKey`], for [`plain_row`].
#[derive(Debug, Clone, Copy)]
struct Template {
    fields: [usize; 5],
    keys: [QuotedKey; 5],
}

impl Template {
    /// `order` must be a permutation of the five fields, as the order of a
    /// row [`Scanner::row`] accepted is.
    fn of(order: [usize; 5]) -> Template {
        Template { fields: order, keys: order.map(|field| QUOTED_KEYS[field % 5]) }
    }
}

/// Why [`plain_rows`] stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    /// At a row that is not plain (nothing of it consumed).
    NotPlain,
    /// After a row and the `]` that closes the array.
    Close,
    /// After a row followed by neither `,` nor `]` (whitespace, say).
    Row,
    /// After `limit` rows, the last one's `,` consumed.
    Limit,
}

/// The plain rows ([`plain_row`]) from `at`, at most `limit`, each directly
/// followed by `,` or `]`, pushed onto `trips`: how many, where it stopped
/// and why. A loop of its own, so that the batch's state is not carried
/// through every row.
#[inline(never)]
fn plain_rows(
    bytes: &[u8],
    mut at: usize,
    template: &Template,
    trips: &mut Vec<Trip>,
    limit: usize,
) -> (usize, usize, Stop) {
    let mut read = 0;
    while read < limit {
        let Some((trip, end)) = plain_row(bytes, at, template) else {
            return (read, at, Stop::NotPlain);
        };
        trips.push(trip);
        read += 1;
        at = end;
        match bytes.get(at) {
            Some(b',') => at += 1,
            Some(b']') => return (read, at + 1, Stop::Close),
            _ => return (read, at, Stop::Row),
        }
    }
    (read, at, Stop::Limit)
}

/// The most bytes [`plain_field`] reads: a key with its quotes and colon
/// (at most 20), a number's window (17) and the byte after it.
const FIELD_WINDOW: usize = 40;

/// The row at `at` when it is exactly what nearly every row is: `{`, then
/// the keys of `template` in its order, each as `"name":` and a plain
/// number ([`plain_number`]) and `,` (the last `}`), no whitespace; the
/// trip and where the row ends. `None` for anything else, including a
/// value a rule refuses: then [`Scanner::row`] reads the row, the general
/// way. No key to tell apart and no duplicate to look for, since the
/// template holds each field once. A function of its own, on locals only,
/// so that its few values stay in registers (inlined into the batch loop,
/// constants and positions were spilled and reloaded for every number).
#[inline(always)]
fn plain_row(bytes: &[u8], at: usize, template: &Template) -> Option<(Trip, usize)> {
    if *bytes.get(at)? != b'{' {
        return None;
    }
    let at = at + 1;
    let [k0, k1, k2, k3, k4] = &template.keys;
    // Unrolled: each key's words at a fixed place in the template.
    let (v0, at) = plain_field(bytes, at, k0, b',')?;
    let (v1, at) = plain_field(bytes, at, k1, b',')?;
    let (v2, at) = plain_field(bytes, at, k2, b',')?;
    let (v3, at) = plain_field(bytes, at, k3, b',')?;
    let (v4, at) = plain_field(bytes, at, k4, b'}')?;
    let mut values = [0.0; 5];
    for (field, value) in template.fields.into_iter().zip([v0, v1, v2, v3, v4]) {
        *values.get_mut(field)? = value;
    }
    Some((Trip::checked(values)?, at))
}

/// `"name":` of `key`, a plain number and `end` at `at`: the number and
/// where `end` ends. Every byte it reads is in one window of
/// [`FIELD_WINDOW`] bytes, checked once; a field nearer the body's end
/// takes [`plain_field_at_end`].
#[inline(always)]
fn plain_field(bytes: &[u8], at: usize, key: &QuotedKey, end: u8) -> Option<(f64, usize)> {
    let Some(window) = bytes.get(at..).and_then(<[u8]>::first_chunk::<FIELD_WINDOW>) else {
        return plain_field_at_end(bytes, at, key, end);
    };
    let word = |i: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&window[8 * i..8 * i + 8]);
        u64::from_le_bytes(word)
    };
    if word(0) != key.words[0] || word(1) != key.words[1] || word(2) & key.mask != key.words[2] {
        return None;
    }
    let number = window.get(key.len..)?.first_chunk::<17>()?;
    let (value, len) = plain_number_in(number)?;
    let after = key.len + len;
    (*window.get(after)? == end).then_some((value, at + after + 1))
}

/// [`plain_field`] within [`FIELD_WINDOW`] bytes of the body's end (a
/// body's last row or two).
#[cold]
#[inline(never)]
fn plain_field_at_end(bytes: &[u8], at: usize, key: &QuotedKey, end: u8) -> Option<(f64, usize)> {
    let chunk = bytes.get(at..)?.first_chunk::<24>()?;
    let word = |i: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&chunk[8 * i..8 * i + 8]);
        u64::from_le_bytes(word)
    };
    if word(0) != key.words[0] || word(1) != key.words[1] || word(2) & key.mask != key.words[2] {
        return None;
    }
    let at = at + key.len;
    let (value, len) = plain_number(bytes.get(at..)?)?;
    let at = at + len;
    (*bytes.get(at)? == end).then_some((value, at + 1))
}

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
        // Which key each position of a row held in the row before: rows
        // written by one serializer repeat their order.
        let mut order = [0, 1, 2, 3, 4];
        // The template of `order`, built when a second row comes (never
        // for a one-row body): the first row takes the general way.
        let mut template: Option<Template> = None;
        let mut learned = false;
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
            if learned {
                template = Some(Template::of(order));
                learned = false;
            }
            if let Some(template) = &template {
                // As many plain rows as the row limit and the next check
                // allow (at least one: both were checked above).
                let limit = until_check.min(max_rows - trips.len());
                let (read, at, stop) = plain_rows(self.bytes, self.at, template, &mut trips, limit);
                self.at = at;
                // Fewer than `limit` read unless `Limit`: the checks above
                // still pass for the row the general way takes below.
                until_check -= read;
                match stop {
                    Stop::Close => break,
                    Stop::Limit => continue,
                    Stop::NotPlain => {}
                    Stop::Row => match self.next()? {
                        b',' => continue,
                        b']' => break,
                        _ => return None,
                    },
                }
            }
            until_check -= 1;
            // The first row, another key order, whitespace or anything
            // else: the row the general way, whose order the next rows try.
            learned = true;
            let trip = self.row(&mut order)?;
            trips.push(trip);
            // The byte after a row, whitespace aside.
            let after = match self.bytes.get(self.at) {
                Some(&b @ (b',' | b']')) => {
                    self.at += 1;
                    b
                }
                _ => self.next()?,
            };
            match after {
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
    /// the trip rules. Each key is first tried as the one `order` says the
    /// row before had at its position, quotes and colon included, in three
    /// word comparisons; any other key, or whitespace around it, takes
    /// [`Scanner::field`], and its position is learned for the next row.
    fn row(&mut self, order: &mut [usize; 5]) -> Option<Trip> {
        self.expect(b'{')?;
        let mut values = [0.0; 5];
        let mut seen = 0u8;
        let mut position = 0;
        loop {
            let field = match order.get(position) {
                Some(&field) if self.quoted_key(field) => field,
                _ => {
                    let field = self.field()?;
                    self.expect(b':')?;
                    if let Some(learned) = order.get_mut(position) {
                        *learned = field;
                    }
                    field
                }
            };
            position += 1;
            if seen & (1 << field) != 0 {
                return None;
            }
            seen |= 1 << field;
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
        Trip::checked(values)
    }

    /// Consumes `"name":` of `field` when it is exactly what comes next
    /// (no whitespace inside; at least 24 bytes left, which every key but
    /// perhaps a body's very last one has).
    #[inline(always)]
    fn quoted_key(&mut self, field: usize) -> bool {
        let Some(key) = QUOTED_KEYS.get(field) else { return false };
        let Some(chunk) = self.bytes.get(self.at..).and_then(<[u8]>::first_chunk::<24>) else {
            return false;
        };
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&chunk[8 * i..8 * i + 8]);
            u64::from_le_bytes(bytes)
        };
        let matches = word(0) == key.words[0]
            && word(1) == key.words[1]
            && word(2) & key.mask == key.words[2];
        if matches {
            self.at += key.len;
        }
        matches
    }

    /// A key that is one of the five fields, as its index in
    /// [`Field::ALL`]; any other key (or one with an escape) fails. Every
    /// valid row has at least eighteen bytes after a key's opening quote
    /// (the shortest name, its quote, `:0}]}`).
    fn field(&mut self) -> Option<usize> {
        self.expect(b'"')?;
        let head = [word(self.bytes, self.at)?, word(self.bytes, self.at + 8)?];
        let tail = self.bytes.get(self.at + 16..self.at + 18)?;
        let tail = u16::from_le_bytes([tail[0], tail[1]]);
        // The first word tells `pickup_l…`, `dropoff_…` and `passenge…`
        // apart, the second which of a pair; then the whole key is checked.
        const PICKUP: u64 = KEYS[0].head[0];
        const DROPOFF: u64 = KEYS[2].head[0];
        let i = match head[0] {
            PICKUP if head[1] == KEYS[0].head[1] => 0,
            PICKUP => 1,
            DROPOFF if head[1] == KEYS[2].head[1] => 2,
            DROPOFF => 3,
            _ => 4,
        };
        let key = &KEYS[i];
        if head == key.head && tail & key.tail_mask == key.tail {
            self.at += key.len;
            return Some(i);
        }
        None
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

    /// A JSON number that converts exactly (see the module doc): the
    /// shapes of coordinates and counts from two words at most
    /// ([`plain_number`]), any other the long way.
    #[inline(always)]
    fn number(&mut self) -> Option<f64> {
        if let Some((value, len)) = self.bytes.get(self.at..).and_then(plain_number) {
            self.at += len;
            return Some(value);
        }
        self.any_number()
    }

    /// A JSON number that converts exactly, of any shape.
    fn any_number(&mut self) -> Option<f64> {
        if self.peek()? <= b' ' {
            self.skip_whitespace();
        }
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let integer_start = self.at;
        let (mut significand, integer_digits) = self.digit_run()?;
        // At least one digit, and no leading zeros in JSON.
        if integer_digits == 0 || (integer_digits > 1 && self.bytes[integer_start] == b'0') {
            return None;
        }
        let mut exponent: i32 = 0;
        if self.peek() == Some(b'.') {
            self.at += 1;
            let (fraction, count) = self.digit_run()?;
            // At least one digit, and at most MAX_DIGITS in all.
            if count == 0 || integer_digits + count > MAX_DIGITS {
                return None;
            }
            // At most 19 digits: no overflow.
            significand = significand * POW10_U64[count] + fraction;
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
            let (e, count) = self.digit_run()?;
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

    /// The run of digits at `at`, consumed: its value and length, eight
    /// digits a word while eight bytes are left; `None` past
    /// [`MAX_DIGITS`] (left to the parser), so that a value that wrapped
    /// is never used.
    #[inline(always)]
    fn digit_run(&mut self) -> Option<(u64, usize)> {
        let mut value: u64 = 0;
        let mut count = 0;
        while let Some(word) = word(self.bytes, self.at) {
            let n = leading_digits(word);
            if n > 0 {
                value = value.wrapping_mul(POW10_U64[n]).wrapping_add(digits_value(word, n));
                count += n;
                self.at += n;
            }
            if n < 8 {
                return (count <= MAX_DIGITS).then_some((value, count));
            }
            if count > MAX_DIGITS {
                return None;
            }
        }
        // Fewer than eight bytes left.
        while let Some(&b) = self.bytes.get(self.at) {
            if !b.is_ascii_digit() {
                break;
            }
            value = value.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
            count += 1;
            self.at += 1;
        }
        (count <= MAX_DIGITS).then_some((value, count))
    }

    /// The next byte after whitespace, consumed.
    ///
    /// Bodies seldom hold whitespace between tokens, so the byte at hand is
    /// tried first: every JSON whitespace byte is at most `b' '`.
    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        match self.bytes.get(self.at) {
            Some(&b) if b > b' ' => {
                self.at += 1;
                Some(b)
            }
            _ => self.next_after_whitespace(),
        }
    }

    #[inline(never)]
    fn next_after_whitespace(&mut self) -> Option<u8> {
        self.skip_whitespace();
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// Consumes `byte` after whitespace, or fails.
    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    #[inline(always)]
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

    /// The value of `text`, read alone (shorter than a word: the long way)
    /// and followed by the rest of a row (the words), which must agree.
    fn one_value(text: &str) -> Option<f64> {
        let alone = Scanner { bytes: text.as_bytes(), at: 0 }.number();
        let padded = format!("{text},\"pickup_latitude\":1}}");
        let mut scanner = Scanner { bytes: padded.as_bytes(), at: 0 };
        let in_row = scanner.number().filter(|_| scanner.peek() == Some(b','));
        assert_eq!(alone.map(f64::to_bits), in_row.map(f64::to_bits), "{text}");
        alone
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
        // Every length of run, on either side of the point, and the last
        // bytes of a body (fewer than eight left).
        for text in [
            "12345678",
            "123456789",
            "1234567890123456",
            "40.12345678",
            "40.123456789012",
            "-73.1234567890123",
            "0.0000000000000001",
            "1.00000000000000",
            "4.5e3",
            "40.704563e1",
            "-74.010984E-2",
            "1234567.1234567",
            "12345678.5",
            "1.12345678",
            "-0",
            "5",
            "-74",
        ] {
            let want: f64 = serde_json::from_str(text).unwrap();
            let got = one_value(text).unwrap_or_else(|| panic!("{text} not converted"));
            assert_eq!(got.to_bits(), want.to_bits(), "{text}");
        }
        // Beyond the exact range: left to serde_json.
        for text in
            ["9007199254740993", "1e23", "1e-23", "123456789012345678901", "1.0000000000000000000"]
        {
            assert_eq!(one_value(text), None, "{text}");
        }
    }

    /// The word helpers against the byte-by-byte reading they replace, on
    /// every count of leading digits and on bytes of every value.
    #[test]
    fn words_read_digits_as_bytes_do() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..100_000 {
            let mut bytes: [u8; 8] = next().to_le_bytes();
            // Mostly digits, so that every count is met often.
            let digits = round % 9;
            for b in &mut bytes[..digits] {
                *b = b'0' + (next() % 10) as u8;
            }
            if round % 3 == 0 && digits < 8 {
                bytes[digits] = [b'.', b',', b'e', b'/', b':', b'"', 0x30 | 0x80][round % 7];
            }
            let word = u64::from_le_bytes(bytes);
            let count = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            assert_eq!(leading_digits(word), count, "{bytes:?}");
            if count > 0 {
                let want = bytes[..count].iter().fold(0u64, |v, b| v * 10 + u64::from(b - b'0'));
                assert_eq!(digits_value(word, count), want, "{bytes:?}");
            }
        }
    }

    #[test]
    fn key_patterns_are_the_names_and_their_quote() {
        for (field, key) in Field::ALL.into_iter().zip(KEYS) {
            let quoted = format!("{}\"", field.name());
            assert_eq!(key.len, quoted.len());
            let mut bytes = quoted.into_bytes();
            bytes.resize(18, b'?');
            let head = [word(&bytes, 0).unwrap(), word(&bytes, 8).unwrap()];
            assert_eq!(head, key.head, "{field:?}");
            assert_eq!(u16::from_le_bytes([bytes[16], bytes[17]]) & key.tail_mask, key.tail);
        }
    }

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
