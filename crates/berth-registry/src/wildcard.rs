//! `*` wildcards, as ECR uses them in `imageTagMutabilityExclusionFilters` (`filterType:
//! WILDCARD`) and lifecycle `tagPatternList`: `*` matches any run of characters (including none);
//! every other character matches itself, case-sensitively.

/// Whether `text` matches `pattern` as a whole.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position after the last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        for (p, t) in [
            ("prod", "prod"),
            ("prod*", "prod"),
            ("prod*", "prod-1"),
            ("*", ""),
            ("*-rc*", "v1-rc2"),
            ("*test*1*2*3", "xtestA1B2C3"),
            ("a*b*c", "abbbc"),
        ] {
            assert!(matches(p, t), "{p} ~ {t}");
        }
        for (p, t) in [
            ("prod", "prod1"),
            ("prod*", "pro"),
            ("*-rc", "v1-rc2"),
            ("a*b", "ac"),
            ("Prod*", "prod"),
        ] {
            assert!(!matches(p, t), "{p} !~ {t}");
        }
    }
}
