//! The registry with real clients on loopback: the AWS CLI for the ECR operations, skopeo and
//! podman on `/v2/` (push, copy between repositories, inspect, delete, login with auth on).

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{http, temp_dir, test_image, Server};
use serde_json::{json, Value};

fn aws_err(s: &Server, args: &[&str]) -> String {
    match s.aws(args) {
        Ok(v) => panic!("aws {args:?} succeeded: {v}"),
        Err(e) => e,
    }
}

/// Runs `cmd` with the harness's registry logins (`REGISTRY_AUTH_FILE`, read by skopeo,
/// podman and buildah).
fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("REGISTRY_AUTH_FILE", berth_tests::registry_authfile())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

/// [`run`] with the account's key in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
fn run_env(s: &Server, cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .envs(s.aws_env())
        .env("REGISTRY_AUTH_FILE", berth_tests::registry_authfile())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(b: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    format!(
        "sha256:{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    )
}

/// The manifest of `repo:tag` as BatchGetImage returns it.
fn manifest(s: &Server, repo: &str, tag: &str) -> (String, String) {
    let v = s.aws_ok(&[
        "ecr",
        "batch-get-image",
        "--repository-name",
        repo,
        "--image-ids",
        &format!("imageTag={tag}"),
    ]);
    let img = &v["images"][0];
    (
        img["imageManifest"].as_str().unwrap().to_string(),
        img["imageId"]["imageDigest"].as_str().unwrap().to_string(),
    )
}

/// `manifest` with an extra annotation (a different image over the same blobs).
fn variant(manifest: &str, n: usize) -> String {
    let mut m: Value = serde_json::from_str(manifest).unwrap();
    m["annotations"] = json!({"variant": n.to_string()});
    m.to_string()
}

fn put_image(s: &Server, repo: &str, manifest: &str, tag: &str) -> Result<Value, String> {
    s.aws(&[
        "ecr",
        "put-image",
        "--repository-name",
        repo,
        "--image-tag",
        tag,
        "--image-manifest",
        manifest,
    ])
}

fn tags(s: &Server, repo: &str) -> Vec<String> {
    let v = s.aws_ok(&[
        "ecr",
        "list-images",
        "--repository-name",
        repo,
        "--filter",
        "tagStatus=TAGGED",
    ]);
    let mut t: Vec<String> = v["imageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["imageTag"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

#[test]
fn ecr_image_and_layer_operations_with_the_cli() {
    let s = Server::start();
    s.push_test_image("app", "1");
    let (m, digest) = manifest(&s, "app", "1");
    let parsed: Value = serde_json::from_str(&m).unwrap();
    let layer = parsed["layers"][0]["digest"].as_str().unwrap().to_string();
    let config = parsed["config"]["digest"].as_str().unwrap().to_string();

    // DescribeImages fields.
    let d = s.aws_ok(&["ecr", "describe-images", "--repository-name", "app"]);
    let img = &d["imageDetails"][0];
    assert_eq!(img["imageDigest"], digest);
    assert_eq!(img["imageTags"], json!(["1"]));
    assert!(img["imageSizeInBytes"].as_u64().unwrap() > 100_000);
    assert!(img["imagePushedAt"].as_f64().is_some(), "{img}");
    assert!(img["imageManifestMediaType"]
        .as_str()
        .unwrap()
        .contains("manifest"));
    assert!(img["artifactMediaType"].as_str().is_some());

    // PutImage re-tags; the same tag again is ImageAlreadyExistsException.
    let r = put_image(&s, "app", &m, "2").unwrap();
    assert_eq!(r["image"]["imageId"]["imageDigest"], digest);
    assert!(put_image(&s, "app", &m, "2")
        .unwrap_err()
        .contains("ImageAlreadyExistsException"));
    assert_eq!(tags(&s, "app"), ["1", "2"]);

    // Layer API: availability, download URL served by berth's /v2/.
    let v = s.aws_ok(&[
        "ecr",
        "batch-check-layer-availability",
        "--repository-name",
        "app",
        "--layer-digests",
        &layer,
        &config,
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ]);
    assert_eq!(v["layers"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["failures"][0]["failureCode"], "MissingLayerDigest");
    let v = s.aws_ok(&[
        "ecr",
        "get-download-url-for-layer",
        "--repository-name",
        "app",
        "--layer-digest",
        &layer,
    ]);
    let url = v["downloadUrl"].as_str().unwrap();
    let path = url.strip_prefix(&s.endpoint()).expect(url);
    let (status, _, body) = s.http("GET", path, &[], b"").unwrap();
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), layer);

    // A layer pushed through Initiate/UploadLayerPart/Complete, in two parts.
    let dir = temp_dir("layer");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (a, b) = data.split_at(200_000);
    std::fs::write(dir.join("a"), a).unwrap();
    std::fs::write(dir.join("b"), b).unwrap();
    let up = s.aws_ok(&["ecr", "initiate-layer-upload", "--repository-name", "app"]);
    let id = up["uploadId"].as_str().unwrap();
    for (file, first, last) in [("a", 0, 199_999), ("b", 200_000, 299_999)] {
        let r = s.aws_ok(&[
            "ecr",
            "upload-layer-part",
            "--repository-name",
            "app",
            "--upload-id",
            id,
            "--part-first-byte",
            &first.to_string(),
            "--part-last-byte",
            &last.to_string(),
            "--layer-part-blob",
            &format!("fileb://{}", dir.join(file).display()),
        ]);
        assert_eq!(r["lastByteReceived"], last);
    }
    let e = aws_err(
        &s,
        &[
            "ecr",
            "upload-layer-part",
            "--repository-name",
            "app",
            "--upload-id",
            id,
            "--part-first-byte",
            "0",
            "--part-last-byte",
            "199999",
            "--layer-part-blob",
            &format!("fileb://{}", dir.join("a").display()),
        ],
    );
    assert!(e.contains("InvalidLayerPartException"), "{e}");
    let want = sha256(&data);
    let r = s.aws_ok(&[
        "ecr",
        "complete-layer-upload",
        "--repository-name",
        "app",
        "--upload-id",
        id,
        "--layer-digests",
        &want,
    ]);
    assert_eq!(r["layerDigest"], want);
    let (status, _, body) = s
        .http("GET", &format!("/v2/app/blobs/{want}"), &[], b"")
        .unwrap();
    assert_eq!((status, body.len()), (200, data.len()));
    let _ = std::fs::remove_dir_all(&dir);

    // BatchDeleteImage: by tag leaves the image while a tag remains; by digest removes it.
    let v = s.aws_ok(&[
        "ecr",
        "batch-delete-image",
        "--repository-name",
        "app",
        "--image-ids",
        "imageTag=2",
    ]);
    assert_eq!(
        v["imageIds"],
        json!([{"imageDigest": digest, "imageTag": "2"}])
    );
    assert_eq!(tags(&s, "app"), ["1"]);
    s.aws_ok(&[
        "ecr",
        "batch-delete-image",
        "--repository-name",
        "app",
        "--image-ids",
        &format!("imageDigest={digest}"),
    ]);
    let v = s.aws_ok(&["ecr", "list-images", "--repository-name", "app"]);
    assert_eq!(v["imageIds"], json!([]));
    let (status, _, _) = s.http("GET", "/v2/app/manifests/1", &[], b"").unwrap();
    assert_eq!(status, 404);
}

#[test]
fn settings_policies_tags_and_registry_with_the_cli() {
    let s = Server::start();
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "app"]);
    let v = s.aws_ok(&[
        "ecr",
        "put-image-scanning-configuration",
        "--repository-name",
        "app",
        "--image-scanning-configuration",
        "scanOnPush=true",
    ]);
    assert_eq!(v["imageScanningConfiguration"]["scanOnPush"], true);
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage"]}]}"#;
    let e = aws_err(
        &s,
        &["ecr", "get-repository-policy", "--repository-name", "app"],
    );
    assert!(e.contains("RepositoryPolicyNotFoundException"), "{e}");
    s.aws_ok(&[
        "ecr",
        "set-repository-policy",
        "--repository-name",
        "app",
        "--policy-text",
        policy,
    ]);
    let v = s.aws_ok(&["ecr", "get-repository-policy", "--repository-name", "app"]);
    assert_eq!(v["policyText"], policy);
    s.aws_ok(&[
        "ecr",
        "delete-repository-policy",
        "--repository-name",
        "app",
    ]);

    let arn = "arn:aws:ecr:us-east-1:000000000000:repository/app";
    s.aws_ok(&[
        "ecr",
        "tag-resource",
        "--resource-arn",
        arn,
        "--tags",
        "Key=team,Value=web",
        "Key=env,Value=prod",
    ]);
    s.aws_ok(&[
        "ecr",
        "untag-resource",
        "--resource-arn",
        arn,
        "--tag-keys",
        "env",
    ]);
    let v = s.aws_ok(&["ecr", "list-tags-for-resource", "--resource-arn", arn]);
    assert_eq!(v["tags"], json!([{"Key": "team", "Value": "web"}]));

    let v = s.aws_ok(&["ecr", "describe-registry"]);
    assert_eq!(v["registryId"], "000000000000");
    assert_eq!(v["replicationConfiguration"]["rules"], json!([]));
}

#[test]
fn tag_mutability_is_enforced_on_the_api_and_on_v2() {
    let s = Server::start();
    s.push_test_image("app", "v1");
    s.aws_ok(&[
        "ecr",
        "put-image-tag-mutability",
        "--repository-name",
        "app",
        "--image-tag-mutability",
        "IMMUTABLE_WITH_EXCLUSION",
        "--image-tag-mutability-exclusion-filters",
        "filterType=WILDCARD,filter=latest",
    ]);
    let (m, _) = manifest(&s, "app", "v1");
    let other = variant(&m, 1);
    // API: v1 is immutable, latest is not.
    let e = put_image(&s, "app", &other, "v1").unwrap_err();
    assert!(e.contains("ImageTagAlreadyExistsException"), "{e}");
    put_image(&s, "app", &m, "latest").unwrap();
    put_image(&s, "app", &other, "latest").unwrap();
    // /v2/: skopeo moving `latest` back works; moving the immutable `v2` fails.
    let src = format!("oci:{}:1", test_image().display());
    let dest = |t: &str| format!("docker://{}/app:{t}", s.host());
    ok(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &src,
            &dest("latest"),
        ],
    );
    put_image(&s, "app", &other, "v2").unwrap();
    let out = run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &src,
            &dest("v2"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tag invalid") || err.contains("TAG_INVALID"),
        "{err}"
    );
}

const POLICY: &str = r#"{"rules":[{"rulePriority":1,"description":"keep the newest two release images","selection":{"tagStatus":"tagged","tagPatternList":["release-*"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}},{"rulePriority":2,"description":"expire untagged images","selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;

#[test]
fn lifecycle_policy_expires_the_right_images() {
    let s = Server::start();
    s.push_test_image("app", "base");
    let (m, _) = manifest(&s, "app", "base");
    let mut digests = Vec::new();
    for n in 1..=4 {
        let r = put_image(&s, "app", &variant(&m, n), &format!("release-{n}")).unwrap();
        digests.push(
            r["image"]["imageId"]["imageDigest"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two untagged images: put then untag.
    for n in 5..=6 {
        let r = put_image(&s, "app", &variant(&m, n), "tmp").unwrap();
        digests.push(
            r["image"]["imageId"]["imageDigest"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.aws_ok(&[
        "ecr",
        "batch-delete-image",
        "--repository-name",
        "app",
        "--image-ids",
        "imageTag=tmp",
    ]);
    // Variant 5 lost `tmp` to variant 6 and stays untagged; variant 6 went with its last tag.
    let e = aws_err(
        &s,
        &["ecr", "get-lifecycle-policy", "--repository-name", "app"],
    );
    assert!(e.contains("LifecyclePolicyNotFoundException"), "{e}");
    let bad = POLICY.replace(
        "imageCountMoreThan\",\"countNumber\":2",
        "sinceImagePushed\",\"countNumber\":2",
    );
    let e = aws_err(
        &s,
        &[
            "ecr",
            "put-lifecycle-policy",
            "--repository-name",
            "app",
            "--lifecycle-policy-text",
            &bad,
        ],
    );
    assert!(e.contains("InvalidParameterException"), "{e}");

    // Preview first: nothing is deleted.
    let v = s.aws_ok(&[
        "ecr",
        "start-lifecycle-policy-preview",
        "--repository-name",
        "app",
        "--lifecycle-policy-text",
        POLICY,
    ]);
    assert_eq!(v["status"], "COMPLETE");
    let v = s.aws_ok(&[
        "ecr",
        "get-lifecycle-policy-preview",
        "--repository-name",
        "app",
    ]);
    let mut expiring: Vec<(String, i64)> = v["previewResults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["imageDigest"].as_str().unwrap().to_string(),
                r["appliedRulePriority"].as_i64().unwrap(),
            )
        })
        .collect();
    expiring.sort();
    // release-1 and release-2 by rule 1; the only untagged image (variant 5) is kept by rule 2.
    let mut want = vec![(digests[0].clone(), 1), (digests[1].clone(), 1)];
    want.sort();
    assert_eq!(expiring, want, "{v}");
    assert_eq!(v["summary"]["expiringImageTotalCount"], 2);
    assert_eq!(
        tags(&s, "app"),
        ["base", "release-1", "release-2", "release-3", "release-4"]
    );

    // The policy applies on the next push: release-5 arrives, release-1..3 go.
    s.aws_ok(&[
        "ecr",
        "put-lifecycle-policy",
        "--repository-name",
        "app",
        "--lifecycle-policy-text",
        POLICY,
    ]);
    put_image(&s, "app", &variant(&m, 7), "release-5").unwrap();
    assert_eq!(tags(&s, "app"), ["base", "release-4", "release-5"]);
    let v = s.aws_ok(&["ecr", "get-lifecycle-policy", "--repository-name", "app"]);
    assert!(v["lastEvaluatedAt"].as_f64().is_some(), "{v}");
    s.aws_ok(&["ecr", "delete-lifecycle-policy", "--repository-name", "app"]);
}

#[test]
fn skopeo_copy_between_repositories_inspect_and_delete() {
    let s = Server::start();
    s.push_test_image("src", "1");
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "dst"]);
    let h = s.host();
    ok(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{h}/src:1"),
            &format!("docker://{h}/dst:copy"),
        ],
    );
    let out = ok(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{h}/dst:copy"),
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let (_, digest) = manifest(&s, "src", "1");
    assert_eq!(v["Digest"], digest);
    ok(
        "skopeo",
        &[
            "delete",
            "--tls-verify=false",
            &format!("docker://{h}/dst:copy"),
        ],
    );
    let (status, _, _) = s.http("GET", "/v2/dst/manifests/copy", &[], b"").unwrap();
    assert_eq!(status, 404);
    // The source is untouched.
    let (status, _, _) = s.http("GET", "/v2/src/manifests/1", &[], b"").unwrap();
    assert_eq!(status, 200);
}

/// A `berth server --no-agent` of its own, outside the harness (whose `Server` logs in to the
/// registry for every client).
struct AuthServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl AuthServer {
    fn start() -> AuthServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = temp_dir("auth");
        let bin = std::env::var_os("BERTH_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| berth_tests::repo_root().join("target/debug/berth"));
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(bin)
            .args(["server", "--no-agent", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Dropping the server (also on the panic below) kills and reaps the process.
        let server = AuthServer { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http(port, "GET", "/v2/", &[], b"").is_ok_and(|(s, _, _)| s == 401) {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("berth server did not answer");
    }

    fn aws(&self, args: &[&str]) -> String {
        let key = berth_iam::Credentials::read_primary(&self.dir)
            .unwrap()
            .expect("credentials.json");
        let out = Command::new("aws")
            .args(["--endpoint-url", &format!("http://127.0.0.1:{}", self.port)])
            .args(["--region", "us-east-1"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &key.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &key.secret_access_key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn podman_login(host: &str, authfile: &str, password: &str) -> Output {
    let mut c = Command::new("podman")
        .args([
            "login",
            "--tls-verify=false",
            "--authfile",
            authfile,
            "-u",
            "AWS",
            "--password-stdin",
            host,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn auth_required_mode_checks_the_login_password() {
    let s = AuthServer::start();
    let host = format!("127.0.0.1:{}", s.port);
    let (status, headers, _) = http(s.port, "GET", "/v2/", &[], b"").unwrap();
    assert_eq!(status, 401);
    let challenge = headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str());
    assert!(
        challenge.is_some_and(|c| c.starts_with("Basic realm=")),
        "{headers:?}"
    );

    s.aws(&["ecr", "create-repository", "--repository-name", "app"]);
    let password = s.aws(&["ecr", "get-login-password"]);
    let authfile = s.dir.join("auth.json");
    let authfile = authfile.to_str().unwrap();
    let bad = podman_login(&host, authfile, "not-the-password");
    assert!(
        !bad.status.success(),
        "login with a wrong password succeeded"
    );
    let good = podman_login(&host, authfile, &password);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    let src = format!("oci:{}:1", test_image().display());
    let dest = format!("docker://{host}/app:1");
    let anon = run(
        "skopeo",
        &["copy", "--quiet", "--dest-tls-verify=false", &src, &dest],
    );
    assert!(!anon.status.success(), "anonymous push succeeded");
    ok(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--authfile",
            authfile,
            &src,
            &dest,
        ],
    );
    ok(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("AWS:{password}"),
            &dest,
        ],
    );
}

fn header<'a>(h: &'a [(String, String)], k: &str) -> &'a str {
    h.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[test]
fn upload_interrupted_by_kill9_is_invisible_and_can_be_finished() {
    let mut s = Server::start();
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "app"]);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let digest = sha256(&data);
    let (status, h, _) = s.http("POST", "/v2/app/blobs/uploads/", &[], b"").unwrap();
    assert_eq!(status, 202);
    let loc = header(&h, "location").to_string();
    let (status, _, _) = s
        .http(
            "PATCH",
            &loc,
            &[("Content-Range", "0-499999")],
            &data[..500_000],
        )
        .unwrap();
    assert_eq!(status, 202);
    s.restart_after_kill9();
    // Nothing of the blob is visible; the session kept what it had received.
    let (status, _, _) = s
        .http("HEAD", &format!("/v2/app/blobs/{digest}"), &[], b"")
        .unwrap();
    assert_eq!(status, 404);
    let (status, h, _) = s.http("GET", &loc, &[], b"").unwrap();
    assert_eq!((status, header(&h, "range")), (204, "0-499999"));
    let (status, _, _) = s
        .http(
            "PATCH",
            &loc,
            &[("Content-Range", "500000-999999")],
            &data[500_000..],
        )
        .unwrap();
    assert_eq!(status, 202);
    let (status, _, _) = s
        .http("PUT", &format!("{loc}?digest={digest}"), &[], b"")
        .unwrap();
    assert_eq!(status, 201);
    let (status, _, body) = s
        .http("GET", &format!("/v2/app/blobs/{digest}"), &[], b"")
        .unwrap();
    assert_eq!((status, sha256(&body)), (200, digest));
    // A whole image push after the restart works.
    s.push_test_image("app", "1");
}

/// Builds an OCI layout from a `bench/oci-layout.py` spec; returns `{tag: digest}`.
fn oci_layout(spec: &Value) -> Value {
    let dir = temp_dir("layout-spec");
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let out = ok(
        "python3",
        &[
            berth_tests::repo_root()
                .join("bench/oci-layout.py")
                .to_str()
                .unwrap(),
            path.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn multi_arch_index_pushed_and_pulled_with_skopeo_all() {
    let s = Server::start();
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "multi"]);
    let work = temp_dir("multi");
    let layout = work.join("src");
    let digests = oci_layout(&json!({
        "out": layout,
        "images": [
            {"tag": "amd", "arch": "amd64", "layers": [{"files": {"etc/arch": "amd64\n"}}]},
            {"tag": "arm", "arch": "arm64", "layers": [{"files": {"etc/arch": "arm64\n"}}, {"random": 300000}]}
        ],
        "indexes": [{"tag": "multi", "images": ["amd", "arm"]}]
    }));
    let h = s.host();
    ok(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--all",
            "--dest-tls-verify=false",
            &format!("oci:{}:multi", layout.display()),
            &format!("docker://{h}/multi:1"),
        ],
    );
    // The index is served by tag with its own media type and digest; both platform manifests
    // are images of the repository.
    let (status, hd, body) = s
        .http(
            "GET",
            "/v2/multi/manifests/1",
            &[("Accept", "application/vnd.oci.image.index.v1+json")],
            b"",
        )
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&hd, "content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(header(&hd, "docker-content-digest"), digests["multi"]);
    assert_eq!(sha256(&body), digests["multi"]);
    let d = s.aws_ok(&["ecr", "describe-images", "--repository-name", "multi"]);
    let mut got: Vec<String> = d["imageDetails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["imageDigest"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want: Vec<String> = ["amd", "arm", "multi"]
        .iter()
        .map(|t| digests[*t].as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Per-platform resolution through the index.
    let arm = ok(
        "skopeo",
        &[
            "--override-arch",
            "arm64",
            "inspect",
            "--tls-verify=false",
            &format!("docker://{h}/multi:1"),
        ],
    );
    let arm: Value = serde_json::from_str(&arm).unwrap();
    assert_eq!(arm["Architecture"], "arm64");
    assert_eq!(arm["Layers"].as_array().unwrap().len(), 2, "{arm}");
    // Pull everything back: the same index and both images, byte for byte.
    let pulled = work.join("pulled");
    ok(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{h}/multi:1"),
            &format!("oci:{}:back", pulled.display()),
        ],
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(pulled.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digests["multi"]);
    for t in ["multi", "amd", "arm"] {
        let hex = digests[t].as_str().unwrap().trim_start_matches("sha256:");
        let b = std::fs::read(pulled.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(sha256(&b), digests[t]);
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn buildah_pushes_to_the_registry() {
    let s = Server::start();
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "built"]);
    // Own storage, so nothing touches the host's containers-storage.
    let work = temp_dir("buildah");
    let root = work.join("root");
    let runroot = work.join("runroot");
    let buildah = |args: &[&str]| -> String {
        let mut all = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "vfs",
        ];
        all.extend_from_slice(args);
        ok("buildah", &all)
    };
    let src = format!("oci:{}:1", test_image().display());
    let id = buildah(&["pull", "--quiet", &src]);
    let id = id.trim();
    let dest = format!("docker://{}/built:bb", s.host());
    buildah(&["push", "--quiet", "--tls-verify=false", id, &dest]);
    let out = ok("skopeo", &["inspect", "--tls-verify=false", &dest]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(tags(&s, "built"), ["bb"]);
    // buildah pulls it back.
    buildah(&["pull", "--quiet", "--tls-verify=false", &dest]);
    let _ = buildah(&["rmi", "--all", "--force"]);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn artifact_with_a_subject_is_found_through_the_referrers_api() {
    let s = Server::start();
    s.push_test_image("app", "1");
    let (m, subject) = manifest(&s, "app", "1");
    // Blobs of the artifact: the empty config and one layer, monolithic POST ?digest=.
    let config = b"{}";
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#;
    for blob in [&config[..], &sbom[..]] {
        let (status, _, _) = s
            .http(
                "POST",
                &format!("/v2/app/blobs/uploads/?digest={}", sha256(blob)),
                &[("Content-Type", "application/octet-stream")],
                blob,
            )
            .unwrap();
        assert_eq!(status, 201);
    }
    let artifact = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(config), "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sha256(sbom), "size": sbom.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": m.len()},
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    })
    .to_string();
    let adigest = sha256(artifact.as_bytes());
    let (status, hd, _) = s
        .http(
            "PUT",
            &format!("/v2/app/manifests/{adigest}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            artifact.as_bytes(),
        )
        .unwrap();
    assert_eq!(status, 201);
    assert_eq!(header(&hd, "oci-subject"), subject);
    // The referrers index lists it, with artifactType and annotations.
    let (status, hd, body) = s
        .http("GET", &format!("/v2/app/referrers/{subject}"), &[], b"")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&hd, "content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    let idx: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1, "{idx}");
    let r = &idx["manifests"][0];
    assert_eq!(r["digest"], adigest);
    assert_eq!(r["artifactType"], "application/spdx+json");
    assert_eq!(r["size"], artifact.len());
    assert_eq!(
        r["annotations"]["org.opencontainers.image.created"],
        "2024-01-01T00:00:00Z"
    );
    // Filtering by artifactType.
    let (status, hd, body) = s
        .http(
            "GET",
            &format!("/v2/app/referrers/{subject}?artifactType=application/spdx%2Bjson"),
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&hd, "oci-filters-applied"), "artifactType");
    let idx: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
    let (_, hd, body) = s
        .http(
            "GET",
            &format!("/v2/app/referrers/{subject}?artifactType=application/vnd.other"),
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(header(&hd, "oci-filters-applied"), "artifactType");
    let idx: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(idx["manifests"], json!([]));
    // An unknown subject: 200 with an empty index.
    let (status, _, body) = s
        .http(
            "GET",
            &format!("/v2/app/referrers/sha256:{}", "0".repeat(64)),
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(status, 200);
    let idx: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(idx["manifests"], json!([]));
    // ECR sees the artifact and its subject.
    let d = s.aws_ok(&[
        "ecr",
        "describe-images",
        "--repository-name",
        "app",
        "--image-ids",
        &format!("imageDigest={adigest}"),
    ]);
    assert_eq!(d["imageDetails"][0]["subjectManifestDigest"], subject);
    assert_eq!(
        d["imageDetails"][0]["artifactMediaType"],
        "application/spdx+json"
    );
}

#[test]
fn skopeo_push_interrupted_by_kill9_of_the_server_is_redone() {
    let mut s = Server::start();
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "big"]);
    let work = temp_dir("kill9-push");
    let layout = work.join("layout");
    // gzip layers are pushed as they are (skopeo would compress plain tar ones on the way).
    let digests = oci_layout(&json!({
        "out": layout,
        "images": [{"tag": "1",
                    "layers": [{"files": {"etc/x": "x\n"}}, {"random": 64 * 1024 * 1024}]}]
    }));
    let m: Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digests["1"].as_str().unwrap().trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let big = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let src = format!("oci:{}:1", layout.display());
    let dest = format!("docker://{}/big:1", s.host());
    let mut push = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--retry-times",
            "0",
            "--dest-tls-verify=false",
        ])
        .args([&src, &dest])
        .env("REGISTRY_AUTH_FILE", berth_tests::registry_authfile())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once the big upload is under way.
    let uploads = s.data_dir.join("registry/uploads");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let receiving = std::fs::read_dir(&uploads)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() > 1 << 20));
        if receiving {
            break;
        }
        assert!(
            push.try_wait().unwrap().is_none(),
            "the push finished before the kill"
        );
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.restart_after_kill9();
    let out = push.wait_with_output().unwrap();
    assert!(!out.status.success(), "the push survived the kill");
    // Nothing partial is visible: not the big blob, not the manifest.
    let (status, _, _) = s
        .http("HEAD", &format!("/v2/big/blobs/{big}"), &[], b"")
        .unwrap();
    assert_eq!(status, 404);
    let (status, _, _) = s.http("GET", "/v2/big/manifests/1", &[], b"").unwrap();
    assert_eq!(status, 404);
    let d = s.aws_ok(&["ecr", "describe-images", "--repository-name", "big"]);
    assert_eq!(d["imageDetails"], json!([]));
    // The same push again succeeds, and the image reads back byte for byte.
    ok(
        "skopeo",
        &["copy", "--quiet", "--dest-tls-verify=false", &src, &dest],
    );
    let (status, hd, _) = s
        .http("HEAD", &format!("/v2/big/blobs/{big}"), &[], b"")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&hd, "content-length"),
        m["layers"][1]["size"].to_string()
    );
    let (_, digest) = manifest(&s, "big", "1");
    assert_eq!(digest, digests["1"]);
    let back = work.join("back");
    ok(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &dest,
            &format!("oci:{}:1", back.display()),
        ],
    );
    let blob = std::fs::read(
        back.join("blobs/sha256")
            .join(big.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(sha256(&blob), big);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn tasks_pull_from_the_registry_when_it_requires_credentials() {
    let s = Server::start();
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "locked"]);
    let token = s.aws_ok(&["ecr", "get-authorization-token"]);
    let token = token["authorizationData"][0]["authorizationToken"]
        .as_str()
        .unwrap()
        .to_string();
    let decoded = Command::new("sh")
        .args(["-c", &format!("printf %s {token} | base64 -d")])
        .output()
        .unwrap();
    let creds = String::from_utf8(decoded.stdout).unwrap();
    let password = creds.strip_prefix("AWS:").unwrap().to_string();
    let pushed = run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("AWS:{password}"),
            &format!("oci:{}:1", test_image().display()),
            &format!("docker://{}/locked:1", s.host()),
        ],
    );
    assert!(pushed.status.success(), "{pushed:?}");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let td = s.register(&berth_tests::fargate_taskdef(
        "locked",
        "locked",
        json!({"command": ["sh", "-c", "echo pulled with credentials"]}),
    ));
    let arn = s.run_task("demo", &td, None);
    s.wait_tasks_stopped("demo", &arn);
    let t = s.describe_task("demo", &arn);
    assert_eq!(t["containers"][0]["exitCode"], 0, "{t}\n{}", s.log());
    // Without credentials the registry still refuses.
    let (status, _, _) = http(s.port, "GET", "/v2/locked/tags/list", &[], b"").unwrap();
    assert_eq!(status, 401);
}

#[test]
fn berth_push_and_pull_move_images_with_progress() {
    let s = Server::start();
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "verbs"]);
    let bin = std::env::var("BERTH_BIN").unwrap_or_else(|_| {
        berth_tests::repo_root()
            .join("target/debug/berth")
            .to_string_lossy()
            .into_owned()
    });
    let endpoint = s.endpoint();
    let src = format!("oci:{}:1", test_image().display());
    // On a terminal (a pty from `script`) the verbs show bytes and rate.
    let push = run_env(
        &s,
        "script",
        &[
            "-qec",
            &format!("{bin} push --endpoint {endpoint} {src} verbs:7"),
            "/dev/null",
        ],
    );
    let out = String::from_utf8_lossy(&push.stdout).to_string();
    assert!(push.status.success(), "{out}\n{}", s.log());
    assert!(out.contains("MiB/s"), "no progress shown: {out}");
    let pushed = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sha256:"))
        .expect("digest printed")
        .to_string();
    let index: Value =
        serde_json::from_slice(&std::fs::read(test_image().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], pushed.as_str());
    let remote = ok(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/verbs:7", s.host()),
        ],
    );
    let remote: Value = serde_json::from_str(&remote).unwrap();
    assert_eq!(remote["Digest"], pushed.as_str());
    // Pull it back into a new layout; the digest and the blobs are the same.
    let dir = temp_dir("pulled");
    let pull = run_env(
        &s,
        &bin,
        &[
            "pull",
            "--endpoint",
            &endpoint,
            "verbs:7",
            &format!("oci:{}", dir.display()),
        ],
    );
    assert!(pull.status.success(), "{pull:?}");
    let pulled = String::from_utf8_lossy(&pull.stdout).trim().to_string();
    assert_eq!(pulled, pushed);
    let copy = run("skopeo", &["inspect", &format!("oci:{}:7", dir.display())]);
    assert!(copy.status.success(), "{copy:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
