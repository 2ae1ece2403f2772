//! Stage deploy: a built tag to production through the deployment
//! controller, the pipeline's last job.
//!
//! The stage never touches a container: the controller owns the slots.
//! It only writes the tag into `spec.image.tag` of the live manifest (in
//! place, comments kept) and follows the controller's `/status` until that
//! rollout has ended ([`crate::rollout::deploy`]). Everything that can be
//! known before the write is checked first, so a mistake fails the job at
//! once with its cause instead of as a rollout that times out: the tag is
//! a valid one, the registry the controller pulls from has it, the live
//! manifest is there and parses, and the controller answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use controller_core::manifest::{self, Desired};

use crate::effects::http::Request;
use crate::effects::paths;
use crate::rollout;
use crate::stages::artifacts::Built;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeployArgs {
    /// The image tag to deploy (CI passes $CI_COMMIT_SHA) [default: the tag
    /// of the last `cargo xtask build` here, from artifacts/images.json].
    #[arg(long, env = "TAXI_DEPLOY_TAG")]
    pub tag: Option<String>,
    /// How long the rollout may take, in seconds [default: the live
    /// manifest's healthTimeout + probe timeout + scaleDownDelay, plus 120 s
    /// for the pull and the switch].
    #[arg(long, env = "TAXI_DEPLOY_TIMEOUT")]
    pub timeout: Option<u64>,
    /// The registry (host:port, plain HTTP) asked whether the tag was
    /// pushed [default: the registry of the manifest's spec.image.repository,
    /// localhost read as 127.0.0.1].
    #[arg(long, env = "TAXI_REGISTRY")]
    pub registry: Option<String>,
    /// Skip asking the registry (one that speaks TLS or wants credentials,
    /// which this check cannot): a tag that is not there then fails the
    /// rollout at level 1, on the controller's pull.
    #[arg(long, env = "TAXI_SKIP_REGISTRY_CHECK")]
    pub skip_registry_check: bool,
    /// The live manifest the controller watches [default: the local stack's,
    /// target/stack/manifests/rollout.yaml].
    #[arg(long, env = "TAXI_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// The controller's API, host:port or http://host:port [default: the
    /// local stack's, 127.0.0.1:9300].
    #[arg(long, env = "TAXI_CONTROLLER")]
    pub controller: Option<String>,
}

/// Allowed on top of the manifest's own timeouts: pulling the image,
/// starting the containers, writing upstream.conf and reloading nginx.
const PULL_AND_SWITCH: Duration = Duration::from_secs(120);

/// The manifest types a registry may store a pushed image under; without
/// them in `Accept`, a registry answers 404 for a manifest it has.
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
                              application/vnd.docker.distribution.manifest.list.v2+json, \
                              application/vnd.oci.image.manifest.v1+json, \
                              application/vnd.oci.image.index.v1+json";

pub fn run(args: &DeployArgs) -> Result<()> {
    let tag = args.tag()?;
    controller_core::reference::check_tag(&tag).map_err(anyhow::Error::msg)?;
    let manifest_path = args.manifest_path()?;
    let desired = read_manifest(&manifest_path)?;
    let found = if args.skip_registry_check {
        "registry not asked".to_owned()
    } else {
        let registry = match &args.registry {
            Some(r) => r.clone(),
            None => registry_of(&desired.repository)?,
        };
        let (_, path) = split_repository(&desired.repository);
        check_pushed(&registry, path, &tag)?;
        format!("found in {registry}")
    };
    args.check_controller()?;
    let timeout = args.timeout.map_or_else(|| rollout_budget(&desired), Duration::from_secs);
    println!(
        "deploy: {}:{tag} ({found}), rollout budget {} s",
        desired.repository,
        timeout.as_secs()
    );
    rollout::deploy(&tag, timeout)
}

impl DeployArgs {
    fn tag(&self) -> Result<String> {
        if let Some(tag) = &self.tag {
            return Ok(tag.clone());
        }
        match Built::last()? {
            Some(built) => Ok(built.tag),
            None => bail!(
                "no tag to deploy: nothing was built here (artifacts/images.json is absent); run \
                 `cargo xtask build`, or name a pushed tag with --tag or TAXI_DEPLOY_TAG"
            ),
        }
    }

    /// The manifest to write: the local stack's live copy, the one
    /// `rollout::deploy` writes and the controller watches. Another path is
    /// refused rather than silently ignored.
    fn manifest_path(&self) -> Result<PathBuf> {
        let live = paths::live_manifest();
        if let Some(given) = &self.manifest {
            let given = paths::root().join(given);
            if !same_file(&given, &live) {
                bail!(
                    "TAXI_MANIFEST/--manifest names {}, but the controller of this stack watches \
                     {}; unset it or name that file",
                    given.display(),
                    live.display()
                );
            }
        }
        Ok(live)
    }

    /// Fails, saying how to start it, unless the controller answers; a
    /// controller address other than the stack's is refused.
    fn check_controller(&self) -> Result<()> {
        if let Some(given) = &self.controller {
            let given = given.trim_start_matches("http://").trim_end_matches('/');
            if given != rollout::ADDR {
                bail!(
                    "TAXI_CONTROLLER/--controller names {given}, but this stack's controller \
                     listens on {}; unset it or name that address",
                    rollout::ADDR
                );
            }
        }
        rollout::status().map(|_| ()).with_context(|| {
            format!(
                "the deployment controller is not running (nothing answers on http://{}/status); \
                 start the stack with `cargo xtask up`",
                rollout::ADDR
            )
        })
    }
}

/// Two paths name the same file (the second need not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The live manifest, parsed and validated as the controller does.
fn read_manifest(path: &Path) -> Result<Desired> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no live manifest at {}: the stack is not up; start it with `cargo xtask up`",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    manifest::parse(&text).with_context(|| format!("{} is refused", path.display()))
}

/// How long a rollout may take under this manifest before the job fails.
fn rollout_budget(desired: &Desired) -> Duration {
    desired.health_timeout + desired.probe.timeout + desired.scale_down_delay + PULL_AND_SWITCH
}

/// A repository's registry host (if it names one) and its path, by
/// Docker's rule: the first component is a host when it has a `.` or a
/// `:`, or is `localhost`.
fn split_repository(repository: &str) -> (Option<&str>, &str) {
    match repository.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, repository),
    }
}

/// The address to ask for a repository's tags: its registry host, with
/// `localhost` as 127.0.0.1 (where the local registry listens; `localhost`
/// may resolve to ::1 first).
fn registry_of(repository: &str) -> Result<String> {
    match split_repository(repository) {
        (Some(host), _) => Ok(match host.strip_prefix("localhost") {
            Some(port) => format!("127.0.0.1{port}"),
            None => host.to_owned(),
        }),
        (None, _) => bail!(
            "spec.image.repository {repository:?} names no registry (Docker Hub); name the \
             registry to check with --registry or TAXI_REGISTRY"
        ),
    }
}

/// Fails unless the registry at `registry` holds `path:tag`.
fn check_pushed(registry: &str, path: &str, tag: &str) -> Result<()> {
    let url = format!("/v2/{path}/manifests/{tag}");
    let answer = Request::get(&url)
        .header("Accept", MANIFEST_TYPES)
        .timeout(Duration::from_secs(10))
        .send(registry)
        .with_context(|| {
            format!("cannot ask the registry at {registry} for {path}:{tag}: is it running?")
        })?;
    match answer.status {
        200 => Ok(()),
        404 => bail!(
            "tag {tag} was never pushed to {registry}/{path} (the registry has no such manifest): \
             build and push it with `cargo xtask build`, or deploy a tag that was built"
        ),
        401 | 403 => bail!(
            "the registry at {registry} refuses to say whether {path}:{tag} exists (HTTP {}); \
             this check speaks plain HTTP without credentials",
            answer.status
        ),
        other => bail!(
            "the registry at {registry} answered HTTP {other} for {path}:{tag}: {}",
            answer.text()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn defaults_match_the_command_line() {
        let parsed: DeployArgs = crate::parse_empty_command_line();
        let default = DeployArgs::default();
        assert_eq!((parsed.tag, parsed.timeout), (default.tag, default.timeout));
        assert_eq!(parsed.registry, default.registry);
        assert!(!parsed.skip_registry_check && !default.skip_registry_check);
    }

    #[test]
    fn a_repository_splits_into_registry_and_path() {
        assert_eq!(
            split_repository("localhost:5000/taxi/service"),
            (Some("localhost:5000"), "taxi/service")
        );
        assert_eq!(
            split_repository("registry.example.com/taxi/service"),
            (Some("registry.example.com"), "taxi/service")
        );
        assert_eq!(split_repository("taxi/service"), (None, "taxi/service"));
        assert_eq!(registry_of("localhost:5000/taxi/service").unwrap(), "127.0.0.1:5000");
        assert_eq!(registry_of("reg.example.com:443/t/s").unwrap(), "reg.example.com:443");
        let err = registry_of("taxi/service").unwrap_err();
        assert!(format!("{err:#}").contains("TAXI_REGISTRY"), "{err:#}");
    }

    #[test]
    fn the_budget_is_every_timeout_of_the_manifest_plus_the_pull() {
        let text = "apiVersion: deploy.taxi-fare.io/v1\nkind: Rollout\nmetadata:\n  name: t\n\
                    spec:\n  image:\n    repository: localhost:5000/t/s\n    tag: a\n  \
                    healthTimeout: 100s\n  probe:\n    timeout: 20s\n  scaleDownDelay: 3s\n";
        let desired = manifest::parse(text).unwrap();
        assert_eq!(rollout_budget(&desired), Duration::from_secs(123) + PULL_AND_SWITCH);

        let tracked =
            std::fs::read_to_string(paths::root().join("manifests/rollout.yaml")).unwrap();
        let budget = rollout_budget(&manifest::parse(&tracked).unwrap());
        assert!(budget < Duration::from_secs(30 * 60), "{budget:?}");
    }

    #[test]
    fn an_absent_manifest_says_the_stack_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_manifest(&dir.path().join("rollout.yaml")).unwrap_err();
        assert!(format!("{err:#}").contains("cargo xtask up"), "{err:#}");
    }

    #[test]
    fn another_manifest_or_controller_is_refused() {
        let args = DeployArgs {
            manifest: Some(PathBuf::from("manifests/rollout.yaml")),
            ..DeployArgs::default()
        };
        let err = args.manifest_path().unwrap_err();
        assert!(format!("{err:#}").contains("watches"), "{err:#}");
        let args = DeployArgs {
            manifest: Some(PathBuf::from("target/stack/manifests/rollout.yaml")),
            ..DeployArgs::default()
        };
        assert_eq!(args.manifest_path().unwrap(), paths::live_manifest());

        let args =
            DeployArgs { controller: Some("http://10.0.0.1:9300".into()), ..DeployArgs::default() };
        let err = args.check_controller().unwrap_err();
        assert!(format!("{err:#}").contains("listens on 127.0.0.1:9300"), "{err:#}");
    }

    /// A registry stand-in on a free port that answers one request with
    /// `status` and hands back the request it read.
    fn registry_answering(status: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0; 1024];
            while !seen.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\n{{}}");
            stream.write_all(answer.as_bytes()).unwrap();
            String::from_utf8(seen).unwrap().to_ascii_lowercase()
        });
        (addr, server)
    }

    #[test]
    fn a_pushed_tag_passes_and_a_tag_never_built_is_named() {
        let (addr, server) = registry_answering("200 OK");
        check_pushed(&addr, "taxi/service", "abc123").unwrap();
        let request = server.join().unwrap();
        assert!(request.starts_with("get /v2/taxi/service/manifests/abc123 http/1.1"), "{request}");
        assert!(
            request.contains("accept: application/vnd.docker.distribution.manifest.v2+json"),
            "{request}"
        );

        let (addr, server) = registry_answering("404 Not Found");
        let err = check_pushed(&addr, "taxi/service", "nope").unwrap_err();
        server.join().unwrap();
        let err = format!("{err:#}");
        assert!(err.contains("tag nope was never pushed"), "{err}");
        assert!(err.contains("cargo xtask build"), "{err}");
    }

    #[test]
    fn no_registry_is_a_clear_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = check_pushed(&format!("127.0.0.1:{port}"), "taxi/service", "t").unwrap_err();
        assert!(format!("{err:#}").contains("is it running?"), "{err:#}");
    }
}
