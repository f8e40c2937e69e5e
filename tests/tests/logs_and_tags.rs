//! CloudWatch Logs retention, name rules, deletion and tags; Application Auto Scaling tags;
//! CloudWatch metric alarms and the alarms of target tracking policies (issues 11 and 12).
//! Black-box: a real server driven by the real AWS CLI, and for CloudWatch also by the CLI's
//! botocore forced onto each of the three wire protocols.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_tests::{fargate_taskdef, repo_root, Server};
use serde_json::{json, Value};

const DAY_MS: i64 = 86_400_000;

/// Serialises server starts so the test-only day length reaches only the server meant to have it.
static ENV: Mutex<()> = Mutex::new(());

fn start() -> Server {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    Server::start()
}

/// A server whose retention "day" lasts `secs` seconds (`BERTH_TEST_LOG_DAY_SECONDS`).
fn start_with_day(secs: u32) -> Server {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("BERTH_TEST_LOG_DAY_SECONDS", secs.to_string());
    let s = Server::start();
    std::env::remove_var("BERTH_TEST_LOG_DAY_SECONDS");
    s
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs the CLI expecting failure; returns stderr (which names the error code).
fn err(s: &Server, args: &[&str]) -> String {
    match s.aws(args) {
        Ok(v) => panic!("aws {args:?} succeeded: {v}"),
        Err(e) => e,
    }
}

fn put(s: &Server, group: &str, stream: &str, events: &[(i64, &str)]) -> Value {
    let ev: Vec<Value> = events
        .iter()
        .map(|(t, m)| json!({"timestamp": t, "message": m}))
        .collect();
    s.aws_ok(&[
        "logs",
        "put-log-events",
        "--log-group-name",
        group,
        "--log-stream-name",
        stream,
        "--log-events",
        &Value::Array(ev).to_string(),
    ])
}

fn group(s: &Server, name: &str) -> Value {
    let v = s.aws_ok(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        name,
    ]);
    v["logGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["logGroupName"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no group {name}: {v}"))
}

fn messages(s: &Server, group: &str, stream: &str) -> Vec<String> {
    let v = s.aws_ok(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        group,
        "--log-stream-name",
        stream,
        "--start-from-head",
    ]);
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn wait_for(s: &Server, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > timeout {
            panic!("timed out waiting for {what}\nserver log:\n{}", s.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

#[test]
fn retention_is_validated_described_and_old_events_expire() {
    let s = start();
    let g = "/app/retention";
    s.aws_ok(&["logs", "create-log-group", "--log-group-name", g]);
    s.aws_ok(&[
        "logs",
        "create-log-stream",
        "--log-group-name",
        g,
        "--log-stream-name",
        "s",
    ]);
    // Only AWS's list of day counts.
    for bad in ["4", "0", "-1", "3652", "100000"] {
        let e = err(
            &s,
            &[
                "logs",
                "put-retention-policy",
                "--log-group-name",
                g,
                "--retention-in-days",
                bad,
            ],
        );
        assert!(
            e.contains("InvalidParameterException") && e.contains("enum value set"),
            "{bad}: {e}"
        );
    }
    let e = err(
        &s,
        &[
            "logs",
            "put-retention-policy",
            "--log-group-name",
            "/none",
            "--retention-in-days",
            "1",
        ],
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    let now = now_ms();
    // Three days old (PutLogEvents takes up to 14 days back), then fresh ones.
    let r = put(&s, g, "s", &[(now - 3 * DAY_MS, "old-3d")]);
    assert!(r.get("rejectedLogEventsInfo").is_none(), "{r}");
    // 20 days old: too old; 3 hours ahead: too new; the one in between is kept.
    let r = put(
        &s,
        g,
        "s",
        &[
            (now - 20 * DAY_MS, "too-old"),
            (now - 2 * DAY_MS, "old-2d"),
            (now + 3 * 3_600_000, "too-new"),
        ],
    );
    assert_eq!(
        r["rejectedLogEventsInfo"],
        json!({"tooOldLogEventEndIndex": 1, "tooNewLogEventStartIndex": 2}),
        "{r}"
    );
    put(
        &s,
        g,
        "s",
        &[(now - 1000, "fresh-1"), (now - 500, "fresh-2")],
    );
    assert_eq!(
        messages(&s, g, "s"),
        ["old-3d", "old-2d", "fresh-1", "fresh-2"]
    );
    // Out of order and wider than 24 hours: refused whole.
    let e = s
        .aws(&[
            "logs",
            "put-log-events",
            "--log-group-name",
            g,
            "--log-stream-name",
            "s",
            "--log-events",
            &json!([{"timestamp": now, "message": "b"}, {"timestamp": now - 10, "message": "a"}])
                .to_string(),
        ])
        .unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("chronological"),
        "{e}"
    );
    let e = s.aws(&["logs", "put-log-events", "--log-group-name", g, "--log-stream-name", "s", "--log-events",
        &json!([{"timestamp": now - 2 * DAY_MS, "message": "a"}, {"timestamp": now, "message": "b"}]).to_string()]).unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("24 hours"),
        "{e}"
    );
    let before = group(&s, g);
    assert!(before.get("retentionInDays").is_none(), "{before}");
    assert_eq!(before["storedBytes"], 6 + 6 + 7 + 7, "{before}");

    s.aws_ok(&[
        "logs",
        "put-retention-policy",
        "--log-group-name",
        g,
        "--retention-in-days",
        "1",
    ]);
    assert_eq!(group(&s, g)["retentionInDays"], 1);
    // The sweep runs right after a retention change: the 2- and 3-day-old events go.
    let took = wait_for(&s, "old events to expire", Duration::from_secs(20), || {
        messages(&s, g, "s") == ["fresh-1", "fresh-2"]
    });
    eprintln!("retention 1 day: old events gone after {took:?}");
    assert_eq!(group(&s, g)["storedBytes"], 14);
    // New events older than the retention are refused as expired (and counted as such).
    let r = put(
        &s,
        g,
        "s",
        &[
            (now - 2 * DAY_MS, "late"),
            (now - 2 * DAY_MS + 1, "late2"),
            (now, "ok"),
        ],
    );
    assert_eq!(
        r["rejectedLogEventsInfo"],
        json!({"expiredLogEventEndIndex": 2}),
        "{r}"
    );
    assert_eq!(messages(&s, g, "s"), ["fresh-1", "fresh-2", "ok"]);
    // Without retention they are accepted again and kept.
    s.aws_ok(&["logs", "delete-retention-policy", "--log-group-name", g]);
    assert!(group(&s, g).get("retentionInDays").is_none());
    let r = put(&s, g, "s", &[(now - 2 * DAY_MS, "kept")]);
    assert!(r.get("rejectedLogEventsInfo").is_none(), "{r}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(messages(&s, g, "s"), ["kept", "fresh-1", "fresh-2", "ok"]);
    let e = err(
        &s,
        &[
            "logs",
            "delete-retention-policy",
            "--log-group-name",
            "/none",
        ],
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
}

#[test]
fn events_expire_while_stored_with_a_short_test_day() {
    // A "day" of 30 seconds: events written now expire by themselves, through the periodic
    // sweep, while a group without retention keeps its events.
    let s = start_with_day(30);
    for g in ["/short", "/forever"] {
        s.aws_ok(&["logs", "create-log-group", "--log-group-name", g]);
        s.aws_ok(&[
            "logs",
            "create-log-stream",
            "--log-group-name",
            g,
            "--log-stream-name",
            "s",
        ]);
    }
    let now = now_ms();
    let events: Vec<(i64, String)> = (0..3000)
        .map(|i| (now + i / 10, format!("event {i:04}")))
        .collect();
    for chunk in events.chunks(1000) {
        let refs: Vec<(i64, &str)> = chunk.iter().map(|(t, m)| (*t, m.as_str())).collect();
        put(&s, "/short", "s", &refs);
    }
    put(&s, "/forever", "s", &[(now, "stays")]);
    assert_eq!(group(&s, "/short")["storedBytes"], 3000 * 10);
    s.aws_ok(&[
        "logs",
        "put-retention-policy",
        "--log-group-name",
        "/short",
        "--retention-in-days",
        "1",
    ]);
    // Still within the (30 s) day: kept.
    let kept = messages(&s, "/short", "s").len();
    if now_ms() - now < 25_000 {
        assert_eq!(kept, 3000);
    }
    let took = wait_for(
        &s,
        "fresh events to expire after a 30 s day",
        Duration::from_secs(90),
        || group(&s, "/short")["storedBytes"] == 0,
    );
    eprintln!("3000 events expired {took:?} after the retention was set (day = 30 s)");
    assert!(messages(&s, "/short", "s").is_empty());
    assert_eq!(messages(&s, "/forever", "s"), ["stays"]);
    // The stream is still there and takes new events.
    put(&s, "/short", "s", &[(now_ms(), "again")]);
    assert_eq!(messages(&s, "/short", "s"), ["again"]);
}

#[test]
fn bad_log_group_and_stream_names_are_refused_everywhere() {
    let s = start();
    let ok = "/ok.group-1_x#Y";
    s.aws_ok(&["logs", "create-log-group", "--log-group-name", ok]);
    s.aws_ok(&[
        "logs",
        "create-log-stream",
        "--log-group-name",
        ok,
        "--log-stream-name",
        "a/b é [1]",
    ]);
    put(&s, ok, "a/b é [1]", &[(now_ms(), "hello")]);
    let long = "g".repeat(513);
    let ev = json!([{"timestamp": now_ms(), "message": "x"}]).to_string();
    for bad in ["bad:name", "bad name", "bad*", "bäd", long.as_str()] {
        let cases: Vec<Vec<&str>> = vec![
            vec!["create-log-group", "--log-group-name", bad],
            vec!["delete-log-group", "--log-group-name", bad],
            vec![
                "create-log-stream",
                "--log-group-name",
                bad,
                "--log-stream-name",
                "s",
            ],
            vec![
                "delete-log-stream",
                "--log-group-name",
                bad,
                "--log-stream-name",
                "s",
            ],
            vec![
                "put-log-events",
                "--log-group-name",
                bad,
                "--log-stream-name",
                "s",
                "--log-events",
                &ev,
            ],
            vec!["describe-log-streams", "--log-group-name", bad],
            vec![
                "get-log-events",
                "--log-group-name",
                bad,
                "--log-stream-name",
                "s",
            ],
            vec!["filter-log-events", "--log-group-name", bad],
            vec![
                "put-retention-policy",
                "--log-group-name",
                bad,
                "--retention-in-days",
                "1",
            ],
            vec!["delete-retention-policy", "--log-group-name", bad],
            vec!["tag-log-group", "--log-group-name", bad, "--tags", "a=b"],
            vec!["list-tags-log-group", "--log-group-name", bad],
            vec!["describe-log-groups", "--log-group-name-prefix", bad],
        ];
        for c in cases {
            let mut args = vec!["logs"];
            args.extend(c.iter().copied());
            let e = err(&s, &args);
            assert!(
                e.contains("InvalidParameterException")
                    && e.contains("failed to satisfy constraint")
                    && e.contains("logGroupName"),
                "{args:?}: {e}"
            );
        }
    }
    let long_stream = "s".repeat(513);
    for bad in ["a:b", "a*", long_stream.as_str()] {
        let cases: Vec<Vec<&str>> = vec![
            vec![
                "create-log-stream",
                "--log-group-name",
                ok,
                "--log-stream-name",
                bad,
            ],
            vec![
                "delete-log-stream",
                "--log-group-name",
                ok,
                "--log-stream-name",
                bad,
            ],
            vec![
                "put-log-events",
                "--log-group-name",
                ok,
                "--log-stream-name",
                bad,
                "--log-events",
                &ev,
            ],
            vec![
                "get-log-events",
                "--log-group-name",
                ok,
                "--log-stream-name",
                bad,
            ],
            vec![
                "describe-log-streams",
                "--log-group-name",
                ok,
                "--log-stream-name-prefix",
                bad,
            ],
            vec![
                "filter-log-events",
                "--log-group-name",
                ok,
                "--log-stream-names",
                bad,
            ],
        ];
        for c in cases {
            let mut args = vec!["logs"];
            args.extend(c.iter().copied());
            let e = err(&s, &args);
            assert!(
                e.contains("InvalidParameterException")
                    && e.contains("failed to satisfy constraint")
                    && e.contains("logStreamName"),
                "{args:?}: {e}"
            );
        }
    }
    let e = err(
        &s,
        &["logs", "create-log-group", "--log-group-name", "aws/mine"],
    );
    assert!(e.contains("InvalidParameterException"), "{e}");
    // Nothing invalid was created.
    let all = s.aws_ok(&["logs", "describe-log-groups"]);
    assert_eq!(all["logGroups"].as_array().unwrap().len(), 1, "{all}");
}

#[test]
fn deleting_streams_and_groups_takes_their_events() {
    let s = start();
    let g = "/del";
    s.aws_ok(&["logs", "create-log-group", "--log-group-name", g]);
    for st in ["a", "b"] {
        s.aws_ok(&[
            "logs",
            "create-log-stream",
            "--log-group-name",
            g,
            "--log-stream-name",
            st,
        ]);
    }
    let now = now_ms();
    let many: Vec<(i64, String)> = (0..5000)
        .map(|i| (now + i / 100, format!("a{i:05}")))
        .collect();
    for chunk in many.chunks(1000) {
        let refs: Vec<(i64, &str)> = chunk.iter().map(|(t, m)| (*t, m.as_str())).collect();
        put(&s, g, "a", &refs);
    }
    put(&s, g, "b", &[(now, "b-1")]);
    assert_eq!(group(&s, g)["storedBytes"], 5000 * 6 + 3);
    s.aws_ok(&[
        "logs",
        "delete-log-stream",
        "--log-group-name",
        g,
        "--log-stream-name",
        "a",
    ]);
    assert_eq!(group(&s, g)["storedBytes"], 3);
    let streams = s.aws_ok(&["logs", "describe-log-streams", "--log-group-name", g]);
    let names: Vec<&str> = streams["logStreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["logStreamName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);
    let e = err(
        &s,
        &[
            "logs",
            "get-log-events",
            "--log-group-name",
            g,
            "--log-stream-name",
            "a",
        ],
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    let e = err(
        &s,
        &[
            "logs",
            "delete-log-stream",
            "--log-group-name",
            g,
            "--log-stream-name",
            "a",
        ],
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    let e = err(
        &s,
        &[
            "logs",
            "delete-log-stream",
            "--log-group-name",
            "/none",
            "--log-stream-name",
            "a",
        ],
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    let f = s.aws_ok(&["logs", "filter-log-events", "--log-group-name", g]);
    assert_eq!(f["events"].as_array().unwrap().len(), 1, "{f}");
    // A stream of the same name starts empty.
    s.aws_ok(&[
        "logs",
        "create-log-stream",
        "--log-group-name",
        g,
        "--log-stream-name",
        "a",
    ]);
    assert!(messages(&s, g, "a").is_empty());

    s.aws_ok(&["logs", "delete-log-group", "--log-group-name", g]);
    let e = err(&s, &["logs", "describe-log-streams", "--log-group-name", g]);
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    let e = err(&s, &["logs", "delete-log-group", "--log-group-name", g]);
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    // Recreated: no streams, no events, no bytes.
    s.aws_ok(&["logs", "create-log-group", "--log-group-name", g]);
    assert_eq!(group(&s, g)["storedBytes"], 0);
    s.aws_ok(&[
        "logs",
        "create-log-stream",
        "--log-group-name",
        g,
        "--log-stream-name",
        "b",
    ]);
    assert!(messages(&s, g, "b").is_empty());
    let f = s.aws_ok(&["logs", "filter-log-events", "--log-group-name", g]);
    assert_eq!(f["events"], json!([]), "{f}");
}

#[test]
fn log_group_tags_through_both_apis() {
    let s = start();
    let g = "/tagged";
    s.aws_ok(&[
        "logs",
        "create-log-group",
        "--log-group-name",
        g,
        "--tags",
        "team=core,env=dev",
    ]);
    let arn = group(&s, g)["logGroupArn"].as_str().unwrap().to_string();
    assert_eq!(
        arn,
        format!("arn:aws:logs:us-east-1:000000000000:log-group:{g}")
    );
    let star = format!("{arn}:*");
    for a in [&arn, &star] {
        let t = s.aws_ok(&["logs", "list-tags-for-resource", "--resource-arn", a]);
        assert_eq!(t["tags"], json!({"team": "core", "env": "dev"}), "{a}");
    }
    s.aws_ok(&[
        "logs",
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "env=prod,cost=42",
    ]);
    s.aws_ok(&[
        "logs",
        "untag-resource",
        "--resource-arn",
        &star,
        "--tag-keys",
        "team",
    ]);
    let t = s.aws_ok(&["logs", "list-tags-log-group", "--log-group-name", g]);
    assert_eq!(t["tags"], json!({"env": "prod", "cost": "42"}));
    // The legacy operations see and change the same tags.
    s.aws_ok(&[
        "logs",
        "tag-log-group",
        "--log-group-name",
        g,
        "--tags",
        "legacy=yes",
    ]);
    s.aws_ok(&[
        "logs",
        "untag-log-group",
        "--log-group-name",
        g,
        "--tags",
        "cost",
    ]);
    let t = s.aws_ok(&["logs", "list-tags-for-resource", "--resource-arn", &arn]);
    assert_eq!(t["tags"], json!({"env": "prod", "legacy": "yes"}));
    // At most 50 per group, counted after the merge; nothing changes when refused.
    let many: Vec<String> = (0..49).map(|i| format!("k{i}=v")).collect();
    let mut args = vec!["logs", "tag-resource", "--resource-arn", &arn, "--tags"];
    let joined = many.join(",");
    args.push(&joined);
    let e = err(&s, &args);
    assert!(e.contains("TooManyTagsException"), "{e}");
    let t = s.aws_ok(&["logs", "list-tags-for-resource", "--resource-arn", &arn]);
    assert_eq!(t["tags"].as_object().unwrap().len(), 2);
    let e = err(
        &s,
        &[
            "logs",
            "tag-resource",
            "--resource-arn",
            &arn,
            "--tags",
            "aws:owner=me",
        ],
    );
    assert!(e.contains("InvalidParameterException"), "{e}");
    let e = err(
        &s,
        &[
            "logs",
            "tag-resource",
            "--resource-arn",
            &arn,
            "--tags",
            r#"{"bad<key>": "v"}"#,
        ],
    );
    assert!(e.contains("InvalidParameterException"), "{e}");
    // Other groups, accounts and regions, and non-ARNs.
    for a in [
        "arn:aws:logs:us-east-1:000000000000:log-group:/missing",
        "arn:aws:logs:us-east-1:111111111111:log-group:/tagged",
        "arn:aws:logs:eu-west-1:000000000000:log-group:/tagged:*",
    ] {
        let e = err(&s, &["logs", "list-tags-for-resource", "--resource-arn", a]);
        assert!(e.contains("ResourceNotFoundException"), "{a}: {e}");
    }
    let e = err(
        &s,
        &[
            "logs",
            "list-tags-for-resource",
            "--resource-arn",
            "not-an-arn",
        ],
    );
    assert!(e.contains("InvalidParameterException"), "{e}");
    let e = err(
        &s,
        &[
            "logs",
            "list-tags-log-group",
            "--log-group-name",
            "/missing",
        ],
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    // A group created again under the name has none of the old tags.
    s.aws_ok(&["logs", "delete-log-group", "--log-group-name", g]);
    s.aws_ok(&["logs", "create-log-group", "--log-group-name", g]);
    let t = s.aws_ok(&["logs", "list-tags-for-resource", "--resource-arn", &arn]);
    assert_eq!(t["tags"], json!({}));
}

/// Cluster `demo` with service `web` (desired count 0: nothing runs).
fn service(s: &Server) {
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let td = s.register(&fargate_taskdef("web", "busybox", json!({})));
    s.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "demo",
        "--service-name",
        "web",
        "--task-definition",
        &td,
        "--desired-count",
        "0",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        "awsvpcConfiguration={subnets=[subnet-12345678]}",
    ]);
}

const RID: &str = "service/demo/web";
const DIM: &str = "ecs:service:DesiredCount";

fn register_target(s: &Server, extra: &[&str]) -> Value {
    let mut args = vec![
        "application-autoscaling",
        "register-scalable-target",
        "--service-namespace",
        "ecs",
        "--resource-id",
        RID,
        "--scalable-dimension",
        DIM,
        "--min-capacity",
        "0",
        "--max-capacity",
        "2",
    ];
    args.extend_from_slice(extra);
    s.aws_ok(&args)
}

#[test]
fn scalable_targets_carry_tags() {
    let s = start();
    service(&s);
    let arn = register_target(&s, &["--tags", "team=core,env=dev"])["ScalableTargetARN"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        arn.starts_with("arn:aws:application-autoscaling:us-east-1:000000000000:scalable-target/"),
        "{arn}"
    );
    let list = |s: &Server| {
        s.aws_ok(&[
            "application-autoscaling",
            "list-tags-for-resource",
            "--resource-arn",
            &arn,
        ])["Tags"]
            .clone()
    };
    assert_eq!(list(&s), json!({"team": "core", "env": "dev"}));
    s.aws_ok(&[
        "application-autoscaling",
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "env=prod,cost=1",
    ]);
    s.aws_ok(&[
        "application-autoscaling",
        "untag-resource",
        "--resource-arn",
        &arn,
        "--tag-keys",
        "team",
    ]);
    assert_eq!(list(&s), json!({"env": "prod", "cost": "1"}));
    // Registering again updates the target and keeps its ARN and tags.
    let again = register_target(&s, &[]);
    assert_eq!(again["ScalableTargetARN"], arn.as_str());
    assert_eq!(list(&s), json!({"env": "prod", "cost": "1"}));
    let many: Vec<String> = (0..49).map(|i| format!("k{i}=v")).collect();
    let joined = many.join(",");
    let e = err(
        &s,
        &[
            "application-autoscaling",
            "tag-resource",
            "--resource-arn",
            &arn,
            "--tags",
            &joined,
        ],
    );
    assert!(e.contains("TooManyTagsException"), "{e}");
    let e = err(
        &s,
        &[
            "application-autoscaling",
            "tag-resource",
            "--resource-arn",
            &arn,
            "--tags",
            "aws:x=1",
        ],
    );
    assert!(e.contains("ValidationException"), "{e}");
    assert_eq!(list(&s).as_object().unwrap().len(), 2);
    let missing = "arn:aws:application-autoscaling:us-east-1:000000000000:scalable-target/0123abcd";
    let e = err(
        &s,
        &[
            "application-autoscaling",
            "list-tags-for-resource",
            "--resource-arn",
            missing,
        ],
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
    let e = err(
        &s,
        &[
            "application-autoscaling",
            "tag-resource",
            "--resource-arn",
            "arn:aws:ecs:us-east-1:0:service/x",
            "--tags",
            "a=b",
        ],
    );
    assert!(e.contains("ValidationException"), "{e}");
    // Deregistered: its ARN is gone.
    s.aws_ok(&[
        "application-autoscaling",
        "deregister-scalable-target",
        "--service-namespace",
        "ecs",
        "--resource-id",
        RID,
        "--scalable-dimension",
        DIM,
    ]);
    let e = err(
        &s,
        &[
            "application-autoscaling",
            "list-tags-for-resource",
            "--resource-arn",
            &arn,
        ],
    );
    assert!(e.contains("ResourceNotFoundException"), "{e}");
}

/// Runs `tests/tests/cw_protocol.py` (botocore forced onto `protocol`).
fn botocore(s: &Server, protocol: &str, op: &str, params: &Value) -> Result<Value, String> {
    let venv = repo_root().join(".venv/bin/python");
    let py = if venv.exists() {
        venv
    } else {
        "python3".into()
    };
    let out = Command::new(py)
        .arg(repo_root().join("tests/tests/cw_protocol.py"))
        .args([&s.endpoint(), protocol, op, &params.to_string()])
        .envs(credentials_env(s))
        .output()
        .expect("running python");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn metric_alarms_in_all_three_protocols() {
    let s = start();
    // The CLI's own protocol first.
    s.aws_ok(&[
        "cloudwatch",
        "put-metric-alarm",
        "--alarm-name",
        "cli-high-cpu",
        "--metric-name",
        "CPUUtilization",
        "--namespace",
        "AWS/ECS",
        "--statistic",
        "Average",
        "--period",
        "60",
        "--evaluation-periods",
        "3",
        "--threshold",
        "70",
        "--comparison-operator",
        "GreaterThanThreshold",
        "--dimensions",
        "Name=ClusterName,Value=demo",
        "--tags",
        "Key=team,Value=core",
    ]);
    let d = s.aws_ok(&[
        "cloudwatch",
        "describe-alarms",
        "--alarm-names",
        "cli-high-cpu",
    ]);
    let a = &d["MetricAlarms"][0];
    assert_eq!(
        a["AlarmArn"],
        "arn:aws:cloudwatch:us-east-1:000000000000:alarm:cli-high-cpu"
    );
    assert_eq!(a["Threshold"], 70.0);
    assert_eq!(
        a["StateValue"], "INSUFFICIENT_DATA",
        "no samples for cluster demo: {a}"
    );
    assert_eq!(
        a["Dimensions"],
        json!([{"Name": "ClusterName", "Value": "demo"}])
    );
    let e = err(
        &s,
        &[
            "cloudwatch",
            "put-metric-alarm",
            "--alarm-name",
            "bad",
            "--metric-name",
            "CPUUtilization",
            "--namespace",
            "AWS/ECS",
            "--statistic",
            "Average",
            "--period",
            "45",
            "--evaluation-periods",
            "1",
            "--threshold",
            "1",
            "--comparison-operator",
            "GreaterThanThreshold",
        ],
    );
    assert!(e.contains("ValidationError") && e.contains("Period"), "{e}");

    for (i, protocol) in ["smithy-rpc-v2-cbor", "json", "query"].iter().enumerate() {
        let call = |op: &str, p: Value| {
            botocore(&s, protocol, op, &p)
                .unwrap_or_else(|e| panic!("{protocol} {op}: {e}\n{}", s.log()))
        };
        let name = format!("p{i}-alarm");
        let base = json!({"AlarmName": name, "MetricName": "MemoryUtilization", "Namespace": "AWS/ECS",
            "Statistic": "Maximum", "Period": 60, "EvaluationPeriods": 2, "DatapointsToAlarm": 1,
            "Threshold": 12.5, "ComparisonOperator": "LessThanThreshold", "TreatMissingData": "breaching",
            "Dimensions": [{"Name": "ClusterName", "Value": "demo"}, {"Name": "ServiceName", "Value": "web"}],
            "AlarmActions": ["arn:aws:sns:us-east-1:000000000000:ops"], "ActionsEnabled": false,
            "Tags": [{"Key": "proto", "Value": protocol}]});
        call("put_metric_alarm", base.clone());
        let d = call("describe_alarms", json!({"AlarmNames": [name]}));
        let a = &d["MetricAlarms"][0];
        assert_eq!(a["AlarmName"], name.as_str(), "{protocol}: {d}");
        assert_eq!(a["Threshold"], 12.5);
        assert_eq!(a["EvaluationPeriods"], 2);
        assert_eq!(a["ActionsEnabled"], false);
        assert_eq!(
            a["AlarmActions"],
            json!(["arn:aws:sns:us-east-1:000000000000:ops"])
        );
        assert_eq!(a["Dimensions"].as_array().unwrap().len(), 2);
        assert!(
            a["StateUpdatedTimestamp"]
                .as_str()
                .unwrap()
                .starts_with("20"),
            "{protocol}: {a}"
        );
        // No data, treated as breaching: evaluated to ALARM.
        assert_eq!(a["StateValue"], "ALARM", "{protocol}: {a}");
        assert!(
            a["StateReason"]
                .as_str()
                .unwrap()
                .contains("Threshold Crossed"),
            "{a}"
        );
        let t = call(
            "list_tags_for_resource",
            json!({"ResourceARN": a["AlarmArn"]}),
        );
        assert_eq!(t["Tags"], json!([{"Key": "proto", "Value": protocol}]));
        // Updating keeps the tags; notBreaching turns it OK.
        let mut upd = base.clone();
        upd["TreatMissingData"] = json!("notBreaching");
        upd.as_object_mut().unwrap().remove("Tags");
        call("put_metric_alarm", upd);
        let d = call(
            "describe_alarms",
            json!({"AlarmNamePrefix": format!("p{i}-"), "StateValue": "OK"}),
        );
        assert_eq!(
            d["MetricAlarms"].as_array().unwrap().len(),
            1,
            "{protocol}: {d}"
        );
        let t = call(
            "list_tags_for_resource",
            json!({"ResourceARN": a["AlarmArn"]}),
        );
        assert_eq!(t["Tags"].as_array().unwrap().len(), 1);
        // Refusals carry CloudWatch's codes in every protocol.
        let mut bad = base.clone();
        bad["Period"] = json!(45);
        let e = botocore(&s, protocol, "put_metric_alarm", &bad).unwrap_err();
        assert!(e.contains("ERROR ValidationError"), "{protocol}: {e}");
        let mut bad = base.clone();
        bad["ExtendedStatistic"] = json!("p90");
        let e = botocore(&s, protocol, "put_metric_alarm", &bad).unwrap_err();
        assert!(
            e.contains("ERROR InvalidParameterCombination"),
            "{protocol}: {e}"
        );
        let e = botocore(
            &s,
            protocol,
            "list_tags_for_resource",
            &json!({"ResourceARN": "arn:aws:cloudwatch:us-east-1:000000000000:alarm:nope"}),
        )
        .unwrap_err();
        assert!(e.contains("ERROR ResourceNotFound"), "{protocol}: {e}");
        // Deleting ignores unknown names and removes the known ones.
        call(
            "delete_alarms",
            json!({"AlarmNames": [name, "never-existed"]}),
        );
        let d = call("describe_alarms", json!({"AlarmNames": [name]}));
        assert_eq!(d["MetricAlarms"], json!([]), "{protocol}");
    }
    // Pagination by name.
    for n in ["page-a", "page-b", "page-c"] {
        s.aws_ok(&[
            "cloudwatch",
            "put-metric-alarm",
            "--alarm-name",
            n,
            "--metric-name",
            "X",
            "--namespace",
            "Custom",
            "--statistic",
            "Sum",
            "--period",
            "60",
            "--evaluation-periods",
            "1",
            "--threshold",
            "1",
            "--comparison-operator",
            "GreaterThanThreshold",
        ]);
    }
    let p1 = s.aws_ok(&[
        "cloudwatch",
        "describe-alarms",
        "--alarm-name-prefix",
        "page-",
        "--max-items",
        "2",
    ]);
    assert_eq!(p1["MetricAlarms"].as_array().unwrap().len(), 2, "{p1}");
    let all = s.aws_ok(&[
        "cloudwatch",
        "describe-alarms",
        "--alarm-name-prefix",
        "page-",
        "--page-size",
        "1",
    ]);
    let names: Vec<&str> = all["MetricAlarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["AlarmName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["page-a", "page-b", "page-c"]);
}

fn alarm(s: &Server, name: &str) -> Option<Value> {
    let d = s.aws_ok(&["cloudwatch", "describe-alarms", "--alarm-names", name]);
    d["MetricAlarms"].as_array().unwrap().first().cloned()
}

#[test]
fn target_tracking_policies_own_their_two_alarms() {
    let s = start();
    service(&s);
    register_target(&s, &[]);
    let put_policy = |disable_in: bool| {
        s.aws_ok(&[
            "application-autoscaling", "put-scaling-policy", "--service-namespace", "ecs", "--resource-id", RID,
            "--scalable-dimension", DIM, "--policy-name", "cpu50", "--policy-type", "TargetTrackingScaling",
            "--target-tracking-scaling-policy-configuration",
            &json!({"TargetValue": 50.0, "DisableScaleIn": disable_in,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}}).to_string(),
        ])
    };
    let p = put_policy(false);
    let policy_arn = p["PolicyARN"].as_str().unwrap().to_string();
    let names: Vec<String> = p["Alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["AlarmName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{p}");
    let high = names
        .iter()
        .find(|n| n.contains("-AlarmHigh-"))
        .unwrap()
        .clone();
    let low = names
        .iter()
        .find(|n| n.contains("-AlarmLow-"))
        .unwrap()
        .clone();
    assert!(
        high.starts_with("TargetTracking-service/demo/web-AlarmHigh-"),
        "{high}"
    );
    assert!(
        low.starts_with("TargetTracking-service/demo/web-AlarmLow-"),
        "{low}"
    );
    let h = alarm(&s, &high).expect("high alarm described");
    assert_eq!(h["Threshold"], 50.0);
    assert_eq!(h["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(h["EvaluationPeriods"], 3);
    assert_eq!(h["MetricName"], "CPUUtilization");
    assert_eq!(h["AlarmActions"], json!([policy_arn]));
    assert_eq!(
        h["Dimensions"],
        json!([{"Name": "ClusterName", "Value": "demo"}, {"Name": "ServiceName", "Value": "web"}])
    );
    let l = alarm(&s, &low).expect("low alarm described");
    assert_eq!(l["Threshold"], 45.0);
    assert_eq!(l["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(l["EvaluationPeriods"], 15);
    let d = s.aws_ok(&[
        "application-autoscaling",
        "describe-scaling-policies",
        "--service-namespace",
        "ecs",
        "--resource-id",
        RID,
    ]);
    assert_eq!(d["ScalingPolicies"][0]["Alarms"], p["Alarms"]);
    // Without scale-in there is no low alarm; the high one keeps its name.
    let p2 = put_policy(true);
    assert_eq!(p2["Alarms"].as_array().unwrap().len(), 1, "{p2}");
    assert_eq!(p2["Alarms"][0]["AlarmName"], high.as_str());
    assert!(alarm(&s, &low).is_none());
    assert!(alarm(&s, &high).is_some());
    // Deleting the policy deletes its alarms.
    s.aws_ok(&[
        "application-autoscaling",
        "delete-scaling-policy",
        "--service-namespace",
        "ecs",
        "--resource-id",
        RID,
        "--scalable-dimension",
        DIM,
        "--policy-name",
        "cpu50",
    ]);
    assert!(alarm(&s, &high).is_none());
    // And deregistering the target deletes the alarms of its policies.
    let p3 = put_policy(false);
    let names3: Vec<String> = p3["Alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["AlarmName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names3.len(), 2);
    assert!(alarm(&s, &names3[0]).is_some());
    s.aws_ok(&[
        "application-autoscaling",
        "deregister-scalable-target",
        "--service-namespace",
        "ecs",
        "--resource-id",
        RID,
        "--scalable-dimension",
        DIM,
    ]);
    for n in &names3 {
        assert!(alarm(&s, n).is_none(), "{n} left behind");
    }
    let all = s.aws_ok(&["cloudwatch", "describe-alarms"]);
    assert_eq!(all["MetricAlarms"], json!([]));
}

/// The signing credentials for the clients this file starts itself (Terraform, the botocore
/// script), as environment variables. The one place to change when the harness hands out the
/// server's generated key (`Server::aws_env`).
fn credentials_env(s: &Server) -> Vec<(&'static str, String)> {
    s.aws_env().to_vec()
}

#[test]
fn terraform_applies_and_destroys_a_log_group_and_scaling_for_a_service() {
    if Command::new("terraform").arg("version").output().is_err() {
        panic!("terraform is not installed");
    }
    let s = start();
    let dir = berth_tests::temp_dir("tf-logs");
    let ep = s.endpoint();
    let rc = dir.join("terraformrc");
    std::fs::write(
        &rc,
        r#"provider_installation {
  filesystem_mirror {
    path    = "/opt/tf-plugins"
    include = ["registry.terraform.io/*/*"]
  }
  direct {
    exclude = ["registry.terraform.io/*/*"]
  }
}
"#,
    )
    .unwrap();
    let main = format!(
        r#"terraform {{
  required_providers {{
    aws = {{ source = "hashicorp/aws", version = "5.100.0" }}
  }}
}}
provider "aws" {{
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  endpoints {{
    ecs            = "{ep}"
    ecr            = "{ep}"
    sts            = "{ep}"
    logs           = "{ep}"
    cloudwatch     = "{ep}"
    appautoscaling = "{ep}"
  }}
}}
variable "retention" {{
  default = 7
}}
resource "aws_cloudwatch_log_group" "app" {{
  name              = "/ecs/tf-app"
  retention_in_days = var.retention
  tags              = {{ team = "berth", env = "test" }}
}}
resource "aws_ecs_cluster" "demo" {{ name = "tf-scale" }}
resource "aws_ecs_task_definition" "web" {{
  family                   = "tf-scale-web"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "256"
  memory                   = "512"
  container_definitions = jsonencode([{{
    name = "app", image = "000000000000.dkr.ecr.us-east-1.amazonaws.com/busybox:1", essential = true,
    command = ["sleep", "1000"],
    logConfiguration = {{ logDriver = "awslogs", options = {{
      "awslogs-group" = aws_cloudwatch_log_group.app.name, "awslogs-region" = "us-east-1",
      "awslogs-stream-prefix" = "web" }} }}
  }}])
}}
resource "aws_ecs_service" "web" {{
  name            = "tf-scale-web"
  cluster         = aws_ecs_cluster.demo.id
  task_definition = aws_ecs_task_definition.web.arn
  desired_count   = 0
  launch_type     = "FARGATE"
  network_configuration {{
    subnets = ["subnet-12345678"]
  }}
  lifecycle {{
    ignore_changes = [desired_count]
  }}
}}
resource "aws_appautoscaling_target" "web" {{
  service_namespace  = "ecs"
  resource_id        = "service/${{aws_ecs_cluster.demo.name}}/${{aws_ecs_service.web.name}}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = 0
  max_capacity       = 2
  tags               = {{ team = "berth" }}
}}
resource "aws_appautoscaling_policy" "cpu" {{
  name               = "cpu50"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.web.service_namespace
  resource_id        = aws_appautoscaling_target.web.resource_id
  scalable_dimension = aws_appautoscaling_target.web.scalable_dimension
  target_tracking_scaling_policy_configuration {{
    target_value = 50
    predefined_metric_specification {{
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }}
  }}
}}
"#
    );
    std::fs::write(dir.join("main.tf"), main).unwrap();
    let tf = |args: &[&str]| {
        let out = Command::new("terraform")
            .args(args)
            .current_dir(&dir)
            .env("TF_CLI_CONFIG_FILE", &rc)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .envs(credentials_env(&s))
            .output()
            .expect("running terraform");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "terraform {args:?} failed:\n{stdout}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.log()
        );
        stdout
    };
    tf(&["init", "-input=false", "-no-color"]);
    tf(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    let g = group(&s, "/ecs/tf-app");
    assert_eq!(g["retentionInDays"], 7, "{g}");
    let arn = g["logGroupArn"].as_str().unwrap();
    let t = s.aws_ok(&["logs", "list-tags-for-resource", "--resource-arn", arn]);
    assert_eq!(t["tags"], json!({"team": "berth", "env": "test"}));
    let targets = s.aws_ok(&[
        "application-autoscaling",
        "describe-scalable-targets",
        "--service-namespace",
        "ecs",
    ]);
    let target_arn = targets["ScalableTargets"][0]["ScalableTargetARN"]
        .as_str()
        .unwrap()
        .to_string();
    let t = s.aws_ok(&[
        "application-autoscaling",
        "list-tags-for-resource",
        "--resource-arn",
        &target_arn,
    ]);
    assert_eq!(t["Tags"], json!({"team": "berth"}));
    let alarms = s.aws_ok(&[
        "cloudwatch",
        "describe-alarms",
        "--alarm-name-prefix",
        "TargetTracking-service/tf-scale/tf-scale-web-",
    ]);
    assert_eq!(
        alarms["MetricAlarms"].as_array().unwrap().len(),
        2,
        "{alarms}"
    );
    // A second plan finds nothing to change (every attribute reads back as written).
    let plan = tf(&["plan", "-input=false", "-no-color", "-detailed-exitcode"]);
    assert!(plan.contains("No changes"), "{plan}");
    // Changing the retention is an in-place update.
    tf(&[
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var",
        "retention=30",
    ]);
    assert_eq!(group(&s, "/ecs/tf-app")["retentionInDays"], 30);
    tf(&[
        "destroy",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var",
        "retention=30",
    ]);
    let left = s.aws_ok(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        "/ecs/tf-app",
    ]);
    assert_eq!(left["logGroups"], json!([]));
    let targets = s.aws_ok(&[
        "application-autoscaling",
        "describe-scalable-targets",
        "--service-namespace",
        "ecs",
    ]);
    assert_eq!(targets["ScalableTargets"], json!([]));
    let alarms = s.aws_ok(&["cloudwatch", "describe-alarms"]);
    assert_eq!(alarms["MetricAlarms"], json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}
