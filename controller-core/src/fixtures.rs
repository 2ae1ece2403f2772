//! Builders for the objects the core's tests are made of.

use std::time::Duration;

use bluegreen::Color;

use crate::manifest::{Analysis, Desired, Probe};
use crate::observed::{Health, Observed, Replica, State, Traffic};

pub fn desired(tag: &str) -> Desired {
    Desired {
        repository: bluegreen::SERVICE_REPOSITORY.to_owned(),
        tag: tag.to_owned(),
        replicas: 1,
        health_timeout: Duration::from_secs(30),
        probe: Probe { path: "/".into(), predict: true, timeout: Duration::from_secs(5) },
        scale_down_delay: Duration::from_secs(3),
        gates: Default::default(),
        analysis: Analysis { window: Duration::ZERO, ..Default::default() },
        auto_promote: true,
        resources: Default::default(),
        strategy: Default::default(),
        shadow: None,
    }
}

pub fn replica(color: Color, replica: u32, tag: &str, health: Health) -> Replica {
    Replica {
        id: format!("{color}-{replica}-{tag}"),
        name: bluegreen::container_name(color, replica),
        color,
        replica,
        tag: tag.to_owned(),
        image: None,
        digest: None,
        state: State::Running,
        health,
        exit_code: None,
        started_at: None,
    }
}

pub fn observed(live: Option<Color>, replicas: Vec<Replica>) -> Observed {
    Observed { replicas, traffic: Traffic::to(live), front: None, resolved: None }
}
