//! Docker image references: what a repository and a tag may be, checked
//! before the controller asks Docker for them.

/// A tag: up to 128 characters of `[A-Za-z0-9_.-]`, not starting with
/// `.` or `-`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let first_ok = tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if tag.is_empty() || tag.len() > 128 || !first_ok || !rest_ok {
        return Err(format!(
            "{tag:?} is not a valid image tag (1 to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"
        ));
    }
    Ok(())
}

/// A repository: an optional registry host (with a port) and lowercase
/// path components separated by `/`, each `[a-z0-9]` runs joined by `.`,
/// `_`, `__` or dashes.
pub fn check_repository(repository: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{repository:?} is not a valid image repository: {why}"));
    if repository.is_empty() || repository.len() > 255 {
        return bad("it must be 1 to 255 characters");
    }
    let mut parts: Vec<&str> = repository.split('/').collect();
    if parts.len() > 1 && is_registry_host(parts[0]) {
        parts.remove(0);
    }
    for part in parts {
        if !is_path_component(part) {
            return bad("each path component is lowercase letters and digits, joined by . _ or -");
        }
    }
    Ok(())
}

fn is_registry_host(part: &str) -> bool {
    part.contains([':', '.']) || part == "localhost"
}

fn is_path_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let starts_and_ends =
        part.chars().next().is_some_and(alnum) && part.chars().last().is_some_and(alnum);
    starts_and_ends && part.chars().all(|c| alnum(c) || "._-".contains(c)) && !part.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in ["latest", "0123abc", "v1.2.3-rc_1", "_x", &"a".repeat(128)] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a:b", "a/b", &"a".repeat(129), "é"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repositories() {
        for ok in ["localhost:5000/taxi/service", "taxi/service", "registry.example.com/a/b-c", "a"]
        {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Taxi/service", "taxi//service", "taxi/service:tag", "-a", "a/b_"] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
    }
}
