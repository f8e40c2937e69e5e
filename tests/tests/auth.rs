//! Authentication: every AWS API refuses requests that are unsigned, signed with a wrong
//! secret, signed with an unknown key or signed too long ago, each in its protocol's words and
//! status; the registry wants a token; `berth credentials` hands out the key.

use std::process::Command;
use std::time::{Duration, SystemTime};

use berth_tests::{http, repo_root, test_image, HttpReply, Server};
use serde_json::Value;

const ECS: &str = "AmazonEC2ContainerServiceV20141113";
const MISMATCH: &str =
    "The request signature we calculated does not match the signature you provided.";

/// Runs the AWS CLI against `s` with the given key (no other credentials around).
fn aws_as(s: &Server, key_id: &str, secret: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("aws")
        .args(["--endpoint-url", &s.endpoint(), "--region", "us-east-1"])
        .args(["--output", "json"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_PAGER", "")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .output()
        .expect("running aws");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `tests/tests/cw_protocol.py` (botocore forced onto a CloudWatch protocol) with a key.
fn botocore_as(s: &Server, protocol: &str, key_id: &str, secret: &str) -> String {
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/tests/cw_protocol.py"))
        .args([&s.endpoint(), protocol, "list_metrics", "{}"])
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .expect("running the venv's python");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn text(r: &HttpReply) -> String {
    String::from_utf8_lossy(&r.2).into_owned()
}

fn header<'a>(r: &'a HttpReply, name: &str) -> &'a str {
    r.1.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// A raw request signed with the account's key at time `at` (headers form).
fn signed_at(
    s: &Server,
    at: SystemTime,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let host = s.host();
    let mut signed: Vec<(&str, &str)> = headers.to_vec();
    signed.push(("host", &host));
    let add = berth_iam::sign(
        &s.access_key(),
        "us-east-1",
        berth_tests::signing_service(path, headers),
        "POST",
        path,
        None,
        &signed,
        body,
        at,
    );
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.extend(add.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    http(s.port, "POST", path, &all, body).unwrap()
}

#[test]
fn every_api_refuses_bad_credentials_through_the_cli() {
    let s = Server::start_with(&["--no-agent"]);
    let key = s.access_key();
    let calls: [&[&str]; 5] = [
        &["ecs", "list-clusters"],
        &["ecr", "describe-repositories"],
        &["logs", "describe-log-groups"],
        &[
            "application-autoscaling",
            "describe-scalable-targets",
            "--service-namespace",
            "ecs",
        ],
        &["cloudwatch", "list-metrics"],
    ];
    for args in calls {
        // The right key works.
        aws_as(&s, &key.access_key_id, &key.secret_access_key, args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", s.log()));
        // A wrong secret: InvalidSignatureException.
        let e = aws_as(&s, &key.access_key_id, &"x".repeat(40), args).unwrap_err();
        assert!(e.contains("(InvalidSignatureException)"), "{args:?}: {e}");
        assert!(e.contains(MISMATCH), "{args:?}: {e}");
        // A key the server does not know: UnrecognizedClientException.
        let e = aws_as(&s, "AKIAIOSFODNN7EXAMPLE", &key.secret_access_key, args).unwrap_err();
        assert!(e.contains("(UnrecognizedClientException)"), "{args:?}: {e}");
        assert!(
            e.contains("The security token included in the request is invalid."),
            "{args:?}: {e}"
        );
    }
    // CloudWatch's other protocols, through botocore (the query protocol's words are checked
    // over raw HTTP below: this botocore sends awsJson with `x-amzn-query-mode` for it).
    for (protocol, wrong, unknown) in [
        (
            "smithy-rpc-v2-cbor",
            "InvalidSignatureException",
            "UnrecognizedClientException",
        ),
        (
            "json",
            "InvalidSignatureException",
            "UnrecognizedClientException",
        ),
    ] {
        let ok = botocore_as(&s, protocol, &key.access_key_id, &key.secret_access_key);
        assert!(ok.contains("\"Metrics\""), "{protocol}: {ok}");
        let out = botocore_as(&s, protocol, &key.access_key_id, &"y".repeat(40));
        assert!(
            out.starts_with(&format!("ERROR {wrong} ")),
            "{protocol}: {out}"
        );
        let out = botocore_as(&s, protocol, "AKIAIOSFODNN7EXAMPLE", &key.secret_access_key);
        assert!(
            out.starts_with(&format!("ERROR {unknown} ")),
            "{protocol}: {out}"
        );
    }
    // Nothing the refused calls carried reached the handlers.
    let e = aws_as(
        &s,
        &key.access_key_id,
        &"x".repeat(40),
        &["ecs", "create-cluster", "--cluster-name", "nope"],
    );
    assert!(e.is_err());
    let v = s.aws_ok(&["ecs", "list-clusters"]);
    assert_eq!(v["clusterArns"], serde_json::json!([]), "{v}");
}

#[test]
fn raw_unsigned_expired_and_tampered_requests_are_refused_in_each_protocol() {
    let s = Server::start_with(&["--no-agent"]);
    let json11 = "application/x-amz-json-1.1";
    // Unsigned, every awsJson service: 403 MissingAuthenticationTokenException.
    for target in [
        "AmazonEC2ContainerServiceV20141113.ListClusters",
        "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
        "Logs_20140328.DescribeLogGroups",
        "AnyScaleFrontendService.DescribeScalableTargets",
        "GraniteServiceVersion20100801.ListMetrics",
    ] {
        let r = http(
            s.port,
            "POST",
            "/",
            &[("X-Amz-Target", target), ("Content-Type", json11)],
            b"{}",
        )
        .unwrap();
        assert_eq!(r.0, 403, "{target}: {}", text(&r));
        let v: Value = serde_json::from_slice(&r.2).unwrap();
        assert_eq!(
            v["__type"], "MissingAuthenticationTokenException",
            "{target}"
        );
        assert_eq!(v["message"], "Missing Authentication Token");
    }
    // Unsigned query protocol: 403 <ErrorResponse> MissingAuthenticationToken.
    let form = "application/x-www-form-urlencoded; charset=utf-8";
    let query_body = b"Action=ListMetrics&Version=2010-08-01";
    let r = http(s.port, "POST", "/", &[("Content-Type", form)], query_body).unwrap();
    assert_eq!(r.0, 403, "{}", text(&r));
    assert!(
        text(&r).contains("<Code>MissingAuthenticationToken</Code>"),
        "{}",
        text(&r)
    );
    assert!(text(&r).contains("Request is missing Authentication Token"));
    // Unsigned rpcv2Cbor: 403, CBOR body naming the error.
    let cbor_path = "/service/GraniteServiceVersion20100801/operation/ListMetrics";
    let cbor_headers = [
        ("Content-Type", "application/cbor"),
        ("Smithy-Protocol", "rpc-v2-cbor"),
    ];
    let r = http(s.port, "POST", cbor_path, &cbor_headers, &[0xa0]).unwrap();
    assert_eq!(r.0, 403);
    assert_eq!(header(&r, "content-type"), "application/cbor");
    assert!(
        text(&r).contains("MissingAuthenticationTokenException"),
        "{}",
        text(&r)
    );
    // Signed now: accepted, in all three.
    let list = [
        (
            "X-Amz-Target",
            "AmazonEC2ContainerServiceV20141113.ListClusters",
        ),
        ("Content-Type", json11),
    ];
    let now = SystemTime::now();
    assert_eq!(signed_at(&s, now, "/", &list, b"{}").0, 200);
    assert_eq!(
        signed_at(&s, now, "/", &[("content-type", form)], query_body).0,
        200
    );
    assert_eq!(signed_at(&s, now, cbor_path, &cbor_headers, &[0xa0]).0, 200);
    // Signed 20 minutes ago: "Signature expired" as AWS words it.
    let old = now - Duration::from_secs(20 * 60);
    let r = signed_at(&s, old, "/", &list, b"{}");
    assert_eq!(r.0, 400, "{}", text(&r));
    let v: Value = serde_json::from_slice(&r.2).unwrap();
    assert_eq!(v["__type"], "InvalidSignatureException");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.starts_with("Signature expired: ")
            && m.contains(" is now earlier than ")
            && m.ends_with(" - 15 min.)"),
        "{m}"
    );
    let r = signed_at(&s, old, "/", &[("content-type", form)], query_body);
    assert_eq!(r.0, 403);
    assert!(
        text(&r).contains("<Code>SignatureDoesNotMatch</Code><Message>Signature expired: "),
        "{}",
        text(&r)
    );
    // The query protocol's words for a wrong secret and an unknown key.
    let host = s.host();
    for (key_id, secret, code) in [
        (
            s.access_key().access_key_id,
            "w".repeat(40),
            "SignatureDoesNotMatch",
        ),
        (
            "AKIAIOSFODNN7EXAMPLE".to_string(),
            s.access_key().secret_access_key,
            "InvalidClientTokenId",
        ),
    ] {
        let k = berth_iam::AccessKey {
            access_key_id: key_id,
            secret_access_key: secret,
            account_id: String::new(),
        };
        let add = berth_iam::sign(
            &k,
            "us-east-1",
            "monitoring",
            "POST",
            "/",
            None,
            &[("host", &host), ("content-type", form)],
            query_body,
            now,
        );
        let mut h: Vec<(&str, &str)> = vec![("content-type", form)];
        h.extend(add.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let r = http(s.port, "POST", "/", &h, query_body).unwrap();
        assert_eq!(r.0, 403, "{}", text(&r));
        assert!(
            text(&r).contains(&format!("<Code>{code}</Code>")),
            "{}",
            text(&r)
        );
    }
    // 20 minutes ahead: not yet current.
    let r = signed_at(&s, now + Duration::from_secs(20 * 60), "/", &list, b"{}");
    assert_eq!(r.0, 400);
    assert!(
        text(&r).contains("Signature not yet current"),
        "{}",
        text(&r)
    );
    // A body or header changed after signing.
    let create = [
        (
            "X-Amz-Target",
            "AmazonEC2ContainerServiceV20141113.CreateCluster",
        ),
        ("Content-Type", json11),
    ];
    let mut headers: Vec<(String, String)> = create
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    headers.extend(s.sign("POST", "/", &create, br#"{"clusterName":"a"}"#));
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = http(s.port, "POST", "/", &h, br#"{"clusterName":"b"}"#).unwrap();
    assert_eq!(r.0, 400, "{}", text(&r));
    assert!(
        text(&r).contains("InvalidSignatureException"),
        "{}",
        text(&r)
    );
    let swapped: Vec<(&str, &str)> = h
        .iter()
        .map(|(k, v)| {
            if *k == "X-Amz-Target" {
                (*k, "AmazonEC2ContainerServiceV20141113.DeleteCluster")
            } else {
                (*k, *v)
            }
        })
        .collect();
    let r = http(s.port, "POST", "/", &swapped, br#"{"clusterName":"a"}"#).unwrap();
    assert_eq!(r.0, 400, "{}", text(&r));
    assert!(text(&r).contains(MISMATCH), "{}", text(&r));
    // The untampered request still goes through (the signature is over exactly it).
    let r = http(s.port, "POST", "/", &h, br#"{"clusterName":"a"}"#).unwrap();
    assert_eq!(r.0, 200, "{}", text(&r));
    // A garbled Authorization header: IncompleteSignatureException.
    let r = http(
        s.port,
        "POST",
        "/",
        &[
            list[0],
            list[1],
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAX/20260101/us-east-1/ecs/aws4_request",
            ),
            ("X-Amz-Date", "20260101T000000Z"),
        ],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.0, 400);
    assert!(
        text(&r).contains("IncompleteSignatureException"),
        "{}",
        text(&r)
    );
    assert!(!text(&r).contains('<'), "the message is JSON-escaped text");
}

#[test]
fn presigned_query_form_is_accepted_only_while_valid() {
    let s = Server::start_with(&["--no-agent"]);
    let key = s.access_key();
    let target = [
        (
            "X-Amz-Target",
            "AmazonEC2ContainerServiceV20141113.ListClusters",
        ),
        ("Content-Type", "application/x-amz-json-1.1"),
    ];
    let presign = |at: SystemTime, expires: i64| {
        berth_iam::sigv4::presign(
            &key,
            "us-east-1",
            "ecs",
            "POST",
            &s.host(),
            "/",
            None,
            b"{}",
            expires,
            at,
        )
    };
    let now = SystemTime::now();
    let q = presign(now, 300);
    let r = http(s.port, "POST", &format!("/?{q}"), &target, b"{}").unwrap();
    assert_eq!(r.0, 200, "{}", text(&r));
    assert!(text(&r).contains("clusterArns"));
    // Another body than the one signed.
    let r = http(
        s.port,
        "POST",
        &format!("/?{q}"),
        &target,
        br#"{"maxResults":1}"#,
    )
    .unwrap();
    assert_eq!(r.0, 400, "{}", text(&r));
    // A URL past X-Amz-Expires.
    let q = presign(now - Duration::from_secs(120), 60);
    let r = http(s.port, "POST", &format!("/?{q}"), &target, b"{}").unwrap();
    assert_eq!(r.0, 400, "{}", text(&r));
    assert!(text(&r).contains("Signature expired"), "{}", text(&r));
    // A forged signature.
    let q = presign(now, 300);
    let (head, sig) = q.rsplit_once('=').unwrap();
    let forged = format!("{head}={}", sig.chars().rev().collect::<String>());
    let r = http(s.port, "POST", &format!("/?{forged}"), &target, b"{}").unwrap();
    assert_eq!(r.0, 400);
    assert!(
        text(&r).contains("InvalidSignatureException"),
        "{}",
        text(&r)
    );
}

#[test]
fn registry_wants_a_token_and_the_token_wants_a_signature() {
    let s = Server::start_with(&["--no-agent"]);
    let r = http(s.port, "GET", "/v2/", &[], b"").unwrap();
    assert_eq!(r.0, 401);
    assert!(
        header(&r, "www-authenticate").starts_with("Basic realm="),
        "{:?}",
        r.1
    );
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "app"]);
    let anon = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", test_image().display()))
        .arg(format!("docker://{}/app:1", s.host()))
        .env("REGISTRY_AUTH_FILE", "/nonexistent/auth.json")
        .output()
        .unwrap();
    assert!(!anon.status.success(), "an anonymous push went through");
    // GetAuthorizationToken itself needs a signature.
    let key = s.access_key();
    let e = aws_as(
        &s,
        &key.access_key_id,
        &"z".repeat(40),
        &["ecr", "get-login-password"],
    )
    .unwrap_err();
    assert!(e.contains("InvalidSignatureException"), "{e}");
    let password = aws_as(
        &s,
        &key.access_key_id,
        &key.secret_access_key,
        &["ecr", "get-login-password"],
    )
    .unwrap();
    let with = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(["--dest-creds", &format!("AWS:{}", password.trim())])
        .arg(format!("oci:{}:1", test_image().display()))
        .arg(format!("docker://{}/app:1", s.host()))
        .env("REGISTRY_AUTH_FILE", "/nonexistent/auth.json")
        .output()
        .unwrap();
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
}

#[test]
fn berth_credentials_prints_the_key_and_writes_a_profile() {
    let s = Server::start_with(&["--no-agent"]);
    let key = s.access_key();
    assert!(key.access_key_id.starts_with("AKIA") && key.access_key_id.len() == 20);
    assert_eq!(key.secret_access_key.len(), 40);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.data_dir.join("credentials.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "credentials.json is readable by others: {mode:o}"
    );
    assert!(
        !s.log().contains(&key.secret_access_key),
        "the secret is in the log"
    );
    assert!(
        s.log().contains("berth credentials --data-dir"),
        "{}",
        s.log()
    );
    let bin = std::env::var("BERTH_BIN").unwrap_or_else(|_| {
        repo_root()
            .join("target/debug/berth")
            .to_string_lossy()
            .into_owned()
    });
    let out = Command::new(&bin)
        .args(["credentials", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\n",
            key.access_key_id, key.secret_access_key
        )
    );
    // eval $(berth credentials) gives the AWS CLI what it needs.
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "eval $('{bin}' credentials --data-dir '{}') && aws --endpoint-url {} --region us-east-1 ecs list-clusters",
            s.data_dir.display(),
            s.endpoint()
        ))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        sh.status.success(),
        "{}",
        String::from_utf8_lossy(&sh.stderr)
    );
    let out = Command::new(&bin)
        .args(["credentials", "--output", "json", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["AccessKeyId"], key.access_key_id.as_str());
    assert_eq!(v["SecretAccessKey"], key.secret_access_key.as_str());
    // --profile writes ~/.aws/credentials (here a file of its own), keeping other profiles.
    let file = s.data_dir.join("aws-credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = OTHER\naws_secret_access_key = OTHERSECRET\n",
    )
    .unwrap();
    let out = Command::new(&bin)
        .args(["credentials", "--profile", "berth", "--data-dir"])
        .arg(&s.data_dir)
        .env("AWS_SHARED_CREDENTIALS_FILE", &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("aws_access_key_id = OTHER\n"), "{written}");
    let out = Command::new("aws")
        .args([
            "--profile",
            "berth",
            "--endpoint-url",
            &s.endpoint(),
            "--region",
            "us-east-1",
            "ecs",
            "list-clusters",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A restart keeps the key.
    let mut s = s;
    s.restart_after_kill9();
    assert_eq!(s.access_key(), key);
    s.aws_ok(&["ecs", "list-clusters"]);
}

#[test]
fn insecure_any_credentials_is_opt_in_and_loud() {
    let s = Server::start_with(&[
        "--no-agent",
        "--insecure-any-credentials",
        "--no-registry-auth",
    ]);
    let r = http(
        s.port,
        "POST",
        "/",
        &[
            ("X-Amz-Target", &format!("{ECS}.ListClusters")),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.0, 200, "{}", text(&r));
    aws_as(&s, "AKIAANYTHING", "anything", &["ecs", "list-clusters"]).unwrap();
    assert!(
        s.log().contains("--insecure-any-credentials"),
        "{}",
        s.log()
    );
    assert!(s.log().contains("WARN"), "{}", s.log());
    // --no-registry-auth: /v2/ is open, and the log says so.
    assert_eq!(http(s.port, "GET", "/v2/", &[], b"").unwrap().0, 200);
    assert!(s.log().contains("--no-registry-auth"), "{}", s.log());
}

/// A raw request with its own `Host` header (the harness's `http` always sends the real one).
fn with_host(
    port: u16,
    method: &str,
    path: &str,
    host: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP reply");
    let status = String::from_utf8_lossy(&buf[..split])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, buf[split + 4..].to_vec())
}

#[test]
fn dns_rebinding_host_gets_nothing_anywhere() {
    let s = Server::start_with(&["--no-agent", "--hostname", "berth.test"]);
    let evil = format!("evil.example:{}", s.port);
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("AWS:{}", s.registry_password()))
        )
    };
    // Even with valid registry credentials or a valid signature over the evil Host.
    let target = [
        (
            "X-Amz-Target",
            "AmazonEC2ContainerServiceV20141113.ListClusters",
        ),
        ("Content-Type", "application/x-amz-json-1.1"),
    ];
    let signed_for_evil = berth_iam::sign(
        &s.access_key(),
        "us-east-1",
        "ecs",
        "POST",
        "/",
        None,
        &[
            ("host", &evil),
            ("x-amz-target", target[0].1),
            ("content-type", target[1].1),
        ],
        b"{}",
        SystemTime::now(),
    );
    let mut post: Vec<(&str, &str)> = target.to_vec();
    post.extend(
        signed_for_evil
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a [u8]);
    let cases: Vec<Case> = vec![
        ("GET", "/", vec![], b""),
        ("GET", "/_berth/console/app.js", vec![], b""),
        ("GET", "/metrics", vec![], b""),
        ("GET", "/v2/", vec![("Authorization", &basic)], b""),
        ("GET", "/v2/_catalog", vec![("Authorization", &basic)], b""),
        ("GET", "/_berth/usage", vec![], b""),
        ("POST", "/", post.clone(), b"{}"),
    ];
    for (method, path, headers, body) in &cases {
        let (status, reply) = with_host(s.port, method, path, &evil, headers, body);
        assert_eq!(status, 421, "{method} {path} answered for Host {evil}");
        assert!(
            reply.is_empty(),
            "{method} {path}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    // The names berth serves still work: localhost, IP literals, --hostname.
    for host in [
        format!("localhost:{}", s.port),
        format!("[::1]:{}", s.port),
        "berth.test".to_string(),
        format!("berth.test:{}", s.port),
    ] {
        let (status, body) = with_host(s.port, "GET", "/", &host, &[], b"");
        assert_eq!(status, 200, "{host}");
        assert!(
            String::from_utf8_lossy(&body).contains("sigv4.js"),
            "{host}"
        );
    }
    let (status, _) = with_host(
        s.port,
        "GET",
        "/",
        &format!("berth.test.evil.example:{}", s.port),
        &[],
        b"",
    );
    assert_eq!(status, 421);
}

#[test]
fn metrics_want_the_bearer_token_once_one_is_configured() {
    let dir = berth_tests::temp_dir("data");
    std::fs::write(dir.join("metrics-token"), "s3cr3t-metrics-token\n").unwrap();
    let s = Server::start_in(dir);
    let r = http(s.port, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(r.0, 401, "{}", text(&r));
    assert!(
        header(&r, "www-authenticate").starts_with("Bearer"),
        "{:?}",
        r.1
    );
    assert!(!text(&r).contains("berth_"), "{}", text(&r));
    let r = http(
        s.port,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer s3cr3t-metrics-tokeX")],
        b"",
    )
    .unwrap();
    assert_eq!(r.0, 401);
    let r = http(
        s.port,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer s3cr3t-metrics-token")],
        b"",
    )
    .unwrap();
    assert_eq!(r.0, 200);
    assert!(text(&r).contains("# TYPE"), "{}", text(&r));
}

#[test]
fn usage_report_needs_a_signature_and_the_console_page_holds_no_data() {
    let s = Server::start_with(&["--no-agent"]);
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "secretcluster"]);
    let r = http(s.port, "GET", "/_berth/usage?group_by=cluster", &[], b"").unwrap();
    assert_eq!(r.0, 403, "{}", text(&r));
    assert!(
        text(&r).contains("MissingAuthenticationTokenException"),
        "{}",
        text(&r)
    );
    let r = s
        .http("GET", "/_berth/usage?group_by=cluster", &[], b"")
        .unwrap();
    assert_eq!(r.0, 200, "{}", text(&r));
    // `berth usage` signs with the environment's key, and fails without one.
    let bin = std::env::var("BERTH_BIN").unwrap_or_else(|_| {
        repo_root()
            .join("target/debug/berth")
            .to_string_lossy()
            .into_owned()
    });
    let out = Command::new(&bin)
        .args(["usage", "--endpoint", &s.endpoint()])
        .envs(s.aws_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&bin)
        .args(["usage", "--endpoint", &s.endpoint()])
        .env("AWS_ACCESS_KEY_ID", s.access_key().access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", "q".repeat(40))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidSignatureException"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The page and its scripts are public; they carry no account data.
    for path in ["/", "/_berth/console/app.js", "/_berth/console/sigv4.js"] {
        let r = http(s.port, "GET", path, &[], b"").unwrap();
        assert_eq!(r.0, 200, "{path}");
        assert!(!text(&r).contains("secretcluster"), "{path}");
        assert!(!text(&r).contains(&s.access_key().access_key_id), "{path}");
    }
}
