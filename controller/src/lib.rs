//! The deployment controller's runtime: the effect shell around
//! `controller_core`. [`reconciler`] is the loop (observe, decide, carry
//! the step out, apply its outcome), [`platform`] the interfaces to the
//! world split by role with the compose backend beside them,
//! [`color_http`] the HTTP the gates, the analysis and the probe send, and
//! [`api`] the operator's HTTP API with its status [`page`]; `main`
//! holds the CLI.

pub mod answer;
pub mod api;
pub mod clock;
pub mod color_http;
pub mod crash;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod front;
pub mod live_traffic;
pub mod local_file;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod platform;
pub mod promql;
pub mod reconciler;
pub mod scrape_targets;
pub mod shared;
pub mod store;
pub mod watch;
