//! Admission of predict requests by what they cost, not by how many there
//! are.
//!
//! A request's cost — the memory its body, its trips and its answer may
//! take — is known from its declared `Content-Length` before a byte of the
//! body is read ([`Cost::of`]); a chunked body, whose length nobody knows
//! yet, is charged as a body at `--max-body-bytes` and gives back the
//! difference once read. A request is admitted while its cost fits in the
//! budget (`--prediction-budget-bytes`) and keeps its share until its
//! answer has been taken ([`Reservation`]), so the memory of predictions is
//! bounded by the budget whatever the mix of sizes.
//!
//! Small requests (a declared body of at most [`SMALL_BODY_BYTES`]) may use
//! the whole budget and never wait: they are admitted at once or shed.
//! Large ones may use all of it but `--small-reserve-bytes`, so however
//! many large batches arrive small requests still find room. When that is
//! full, large requests wait in line, first come first served, at most
//! `--max-waiting-predictions` of them and each for at most
//! `--admission-wait-secs`; past either bound they are shed (503
//! `overloaded`). A waiting request costs no more than its connection
//! does: its body stays unread (in the kernel's buffers) until it is
//! admitted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::limits::{Limits, SMALL_BODY_BYTES};

/// The fewest bytes a row can take in a body:
/// `{"pickup_latitude":0,…,"passenger_count":0}` with the shortest value
/// of each field. A body of n bytes holds at most n / 105 + 1 rows.
pub const MIN_ROW_BYTES: usize = 105;

/// The most memory one row may take once parsed: its trip (40 B, in a
/// vector up to twice as long as needed), its prediction (8 B), its index
/// in `out_of_area` (8 B, doubling: 16) and its share of the answer's JSON
/// (at most 31 B, doubling: 62), rounded up.
pub const ROW_BYTES: usize = 168;

/// What any request may take whatever its size: up to 100 error details
/// and the answer listing them (~20 KiB), and its own state.
pub const REQUEST_BYTES: usize = 32 * 1024;

/// The memory a request with a body of `body_bytes` may take in all: the
/// body itself (one buffer), plus [`ROW_BYTES`] for each row it can hold,
/// plus [`REQUEST_BYTES`].
pub fn body_cost(body_bytes: usize, max_rows: usize) -> usize {
    let rows = (body_bytes / MIN_ROW_BYTES + 1).min(max_rows);
    body_bytes.saturating_add(rows.saturating_mul(ROW_BYTES)).saturating_add(REQUEST_BYTES)
}

/// Which rules a request is admitted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Admitted from the whole budget, at once or never.
    Small,
    /// Admitted from the budget less the small reserve, in line.
    Large,
}

/// What a request will cost, decided from its head alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub bytes: usize,
    pub class: Class,
}

impl Cost {
    /// The cost of a request that declares `declared` body bytes (none:
    /// chunked), which the caller has checked against `--max-body-bytes`.
    pub fn of(declared: Option<u64>, limits: &Limits) -> Cost {
        let rows = limits.max_batch_rows;
        match declared.map(|n| usize::try_from(n).unwrap_or(usize::MAX)) {
            Some(n) if n <= SMALL_BODY_BYTES => {
                Cost { bytes: body_cost(n, rows), class: Class::Small }
            }
            Some(n) => {
                Cost { bytes: body_cost(n.min(limits.max_body_bytes), rows), class: Class::Large }
            }
            None => Cost::largest(limits),
        }
    }

    /// The most one request may cost: a body at the size limit.
    pub fn largest(limits: &Limits) -> Cost {
        Cost { bytes: body_cost(limits.max_body_bytes, limits.max_batch_rows), class: Class::Large }
    }
}

/// Why a request was not admitted; every one is answered 503 `overloaded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Shed {
    #[error("no room in the budget for a small request")]
    Full,
    #[error("the line of large requests waiting for budget is full")]
    LineFull,
    #[error("no room in the budget within the admission wait")]
    Waited,
}

/// The gauges admission keeps current, registered by `metrics`.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// The configured budget, for dashboards to divide by.
    pub budget_bytes: Gauge,
    pub used_bytes: Gauge,
    pub waiting: Gauge,
}

/// The budget, what holds it, and the line of large requests.
#[derive(Debug)]
pub struct Admission {
    budget: usize,
    large_budget: usize,
    max_waiting: usize,
    max_wait: Duration,
    ledger: Mutex<Ledger>,
    gauges: Gauges,
}

#[derive(Debug, Default)]
struct Ledger {
    used: usize,
    used_large: usize,
    line: VecDeque<Waiter>,
    next_ticket: u64,
}

/// A large request in line; only the first is woken when budget frees.
#[derive(Debug)]
struct Waiter {
    ticket: u64,
    wake: Arc<Notify>,
}

impl Ledger {
    fn fits(&self, cost: Cost, admission: &Admission) -> bool {
        let total = self.used.saturating_add(cost.bytes) <= admission.budget;
        match cost.class {
            Class::Small => total,
            Class::Large => {
                total && self.used_large.saturating_add(cost.bytes) <= admission.large_budget
            }
        }
    }

    fn wake_first(&self) {
        if let Some(first) = self.line.front() {
            first.wake.notify_one();
        }
    }
}

impl Admission {
    pub fn new(limits: &Limits, gauges: Gauges) -> Arc<Admission> {
        let budget = limits.prediction_budget_bytes;
        gauges.budget_bytes.set(i64::try_from(budget).unwrap_or(i64::MAX));
        Arc::new(Admission {
            budget,
            large_budget: limits.large_budget_bytes(),
            max_waiting: limits.max_waiting_predictions,
            max_wait: limits.admission_wait,
            ledger: Mutex::new(Ledger::default()),
            gauges,
        })
    }

    /// Admits a request of `cost`, at once or (a large one) after waiting
    /// in line, or says why not.
    pub async fn admit(self: &Arc<Self>, cost: Cost) -> Result<Reservation, Shed> {
        let (ticket, wake) = {
            let mut ledger = self.lock();
            // A large request may not pass those already waiting.
            let may_go = cost.class == Class::Small || ledger.line.is_empty();
            if may_go && ledger.fits(cost, self) {
                return Ok(self.grant(&mut ledger, cost));
            }
            if cost.class == Class::Small {
                return Err(Shed::Full);
            }
            if ledger.line.len() >= self.max_waiting {
                return Err(Shed::LineFull);
            }
            let ticket = ledger.next_ticket;
            ledger.next_ticket += 1;
            let wake = Arc::new(Notify::new());
            ledger.line.push_back(Waiter { ticket, wake: wake.clone() });
            self.gauges.waiting.set(gauge_value(ledger.line.len()));
            (ticket, wake)
        };
        // Leaves the line however the wait ends: admitted, out of time, or
        // dropped with its request (the client left).
        let _place = Place { admission: self, ticket };
        let turn = async {
            loop {
                {
                    let mut ledger = self.lock();
                    let first = ledger.line.front().is_some_and(|w| w.ticket == ticket);
                    if first && ledger.fits(cost, self) {
                        ledger.line.pop_front();
                        self.gauges.waiting.set(gauge_value(ledger.line.len()));
                        let reservation = self.grant(&mut ledger, cost);
                        // The next in line may fit in what is left.
                        ledger.wake_first();
                        return reservation;
                    }
                }
                // notify_one keeps a wake-up sent before this wait begins.
                wake.notified().await;
            }
        };
        tokio::time::timeout(self.max_wait, turn).await.map_err(|_| Shed::Waited)
    }

    /// Bytes of the budget held by admitted requests.
    pub fn used_bytes(&self) -> usize {
        self.lock().used
    }

    /// Large requests waiting in line.
    pub fn waiting(&self) -> usize {
        self.lock().line.len()
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget
    }

    fn grant(self: &Arc<Self>, ledger: &mut Ledger, cost: Cost) -> Reservation {
        ledger.used += cost.bytes;
        if cost.class == Class::Large {
            ledger.used_large += cost.bytes;
        }
        self.gauges.used_bytes.set(gauge_value(ledger.used));
        Reservation { admission: self.clone(), bytes: cost.bytes, class: cost.class }
    }

    fn release(&self, class: Class, bytes: usize) {
        let mut ledger = self.lock();
        ledger.used -= bytes;
        if class == Class::Large {
            ledger.used_large -= bytes;
        }
        self.gauges.used_bytes.set(gauge_value(ledger.used));
        ledger.wake_first();
    }

    /// Nothing panics while holding the lock, and the ledger is valid
    /// between any two statements that do: a poisoned lock is still good.
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A request's place in line, given up when dropped.
struct Place<'a> {
    admission: &'a Admission,
    ticket: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut ledger = self.admission.lock();
        let Some(at) = ledger.line.iter().position(|w| w.ticket == self.ticket) else {
            // Admitted: it left the line then.
            return;
        };
        ledger.line.remove(at);
        self.admission.gauges.waiting.set(gauge_value(ledger.line.len()));
        if at == 0 {
            // It may have been woken for budget it will not take.
            ledger.wake_first();
        }
    }
}

/// An admitted request's share of the budget, given back when dropped: it
/// lives as long as the request's body, trips and answer.
#[must_use]
#[derive(Debug)]
pub struct Reservation {
    admission: Arc<Admission>,
    bytes: usize,
    class: Class,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back what the request turned out not to need (a chunked body,
    /// charged at the size limit, that was shorter).
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            let freed = self.bytes - bytes;
            self.bytes = bytes;
            self.admission.release(self.class, freed);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.admission.release(self.class, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(budget: usize, reserve: usize, waiting: usize, wait_ms: u64) -> Limits {
        Limits {
            prediction_budget_bytes: budget,
            small_reserve_bytes: reserve,
            max_waiting_predictions: waiting,
            admission_wait: Duration::from_millis(wait_ms),
            ..Limits::DEFAULT
        }
    }

    fn large(bytes: usize) -> Cost {
        Cost { bytes, class: Class::Large }
    }

    fn small(bytes: usize) -> Cost {
        Cost { bytes, class: Class::Small }
    }

    #[test]
    fn the_shortest_row_is_min_row_bytes_long() {
        let fields: Vec<String> =
            model::Field::ALL.iter().map(|f| format!("\"{}\":0", f.name())).collect();
        assert_eq!(format!("{{{}}}", fields.join(",")).len(), MIN_ROW_BYTES);
    }

    #[test]
    fn a_row_costs_no_more_than_row_bytes() {
        let trip = std::mem::size_of::<model::Trip>();
        let index = std::mem::size_of::<usize>();
        // A fare: a sign, at most 17 significant digits, a point, an
        // exponent (`e-308`) and a comma; an index: at most 5 digits and a
        // comma.
        let json = (1 + 17 + 1 + 5 + 1) + (5 + 1);
        assert!(2 * trip + 8 + 2 * index + 2 * json <= ROW_BYTES);
    }

    #[test]
    fn cost_follows_the_declared_length_and_a_chunked_body_is_charged_the_limit() {
        let l = Limits::DEFAULT;
        let one = Cost::of(Some(140), &l);
        assert_eq!(one, small(140 + 2 * ROW_BYTES + REQUEST_BYTES));
        assert_eq!(Cost::of(Some(SMALL_BODY_BYTES as u64 + 1), &l).class, Class::Large);
        // Rows are capped by the batch limit, not by the bytes alone.
        let max = Cost::largest(&l);
        assert_eq!(max.bytes, l.max_body_bytes + l.max_batch_rows * ROW_BYTES + REQUEST_BYTES);
        assert_eq!(Cost::of(None, &l), max);
        assert_eq!(Cost::of(Some(u64::MAX), &l), max);
    }

    #[tokio::test]
    async fn small_requests_use_the_reserve_that_large_ones_cannot() {
        let admission = Admission::new(&limits(100, 40, 0, 10), Gauges::default());
        let held = admission.admit(large(60)).await.unwrap();
        assert_eq!(admission.admit(large(1)).await.unwrap_err(), Shed::LineFull);
        let a = admission.admit(small(30)).await.unwrap();
        let b = admission.admit(small(10)).await.unwrap();
        assert_eq!(admission.admit(small(1)).await.unwrap_err(), Shed::Full);
        assert_eq!(admission.used_bytes(), 100);
        drop((held, a, b));
        assert_eq!(admission.used_bytes(), 0);
    }

    #[tokio::test]
    async fn large_requests_wait_in_line_in_order_and_leave_it_when_out_of_time() {
        let admission = Admission::new(&limits(100, 0, 2, 5_000), Gauges::default());
        let held = admission.admit(large(100)).await.unwrap();
        let first = tokio::spawn({
            let a = admission.clone();
            async move { a.admit(large(70)).await.map(|r| r.bytes()) }
        });
        while admission.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let a = admission.clone();
            async move { a.admit(large(30)).await.map(|r| r.bytes()) }
        });
        while admission.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(admission.admit(large(1)).await.unwrap_err(), Shed::LineFull);
        drop(held);
        assert_eq!(first.await.unwrap(), Ok(70));
        assert_eq!(second.await.unwrap(), Ok(30));
        assert_eq!((admission.used_bytes(), admission.waiting()), (0, 0));

        let short = Admission::new(&limits(100, 0, 2, 20), Gauges::default());
        let held = short.admit(large(100)).await.unwrap();
        assert_eq!(short.admit(large(50)).await.unwrap_err(), Shed::Waited);
        assert_eq!(short.waiting(), 0);
        drop(held);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_first_in_line_passes_its_turn_on() {
        let admission = Admission::new(&limits(100, 0, 4, 5_000), Gauges::default());
        let held = admission.admit(large(100)).await.unwrap();
        let quitter = tokio::spawn({
            let a = admission.clone();
            async move { a.admit(large(100)).await.map(|r| r.bytes()) }
        });
        while admission.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        let patient = tokio::spawn({
            let a = admission.clone();
            async move { a.admit(large(50)).await.map(|r| r.bytes()) }
        });
        while admission.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        let mut shrunk = held;
        shrunk.shrink_to(50);
        quitter.abort();
        assert_eq!(patient.await.unwrap(), Ok(50));
        drop(shrunk);
        assert_eq!((admission.used_bytes(), admission.waiting()), (0, 0));
    }
}
