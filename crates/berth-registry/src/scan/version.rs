//! Package version ordering of the two package managers the scanner reads.
//!
//! - [`dpkg_cmp`]: Debian's `[epoch:]upstream[-revision]` order, a port of dpkg's
//!   `dpkg_version_compare`/`verrevcmp` (lib/dpkg/version.c; Debian Policy §5.6.12): epochs
//!   compare as integers; upstream and revision compare alternately as non-digit runs (letters
//!   before non-letters, `~` before everything including the end of the string) and digit runs
//!   (numerically).
//! - [`apk_cmp`]: Alpine's order, a port of apk-tools' `apk_version_compare_blob`
//!   (src/version.c): dot-separated numbers (a component after a dot with leading zeros compares
//!   as a fraction), an optional letter, `_alpha|_beta|_pre|_rc` (before the release) and
//!   `_cvs|_svn|_git|_hg|_p` (after it) suffixes with optional numbers, then `-r<N>`. A
//!   `~<hash>` commit part is ignored.

use std::cmp::Ordering;

/// dpkg's character weight in a non-digit run: letters sort by ASCII, `~` lowest (-1), the end
/// of the string and digits 0, other characters after all letters.
fn dpkg_order(c: u8) -> i32 {
    if c.is_ascii_digit() {
        0
    } else if c.is_ascii_alphabetic() {
        c as i32
    } else if c == b'~' {
        -1
    } else if c != 0 {
        c as i32 + 256
    } else {
        0
    }
}

/// dpkg's `verrevcmp` on one upstream version or revision.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let at = |i: usize| a.get(i).copied().unwrap_or(0);
    let bt = |j: usize| b.get(j).copied().unwrap_or(0);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0i32;
        while (i < a.len() && !at(i).is_ascii_digit()) || (j < b.len() && !bt(j).is_ascii_digit()) {
            let (ac, bc) = (dpkg_order(at(i)), dpkg_order(bt(j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while at(i) == b'0' {
            i += 1;
        }
        while bt(j) == b'0' {
            j += 1;
        }
        while at(i).is_ascii_digit() && bt(j).is_ascii_digit() {
            if first_diff == 0 {
                first_diff = at(i) as i32 - bt(j) as i32;
            }
            i += 1;
            j += 1;
        }
        if at(i).is_ascii_digit() {
            return Ordering::Greater;
        }
        if bt(j).is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// A Debian version split into epoch, upstream version and revision (`""` when absent).
fn dpkg_parse(v: &str) -> (u64, &str, &str) {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// Compares two Debian package versions as `dpkg --compare-versions` does.
pub fn dpkg_cmp(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = dpkg_parse(a);
    let (eb, ub, rb) = dpkg_parse(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

/// apk-tools' token kinds, in its order (the order matters for the comparison).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Token {
    Invalid,
    DigitOrZero,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    RevisionNo,
    End,
}

const PRE_SUFFIXES: [&str; 4] = ["alpha", "beta", "pre", "rc"];
const POST_SUFFIXES: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];

/// apk-tools' `next_token`: classifies what follows the current token and skips its separator.
fn next_token(t: &mut Token, s: &mut &[u8]) {
    let mut n = Token::Invalid;
    if s.is_empty() {
        n = Token::End;
    } else if matches!(*t, Token::Digit | Token::DigitOrZero) && s[0].is_ascii_lowercase() {
        n = Token::Letter;
    } else if *t == Token::Letter && s[0].is_ascii_digit() {
        n = Token::Digit;
    } else if *t == Token::Suffix && s[0].is_ascii_digit() {
        n = Token::SuffixNo;
    } else {
        match s[0] {
            b'.' => n = Token::DigitOrZero,
            b'_' => n = Token::Suffix,
            b'-' if s.len() > 1 && s[1] == b'r' => {
                n = Token::RevisionNo;
                *s = &s[1..];
            }
            _ => {}
        }
        *s = &s[1..];
    }
    if n < *t
        && !((n == Token::DigitOrZero && *t == Token::Digit)
            || (n == Token::Suffix && *t == Token::SuffixNo)
            || (n == Token::Digit && *t == Token::Letter))
    {
        n = Token::Invalid;
    }
    *t = n;
}

/// apk-tools' `get_token`: the value of the token at `s` of kind `t`, advancing both.
fn get_token(t: &mut Token, s: &mut &[u8]) -> i64 {
    if s.is_empty() {
        *t = Token::End;
        return 0;
    }
    let v: i64;
    let mut i = 0;
    let mut nt = Token::Invalid;
    let digits = |s: &[u8], i: &mut usize| {
        let mut v: i64 = 0;
        while *i < s.len() && s[*i].is_ascii_digit() {
            v = v.saturating_mul(10).saturating_add((s[*i] - b'0') as i64);
            *i += 1;
        }
        v
    };
    match *t {
        Token::DigitOrZero if s[0] == b'0' => {
            while i < s.len() && s[i] == b'0' {
                i += 1;
            }
            nt = Token::Digit;
            v = -(i as i64);
        }
        Token::DigitOrZero | Token::Digit | Token::SuffixNo | Token::RevisionNo => {
            v = digits(s, &mut i);
        }
        Token::Letter => {
            v = s[0] as i64;
            i = 1;
        }
        Token::Suffix => {
            if let Some(k) = PRE_SUFFIXES
                .iter()
                .position(|p| s.starts_with(p.as_bytes()))
            {
                v = k as i64 - PRE_SUFFIXES.len() as i64;
                i = PRE_SUFFIXES[k].len();
            } else if let Some(k) = POST_SUFFIXES
                .iter()
                .position(|p| s.starts_with(p.as_bytes()))
            {
                v = k as i64;
                i = POST_SUFFIXES[k].len();
            } else {
                *t = Token::Invalid;
                return -1;
            }
        }
        Token::Invalid | Token::End => {
            *t = Token::Invalid;
            return -1;
        }
    }
    *s = &s[i..];
    if s.is_empty() {
        *t = Token::End;
    } else if nt != Token::Invalid {
        *t = nt;
    } else {
        next_token(t, s);
    }
    v
}

/// Drops a `~<commit hash>` part (`1.2_git20200101~abcdef-r0` -> `1.2_git20200101-r0`).
fn strip_hash(v: &str) -> String {
    match v.split_once('~') {
        Some((head, rest)) => match rest.find("-r") {
            Some(k) => format!("{head}{}", &rest[k..]),
            None => head.to_string(),
        },
        None => v.to_string(),
    }
}

/// Compares two Alpine package versions as `apk version -t` does. Malformed versions compare
/// by their valid prefix, as in apk-tools.
pub fn apk_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (strip_hash(a.trim()), strip_hash(b.trim()));
    let (mut sa, mut sb) = (a.as_bytes(), b.as_bytes());
    let (mut at, mut bt) = (Token::Digit, Token::Digit);
    let (mut av, mut bv) = (0i64, 0i64);
    while at == bt && at != Token::End && at != Token::Invalid && av == bv {
        av = get_token(&mut at, &mut sa);
        bv = get_token(&mut bt, &mut sb);
    }
    if av != bv {
        return av.cmp(&bv);
    }
    if at == bt {
        return Ordering::Equal;
    }
    // Equal so far: the longer version is greater, unless what follows is a pre-release suffix.
    let mut tt = at;
    if at == Token::Suffix && get_token(&mut tt, &mut sa) < 0 {
        return Ordering::Less;
    }
    let mut tt = bt;
    if bt == Token::Suffix && get_token(&mut tt, &mut sb) < 0 {
        return Ordering::Greater;
    }
    bt.cmp(&at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn dpkg_order_matches_dpkg() {
        // Cases from dpkg's t-version.c and Debian Policy §5.6.12.
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal),
            ("0:1.0", "1.0", Equal),
            ("1:0.1", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~~a", "1.0~~", Greater),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0+", Less),
            ("1.0+", "1.0.", Less),
            ("1.0", "1.0.0", Less),
            ("1.2.3", "1.2.10", Less),
            ("1.002", "1.2", Equal),
            ("3.0.11-1~deb12u2", "3.0.11-1~deb12u3", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("3.0.11-1", "3.0.9-1", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("1:2.0-1", "1:2.0-1+b1", Less),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
            ("1.2-3-4", "1.2-3-5", Less),
            ("a", "b", Less),
            ("", "", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(dpkg_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(dpkg_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn apk_order_matches_apk_tools() {
        // Cases from apk-tools' test/version.data (`apk version -t`).
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0-r1", "1.0-r0", Greater),
            ("1.0-r10", "1.0-r9", Greater),
            ("2.0", "1.9.9", Greater),
            ("1.1_alpha", "1.1", Less),
            ("1.0_alpha1", "1.0_alpha2", Less),
            ("1.0_beta", "1.0_alpha", Greater),
            ("1.0_rc1", "1.0_pre1", Greater),
            ("1.1_rc1", "1.1", Less),
            ("1.0_p1", "1.0", Greater),
            ("1.0_p1", "1.0-r5", Greater),
            ("1.0_git20200101", "1.0", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0b", "1.0a", Greater),
            ("1.0a", "1.0.1", Less),
            ("1.01", "1.1", Less),
            ("1.001", "1.01", Less),
            ("1.10", "1.9", Greater),
            ("3.0.8-r0", "3.0.12-r0", Less),
            ("3.1.4-r5", "3.1.4-r6", Less),
            ("1.36.1-r15", "1.36.1-r20", Less),
            ("2.38-r3", "2.38-r10", Less),
            ("1.2.3_git20200101~abcdef-r1", "1.2.3_git20200101-r1", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(apk_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(apk_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
