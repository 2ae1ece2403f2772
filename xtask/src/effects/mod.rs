//! Adapters for the outside world the stages, the stack and the benchmarks
//! share: running programs ([`process`]), the Docker CLI ([`docker`]),
//! Compose ([`compose`]), the local registry ([`registry`]), an HTTP client
//! ([`http`]), our own servers on a free port ([`local_server`]), Debian
//! packages ([`deps`]), Python virtualenvs ([`venv`]), the source revision
//! ([`revision`]) and where things are ([`paths`]). Nothing here knows about
//! a particular stage.

pub mod compose;
pub mod deps;
pub mod docker;
pub mod http;
pub mod local_server;
pub mod paths;
pub mod poll;
pub mod process;
pub mod registry;
pub mod revision;
pub mod venv;
