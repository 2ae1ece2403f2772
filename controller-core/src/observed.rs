//! What a platform reports about the world, as plain data in neutral
//! words: the replicas of each color (whatever runs them: compose
//! containers, Swarm tasks, pods) and a read-back of the router (which
//! color it sends traffic to, what it holds in reserve, what it previews).
//! Built fresh for every reconcile; never remembered.

use bluegreen::Color;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// A replica's health check (`none` when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::None => "none",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// Where a replica is in its life. The words are Docker's, which every
/// backend can map to (a Swarm task `pending` is `created`, a pod
/// `CrashLoopBackOff` is `restarting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Restarting,
    Paused,
    Exited,
    Dead,
    Removing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Paused => "paused",
            State::Exited => "exited",
            State::Dead => "dead",
            State::Removing => "removing",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One replica of a color.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub name: String,
    pub color: Color,
    /// 1-based replica number.
    pub replica: u32,
    pub tag: String,
    /// The repository it was started from, and the digest it runs, where
    /// the backend recorded them (a replica from before they were kept:
    /// unknown, and so no reason to replace it).
    pub image: Option<String>,
    pub digest: Option<String>,
    pub state: State,
    pub health: Health,
    pub exit_code: Option<i64>,
    /// When it last started, where the backend knows it (a restart moves
    /// it). Not for the core's decisions: a router that resolves replicas
    /// at load uses it to say it is stale.
    pub started_at: Option<Timestamp>,
}

impl Replica {
    pub fn is_running(&self) -> bool {
        self.state == State::Running
    }

    /// Running and passing its health check: it can take traffic.
    pub fn is_ready(&self) -> bool {
        self.is_running() && self.health == Health::Healthy
    }

    /// Down for good: nothing (no restart policy) brings it back by itself.
    pub fn is_down(&self) -> bool {
        matches!(self.state, State::Created | State::Exited | State::Dead)
    }

    /// Whether it runs what is asked: the tag, from the repository, at the
    /// digest the tag now names (each where known).
    pub fn runs(&self, repository: &str, tag: &str, digest: Option<&str>) -> bool {
        self.tag == tag
            && self.image.as_deref().is_none_or(|i| i == repository)
            && match (self.digest.as_deref(), digest) {
                (Some(have), Some(want)) => have == want,
                _ => true,
            }
    }
}

/// What the registry says a tag names now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `repository:tag`.
    pub image: String,
    /// `sha256:…`.
    pub digest: String,
}

/// What the router can do besides sending traffic to one color.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// A second entry point that shows another color (the pause before a
    /// manual promotion).
    pub preview: bool,
    /// Servers held in reserve, taking what the live color refuses (the
    /// old color while the new one is proven).
    pub fallback: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities { preview: true, fallback: true };
    pub const NONE: Capabilities = Capabilities { preview: false, fallback: false };
}

/// The router as read back now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    /// The color traffic goes to, `None` when no color is live, or why
    /// the router's state could not be read.
    pub live: Result<Option<Color>, String>,
    /// The color held in reserve, if any.
    pub fallback: Option<Color>,
    /// The color on the preview entry point, if any.
    pub preview: Option<Color>,
    /// How many of the live color's replicas the router names.
    pub servers: u32,
    /// A part of the traffic tier (the router, the edge) down for good,
    /// by name: nothing brings it back by itself.
    pub down: Vec<String>,
    /// The router's view of the live replicas is out of date (one was
    /// restarted since the router last took them in) and must be
    /// refreshed.
    pub stale: bool,
    pub capabilities: Capabilities,
}

impl Traffic {
    /// A router that names `live` and nothing else.
    pub fn to(live: Option<Color>) -> Traffic {
        Traffic {
            live: Ok(live),
            fallback: None,
            preview: None,
            servers: 1,
            down: Vec::new(),
            stale: false,
            capabilities: Capabilities::ALL,
        }
    }
}

/// The world as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub replicas: Vec<Replica>,
    pub traffic: Traffic,
    /// Whether the front, as users reach it, last answered: `None` before
    /// the first check.
    pub front: Option<Result<(), String>>,
    /// The desired tag's digest, as the registry last said (`None`: not
    /// known, e.g. the registry is down).
    pub resolved: Option<Resolved>,
}

impl Observed {
    /// The replicas of one color, in replica order.
    pub fn of(&self, color: Color) -> Vec<&Replica> {
        let mut of: Vec<&Replica> = self.replicas.iter().filter(|c| c.color == color).collect();
        of.sort_by_key(|c| c.replica);
        of
    }

    /// The live color, if the router names one.
    pub fn live_color(&self) -> Option<Color> {
        self.traffic.live.as_ref().ok().copied().flatten()
    }

    /// The tag the live color runs when all its replicas agree on one.
    pub fn live_tag(&self) -> Option<&str> {
        let live = self.of(self.live_color()?);
        let first = live.first()?.tag.as_str();
        live.iter().all(|c| c.tag == first).then_some(first)
    }

    /// The digest the registry names for `image`, when that is what was
    /// resolved.
    pub fn digest_of(&self, image: &str) -> Option<&str> {
        self.resolved.as_ref().filter(|r| r.image == image).map(|r| r.digest.as_str())
    }

    /// The digest the live color runs, when its replicas agree on one.
    pub fn live_digest(&self) -> Option<&str> {
        let live = self.of(self.live_color()?);
        let first = live.first()?.digest.as_deref()?;
        live.iter().all(|c| c.digest.as_deref() == Some(first)).then_some(first)
    }

    /// Whether some replica of the live color runs and is healthy.
    pub fn serving(&self) -> bool {
        self.live_color().is_some_and(|l| self.of(l).iter().any(|c| c.is_ready()))
    }
}
