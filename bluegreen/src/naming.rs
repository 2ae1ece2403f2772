//! Names and addresses of the stack: the compose project, its labels and
//! network, container names, ports, the registry and the image repository.

use crate::Color;

/// The compose project: its containers, network and labels carry it.
pub const PROJECT: &str = "taxi-fare";
/// The stack's private network, as compose names it (`<project>_private`).
pub const NETWORK: &str = "taxi-fare_private";
/// The Swarm stack's overlay network (`<stack>_overlay`): a name of its
/// own, so a compose network the Engine has not let go of yet cannot
/// stand in its way.
pub const SWARM_NETWORK: &str = "taxi-fare_overlay";
/// The port every app container listens on, and nginx proxies to.
pub const APP_PORT: u16 = 32000;
/// The nginx compose service that routes to the live color (reloaded at
/// each switch).
pub const NGINX_SERVICE: &str = "nginx";
/// The nginx compose service clients connect to (never reloaded by a
/// deployment).
pub const EDGE_SERVICE: &str = "edge";
/// The controller compose service.
pub const CONTROLLER_SERVICE: &str = "controller";
/// The controller API's port.
pub const CONTROLLER_PORT: u16 = 9300;

/// The local registry: where the daemon's clients push, on loopback.
pub const REGISTRY_ADDR: &str = "127.0.0.1:5000";
/// The registry as image references name it (Docker trusts `localhost`
/// without TLS).
pub const REGISTRY_HOST: &str = "localhost:5000";
/// The service image repository.
pub const SERVICE_REPOSITORY: &str = "localhost:5000/taxi/service";

/// Container labels. Compose's own labels let `docker-compose -p taxi-fare
/// ps` list the controller's containers as app_blue and app_green.
pub mod label {
    pub const PROJECT: &str = "com.docker.compose.project";
    pub const SERVICE: &str = "com.docker.compose.service";
    pub const NUMBER: &str = "com.docker.compose.container-number";
    pub const ONEOFF: &str = "com.docker.compose.oneoff";
    /// `app`, `proxy`, `controller`, or a test's own role.
    pub const ROLE: &str = "io.taxi-fare.role";
    pub const COLOR: &str = "io.taxi-fare.color";
    /// The image tag the container runs: what a rollout deployed.
    pub const TAG: &str = "io.taxi-fare.tag";
    /// The repository it was started from, and the digest it runs
    /// (`sha256:…`): what identifies a release, the tag alone does not.
    pub const IMAGE: &str = "io.taxi-fare.image";
    pub const DIGEST: &str = "io.taxi-fare.digest";
    pub const ROLE_APP: &str = "app";
    /// What `docker stack deploy` marks a stack's services and containers
    /// with: the Swarm backend marks the colors' services with it too, so
    /// `docker stack services <stack>` lists them. (Not compose's project
    /// label: the compose backend would take them for its own containers.)
    pub const STACK: &str = "com.docker.stack.namespace";
}

/// `taxi-fare_app_blue`: the Swarm service of a color in a stack, named
/// as `docker stack deploy` names a stack's services (`<stack>_<service>`).
pub fn swarm_service(stack: &str, color: Color) -> String {
    format!("{stack}_{}", color.service())
}

/// `taxi-fare_app_blue_1`: compose's name for replica `n` (from 1).
pub fn container_name(color: Color, replica: u32) -> String {
    format!("{PROJECT}_{}_{replica}", color.service())
}

/// The host port (on 127.0.0.1) the first replica of a color publishes,
/// so an operator can reach a color without nginx.
pub fn published_port(color: Color) -> u16 {
    match color {
        Color::Blue => 5001,
        Color::Green => 5002,
    }
}

/// `localhost:5000/taxi/service:<tag>`.
pub fn service_image(tag: &str) -> String {
    format!("{SERVICE_REPOSITORY}:{tag}")
}

/// The commands that test nginx's configuration and reload it, run inside
/// the nginx container. A reload starts workers on the new configuration
/// and lets the old ones finish what they hold.
pub const NGINX_TEST: [&str; 3] = ["nginx", "-t", "-q"];
pub const NGINX_RELOAD: [&str; 3] = ["nginx", "-s", "reload"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_compose() {
        assert_eq!(container_name(Color::Green, 2), "taxi-fare_app_green_2");
        assert_eq!(NETWORK, format!("{PROJECT}_private"));
        assert!(SERVICE_REPOSITORY.starts_with(REGISTRY_HOST));
        assert_eq!(service_image("abc"), "localhost:5000/taxi/service:abc");
        assert_ne!(published_port(Color::Blue), published_port(Color::Green));
        assert_eq!(swarm_service(PROJECT, Color::Blue), "taxi-fare_app_blue");
    }
}
