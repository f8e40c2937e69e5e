//! `berth usage`: prints the metering report of a berth server (`GET /_berth/usage`) as a table,
//! JSON or CSV. The numbers are the server's; this verb only formats them.

use anyhow::Context;
use clap::{Args, ValueEnum};

/// Output formats of `berth usage`.
#[derive(Clone, Copy, ValueEnum)]
pub enum UsageOutput {
    /// Aligned columns with a total line.
    Table,
    /// The endpoint's JSON body, unchanged.
    Json,
    /// `key,tasks,vcpu_seconds,gb_seconds,cost` rows and a `total` row.
    Csv,
}

/// Options of `berth usage`.
#[derive(Args)]
pub struct UsageArgs {
    /// berth server to ask.
    #[arg(long, default_value = "http://127.0.0.1:5150")]
    pub endpoint: String,
    /// Only tasks of this cluster (name or ARN).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only tasks of this service (name or ARN).
    #[arg(long)]
    pub service: Option<String>,
    /// Window start: epoch seconds or RFC 3339 (`2024-04-05T00:00:00Z`, `2024-04-05`).
    #[arg(long)]
    pub since: Option<String>,
    /// Window end: epoch seconds or RFC 3339.
    #[arg(long)]
    pub until: Option<String>,
    /// Row grouping: task, service, cluster or day (UTC).
    #[arg(long, default_value = "task", value_parser = ["task", "service", "cluster", "day"])]
    pub group_by: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: UsageOutput,
}

/// Runs `berth usage`.
pub async fn run(a: UsageArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, &str)> = vec![("group_by", a.group_by.as_str())];
    for (k, v) in [
        ("cluster", &a.cluster),
        ("service", &a.service),
        ("since", &a.since),
        ("until", &a.until),
    ] {
        if let Some(v) = v {
            query.push((k, v.as_str()));
        }
    }
    let url = format!("{}/_berth/usage", a.endpoint.trim_end_matches('/'));
    let mut url = reqwest::Url::parse(&url).with_context(|| format!("endpoint {url}"))?;
    url.query_pairs_mut().extend_pairs(&query);
    let key = crate::client_auth::credentials();
    let mut req = reqwest::Client::new().get(url.clone());
    for (k, v) in crate::client_auth::sign(key.as_ref(), "GET", &url, &[], b"") {
        req = req.header(k, v);
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("reading the usage report")?;
    if !status.is_success() {
        anyhow::bail!(
            "{}: {}",
            body["__type"].as_str().unwrap_or(status.as_str()),
            body["message"].as_str().unwrap_or("")
        );
    }
    print!("{}", render(&body, a.output));
    Ok(())
}

fn cells(r: &serde_json::Value) -> [String; 5] {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    [
        r["key"].as_str().unwrap_or("").to_string(),
        r["tasks"].as_u64().unwrap_or(0).to_string(),
        format!("{:.3}", f("vcpu_seconds")),
        format!("{:.3}", f("gb_seconds")),
        format!("{:.8}", f("cost")),
    ]
}

fn render(body: &serde_json::Value, output: UsageOutput) -> String {
    let rows: Vec<&serde_json::Value> = body["rows"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    match output {
        UsageOutput::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(body).unwrap_or_default()
        ),
        UsageOutput::Csv => {
            let mut out = String::from("key,tasks,vcpu_seconds,gb_seconds,cost\n");
            for r in rows.iter().copied().chain([&body["total"]]) {
                let c = cells(r);
                let key = if c[0].contains([',', '"']) {
                    format!("\"{}\"", c[0].replace('"', "\"\""))
                } else {
                    c[0].clone()
                };
                out += &format!("{key},{},{},{},{}\n", c[1], c[2], c[3], c[4]);
            }
            out
        }
        UsageOutput::Table => {
            let currency = body["currency"].as_str().unwrap_or("USD");
            let head = [
                "KEY".to_string(),
                "TASKS".into(),
                "VCPU-SECONDS".into(),
                "GB-SECONDS".into(),
                format!("COST ({currency})"),
            ];
            let mut lines: Vec<[String; 5]> = vec![head];
            lines.extend(rows.iter().map(|r| cells(r)));
            lines.push(cells(&body["total"]));
            let mut w = [0usize; 5];
            for l in &lines {
                for (i, c) in l.iter().enumerate() {
                    w[i] = w[i].max(c.len());
                }
            }
            let mut out = String::new();
            for l in &lines {
                out += &format!("{:<w0$}", l[0], w0 = w[0]);
                for i in 1..5 {
                    out += &format!("  {:>wi$}", l[i], wi = w[i]);
                }
                out += "\n";
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_csv_and_table() {
        let body = serde_json::json!({"currency":"USD","rows":[{"key":"a,b","tasks":1,"vcpu_seconds":15.0,"gb_seconds":30.0,"cost":0.001}],
            "total":{"key":"total","tasks":1,"vcpu_seconds":15.0,"gb_seconds":30.0,"cost":0.001}});
        let csv = render(&body, UsageOutput::Csv);
        assert_eq!(
            csv,
            "key,tasks,vcpu_seconds,gb_seconds,cost\n\"a,b\",1,15.000,30.000,0.00100000\ntotal,1,15.000,30.000,0.00100000\n"
        );
        let table = render(&body, UsageOutput::Table);
        assert!(table.starts_with("KEY"));
        assert!(table.contains("COST (USD)"));
        assert_eq!(table.lines().count(), 3);
    }
}
