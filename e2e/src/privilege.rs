//! Scenarios of least privilege, on the real engine: an app container
//! cannot reach the controller's API while the host can; fifty concurrent
//! writers through that API leave one valid manifest and one rollout at a
//! time; and the limits every container runs under, read back from the
//! engine and, for the controller, from the kernel.

use std::collections::BTreeSet;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bluegreen::NETWORK;

use xtask::effects::docker::{self, docker};
use xtask::effects::http::Request;
use xtask::effects::paths::{live_manifest, stack_dir};
use xtask::effects::poll::{self, Poll};
use xtask::effects::process::output;
use xtask::rollout::{self, Phase, Verdict};
use xtask::stack;

use crate::fixture::{CONTROLLER, Fixture, manifest};
use crate::images::{GOOD_A, GOOD_B};

/// The throwaway container on the app network, named so that a leftover
/// is recognised (and removed by the next run).
const INTRUDER: &str = "taxi-fare-e2e-intruder";
/// The controller API's set-image route (`controller::api::SET_IMAGE`;
/// the e2e crate does not link the controller).
const SET_IMAGE: &str = "/api/v1/image";
/// Concurrent set-image calls.
const WRITERS: usize = 50;
/// How long the controller may take to settle after the writers: a
/// rollout superseded or finished, then the last tag's.
const CONVERGE: Duration = Duration::from_secs(240);

/// Tries `GET path` with bash's /dev/tcp (the nginx image has bash, no
/// curl) on nginx by name and on the controller at the address given as
/// `$1`, at most 10 s per answer; prints one line per try. SIGPIPE is
/// ignored, so a write to a socket closed at once fails instead of ending
/// the script, and each try runs in a subshell.
const PROBE_SCRIPT: &str = r#"
trap '' PIPE
probe() {
  if exec 3<>"/dev/tcp/$2/$3"; then
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$4" "$2" >&3 2>/dev/null
    if IFS= read -r -t 10 line <&3; then echo "$1 answered: $line"; else echo "$1 no answer"; fi
  else
    echo "$1 no connection"
  fi
}
(probe nginx nginx 80 /nginx-health); echo "nginx try ended ($?)"
(probe controller "$1" 9300 /status); echo "controller try ended ($?)"
"#;

/// A container on the app network that exists while this value does:
/// removed when dropped, also when the scenario fails half-way.
struct Intruder;

impl Intruder {
    /// Runs [`PROBE_SCRIPT`] in a container of the stack's nginx image on
    /// the app network, against the controller at `controller` (its
    /// address there), and returns what it printed once it exited.
    fn probe(image: &str, controller: &str) -> Result<(Intruder, String)> {
        remove_intruder();
        let guard = Intruder;
        output(docker([
            "run",
            "-d",
            "--name",
            INTRUDER,
            "--network",
            NETWORK,
            "--label",
            "io.taxi-fare.role=e2e-intruder",
            "--entrypoint",
            "bash",
            image,
            "-c",
            PROBE_SCRIPT,
            "probe",
            controller,
        ]))?;
        poll::until(Duration::from_secs(40), Duration::from_millis(200), || {
            let state = docker::inspect(INTRUDER, "{{.State.Status}}")?;
            Ok(if state == "exited" { Poll::Ready(()) } else { Poll::Pending(state) })
        })
        .context("waiting for the intruder's tries to end")?;
        let said = output(docker(["logs", INTRUDER]))?;
        Ok((guard, said))
    }
}

impl Drop for Intruder {
    fn drop(&mut self) {
        remove_intruder();
    }
}

fn remove_intruder() {
    // Gone already is fine: this only makes sure.
    let _ = docker(["rm", "-f", INTRUDER]).output();
}

/// The counter of a Prometheus series in the controller's /metrics (0
/// when it has not been counted yet).
fn controller_counter(series: &str) -> Result<f64> {
    let r = Request::get("/metrics").timeout(Duration::from_secs(5)).send(rollout::ADDR)?;
    ensure!(r.status == 200, "GET /metrics answered {}", r.status);
    let text = r.text();
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0))
}

const REFUSED_APP_NETWORK: &str =
    r#"controller_api_connections_refused_total{reason="app_network"} "#;

/// (1) A container on the app network connects to the controller's API
/// and is closed unanswered, while nginx answers it (its network works)
/// and the host's 127.0.0.1:9300 answers.
pub fn app_network_refused(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let address = docker::inspect(
        CONTROLLER,
        &format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}"),
    )?;
    ensure!(!address.is_empty(), "{CONTROLLER} has no address on {NETWORK}");
    let refused_before = controller_counter(REFUSED_APP_NETWORK)?;
    let (_intruder, said) = Intruder::probe(&fx.built.nginx, &address)?;
    ensure!(
        said.contains("nginx answered: HTTP/1.1 200"),
        "the intruder cannot reach nginx either, so it proves nothing:\n{said}"
    );
    ensure!(
        !said.contains("controller answered"),
        "the controller's API answered a container on the app network:\n{said}"
    );
    // Connected (the kernel accepts), then closed before a byte was read.
    ensure!(
        said.contains("controller no answer"),
        "the try on the controller at {address}:9300 did not end as expected:\n{said}"
    );
    let s = fx.status().context("the host's 127.0.0.1:9300 no longer answers")?;
    ensure!(s.active.tag.as_deref() == Some(GOOD_A), "/status says active {:?}", s.active.tag);
    let refused = controller_counter(REFUSED_APP_NETWORK)? - refused_before;
    ensure!(refused >= 1.0, "the refusal was not counted in /metrics");
    Ok(format!(
        "the intruder got no answer from {address}:9300 ({refused} refused, counted); nginx \
         answered it; the host's API answers"
    ))
}

/// What /status showed of the rollouts in flight, in the order seen.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Vec<u64>, Vec<String>)>,
}

impl Watch {
    /// Reads /status every 50 ms until stopped.
    fn start() -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let (mut revisions, mut errors) = (Vec::<u64>::new(), Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match rollout::status() {
                    Ok(s) => {
                        if let Some(r) = s.rollout
                            && revisions.last() != Some(&r.summary.revision)
                        {
                            revisions.push(r.summary.revision);
                        }
                    }
                    Err(e) => errors.push(format!("{e:#}")),
                }
                thread::sleep(Duration::from_millis(50));
            }
            (revisions, errors)
        });
        Watch { stop, handle }
    }

    fn stop(self) -> Result<(Vec<u64>, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().map_err(|_| anyhow!("the /status watcher panicked"))
    }
}

/// `WRITERS` callers of set-image, started together, alternating the two
/// good tags; what each answered.
fn concurrent_writes(token: &str) -> Result<Vec<Result<u16, String>>> {
    let start = Arc::new(Barrier::new(WRITERS));
    let callers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let tag = if i % 2 == 0 { GOOD_B } else { GOOD_A };
            let (start, bearer) = (start.clone(), format!("Bearer {token}"));
            thread::spawn(move || {
                let body = format!(r#"{{"tag":"{tag}"}}"#);
                start.wait();
                Request::post_json(SET_IMAGE, body.as_bytes())
                    .header("Authorization", &bearer)
                    .timeout(Duration::from_secs(30))
                    .send(rollout::ADDR)
                    .map(|r| r.status)
                    .map_err(|e| format!("{e:#}"))
            })
        })
        .collect();
    callers
        .into_iter()
        .map(|c| c.join().map_err(|_| anyhow!("a set-image caller panicked")))
        .collect()
}

/// (2) Fifty concurrent set-image calls through the API: every one is
/// accepted, the manifest is whole and names one of the two tags, no
/// temporary file is left, and the controller converges on that tag with
/// one rollout in flight at a time (seen on /status and in the history).
pub fn concurrent_set_image(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    let token_file = stack_dir().join("controller/token");
    let token = fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read the API token {}", token_file.display()))?
        .trim()
        .to_owned();
    let revision_before = rollout::newest_revision(&fx.status()?);
    let watch = Watch::start();
    let answers = concurrent_writes(&token);
    let settled = answers.and_then(|answers| {
        let refused: Vec<_> = answers.iter().filter(|a| !matches!(a, Ok(202))).collect();
        ensure!(
            refused.is_empty(),
            "{} of {WRITERS} set-image calls were not accepted (202); the first: {:?}",
            refused.len(),
            refused.first()
        );
        let text = fs::read_to_string(live_manifest())?;
        let tag = [GOOD_A, GOOD_B]
            .into_iter()
            .find(|t| rollout::with_tag(&text, t).is_ok_and(|same| same == text))
            .ok_or_else(|| {
                anyhow!("after {WRITERS} writers the manifest is not valid or names neither good tag:\n{text}")
            })?;
        let dir = live_manifest().parent().map(|d| d.to_owned()).unwrap_or_default();
        let left: Vec<String> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n != "rollout.yaml" && n != ".rollout.yaml.lock")
            .collect();
        ensure!(left.is_empty(), "the writers left files beside the manifest: {left:?}");
        poll::until(CONVERGE, Duration::from_millis(200), || {
            let s = fx.status()?;
            let done = s.rollout.is_none()
                && s.desired.tag.as_deref() == Some(tag)
                && s.active.tag.as_deref() == Some(tag)
                && s.phase == Phase::Healthy;
            Ok(if done {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "{} (desired {:?}, active {:?}, rollout {:?}, {:?})",
                    s.phase,
                    s.desired.tag,
                    s.active.tag,
                    s.rollout.map(|r| (r.summary.revision, r.tag, r.step)),
                    s.reason
                ))
            })
        })
        .with_context(|| format!("waiting for the controller to converge on {tag}"))?;
        Ok(tag)
    });
    let (revisions, errors) = watch.stop()?;
    let tag = settled?;
    ensure!(
        errors.is_empty(),
        "/status failed {} times meanwhile; first: {}",
        errors.len(),
        errors[0]
    );
    ensure!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "a rollout came back after a newer one began: in flight, in order, {revisions:?}"
    );
    let s = fx.status()?;
    let mut finished: Vec<_> =
        s.history.iter().filter(|f| f.summary.revision > revision_before).collect();
    finished.sort_by_key(|f| f.summary.started_at);
    for pair in finished.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        ensure!(
            b.summary.started_at >= a.finished_at,
            "rollouts #{} ({}) and #{} ({}) overlap: #{} began at {} before #{} ended at {}",
            a.summary.revision,
            a.tag,
            b.summary.revision,
            b.tag,
            b.summary.revision,
            b.summary.started_at.rfc3339(),
            a.summary.revision,
            a.finished_at.rfc3339()
        );
    }
    let distinct: BTreeSet<u64> = finished.iter().map(|f| f.summary.revision).collect();
    ensure!(distinct.len() == finished.len(), "a revision is in the history twice: {finished:?}");
    let color = s.active.color.map(|c| c.to_string()).unwrap_or_default();
    fx.expect_live(&color, tag, 1)?;
    let succeeded = finished.iter().filter(|f| f.result == Verdict::Succeeded).count();
    Ok(format!(
        "{WRITERS} writes accepted, manifest whole with {tag}; {} rollouts ({succeeded} succeeded), \
         one at a time; converged on {tag}",
        finished.len()
    ))
}

/// `Memory MemorySwap PidsLimit ReadonlyRootfs` of a container.
fn app_limits(container: &str) -> Result<(i64, i64, i64, bool)> {
    let said = docker::inspect(
        container,
        "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}} \
         {{.HostConfig.ReadonlyRootfs}}",
    )?;
    let words: Vec<&str> = said.split_whitespace().collect();
    let number = |i: usize| -> Result<i64> {
        let w = words.get(i).ok_or_else(|| anyhow!("docker inspect said {said:?}"))?;
        w.parse().with_context(|| format!("docker inspect said {said:?}"))
    };
    Ok((number(0)?, number(1)?, number(2)?, words.get(3) == Some(&"true")))
}

fn expect_app_limits(container: &str, memory: i64, pids: i64) -> Result<()> {
    let (m, swap, p, read_only) = app_limits(container)?;
    ensure!(
        (m, swap, p) == (memory, memory, pids),
        "{container}: Memory {m}, MemorySwap {swap}, PidsLimit {p}; the manifest asks {memory}, \
         {memory}, {pids}"
    );
    ensure!(read_only, "{container} does not run with a read-only root");
    Ok(())
}

/// A field of `/proc/<pid>/status` (the scenarios run on the Docker host).
fn proc_status(pid: &str, field: &str) -> Result<String> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| anyhow!("{path} has no {field}"))
}

/// (3) The live app container runs with the manifest's memory and pids
/// limits (the tracked defaults, then a manifest's own after a deploy),
/// and the controller runs read-only, with no capability, no new
/// privileges and as the invoking user: what the engine was told, and
/// what the kernel shows of its process.
pub fn limits(fx: &Fixture) -> Result<String> {
    fx.fresh(GOOD_A)?;
    expect_app_limits("taxi-fare_app_blue_1", 512 << 20, 256)?;
    let mut text = manifest(GOOD_B, 1)?;
    for (from, to) in [("memory: 512Mi", "memory: 256Mi"), ("pids: 256", "pids: 128")] {
        ensure!(text.contains(from), "manifests/rollout.yaml no longer has {from:?}");
        text = text.replace(from, to);
    }
    let before = rollout::newest_revision(&fx.status()?);
    fs::write(live_manifest(), text)?;
    let done = rollout::follow(GOOD_B, before, Duration::from_secs(90))?;
    ensure!(done.result == Verdict::Succeeded, "{}", rollout::describe(&done));
    expect_app_limits("taxi-fare_app_green_1", 256 << 20, 128)?;

    let said = docker::inspect(
        CONTROLLER,
        "{{.HostConfig.ReadonlyRootfs}}|{{json .HostConfig.CapDrop}}|{{json .HostConfig.SecurityOpt}}\
         |{{.Config.User}}|{{json .HostConfig.GroupAdd}}|{{.State.Pid}}",
    )?;
    let fields: Vec<&str> = said.split('|').collect();
    let [read_only, cap_drop, security, user, groups, pid] = fields[..] else {
        bail!("docker inspect {CONTROLLER} said {said:?}");
    };
    ensure!(read_only == "true", "the controller's root is not read-only: {said}");
    ensure!(
        cap_drop.to_ascii_uppercase().contains("\"ALL\""),
        "the controller keeps capabilities: {said}"
    );
    ensure!(security.contains("no-new-privileges"), "the controller may gain privileges: {said}");
    let expected = stack::controller_user()?;
    ensure!(user == expected.user(), "the controller runs as {user:?}, not {}", expected.user());
    ensure!(
        groups.contains(&format!("\"{}\"", expected.docker_gid)),
        "the controller is not in the Docker socket's group {}: {groups}",
        expected.docker_gid
    );
    ensure!(pid != "0", "the controller is not running");
    let effective = proc_status(pid, "CapEff")?;
    ensure!(
        effective.chars().all(|c| c == '0'),
        "the controller's process has capabilities {effective}"
    );
    ensure!(proc_status(pid, "NoNewPrivs")? == "1", "the controller's process may gain privileges");
    let uid = proc_status(pid, "Uid")?;
    ensure!(
        uid.split_whitespace().all(|u| u == expected.uid.to_string()),
        "the controller's process runs as uids {uid}, not {}",
        expected.uid
    );
    Ok(format!(
        "blue 512 MiB / 256 pids, green 256 MiB / 128 pids as the manifest says; controller: \
         read-only, CapEff 0, NoNewPrivs, user {user} in group {}",
        expected.docker_gid
    ))
}
