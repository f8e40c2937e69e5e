//! The AWS query protocol (`POST /`, form-encoded `Action=<Op>&Version=<date>&...`): the
//! parameters become a JSON document (`A.member.1.B=x` -> `{"A": [{"B": "x"}]}`), replies are
//! `<OpResponse xmlns=..><OpResult>..</OpResult><ResponseMetadata><RequestId>..` and errors
//! `<ErrorResponse><Error><Type>Sender|Receiver</Type><Code>..</Code><Message>..`.

use axum::http::StatusCode;
use axum::response::Response;
use berth_api::proto::AwsError;
use serde_json::{Map, Value};

use crate::service::QuerySupport;

/// The query-protocol error code and fault type of an error: the service's `awsQueryError`
/// code for its type (else the type itself; `UnknownOperationException` is `InvalidAction`),
/// and `Receiver` for 5xx, `Sender` otherwise.
pub fn query_code(q: &QuerySupport, e: &AwsError) -> (String, &'static str) {
    let code = q
        .error_codes
        .iter()
        .find(|(t, _)| *t == e.error_type)
        .map(|(_, c)| *c)
        .unwrap_or(match e.error_type.as_str() {
            // The query protocol's name for an operation the service does not have.
            "UnknownOperationException" => "InvalidAction",
            other => other,
        });
    let fault = if e.status >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    (code.to_string(), fault)
}

/// Turns query parameters (`A.member.1.B=x`) into a JSON value (`{"A": [{"B": "x"}]}`);
/// `Action` and `Version` are left out.
pub fn query_to_json(pairs: &[(String, String)]) -> Value {
    fn put(node: &mut Value, path: &[&str], val: &str) {
        let Some((first, rest)) = path.split_first() else {
            *node = Value::String(val.to_string());
            return;
        };
        if *first == "member" || *first == "entry" {
            // `member.<n>`: a list element (1-based).
            let Some((idx, rest)) = rest.split_first() else {
                return;
            };
            let i: usize = idx.parse().unwrap_or(1).max(1) - 1;
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            let Some(a) = node.as_array_mut() else {
                return;
            };
            while a.len() <= i {
                a.push(Value::Null);
            }
            put(&mut a[i], rest, val);
            return;
        }
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Some(m) = node.as_object_mut() else {
            return;
        };
        let child = m.entry(first.to_string()).or_insert(Value::Null);
        put(child, rest, val);
    }
    let mut root = Value::Object(Map::new());
    for (k, v) in pairs {
        if k == "Action" || k == "Version" {
            continue;
        }
        let path: Vec<&str> = k.split('.').collect();
        put(&mut root, &path, v);
    }
    root
}

/// Escapes XML text (`&`, `<`, `>`, `"`).
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub use berth_core::time::format_iso8601;

/// How a reply is written: which members are timestamps and which are maps.
struct Xml<'a> {
    timestamps: &'a [&'a str],
    maps: &'a [&'a str],
}

fn ts_text(v: &Value) -> Value {
    Value::String(format_iso8601(v.as_f64().unwrap_or(0.0)))
}

impl Xml<'_> {
    fn write(&self, out: &mut String, key: &str, v: &Value) {
        match v {
            Value::Null => {}
            Value::Array(a) => {
                out.push_str(&format!("<{key}>"));
                for x in a {
                    let x = if self.timestamps.contains(&key) {
                        ts_text(x)
                    } else {
                        x.clone()
                    };
                    self.write(out, "member", &x);
                }
                out.push_str(&format!("</{key}>"));
            }
            Value::Object(m) => {
                out.push_str(&format!("<{key}>"));
                for (k, x) in m {
                    if self.maps.contains(&k.as_str()) {
                        out.push_str(&format!("<{k}>"));
                        for (sk, sv) in x.as_object().into_iter().flatten() {
                            out.push_str(&format!(
                                "<entry><key>{}</key><value>{sv}</value></entry>",
                                xml_escape(sk)
                            ));
                        }
                        out.push_str(&format!("</{k}>"));
                    } else if self.timestamps.contains(&k.as_str()) && !x.is_array() {
                        self.write(out, k, &ts_text(x));
                    } else {
                        self.write(out, k, x);
                    }
                }
                out.push_str(&format!("</{key}>"));
            }
            Value::String(s) => out.push_str(&format!("<{key}>{}</{key}>", xml_escape(s))),
            other => out.push_str(&format!("<{key}>{other}</{key}>")),
        }
    }
}

/// The XML reply of operation `op`'s outcome, typed `text/xml`, with request id `rid` in the
/// body and the `x-amzn-requestid` header.
pub fn response(
    q: &QuerySupport,
    op: &str,
    timestamps: &[&str],
    result: &Result<Value, AwsError>,
    rid: &str,
) -> Response {
    const CT: &str = "text/xml";
    let xmlns = q.xmlns;
    match result {
        Ok(v) => {
            let mut x = format!("<{op}Response xmlns=\"{xmlns}\">");
            let xml = Xml {
                timestamps,
                maps: q.map_members,
            };
            xml.write(&mut x, &format!("{op}Result"), v);
            x.push_str(&format!(
                "<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></{op}Response>"
            ));
            crate::reply(StatusCode::OK, CT, x.into_bytes(), rid)
        }
        Err(e) => {
            let (code, fault) = query_code(q, e);
            let x = format!(
                "<ErrorResponse xmlns=\"{xmlns}\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>",
                xml_escape(&code),
                xml_escape(&e.message)
            );
            crate::reply(crate::json::status_of(e), CT, x.into_bytes(), rid)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    static Q: QuerySupport = QuerySupport {
        xmlns: "urn:x",
        error_codes: &[("InvalidParameterValueException", "InvalidParameterValue")],
        map_members: &["ExtendedStatistics"],
    };

    #[test]
    fn query_params_to_json() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        let v = query_to_json(&[
            p("Action", "GetMetricStatistics"),
            p("Namespace", "AWS/ECS"),
            p("Dimensions.member.2.Name", "ServiceName"),
            p("Dimensions.member.1.Name", "ClusterName"),
            p("Dimensions.member.1.Value", "c"),
            p("Statistics.member.1", "Average"),
        ]);
        assert_eq!(
            v,
            json!({"Namespace": "AWS/ECS", "Dimensions": [{"Name": "ClusterName", "Value": "c"},
                {"Name": "ServiceName"}], "Statistics": ["Average"]})
        );
    }

    #[test]
    fn iso8601_text() {
        assert_eq!(format_iso8601(1_709_296_215.0), "2024-03-01T12:30:15.000Z");
        assert_eq!(format_iso8601(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(format_iso8601(-1.0), "1969-12-31T23:59:59.000Z");
    }

    #[test]
    fn codes_and_faults() {
        let c = |e: AwsError| query_code(&Q, &e);
        assert_eq!(
            c(AwsError::client("InvalidParameterValueException", "m")),
            ("InvalidParameterValue".into(), "Sender")
        );
        assert_eq!(
            c(AwsError::client("UnknownOperationException", "m")),
            ("InvalidAction".into(), "Sender")
        );
        assert_eq!(
            c(AwsError::server("m")),
            ("ServerException".into(), "Receiver")
        );
    }

    #[tokio::test]
    async fn replies_and_errors_in_xml() {
        let v = json!({"Label": "CPU", "Datapoints": [{"Timestamp": 60, "Average": 1.5,
            "ExtendedStatistics": {"p50": 2.0}}], "Gone": null});
        let r = response(&Q, "GetMetricStatistics", &["Timestamp"], &Ok(v), "rid-1");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-amzn-requestid"], "rid-1");
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "<GetMetricStatisticsResponse xmlns=\"urn:x\"><GetMetricStatisticsResult>\
             <Datapoints><member><Average>1.5</Average><ExtendedStatistics><entry><key>p50</key>\
             <value>2.0</value></entry></ExtendedStatistics><Timestamp>1970-01-01T00:01:00.000Z\
             </Timestamp></member></Datapoints><Label>CPU</Label></GetMetricStatisticsResult>\
             <ResponseMetadata><RequestId>rid-1</RequestId></ResponseMetadata>\
             </GetMetricStatisticsResponse>"
        );
        let e = AwsError::client("InvalidParameterValueException", "a < b");
        let r = response(&Q, "X", &[], &Err(e), "rid-2");
        assert_eq!(r.status(), 400);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "<ErrorResponse xmlns=\"urn:x\"><Error><Type>Sender</Type><Code>InvalidParameterValue\
             </Code><Message>a &lt; b</Message></Error><RequestId>rid-2</RequestId></ErrorResponse>"
        );
    }
}
