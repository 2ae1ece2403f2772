//! The blue-green deployment controller: a long-running operator that
//! takes the image tag of `manifests/rollout.yaml` to production through
//! nginx, and rolls it back when it fails.
//!
//! The decision ([`reconcile::decide`]) is pure; [`platform::Platform`] is
//! the narrow interface to the world (observe, start a color, remove a
//! color, switch traffic, probe, and for the model gates a color's
//! artifact, direct predictions, metrics and the preview), implemented for
//! Docker and nginx by
//! [`docker`] and [`nginx`]. [`controller`] runs the loop between them.

pub mod clock;
pub mod manifest;
pub mod observed;

pub mod record;
pub mod reference;

pub mod analysis;
pub mod api;
pub mod atomic_file;
pub mod controller;
pub mod crash;
pub mod docker;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod gates;
pub mod manifest_file;
pub mod metrics;
pub mod nginx;
pub mod platform;
pub mod probe;
pub mod status;
pub mod store;
pub mod watch;
