//! The fare-prediction HTTP service, as a library so tests can drive the
//! router in process; `main.rs` is the thin binary around it.
//!
//! Architecture invariant: the service depends on `model` for every rule
//! about trips, features and artifacts, and links no BLAS/LAPACK.

pub mod admission;
pub mod answers;
pub mod api;
pub mod app;
pub mod config;
pub mod conn;
pub mod error;
pub mod healthcheck;
pub mod limits;
pub mod metrics;
pub mod openapi;
mod scan;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod validate;

pub use app::router;
pub use limits::{ConnLimits, Limits};
pub use state::{AppState, Deployment, LoadedModel, ModelSlot};
