//! Container start order (ECS `dependsOn`): whether a container may start given the state of
//! the containers it depends on. Conditions: START (the dependency started), COMPLETE (it
//! exited), SUCCESS (it exited 0), HEALTHY (its health check passed).

use berth_api::agent::ContainerSpec;

/// Where a container is in its life, as far as ordering cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its dependencies.
    Pending,
    /// Asked to start, not yet running.
    Starting,
    Running,
    Exited(i32),
    /// Never started (start failed, dependency impossible, task stopping).
    NotStarted,
}

/// What to do with a pending container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Wait,
    Start,
    /// It can never start; the reason says why.
    Never(String),
}

/// Decides for container `idx`; `health[i]` is container i's health status.
pub fn decide(
    idx: usize,
    containers: &[ContainerSpec],
    phases: &[Phase],
    health: &[&str],
) -> Decision {
    let mut wait = false;
    for d in &containers[idx].depends_on {
        let Some(j) = containers.iter().position(|c| c.name == d.container_name) else {
            return Decision::Never(format!(
                "dependency {} is not a container of the task",
                d.container_name
            ));
        };
        let name = &d.container_name;
        let ok = match (d.condition.as_str(), phases[j]) {
            (_, Phase::NotStarted) => {
                return Decision::Never(format!("dependency {name} did not start"))
            }
            ("START", Phase::Running | Phase::Exited(_)) => true,
            ("COMPLETE", Phase::Exited(_)) => true,
            ("SUCCESS", Phase::Exited(0)) => true,
            ("SUCCESS", Phase::Exited(c)) => {
                return Decision::Never(format!(
                    "dependency {name} exited with code {c} (condition SUCCESS)"
                ))
            }
            ("HEALTHY", Phase::Exited(_)) => {
                return Decision::Never(format!("dependency {name} exited before becoming healthy"))
            }
            ("HEALTHY", Phase::Running) if health[j] == crate::health::HEALTHY => true,
            ("HEALTHY", Phase::Running) if health[j] == crate::health::UNHEALTHY => {
                return Decision::Never(format!("dependency {name} is unhealthy"))
            }
            ("START" | "COMPLETE" | "SUCCESS" | "HEALTHY", _) => false,
            (other, _) => return Decision::Never(format!("unknown dependency condition {other}")),
        };
        wait |= !ok;
    }
    if wait {
        Decision::Wait
    } else {
        Decision::Start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::agent::ContainerDependencySpec;

    fn c(name: &str, deps: &[(&str, &str)]) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            depends_on: deps
                .iter()
                .map(|(n, k)| ContainerDependencySpec {
                    container_name: n.to_string(),
                    condition: k.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn conditions() {
        let cs = vec![c("db", &[]), c("app", &[("db", "HEALTHY")])];
        let h = |s: &'static str| vec![s, "UNKNOWN"];
        assert_eq!(
            decide(0, &cs, &[Phase::Pending, Phase::Pending], &h("UNKNOWN")),
            Decision::Start
        );
        assert_eq!(
            decide(1, &cs, &[Phase::Running, Phase::Pending], &h("UNKNOWN")),
            Decision::Wait
        );
        assert_eq!(
            decide(1, &cs, &[Phase::Running, Phase::Pending], &h("HEALTHY")),
            Decision::Start
        );
        assert!(matches!(
            decide(1, &cs, &[Phase::Running, Phase::Pending], &h("UNHEALTHY")),
            Decision::Never(_)
        ));
        assert!(matches!(
            decide(1, &cs, &[Phase::Exited(0), Phase::Pending], &h("UNKNOWN")),
            Decision::Never(_)
        ));

        let cs = vec![c("init", &[]), c("app", &[("init", "SUCCESS")])];
        let h = vec!["UNKNOWN", "UNKNOWN"];
        assert_eq!(
            decide(1, &cs, &[Phase::Running, Phase::Pending], &h),
            Decision::Wait
        );
        assert_eq!(
            decide(1, &cs, &[Phase::Exited(0), Phase::Pending], &h),
            Decision::Start
        );
        assert!(matches!(
            decide(1, &cs, &[Phase::Exited(3), Phase::Pending], &h),
            Decision::Never(_)
        ));

        let cs = vec![
            c("a", &[]),
            c("b", &[("a", "START")]),
            c("x", &[("a", "COMPLETE")]),
        ];
        let h = vec!["UNKNOWN"; 3];
        let p = [Phase::Starting, Phase::Pending, Phase::Pending];
        assert_eq!(decide(1, &cs, &p, &h), Decision::Wait);
        let p = [Phase::Running, Phase::Pending, Phase::Pending];
        assert_eq!(decide(1, &cs, &p, &h), Decision::Start);
        assert_eq!(decide(2, &cs, &p, &h), Decision::Wait);
        let p = [Phase::Exited(1), Phase::Pending, Phase::Pending];
        assert_eq!(decide(2, &cs, &p, &h), Decision::Start);
        let p = [Phase::NotStarted, Phase::Pending, Phase::Pending];
        assert!(matches!(decide(1, &cs, &p, &h), Decision::Never(_)));
        let cs = vec![c("a", &[("ghost", "START")])];
        assert!(matches!(
            decide(0, &cs, &[Phase::Pending], &["UNKNOWN"]),
            Decision::Never(_)
        ));
    }
}
