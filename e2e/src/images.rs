//! The images the scenarios deploy, all made from the real service image
//! of the last build and pushed under tags that start with `e2e-`: two
//! good tags of the same image, one whose model file is missing (it runs
//! but never turns ready: a level-1 rollback), one that listens on a port
//! nginx does not proxy to (healthy, but unreachable through nginx: a
//! level-2 rollback), a tag that is never pushed, and two other models in
//! the real service: one whose artifact promises other fares than the
//! image computes (its golden trips' fares moved by a dollar), and a worse
//! one (trained on synthetic trips, a higher held-out RMSE than the
//! reference model's). Two hostile images run this crate's `hostile`
//! binary (src/bin/hostile.rs) in place of the service, on the same files:
//! one answers a prediction with 1 GiB, one never answers at all. The
//! webhook receiver (src/bin/webhook-receiver.rs) has an image of its own.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use bluegreen::service_image;

use xtask::effects::docker::{self, docker};
use xtask::effects::paths;
use xtask::effects::process::{cmd, run};
use xtask::images::static_binary;
use xtask::stages::artifacts::{self, Built};
use xtask::stages::train;

pub const GOOD_A: &str = "e2e-good-a";
pub const GOOD_B: &str = "e2e-good-b";
pub const NO_MODEL: &str = "e2e-no-model";
pub const WRONG_PORT: &str = "e2e-wrong-port";
pub const NEVER_BUILT: &str = "e2e-never-built";
pub const GOLDEN_MISMATCH: &str = "e2e-golden-mismatch";
pub const WORSE_MODEL: &str = "e2e-worse-model";
pub const SHORT_TIMEOUT: &str = "e2e-short-timeout";
pub const RELABELLED: &str = "e2e-relabelled";
pub const HOSTILE_HUGE: &str = "e2e-hostile-huge";
pub const HOSTILE_SILENT: &str = "e2e-hostile-silent";
/// The reference model with every fare $3 higher, and consistent with
/// itself (its golden trips say so too, its metrics are the same): only a
/// comparison with the live color's answers tells it apart.
pub const SHIFTED: &str = "e2e-shifted";
/// The webhook receiver's image: local only (no color runs it).
pub const WEBHOOK_RECEIVER: &str = "taxi-fare-e2e/webhook-receiver:latest";

/// Tags and pushes the scenario images.
pub fn prepare(built: &Built) -> Result<()> {
    let stamp = paths::target().join("images/e2e/prepared");
    let this = prepared_for(built);
    if fs::read_to_string(&stamp).ok().as_deref() == Some(this.as_str()) && all_pushed(built)? {
        println!("e2e: the images of this build are prepared and pushed already");
        return Ok(());
    }
    let _ = fs::remove_file(&stamp);
    make_all(built)?;
    fs::write(&stamp, this).context("cannot write the e2e images' stamp")
}

/// What the images are made from: the build's service and nginx images,
/// and this binary (whose `hostile` and webhook receiver they carry), by
/// its modification time.
fn prepared_for(built: &Built) -> String {
    let exe = std::env::current_exe()
        .and_then(fs::metadata)
        .and_then(|m| m.modified())
        .map(|t| format!("{t:?}"))
        .unwrap_or_default();
    format!("{}\n{}\n{exe}\n", built.service, built.nginx)
}

/// Whether the registry has every tag [`prepare`] pushes, the good ones
/// still this build's (another checkout may push the same tags), and
/// the Engine the receiver's image.
fn all_pushed(built: &Built) -> Result<bool> {
    let digest = |reference: &str| -> Option<String> {
        let tag = reference.rsplit_once(':')?.1;
        let path = format!("/v2/taxi/service/manifests/{tag}");
        let answer = xtask::effects::http::Request::get(&path)
            .header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
            .send(bluegreen::REGISTRY_ADDR)
            .ok()?;
        answer.header("Docker-Content-Digest").map(str::to_owned)
    };
    let ours = digest(&built.service);
    if ours.is_none() || digest(&service_image(GOOD_A)) != ours {
        return Ok(false);
    }
    let listed = xtask::effects::http::Request::get("/v2/taxi/service/tags/list")
        .send(bluegreen::REGISTRY_ADDR);
    let Ok(listed) = listed else { return Ok(false) };
    let tags: Vec<String> = listed
        .json()
        .ok()
        .and_then(|v| serde_json::from_value(v["tags"].clone()).ok())
        .unwrap_or_default();
    let wanted = [
        GOOD_A,
        GOOD_B,
        NO_MODEL,
        WRONG_PORT,
        SHORT_TIMEOUT,
        RELABELLED,
        GOLDEN_MISMATCH,
        WORSE_MODEL,
        HOSTILE_HUGE,
        HOSTILE_SILENT,
        SHIFTED,
    ];
    Ok(wanted.iter().all(|w| tags.iter().any(|t| t == w))
        && docker::image_id(WEBHOOK_RECEIVER)?.is_some())
}

/// Makes and pushes every image of the scenarios.
fn make_all(built: &Built) -> Result<()> {
    for tag in [GOOD_A, GOOD_B] {
        run(docker(["tag", &built.service, &service_image(tag)]))?;
        docker::push(&service_image(tag))?;
    }
    let variants = [
        (NO_MODEL, "ENV MODEL_PATH=/model/missing.json"),
        (WRONG_PORT, "ENV PORT=32001"),
        // Small batches pass every gate; large ones time out with 503.
        (SHORT_TIMEOUT, "ENV REQUEST_TIMEOUT_SECS=0.002"),
        // The good image with one more label: another digest.
        (RELABELLED, "LABEL io.taxi-fare.e2e=relabelled"),
    ];
    for (tag, change) in variants {
        let context = paths::target().join("images/e2e").join(tag);
        paths::remove_dir_if_present(&context)?;
        fs::create_dir_all(&context)?;
        let dockerfile = format!(
            "# A broken variant of the real service image, for `cargo xtask e2e`.\nFROM {}\n{change}\n",
            built.service
        );
        fs::write(context.join("Dockerfile"), dockerfile)
            .with_context(|| format!("cannot write the {tag} Dockerfile"))?;
        docker::build(&context, &[&service_image(tag)], &[])?;
        docker::push(&service_image(tag))?;
    }
    // Fares its golden trips promise a dollar off what the image computes.
    let tampered = with_golden_moved(model_with(|_| Ok(()))?, 1.0)?;
    with_model(built, GOLDEN_MISMATCH, &serde_json::to_string_pretty(&tampered)?)?;
    // Every fare $3 higher, and the golden trips saying so too.
    let shifted = with_golden_moved(
        model_with(|m| {
            let intercept = m["intercept"].as_f64().context("the built model has no intercept")?;
            m["intercept"] = serde_json::json!(intercept + 3.0);
            Ok(())
        })?,
        3.0,
    )?;
    with_model(built, SHIFTED, &serde_json::to_string_pretty(&shifted)?)?;

    let dir = paths::target().join("images/e2e/worse-model-data");
    let trainer = train::build_trainer()?;
    let trips = dir.join("synthetic-20000-7.csv");
    train::ensure_synthetic(&trainer, &trips, 20_000, 7)?;
    let worse = dir.join("model.json");
    let mut c = cmd(trainer.to_str().unwrap_or("trainer"), ["train", "--csv"]);
    c.arg(&trips).arg("--output").arg(&worse).arg("--metrics").arg(dir.join("metrics.json"));
    run(c)?;
    with_model(built, WORSE_MODEL, &fs::read_to_string(&worse)?)?;
    hostile(built)?;
    webhook_receiver()
}

/// The built model artifact as JSON, changed by `change`.
fn model_with(
    change: impl FnOnce(&mut serde_json::Value) -> Result<()>,
) -> Result<serde_json::Value> {
    let mut model: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(artifacts::model_path())?)?;
    change(&mut model)?;
    Ok(model)
}

/// `model` with every golden trip's fare moved by `by` dollars.
fn with_golden_moved(mut model: serde_json::Value, by: f64) -> Result<serde_json::Value> {
    let golden =
        model["golden"].as_array_mut().context("the built model carries no golden trips")?;
    for trip in golden {
        let fare = trip["fare"].as_f64().context("a golden trip without a fare")?;
        trip["fare"] = serde_json::json!(fare + by);
    }
    Ok(model)
}

/// The webhook receiver (src/bin/webhook-receiver.rs) alone in a
/// `scratch` image, as an unprivileged user.
fn webhook_receiver() -> Result<()> {
    let binary = static_binary::path("webhook-receiver");
    let context = paths::target().join("images/e2e/webhook-receiver");
    paths::remove_dir_if_present(&context)?;
    fs::create_dir_all(&context)?;
    let copy = context.join("webhook-receiver");
    fs::copy(&binary, &copy).with_context(|| format!("cannot copy {}", binary.display()))?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
    let dockerfile = "# The other end of the controller's webhook, for `cargo xtask e2e`.
                      FROM scratch
                      COPY webhook-receiver /webhook-receiver
                      USER 65534:65534
                      ENTRYPOINT [\"/webhook-receiver\"]
";
    fs::write(context.join("Dockerfile"), dockerfile)
        .context("cannot write the webhook receiver's Dockerfile")?;
    docker::build(&context, &[WEBHOOK_RECEIVER], &[])
}

/// The hostile images: the real service image (its model file and
/// `PORT` kept, so `GET /model` serves the real artifact) with the
/// `hostile` binary as its entry point and health check, in the mode each
/// tag names.
fn hostile(built: &Built) -> Result<()> {
    // `cargo build -p e2e` with the images' flags builds every binary of
    // this crate; `build` checks the crate's own, and `hostile` is linked
    // by the same command with the same flags.
    static_binary::build(&["e2e"])?;
    let binary = static_binary::path("hostile");
    for (tag, mode) in [(HOSTILE_HUGE, "huge"), (HOSTILE_SILENT, "silent")] {
        let context = paths::target().join("images/e2e").join(tag);
        paths::remove_dir_if_present(&context)?;
        fs::create_dir_all(&context)?;
        let copy = context.join("hostile");
        fs::copy(&binary, &copy).with_context(|| format!("cannot copy {}", binary.display()))?;
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
        // The service image's user, files and HEALTHCHECK timings; only
        // the program differs. Setting ENTRYPOINT clears any inherited CMD.
        let dockerfile = format!(
            "# A hostile color ({mode}) on the real service image, for `cargo xtask e2e`.\n\
             FROM {}\n\
             COPY hostile /hostile\n\
             ENV HOSTILE_MODE={mode}\n\
             HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=3 \\\n    \
             CMD [\"/hostile\", \"healthcheck\"]\n\
             ENTRYPOINT [\"/hostile\"]\n\
             CMD [\"serve\"]\n",
            built.service
        );
        fs::write(context.join("Dockerfile"), dockerfile)
            .with_context(|| format!("cannot write the {tag} Dockerfile"))?;
        docker::build(&context, &[&service_image(tag)], &[])?;
        docker::push(&service_image(tag))?;
    }
    Ok(())
}

/// The real service image with another model artifact in it.
fn with_model(built: &Built, tag: &str, model_json: &str) -> Result<()> {
    let context = paths::target().join("images/e2e").join(tag);
    paths::remove_dir_if_present(&context)?;
    fs::create_dir_all(&context)?;
    let dockerfile = format!(
        "# The real service image with another model, for `cargo xtask e2e`.\nFROM {}\nCOPY model.json /model/model.json\n",
        built.service
    );
    fs::write(context.join("Dockerfile"), dockerfile)?;
    fs::write(context.join("model.json"), model_json)?;
    docker::build(&context, &[&service_image(tag)], &[])?;
    docker::push(&service_image(tag))
}
