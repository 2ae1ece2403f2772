//! The two slots of a blue-green deployment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A slot: one of the two sets of app containers behind nginx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub const ALL: [Color; 2] = [Color::Blue, Color::Green];

    /// The other slot: the idle one when this one is live.
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }

    /// `"blue"` or `"green"`: the `COLOR` a container is given and the value
    /// of its color label.
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }

    /// The compose service name, `app_blue` or `app_green`: also the
    /// network alias every replica of the color answers to.
    pub fn service(self) -> &'static str {
        match self {
            Color::Blue => "app_blue",
            Color::Green => "app_green",
        }
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown color {0:?}: expected \"blue\" or \"green\"")]
pub struct ParseColorError(pub String);

impl FromStr for Color {
    type Err = ParseColorError;

    /// Accepts the color (`blue`) and the service name (`app_blue`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "blue" | "app_blue" => Ok(Color::Blue),
            "green" | "app_green" => Ok(Color::Green),
            other => Err(ParseColorError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints() {
        for c in Color::ALL {
            assert_eq!(c.to_string().parse::<Color>(), Ok(c));
            assert_eq!(c.service().parse::<Color>(), Ok(c));
            assert_ne!(c.other(), c);
            assert_eq!(c.other().other(), c);
        }
        assert!("red".parse::<Color>().is_err());
    }
}
