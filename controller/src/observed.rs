//! What the platform reports about the world, as plain data: the app
//! containers found by label, and the color nginx's upstream.conf sends
//! traffic to. Built fresh for every reconcile; never remembered.

use bluegreen::Color;
use serde::Serialize;

use crate::clock::Timestamp;

/// Docker's health status of a container (`none` when it has no check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// One app container of a color.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub color: Color,
    /// 1-based replica number, from compose's container-number label.
    pub replica: u32,
    pub tag: String,
    /// Docker's state: `running`, `exited`, `restarting`, `created`, …
    pub state: String,
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// When it last started (a restart by Docker moves it).
    #[serde(skip)]
    pub started_at: Option<Timestamp>,
}

impl Container {
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

/// The world as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub containers: Vec<Container>,
    /// The color upstream.conf names, `None` when no color is live, or why
    /// the file could not be read.
    pub live: Result<Option<Color>, String>,
    /// The color upstream.conf lists as backup, if any.
    pub backup: Option<Color>,
    /// The color preview.conf shows on the preview port, if any.
    pub preview: Option<Color>,
}

impl Observed {
    /// The containers of one color, in replica order.
    pub fn of(&self, color: Color) -> Vec<&Container> {
        let mut of: Vec<&Container> = self.containers.iter().filter(|c| c.color == color).collect();
        of.sort_by_key(|c| c.replica);
        of
    }

    /// The live color, if upstream.conf names one.
    pub fn live_color(&self) -> Option<Color> {
        self.live.as_ref().ok().copied().flatten()
    }

    /// The tag the live color runs when all its containers agree on one.
    pub fn live_tag(&self) -> Option<&str> {
        let live = self.of(self.live_color()?);
        let first = live.first()?.tag.as_str();
        live.iter().all(|c| c.tag == first).then_some(first)
    }

    /// Whether a color has exactly `replicas` running, healthy containers
    /// of `tag`, and nothing else.
    pub fn serves(&self, color: Color, tag: &str, replicas: u32) -> bool {
        let of = self.of(color);
        of.len() == replicas as usize
            && of.iter().all(|c| c.tag == tag && c.is_running() && c.health == Health::Healthy)
    }
}
