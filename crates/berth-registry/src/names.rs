//! Repository names and tags.
//!
//! Repository names follow the ECR model (`CreateRepository.repositoryName`): 2–256 characters
//! matching `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`. Tags follow the OCI
//! distribution spec: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.

/// The pattern quoted in `InvalidParameterException` messages.
pub const REPOSITORY_NAME_PATTERN: &str =
    "(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*";

/// Whether `name` is a valid repository name (see the module docs).
pub fn valid_repository_name(name: &str) -> bool {
    (2..=256).contains(&name.len()) && name.split('/').all(valid_component)
}

/// `[a-z0-9]+(?:[._-][a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let sep = |b: u8| matches!(b, b'.' | b'_' | b'-');
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut prev_sep = false;
    for &b in bytes {
        if sep(b) {
            if prev_sep {
                return false;
            }
            prev_sep = true;
        } else if alnum(b) {
            prev_sep = false;
        } else {
            return false;
        }
    }
    true
}

/// Whether `tag` is a valid OCI tag (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        for ok in ["web", "team/web", "a.b_c-d/e9", "ab", "x/y/z0"] {
            assert!(valid_repository_name(ok), "{ok}");
        }
        for bad in [
            "a",
            "Web",
            "team//web",
            "/web",
            "web/",
            "a--b",
            "-ab",
            "ab.",
            "a b",
            "",
        ] {
            assert!(!valid_repository_name(bad), "{bad}");
        }
        assert!(!valid_repository_name(&"a".repeat(257)));
        for ok in ["1", "latest", "v1.2.3-rc_1", "_x"] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a:b", &"a".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }
}
