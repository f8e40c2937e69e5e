//! Container start order (ECS `dependsOn`): whether a container may start given the state of
//! the containers it depends on. Conditions: START (the dependency started), COMPLETE (it
//! exited), SUCCESS (it exited 0), HEALTHY (its health check passed).

use berth_api::agent::ContainerSpec;
use berth_core::status::ContainerCondition::{self, Complete, Healthy, Start, Success};
use berth_core::status::HealthStatus;

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
    health: &[HealthStatus],
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
        let ok = match (d.condition.parse::<ContainerCondition>(), phases[j]) {
            (_, Phase::NotStarted) => {
                return Decision::Never(format!("dependency {name} did not start"))
            }
            (Err(_), _) => {
                return Decision::Never(format!("unknown dependency condition {}", d.condition))
            }
            (Ok(Start), Phase::Running | Phase::Exited(_)) => true,
            (Ok(Complete), Phase::Exited(_)) => true,
            (Ok(Success), Phase::Exited(0)) => true,
            (Ok(Success), Phase::Exited(c)) => {
                return Decision::Never(format!(
                    "dependency {name} exited with code {c} (condition SUCCESS)"
                ))
            }
            (Ok(Healthy), Phase::Exited(_)) => {
                return Decision::Never(format!("dependency {name} exited before becoming healthy"))
            }
            (Ok(Healthy), Phase::Running) if health[j] == HealthStatus::Healthy => true,
            (Ok(Healthy), Phase::Running) if health[j] == HealthStatus::Unhealthy => {
                return Decision::Never(format!("dependency {name} is unhealthy"))
            }
            (Ok(_), _) => false,
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
        let h = |s: HealthStatus| vec![s, HealthStatus::Unknown];
        assert_eq!(
            decide(
                0,
                &cs,
                &[Phase::Pending, Phase::Pending],
                &h(HealthStatus::Unknown)
            ),
            Decision::Start
        );
        assert_eq!(
            decide(
                1,
                &cs,
                &[Phase::Running, Phase::Pending],
                &h(HealthStatus::Unknown)
            ),
            Decision::Wait
        );
        assert_eq!(
            decide(
                1,
                &cs,
                &[Phase::Running, Phase::Pending],
                &h(HealthStatus::Healthy)
            ),
            Decision::Start
        );
        assert!(matches!(
            decide(
                1,
                &cs,
                &[Phase::Running, Phase::Pending],
                &h(HealthStatus::Unhealthy)
            ),
            Decision::Never(_)
        ));
        assert!(matches!(
            decide(
                1,
                &cs,
                &[Phase::Exited(0), Phase::Pending],
                &h(HealthStatus::Unknown)
            ),
            Decision::Never(_)
        ));

        let cs = vec![c("init", &[]), c("app", &[("init", "SUCCESS")])];
        let h = vec![HealthStatus::Unknown; 2];
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
        let h = vec![HealthStatus::Unknown; 3];
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
            decide(0, &cs, &[Phase::Pending], &[HealthStatus::Unknown]),
            Decision::Never(_)
        ));
        let cs = vec![c("a", &[]), c("b", &[("a", "LATER")])];
        assert_eq!(
            decide(1, &cs, &[Phase::Running, Phase::Pending], &h),
            Decision::Never("unknown dependency condition LATER".into())
        );
    }
}
