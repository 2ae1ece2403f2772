//! The deployment controller's core: everything it decides, nothing it
//! does. The desired state ([`manifest`]), what it remembers
//! ([`record`]), the whole rollout state machine ([`machine`]: `decide`
//! the next step, `apply` its outcome), the `/status` document
//! ([`status`]), and the judges of the model gates ([`gates`]), of the
//! analysis after a switch ([`analysis`]), of a canary's comparison of
//! the two colors ([`compare`]) and of the shadow's answers ([`shadow`]);
//! how traffic moves is [`manifest::strategy`].
//!
//! Architecture invariant: no IO and no async runtime. Time, observations
//! and outcomes come in as values, so every decision is a function that a
//! test calls with plain data. The runtime (the `controller` crate) and
//! xtask both build on it.

pub mod analysis;
pub mod clock;
pub mod compare;
pub mod gates;
pub mod machine;
pub mod manifest;
pub mod observed;
pub mod record;
pub mod reference;
pub mod shadow;
pub mod status;
pub mod traffic;

#[cfg(test)]
mod fixtures;
