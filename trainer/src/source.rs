//! Reading the trips CSV: finding the columns by name and hashing the file
//! while it streams past, so the artifact's lineage names exactly the bytes
//! it was trained on without a second read.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use csv::ByteRecord;
use model::Field;
use sha2::{Digest, Sha256};

use crate::clean::RawValues;
use crate::error::TrainError;

/// The target column.
pub const FARE_COLUMN: &str = "fare_amount";

/// The columns the trainer needs, in [`RawValues`] order.
pub const REQUIRED: [&str; 6] = [
    Field::PickupLatitude.name(),
    Field::PickupLongitude.name(),
    Field::DropoffLatitude.name(),
    Field::DropoffLongitude.name(),
    Field::PassengerCount.name(),
    FARE_COLUMN,
];

/// Where the required columns sit in this file's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    positions: [usize; 6],
    /// `(position, slot)` of each required column, by position: the order a
    /// record's fields are met in when scanning it.
    by_position: [(usize, usize); 6],
    /// The header's field count: a record with another count is malformed.
    width: usize,
}

impl Columns {
    /// Maps the header by name. Names are compared after trimming blanks and
    /// a byte-order mark; other columns (the index, key, pickup time) are
    /// ignored, and their order does not matter.
    pub fn from_header(path: &Path, header: &ByteRecord) -> Result<Columns, TrainError> {
        let names: Vec<String> = header
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim_start_matches('\u{feff}').trim().to_owned())
            .collect();
        let mut positions = [0; 6];
        for (slot, column) in positions.iter_mut().zip(REQUIRED) {
            *slot = names.iter().position(|n| n == column).ok_or_else(|| {
                TrainError::MissingColumn {
                    path: path.to_owned(),
                    column,
                    found: names
                        .iter()
                        .map(|n| if n.is_empty() { "(unnamed)".to_owned() } else { n.clone() })
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
        }
        let mut by_position: [(usize, usize); 6] = std::array::from_fn(|i| (positions[i], i));
        by_position.sort_unstable();
        Ok(Columns { positions, by_position, width: names.len() })
    }

    /// The required values of a record, or `None` when the record does not
    /// have the header's number of fields.
    pub fn values<'r>(&self, record: &'r ByteRecord) -> Option<RawValues<'r>> {
        if record.len() != self.width {
            return None;
        }
        let mut out: RawValues<'r> = [&[]; 6];
        for (slot, &at) in out.iter_mut().zip(&self.positions) {
            *slot = record.get(at)?;
        }
        Some(out)
    }

    /// Calls `f(values, line, key)` for each record of `block`, a run of
    /// whole records that starts on file line `first_line`, in order.
    /// `values` is what [`Columns::values`] gives for the record; `line` is
    /// the file line the record starts on (for messages); `key` is the record's
    /// line key: the line the csv crate's reader is on after the record (for
    /// a record ended by a line feed, the line after it), which the split
    /// hashes. Blank lines are skipped, as the csv crate skips them.
    ///
    /// Blocks with no quote, no carriage return and no byte-order mark (all
    /// of a normal file) take a scanner that splits on commas and line feeds
    /// eight bytes at a time and copies nothing; it gives exactly what the
    /// csv crate gives for such bytes, several times faster. Any other
    /// block goes through the csv crate.
    pub fn for_each_record(
        &self,
        block: &[u8],
        first_line: u64,
        f: impl for<'r> FnMut(Option<RawValues<'r>>, u64, u64),
    ) {
        let plain = memchr::memchr2(b'"', b'\r', block).is_none() && !block.starts_with(BOM);
        if plain {
            self.scan_plain(block, first_line, f);
        } else {
            self.read_csv(block, first_line, f);
        }
    }

    /// The fast path of [`Columns::for_each_record`]: no quoting to undo,
    /// so a comma always ends a field and a line feed always ends a record.
    fn scan_plain<'b>(
        &self,
        block: &'b [u8],
        first_line: u64,
        mut f: impl for<'r> FnMut(Option<RawValues<'r>>, u64, u64),
    ) {
        let mut values: RawValues<'b> = [&[]; 6];
        // Fields of the current record so far, the next required column to
        // meet (an index into `by_position`), and where things start.
        let (mut fields, mut wanted) = (0usize, 0usize);
        let (mut record_start, mut field_start) = (0usize, 0usize);
        let mut line = first_line;
        let field = |fields: usize, wanted: &mut usize, values: &mut RawValues<'b>, text| {
            let required = self.by_position.get(*wanted).filter(|&&(at, _)| at == fields);
            if let Some(&(_, slot)) = required {
                values[slot] = text;
                *wanted += 1;
            }
        };
        for at in Separators::new(block) {
            field(fields, &mut wanted, &mut values, &block[field_start..at]);
            fields += 1;
            field_start = at + 1;
            if block[at] == b'\n' {
                line += 1;
                if at > record_start {
                    // All required columns lie below the width, so a record
                    // of the right width has set every value.
                    f((fields == self.width).then_some(values), line - 1, line);
                }
                (fields, wanted, record_start) = (0, 0, at + 1);
            }
        }
        // A last record without a line feed.
        if record_start < block.len() {
            field(fields, &mut wanted, &mut values, &block[field_start..]);
            f((fields + 1 == self.width).then_some(values), line, line);
        }
    }

    /// The general path of [`Columns::for_each_record`]: the csv crate.
    fn read_csv(
        &self,
        block: &[u8],
        first_line: u64,
        mut f: impl for<'r> FnMut(Option<RawValues<'r>>, u64, u64),
    ) {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(64 * 1024)
            .from_reader(block);
        let mut record = ByteRecord::new();
        loop {
            // Reading from memory with flexible records cannot fail; should
            // it ever, the rest of the block counts as one malformed record.
            let (ok, more) = match reader.read_byte_record(&mut record) {
                Ok(true) => (true, true),
                Ok(false) => break,
                Err(_) => (false, false),
            };
            let key = first_line + reader.position().line() - 1;
            // The record's position is where the reader stood before it,
            // blank lines the reader then skipped included: step over them.
            let start = record.position().filter(|_| ok).map(|p| {
                let rest = usize::try_from(p.byte()).ok().and_then(|b| block.get(b..));
                let blank =
                    rest.unwrap_or_default().iter().take_while(|b| matches!(b, b'\r' | b'\n'));
                let skipped = blank.filter(|b| **b == b'\n').count() as u64;
                first_line + p.line() - 1 + skipped
            });
            f(if ok { self.values(&record) } else { None }, start.unwrap_or(key), key);
            if !more {
                break;
            }
        }
    }
}

/// The offsets of the commas and line feeds of a block, in order.
///
/// Fields are short (a hit every ten bytes or so), which defeats the setup
/// cost of a vector search per hit; this tests eight bytes per step in a
/// `u64` (SWAR) and walks the hits' bits.
struct Separators<'b> {
    bytes: &'b [u8],
    /// Offset of the word `hits` describes.
    base: usize,
    /// One high bit per separator byte of that word.
    hits: u64,
}

impl<'b> Separators<'b> {
    fn new(bytes: &'b [u8]) -> Self {
        let mut s = Separators { bytes, base: 0, hits: 0 };
        s.hits = s.word_hits();
        s
    }

    /// Separator bits of the (zero-padded) word at `base`.
    fn word_hits(&self) -> u64 {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
        /// The high bit of each zero byte of `x`, exactly (no false
        /// positives, unlike the shorter has-a-zero-byte test).
        fn zero_bytes(x: u64) -> u64 {
            !(((x & LOW7) + LOW7) | x | LOW7)
        }
        let rest = self.bytes.get(self.base..).unwrap_or_default();
        let word: [u8; 8] = match rest.first_chunk() {
            Some(word) => *word,
            None => {
                // The last few bytes; zeros are no separator.
                let mut word = [0u8; 8];
                word[..rest.len()].copy_from_slice(rest);
                word
            }
        };
        // Little-endian: byte i of the word is bits 8i..8i+8.
        let w = u64::from_le_bytes(word);
        zero_bytes(w ^ (ONES * u64::from(b','))) | zero_bytes(w ^ (ONES * u64::from(b'\n')))
    }
}

impl Iterator for Separators<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.hits == 0 {
            self.base += 8;
            if self.base >= self.bytes.len() {
                return None;
            }
            self.hits = self.word_hits();
        }
        let at = self.base + (self.hits.trailing_zeros() / 8) as usize;
        self.hits &= self.hits - 1;
        Some(at)
    }
}

/// The UTF-8 byte-order mark, which the csv crate strips from the start of
/// its input.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A reader that feeds every byte through SHA-256 and counts them.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Reads whatever is left, then returns the hex SHA-256 of everything.
    pub fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("{:x}", self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads a CSV file in blocks that end on record boundaries, so each block
/// can be parsed on its own (in parallel) by a CSV reader. A boundary is a
/// line feed outside double quotes: RFC 4180 quoting, as the csv crate
/// parses it, so a quoted field spanning lines is never cut. Each block
/// comes with the file line it starts on, for error messages and the split.
pub struct BlockReader<R> {
    inner: HashingReader<R>,
    /// Bytes read past the last boundary, carried into the next block.
    carry: Vec<u8>,
    next_line: u64,
    eof: bool,
    block_size: usize,
}

impl<R: Read> BlockReader<R> {
    pub fn new(inner: R, block_size: usize) -> Self {
        BlockReader {
            inner: HashingReader::new(inner),
            carry: Vec::new(),
            next_line: 1,
            eof: false,
            block_size: block_size.max(1),
        }
    }

    /// Bytes read from the file so far.
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read()
    }

    /// Appends up to `want` more bytes to `buf`; notes end of file.
    fn fill(&mut self, buf: &mut Vec<u8>, want: usize) -> io::Result<()> {
        let got = (&mut self.inner).take(want as u64).read_to_end(buf)?;
        if got < want {
            self.eof = true;
        }
        Ok(())
    }

    /// Reads the first record (the header). `None` for a file with nothing
    /// but blanks in it.
    pub fn header(&mut self) -> io::Result<Option<ByteRecord>> {
        let mut buf = std::mem::take(&mut self.carry);
        let end = loop {
            if let Some(end) = record_end(&buf, Boundary::First) {
                break end;
            }
            if self.eof {
                break buf.len();
            }
            self.fill(&mut buf, self.block_size)?;
        };
        self.carry = buf.split_off(end);
        self.next_line += count_lines(&buf);
        if buf.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let mut reader =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(&buf[..]);
        let mut record = ByteRecord::new();
        reader.read_byte_record(&mut record).map_err(io::Error::other)?;
        Ok(Some(record))
    }

    /// Fills `out` with the next block of whole records and returns the
    /// line it starts on, or `None` at the end of the file.
    pub fn next_block(&mut self, out: &mut Vec<u8>) -> io::Result<Option<u64>> {
        out.clear();
        out.append(&mut self.carry);
        let mut target = self.block_size;
        loop {
            if !self.eof && out.len() < target {
                self.fill(out, target - out.len())?;
            }
            let cut = if self.eof { Some(out.len()) } else { record_end(out, Boundary::Last) };
            match cut {
                Some(0) if self.eof => return Ok(None),
                Some(cut) => {
                    self.carry.extend_from_slice(&out[cut..]);
                    out.truncate(cut);
                    let first = self.next_line;
                    self.next_line += count_lines(out);
                    return Ok(Some(first));
                }
                // One record longer than a block: read on.
                None => target = out.len() + self.block_size,
            }
        }
    }

    /// Reads whatever is left and returns the hex SHA-256 of the file.
    pub fn finish(self) -> io::Result<String> {
        self.inner.finish()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Boundary {
    First,
    Last,
}

/// The offset just past the first or last line feed outside quotes.
fn record_end(buf: &[u8], which: Boundary) -> Option<usize> {
    if memchr::memchr(b'"', buf).is_none() {
        let at = match which {
            Boundary::First => memchr::memchr(b'\n', buf),
            Boundary::Last => memchr::memrchr(b'\n', buf),
        };
        return at.map(|i| i + 1);
    }
    // Quotes toggle the state; an escaped quote ("") toggles twice.
    let mut quoted = false;
    let mut last = None;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => {
                if which == Boundary::First {
                    return Some(i + 1);
                }
                last = Some(i + 1);
            }
            _ => {}
        }
    }
    last
}

fn count_lines(buf: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', buf).count() as u64
}

/// An open trips file, positioned after its header.
pub struct TripsFile {
    pub blocks: BlockReader<File>,
    pub columns: Columns,
    pub size: u64,
}

/// Opens a trips CSV and maps its header.
pub fn open(path: &Path, block_size: usize) -> Result<TripsFile, TrainError> {
    let open_err = |source| TrainError::Open { path: path.to_owned(), source };
    let file = File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    let mut blocks = BlockReader::new(file, block_size);
    let header = blocks
        .header()
        .map_err(|e| TrainError::Read { path: path.to_owned(), line: 1, message: e.to_string() })?
        .ok_or_else(|| TrainError::Empty { path: path.to_owned() })?;
    let columns = Columns::from_header(path, &header)?;
    Ok(TripsFile { blocks, columns, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> ByteRecord {
        ByteRecord::from(names.to_vec())
    }

    #[test]
    fn finds_columns_in_any_order() {
        let reference = header(&[
            "",
            "key",
            "fare_amount",
            "pickup_datetime",
            "pickup_longitude",
            "pickup_latitude",
            "dropoff_longitude",
            "dropoff_latitude",
            "passenger_count",
        ]);
        let c = Columns::from_header(Path::new("x.csv"), &reference).unwrap();
        assert_eq!(c.positions, [5, 4, 7, 6, 8, 2]);
        let shuffled = header(&[
            "\u{feff}passenger_count",
            " fare_amount ",
            "dropoff_latitude",
            "dropoff_longitude",
            "pickup_latitude",
            "pickup_longitude",
        ]);
        let c = Columns::from_header(Path::new("x.csv"), &shuffled).unwrap();
        assert_eq!(c.positions, [4, 5, 2, 3, 0, 1]);
        let row = ByteRecord::from(vec!["1", "7.5", "40.72", "-73.99", "40.73", "-74.0"]);
        let v = c.values(&row).unwrap();
        assert_eq!(v, [&b"40.73"[..], b"-74.0", b"40.72", b"-73.99", b"1", b"7.5"]);
        assert!(c.values(&ByteRecord::from(vec!["1", "2"])).is_none());
    }

    /// A record as the tests compare it: owned values, line, key.
    type Seen = (Option<Vec<Vec<u8>>>, u64, u64);

    /// Every record, by the given path.
    fn records(c: &Columns, block: &[u8], plain: bool) -> Vec<Seen> {
        let mut out = Vec::new();
        let mut f = |v: Option<RawValues<'_>>, line, key| {
            out.push((v.map(|v| v.iter().map(|f| f.to_vec()).collect()), line, key));
        };
        if plain {
            c.scan_plain(block, 7, &mut f)
        } else {
            c.read_csv(block, 7, &mut f)
        }
        out
    }

    /// The fast scanner must give exactly what the csv crate gives on the
    /// blocks it takes: same records, values, widths and line keys, blank
    /// lines and a last line without a line feed included.
    #[test]
    fn plain_scanner_agrees_with_the_csv_crate() {
        let c = Columns::from_header(
            Path::new("x.csv"),
            &header(&[
                "",
                "fare_amount",
                "pickup_longitude",
                "pickup_latitude",
                "x",
                "dropoff_longitude",
                "dropoff_latitude",
                "passenger_count",
            ]),
        )
        .unwrap();
        let alphabet = b",,,,\n\n\n0123456789.- ab";
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut fixed: Vec<Vec<u8>> = [
            "",
            "\n",
            "\n\n1,2,3,4,5,6,7,8\n\n",
            "1,2,3,4,5,6,7,8",
            "1,2,3,4,5,6,7,8\n1,2,3,4,5,6,7,\n1,2,3,4,5,6,7,8,9\n1,2\n,,,,,,,\n ",
            "9,7.5,-73.99,40.73,k,-73.98,40.75,1\n9,7.5,-73.99,40.73,k,-73.98,40.75,1,",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for _ in 0..3000 {
            let len = (x % 200) as usize;
            let block: Vec<u8> = (0..len)
                .map(|_| {
                    x = crate::split::splitmix64(x);
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            fixed.push(block);
        }
        for block in &fixed {
            assert_eq!(records(&c, block, true), records(&c, block, false), "{block:?}");
        }
    }

    #[test]
    fn separators_are_every_comma_and_line_feed() {
        let text = b"ab,c\n,,0123456789,x\n\nlast,";
        for start in 0..text.len() {
            let block = &text[start..];
            let want: Vec<usize> =
                (0..block.len()).filter(|&i| b",\n".contains(&block[i])).collect();
            assert_eq!(Separators::new(block).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn missing_column_is_named() {
        let h = header(&["", "fare_amount", "pickup_latitude", "pickup_longitude"]);
        let err = Columns::from_header(Path::new("data/x.csv"), &h).unwrap_err().to_string();
        assert!(err.contains("data/x.csv"), "{err}");
        assert!(err.contains("missing column `dropoff_latitude`"), "{err}");
        assert!(err.contains("(unnamed), fare_amount"), "{err}");
    }

    #[test]
    fn hashes_what_it_reads() {
        let mut r = HashingReader::new(&b"abc"[..]);
        let mut first = [0u8; 1];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.bytes_read(), 1);
        assert_eq!(
            r.finish().unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn blocks_of(text: &str, block_size: usize) -> (Option<ByteRecord>, Vec<(u64, String)>) {
        let mut r = BlockReader::new(text.as_bytes(), block_size);
        let header = r.header().unwrap();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(line) = r.next_block(&mut buf).unwrap() {
            out.push((line, String::from_utf8(buf.clone()).unwrap()));
        }
        let whole = sha2::Sha256::digest(text.as_bytes());
        assert_eq!(r.finish().unwrap(), format!("{whole:x}"));
        (header, out)
    }

    #[test]
    fn blocks_end_on_record_boundaries() {
        let text = "a,b\n1,2\n3,4\n5,6\n7,8";
        for size in [1, 2, 4, 7, 100] {
            let (header, blocks) = blocks_of(text, size);
            assert_eq!(header.unwrap(), ByteRecord::from(vec!["a", "b"]));
            let joined: String = blocks.iter().map(|(_, b)| b.as_str()).collect();
            assert_eq!(joined, "1,2\n3,4\n5,6\n7,8", "size {size}");
            for (line, block) in &blocks {
                assert!(block.ends_with('\n') || block.ends_with('8'), "{block:?}");
                let first = block.lines().next().unwrap();
                let expected = text.lines().nth(*line as usize - 1).unwrap();
                assert_eq!(first, expected, "size {size}");
            }
        }
    }

    #[test]
    fn quoted_line_feeds_do_not_split() {
        let text = "a,b\n\"x\ny\",2\n\"he said \"\"hi\"\"\n\",4\n5,6\n";
        for size in [1, 3, 8, 100] {
            let (_, blocks) = blocks_of(text, size);
            let lines: Vec<u64> = blocks.iter().map(|(l, _)| *l).collect();
            for (_, block) in &blocks {
                assert_eq!(block.matches('"').count() % 2, 0, "size {size}: {block:?}");
            }
            assert_eq!(lines.first(), Some(&2));
            if size == 1 {
                assert_eq!(lines, vec![2, 4, 6]);
            }
        }
    }

    #[test]
    fn empty_and_blank_files_have_no_header() {
        assert_eq!(blocks_of("", 4).0, None);
        assert_eq!(blocks_of(" \n\n", 4).0, None);
        let (header, blocks) = blocks_of("a,b", 4);
        assert_eq!(header.unwrap().len(), 2);
        assert!(blocks.is_empty());
    }
}
