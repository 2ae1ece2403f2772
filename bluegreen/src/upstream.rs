//! nginx's `upstream app_live`: rendering it for a color, and reading back
//! which color a file sends traffic to.
//!
//! The file, not anything the controller remembers, is the truth about
//! which color is live: it is what nginx loads.

use crate::{APP_PORT, Color, PROJECT, container_name};

const BLUE_TEMPLATE: &str = include_str!("../../nginx/upstream_blue.tmpl");
const GREEN_TEMPLATE: &str = include_str!("../../nginx/upstream_green.tmpl");
/// The file of a stack where no color is live yet.
const NONE: &str = include_str!("../../nginx/upstream.conf");
const PLACEHOLDER: &str = "{{servers}}";

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

    /// The preview.conf that shows `color` on the preview port (`None`:
    /// nothing paused).
    pub fn render_preview(preview: Option<(Color, u32)>) -> String {
        let servers: Vec<String> = match preview {
            Some((color, n)) => (1..=n.max(1))
                .map(|i| format!("    server {}:{APP_PORT};", container_name(color, i)))
                .collect(),
            None => vec!["    server 127.0.0.1:9 down;".to_owned()],
        };
        format!(
            "# The preview: written by the deployment controller while a rollout is\n\
             # paused for `controller promote`.\nupstream app_preview {{\n{}\n}}\n",
            servers.join("\n")
        )
    }

    /// The upstream.conf of a stack where no color is live.
    pub fn render_none() -> &'static str {
        NONE
    }

    /// Reads which color a file sends traffic to. Comments, `backup` and
    /// `down` servers do not count.
    pub fn parse(text: &str) -> Result<Upstream, UpstreamError> {
        let mut live = None;
        let mut replicas = 0;
        let mut backup = None;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some(rest) = line.strip_prefix("server ") else { continue };
            let mut words = rest.trim_end_matches(';').split_whitespace();
            let Some(address) = words.next() else { continue };
            let flags: Vec<&str> = words.collect();
            if flags.contains(&"down") {
                continue;
            }
            let is_backup = flags.contains(&"backup");
            let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
            let color =
                color_of_host(host).ok_or_else(|| UpstreamError::UnknownServer(host.to_owned()))?;
            if is_backup {
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
