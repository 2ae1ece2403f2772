//! The Swarm backend on a real Docker Engine: a one-node swarm, an
//! overlay network and a router service of the test's own, and a color
//! started, observed healthy, routed to, read back and removed through
//! the `Swarm` backend itself.
//!
//! Ignored by the Docker-less unit stage; `cargo xtask ci` runs it after
//! the build (step `swarm-engine`), and by hand on a machine with Docker
//! and the images `cargo xtask build` makes:
//! `cargo test -p controller --test swarm -- --ignored`. It fails, not
//! skips, without Docker or without the images. `SWARMTEST_APP_IMAGE`
//! (default: the last build's `localhost:5000/taxi/service:latest`, which
//! has a HEALTHCHECK) and `SWARMTEST_NGINX_IMAGE` (default `taxi/nginx:latest`)
//! name others.
//!
//! Everything it creates is named `taxi-fare-swarmtest*` and removed by a
//! guard even when it fails; it leaves the swarm (and removes the
//! `docker_gwbridge` network that leaves behind) only when the Engine was
//! in no swarm before it began. `docker swarm init --advertise-addr
//! 127.0.0.1` works for a one-node swarm on Docker 20.10 (checked on this
//! machine): no traffic leaves loopback and the swarm's own networks.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bluegreen::{Color, Upstream};
use controller::platform::docker::Engine;
use controller::platform::swarm::{Config, Swarm};
use controller::platform::{Resources, Router, Spec, Workloads};

const STACK: &str = "taxi-fare-swarmtest";
const NETWORK: &str = "taxi-fare-swarmtest_private";
const ROUTER: &str = "taxi-fare-swarmtest_nginx";

/// `docker …`, its stdout when it succeeds.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `docker {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("`docker {}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Removes what the test made, whatever happened.
struct Cleanup {
    leave_swarm: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for service in [
            ROUTER,
            &bluegreen::swarm_service(STACK, Color::Blue),
            &bluegreen::swarm_service(STACK, Color::Green),
        ] {
            let _ = docker(&["service", "rm", service]);
        }
        // A network is in use until the tasks' containers are gone.
        for _ in 0..30 {
            if docker(&["network", "rm", NETWORK]).is_ok()
                || docker(&["network", "inspect", NETWORK]).is_err()
            {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if self.leave_swarm {
            let _ = docker(&["swarm", "leave", "--force"]);
            let _ = docker(&["network", "rm", "docker_gwbridge"]);
        }
    }
}

fn app_image() -> String {
    if let Ok(image) = std::env::var("SWARMTEST_APP_IMAGE") {
        return image;
    }
    // The last build's service (`cargo xtask build` tags it `latest` too),
    // never the newest image of the repository: e2e tags hostile and
    // broken variants of it there.
    let image = format!("{}:latest", bluegreen::SERVICE_REPOSITORY);
    if docker(&["image", "inspect", "--format", "{{.Id}}", &image]).is_err() {
        panic!(
            "no {image} on this Engine: run `cargo xtask build` first, or set SWARMTEST_APP_IMAGE"
        );
    }
    image
}

/// Until `check` is true, at most `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let until = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < until {
        match check().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{what} did not happen within {limit:?} (last error: {last})");
}

fn write(dir: &Path, name: &str, text: &str) {
    if let Err(e) = std::fs::write(dir.join(name), text) {
        panic!("cannot write {name}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The unit stage has no Docker; `cargo xtask ci` runs it after the build
// (its `swarm-engine` step), with the images just built.
#[ignore = "needs Docker and the built images: run by `cargo xtask ci` (step swarm-engine)"]
async fn a_color_starts_healthy_takes_traffic_and_goes() {
    let state = match docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) {
        Ok(s) => s,
        Err(e) => panic!("this test needs a Docker Engine: {e}"),
    };
    let app = app_image();
    let nginx =
        std::env::var("SWARMTEST_NGINX_IMAGE").unwrap_or_else(|_| "taxi/nginx:latest".into());
    if let Err(e) = docker(&["image", "inspect", "--format", "{{.Id}}", &nginx]) {
        panic!("no router image {nginx}: run `cargo xtask build` first ({e})");
    }
    let _cleanup = Cleanup { leave_swarm: state == "inactive" };
    if state == "inactive" {
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    docker(&["network", "create", "--driver", "overlay", "--attachable", NETWORK])
        .unwrap_or_else(|e| panic!("{e}"));

    // The router: the project's nginx, its upstream directory from here.
    let upstream = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(upstream.path(), "upstream.conf", Upstream::render_none());
    write(upstream.path(), "preview.conf", &Upstream::render_preview(None));
    write(upstream.path(), "mirror.conf", &Upstream::render_mirror(None));
    let mount =
        format!("type=bind,src={},dst=/etc/nginx/upstream,readonly", upstream.path().display());
    docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        ROUTER,
        "--constraint",
        "node.role==manager",
        "--network",
        NETWORK,
        "--mount",
        &mount,
        "--label",
        &format!("{}={STACK}", bluegreen::label::STACK),
        &nginx,
    ])
    .unwrap_or_else(|e| panic!("{e}"));

    let engine = Engine::connect().await.unwrap_or_else(|e| panic!("{e}"));
    let config = Config {
        stack: STACK.into(),
        network: NETWORK.into(),
        upstream_dir: upstream.path().to_owned(),
        front: "http://127.0.0.1:9".into(),
    };
    let swarm = Swarm::new(engine, config).await.unwrap_or_else(|e| panic!("{e}"));

    let tag = app.rsplit_once(':').map_or("latest", |(_, t)| t).to_owned();
    let spec = Spec {
        image: app.clone(),
        tag: tag.clone(),
        replicas: 2,
        resources: Resources::default(),
        digest: None,
    };
    let started =
        tokio::time::timeout(Duration::from_secs(300), swarm.start(Color::Blue, spec.clone()))
            .await;
    match started {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("start: {e}"),
        Err(_) => panic!("start did not return within 5 min"),
    }
    // Again: idempotent, the service is kept.
    swarm.start(Color::Blue, spec).await.unwrap_or_else(|e| panic!("start again: {e}"));

    eventually("both replicas healthy", Duration::from_secs(120), || async {
        let replicas = swarm.replicas().await.map_err(|e| e.to_string())?;
        let blue: Vec<_> = replicas.iter().filter(|r| r.color == Color::Blue).collect();
        Ok(blue.len() == 2 && blue.iter().all(|r| r.is_ready() && r.tag == tag))
    })
    .await;
    let replicas = swarm.replicas().await.unwrap_or_else(|e| panic!("{e}"));
    let mut slots: Vec<u32> = replicas.iter().map(|r| r.replica).collect();
    slots.sort_unstable();
    assert_eq!(slots, [1, 2], "{replicas:?}");

    let endpoints = swarm.endpoints(Color::Blue).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(endpoints.len(), 2, "{endpoints:?}");
    // Overlay addresses live in the swarm's network namespaces; from the
    // host an address of them may be routed anywhere, so no request goes
    // to them from here: the router below proves them.
    eventually("the router running", Duration::from_secs(60), || async {
        let tasks = docker(&[
            "service",
            "ps",
            ROUTER,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}",
        ])?;
        Ok(tasks.starts_with("Running"))
    })
    .await;
    swarm.route(Some(Color::Blue), 2, None).await.unwrap_or_else(|e| panic!("route: {e}"));
    let traffic = swarm.read(&replicas).await;
    assert_eq!(traffic.live, Ok(Some(Color::Blue)), "{traffic:?}");
    assert_eq!((traffic.servers, traffic.stale), (2, false), "{traffic:?}");
    assert!(traffic.down.is_empty(), "{traffic:?}");
    let text = std::fs::read_to_string(upstream.path().join("upstream.conf")).unwrap_or_default();
    for url in &endpoints {
        let address = url.trim_start_matches("http://").rsplit_once(':').map_or("", |(a, _)| a);
        assert!(text.contains(&format!("server {address}:{}", bluegreen::APP_PORT)), "{text}");
    }
    // Through the router, from inside its container (the image has bash,
    // no HTTP client): nginx proxies to the addresses it names, and blue
    // of the tag answers.
    let router =
        docker(&["ps", "-q", "--filter", &format!("label=com.docker.swarm.service.name={ROUTER}")])
            .unwrap_or_default();
    assert!(!router.is_empty(), "no router container");
    let get = "exec 3<>/dev/tcp/127.0.0.1/80 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && \
               timeout 5 cat <&3";
    let answer = docker(&["exec", &router, "bash", "-c", get]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        answer.contains(" 200 ") && answer.contains("\"color\":\"blue\"") && answer.contains(&tag),
        "through the router: {answer}"
    );
    // The preview: shown, read back, taken down.
    swarm.preview(Some((Color::Blue, 1))).await.unwrap_or_else(|e| panic!("preview: {e}"));
    assert_eq!(swarm.read(&replicas).await.preview, Some(Color::Blue));
    swarm.preview(None).await.unwrap_or_else(|e| panic!("preview: {e}"));

    // No color: the router is back on nowhere, then the color goes.
    swarm.route(None, 0, None).await.unwrap_or_else(|e| panic!("route: {e}"));
    assert_eq!(swarm.read(&replicas).await.live, Ok(None));
    swarm.remove(Color::Blue, true).await.unwrap_or_else(|e| panic!("remove: {e}"));
    let left = swarm.replicas().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(left.iter().all(|r| r.color != Color::Blue), "{left:?}");
    swarm.remove(Color::Blue, true).await.unwrap_or_else(|e| panic!("remove again: {e}"));
}
