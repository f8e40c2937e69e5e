//! `berth credentials`: prints the account's access key (creating it when the data directory
//! has none yet), as shell `export` lines or JSON, or writes it into an AWS CLI profile.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

/// Output formats of `berth credentials`.
#[derive(Clone, Copy, ValueEnum)]
pub enum CredentialsOutput {
    /// `export AWS_ACCESS_KEY_ID=...` lines, for `eval $(berth credentials)`.
    Env,
    /// `{"AccessKeyId": ..., "SecretAccessKey": ..., "AccountId": ...}`.
    Json,
}

/// Options of `berth credentials`.
#[derive(Args)]
pub struct CredentialsArgs {
    /// The server's data directory.
    #[arg(long, default_value = ".berth")]
    pub data_dir: PathBuf,
    /// Account id recorded with a key created here (a server's `--account-id`).
    #[arg(long, default_value = "000000000000")]
    pub account_id: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "env")]
    pub output: CredentialsOutput,
    /// Write the key into this profile of the AWS CLI's credentials file
    /// (`$AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) instead of printing it.
    #[arg(long)]
    pub profile: Option<String>,
}

/// Runs `berth credentials`.
pub fn run(a: CredentialsArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("creating {}", a.data_dir.display()))?;
    let (store, _) = berth_iam::Credentials::open_or_create(&a.data_dir, &a.account_id)?;
    let key = store
        .primary()
        .context("credentials.json holds no access key")?;
    if let Some(profile) = &a.profile {
        let path = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".aws")
                .join("credentials"),
        };
        write_profile(&path, profile, key)?;
        eprintln!(
            "wrote profile [{profile}] to {}; use it with `aws --profile {profile} --endpoint-url http://<berth>:5150 ...`",
            path.display()
        );
        return Ok(());
    }
    match a.output {
        CredentialsOutput::Env => {
            println!("export AWS_ACCESS_KEY_ID={}", key.access_key_id);
            println!("export AWS_SECRET_ACCESS_KEY={}", key.secret_access_key);
        }
        CredentialsOutput::Json => println!("{}", serde_json::to_string_pretty(key)?),
    }
    Ok(())
}

/// Sets `aws_access_key_id` and `aws_secret_access_key` of `[profile]` in an INI credentials
/// file, keeping every other section and line; creates the file (mode 0600) when missing.
fn write_profile(
    path: &std::path::Path,
    profile: &str,
    key: &berth_iam::AccessKey,
) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    anyhow::ensure!(
        !profile.is_empty() && !profile.contains([']', '\n', '\r']),
        "bad profile name {profile:?}"
    );
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let text = update_profile(&old, profile, key);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("berth-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn update_profile(old: &str, profile: &str, key: &berth_iam::AccessKey) -> String {
    let mut out = Vec::new();
    let mut in_section = false;
    let mut found = false;
    let entries = [
        format!("aws_access_key_id = {}", key.access_key_id),
        format!("aws_secret_access_key = {}", key.secret_access_key),
    ];
    for line in old.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            in_section = t[1..t.len() - 1].trim() == profile;
            out.push(line.to_string());
            if in_section {
                found = true;
                out.extend(entries.iter().cloned());
            }
            continue;
        }
        let name = t.split('=').next().unwrap_or("").trim();
        if in_section && (name == "aws_access_key_id" || name == "aws_secret_access_key") {
            continue;
        }
        out.push(line.to_string());
    }
    if !found {
        if out.last().is_some_and(|l| !l.trim().is_empty()) {
            out.push(String::new());
        }
        out.push(format!("[{profile}]"));
        out.extend(entries.iter().cloned());
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_update_keeps_other_sections() {
        let key = berth_iam::AccessKey {
            access_key_id: "AKIANEW".into(),
            secret_access_key: "s".repeat(40),
            account_id: String::new(),
        };
        let old = "[default]\naws_access_key_id = A\n\n[berth]\naws_access_key_id = OLD\nregion = eu-west-1\naws_secret_access_key = OLDS\n[x]\ny = 1\n";
        let new = update_profile(old, "berth", &key);
        assert!(new.contains("[default]\naws_access_key_id = A\n"));
        assert!(new.contains("[berth]\naws_access_key_id = AKIANEW\naws_secret_access_key = ssss"));
        assert!(new.contains("region = eu-west-1"));
        assert!(!new.contains("OLD"));
        assert!(new.contains("[x]\ny = 1\n"));
        let fresh = update_profile("", "berth", &key);
        assert!(fresh.starts_with("[berth]\naws_access_key_id = AKIANEW"));
    }
}
