//! Fargate task sizes (botocore `ecs/2014-11-13` RegisterTaskDefinitionRequest.memory docs).

/// Parses an ECS task-level CPU value: `"256"`, `"1024"`, `"1 vCPU"`, `".25 vcpu"` -> CPU units
/// (1024 = 1 vCPU). Returns `None` for anything else.
pub fn parse_cpu(s: &str) -> Option<u32> {
    let t = s.trim().to_ascii_lowercase();
    if let Some(v) = t.strip_suffix("vcpu") {
        let f: f64 = v.trim().parse().ok()?;
        let units = f * 1024.0;
        return (units > 0.0 && units.fract() == 0.0).then_some(units as u32);
    }
    t.parse().ok().filter(|v| *v > 0)
}

/// Parses an ECS task-level memory value: `"512"` (MiB), `"1GB"`, `"0.5 gb"` -> MiB.
pub fn parse_memory(s: &str) -> Option<u32> {
    let t = s.trim().to_ascii_lowercase();
    if let Some(v) = t.strip_suffix("gb") {
        let f: f64 = v.trim().parse().ok()?;
        let mib = f * 1024.0;
        return (mib > 0.0 && mib.fract() == 0.0).then_some(mib as u32);
    }
    if let Some(v) = t.strip_suffix("mb") {
        return v.trim().parse().ok().filter(|v| *v > 0);
    }
    t.parse().ok().filter(|v| *v > 0)
}

/// True when `cpu` units with `memory` MiB is a size Fargate offers.
pub fn valid_size(cpu: u32, memory: u32) -> bool {
    let (lo, hi, step) = match cpu {
        256 => return matches!(memory, 512 | 1024 | 2048),
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122880, 8192),
        _ => return false,
    };
    memory >= lo && memory <= hi && (memory - lo).is_multiple_of(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert!(valid_size(256, 512));
        assert!(!valid_size(256, 4096));
        assert!(valid_size(1024, 3072));
        assert!(!valid_size(1024, 1024));
        assert!(valid_size(8192, 20480));
        assert!(!valid_size(8192, 17408));
        assert!(!valid_size(300, 512));
        assert_eq!(parse_cpu("1 vCPU"), Some(1024));
        assert_eq!(parse_cpu(".25 vcpu"), Some(256));
        assert_eq!(parse_memory("1GB"), Some(1024));
        assert_eq!(parse_memory("512"), Some(512));
        assert_eq!(parse_memory("abc"), None);
    }
}
