//! What a scenario works with: a fresh stack on the real Docker Engine,
//! nginx and registry, and the ways to act on it and look at it as a user
//! would — through nginx, `docker ps`, the controller's /status and CLI.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bluegreen::{PROJECT, label};
use serde::Deserialize;

use xtask::effects::compose::Tool;
use xtask::effects::docker::{self, docker};
use xtask::effects::http::Request;
use xtask::effects::paths::{self, live_manifest, stack_dir};
use xtask::effects::poll::{self, Poll};
use xtask::effects::process::{cmd, output, run};
use xtask::images::static_binary;
use xtask::rollout::{self, Finished, Phase, Status, StepName, Verdict};
use xtask::stack::{self, Notify, Platform, swarm};
use xtask::stages::artifacts::{self, Built};

/// How long a rollout may take in a scenario (the level-1 image needs
/// about 20 s to be declared unhealthy).
const ROLLOUT: Duration = Duration::from_secs(90);
pub const CONTROLLER: &str = "taxi-fare_controller_1";

pub struct Fixture {
    pub tool: Tool,
    pub built: Built,
}

/// The platform the stack of every scenario runs on, chosen once by the
/// suite (compose when never chosen). Process-wide rather than a field of
/// [`Fixture`]: the deploy benchmark builds its fixture too, on compose.
static PLATFORM: OnceLock<(Platform, u32)> = OnceLock::new();

/// Chooses the platform of the scenarios' stacks, and on Swarm its
/// number of nodes; the first word stands.
pub fn use_platform(platform: Platform, nodes: u32) {
    let _ = PLATFORM.set((platform, nodes));
}

pub fn platform() -> Platform {
    PLATFORM.get().map(|p| p.0).unwrap_or_default()
}

/// The nodes of the swarm the scenarios run on (1 on compose).
pub fn nodes() -> u32 {
    PLATFORM.get().map(|p| p.1).unwrap_or(1)
}

/// What `GET /` through nginx answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Answer {
    pub color: Option<String>,
    pub version: Option<String>,
}

/// An app container as `docker ps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    pub color: String,
    pub tag: String,
    pub state: String,
}

/// The manifest of the scenarios: the tracked one with shorter waits.
pub fn manifest(tag: &str, replicas: u32) -> Result<String> {
    let template = fs::read_to_string(paths::root().join("manifests/rollout.yaml"))?;
    let mut text = template.clone();
    for (from, to) in [
        ("healthTimeout: 60s", "healthTimeout: 40s".to_owned()),
        ("    timeout: 10s", "    timeout: 3s".to_owned()),
        ("scaleDownDelay: 10s", "scaleDownDelay: 3s".to_owned()),
        ("window: 60s", "window: 3s".to_owned()),
        ("replicas: 1", format!("replicas: {replicas}")),
    ] {
        ensure!(text.contains(from), "manifests/rollout.yaml no longer has {from:?}");
        text = text.replace(from, &to);
    }
    rollout::with_tag(&text, tag).context("the scenario manifest")
}

impl Fixture {
    /// A clean stack whose controller has rolled `tag` out into blue.
    pub fn fresh(&self, tag: &str) -> Result<()> {
        self.clear()?;
        stack::prepare_dir()?;
        fs::write(live_manifest(), manifest(tag, 1)?)?;
        let built = self.built_as(tag);
        match platform() {
            Platform::Compose => stack::launch(self.tool, &built, ROLLOUT, &Notify::default())?,
            Platform::Swarm => swarm::launch(&built, ROLLOUT, &Notify::default(), nodes())?,
        }
        self.expect_live("blue", tag, 1)
    }

    /// The last build, as if it had been tagged `tag`.
    pub fn built_as(&self, tag: &str) -> Built {
        Built { tag: tag.to_owned(), ..self.built.clone() }
    }

    /// Removes the stack's containers (or services) and runtime
    /// directory. On Swarm the swarm stays, for the next scenario: the
    /// suite leaves it at the end, if `up`'s code made it.
    pub fn clear(&self) -> Result<()> {
        match platform() {
            Platform::Compose => {
                stack::remove_stack()?;
                paths::remove_dir_if_present(&stack_dir())
            }
            Platform::Swarm => {
                swarm::remove_stack()?;
                swarm::clear_dir()
            }
        }
    }

    pub fn status(&self) -> Result<Status> {
        rollout::status()
    }

    /// Writes a tag into the live manifest.
    pub fn set_tag(&self, tag: &str) -> Result<u64> {
        let before = rollout::newest_revision(&self.status()?);
        rollout::set_tag(&live_manifest(), tag)?;
        Ok(before)
    }

    /// Deploys a tag and returns its finished rollout, whatever the result.
    pub fn deploy(&self, tag: &str) -> Result<Finished> {
        let before = self.set_tag(tag)?;
        rollout::follow(tag, before, ROLLOUT)
    }

    /// Deploys a tag that must succeed.
    pub fn deploy_ok(&self, tag: &str) -> Result<Finished> {
        let done = self.deploy(tag)?;
        ensure!(done.result == Verdict::Succeeded, "{}", rollout::describe(&done));
        Ok(done)
    }

    /// Rolls `tag` out with `autoPromote: false` and waits until it is
    /// paused, proven, before the switch.
    pub fn pause(&self, tag: &str) -> Result<()> {
        fs::write(live_manifest(), format!("{}  autoPromote: false\n", manifest(tag, 1)?))?;
        poll::until(ROLLOUT, Duration::from_millis(100), || {
            let s = self.status()?;
            Ok(if s.phase == Phase::Paused {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("phase {}", s.phase))
            })
        })
    }

    /// Waits until the rollout in flight reaches `step`.
    pub fn wait_for_step(&self, step: StepName) -> Result<()> {
        poll::until(ROLLOUT, Duration::from_millis(50), || {
            let s = self.status()?;
            Ok(match &s.rollout {
                Some(r) if r.step == step => Poll::Ready(()),
                Some(r) => Poll::Pending(format!("at step {}", r.step)),
                None => Poll::Pending("with no rollout in flight".into()),
            })
        })
        .with_context(|| format!("waiting for step {step}"))
    }

    /// `GET /` through nginx, on a fresh connection.
    pub fn front(&self) -> Result<Answer> {
        let r = Request::get("/").timeout(Duration::from_secs(5)).send(&stack::front())?;
        ensure!(r.status == 200, "GET / through nginx answered {}: {}", r.status, r.text());
        r.parse()
    }

    /// `GET /` on the preview port, on a fresh connection.
    pub fn preview(&self) -> Result<Answer> {
        let at = format!("127.0.0.1:{}", stack::PREVIEW_PORT);
        let r = Request::get("/").timeout(Duration::from_secs(5)).send(&at)?;
        ensure!(r.status == 200, "GET / on the preview port answered {}: {}", r.status, r.text());
        r.parse()
    }

    pub fn apps(&self) -> Result<Vec<App>> {
        let format = format!(
            "{{{{.Names}}}} {{{{.Label \"{}\"}}}} {{{{.Label \"{}\"}}}} {{{{.State}}}}",
            label::COLOR,
            label::TAG
        );
        // Swarm keeps a failed task's container until the service goes:
        // only the running ones are the color's replicas there.
        let (all, owner) = match platform() {
            Platform::Compose => (Some("-a"), label::PROJECT),
            Platform::Swarm => (None, label::STACK),
        };
        let args: Vec<String> = ["ps"]
            .into_iter()
            .chain(all)
            .map(str::to_owned)
            .chain([
                "--filter".to_owned(),
                format!("label={owner}={PROJECT}"),
                "--filter".to_owned(),
                format!("label={}={}", label::ROLE, label::ROLE_APP),
                "--format".to_owned(),
                format.clone(),
            ])
            .collect();
        // Each node's Engine knows only its own containers.
        let mut out = output(docker(&args))?;
        for node in 2..=nodes() {
            out.push('\n');
            out.push_str(&output(xtask::stack::nodes::docker_on(node, &args))?);
        }
        let mut apps: Vec<App> = out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace().map(str::to_owned);
                Some(App { name: w.next()?, color: w.next()?, tag: w.next()?, state: w.next()? })
            })
            .collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(apps)
    }

    /// Traffic, containers and /status all say that `replicas` containers
    /// of `color` run `tag`, and nothing else runs.
    pub fn expect_live(&self, color: &str, tag: &str, replicas: usize) -> Result<()> {
        let answer = self.front()?;
        ensure!(
            answer.color.as_deref() == Some(color) && answer.version.as_deref() == Some(tag),
            "nginx serves {answer:?}, expected {color} {tag}"
        );
        let apps = self.apps()?;
        let expected = apps
            .iter()
            .filter(|a| a.color == color && a.tag == tag && a.state == "running")
            .count();
        ensure!(
            expected == replicas && apps.len() == replicas,
            "expected {replicas} running {color} containers of {tag} and nothing else, found {apps:?}"
        );
        let s = self.status()?;
        ensure!(
            s.active.color.map(|c| c.to_string()).as_deref() == Some(color)
                && s.active.tag.as_deref() == Some(tag),
            "/status says active {:?} {:?}",
            s.active.color,
            s.active.tag
        );
        Ok(())
    }

    /// Waits (`within` at most) until the front answers from `color`.
    pub fn wait_served_by(&self, color: &str, within: Duration) -> Result<()> {
        poll::until(within, Duration::from_millis(100), || {
            Ok(match self.front() {
                Ok(a) if a.color.as_deref() == Some(color) => Poll::Ready(()),
                Ok(a) => Poll::Pending(format!("answering {a:?}")),
                Err(e) => Poll::Pending(format!("failing: {e:#}")),
            })
        })
    }

    /// Waits (30 s at most) until `replicas` containers of `color` run
    /// `tag`, healthy and named by the router, and the front answers.
    pub fn wait_whole(&self, color: &str, tag: &str, replicas: usize) -> Result<()> {
        poll::until(Duration::from_secs(30), Duration::from_millis(100), || {
            let apps = self.apps()?;
            let running = apps
                .iter()
                .filter(|a| a.color == color && a.tag == tag && a.state == "running")
                .count();
            let s = self.status()?;
            let of = if color == "blue" { &s.colors.blue } else { &s.colors.green };
            let healthy = of
                .as_ref()
                .map_or(0, |cs| cs.iter().filter(|c| c.health == rollout::Health::Healthy).count());
            let upstream = self.upstream()?;
            let named = (1..=replicas + 1)
                .filter(|n| upstream.contains(&format!("taxi-fare_app_{color}_{n}:")))
                .count();
            let answers = self.front().is_ok_and(|a| a.color.as_deref() == Some(color));
            Ok(
                if running == replicas
                    && apps.len() == replicas
                    && healthy == replicas
                    && named == replicas
                    && answers
                {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!(
                        "{running} running, {healthy} healthy, {named} named, of {apps:?}"
                    ))
                },
            )
        })
    }

    /// SIGKILLs the controller's process (not `docker kill`, which Docker
    /// takes as a deliberate stop) and waits for the restart policy to
    /// bring it back.
    pub fn kill_controller(&self) -> Result<()> {
        let restarts = self.restart_count()?;
        self.kill_process_of(&self.controller()?)?;
        self.wait_restarted(restarts)
    }

    /// The controller's container: compose's, or the current task's of
    /// the Swarm service.
    pub fn controller(&self) -> Result<String> {
        match platform() {
            Platform::Compose => Ok(CONTROLLER.to_owned()),
            Platform::Swarm => swarm::container_of(&swarm::controller_service())?
                .context("no running task of the controller's service"),
        }
    }

    /// Waits for the controller to be restarted (count past `restarts`)
    /// and to answer again.
    pub fn wait_restarted(&self, restarts: u32) -> Result<()> {
        poll::until(Duration::from_secs(30), Duration::from_millis(100), || {
            let now = self.restart_count()?;
            if now <= restarts {
                return Ok(Poll::Pending(format!("restarted {now} times")));
            }
            Ok(match self.status() {
                Ok(_) => Poll::Ready(()),
                Err(e) => Poll::Pending(format!("restarted but not answering: {e:#}")),
            })
        })
        .context("waiting for the controller's restart")
    }

    /// How often the controller was restarted: Docker's count on compose;
    /// on Swarm, which starts a new task each time, its tasks but the
    /// first (Swarm keeps the last five).
    pub fn restart_count(&self) -> Result<u32> {
        match platform() {
            Platform::Compose => {
                Ok(docker::inspect(CONTROLLER, "{{.RestartCount}}")?.parse().unwrap_or(0))
            }
            Platform::Swarm => {
                let tasks = output(docker(["service", "ps", "-q", &swarm::controller_service()]))?;
                let count = u32::try_from(tasks.lines().count()).unwrap_or(u32::MAX);
                Ok(count.saturating_sub(1))
            }
        }
    }

    /// Arms a crash point: the controller aborts there once.
    pub fn crash_at(&self, point: &str) -> Result<()> {
        fs::write(stack_dir().join("controller/crash-at"), point)
            .context("cannot arm the crash point")
    }

    /// The operator's CLI, as built for the controller image.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let token = stack_dir().join("controller/token");
        let mut c = cmd(static_binary::path("controller").to_str().unwrap_or("controller"), args);
        c.env("CONTROLLER_TOKEN_FILE", token)
            .env("CONTROLLER_URL", format!("http://{}", rollout::ADDR));
        output(c)
    }

    /// What every answer to the documented request must be: the built
    /// model's version and its fare for that trip.
    pub fn expected_answer(&self) -> Result<(String, f64)> {
        let model = artifacts::load_model(&artifacts::model_path())?;
        let trip = model::Trip::from_values(model::DOCUMENTED_TRIP)
            .map_err(|v| anyhow::anyhow!("the documented trip is invalid: {v:?}"))?;
        Ok((model.model_version.clone(), model.predict(&trip)))
    }

    /// SIGKILLs the main process of a container (Docker's restart policy
    /// then applies, as after a crash).
    pub fn kill_process_of(&self, container: &str) -> Result<()> {
        let pid = docker::inspect(container, "{{.State.Pid}}")?;
        ensure!(pid != "0", "{container} is not running");
        run(cmd("kill", ["-KILL", pid.as_str()]))
    }

    /// The live upstream.conf.
    pub fn upstream(&self) -> Result<String> {
        Ok(fs::read_to_string(stack_dir().join("upstream/upstream.conf"))?)
    }

    /// What the controller printed lately, for a failure report.
    pub fn controller_log(&self) -> String {
        let container = self.controller().unwrap_or_else(|e| format!("({e:#})"));
        docker::logs(&container)
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `GET /` through nginx every 50 ms on fresh connections, in the
/// background, until stopped: what a user saw during a rollout.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Result<Answer, String>>>,
}

impl Traffic {
    pub fn start() -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let front = stack::front();
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let answer = Request::get("/").timeout(Duration::from_secs(5)).send(&front);
                seen.push(match answer {
                    Ok(r) if r.status == 200 => r.parse::<Answer>().map_err(|e| format!("{e:#}")),
                    Ok(r) => Err(format!("{} {}", r.status, r.text())),
                    Err(e) => Err(format!("{e:#}")),
                });
                thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        Traffic { stop, handle }
    }

    /// Stops and checks that every request got 200 from one of `allowed`
    /// (color, tag) pairs; returns how many were sent.
    pub fn expect_only(self, allowed: &[(&str, &str)]) -> Result<usize> {
        self.stop.store(true, Ordering::Relaxed);
        let seen =
            self.handle.join().map_err(|_| anyhow::anyhow!("the traffic thread panicked"))?;
        for (i, s) in seen.iter().enumerate() {
            match s {
                Ok(a)
                    if allowed.iter().any(|(c, t)| {
                        a.color.as_deref() == Some(*c) && a.version.as_deref() == Some(*t)
                    }) => {}
                Ok(a) => bail!(
                    "request {i} of {} was answered by {a:?}, expected one of {allowed:?}",
                    seen.len()
                ),
                Err(e) => bail!("request {i} of {} failed: {e}", seen.len()),
            }
        }
        ensure!(!seen.is_empty(), "no request was sent");
        Ok(seen.len())
    }
}

/// A named end-to-end scenario: what it found, or why it failed.
pub type Scenario = (&'static str, fn(&Fixture) -> Result<String>);
