use super::*;
use std::time::{Duration, UNIX_EPOCH};

fn at(amz: &str) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(parse_amz_date(amz).unwrap() as u64)
}

fn example_key() -> AccessKey {
    AccessKey {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        account_id: "000000000000".into(),
    }
}

fn store() -> Credentials {
    Credentials::insecure_any("000000000000").with_primary(example_key())
}

fn strict() -> Credentials {
    let mut c = store();
    c.any = false;
    c
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    m
}

/// The worked example of the AWS General Reference (IAM ListUsers, 2015-08-30).
#[test]
fn aws_documented_example() {
    let h = headers(&[
        ("host", "iam.amazonaws.com"),
        ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
        ("x-amz-date", "20150830T123600Z"),
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"),
    ]);
    let req = Request {
        method: "GET",
        path: "/",
        query: Some("Action=ListUsers&Version=2010-05-08"),
        headers: &h,
    };
    let c = strict().verify(&req, b"", at("20150830T123600Z")).unwrap();
    assert_eq!(c.access_key_id, "AKIDEXAMPLE");
    // One byte of body more, another method, another query: all refused.
    assert_eq!(
        strict().verify(&req, b"x", at("20150830T123600Z")),
        Err(AuthError::SignatureMismatch)
    );
    let post = Request {
        method: "POST",
        ..req
    };
    assert_eq!(
        strict().verify(&post, b"", at("20150830T123600Z")),
        Err(AuthError::SignatureMismatch)
    );
    let q = Request {
        query: Some("Action=ListUsers&Version=2010-05-09"),
        ..post
    };
    let q = Request { method: "GET", ..q };
    assert_eq!(
        strict().verify(&q, b"", at("20150830T123600Z")),
        Err(AuthError::SignatureMismatch)
    );
}

#[test]
fn signer_round_trip_and_clock() {
    let key = example_key();
    let now = at("20260101T120000Z");
    let body = br#"{"a":1}"#;
    let add = sign(
        &key,
        "us-east-1",
        "ecs",
        "POST",
        "/",
        None,
        &[("host", "127.0.0.1:5150"), ("x-amz-target", "X.Y")],
        body,
        now,
    );
    let mut pairs: Vec<(&str, &str)> = vec![("host", "127.0.0.1:5150"), ("x-amz-target", "X.Y")];
    pairs.extend(add.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let h = headers(&pairs);
    let req = Request {
        method: "POST",
        path: "/",
        query: None,
        headers: &h,
    };
    assert!(strict().verify(&req, body, now).is_ok());
    assert!(strict()
        .verify(&req, body, now + Duration::from_secs(899))
        .is_ok());
    assert_eq!(
        strict()
            .verify(&req, body, now + Duration::from_secs(16 * 60))
            .unwrap_err()
            .to_string(),
        "Signature expired: 20260101T120000Z is now earlier than 20260101T120100Z (20260101T121600Z - 15 min.)"
    );
    assert!(matches!(
        strict().verify(&req, body, now - Duration::from_secs(16 * 60)),
        Err(AuthError::NotYetCurrent { .. })
    ));
    // The body is covered through x-amz-content-sha256.
    assert_eq!(
        strict().verify(&req, b"{}", now),
        Err(AuthError::ContentSha256Mismatch)
    );
    // Another secret for the same id does not verify.
    let mut other = strict();
    other.keys.get_mut("AKIDEXAMPLE").unwrap().secret_access_key = "x".repeat(40);
    assert_eq!(
        other.verify(&req, body, now),
        Err(AuthError::SignatureMismatch)
    );
    // An unknown id.
    let empty = Credentials {
        keys: Default::default(),
        primary: None,
        any: false,
        account_id: "000000000000".into(),
    };
    assert_eq!(empty.verify(&req, body, now), Err(AuthError::UnknownKey));
    // Unsigned.
    let bare = headers(&[("host", "127.0.0.1:5150")]);
    let unsigned = Request {
        headers: &bare,
        ..req
    };
    assert_eq!(
        strict().verify(&unsigned, body, now),
        Err(AuthError::Missing)
    );
    assert!(store().verify(&unsigned, body, now).is_ok());
}

#[test]
fn presigned_round_trip() {
    let key = example_key();
    let now = at("20260101T120000Z");
    let q = presign(
        &key,
        "us-east-1",
        "ecr",
        "GET",
        "127.0.0.1:5150",
        "/a%20b/",
        Some("x=1%2F2"),
        b"",
        60,
        now,
    );
    let h = headers(&[("host", "127.0.0.1:5150")]);
    let req = Request {
        method: "GET",
        path: "/a%20b/",
        query: Some(&q),
        headers: &h,
    };
    assert!(strict().verify(&req, b"", now).is_ok());
    assert!(matches!(
        strict().verify(&req, b"", now + Duration::from_secs(61)),
        Err(AuthError::Expired { .. })
    ));
    let tampered = q.replace("x=1%2F2", "x=1%2F3");
    let req2 = Request {
        query: Some(&tampered),
        ..req
    };
    assert_eq!(
        strict().verify(&req2, b"", now),
        Err(AuthError::SignatureMismatch)
    );
}

#[test]
fn canonical_parts() {
    assert_eq!(normalize_path("/a/./b/../c"), "/a/c");
    assert_eq!(normalize_path("/"), "/");
    assert_eq!(normalize_path("/a/b/"), "/a/b/");
    assert_eq!(
        canonical_query(Some("b=2&a=%7e x&X-Amz-Signature=zz&a=1"), true),
        "a=1&a=~%20x&b=2"
    );
}

/// The cost of one verification (`cargo test -p berth-iam --release verify_cost -- --ignored
/// --nocapture`): a typical 300-byte API body and a 1 MiB one.
#[test]
#[ignore]
fn verify_cost() {
    let key = example_key();
    let now = SystemTime::now();
    for size in [300usize, 1 << 20] {
        let body = vec![b'x'; size];
        let add = sign(
            &key,
            "us-east-1",
            "ecs",
            "POST",
            "/",
            None,
            &[
                ("host", "127.0.0.1:5150"),
                ("x-amz-target", "X.Y"),
                ("content-type", "application/x-amz-json-1.1"),
            ],
            &body,
            now,
        );
        let mut pairs: Vec<(&str, &str)> = vec![
            ("host", "127.0.0.1:5150"),
            ("x-amz-target", "X.Y"),
            ("content-type", "application/x-amz-json-1.1"),
        ];
        pairs.extend(add.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let h = headers(&pairs);
        let req = Request {
            method: "POST",
            path: "/",
            query: None,
            headers: &h,
        };
        let c = strict();
        let n = if size > 1000 { 50 } else { 20_000 };
        let t = std::time::Instant::now();
        for _ in 0..n {
            c.verify(&req, &body, now).unwrap();
        }
        let per = t.elapsed() / n;
        println!("verify with a {size}-byte body: {per:?} per request");
    }
}
