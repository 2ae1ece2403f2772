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
        Ok(Columns { positions, width: names.len() })
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
}

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
