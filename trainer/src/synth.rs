//! Synthetic trips in the reference layout, for samples and scale tests.
//!
//! The generator writes New York–like trips: mostly Manhattan, some between
//! the boroughs, some to and from the airports; the fare is the metered
//! formula (a $2.50 flag drop plus about $1.56 per road kilometre) with
//! traffic noise, and JFK trips sometimes pay the flat rate. A few percent
//! of the rows are dirty in the ways the real data is (zero coordinates, no
//! passengers, absurd fares, identical ends, unparsable or short lines), so
//! cleaning is exercised too. Output is streamed (constant memory) and
//! depends only on the seed: the PRNG is our own SplitMix64, not a crate
//! whose stream could change between versions.

use std::io::{self, Write};

use model::geo::{EWR, JFK, KM_PER_DEG_LAT, KM_PER_DEG_LON_NYC, LGA, Point, manhattan_km};

use crate::civil::DateTime;
use crate::split::{splitmix64, unit_interval};

/// The header of the reference layout (the first column is a pandas index).
pub const HEADER: &str = ",key,fare_amount,pickup_datetime,pickup_longitude,pickup_latitude,\
                          dropoff_longitude,dropoff_latitude,passenger_count";

/// Fraction of rows made dirty on purpose.
pub const DIRTY_FRACTION: f64 = 0.03;

/// Dollars per road kilometre and the flag drop of the metered fare.
const PER_KM: f64 = 1.56;
const FLAG_DROP: f64 = 2.5;
/// Dollars per minute stopped or slow, and the share of trips with a detour.
const PER_MINUTE_WAITING: f64 = 0.35;
const DETOUR_SHARE: f64 = 0.06;
/// JFK ↔ Manhattan flat rate.
const JFK_FLAT: f64 = 52.0;

/// A deterministic pseudo-random stream (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.0);
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        out
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        unit_interval(self.next_u64())
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // (0, 1]
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A point in Manhattan: the island runs about 29° east of north from the
/// Battery; sample along and across that axis.
fn manhattan(rng: &mut Rng) -> Point {
    let along = rng.uniform(0.0, 14.0) * rng.uniform(0.3, 1.0); // km, denser downtown
    let across = rng.uniform(-1.6, 1.6);
    let (s, c) = (29f64.to_radians().sin(), 29f64.to_radians().cos());
    let north = along * c - across * s;
    let east = along * s + across * c;
    Point { lat: 40.7040 + north / KM_PER_DEG_LAT, lon: -74.0150 + east / KM_PER_DEG_LON_NYC }
}

/// A point anywhere in the four boroughs around Manhattan.
fn borough(rng: &mut Rng) -> Point {
    Point { lat: rng.uniform(40.57, 40.88), lon: rng.uniform(-74.04, -73.76) }
}

fn jitter(p: Point, rng: &mut Rng, km: f64) -> Point {
    Point {
        lat: p.lat + rng.normal() * km / KM_PER_DEG_LAT,
        lon: p.lon + rng.normal() * km / KM_PER_DEG_LON_NYC,
    }
}

/// One clean trip: (pickup, dropoff, passengers, fare).
fn trip(rng: &mut Rng) -> (Point, Point, u32, f64) {
    let kind = rng.unit();
    let (mut a, mut b) = if kind < 0.85 {
        // Within Manhattan: a log-normal trip length around 2.3 km.
        let a = manhattan(rng);
        let km = (0.85 + 0.7 * rng.normal()).exp().min(15.0);
        let angle = rng.uniform(0.0, std::f64::consts::TAU);
        let b = Point {
            lat: a.lat + km * angle.cos() / KM_PER_DEG_LAT,
            lon: a.lon + km * angle.sin() / KM_PER_DEG_LON_NYC,
        };
        (a, b)
    } else if kind < 0.95 {
        (manhattan(rng), borough(rng))
    } else {
        let airport = [JFK, JFK, LGA, EWR][rng.below(4) as usize];
        (jitter(airport, rng, 0.4), manhattan(rng))
    };
    if rng.unit() < 0.5 {
        std::mem::swap(&mut a, &mut b);
    }
    let road_km = manhattan_km(a, b) * rng.uniform(0.95, 1.15);
    // Time in traffic is billed too: an exponential wait that grows with
    // the trip, and now and then a detour or a jam that multiplies the fare.
    let waiting = -(1.0 - rng.unit()).ln() * PER_MINUTE_WAITING * (3.0 + 0.6 * road_km);
    let detour = if rng.unit() < DETOUR_SHARE { rng.uniform(1.3, 2.5) } else { 1.0 };
    let near = |p: Point, q: Point| (p.lat - q.lat).abs() < 0.02 && (p.lon - q.lon).abs() < 0.02;
    let fare = if (near(a, JFK) || near(b, JFK)) && rng.unit() < 0.6 {
        JFK_FLAT + rng.uniform(0.0, 6.0) // flat rate plus tolls
    } else {
        (FLAG_DROP + PER_KM * road_km) * detour + waiting
    };
    let passengers = match rng.unit() {
        u if u < 0.70 => 1,
        u if u < 0.85 => 2,
        u if u < 0.90 => 3,
        u if u < 0.93 => 4,
        u if u < 0.97 => 5,
        _ => 6,
    };
    (a, b, passengers, fare)
}

/// Writes one value as a fixed-point decimal with `places` digits, faster
/// than float formatting and exactly reproducible.
fn fixed(w: &mut impl Write, value: f64, places: u32) -> io::Result<()> {
    let scale = 10i64.pow(places);
    let scaled = (value * scale as f64).round() as i64;
    let sign = if scaled < 0 { "-" } else { "" };
    let abs = scaled.unsigned_abs();
    let scale = scale as u64;
    write!(w, "{sign}{}.{:0width$}", abs / scale, abs % scale, width = places as usize)
}

/// The first pickup time generated, 2009-01-01, and the span of the data
/// (to mid-2015), in seconds.
const FIRST_PICKUP: i64 = 1_230_768_000;
const PICKUP_SPAN: u64 = 205_000_000;

/// The ways a generated row is made dirty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dirt {
    Clean,
    /// The pickup has no GPS fix (0, 0).
    ZeroPickup,
    /// Neither end has a GPS fix.
    ZeroBoth,
    NoPassengers,
    AbsurdFare,
    SameLocation,
    /// A coordinate reads `N/A`.
    Unparsable,
    /// The line stops after the fare.
    ShortLine,
    /// passenger_count is empty.
    MissingPassengers,
}

const DIRT_KINDS: [Dirt; 8] = [
    Dirt::ZeroPickup,
    Dirt::ZeroBoth,
    Dirt::NoPassengers,
    Dirt::AbsurdFare,
    Dirt::SameLocation,
    Dirt::Unparsable,
    Dirt::ShortLine,
    Dirt::MissingPassengers,
];

/// One generated row before it is written.
struct Row {
    index: u64,
    when: DateTime,
    fare: f64,
    pickup: Point,
    dropoff: Point,
    passengers: u32,
    dirt: Dirt,
}

/// Writes the header and `rows` synthetic trips to `out`.
pub fn write_trips(out: &mut impl Write, rows: u64, seed: u64) -> io::Result<()> {
    let mut rng = Rng::new(seed);
    writeln!(out, "{HEADER}")?;
    for _ in 0..rows {
        let (pickup, dropoff, passengers, fare) = trip(&mut rng);
        let index = 1_000_000 + rng.below(54_000_000);
        let when = DateTime::from_unix(FIRST_PICKUP + rng.below(PICKUP_SPAN) as i64);
        let dirt = if rng.unit() < DIRTY_FRACTION {
            DIRT_KINDS[rng.below(DIRT_KINDS.len() as u64) as usize]
        } else {
            Dirt::Clean
        };
        let mut row = Row { index, when, fare, pickup, dropoff, passengers, dirt };
        match dirt {
            Dirt::ZeroPickup => row.pickup = Point { lat: 0.0, lon: 0.0 },
            Dirt::ZeroBoth => {
                row.pickup = Point { lat: 0.0, lon: 0.0 };
                row.dropoff = row.pickup;
            }
            Dirt::NoPassengers => row.passengers = 0,
            Dirt::AbsurdFare => row.fare = [0.0, -3.5, 450.0, 1.0][rng.below(4) as usize],
            Dirt::SameLocation => row.dropoff = row.pickup,
            _ => {}
        }
        write_row(out, &row)?;
    }
    out.flush()
}

fn write_row(out: &mut impl Write, row: &Row) -> io::Result<()> {
    let t = &row.when;
    write!(out, "{},{:02}:{:02}.0,", row.index, t.minute, t.second)?;
    fixed(out, row.fare, 2)?;
    if row.dirt == Dirt::ShortLine {
        return writeln!(out);
    }
    write!(
        out,
        ",{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC,",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )?;
    if row.dirt == Dirt::Unparsable {
        out.write_all(b"N/A")?;
    } else {
        fixed(out, row.pickup.lon, 6)?;
    }
    for v in [row.pickup.lat, row.dropoff.lon, row.dropoff.lat] {
        out.write_all(b",")?;
        fixed(out, v, 6)?;
    }
    if row.dirt == Dirt::MissingPassengers {
        writeln!(out, ",")
    } else {
        writeln!(out, ",{}", row.passengers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(rows: u64, seed: u64) -> String {
        let mut buf = Vec::new();
        write_trips(&mut buf, rows, seed).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn the_stream_of_a_seed_never_changes() {
        // Pinned: samples and benchmarks named by (rows, seed) stay the same
        // files across releases; a change to the generator must change this
        // on purpose.
        use sha2::{Digest, Sha256};
        let digest = format!("{:x}", Sha256::digest(generate(500, 9)));
        assert_eq!(digest, "9c0f7f0839310d650b2adbf0dd4bcc8b86650bcbc89cb70bf9aed1293bef2270");
        assert_ne!(generate(500, 9), generate(500, 10));
    }

    #[test]
    fn reference_layout_and_dirty_share() {
        let text = generate(20_000, 1);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 20_000);
        let well_formed = rows.iter().filter(|l| l.split(',').count() == 9).count();
        let short = rows.len() - well_formed;
        // ShortLine is one dirt kind in eight of 3%.
        assert!((40..120).contains(&short), "{short}");
        let zero = rows.iter().filter(|l| l.contains(",0.000000,0.000000,")).count();
        assert!((80..220).contains(&zero), "{zero}");
    }

    #[test]
    fn fixed_point_formatting() {
        let mut buf = Vec::new();
        for (v, places) in [(-73.99981689, 6), (7.5, 2), (-0.25, 2), (0.0, 6), (40.7, 6)] {
            fixed(&mut buf, v, places).unwrap();
            buf.push(b' ');
        }
        assert_eq!(String::from_utf8(buf).unwrap(), "-73.999817 7.50 -0.25 0.000000 40.700000 ");
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut rng = Rng::new(3);
        let n = 100_000;
        let mean = (0..n).map(|_| rng.unit()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        let z: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let m = z.iter().sum::<f64>() / n as f64;
        let var = z.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.02 && (var - 1.0).abs() < 0.02, "{m} {var}");
    }
}
