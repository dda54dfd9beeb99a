//! How much memory a run may plan for when no `--memory-budget` is given: the device's free
//! memory at start, less a reserve for what shares it.

use candle_core::Device;

/// Share of the free memory left to others (the OS page cache, other processes, a display) when
/// the budget is taken from what is free; the planner's own `SAFETY_MARGIN` comes on top.
pub const AUTO_BUDGET_RESERVE: f64 = 0.10;

/// Host memory, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SystemMemory {
    pub total_bytes: u64,
    /// `MemAvailable`: what can be allocated without swapping.
    pub available_bytes: u64,
}

impl SystemMemory {
    /// None where `/proc/meminfo` is missing or unreadable (not Linux).
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/meminfo").ok()?)
    }

    /// `MemTotal` and `MemAvailable` of a `/proc/meminfo` text (values in kB).
    pub fn parse(meminfo: &str) -> Option<Self> {
        let field = |name: &str| {
            meminfo.lines().find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
                Some(kb * 1024)
            })
        };
        Some(Self {
            total_bytes: field("MemTotal")?,
            available_bytes: field("MemAvailable")?,
        })
    }
}

/// Free memory of `device` now: MemAvailable on the CPU, the driver's free count on CUDA (None
/// where it cannot be asked: the caller then asks for `--memory-budget`).
pub fn free_bytes(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => SystemMemory::read().map(|m| m.available_bytes),
        _ => crate::device::gpu_facts(device)
            .ok()
            .flatten()
            .map(|f| f.free_bytes),
    }
}

/// The budget a run plans for from `free` bytes.
pub fn auto_budget(free: u64) -> u64 {
    (free as f64 * (1.0 - AUTO_BUDGET_RESERVE)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       16318480 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n";
        let m = SystemMemory::parse(text).unwrap();
        assert_eq!(m.total_bytes, 16318480 * 1024);
        assert_eq!(m.available_bytes, 8000000 * 1024);
        assert!(SystemMemory::parse("MemTotal: 1 kB\n").is_none());
    }

    #[test]
    fn the_cpu_reports_free_memory_and_the_budget_keeps_a_reserve() {
        if let Some(free) = free_bytes(&Device::Cpu) {
            assert!(free > 0);
            assert!(auto_budget(free) < free);
        }
    }
}
