use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::digest::Digest;
use crate::manifests::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::testutil::{ecr, registry};
use crate::Registry;

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    fn code(&self) -> String {
        let v: Value = serde_json::from_slice(&self.body).unwrap();
        v["errors"][0]["code"].as_str().unwrap().to_string()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

async fn setup(repos: &[&str]) -> (Arc<Registry>, Router, crate::testutil::TempDir) {
    let (reg, dir) = registry();
    for r in repos {
        ecr(&reg, "CreateRepository", json!({"repositoryName": r})).await;
    }
    let app = reg.clone().router();
    (reg, app, dir)
}

/// Monolithic upload of `data` into `repo`; returns its digest.
async fn push_blob(app: &Router, repo: &str, data: &[u8]) -> String {
    let d = Digest::of(data).to_string();
    let r = call(
        app,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[],
        data,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("docker-content-digest"), d);
    d
}

fn image_manifest(media_type: &str, config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn base_and_unknown_names() {
    let (_reg, app, _dir) = setup(&["web"]).await;
    let r = call(&app, Method::GET, "/v2/", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    let r = call(&app, Method::GET, "/v2", &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&app, Method::POST, "/v2/nope/blobs/uploads/", &[], "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    let r = call(&app, Method::GET, "/v2/Bad/tags/list", &[], "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "NAME_INVALID")
    );
    let r = call(
        &app,
        Method::GET,
        "/v2/web/manifests/sha256:totallywrong",
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = call(&app, Method::GET, "/v2/web/blobs/sha256:xyz", &[], "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let missing = Digest::of(b"missing").to_string();
    let r = call(
        &app,
        Method::HEAD,
        &format!("/v2/web/blobs/{missing}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&app, Method::GET, "/v2/web/manifests/latest", &[], "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
}

#[tokio::test]
async fn chunked_upload_flow() {
    let (_reg, app, dir) = setup(&["team/web"]).await;
    let r = call(&app, Method::POST, "/v2/team/web/blobs/uploads/", &[], "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let loc = r.header("location").to_string();
    let id = r.header("docker-upload-uuid").to_string();
    assert_eq!(loc, format!("/v2/team/web/blobs/uploads/{id}"));
    assert_eq!(r.header("range"), "0-0");

    let r = call(
        &app,
        Method::PATCH,
        &loc,
        &[("content-range", "0-4")],
        "hello",
    )
    .await;
    assert_eq!((r.status, r.header("range")), (StatusCode::ACCEPTED, "0-4"));
    assert_eq!(r.header("location"), loc);
    // Out of order and repeated chunks.
    let r = call(
        &app,
        Method::PATCH,
        &loc,
        &[("content-range", "10-14")],
        "xxxxx",
    )
    .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let r = call(
        &app,
        Method::PATCH,
        &loc,
        &[("content-range", "0-4")],
        "hello",
    )
    .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    // Length not matching Content-Range: rejected, nothing kept.
    let r = call(&app, Method::PATCH, &loc, &[("content-range", "5-9")], "ab").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID")
    );
    let r = call(&app, Method::GET, &loc, &[], "").await;
    assert_eq!(
        (r.status, r.header("range")),
        (StatusCode::NO_CONTENT, "0-4")
    );
    assert_eq!(r.header("location"), loc);
    // Another repository cannot touch the session.
    let r = call(
        &app,
        Method::GET,
        &format!("/v2/nope/blobs/uploads/{id}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A streamed chunk (no Content-Range) appends.
    let r = call(&app, Method::PATCH, &loc, &[], " worl").await;
    assert_eq!(r.header("range"), "0-9");
    let d = Digest::of(b"hello world!").to_string();
    // A closing chunk out of order: 416, and the session keeps its bytes (OCI distribution spec,
    // "If the final chunk is uploaded out of order, the registry MUST respond with a 416").
    for cr in ["4-5", "11-12"] {
        let r = call(
            &app,
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[("content-range", cr)],
            "d!",
        )
        .await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{cr}");
        let r = call(&app, Method::GET, &loc, &[], "").await;
        assert_eq!(
            (r.status, r.header("range")),
            (StatusCode::NO_CONTENT, "0-9"),
            "{cr}"
        );
    }
    let r = call(
        &app,
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[("content-range", "10-11")],
        "d!",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/team/web/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), d);
    // The session is gone; the blob is readable.
    assert_eq!(
        call(&app, Method::GET, &loc, &[], "").await.status,
        StatusCode::NOT_FOUND
    );
    let r = call(
        &app,
        Method::HEAD,
        &format!("/v2/team/web/blobs/{d}"),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.header("content-length")),
        (StatusCode::OK, "12")
    );
    assert_eq!(r.header("docker-content-digest"), d);
    assert!(r.body.is_empty());
    let r = call(
        &app,
        Method::GET,
        &format!("/v2/team/web/blobs/{d}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.body, b"hello world!");
    let r = call(
        &app,
        Method::GET,
        &format!("/v2/team/web/blobs/{d}"),
        &[("range", "bytes=6-10")],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &b"world"[..])
    );
    let hex = d.strip_prefix("sha256:").unwrap();
    assert!(dir.path().join("data/blobs/sha256").join(hex).exists());
    // Uploads dir holds nothing left over.
    assert_eq!(
        std::fs::read_dir(dir.path().join("data/uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn digest_mismatch_leaves_nothing_visible() {
    let (_reg, app, dir) = setup(&["web"]).await;
    let r = call(&app, Method::POST, "/v2/web/blobs/uploads/", &[], "").await;
    let loc = r.header("location").to_string();
    call(&app, Method::PATCH, &loc, &[], "content").await;
    let claimed = Digest::of(b"other").to_string();
    let r = call(
        &app,
        Method::PUT,
        &format!("{loc}?digest={claimed}"),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let actual = Digest::of(b"content").to_string();
    for d in [&claimed, &actual] {
        let r = call(&app, Method::HEAD, &format!("/v2/web/blobs/{d}"), &[], "").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("data/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    // Monolithic push with a wrong digest, and malformed digests.
    let r = call(
        &app,
        Method::POST,
        &format!("/v2/web/blobs/uploads/?digest={claimed}"),
        &[],
        "content",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = call(
        &app,
        Method::POST,
        "/v2/web/blobs/uploads/?digest=sha256:zz",
        &[],
        "content",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = call(&app, Method::POST, "/v2/web/blobs/uploads/", &[], "").await;
    let loc = r.header("location").to_string();
    let r = call(
        &app,
        Method::PUT,
        &format!("{loc}?digest=md5:abc"),
        &[],
        "x",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("data/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn upload_survives_restart() {
    let (reg, app, dir) = setup(&["web"]).await;
    let r = call(&app, Method::POST, "/v2/web/blobs/uploads/", &[], "").await;
    let loc = r.header("location").to_string();
    call(
        &app,
        Method::PATCH,
        &loc,
        &[("content-range", "0-2")],
        "abc",
    )
    .await;
    // A second registry over the same directory and store picks the session up from disk.
    let reg2 = Arc::new(
        Registry::open(
            &dir.path().join("data"),
            reg.store.clone(),
            reg.scope.clone(),
            "h:1".into(),
        )
        .unwrap()
        .with_auth_required(false),
    );
    let app2 = reg2.router();
    let r = call(&app2, Method::GET, &loc, &[], "").await;
    assert_eq!(
        (r.status, r.header("range")),
        (StatusCode::NO_CONTENT, "0-2")
    );
    let d = Digest::of(b"abcdef").to_string();
    let r = call(
        &app2,
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &[("content-range", "3-5")],
        "def",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn manifests_tags_and_indexes() {
    let (reg, app, _dir) = setup(&["team/web", "other"]).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"layer bytes";
    let missing = Digest::of(b"not pushed").to_string();
    let cd = push_blob(&app, "team/web", config).await;
    let ld = push_blob(&app, "team/web", layer).await;

    // Missing layer, bad JSON, contradicting types, wrong digest.
    let m = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[(&missing, 3)]);
    let r = call(
        &app,
        Method::PUT,
        "/v2/team/web/manifests/1",
        &[("content-type", OCI_MANIFEST)],
        m,
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = call(
        &app,
        Method::PUT,
        "/v2/team/web/manifests/1",
        &[("content-type", OCI_MANIFEST)],
        "{oops",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
    );
    // A layer descriptor whose size is not the blob's.
    for (cs, ls) in [
        (config.len(), layer.len() + 1),
        (config.len(), layer.len() - 1),
        (config.len() + 7, layer.len()),
    ] {
        let bad = image_manifest(OCI_MANIFEST, (&cd, cs), &[(&ld, ls)]);
        let r = call(
            &app,
            Method::PUT,
            "/v2/team/web/manifests/1",
            &[("content-type", OCI_MANIFEST)],
            bad,
        )
        .await;
        assert_eq!(r.code(), "MANIFEST_INVALID", "{cs} {ls}");
    }
    let m = image_manifest(OCI_MANIFEST, (&cd, config.len()), &[(&ld, layer.len())]);
    let r = call(
        &app,
        Method::PUT,
        "/v2/team/web/manifests/1",
        &[("content-type", DOCKER_MANIFEST)],
        m.clone(),
    )
    .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let r = call(
        &app,
        Method::PUT,
        &format!("/v2/team/web/manifests/{missing}"),
        &[("content-type", OCI_MANIFEST)],
        m.clone(),
    )
    .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    // The same blobs are not linked into another repository.
    let r = call(
        &app,
        Method::PUT,
        "/v2/other/manifests/1",
        &[("content-type", OCI_MANIFEST)],
        m.clone(),
    )
    .await;
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    assert!(reg.records().images("team/web").await.unwrap().is_empty());

    let md = Digest::of(&m).to_string();
    let r = call(
        &app,
        Method::PUT,
        "/v2/team/web/manifests/1",
        &[("content-type", OCI_MANIFEST)],
        m.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("docker-content-digest"), md);
    assert_eq!(r.header("location"), format!("/v2/team/web/manifests/{md}"));
    for reference in ["1", md.as_str()] {
        let r = call(
            &app,
            Method::GET,
            &format!("/v2/team/web/manifests/{reference}"),
            &[],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), md);
        assert_eq!(r.body, m);
        let r = call(
            &app,
            Method::HEAD,
            &format!("/v2/team/web/manifests/{reference}"),
            &[],
            "",
        )
        .await;
        assert_eq!(r.header("content-length"), m.len().to_string());
        assert!(r.body.is_empty());
    }
    // Docker schema 2 with a custom parameterised content type is served back verbatim.
    let dm = String::from_utf8(image_manifest(
        DOCKER_MANIFEST,
        (&cd, config.len()),
        &[(&ld, layer.len())],
    ))
    .unwrap();
    let ct = format!("{DOCKER_MANIFEST}; charset=utf-8");
    let r = call(
        &app,
        Method::PUT,
        "/v2/team/web/manifests/docker",
        &[("content-type", ct.as_str())],
        dm,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = call(&app, Method::GET, "/v2/team/web/manifests/docker", &[], "").await;
    assert_eq!(r.header("content-type"), ct);

    // Index: unknown child rejected, known child accepted.
    let index = |d: &str, size: usize| {
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": d, "size": size}]}).to_string()
    };
    let r = call(
        &app,
        Method::PUT,
        "/v2/team/web/manifests/multi",
        &[("content-type", OCI_INDEX)],
        index(&missing, 10),
    )
    .await;
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    // A child descriptor whose size is not the child manifest's.
    let r = call(
        &app,
        Method::PUT,
        "/v2/team/web/manifests/multi",
        &[("content-type", OCI_INDEX)],
        index(&md, m.len() + 1),
    )
    .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let r = call(
        &app,
        Method::PUT,
        "/v2/team/web/manifests/multi",
        &[("content-type", OCI_INDEX)],
        index(&md, m.len()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);

    for t in ["b", "a", "c"] {
        call(
            &app,
            Method::PUT,
            &format!("/v2/team/web/manifests/{t}"),
            &[("content-type", OCI_MANIFEST)],
            m.clone(),
        )
        .await;
    }
    let r = call(&app, Method::GET, "/v2/team/web/tags/list", &[], "").await;
    assert_eq!(
        r.json(),
        json!({"name": "team/web", "tags": ["1", "a", "b", "c", "docker", "multi"]})
    );
    let r = call(
        &app,
        Method::GET,
        "/v2/team/web/tags/list?n=2&last=a",
        &[],
        "",
    )
    .await;
    assert_eq!(r.json()["tags"], json!(["b", "c"]));
    assert_eq!(
        r.header("link"),
        "</v2/team/web/tags/list?n=2&last=c>; rel=\"next\""
    );

    // ECR sees the images.
    let li = ecr(
        &reg,
        "ListImages",
        json!({"repositoryName": "team/web", "filter": {"tagStatus": "TAGGED"}}),
    )
    .await;
    assert_eq!(li["imageIds"].as_array().unwrap().len(), 6);
    let di = ecr(
        &reg,
        "DescribeImages",
        json!({"repositoryName": "team/web", "imageIds": [{"imageTag": "1"}]}),
    )
    .await;
    let detail = &di["imageDetails"][0];
    assert_eq!(detail["imageDigest"], md);
    assert_eq!(detail["imageTags"], json!(["1", "a", "b", "c"]));
    assert_eq!(detail["imageManifestMediaType"], OCI_MANIFEST);
    let bg = ecr(
        &reg,
        "BatchGetImage",
        json!({"repositoryName": "team/web", "imageIds": [{"imageTag": "1"}, {"imageTag": "zz"}]}),
    )
    .await;
    assert_eq!(
        bg["images"][0]["imageManifest"]
            .as_str()
            .unwrap()
            .as_bytes(),
        m.as_slice()
    );
    assert_eq!(bg["failures"][0]["failureCode"], "ImageNotFound");

    // Delete by tag removes the tag only; by digest removes the image and its tags.
    assert_eq!(
        call(&app, Method::DELETE, "/v2/team/web/manifests/a", &[], "")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        call(&app, Method::GET, "/v2/team/web/manifests/a", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, Method::GET, "/v2/team/web/manifests/b", &[], "")
            .await
            .status,
        StatusCode::OK
    );

    // DeleteRepository refuses while images remain, unless forced; afterwards pushes fail.
    let e = reg
        .handle_ecr("DeleteRepository", br#"{"repositoryName":"team/web"}"#)
        .await
        .unwrap_err();
    assert_eq!(e.error_type, "RepositoryNotEmptyException");
    ecr(
        &reg,
        "DeleteRepository",
        json!({"repositoryName": "team/web", "force": true}),
    )
    .await;
    let r = call(&app, Method::GET, "/v2/team/web/manifests/b", &[], "").await;
    assert_eq!(r.code(), "NAME_UNKNOWN");
    assert!(reg
        .store
        .list(crate::records::KIND_TAG, "")
        .await
        .unwrap()
        .is_empty());
    assert!(reg
        .store
        .list(crate::records::KIND_BLOB, "team/web@")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn immutable_tags_and_mount() {
    let (reg, app, _dir) = setup(&["src"]).await;
    ecr(
        &reg,
        "CreateRepository",
        json!({"repositoryName": "locked", "imageTagMutability": "IMMUTABLE"}),
    )
    .await;
    let config = b"{}";
    let cd = push_blob(&app, "src", config).await;
    // Mount into another repository.
    let r = call(
        &app,
        Method::POST,
        &format!("/v2/locked/blobs/uploads/?mount={cd}&from=src"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("docker-content-digest"), cd);
    let missing = Digest::of(b"nope").to_string();
    let r = call(
        &app,
        Method::POST,
        &format!("/v2/locked/blobs/uploads/?mount={missing}&from=src"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let m1 = image_manifest(OCI_MANIFEST, (&cd, 2), &[]);
    let r = call(
        &app,
        Method::PUT,
        "/v2/locked/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        m1.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Re-pushing the same content is fine; moving the tag is not.
    let r = call(
        &app,
        Method::PUT,
        "/v2/locked/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        m1,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let m2 = image_manifest(OCI_MANIFEST, (&cd, 2), &[(&cd, 2)]);
    let r = call(
        &app,
        Method::PUT,
        "/v2/locked/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        m2,
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "TAG_INVALID")
    );
}

#[tokio::test]
async fn basic_auth() {
    let (reg, app, _dir) = setup(&[]).await;
    let t = ecr(&reg, "GetAuthorizationToken", json!({})).await;
    let good = format!(
        "Basic {}",
        t["authorizationData"][0]["authorizationToken"]
            .as_str()
            .unwrap()
    );
    let r = call(
        &app,
        Method::GET,
        "/v2/",
        &[("authorization", good.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let (bad_token, _) = (
        format!("AWS:{}.{}", crate::auth::now_secs() + 100, "00".repeat(32)),
        (),
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(bad_token)
    );
    for h in [bad.as_str(), "Basic !!!", "Bearer abc"] {
        let r = call(&app, Method::GET, "/v2/", &[("authorization", h)], "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{h}");
        assert_eq!(r.header("www-authenticate"), "Basic realm=\"berth\"");
        assert_eq!(r.code(), "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn referrers_subject_and_artifact_type_filter() {
    let (_reg, app, _dir) = setup(&["app"]).await;
    let cd = push_blob(&app, "app", b"{}").await;
    let subject = image_manifest(OCI_MANIFEST, (&cd, 2), &[]);
    let sd = Digest::of(&subject).to_string();
    let r = call(
        &app,
        Method::PUT,
        "/v2/app/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        subject.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("oci-subject"), "");
    let empty = push_blob(&app, "app", b"{}").await;
    let artifact = |t: &str, note: &str| {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": t,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()},
            "annotations": {"note": note},
        })
        .to_string()
    };
    let sig = artifact("application/vnd.example.sig", "signature");
    let sbom = artifact("application/vnd.example.sbom", "sbom");
    for m in [&sig, &sbom] {
        let d = Digest::of(m.as_bytes()).to_string();
        let r = call(
            &app,
            Method::PUT,
            &format!("/v2/app/manifests/{d}"),
            &[("content-type", OCI_MANIFEST)],
            m.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.header("oci-subject"), sd);
    }
    let r = call(
        &app,
        Method::GET,
        &format!("/v2/app/referrers/{sd}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), OCI_INDEX);
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(r.header("oci-filters-applied"), "");
    let r = call(
        &app,
        Method::GET,
        &format!("/v2/app/referrers/{sd}?artifactType=application/vnd.example.sbom"),
        &[],
        "",
    )
    .await;
    let found = r.json()["manifests"].clone();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["digest"], Digest::of(sbom.as_bytes()).to_string());
    assert_eq!(found[0]["artifactType"], "application/vnd.example.sbom");
    assert_eq!(found[0]["annotations"]["note"], "sbom");
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    // Unknown subject: empty index; bad digest: 400.
    let r = call(
        &app,
        Method::GET,
        &format!("/v2/app/referrers/{}", Digest::of(b"x")),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["manifests"].clone()),
        (StatusCode::OK, json!([]))
    );
    let r = call(&app, Method::GET, "/v2/app/referrers/sha256:nope", &[], "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
}

#[tokio::test]
async fn sha512_tag_param_mount_and_deletes() {
    let (_reg, app, _dir) = setup(&["aa", "bb"]).await;
    // A sha512 blob, monolithic and chunked.
    let data = b"sha512 content";
    let d512 = Digest::of_with(crate::digest::Algorithm::Sha512, data).to_string();
    let r = call(
        &app,
        Method::POST,
        &format!("/v2/aa/blobs/uploads/?digest={d512}"),
        &[],
        data.to_vec(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = call(&app, Method::GET, &format!("/v2/aa/blobs/{d512}"), &[], "").await;
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &data[..]));
    assert_eq!(r.header("docker-content-digest"), d512);
    // A manifest pushed by sha512 digest with ?tag= (end-7b).
    let cd = push_blob(&app, "aa", b"{}").await;
    let m = image_manifest(OCI_MANIFEST, (&cd, 2), &[(&d512, data.len())]);
    let md = Digest::of_with(crate::digest::Algorithm::Sha512, &m).to_string();
    let r = call(
        &app,
        Method::PUT,
        &format!("/v2/aa/manifests/{md}?tag=one&tag=two"),
        &[("content-type", OCI_MANIFEST)],
        m.clone(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("docker-content-digest"), md);
    let tags: Vec<&str> = r
        .headers
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(tags, ["one", "two"]);
    let r = call(&app, Method::GET, "/v2/aa/manifests/two", &[], "").await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, m.clone()));
    assert_eq!(r.header("docker-content-digest"), md);
    let r = call(
        &app,
        Method::PUT,
        &format!("/v2/aa/manifests/{md}?tag=bad:tag"),
        &[("content-type", OCI_MANIFEST)],
        m.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Mount: 201 only with a `from` that holds the blob.
    let r = call(
        &app,
        Method::POST,
        &format!("/v2/bb/blobs/uploads/?mount={cd}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.header("location").starts_with("/v2/bb/blobs/uploads/"));
    let r = call(
        &app,
        Method::POST,
        &format!("/v2/bb/blobs/uploads/?mount={cd}&from=bb"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = call(
        &app,
        Method::POST,
        &format!("/v2/bb/blobs/uploads/?mount={cd}&from=aa"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = call(&app, Method::HEAD, &format!("/v2/bb/blobs/{cd}"), &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    // Upload cancel.
    let r = call(&app, Method::POST, "/v2/bb/blobs/uploads/", &[], "").await;
    let loc = r.header("location").to_string();
    let r = call(&app, Method::DELETE, &loc, &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&app, Method::GET, &loc, &[], "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );

    // Deletes: by tag untags, by digest removes; blobs 202 then 404.
    let r = call(&app, Method::DELETE, "/v2/aa/manifests/one", &[], "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = call(&app, Method::GET, "/v2/aa/tags/list", &[], "").await;
    assert_eq!(r.json()["tags"], json!(["two"]));
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v2/aa/manifests/{md}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = call(&app, Method::GET, "/v2/aa/manifests/two", &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v2/aa/blobs/{d512}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = call(&app, Method::GET, &format!("/v2/aa/blobs/{d512}"), &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &app,
        Method::DELETE,
        &format!("/v2/aa/blobs/{d512}"),
        &[],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
}

#[tokio::test]
async fn immutable_exclusions_on_v2() {
    let (reg, app, _dir) = setup(&[]).await;
    ecr(&reg, "CreateRepository", json!({"repositoryName": "app", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION", "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}]})).await;
    let cd = push_blob(&app, "app", b"{}").await;
    let ld = push_blob(&app, "app", b"l").await;
    let m1 = image_manifest(OCI_MANIFEST, (&cd, 2), &[]);
    let m2 = image_manifest(OCI_MANIFEST, (&cd, 2), &[(&ld, 1)]);
    for t in ["latest", "v1"] {
        let r = call(
            &app,
            Method::PUT,
            &format!("/v2/app/manifests/{t}"),
            &[("content-type", OCI_MANIFEST)],
            m1.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = call(
        &app,
        Method::PUT,
        "/v2/app/manifests/latest",
        &[("content-type", OCI_MANIFEST)],
        m2.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = call(
        &app,
        Method::PUT,
        "/v2/app/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        m2,
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "TAG_INVALID")
    );
}

#[tokio::test]
async fn auth_required_mode() {
    let (reg0, dir) = crate::testutil::registry();
    drop(reg0);
    let store = Arc::new(berth_store::SqliteStore::open_in_memory().unwrap());
    let scope = berth_core::arn::Scope {
        region: "us-east-1".into(),
        account: "000000000000".into(),
    };
    let reg = Arc::new(
        Registry::open(
            &dir.path().join("data"),
            store,
            scope,
            "127.0.0.1:5150".into(),
        )
        .unwrap()
        .with_auth_required(true),
    );
    ecr(&reg, "CreateRepository", json!({"repositoryName": "app"})).await;
    let app = reg.clone().router();
    for path in ["/v2/", "/v2/app/tags/list", "/v2/nope/manifests/x"] {
        let r = call(&app, Method::GET, path, &[], "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(r.header("www-authenticate").starts_with("Basic realm="));
        assert_eq!(r.code(), "UNAUTHORIZED");
    }
    let t = ecr(&reg, "GetAuthorizationToken", json!({})).await;
    let good = format!(
        "Basic {}",
        t["authorizationData"][0]["authorizationToken"]
            .as_str()
            .unwrap()
    );
    let auth = [("authorization", good.as_str())];
    let r = call(&app, Method::GET, "/v2/", &auth, "").await;
    assert_eq!(r.status, StatusCode::OK);
    let data = b"blob";
    let d = Digest::of(data).to_string();
    let r = call(
        &app,
        Method::POST,
        &format!("/v2/app/blobs/uploads/?digest={d}"),
        &auth,
        data.to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // GetDownloadUrlForLayer's URL carries a token and works without the header.
    let u = ecr(
        &reg,
        "GetDownloadUrlForLayer",
        json!({"repositoryName": "app", "layerDigest": d}),
    )
    .await;
    let url = u["downloadUrl"]
        .as_str()
        .unwrap()
        .strip_prefix("http://127.0.0.1:5150")
        .unwrap()
        .to_string();
    assert!(url.contains("?token="));
    let r = call(&app, Method::GET, &url, &[], "").await;
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &data[..]));
    // The token does not open other endpoints.
    let r = call(
        &app,
        Method::GET,
        &url.replace(&format!("blobs/{d}"), "tags/list"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_is_never_a_server_error() {
    let (_reg, app, _dir) = setup(&["app"]).await;
    type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);
    let cases: &[Case] = &[
        (Method::GET, "/v2/app/manifests/sha256:totallywrong", &[], b""),
        (Method::GET, "/v2/app/manifests/sha512:abc", &[], b""),
        (Method::GET, "/v2/app/blobs/md5:abc", &[], b""),
        (Method::GET, "/v2/app/blobs/sha256:%zz", &[], b""),
        (Method::GET, "/v2/APP/tags/list", &[], b""),
        (Method::GET, "/v2/app/tags/list?n=-1&last=%ff", &[], b""),
        (Method::GET, "/v2/app/referrers/x", &[], b""),
        (Method::GET, "/v2/%00/manifests/x", &[], b""),
        (Method::GET, "/v2/app/unknown/thing", &[], b""),
        (Method::PUT, "/v2/app/manifests/x", &[("content-type", "text/plain")], b"\xff\xfe"),
        (Method::PUT, "/v2/app/manifests/x", &[], b"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"digest\":\"sha256:zz\",\"size\":-1},\"layers\":[]}"),
        (Method::PUT, "/v2/app/manifests/..", &[], b"{}"),
        (Method::POST, "/v2/app/blobs/uploads/?digest=sha1:abc", &[], b"x"),
        (Method::POST, "/v2/app/blobs/uploads/?mount=garbage&from=../etc", &[], b""),
        (Method::PATCH, "/v2/app/blobs/uploads/../../etc", &[], b"x"),
        (Method::PATCH, "/v2/app/blobs/uploads/nope", &[("content-range", "zz")], b"x"),
        (Method::PUT, "/v2/app/blobs/uploads/nope?digest=sha256:x", &[], b""),
        (Method::DELETE, "/v2/app/blobs/uploads/nope", &[], b""),
        (Method::DELETE, "/v2/app/manifests/sha256:zz", &[], b""),
        (Method::GET, "/v2/app/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &[("range", "bytes=9-1")], b""),
    ];
    for (m, path, headers, body) in cases {
        let r = call(&app, m.clone(), path, headers, body.to_vec()).await;
        assert!(!r.status.is_server_error(), "{m} {path}: {}", r.status);
    }
}
