//! Long-format ECS and ECR ARNs (AWS: "Amazon Resource Names", ECS long ARN format).

/// Where ARNs are minted: partition `aws`, a region and an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub region: String,
    pub account: String,
}

impl Scope {
    /// `arn:aws:ecs:{region}:{account}:cluster/{name}`
    pub fn cluster(&self, name: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:cluster/{name}",
            self.region, self.account
        )
    }
    /// `arn:aws:ecs:{region}:{account}:task-definition/{family}:{revision}`
    pub fn task_definition(&self, family: &str, revision: u32) -> String {
        format!(
            "arn:aws:ecs:{}:{}:task-definition/{family}:{revision}",
            self.region, self.account
        )
    }
    /// `arn:aws:ecs:{region}:{account}:task/{cluster}/{id}`
    pub fn task(&self, cluster: &str, id: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:task/{cluster}/{id}",
            self.region, self.account
        )
    }
    /// `arn:aws:ecs:{region}:{account}:container/{cluster}/{task-id}/{uuid}`
    pub fn container(&self, cluster: &str, task_id: &str, uuid: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:container/{cluster}/{task_id}/{uuid}",
            self.region, self.account
        )
    }
    /// `arn:aws:ecr:{region}:{account}:repository/{name}`
    pub fn repository(&self, name: &str) -> String {
        format!(
            "arn:aws:ecr:{}:{}:repository/{name}",
            self.region, self.account
        )
    }
    /// `arn:aws:logs:{region}:{account}:log-group:{name}:*`
    pub fn log_group(&self, name: &str) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{name}:*",
            self.region, self.account
        )
    }
    /// `arn:aws:logs:{region}:{account}:log-group:{group}:log-stream:{stream}`
    pub fn log_stream(&self, group: &str, stream: &str) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{group}:log-stream:{stream}",
            self.region, self.account
        )
    }
}

/// The last `/`-separated part of an ARN or the value itself when it is not an ARN
/// (`arn:...:cluster/demo` and `demo` both give `demo`).
pub fn short_name(arn_or_name: &str) -> &str {
    if arn_or_name.starts_with("arn:") {
        arn_or_name.rsplit('/').next().unwrap_or(arn_or_name)
    } else {
        arn_or_name
    }
}

/// Splits a task-definition reference (`family`, `family:rev` or a task-definition ARN) into
/// family and optional revision. Returns `None` when the revision is not a positive integer.
pub fn task_definition_ref(s: &str) -> Option<(String, Option<u32>)> {
    let s = if s.starts_with("arn:") {
        s.split_once(":task-definition/")?.1
    } else {
        s
    };
    match s.rsplit_once(':') {
        Some((family, rev)) => {
            let rev: u32 = rev.parse().ok().filter(|r| *r > 0)?;
            Some((family.to_string(), Some(rev)))
        }
        None => Some((s.to_string(), None)),
    }
}

/// A new 32-hex-digit task id as ECS uses.
pub fn new_task_id(random: u128) -> String {
    format!("{random:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        assert_eq!(short_name("arn:aws:ecs:us-east-1:0:cluster/demo"), "demo");
        assert_eq!(short_name("demo"), "demo");
        assert_eq!(task_definition_ref("web:3"), Some(("web".into(), Some(3))));
        assert_eq!(task_definition_ref("web"), Some(("web".into(), None)));
        assert_eq!(
            task_definition_ref("arn:aws:ecs:us-east-1:0:task-definition/web:2"),
            Some(("web".into(), Some(2)))
        );
        assert_eq!(task_definition_ref("web:x"), None);
        assert_eq!(new_task_id(1).len(), 32);
    }
}
