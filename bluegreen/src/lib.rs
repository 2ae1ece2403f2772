//! The deployment vocabulary, said once: which colors there are and how
//! each is named in Docker and in nginx, which labels mark the stack's
//! containers, where images live, and how nginx is told to switch.
//!
//! Both the controller (which owns the app slots) and the task runner
//! (which starts the stack around it) use this crate, so a container
//! created by one is recognised by the other.
//!
//! **Invariant:** this crate does no IO. The nginx templates are compiled
//! in, so a controller in a `FROM scratch` image needs no files beside it.

mod color;
mod naming;
mod upstream;

pub use color::{Color, ParseColorError};
pub use naming::*;
pub use upstream::{Split, Upstream, UpstreamError};
