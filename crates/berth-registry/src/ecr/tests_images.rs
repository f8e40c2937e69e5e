//! ECR image, layer, settings and lifecycle operations through `handle_ecr`.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::digest::Digest;
use crate::testutil::{ecr, registry};
use crate::Registry;

async fn err(reg: &Registry, op: &str, body: Value) -> String {
    reg.handle_ecr(op, body.to_string().as_bytes())
        .await
        .map(|v| panic!("{op} succeeded: {v}"))
        .unwrap_err()
        .error_type
}

/// Pushes `data` as a layer of `repo` through the layer API in two parts; returns its digest.
async fn push_layer(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let up = ecr(reg, "InitiateLayerUpload", json!({"repositoryName": repo})).await;
    assert_eq!(up["partSize"], 10 * 1024 * 1024);
    let id = up["uploadId"].as_str().unwrap().to_string();
    let mid = data.len() / 2;
    let r = ecr(
        reg,
        "UploadLayerPart",
        json!({"repositoryName": repo, "uploadId": id, "partFirstByte": 0, "partLastByte": mid - 1, "layerPartBlob": b64(&data[..mid])}),
    )
    .await;
    assert_eq!(r["lastByteReceived"], mid - 1);
    // A part that skips ahead is refused, and the upload is unchanged.
    let e = err(
        reg,
        "UploadLayerPart",
        json!({"repositoryName": repo, "uploadId": id, "partFirstByte": mid + 1, "partLastByte": data.len() - 1, "layerPartBlob": b64(&data[mid + 1..])}),
    )
    .await;
    assert_eq!(e, "InvalidLayerPartException");
    ecr(
        reg,
        "UploadLayerPart",
        json!({"repositoryName": repo, "uploadId": id, "partFirstByte": mid, "partLastByte": data.len() - 1, "layerPartBlob": b64(&data[mid..])}),
    )
    .await;
    let d = Digest::of(data).to_string();
    let r = ecr(
        reg,
        "CompleteLayerUpload",
        json!({"repositoryName": repo, "uploadId": id, "layerDigests": [d]}),
    )
    .await;
    assert_eq!(r["layerDigest"], d);
    d
}

fn manifest(config: &str, config_size: usize, layers: &[(&str, usize)]) -> String {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
    })
    .to_string()
}

async fn put_image(
    reg: &Registry,
    repo: &str,
    m: &str,
    tag: Option<&str>,
) -> Result<Value, String> {
    let mut body = json!({"repositoryName": repo, "imageManifest": m});
    if let Some(t) = tag {
        body["imageTag"] = json!(t);
    }
    reg.handle_ecr("PutImage", body.to_string().as_bytes())
        .await
        .map_err(|e| e.error_type)
}

#[tokio::test]
async fn layer_api_put_image_describe_and_delete() {
    let (reg, _dir) = registry();
    ecr(&reg, "CreateRepository", json!({"repositoryName": "app"})).await;
    let config = b"{\"architecture\":\"amd64\"}";
    let layer = b"layer bytes, more than a few of them";
    let cd = push_layer(&reg, "app", config).await;
    let ld = push_layer(&reg, "app", layer).await;

    // Complete errors: empty upload, digest mismatch, unknown upload, existing layer.
    let other = Digest::of(b"other").to_string();
    let id = ecr(
        &reg,
        "InitiateLayerUpload",
        json!({"repositoryName": "app"}),
    )
    .await["uploadId"]
        .clone();
    let e = err(
        &reg,
        "CompleteLayerUpload",
        json!({"repositoryName": "app", "uploadId": id, "layerDigests": [other]}),
    )
    .await;
    assert_eq!(e, "EmptyUploadException");
    ecr(&reg, "UploadLayerPart", json!({"repositoryName": "app", "uploadId": id, "partFirstByte": 0, "partLastByte": 1, "layerPartBlob": "eHg="})).await;
    let e = err(
        &reg,
        "CompleteLayerUpload",
        json!({"repositoryName": "app", "uploadId": id, "layerDigests": [other]}),
    )
    .await;
    assert_eq!(e, "InvalidLayerException");
    let e = err(
        &reg,
        "CompleteLayerUpload",
        json!({"repositoryName": "app", "uploadId": id, "layerDigests": [other]}),
    )
    .await;
    assert_eq!(e, "UploadNotFoundException");
    let id = ecr(
        &reg,
        "InitiateLayerUpload",
        json!({"repositoryName": "app"}),
    )
    .await["uploadId"]
        .clone();
    ecr(&reg, "UploadLayerPart", json!({"repositoryName": "app", "uploadId": id, "partFirstByte": 0, "partLastByte": config.len() - 1, "layerPartBlob": base64::engine::general_purpose::STANDARD.encode(config)})).await;
    let e = err(
        &reg,
        "CompleteLayerUpload",
        json!({"repositoryName": "app", "uploadId": id, "layerDigests": [cd]}),
    )
    .await;
    assert_eq!(e, "LayerAlreadyExistsException");

    // Availability and download URL.
    let missing = Digest::of(b"missing").to_string();
    let r = ecr(
        &reg,
        "BatchCheckLayerAvailability",
        json!({"repositoryName": "app", "layerDigests": [ld, missing, "sha256:bad"]}),
    )
    .await;
    assert_eq!(r["layers"][0]["layerAvailability"], "AVAILABLE");
    assert_eq!(r["layers"][0]["layerSize"], layer.len());
    assert_eq!(r["failures"][0]["failureCode"], "MissingLayerDigest");
    assert_eq!(r["failures"][1]["failureCode"], "InvalidLayerDigest");
    let r = ecr(
        &reg,
        "GetDownloadUrlForLayer",
        json!({"repositoryName": "app", "layerDigest": ld}),
    )
    .await;
    assert_eq!(
        r["downloadUrl"],
        format!("http://127.0.0.1:5150/v2/app/blobs/{ld}")
    );
    let e = err(
        &reg,
        "GetDownloadUrlForLayer",
        json!({"repositoryName": "app", "layerDigest": missing}),
    )
    .await;
    assert_eq!(e, "LayersNotFoundException");

    // PutImage.
    let m = manifest(&cd, config.len(), &[(&ld, layer.len())]);
    let r = put_image(&reg, "app", &m, Some("v1")).await.unwrap();
    let digest = Digest::of(m.as_bytes()).to_string();
    assert_eq!(
        r["image"]["imageId"],
        json!({"imageDigest": digest, "imageTag": "v1"})
    );
    assert_eq!(
        r["image"]["imageManifestMediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        put_image(&reg, "app", &m, Some("v1")).await.unwrap_err(),
        "ImageAlreadyExistsException"
    );
    assert_eq!(
        put_image(&reg, "app", &m, None).await.unwrap_err(),
        "ImageAlreadyExistsException"
    );
    put_image(&reg, "app", &m, Some("latest")).await.unwrap();
    let bad = manifest(&cd, config.len(), &[(&missing, 3)]);
    assert_eq!(
        put_image(&reg, "app", &bad, Some("x")).await.unwrap_err(),
        "LayersNotFoundException"
    );
    let e = err(
        &reg,
        "PutImage",
        json!({"repositoryName": "app", "imageManifest": m, "imageDigest": missing}),
    )
    .await;
    assert_eq!(e, "ImageDigestDoesNotMatchException");
    let e = err(
        &reg,
        "PutImage",
        json!({"repositoryName": "app", "imageManifest": "{}"}),
    )
    .await;
    assert_eq!(e, "InvalidParameterException");
    // An untagged second image.
    let m2 = manifest(&cd, config.len(), &[]);
    put_image(&reg, "app", &m2, None).await.unwrap();
    let d2 = Digest::of(m2.as_bytes()).to_string();

    // DescribeImages / ListImages with filters.
    let r = ecr(
        &reg,
        "DescribeImages",
        json!({"repositoryName": "app", "imageIds": [{"imageTag": "v1"}]}),
    )
    .await;
    let d = &r["imageDetails"][0];
    assert_eq!(d["imageDigest"], digest);
    assert_eq!(d["imageTags"], json!(["latest", "v1"]));
    assert_eq!(d["imageSizeInBytes"], m.len() + config.len() + layer.len());
    assert!(d["imagePushedAt"].as_f64().unwrap() > 1.6e9);
    assert_eq!(
        d["imageManifestMediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        d["artifactMediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let r = ecr(
        &reg,
        "DescribeImages",
        json!({"repositoryName": "app", "filter": {"tagStatus": "UNTAGGED"}}),
    )
    .await;
    assert_eq!(r["imageDetails"].as_array().unwrap().len(), 1);
    assert_eq!(r["imageDetails"][0]["imageDigest"], d2);
    let r = ecr(
        &reg,
        "ListImages",
        json!({"repositoryName": "app", "filter": {"tagStatus": "TAGGED"}}),
    )
    .await;
    assert_eq!(r["imageIds"].as_array().unwrap().len(), 2);
    let r = ecr(
        &reg,
        "ListImages",
        json!({"repositoryName": "app", "filter": {"tagStatus": "UNTAGGED"}}),
    )
    .await;
    assert_eq!(r["imageIds"], json!([{"imageDigest": d2}]));
    let e = err(
        &reg,
        "ListImages",
        json!({"repositoryName": "app", "filter": {"tagStatus": "SOME"}}),
    )
    .await;
    assert_eq!(e, "InvalidParameterException");

    // BatchDeleteImage: by tag removes only the tag until the last one goes.
    let r = ecr(&reg, "BatchDeleteImage", json!({"repositoryName": "app", "imageIds": [{"imageTag": "latest"}, {"imageTag": "nope"}, {}]})).await;
    assert_eq!(
        r["imageIds"],
        json!([{"imageDigest": digest, "imageTag": "latest"}])
    );
    assert_eq!(r["failures"][0]["failureCode"], "ImageNotFound");
    assert_eq!(r["failures"][1]["failureCode"], "MissingDigestAndTag");
    assert!(reg
        .records()
        .image("app", &Digest::parse(&digest).unwrap())
        .await
        .unwrap()
        .is_some());
    ecr(
        &reg,
        "BatchDeleteImage",
        json!({"repositoryName": "app", "imageIds": [{"imageTag": "v1"}]}),
    )
    .await;
    assert!(reg
        .records()
        .image("app", &Digest::parse(&digest).unwrap())
        .await
        .unwrap()
        .is_none());
    // By digest removes the image and its tags.
    put_image(&reg, "app", &m, Some("again")).await.unwrap();
    let r = ecr(&reg, "BatchDeleteImage", json!({"repositoryName": "app", "imageIds": [{"imageDigest": digest}, {"imageDigest": d2}]})).await;
    assert_eq!(
        r["imageIds"],
        json!([{"imageDigest": digest, "imageTag": "again"}, {"imageDigest": d2}])
    );
    let r = ecr(&reg, "ListImages", json!({"repositoryName": "app"})).await;
    assert_eq!(r["imageIds"], json!([]));
    assert!(reg.records().tags("app").await.unwrap().is_empty());
}

#[tokio::test]
async fn tag_mutability_modes() {
    let (reg, _dir) = registry();
    let e = err(
        &reg,
        "CreateRepository",
        json!({"repositoryName": "x1", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"}),
    )
    .await;
    assert_eq!(e, "InvalidParameterException");
    let e = err(&reg, "CreateRepository", json!({"repositoryName": "x1", "imageTagMutability": "MUTABLE", "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "a"}]})).await;
    assert_eq!(e, "InvalidParameterException");
    let r = ecr(&reg, "CreateRepository", json!({"repositoryName": "app", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION", "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}, {"filterType": "WILDCARD", "filter": "dev-*"}]})).await;
    assert_eq!(
        r["repository"]["imageTagMutabilityExclusionFilters"][1]["filter"],
        "dev-*"
    );
    let cd = push_layer(&reg, "app", b"{\"a\":1}").await;
    let l1 = push_layer(&reg, "app", b"layer one").await;
    let m1 = manifest(&cd, 7, &[]);
    let m2 = manifest(&cd, 7, &[(&l1, 9)]);
    for t in ["latest", "dev-1", "v1"] {
        put_image(&reg, "app", &m1, Some(t)).await.unwrap();
    }
    // Excluded tags move; the others are immutable.
    put_image(&reg, "app", &m2, Some("latest")).await.unwrap();
    put_image(&reg, "app", &m2, Some("dev-1")).await.unwrap();
    assert_eq!(
        put_image(&reg, "app", &m2, Some("v1")).await.unwrap_err(),
        "ImageTagAlreadyExistsException"
    );

    // MUTABLE_WITH_EXCLUSION: only matching tags are immutable.
    let r = ecr(&reg, "PutImageTagMutability", json!({"repositoryName": "app", "imageTagMutability": "MUTABLE_WITH_EXCLUSION", "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "v*"}]})).await;
    assert_eq!(r["imageTagMutability"], "MUTABLE_WITH_EXCLUSION");
    put_image(&reg, "app", &m1, Some("latest")).await.unwrap();
    assert_eq!(
        put_image(&reg, "app", &m2, Some("v1")).await.unwrap_err(),
        "ImageTagAlreadyExistsException"
    );
    ecr(
        &reg,
        "PutImageTagMutability",
        json!({"repositoryName": "app", "imageTagMutability": "IMMUTABLE"}),
    )
    .await;
    assert_eq!(
        put_image(&reg, "app", &m2, Some("latest"))
            .await
            .unwrap_err(),
        "ImageTagAlreadyExistsException"
    );
    ecr(
        &reg,
        "PutImageTagMutability",
        json!({"repositoryName": "app", "imageTagMutability": "MUTABLE"}),
    )
    .await;
    put_image(&reg, "app", &m2, Some("v1")).await.unwrap();
    let r = ecr(
        &reg,
        "DescribeRepositories",
        json!({"repositoryNames": ["app"]}),
    )
    .await;
    assert_eq!(r["repositories"][0]["imageTagMutability"], "MUTABLE");
    assert!(r["repositories"][0]
        .get("imageTagMutabilityExclusionFilters")
        .is_none());
    let e = err(
        &reg,
        "PutImageTagMutability",
        json!({"repositoryName": "nope", "imageTagMutability": "MUTABLE"}),
    )
    .await;
    assert_eq!(e, "RepositoryNotFoundException");
}

#[tokio::test]
async fn settings_policies_and_resource_tags() {
    let (reg, _dir) = registry();
    ecr(
        &reg,
        "CreateRepository",
        json!({"repositoryName": "app", "tags": [{"Key": "a", "Value": "1"}]}),
    )
    .await;
    let r = ecr(
        &reg,
        "PutImageScanningConfiguration",
        json!({"repositoryName": "app", "imageScanningConfiguration": {"scanOnPush": true}}),
    )
    .await;
    assert_eq!(r["imageScanningConfiguration"]["scanOnPush"], true);
    let r = ecr(&reg, "DescribeRepositories", json!({})).await;
    assert_eq!(
        r["repositories"][0]["imageScanningConfiguration"]["scanOnPush"],
        true
    );

    assert_eq!(
        err(
            &reg,
            "GetRepositoryPolicy",
            json!({"repositoryName": "app"})
        )
        .await,
        "RepositoryPolicyNotFoundException"
    );
    assert_eq!(
        err(
            &reg,
            "SetRepositoryPolicy",
            json!({"repositoryName": "app", "policyText": "nope"})
        )
        .await,
        "InvalidParameterException"
    );
    let policy = r#"{"Version":"2012-10-17","Statement":[]}"#;
    let r = ecr(
        &reg,
        "SetRepositoryPolicy",
        json!({"repositoryName": "app", "policyText": policy}),
    )
    .await;
    assert_eq!(r["policyText"], policy);
    assert_eq!(
        ecr(
            &reg,
            "GetRepositoryPolicy",
            json!({"repositoryName": "app"})
        )
        .await["policyText"],
        policy
    );
    assert_eq!(
        ecr(
            &reg,
            "DeleteRepositoryPolicy",
            json!({"repositoryName": "app"})
        )
        .await["policyText"],
        policy
    );
    assert_eq!(
        err(
            &reg,
            "DeleteRepositoryPolicy",
            json!({"repositoryName": "app"})
        )
        .await,
        "RepositoryPolicyNotFoundException"
    );

    let arn = "arn:aws:ecr:us-east-1:000000000000:repository/app";
    ecr(&reg, "TagResource", json!({"resourceArn": arn, "tags": [{"Key": "a", "Value": "2"}, {"Key": "b", "Value": ""}]})).await;
    let r = ecr(&reg, "ListTagsForResource", json!({"resourceArn": arn})).await;
    assert_eq!(
        r["tags"],
        json!([{"Key": "a", "Value": "2"}, {"Key": "b", "Value": ""}])
    );
    ecr(
        &reg,
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["a"]}),
    )
    .await;
    let r = ecr(&reg, "ListTagsForResource", json!({"resourceArn": arn})).await;
    assert_eq!(r["tags"], json!([{"Key": "b", "Value": ""}]));
    assert_eq!(
        err(
            &reg,
            "TagResource",
            json!({"resourceArn": arn, "tags": [{"Key": "aws:x", "Value": ""}]})
        )
        .await,
        "InvalidTagParameterException"
    );
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"Key": format!("k{i}"), "Value": ""}))
        .collect();
    assert_eq!(
        err(
            &reg,
            "TagResource",
            json!({"resourceArn": arn, "tags": many})
        )
        .await,
        "TooManyTagsException"
    );
    assert_eq!(
        err(
            &reg,
            "ListTagsForResource",
            json!({"resourceArn": "arn:aws:ecr:us-east-1:000000000000:repository/nope"})
        )
        .await,
        "RepositoryNotFoundException"
    );
    assert_eq!(
        err(
            &reg,
            "ListTagsForResource",
            json!({"resourceArn": "garbage"})
        )
        .await,
        "InvalidParameterException"
    );

    let r = ecr(&reg, "DescribeRegistry", json!({})).await;
    assert_eq!(
        r,
        json!({"registryId": "000000000000", "replicationConfiguration": {"rules": []}})
    );
}

const KEEP_TWO_TAGGED: &str = r#"{"rules":[{"rulePriority":1,"description":"keep two v* images","selection":{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}},{"rulePriority":2,"description":"no untagged images","selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;

#[tokio::test]
async fn lifecycle_policy_ops_and_expiry() {
    let (reg, _dir) = registry();
    ecr(&reg, "CreateRepository", json!({"repositoryName": "app"})).await;
    assert_eq!(
        err(&reg, "GetLifecyclePolicy", json!({"repositoryName": "app"})).await,
        "LifecyclePolicyNotFoundException"
    );
    assert_eq!(
        err(
            &reg,
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app"})
        )
        .await,
        "LifecyclePolicyPreviewNotFoundException"
    );
    assert_eq!(
        err(
            &reg,
            "StartLifecyclePolicyPreview",
            json!({"repositoryName": "app"})
        )
        .await,
        "LifecyclePolicyNotFoundException"
    );
    let invalid = KEEP_TWO_TAGGED.replace("\"tagged\"", "\"sometimes\"");
    assert_eq!(
        err(
            &reg,
            "PutLifecyclePolicy",
            json!({"repositoryName": "app", "lifecyclePolicyText": invalid})
        )
        .await,
        "InvalidParameterException"
    );

    let cd = push_layer(&reg, "app", b"{}").await;
    let mut digests = Vec::new();
    for (i, tag) in ["v1", "v2", "v3", "", ""].iter().enumerate() {
        let l = push_layer(&reg, "app", format!("layer {i}").as_bytes()).await;
        let m = manifest(&cd, 2, &[(&l, 7)]);
        put_image(&reg, "app", &m, (!tag.is_empty()).then_some(*tag))
            .await
            .unwrap();
        digests.push(Digest::of(m.as_bytes()).to_string());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Preview with the text (no policy stored yet).
    let r = ecr(
        &reg,
        "StartLifecyclePolicyPreview",
        json!({"repositoryName": "app", "lifecyclePolicyText": KEEP_TWO_TAGGED}),
    )
    .await;
    assert_eq!(r["status"], "COMPLETE");
    let r = ecr(
        &reg,
        "GetLifecyclePolicyPreview",
        json!({"repositoryName": "app"}),
    )
    .await;
    assert_eq!(r["status"], "COMPLETE");
    assert_eq!(r["summary"]["expiringImageTotalCount"], 2);
    let mut got: Vec<(String, i64)> = r["previewResults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["imageDigest"].as_str().unwrap().to_string(),
                p["appliedRulePriority"].as_i64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![(digests[0].clone(), 1), (digests[3].clone(), 2)];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(r["previewResults"][0]["action"]["type"], "EXPIRE");
    let r = ecr(
        &reg,
        "GetLifecyclePolicyPreview",
        json!({"repositoryName": "app", "filter": {"tagStatus": "UNTAGGED"}}),
    )
    .await;
    assert_eq!(r["previewResults"].as_array().unwrap().len(), 1);
    // Nothing was deleted by the preview.
    assert_eq!(reg.records().images("app").await.unwrap().len(), 5);

    let r = ecr(
        &reg,
        "PutLifecyclePolicy",
        json!({"repositoryName": "app", "lifecyclePolicyText": KEEP_TWO_TAGGED}),
    )
    .await;
    assert_eq!(r["lifecyclePolicyText"], KEEP_TWO_TAGGED);
    let gone = reg.apply_lifecycle("app").await.unwrap();
    assert_eq!(gone.len(), 2);
    let left: Vec<String> = reg
        .records()
        .images("app")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.digest)
        .collect();
    for d in [&digests[1], &digests[2], &digests[4]] {
        assert!(left.contains(d));
    }
    let r = ecr(&reg, "GetLifecyclePolicy", json!({"repositoryName": "app"})).await;
    assert!(r["lastEvaluatedAt"].as_f64().unwrap() > 1.6e9);
    // A push runs the policy: a new v4 expires v2.
    let l = push_layer(&reg, "app", b"layer v4").await;
    put_image(&reg, "app", &manifest(&cd, 2, &[(&l, 8)]), Some("v4"))
        .await
        .unwrap();
    assert!(reg
        .records()
        .image("app", &Digest::parse(&digests[1]).unwrap())
        .await
        .unwrap()
        .is_none());
    assert_eq!(reg.records().tags("app").await.unwrap().len(), 2);

    let r = ecr(
        &reg,
        "DeleteLifecyclePolicy",
        json!({"repositoryName": "app"}),
    )
    .await;
    assert_eq!(r["lifecyclePolicyText"], KEEP_TWO_TAGGED);
    assert_eq!(
        err(
            &reg,
            "DeleteLifecyclePolicy",
            json!({"repositoryName": "app"})
        )
        .await,
        "LifecyclePolicyNotFoundException"
    );
}

#[tokio::test]
async fn garbage_collection() {
    let (reg, _dir) = registry();
    ecr(&reg, "CreateRepository", json!({"repositoryName": "app"})).await;
    let cd = push_layer(&reg, "app", b"{}").await;
    let keep = push_layer(&reg, "app", b"kept layer").await;
    let drop_ = push_layer(&reg, "app", b"dropped layer").await;
    let m_keep = manifest(&cd, 2, &[(&keep, 10)]);
    let m_drop = manifest(&cd, 2, &[(&drop_, 13)]);
    put_image(&reg, "app", &m_keep, Some("keep")).await.unwrap();
    put_image(&reg, "app", &m_drop, Some("drop")).await.unwrap();
    let dangling = push_layer(&reg, "app", b"never referenced").await;
    let session = ecr(
        &reg,
        "InitiateLayerUpload",
        json!({"repositoryName": "app"}),
    )
    .await;

    // With the default grace period nothing just written goes.
    let r = reg
        .collect_garbage(crate::gc::GcOptions::default())
        .await
        .unwrap();
    assert_eq!(r, crate::gc::GcReport::default());

    ecr(
        &reg,
        "BatchDeleteImage",
        json!({"repositoryName": "app", "imageIds": [{"imageTag": "drop"}]}),
    )
    .await;
    let now = crate::gc::GcOptions {
        grace: std::time::Duration::ZERO,
        upload_max_idle: std::time::Duration::ZERO,
    };
    let r = reg.collect_garbage(now).await.unwrap();
    // The dropped layer, the never-referenced one, and the dropped manifest.
    assert_eq!(r.links_removed, 2);
    assert_eq!(r.blobs_removed, 3);
    assert_eq!(r.uploads_removed, 1);
    let exists = |d: &str| reg.blobs.path(&Digest::parse(d).unwrap()).exists();
    assert!(exists(&cd) && exists(&keep));
    assert!(exists(&Digest::of(m_keep.as_bytes()).to_string()));
    assert!(!exists(&drop_) && !exists(&dangling));
    assert!(!exists(&Digest::of(m_drop.as_bytes()).to_string()));
    let e = err(&reg, "UploadLayerPart", json!({"repositoryName": "app", "uploadId": session["uploadId"], "partFirstByte": 0, "partLastByte": 0, "layerPartBlob": "eA=="})).await;
    assert_eq!(e, "UploadNotFoundException");
    // The kept image still pulls completely.
    let r = ecr(
        &reg,
        "BatchCheckLayerAvailability",
        json!({"repositoryName": "app", "layerDigests": [cd, keep]}),
    )
    .await;
    assert_eq!(r["layers"].as_array().unwrap().len(), 2);
    // A second run finds nothing.
    assert_eq!(
        reg.collect_garbage(now).await.unwrap(),
        crate::gc::GcReport::default()
    );
}
