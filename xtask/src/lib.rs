//! The task runner behind `cargo xtask`, as a library so that the `e2e`
//! crate (the end-to-end scenarios and the load generator: test code, kept
//! out of here) can drive the same stack, images and effects. The binary
//! only parses [`flags`] and dispatches.
//!
//! The modules are layered, none importing one that imports it back (the
//! `tidy` test holds every crate to that): `effects` and `api` at the
//! bottom; `images` and `rollout` (the running controller) on `effects`;
//! `stages` on those; `stack`, `bench` and `e2e` on the stages; `flags`
//! naming their arguments; `ci` on top, running them all.

pub mod api;
pub mod bench;
pub mod ci;
pub mod e2e;
pub mod effects;
pub mod flags;
pub mod images;
pub mod rollout;
pub mod stack;
pub mod stages;
#[cfg(test)]
mod tidy;

/// What a command's arguments are when none is given on the command line,
/// for the tests that check an argument struct's `Default` (what `ci` and
/// `up` pass) against it.
#[cfg(test)]
fn parse_empty_command_line<A: clap::Args>() -> A {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    Cli::<A>::parse_from(["xtask"]).args
}
