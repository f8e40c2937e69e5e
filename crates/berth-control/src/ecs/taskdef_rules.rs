//! What RegisterTaskDefinition and RunTask check beyond shapes: value ranges of container
//! definitions (ECS API reference, `ContainerDefinition`, `PortMapping`, `HealthCheck`), container
//! dependencies, and the settings Fargate refuses (ECS developer guide, "Amazon ECS task definition
//! differences for the Fargate launch type"): host `sourcePath` volumes, privileged containers,
//! `pidMode: host`, `ipcMode`, devices and every added Linux capability except `SYS_PTRACE`.
//!
//! Every check returns AWS's `ClientException` with its message; nothing is silently ignored.

use std::collections::{HashMap, HashSet};

use berth_api::ecs::{ContainerDefinition, RegisterTaskDefinitionRequest, TaskDefinition};
use berth_api::proto::AwsError;
use berth_core::status::ContainerCondition;
use serde_json::Value;

/// The only capability Fargate lets a container add (`linuxParameters.capabilities.add`).
pub(crate) const FARGATE_ALLOWED_CAP_ADD: &str = "SYS_PTRACE";

/// Largest `stopTimeout` in seconds (ECS: "the max stop timeout value is 120 seconds").
pub(crate) const MAX_STOP_TIMEOUT_SECS: i64 = 120;

/// Smallest container `memory`/`memoryReservation` in MiB that ECS accepts.
pub(crate) const MIN_CONTAINER_MEMORY_MIB: i64 = 6;

fn err(msg: impl Into<String>) -> AwsError {
    AwsError::client_exception(msg)
}

/// Checks the value ranges of every container definition and their `dependsOn` graph.
///
/// Errors: `ClientException` naming the container and the setting (negative or out-of-range
/// cpu units, memory MiB, ports, `stopTimeout`, health check timings; a dependency on itself, on
/// an unknown container, with an unknown condition, or a cycle).
pub(crate) fn check_containers(containers: &[ContainerDefinition]) -> Result<(), AwsError> {
    for c in containers {
        let name = c.name.as_deref().unwrap_or("");
        let bad = |what: String| err(format!("Invalid setting for container '{name}'. {what}"));
        if let Some(cpu) = c.cpu {
            if !(0..=10240 * 4).contains(&cpu) {
                return Err(bad(format!(
                    "The 'cpu' value {cpu} must be between 0 and 40960 CPU units."
                )));
            }
        }
        for (field, v) in [
            ("memory", c.memory),
            ("memoryReservation", c.memory_reservation),
        ] {
            if let Some(m) = v {
                if m < MIN_CONTAINER_MEMORY_MIB {
                    return Err(bad(format!(
                        "The '{field}' value {m} must be at least {MIN_CONTAINER_MEMORY_MIB} MiB."
                    )));
                }
            }
        }
        if let (Some(m), Some(r)) = (c.memory, c.memory_reservation) {
            if r > m {
                return Err(bad(format!(
                    "The 'memoryReservation' value {r} must be less than or equal to the 'memory' value {m}."
                )));
            }
        }
        if let Some(t) = c.stop_timeout {
            if !(0..=MAX_STOP_TIMEOUT_SECS).contains(&t) {
                return Err(bad(format!(
                    "The 'stopTimeout' value {t} must be between 0 and {MAX_STOP_TIMEOUT_SECS} seconds."
                )));
            }
        }
        for p in c.port_mappings.iter().flatten() {
            check_port_mapping(p).map_err(bad)?;
        }
        if let Some(h) = &c.health_check {
            for (field, v, lo, hi) in [
                ("interval", h.interval, 5, 300),
                ("timeout", h.timeout, 2, 60),
                ("retries", h.retries, 1, 10),
                ("startPeriod", h.start_period, 0, 300),
            ] {
                if let Some(v) = v {
                    if !(lo..=hi).contains(&v) {
                        return Err(bad(format!(
                            "Health check '{field}' value {v} must be between {lo} and {hi}."
                        )));
                    }
                }
            }
            if h.command.is_empty() {
                return Err(bad("Health check 'command' must not be empty.".into()));
            }
        }
    }
    check_dependencies(containers)
}

/// One `portMappings` entry: `containerPort`/`hostPort` integers in 0..=65535, `protocol`
/// `tcp` or `udp`.
fn check_port_mapping(p: &Value) -> Result<(), String> {
    for field in ["containerPort", "hostPort"] {
        match p.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_i64() {
                Some(n) if (0..=65535).contains(&n) => {}
                _ => {
                    return Err(format!(
                        "Port mapping '{field}' value {v} must be an integer between 0 and 65535."
                    ))
                }
            },
        }
    }
    if let Some(proto) = p.get("protocol").and_then(Value::as_str) {
        if !matches!(proto, "tcp" | "udp") {
            return Err(format!(
                "Port mapping 'protocol' value {proto} must be tcp or udp."
            ));
        }
    }
    Ok(())
}

/// `dependsOn`: known containers only, never itself, known conditions, no cycles (ECS starts
/// containers in dependency order, so a cycle would leave every member PENDING forever).
fn check_dependencies(containers: &[ContainerDefinition]) -> Result<(), AwsError> {
    let names: HashSet<&str> = containers
        .iter()
        .filter_map(|c| c.name.as_deref())
        .collect();
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in containers {
        let name = c.name.as_deref().unwrap_or("");
        for d in c.depends_on.iter().flatten() {
            let dep = d.container_name.as_str();
            if dep == name {
                return Err(err(format!(
                    "Invalid setting for container '{name}'. A container cannot depend on itself."
                )));
            }
            if !names.contains(dep) {
                return Err(err(format!(
                    "Invalid setting for container '{name}'. dependsOn references container '{dep}', which is not in the task definition."
                )));
            }
            if d.condition.parse::<ContainerCondition>().is_err() {
                return Err(err(format!(
                    "Invalid setting for container '{name}'. dependsOn condition '{}' is not one of START, COMPLETE, SUCCESS, HEALTHY.",
                    d.condition
                )));
            }
            edges.entry(name).or_default().push(dep);
        }
    }
    // Depth-first search for a cycle: 1 = on the current path, 2 = done.
    fn visit<'a>(
        n: &'a str,
        edges: &HashMap<&'a str, Vec<&'a str>>,
        state: &mut HashMap<&'a str, u8>,
    ) -> Option<&'a str> {
        match state.get(n) {
            Some(1) => return Some(n),
            Some(_) => return None,
            None => {}
        }
        state.insert(n, 1);
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state) {
                return Some(c);
            }
        }
        state.insert(n, 2);
        None
    }
    let mut state = HashMap::new();
    for n in &names {
        if let Some(c) = visit(n, &edges, &mut state) {
            return Err(err(format!(
                "Invalid setting for container '{c}'. dependsOn has a cycle."
            )));
        }
    }
    Ok(())
}

/// Why a task definition cannot run on Fargate, as Fargate words it; `None` when it can.
/// Checks task `volumes[].host.sourcePath`, `pidMode`, `ipcMode` and every container's
/// `privileged`, `linuxParameters.devices` and `linuxParameters.capabilities.add`.
pub(crate) fn fargate_incompatibility(
    volumes: &[Value],
    pid_mode: Option<&str>,
    ipc_mode: Option<&str>,
    containers: &[ContainerDefinition],
) -> Option<String> {
    if volumes.iter().any(|v| {
        v.get("host")
            .and_then(|h| h.get("sourcePath"))
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty())
    }) {
        return Some("Fargate compatible task definitions do not support sourcePath".into());
    }
    if pid_mode.is_some_and(|m| m != "task") {
        return Some("Tasks using the Fargate launch type only support pidMode 'task'.".into());
    }
    if ipc_mode.is_some() {
        return Some("Tasks using the Fargate launch type do not support ipcMode.".into());
    }
    for c in containers {
        if c.privileged == Some(true) {
            return Some("Privileged containers are not supported on Fargate.".into());
        }
        let lp = c.extra.get("linuxParameters");
        if lp
            .and_then(|l| l.get("devices"))
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty())
        {
            return Some("Fargate compatible task definitions do not support devices".into());
        }
        let added: Vec<&str> = lp
            .and_then(|l| l.get("capabilities"))
            .and_then(|c| c.get("add"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|c| c.trim_start_matches("CAP_") != FARGATE_ALLOWED_CAP_ADD)
            .collect();
        if !added.is_empty() {
            return Some(format!(
                "Fargate compatible task definitions only support the {FARGATE_ALLOWED_CAP_ADD} kernel capability; capabilities [{}] in container '{}' are not supported.",
                added.join(", "),
                c.name.as_deref().unwrap_or("")
            ));
        }
    }
    None
}

/// [`fargate_incompatibility`] for a registration request.
pub(crate) fn request_fargate_incompatibility(
    req: &RegisterTaskDefinitionRequest,
) -> Option<String> {
    fargate_incompatibility(
        req.volumes.as_deref().unwrap_or_default(),
        req.extra.get("pidMode").and_then(Value::as_str),
        req.extra.get("ipcMode").and_then(Value::as_str),
        &req.container_definitions,
    )
}

/// What berth's agent cannot honour on any launch type yet (so a task asking for it is refused
/// with a message instead of running without it): `pidMode: host`, `ipcMode: host|task`, and
/// `linuxParameters.devices`.
pub(crate) fn unsupported_by_agent(
    pid_mode: Option<&str>,
    ipc_mode: Option<&str>,
    containers: &[ContainerDefinition],
) -> Option<String> {
    if pid_mode.is_some_and(|m| m != "task") {
        return Some(format!(
            "berth does not support pidMode '{}' yet.",
            pid_mode.unwrap_or("")
        ));
    }
    if let Some(m) = ipc_mode.filter(|m| *m != "none") {
        return Some(format!("berth does not support ipcMode '{m}' yet."));
    }
    for c in containers {
        if c.extra
            .get("linuxParameters")
            .and_then(|l| l.get("devices"))
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty())
        {
            return Some(format!(
                "berth does not support linuxParameters.devices (container '{}') yet.",
                c.name.as_deref().unwrap_or("")
            ));
        }
    }
    None
}

/// Whether a registered task definition can start on `launch_type`: on FARGATE nothing
/// [`fargate_incompatibility`] names (also for revisions registered before these checks); on
/// every launch type nothing in [`unsupported_by_agent`].
///
/// Errors: `ClientException` with the reason.
pub(crate) fn check_runnable(td: &TaskDefinition, launch_type: &str) -> Result<(), AwsError> {
    let pid = td.extra.get("pidMode").and_then(Value::as_str);
    let ipc = td.extra.get("ipcMode").and_then(Value::as_str);
    if launch_type == "FARGATE" {
        if let Some(why) = fargate_incompatibility(&td.volumes, pid, ipc, &td.container_definitions)
        {
            return Err(err(why));
        }
    }
    match unsupported_by_agent(pid, ipc, &td.container_definitions) {
        Some(why) => Err(err(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs(v: Value) -> Vec<ContainerDefinition> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ranges_are_checked() {
        for bad in [
            json!([{"name":"a","image":"x","cpu":-1}]),
            json!([{"name":"a","image":"x","memory":-5}]),
            json!([{"name":"a","image":"x","memory":4}]),
            json!([{"name":"a","image":"x","memory":64,"memoryReservation":128}]),
            json!([{"name":"a","image":"x","stopTimeout":-1}]),
            json!([{"name":"a","image":"x","stopTimeout":121}]),
            json!([{"name":"a","image":"x","portMappings":[{"containerPort":-80}]}]),
            json!([{"name":"a","image":"x","portMappings":[{"containerPort":80,"hostPort":70000}]}]),
            json!([{"name":"a","image":"x","portMappings":[{"containerPort":80,"protocol":"sctp"}]}]),
            json!([{"name":"a","image":"x","healthCheck":{"command":["CMD","true"],"interval":1}}]),
            json!([{"name":"a","image":"x","dependsOn":[{"containerName":"a","condition":"START"}]}]),
            json!([{"name":"a","image":"x","dependsOn":[{"containerName":"zz","condition":"START"}]}]),
            json!([{"name":"a","image":"x","dependsOn":[{"containerName":"b","condition":"START"}]},
                   {"name":"b","image":"x","dependsOn":[{"containerName":"a","condition":"START"}]}]),
            json!([{"name":"a","image":"x","dependsOn":[{"containerName":"b","condition":"WHENEVER"}]},
                   {"name":"b","image":"x"}]),
        ] {
            let e = check_containers(&defs(bad.clone())).expect_err(&bad.to_string());
            assert_eq!(e.error_type, "ClientException", "{bad}");
        }
        check_containers(&defs(json!([
            {"name":"a","image":"x","cpu":0,"memory":64,"memoryReservation":32,"stopTimeout":30,
             "portMappings":[{"containerPort":80,"hostPort":80,"protocol":"tcp"}],
             "dependsOn":[{"containerName":"b","condition":"HEALTHY"}]},
            {"name":"b","image":"x","healthCheck":{"command":["CMD","true"],"interval":5}}
        ])))
        .unwrap();
    }

    #[test]
    fn fargate_refuses_host_reaching_settings() {
        let plain = defs(json!([{"name":"a","image":"x"}]));
        assert!(fargate_incompatibility(&[], None, None, &plain).is_none());
        assert!(fargate_incompatibility(&[], Some("task"), None, &plain).is_none());
        let host_vol = [json!({"name":"root","host":{"sourcePath":"/"}})];
        assert!(fargate_incompatibility(&host_vol, None, None, &plain)
            .unwrap()
            .contains("sourcePath"));
        let scratch = [json!({"name":"scratch","host":{}})];
        assert!(fargate_incompatibility(&scratch, None, None, &plain).is_none());
        assert!(fargate_incompatibility(&[], Some("host"), None, &plain).is_some());
        assert!(fargate_incompatibility(&[], None, Some("host"), &plain).is_some());
        for c in [
            json!([{"name":"a","image":"x","privileged":true}]),
            json!([{"name":"a","image":"x","linuxParameters":{"devices":[{"hostPath":"/dev/sda"}]}}]),
            json!([{"name":"a","image":"x","linuxParameters":{"capabilities":{"add":["SYS_ADMIN"]}}}]),
            json!([{"name":"a","image":"x","linuxParameters":{"capabilities":{"add":["SYS_PTRACE","NET_ADMIN"]}}}]),
        ] {
            assert!(
                fargate_incompatibility(&[], None, None, &defs(c.clone())).is_some(),
                "{c}"
            );
        }
        let ptrace = defs(
            json!([{"name":"a","image":"x","linuxParameters":{"capabilities":{"add":["SYS_PTRACE"],"drop":["ALL"]}}}]),
        );
        assert!(fargate_incompatibility(&[], None, None, &ptrace).is_none());
    }
}
