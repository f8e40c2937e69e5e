//! ECR lifecycle policies: parsing and validating the policy text, evaluating its rules against a
//! repository's images (a pure function), and applying the result (expiring images).
//!
//! Policy text (ECR user guide, "Lifecycle policy properties"):
//! `{"rules":[{"rulePriority":1,"description":"..","selection":{"tagStatus":"tagged|untagged|any",
//! "tagPrefixList":[..]|"tagPatternList":[..],"countType":"imageCountMoreThan|sinceImagePushed",
//! "countUnit":"days","countNumber":N},"action":{"type":"expire"}}]}`.
//!
//! Evaluation, as ECR documents it:
//! - rules run from the lowest `rulePriority` up; `tagged` rules select images having, for every
//!   entry of `tagPrefixList` (or `tagPatternList`, `*` wildcards), a tag that matches it;
//!   `untagged` selects images without tags; `any` selects all;
//! - `imageCountMoreThan N` keeps the N most recently pushed selected images and expires the rest;
//!   `sinceImagePushed N days` expires selected images pushed more than N days ago;
//! - an image is expired by at most one rule, and an image that matched the selection of a rule
//!   is never expired by a later (lower-priority) rule, though later rules still count it.
//!
//! Images an index of the repository references (the platform manifests of a multi-arch image)
//! are not candidates: they go with their index.

use berth_store::{Expect, Op, StoreError, StoreExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::images::Reference;
use crate::records::KIND_LIFECYCLE;
use crate::wildcard;
use crate::{Registry, RegistryError};

/// Which images a rule selects by their tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSelection {
    /// Images with tags matching every prefix.
    Prefixes(Vec<String>),
    /// Images with tags matching every wildcard pattern.
    Patterns(Vec<String>),
    /// Images without tags.
    Untagged,
    /// Every image.
    Any,
}

/// How a rule picks the images to expire among those it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Keep this many most recently pushed images, expire the rest.
    MoreThan(u64),
    /// Expire images pushed more than this many days ago.
    SinceDays(u64),
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub priority: i64,
    pub selection: TagSelection,
    pub count: Count,
}

/// A validated policy, rules ordered by priority (lowest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// An image as lifecycle evaluation sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub digest: String,
    pub tags: Vec<String>,
    /// Epoch seconds.
    pub pushed_at: f64,
}

/// The stored policy of a repository (kind `ecr.lifecycle`, key `<name>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    pub lifecycle_policy_text: String,
    /// Epoch seconds of the last evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated_at: Option<f64>,
}

/// One image a preview would expire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewResult {
    pub image_digest: String,
    pub image_tags: Vec<String>,
    pub image_pushed_at: f64,
    pub applied_rule_priority: i64,
}

/// The last preview of a repository (kind `ecr.lifecycle-preview`, key `<name>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewRecord {
    pub lifecycle_policy_text: String,
    pub results: Vec<PreviewResult>,
}

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| format!("'{what}' must hold non-empty strings"))
            })
            .collect(),
        Some(_) => Err(format!("'{what}' must be a list of strings")),
    }
}

/// Parses and validates policy text; `Err` carries the reason (sent as `InvalidParameterException`
/// "Lifecycle policy validation failure: <reason>").
pub fn parse(text: &str) -> Result<Policy, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let rules = v
        .get("rules")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or("the policy must have a non-empty 'rules' list")?;
    let mut out: Vec<Rule> = Vec::new();
    let mut untagged_rules = 0;
    for r in rules {
        let priority = r
            .get("rulePriority")
            .and_then(Value::as_i64)
            .filter(|p| *p >= 1)
            .ok_or("'rulePriority' must be an integer of at least 1")?;
        if out.iter().any(|o| o.priority == priority) {
            return Err(format!(
                "rulePriority {priority} is used by more than one rule"
            ));
        }
        let action = r
            .get("action")
            .and_then(|a| a.get("type"))
            .and_then(Value::as_str)
            .ok_or(format!("rule {priority}: 'action.type' is required"))?;
        if !action.eq_ignore_ascii_case("expire") {
            return Err(format!(
                "rule {priority}: action type {action:?} is not supported (only 'expire')"
            ));
        }
        let sel = r
            .get("selection")
            .filter(|s| s.is_object())
            .ok_or(format!("rule {priority}: 'selection' is required"))?;
        let status = sel
            .get("tagStatus")
            .and_then(Value::as_str)
            .ok_or(format!("rule {priority}: 'tagStatus' is required"))?
            .to_ascii_lowercase();
        let prefixes = strings(sel.get("tagPrefixList"), "tagPrefixList")?;
        let patterns = strings(sel.get("tagPatternList"), "tagPatternList")?;
        let selection = match status.as_str() {
            "tagged" => match (prefixes.is_empty(), patterns.is_empty()) {
                (false, true) => TagSelection::Prefixes(prefixes),
                (true, false) => {
                    if let Some(p) = patterns.iter().find(|p| p.matches('*').count() > 4) {
                        return Err(format!(
                            "rule {priority}: tag pattern {p:?} has more than 4 wildcards"
                        ));
                    }
                    TagSelection::Patterns(patterns)
                }
                _ => {
                    return Err(format!(
                        "rule {priority}: tagStatus 'tagged' needs exactly one of tagPrefixList or tagPatternList"
                    ))
                }
            },
            "untagged" | "any" if !prefixes.is_empty() || !patterns.is_empty() => {
                return Err(format!(
                    "rule {priority}: tagPrefixList and tagPatternList are only allowed with tagStatus 'tagged'"
                ))
            }
            "untagged" => {
                untagged_rules += 1;
                TagSelection::Untagged
            }
            "any" => TagSelection::Any,
            other => {
                return Err(format!(
                    "rule {priority}: tagStatus {other:?} must be tagged, untagged or any"
                ))
            }
        };
        let number = sel
            .get("countNumber")
            .and_then(Value::as_u64)
            .filter(|n| *n >= 1)
            .ok_or(format!(
                "rule {priority}: 'countNumber' must be an integer of at least 1"
            ))?;
        let unit = sel.get("countUnit").and_then(Value::as_str);
        let count = match sel.get("countType").and_then(Value::as_str) {
            Some("imageCountMoreThan") if unit.is_none() => Count::MoreThan(number),
            Some("imageCountMoreThan") => {
                return Err(format!(
                    "rule {priority}: countUnit is not allowed with countType imageCountMoreThan"
                ))
            }
            Some("sinceImagePushed") if unit == Some("days") => Count::SinceDays(number),
            Some("sinceImagePushed") => {
                return Err(format!(
                    "rule {priority}: countType sinceImagePushed needs countUnit 'days'"
                ))
            }
            _ => {
                return Err(format!(
                    "rule {priority}: countType must be imageCountMoreThan or sinceImagePushed"
                ))
            }
        };
        out.push(Rule {
            priority,
            selection,
            count,
        });
    }
    if untagged_rules > 1 {
        return Err("only one rule may select untagged images".into());
    }
    out.sort_by_key(|r| r.priority);
    if let Some(pos) = out.iter().position(|r| r.selection == TagSelection::Any) {
        if pos != out.len() - 1 {
            return Err("a rule with tagStatus 'any' must have the highest rulePriority".into());
        }
    }
    Ok(Policy { rules: out })
}

fn selects(sel: &TagSelection, tags: &[String]) -> bool {
    match sel {
        TagSelection::Any => true,
        TagSelection::Untagged => tags.is_empty(),
        TagSelection::Prefixes(ps) => ps.iter().all(|p| tags.iter().any(|t| t.starts_with(p))),
        TagSelection::Patterns(ps) => ps
            .iter()
            .all(|p| tags.iter().any(|t| wildcard::matches(p, t))),
    }
}

/// The images `policy` expires among `images` at time `now` (epoch seconds), each with the
/// priority of the rule that expires it, in rule order and oldest first within a rule.
pub fn evaluate(policy: &Policy, images: &[Candidate], now: f64) -> Vec<(Candidate, i64)> {
    let mut claimed = vec![false; images.len()];
    let mut expired = Vec::new();
    for rule in &policy.rules {
        let mut selected: Vec<usize> = (0..images.len())
            .filter(|&i| selects(&rule.selection, &images[i].tags))
            .collect();
        // Newest first; ties by digest so the result is deterministic.
        selected.sort_by(|&a, &b| {
            images[b]
                .pushed_at
                .total_cmp(&images[a].pushed_at)
                .then_with(|| images[a].digest.cmp(&images[b].digest))
        });
        let doomed: Vec<usize> = match rule.count {
            Count::MoreThan(n) => selected.iter().skip(n as usize).copied().collect(),
            Count::SinceDays(d) => selected
                .iter()
                .copied()
                .filter(|&i| images[i].pushed_at < now - d as f64 * 86400.0)
                .collect(),
        };
        for &i in doomed.iter().rev() {
            if !claimed[i] {
                expired.push((images[i].clone(), rule.priority));
            }
        }
        for i in selected {
            claimed[i] = true;
        }
    }
    expired
}

impl Registry {
    /// The lifecycle candidates of `repo`: its images with their tags, without the manifests an
    /// index of the repository references.
    pub async fn lifecycle_candidates(&self, repo: &str) -> Result<Vec<Candidate>, RegistryError> {
        let children = self.index_parents(repo).await?;
        Ok(crate::ecr::images_with_tags(self, repo)
            .await?
            .into_iter()
            .filter(|(i, _)| !children.contains_key(&i.digest))
            .map(|(i, tags)| Candidate {
                digest: i.digest,
                tags,
                pushed_at: i.pushed_at,
            })
            .collect())
    }

    /// Evaluates `repo`'s lifecycle policy now and deletes the images it expires (each with its
    /// tags, atomically per image), then records `lastEvaluatedAt`. Returns the expired images'
    /// digests; none when the repository has no policy. Called after every push and by
    /// [`Registry::run_maintenance`].
    pub async fn apply_lifecycle(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let Some((record, rev)) = self
            .store
            .get_json::<PolicyRecord>(KIND_LIFECYCLE, repo)
            .await?
        else {
            return Ok(Vec::new());
        };
        let Ok(policy) = parse(&record.lifecycle_policy_text) else {
            return Ok(Vec::new());
        };
        let now = berth_core::epoch_now();
        let mut gone = Vec::new();
        for (c, priority) in evaluate(&policy, &self.lifecycle_candidates(repo).await?, now) {
            let d = Digest::parse(&c.digest)?;
            match self.delete_manifest(repo, &Reference::Digest(d)).await {
                Ok(()) => {
                    tracing::info!(repo, digest = %c.digest, rule = priority, "lifecycle policy expired image");
                    gone.push(c.digest);
                }
                Err(RegistryError::ManifestUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let updated = PolicyRecord {
            last_evaluated_at: Some(now),
            ..record
        };
        match self
            .store
            .commit(vec![Op::put(
                KIND_LIFECYCLE,
                repo,
                &updated,
                Expect::Revision(rev),
            )?])
            .await
        {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(gone),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(d: &str, tags: &[&str], age_days: f64) -> Candidate {
        Candidate {
            digest: d.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: 1_000_000.0 - age_days * 86400.0,
        }
    }

    fn expired(policy: &str, images: &[Candidate]) -> Vec<(String, i64)> {
        let p = parse(policy).unwrap();
        evaluate(&p, images, 1_000_000.0)
            .into_iter()
            .map(|(c, r)| (c.digest, r))
            .collect()
    }

    #[test]
    fn validation() {
        let ok = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;
        assert!(parse(ok).is_ok());
        for bad in [
            "{",
            r#"{"rules":[]}"#,
            // tagged without a list
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
            // untagged with a list
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
            // sinceImagePushed without unit
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countNumber":1},"action":{"type":"expire"}}]}"#,
            // countNumber 0
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":0},"action":{"type":"expire"}}]}"#,
            // duplicate priority
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
            // any not last
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},{"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
            // five wildcards
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["a*b*c*d*e*f"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
            // unknown action
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"delete"}}]}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn count_and_age_rules() {
        let images = vec![
            img("u-old", &[], 30.0),
            img("u-new", &[], 1.0),
            img("v1", &["v1"], 5.0),
            img("v2", &["v2"], 4.0),
            img("v3", &["v3", "latest"], 3.0),
            img("prod-a", &["prod-a"], 40.0),
        ];
        // Untagged older than 14 days.
        let p = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;
        assert_eq!(expired(p, &images), vec![("u-old".into(), 1)]);
        // Keep the 2 newest v* images.
        let p = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}]}"#;
        assert_eq!(expired(p, &images), vec![("v1".into(), 1)]);
        // Pattern list: every pattern must match some tag.
        let p = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["v*","lat*"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
        assert!(expired(p, &images).is_empty());
        // Higher-priority match protects: prod-* is kept by rule 1 (count 5), so the 'any' rule
        // keeping 1 image may not expire it, but still counts it.
        let p = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":5},"action":{"type":"expire"}},{"rulePriority":9,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
        let mut got = expired(p, &images);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("u-old".to_string(), 9),
                ("v1".into(), 9),
                ("v2".into(), 9),
                ("v3".into(), 9)
            ]
        );
    }
}
