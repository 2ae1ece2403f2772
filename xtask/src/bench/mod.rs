//! Benchmarks against the original (Python) stack, measured side by side
//! on the same machine in one run and printed as a table: `train` (the
//! trainer against pandas + scikit-learn) and `serve` (the service against
//! FastAPI + uvicorn, under wrk). Each also checks that both sides compute
//! the same thing, so a faster number is never a different answer. And
//! `deploy`: what clients see while the controller deploys and parts of
//! the stack fail.

pub mod deploy;
pub mod overload;
pub mod python;
pub mod serve;
pub mod train;
