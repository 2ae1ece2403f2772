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
//!
//! A canary's file ([`Upstream::render_split`]) keeps the stable color as
//! `app_live` and adds `upstream app_canary` and an nginx `split_clients`
//! on a sticky key, the canary's share first: [`Upstream::parse`] reads
//! it as the stable color live (what a router proxying to `app_live`
//! alone does with it), [`Upstream::split`] reads the canary's color and
//! weight. The shadow's mirror is a file of its own
//! ([`Upstream::render_mirror`]), read back by [`Upstream::mirrored`].

use std::net::IpAddr;

use crate::{APP_PORT, Color, PROJECT, container_name};

const BLUE_TEMPLATE: &str = include_str!("../../nginx/upstream_blue.tmpl");
const GREEN_TEMPLATE: &str = include_str!("../../nginx/upstream_green.tmpl");
const SPLIT_TEMPLATE: &str = include_str!("../../nginx/upstream_split.tmpl");
const MIRROR_TEMPLATE: &str = include_str!("../../nginx/upstream_mirror.tmpl");
/// The upstream blocks whose servers are not the live color's.
const CANARY_BLOCK: &str = "app_canary";
const SHADOW_BLOCK: &str = "app_shadow";
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

/// A canary's split as an upstream.conf says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// The color `upstream app_canary` lists.
    pub canary: Color,
    /// Its share of traffic in percent (1 to 99).
    pub weight: u8,
    /// How many servers of it the file lists.
    pub replicas: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("upstream.conf names both colors as live")]
    BothColors,
    #[error("upstream.conf names server {0:?}, which is neither app_blue nor app_green")]
    UnknownServer(String),
    #[error("a canary's split {0}")]
    Split(String),
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
        let mut servers = by_name(color, live);
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
        let mut servers = by_address(color, live);
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

    /// The upstream.conf of a canary: `weight` percent of live traffic
    /// (1 to 99; 0 and 100 are plain routes) to the given replicas of
    /// `canary`, the rest to those of `stable`, by a sticky key. A color
    /// with no replica named gets its first, as [`Upstream::render_servers`].
    pub fn render_split(
        stable: (Color, &[u32]),
        canary: (Color, &[u32]),
        weight: u8,
    ) -> Result<String, UpstreamError> {
        split_file(
            stable.0,
            canary.0,
            weight,
            &by_name(stable.0, stable.1).join("\n"),
            &by_name(canary.0, canary.1).join("\n"),
        )
    }

    /// The same, naming each replica by its address as
    /// [`Upstream::render_addresses`] does.
    pub fn render_split_addresses(
        stable: (Color, &[(u32, String)]),
        canary: (Color, &[(u32, String)]),
        weight: u8,
    ) -> Result<String, UpstreamError> {
        split_file(
            stable.0,
            canary.0,
            weight,
            &by_address(stable.0, stable.1).join("\n"),
            &by_address(canary.0, canary.1).join("\n"),
        )
    }

    /// The canary's split a file makes, `None` for a file without one.
    pub fn split(text: &str) -> Result<Option<Split>, UpstreamError> {
        let canary: Vec<Server> = servers(text)
            .filter(|s| s.block.as_deref() == Some(CANARY_BLOCK) && !s.backup)
            .collect();
        let Some(first) = canary.first() else { return Ok(None) };
        let color = first.color.ok_or_else(|| UpstreamError::UnknownServer(first.host.clone()))?;
        for s in &canary {
            match s.color {
                None => return Err(UpstreamError::UnknownServer(s.host.clone())),
                Some(c) if c != color => return Err(UpstreamError::BothColors),
                Some(_) => {}
            }
        }
        if Upstream::parse(text)?.live == Some(color) {
            return Err(UpstreamError::Split(format!("sends {color} traffic as both colors")));
        }
        let weight = text
            .lines()
            .filter_map(|l| l.split('#').next())
            .filter_map(|l| l.trim().strip_suffix(&format!("% {CANARY_BLOCK};")))
            .find_map(|w| w.trim().parse::<u8>().ok())
            .filter(|w| (1..=99).contains(w))
            .ok_or_else(|| {
                UpstreamError::Split("gives app_canary no whole share from 1% to 99%".into())
            })?;
        Ok(Some(Split { canary: color, weight, replicas: canary.len() as u32 }))
    }

    /// The mirror.conf that copies live predictions to the given replicas
    /// of `to` (`None`: to nobody).
    pub fn render_mirror(to: Option<(Color, &[u32])>) -> String {
        let (target, servers) = match to {
            Some((color, numbers)) => {
                let first = [1];
                let numbers = if numbers.is_empty() { &first[..] } else { numbers };
                let lines: Vec<String> = numbers
                    .iter()
                    .map(|n| format!("    server {}:{APP_PORT};", container_name(color, *n)))
                    .collect();
                (SHADOW_BLOCK, lines.join("\n"))
            }
            None => ("", "    server 127.0.0.1:9 down;".to_owned()),
        };
        MIRROR_TEMPLATE.replace("{{target}}", target).replace(PLACEHOLDER, &servers)
    }

    /// The color a mirror.conf copies live predictions to, if any.
    pub fn mirrored(text: &str) -> Option<Color> {
        let on = text.lines().any(|l| l.trim() == format!("default \"{SHADOW_BLOCK}\";"));
        let mut to = servers(text).filter(|s| s.block.as_deref() == Some(SHADOW_BLOCK));
        on.then(|| to.next().and_then(|s| s.color)).flatten()
    }

    /// Reads which color a file sends traffic to. Comments, `backup` and
    /// `down` servers do not count; a server named by address counts by
    /// the replica named in the comment after it.
    pub fn parse(text: &str) -> Result<Upstream, UpstreamError> {
        let mut live = None;
        let mut replicas = 0;
        let mut backup = None;
        for server in servers(text).filter(|s| s.takes_live_traffic()) {
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
        servers(text)
            .filter(|s| s.takes_live_traffic() && !s.backup && s.host != nowhere)
            .map(|s| s.host)
            .collect()
    }
}

/// One `server` line that is not `down`, and the upstream block it is in
/// (`None` outside any, as in a hand-written fragment).
struct Server {
    host: String,
    color: Option<Color>,
    backup: bool,
    block: Option<String>,
}

impl Server {
    /// Not the canary's nor the mirror's.
    fn takes_live_traffic(&self) -> bool {
        !matches!(self.block.as_deref(), Some(CANARY_BLOCK | SHADOW_BLOCK))
    }
}

fn servers(text: &str) -> impl Iterator<Item = Server> + '_ {
    let mut block: Option<String> = None;
    text.lines().filter_map(move |line| {
        let (code, note) = line.split_once('#').unwrap_or((line, ""));
        if let Some(name) = code.trim().strip_prefix("upstream ") {
            block = name.split(|c: char| c.is_whitespace() || c == '{').next().map(str::to_owned);
            return None;
        }
        if code.trim().starts_with('}') {
            block = None;
            return None;
        }
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
        Some(Server {
            host: host.to_owned(),
            color,
            backup: flags.contains(&"backup"),
            block: block.clone(),
        })
    })
}

fn split_file(
    stable: Color,
    canary: Color,
    weight: u8,
    stable_servers: &str,
    canary_servers: &str,
) -> Result<String, UpstreamError> {
    if stable == canary {
        return Err(UpstreamError::Split(format!("needs two colors, not {stable} twice")));
    }
    if !(1..=99).contains(&weight) {
        return Err(UpstreamError::Split(format!(
            "of {weight}% is no split: 0 and 100 are a plain route"
        )));
    }
    // The stable color backs the canary up, as the old color backs a new
    // one up while a switch is verified: a request the canary's replicas
    // refuse (one stopping, the split being undone) is served, not lost.
    let backup: Vec<String> =
        stable_servers.lines().map(|l| l.replacen(';', " backup;", 1)).collect();
    let canary_servers = format!("{canary_servers}\n{}", backup.join("\n"));
    Ok(SPLIT_TEMPLATE
        .replace("{{stable}}", stable_servers)
        .replace("{{canary}}", &canary_servers)
        .replace("{{weight}}", &weight.to_string()))
}

/// The `server` lines of `color`'s replicas by container name; none: the
/// first is named, so the file still says which color it sends to.
fn by_name(color: Color, numbers: &[u32]) -> Vec<String> {
    let first = [1];
    let numbers = if numbers.is_empty() { &first[..] } else { numbers };
    numbers
        .iter()
        .map(|n| format!("    server {}:{APP_PORT};", container_name(color, *n)))
        .collect()
}

/// The same by address, the replica's name in a comment; none: the
/// discard address ([`NO_ADDRESS`]).
fn by_address(color: Color, all: &[(u32, String)]) -> Vec<String> {
    let nowhere = [(1, NO_ADDRESS.to_owned())];
    let all = if all.is_empty() { &nowhere[..] } else { all };
    all.iter()
        .map(|(n, a)| format!("    server {}; # {}", with_port(a), container_name(color, *n)))
        .collect()
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

    /// nginx's `ngx_murmur_hash2` (src/core/ngx_murmurhash.c), which
    /// `split_clients` hashes its key with.
    fn murmur2(data: &[u8]) -> u32 {
        const M: u32 = 0x5bd1_e995;
        let mut h = data.len() as u32;
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            k = k.wrapping_mul(M);
            k ^= k >> 24;
            k = k.wrapping_mul(M);
            h = h.wrapping_mul(M) ^ k;
        }
        let rest = chunks.remainder();
        if rest.len() >= 3 {
            h ^= u32::from(rest[2]) << 16;
        }
        if rest.len() >= 2 {
            h ^= u32::from(rest[1]) << 8;
        }
        if !rest.is_empty() {
            h ^= u32::from(rest[0]);
            h = h.wrapping_mul(M);
        }
        h ^= h >> 13;
        h = h.wrapping_mul(M);
        h ^ (h >> 15)
    }

    /// Where nginx's `split_clients` block of `text` sends `key`, as
    /// ngx_http_split_clients_module.c does: each `P%` entry in order
    /// takes the hashes below the running sum (in hundredths of a
    /// percent, scaled to 2^32), `*` the rest.
    fn split_clients(text: &str, key: &str) -> String {
        let block = text.split("\nsplit_clients ").nth(1).unwrap();
        // After the key (`"${app_split_key}"`, braces and all) and the
        // variable.
        let block = &block[block.find("$app_route {").unwrap() + 12..];
        let body = &block[..block.find('}').unwrap()];
        let hash = murmur2(key.as_bytes());
        let mut sum = 0u64;
        for entry in body.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (share, value) = entry.split_once(char::is_whitespace).unwrap();
            if share == "*" {
                return value.trim().to_owned();
            }
            let percent: f64 = share.trim_end_matches('%').parse().unwrap();
            sum += (percent * 100.0).round() as u64;
            let bound = (sum * 0xffff_ffff / 10_000) as u32;
            if hash < bound {
                return value.trim().to_owned();
            }
        }
        String::new()
    }

    #[test]
    fn a_split_reads_back_as_the_stable_color_live_and_the_canarys_weight() {
        let text =
            Upstream::render_split((Color::Blue, &[1, 2]), (Color::Green, &[1]), 10).unwrap();
        assert!(!text.contains("{{"), "{text}");
        let stable = Upstream { live: Some(Color::Blue), replicas: 2, backup: None };
        assert_eq!(Upstream::parse(&text), Ok(stable));
        let split = Split { canary: Color::Green, weight: 10, replicas: 1 };
        assert_eq!(Upstream::split(&text), Ok(Some(split)));
        assert_eq!(Upstream::live_hosts(&text), ["taxi-fare_app_blue_1", "taxi-fare_app_blue_2"]);
        // The canary's share comes first, the stable color takes the rest.
        let block = text.split("\nsplit_clients ").nth(1).unwrap();
        let canary = block.find("10% app_canary;").unwrap();
        let rest = block.find("* app_live;").unwrap();
        assert!(canary < rest, "{block}");
        // By address, for the Swarm.
        let new = at(&[(1, "10.0.1.7")]);
        let old = at(&[(1, "10.0.1.4"), (2, "10.0.1.5")]);
        let text = Upstream::render_split_addresses((Color::Green, &old), (Color::Blue, &new), 75)
            .unwrap();
        assert_eq!(Upstream::parse(&text).map(|u| u.live), Ok(Some(Color::Green)));
        let split = Split { canary: Color::Blue, weight: 75, replicas: 1 };
        assert_eq!(Upstream::split(&text), Ok(Some(split)));
        assert_eq!(Upstream::live_hosts(&text), ["10.0.1.4", "10.0.1.5"]);
    }

    #[test]
    fn plain_files_have_no_split_and_a_split_must_be_one() {
        for color in Color::ALL {
            let text = Upstream::render(color, 2, Some((color.other(), 1)));
            assert_eq!(Upstream::split(&text), Ok(None));
        }
        assert_eq!(Upstream::split(Upstream::render_none()), Ok(None));
        for (weight, same) in [(0, false), (100, false), (50, true)] {
            let canary = if same { Color::Blue } else { Color::Green };
            assert!(matches!(
                Upstream::render_split((Color::Blue, &[1]), (canary, &[1]), weight),
                Err(UpstreamError::Split(_))
            ));
        }
        // Hand-edited into nonsense: said so, not guessed at.
        let text = Upstream::render_split((Color::Blue, &[1]), (Color::Green, &[1]), 10).unwrap();
        let odd = text.replace("10% app_canary", "12.5% app_canary");
        assert!(matches!(Upstream::split(&odd), Err(UpstreamError::Split(_))));
        let mixed = text.replace(
            "server taxi-fare_app_green_1:32000;",
            "server taxi-fare_app_green_1:32000;\n    server taxi-fare_app_blue_3:32000;",
        );
        assert_eq!(Upstream::split(&mixed), Err(UpstreamError::BothColors));
    }

    #[test]
    fn a_growing_weight_only_moves_clients_from_stable_to_canary() {
        let keys: Vec<String> = (0..5000)
            .map(|i| match i % 3 {
                0 => format!("client-{i}"),
                1 => format!("10.0.{}.{}", i / 256, i % 256),
                _ => format!("{i:08x}-cookie"),
            })
            .collect();
        let mut before: Vec<bool> = vec![false; keys.len()];
        for weight in [1u8, 5, 10, 25, 50, 75, 99] {
            let text =
                Upstream::render_split((Color::Blue, &[1]), (Color::Green, &[1]), weight).unwrap();
            let now: Vec<bool> =
                keys.iter().map(|k| split_clients(&text, k) == "app_canary").collect();
            for (i, (was, is)) in before.iter().zip(&now).enumerate() {
                assert!(!was || *is, "{} went back to stable at {weight}%", keys[i]);
            }
            let share = now.iter().filter(|c| **c).count() as f64 / keys.len() as f64;
            assert!((share - f64::from(weight) / 100.0).abs() < 0.03, "{weight}%: {share}");
            before = now;
        }
        // The same key, the same answer: sticky.
        let text = Upstream::render_split((Color::Blue, &[1]), (Color::Green, &[1]), 50).unwrap();
        assert_eq!(split_clients(&text, "client-7"), split_clients(&text, "client-7"));
        // nginx's own hash of a known input (its test vector: "" → 0).
        assert_eq!(murmur2(b""), 0);
    }

    #[test]
    fn the_mirror_file_reads_back_and_never_counts_as_live() {
        let on = Upstream::render_mirror(Some((Color::Green, &[1, 2])));
        assert_eq!(Upstream::mirrored(&on), Some(Color::Green));
        assert!(on.contains("default \"app_shadow\";"), "{on}");
        assert_eq!(Upstream::parse(&on).map(|u| u.live), Ok(None));
        let off = Upstream::render_mirror(None);
        assert_eq!(Upstream::mirrored(&off), None);
        assert!(off.contains("default \"\";") && off.contains("down;"), "{off}");
        assert!(!on.contains("{{") && !off.contains("{{"));
    }
}
