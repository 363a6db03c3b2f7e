//! PID pressure for the node's PIDPressure condition: fewer than 5% of the PIDs left (memory and
//! disk pressure are the eviction manager's, `crate::eviction`). Pure judgement over figures
//! read from /proc.

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub pids_used: u64,
    pub pid_max: u64,
}

/// Whether fewer than 5% of the PIDs are left; unknown figures are no pressure.
pub fn pid_pressure(f: &Figures) -> bool {
    let left = f.pid_max.saturating_sub(f.pids_used);
    f.pid_max > 0 && left * 100 < f.pid_max * 5
}

/// The number of processes and threads, the fourth field of /proc/loadavg ("running/total").
pub fn pids_used(loadavg: &str) -> u64 {
    loadavg.split_whitespace().nth(3).and_then(|f| f.split('/').nth(1)?.parse().ok()).unwrap_or(0)
}

/// Reads the figures; what cannot be read counts as no pressure.
pub fn read() -> Figures {
    Figures {
        pids_used: pids_used(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default()),
        pid_max: std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_pressure_below_five_percent_left() {
        assert!(!pid_pressure(&Figures { pids_used: 100, pid_max: 4_194_304 }));
        assert!(pid_pressure(&Figures { pids_used: 4_000_000, pid_max: 4_194_304 }));
        assert!(!pid_pressure(&Figures::default()), "unknown figures are no pressure");
    }

    #[test]
    fn proc_figures_parse() {
        assert_eq!(pids_used("0.10 0.20 0.30 2/345 6789\n"), 345);
    }
}
