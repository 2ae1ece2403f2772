//! The CLI commands that talk to a running controller over its API.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;

use controller::api::{ABORT, Accepted, PROMOTE, ROLLBACK, SET_IMAGE, SetImage};
use controller_core::record::{Finished, Verdict};
use controller_core::status::Status;

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http: controller::color_http::client(),
        }
    }

    async fn read<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T> {
        let response = request.send().await.with_context(|| {
            format!("the controller does not answer at {} (is `controller run` up?)", self.base)
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{what}: the controller answered {status}: {message}");
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: unexpected answer {text:?}"))
    }

    pub async fn status(&self) -> Result<Status> {
        self.read(self.http.get(format!("{}/status", self.base)), "status").await
    }

    pub async fn set_image(&self, token: &str, tag: &str) -> Result<Accepted> {
        let request = self
            .http
            .post(format!("{}{SET_IMAGE}", self.base))
            .bearer_auth(token)
            .json(&SetImage { tag: tag.into() });
        self.read(request, "set-image").await
    }

    /// Promotes (or aborts) the paused rollout.
    pub async fn decide(&self, token: &str, promote: bool) -> Result<Accepted> {
        let (path, what) = if promote { (PROMOTE, "promote") } else { (ABORT, "abort") };
        self.read(self.http.post(format!("{}{path}", self.base)).bearer_auth(token), what).await
    }

    pub async fn rollback(&self, token: &str) -> Result<Accepted> {
        self.read(self.http.post(format!("{}{ROLLBACK}", self.base)).bearer_auth(token), "rollback")
            .await
    }
}

pub fn read_token(path: &Path) -> Result<String> {
    let token = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read the API token at {} (see --token-file)", path.display())
    })?;
    Ok(token.trim().to_owned())
}

/// `controller status`: the document as a person reads it.
pub fn summary(s: &Status) -> String {
    let mut out = String::new();
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    out += &format!("phase     {}", s.phase);
    if let Some(step) = &s.step {
        out += &format!(" (step {step})");
    }
    out += "\n";
    if let Some(reason) = &s.reason {
        out += &format!("reason    {reason}\n");
    }
    out += &format!(
        "desired   {} ({} replicas) from {}\n",
        or(&s.desired.tag),
        s.desired.replicas.map_or("-".into(), |r| r.to_string()),
        s.desired.source
    );
    if let Some(e) = &s.desired.error {
        out += &format!("manifest  REFUSED: {e}\n");
    }
    out += &format!(
        "active    {} {}\n",
        s.active.color.map_or("-".into(), |c| c.to_string()),
        or(&s.active.tag)
    );
    for (name, containers) in [("blue", &s.colors.blue), ("green", &s.colors.green)] {
        let list = containers.as_ref().map_or("-".into(), |cs| {
            cs.iter()
                .map(|c| format!("{} {} {}/{}", c.name, c.tag, c.state, c.health))
                .collect::<Vec<_>>()
                .join(", ")
        });
        out += &format!("{name:<9} {list}\n");
    }
    if let Some(l) = &s.last {
        out += &format!("last      {}\n", history_line(l));
    }
    if let Some(e) = &s.error {
        out += &format!("error     {e}\n");
    }
    out
}

pub fn history_line(f: &Finished) -> String {
    let result = match (f.result, f.level) {
        (Verdict::Succeeded, _) => "succeeded".to_owned(),
        (_, Some(level)) => format!("rolled back (level {level})"),
        _ => "rolled back".to_owned(),
    };
    let reason = f.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    format!(
        "#{} {} → {} {} in {} ms{}",
        f.summary.revision, f.tag, f.summary.color, result, f.duration_ms, reason
    )
}
