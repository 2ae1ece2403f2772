//! Waiting, within a deadline, for something outside to reach a state: a
//! container to become healthy, a server to answer, a process to exit.
//! Every such wait goes through [`until`], so each has a bound and says
//! what it last saw when the bound passes.

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

/// What one look found.
pub enum Poll<T> {
    /// Done, with the value the wait was for.
    Ready(T),
    /// Not yet; what was seen, for the timeout's message.
    Pending(String),
}

/// Calls `look` every `every` until it is [`Poll::Ready`], fails or
/// `timeout` has passed since the first call (it is called at least once).
/// An error from `look` ends the wait at once.
pub fn until<T>(
    timeout: Duration,
    every: Duration,
    mut look: impl FnMut() -> Result<Poll<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match look()? {
            Poll::Ready(value) => return Ok(value),
            Poll::Pending(seen) if Instant::now() >= deadline => {
                return Err(anyhow!("still {seen} after {timeout:?}"));
            }
            Poll::Pending(_) => sleep(every),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_ready() {
        let mut calls = 0;
        let got = until(Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            Ok(if calls == 3 { Poll::Ready(calls) } else { Poll::Pending("early".into()) })
        });
        assert_eq!(got.unwrap(), 3);
    }

    #[test]
    fn a_timeout_names_what_was_last_seen() {
        let err = until::<()>(Duration::from_millis(20), Duration::from_millis(5), || {
            Ok(Poll::Pending("starting".into()))
        })
        .unwrap_err();
        assert!(format!("{err}").contains("still starting after 20ms"), "{err}");
    }

    #[test]
    fn an_error_ends_the_wait_at_once() {
        let mut calls = 0;
        let err = until::<()>(Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            Err(anyhow!("exited"))
        })
        .unwrap_err();
        assert_eq!((calls, err.to_string()), (1, "exited".to_owned()));
    }
}
