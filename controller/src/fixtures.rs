//! Builders for the objects the decision tests are made of.

use std::time::Duration;

use bluegreen::Color;

use crate::manifest::{Desired, Probe};
use crate::observed::{Container, Health, Observed};

pub fn desired(tag: &str) -> Desired {
    Desired {
        repository: bluegreen::SERVICE_REPOSITORY.to_owned(),
        tag: tag.to_owned(),
        replicas: 1,
        health_timeout: Duration::from_secs(30),
        probe: Probe { path: "/".into(), predict: true, timeout: Duration::from_secs(5) },
        scale_down_delay: Duration::from_secs(3),
        gates: Default::default(),
        analysis: crate::manifest::Analysis { window: Duration::ZERO, ..Default::default() },
        auto_promote: true,
    }
}

pub fn container(color: Color, replica: u32, tag: &str, health: Health) -> Container {
    Container {
        id: format!("{color}-{replica}-{tag}"),
        name: bluegreen::container_name(color, replica),
        color,
        replica,
        tag: tag.to_owned(),
        state: "running".to_owned(),
        health,
        exit_code: None,
        started_at: None,
    }
}

pub fn observed(live: Option<Color>, containers: Vec<Container>) -> Observed {
    Observed { containers, live: Ok(live), backup: None, preview: None }
}
