//! nginx's `upstream app_live`: rendering it for a color, and reading back
//! which color a file sends traffic to.
//!
//! The file, not anything the controller remembers, is the truth about
//! which color is live: it is what nginx loads.
//!
//! Servers are named either by container name (compose: nginx resolves
//! `taxi-fare_app_blue_1` when it loads the file) or by address (Swarm:
//! `10.0.1.7`, a task's overlay address, which cannot fail to resolve).
//! An address says nothing about its color, so such a line carries the
//! replica's name in a comment after it (`server 10.0.1.7:32000; #
//! taxi-fare_app_blue_1`), and [`Upstream::parse`] reads the color there.
//! A comment on a line named by container name is ignored, as before.

use std::net::IpAddr;

use crate::{APP_PORT, Color, PROJECT, container_name};

const BLUE_TEMPLATE: &str = include_str!("../../nginx/upstream_blue.tmpl");
const GREEN_TEMPLATE: &str = include_str!("../../nginx/upstream_green.tmpl");
/// The file of a stack where no color is live yet.
const NONE: &str = include_str!("../../nginx/upstream.conf");
const PLACEHOLDER: &str = "{{servers}}";
/// The server an address-named file lists when no replica of the live
/// color has an address: the discard port on loopback refuses every
/// connection (a 502, as a stopped color gives), nginx loads it, and the
/// comment after it still says which color is live.
pub const NO_ADDRESS: &str = "127.0.0.1:9";

/// What an upstream.conf says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The color its (non-backup) servers belong to; `None` when no server
    /// takes traffic.
    pub live: Option<Color>,
    /// How many servers of that color it lists.
    pub replicas: u32,
    /// The color listed as `backup`: it takes a request only when the
    /// live color refuses it (kept while a new color is verified).
    pub backup: Option<Color>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("upstream.conf names both colors as live")]
    BothColors,
    #[error("upstream.conf names server {0:?}, which is neither app_blue nor app_green")]
    UnknownServer(String),
}

impl Upstream {
    /// The upstream.conf that sends traffic to `replicas` replicas of
    /// `color`, with `backup`'s replicas, if any, as backup servers.
    pub fn render(color: Color, replicas: u32, backup: Option<(Color, u32)>) -> String {
        let all = |n: u32| (1..=n.max(1)).collect::<Vec<u32>>();
        let backup = backup.map(|(c, n)| (c, all(n)));
        Upstream::render_servers(color, &all(replicas), backup.as_ref().map(|(c, n)| (*c, &n[..])))
    }

    /// The same, naming only the given replicas of each color: a replica
    /// that does not run has no address, and one server nginx cannot
    /// resolve makes it refuse the whole file. No replica at all: the
    /// first is named, so the file still says which color is live.
    pub fn render_servers(color: Color, live: &[u32], backup: Option<(Color, &[u32])>) -> String {
        let template = match color {
            Color::Blue => BLUE_TEMPLATE,
            Color::Green => GREEN_TEMPLATE,
        };
        let first = [1];
        let live = if live.is_empty() { &first[..] } else { live };
        let mut servers: Vec<String> = live
            .iter()
            .map(|n| format!("    server {}:{APP_PORT};", container_name(color, *n)))
            .collect();
        if let Some((old, numbers)) = backup.filter(|(old, n)| *old != color && !n.is_empty()) {
            servers.extend(
                numbers
                    .iter()
                    .map(|i| format!("    server {}:{APP_PORT} backup;", container_name(old, *i))),
            );
        }
        template.replace(PLACEHOLDER, &servers.join("\n"))
    }

    /// The same, naming each replica by its address (`(replica,
    /// address)`, an IP address without the port): the port is
    /// [`APP_PORT`], and each line carries the replica's name in a comment
    /// so the file reads back by color. No live address at all:
    /// [`NO_ADDRESS`], annotated as the color's first replica.
    pub fn render_addresses(
        color: Color,
        live: &[(u32, String)],
        backup: Option<(Color, &[(u32, String)])>,
    ) -> String {
        let template = match color {
            Color::Blue => BLUE_TEMPLATE,
            Color::Green => GREEN_TEMPLATE,
        };
        let line = |color: Color, replica: u32, address: &str, flag: &str| {
            let name = container_name(color, replica);
            format!("    server {}{flag}; # {name}", with_port(address))
        };
        let mut servers: Vec<String> = if live.is_empty() {
            vec![line(color, 1, NO_ADDRESS, "")]
        } else {
            live.iter().map(|(n, a)| line(color, *n, a, "")).collect()
        };
        if let Some((old, all)) = backup.filter(|(old, all)| *old != color && !all.is_empty()) {
            servers.extend(all.iter().map(|(n, a)| line(old, *n, a, " backup")));
        }
        template.replace(PLACEHOLDER, &servers.join("\n"))
    }

    /// The preview.conf by address, as [`Upstream::render_addresses`]
    /// names servers (`None`: nothing paused).
    pub fn render_preview_addresses(preview: Option<(Color, &[(u32, String)])>) -> String {
        match preview {
            Some((color, all)) if !all.is_empty() => {
                let servers: Vec<String> = all
                    .iter()
                    .map(|(n, a)| {
                        format!("    server {}; # {}", with_port(a), container_name(color, *n))
                    })
                    .collect();
                preview_file(&servers)
            }
            Some((color, _)) => {
                preview_file(&[format!("    server {NO_ADDRESS}; # {}", container_name(color, 1))])
            }
            None => Upstream::render_preview(None),
        }
    }

    /// The preview.conf that shows `color` on the preview port (`None`:
    /// nothing paused).
    pub fn render_preview(preview: Option<(Color, u32)>) -> String {
        let servers: Vec<String> = match preview {
            Some((color, n)) => (1..=n.max(1))
                .map(|i| format!("    server {}:{APP_PORT};", container_name(color, i)))
                .collect(),
            None => vec!["    server 127.0.0.1:9 down;".to_owned()],
        };
        preview_file(&servers)
    }

    /// The upstream.conf of a stack where no color is live.
    pub fn render_none() -> &'static str {
        NONE
    }

    /// Reads which color a file sends traffic to. Comments, `backup` and
    /// `down` servers do not count; a server named by address counts by
    /// the replica named in the comment after it.
    pub fn parse(text: &str) -> Result<Upstream, UpstreamError> {
        let mut live = None;
        let mut replicas = 0;
        let mut backup = None;
        for server in servers(text) {
            let color = server.color.ok_or(UpstreamError::UnknownServer(server.host))?;
            if server.backup {
                backup = Some(color);
                continue;
            }
            match live {
                Some(c) if c != color => return Err(UpstreamError::BothColors),
                _ => live = Some(color),
            }
            replicas += 1;
        }
        Ok(Upstream { live, replicas, backup })
    }

    /// The hosts (names or addresses, without the port) of the servers
    /// that take traffic, in file order: neither `backup`, nor `down`, nor
    /// [`NO_ADDRESS`]. A router that names replicas by address compares
    /// them with the addresses its replicas have now.
    pub fn live_hosts(text: &str) -> Vec<String> {
        let nowhere = NO_ADDRESS.rsplit_once(':').map_or(NO_ADDRESS, |(h, _)| h);
        servers(text).filter(|s| !s.backup && s.host != nowhere).map(|s| s.host).collect()
    }
}

/// One `server` line that is not `down`.
struct Server {
    host: String,
    color: Option<Color>,
    backup: bool,
}

fn servers(text: &str) -> impl Iterator<Item = Server> + '_ {
    text.lines().filter_map(|line| {
        let (code, note) = line.split_once('#').unwrap_or((line, ""));
        let rest = code.trim().strip_prefix("server ")?;
        let mut words = rest.trim_end_matches(';').split_whitespace();
        let address = words.next()?;
        let flags: Vec<&str> = words.collect();
        if flags.contains(&"down") {
            return None;
        }
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
        // Only an address takes its color from the comment: a name says
        // its own, and an unannotated address stays unknown.
        let color = color_of_host(host).or_else(|| {
            host.parse::<IpAddr>().ok()?;
            color_of_host(note.split_whitespace().next()?)
        });
        Some(Server { host: host.to_owned(), color, backup: flags.contains(&"backup") })
    })
}

/// `10.0.1.7` → `10.0.1.7:32000`; an address that names its port keeps it.
fn with_port(address: &str) -> String {
    if address.parse::<IpAddr>().is_ok() {
        format!("{address}:{APP_PORT}")
    } else {
        address.to_owned()
    }
}

fn preview_file(servers: &[String]) -> String {
    format!(
        "# The preview: written by the deployment controller while a rollout is\n\
         # paused for `controller promote`.\nupstream app_preview {{\n{}\n}}\n",
        servers.join("\n")
    )
}

/// `app_blue` or `taxi-fare_app_blue_2` → blue.
fn color_of_host(host: &str) -> Option<Color> {
    let service = match host.strip_prefix(PROJECT).and_then(|h| h.strip_prefix('_')) {
        Some(named) => named.rsplit_once('_').map(|(s, _)| s)?,
        None => host,
    };
    service.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(text: &str) -> Result<Option<Color>, UpstreamError> {
        Upstream::parse(text).map(|u| u.live)
    }

    #[test]
    fn a_rendered_file_reads_back_as_its_color() {
        for color in Color::ALL {
            for replicas in 1..=3 {
                let text = Upstream::render(color, replicas, None);
                assert!(!text.contains(PLACEHOLDER));
                assert_eq!(
                    Upstream::parse(&text),
                    Ok(Upstream { live: Some(color), replicas, backup: None })
                );
                let text = Upstream::render(color, replicas, Some((color.other(), 2)));
                let with_backup =
                    Upstream { live: Some(color), replicas, backup: Some(color.other()) };
                assert_eq!(Upstream::parse(&text), Ok(with_backup));
                assert_eq!(text.matches(" backup;").count(), 2);
            }
        }
        assert_eq!(live(Upstream::render_none()), Ok(None));
        assert_eq!(
            live(&Upstream::render_preview(Some((Color::Green, 2)))),
            Ok(Some(Color::Green))
        );
        assert_eq!(live(&Upstream::render_preview(None)), Ok(None));
        assert_eq!(live(include_str!("../../nginx/preview.conf")), Ok(None));
    }

    #[test]
    fn only_the_given_replicas_are_named() {
        let text = Upstream::render_servers(Color::Blue, &[1, 3], Some((Color::Green, &[2])));
        assert!(text.contains("app_blue_1:") && text.contains("app_blue_3:"), "{text}");
        assert!(!text.contains("app_blue_2:"), "{text}");
        assert_eq!(text.matches(" backup;").count(), 1);
        assert!(text.contains("app_green_2:32000 backup;"), "{text}");
        // No backup replica runs: no backup line; no live one: the first.
        let text = Upstream::render_servers(Color::Green, &[], Some((Color::Blue, &[])));
        let one = Upstream { live: Some(Color::Green), replicas: 1, backup: None };
        assert_eq!(Upstream::parse(&text), Ok(one));
    }

    fn at(list: &[(u32, &str)]) -> Vec<(u32, String)> {
        list.iter().map(|(n, a)| (*n, (*a).to_owned())).collect()
    }

    #[test]
    fn a_file_by_address_reads_back_as_its_color() {
        let new = at(&[(1, "10.0.1.7"), (3, "10.0.1.9")]);
        let old = at(&[(2, "10.0.1.4")]);
        let text = Upstream::render_addresses(Color::Green, &new, Some((Color::Blue, &old)));
        assert!(text.contains("server 10.0.1.7:32000; # taxi-fare_app_green_1\n"), "{text}");
        assert!(text.contains("server 10.0.1.4:32000 backup; # taxi-fare_app_blue_2"), "{text}");
        let read = Upstream { live: Some(Color::Green), replicas: 2, backup: Some(Color::Blue) };
        assert_eq!(Upstream::parse(&text), Ok(read));
        assert_eq!(Upstream::live_hosts(&text), ["10.0.1.7", "10.0.1.9"]);
        // No address: the color is still read back, and no host is live.
        let text = Upstream::render_addresses(Color::Blue, &[], Some((Color::Green, &[])));
        let one = Upstream { live: Some(Color::Blue), replicas: 1, backup: None };
        assert_eq!(Upstream::parse(&text), Ok(one));
        assert!(Upstream::live_hosts(&text).is_empty(), "{text}");
        // The preview by address.
        let shown = Upstream::render_preview_addresses(Some((Color::Blue, &old)));
        assert_eq!(live(&shown), Ok(Some(Color::Blue)));
        assert_eq!(
            live(&Upstream::render_preview_addresses(Some((Color::Green, &[])))),
            Ok(Some(Color::Green))
        );
        assert_eq!(live(&Upstream::render_preview_addresses(None)), Ok(None));
    }

    #[test]
    fn the_name_files_are_read_as_before() {
        let text = Upstream::render(Color::Blue, 2, Some((Color::Green, 1)));
        assert_eq!(Upstream::live_hosts(&text), ["taxi-fare_app_blue_1", "taxi-fare_app_blue_2"]);
        // A comment on a named line says nothing: the name does.
        assert_eq!(
            live("server taxi-fare_app_blue_1:32000; # taxi-fare_app_green_1"),
            Ok(Some(Color::Blue))
        );
        // Addresses of both colors live; an address whose comment names no
        // replica.
        assert_eq!(
            live(
                "server 10.0.0.1:32000; # taxi-fare_app_blue_1\nserver 10.0.0.2:32000; # taxi-fare_app_green_1"
            ),
            Err(UpstreamError::BothColors)
        );
        assert_eq!(
            live("server 10.0.0.1:32000; # nothing"),
            Err(UpstreamError::UnknownServer("10.0.0.1".into()))
        );
    }

    #[test]
    fn reads_hand_written_files() {
        assert_eq!(
            live("# server app_green:32000;\nserver app_blue:32000;"),
            Ok(Some(Color::Blue))
        );
        assert_eq!(
            live("server taxi-fare_app_green_1:32000;\nserver taxi-fare_app_blue_1:32000 backup;"),
            Ok(Some(Color::Green))
        );
        assert_eq!(live("server app_blue:1;\nserver app_green:1;"), Err(UpstreamError::BothColors));
        assert_eq!(
            live("server 10.0.0.1:80;"),
            Err(UpstreamError::UnknownServer("10.0.0.1".into()))
        );
        assert_eq!(live("keepalive 16;"), Ok(None));
    }
}
