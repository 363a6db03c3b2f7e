//! What the runtime holds for one pod, as plain data: the input of planning and status.
//! `runtime` fills it from CRI; tests build it by hand.

/// Times are nanoseconds since the Unix epoch, as CRI reports them; 0 means "not yet".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedPod {
    pub sandboxes: Vec<ObservedSandbox>,
    pub containers: Vec<ObservedContainer>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedSandbox {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: i64,
    pub ip: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Exited,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedContainer {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: RunState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image: String,
    pub image_ref: String,
    /// The hash of the container spec it was created from (annotation set by nodelet).
    pub spec_hash: String,
    /// Its log file on the host, as the runtime writes it (empty when it names none).
    pub log_path: String,
}

impl ObservedPod {
    /// The newest sandbox, which is the pod's current one when it is ready.
    pub fn latest_sandbox(&self) -> Option<&ObservedSandbox> {
        self.sandboxes.iter().max_by_key(|s| (s.attempt, s.created_at))
    }

    pub fn ready_sandbox(&self) -> Option<&ObservedSandbox> {
        self.latest_sandbox().filter(|s| s.ready)
    }

    /// Instances of one container, newest first, across all sandboxes.
    pub fn instances(&self, name: &str) -> Vec<&ObservedContainer> {
        let mut found: Vec<&ObservedContainer> = self.containers.iter().filter(|c| c.name == name).collect();
        found.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
        found
    }

    pub fn latest(&self, name: &str) -> Option<&ObservedContainer> {
        self.instances(name).into_iter().next()
    }

    /// The newest instance of a container inside a given sandbox.
    pub fn latest_in(&self, name: &str, sandbox_id: &str) -> Option<&ObservedContainer> {
        self.instances(name).into_iter().find(|c| c.sandbox_id == sandbox_id)
    }

    /// The attempt number the next instance of a container gets: restart counts continue
    /// across sandboxes and across restarts of nodelet, because they live in the runtime.
    pub fn next_attempt(&self, name: &str) -> u32 {
        self.latest(name).map_or(0, |c| c.attempt + 1)
    }
}

pub fn nanos_to_system_time(nanos: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos.max(0) as u64)
}
