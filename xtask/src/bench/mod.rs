//! Benchmarks against the original (Python) stack, measured side by side
//! on the same machine in one run and printed as a table: `train` (the
//! trainer against pandas + scikit-learn) and `serve` (the service against
//! FastAPI + uvicorn, under wrk, with `admission` and `overload` at and
//! beyond its limits, and `profile`, callgrind's count of a request's
//! instructions stage by stage). Each
//! also checks that both sides compute the same thing, so a faster number
//! is never a different answer. (`bench deploy` drives the load generator,
//! so it lives with it in the `e2e` crate.)

mod admission;
pub mod overload;
mod profile;
pub mod python;
pub mod serve;
pub mod train;
