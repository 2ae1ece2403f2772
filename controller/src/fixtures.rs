//! What the runtime's unit tests are made of.

use controller_core::manifest::{self, Desired};

/// The smallest valid desired state, of tag `v1`.
pub fn desired() -> Desired {
    let text = "apiVersion: deploy.taxi-fare.io/v1\nkind: Rollout\nmetadata:\n  name: t\n\
                spec:\n  image:\n    repository: r/s\n    tag: v1\n";
    manifest::parse(text).expect("a valid manifest")
}
