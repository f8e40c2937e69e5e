use base64::Engine as _;
use serde_json::json;

use crate::testutil::{ecr, registry};

#[tokio::test]
async fn create_describe_delete() {
    let (reg, _dir) = registry();
    let r = ecr(
        &reg,
        "CreateRepository",
        json!({"repositoryName": "team/web", "tags": [{"Key": "k", "Value": "v"}]}),
    )
    .await;
    let repo = &r["repository"];
    assert_eq!(
        repo["repositoryArn"],
        "arn:aws:ecr:us-east-1:000000000000:repository/team/web"
    );
    assert_eq!(repo["registryId"], "000000000000");
    assert_eq!(repo["repositoryName"], "team/web");
    assert_eq!(repo["repositoryUri"], "127.0.0.1:5150/team/web");
    assert!(repo["createdAt"].as_f64().unwrap() > 1.6e9);
    assert_eq!(repo["imageTagMutability"], "MUTABLE");
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], false);
    assert_eq!(repo["encryptionConfiguration"]["encryptionType"], "AES256");

    let e = reg
        .handle_ecr("CreateRepository", br#"{"repositoryName":"team/web"}"#)
        .await
        .unwrap_err();
    assert_eq!(e.error_type, "RepositoryAlreadyExistsException");
    for bad in ["a", "Web", "team//web", "x/", "a--b"] {
        let e = reg
            .handle_ecr(
                "CreateRepository",
                json!({"repositoryName": bad}).to_string().as_bytes(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.error_type, "InvalidParameterException", "{bad}");
    }
    let e = reg
        .handle_ecr(
            "CreateRepository",
            br#"{"repositoryName":"ok1","imageTagMutability":"SOMETIMES"}"#,
        )
        .await
        .unwrap_err();
    assert_eq!(e.error_type, "InvalidParameterException");

    ecr(&reg, "CreateRepository", json!({"repositoryName": "api", "imageTagMutability": "IMMUTABLE", "imageScanningConfiguration": {"scanOnPush": true}})).await;
    let all = ecr(&reg, "DescribeRepositories", json!({})).await;
    let names: Vec<_> = all["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repositoryName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "team/web"]);
    assert_eq!(
        all["repositories"][0]["imageScanningConfiguration"]["scanOnPush"],
        true
    );
    assert!(all.get("nextToken").is_none());

    let p1 = ecr(&reg, "DescribeRepositories", json!({"maxResults": 1})).await;
    assert_eq!(p1["repositories"][0]["repositoryName"], "api");
    let p2 = ecr(
        &reg,
        "DescribeRepositories",
        json!({"maxResults": 1, "nextToken": p1["nextToken"]}),
    )
    .await;
    assert_eq!(p2["repositories"][0]["repositoryName"], "team/web");
    assert!(p2.get("nextToken").is_none());

    let e = reg
        .handle_ecr("DescribeRepositories", br#"{"repositoryNames": ["nope"]}"#)
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(e.error_type, "RepositoryNotFoundException");
    assert_eq!(
        e.message,
        "The repository with name 'nope' does not exist in the registry with id '000000000000'"
    );

    let d = ecr(&reg, "DeleteRepository", json!({"repositoryName": "api"})).await;
    assert_eq!(d["repository"]["repositoryName"], "api");
    let e = reg
        .handle_ecr("DeleteRepository", br#"{"repositoryName":"api"}"#)
        .await
        .unwrap_err();
    assert_eq!(e.error_type, "RepositoryNotFoundException");
}

#[tokio::test]
async fn protocol_errors_and_tokens() {
    let (reg, _dir) = registry();
    assert_eq!(
        reg.handle_ecr("Frobnicate", b"{}")
            .await
            .unwrap_err()
            .error_type,
        "UnknownOperationException"
    );
    assert_eq!(
        reg.handle_ecr("CreateRepository", b"{nope")
            .await
            .unwrap_err()
            .error_type,
        "SerializationException"
    );
    assert_eq!(
        reg.handle_ecr("CreateRepository", br#"{"repositoryName": 5}"#)
            .await
            .unwrap_err()
            .error_type,
        "SerializationException"
    );
    let t = ecr(&reg, "GetAuthorizationToken", json!({})).await;
    let data = &t["authorizationData"][0];
    assert_eq!(data["proxyEndpoint"], "http://127.0.0.1:5150");
    let now = crate::auth::now_secs();
    let exp = data["expiresAt"].as_u64().unwrap();
    assert!(exp >= now + 12 * 3600 - 5 && exp <= now + 12 * 3600 + 5);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data["authorizationToken"].as_str().unwrap())
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let token = raw.strip_prefix("AWS:").unwrap();
    assert!(reg.auth.verify(token, now));
}
