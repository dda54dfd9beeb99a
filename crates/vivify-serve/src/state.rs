//! What the routes and the worker share.

use crate::events::Events;
use crate::store::Store;
use crate::validation::Limits;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use vivify_core::memory::ModelConfigs;
use vivify_core::models::tokenizer::ClipTokenizer;

/// The data directory's layout. Every file name in it is made by the server from a job id.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub root: PathBuf,
    pub uploads: PathBuf,
    pub outputs: PathBuf,
    pub checkpoints: PathBuf,
    pub logs: PathBuf,
}

impl Dirs {
    pub fn new(root: &Path) -> Dirs {
        Dirs {
            root: root.to_path_buf(),
            uploads: root.join("uploads"),
            outputs: root.join("outputs"),
            checkpoints: root.join("checkpoints"),
            logs: root.join("logs"),
        }
    }

    pub fn create(&self) -> std::io::Result<()> {
        for d in [&self.uploads, &self.outputs, &self.checkpoints, &self.logs] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("jobs.sqlite3")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("serve.lock")
    }

    pub fn video(&self, id: &str) -> PathBuf {
        self.outputs.join(format!("{id}.mp4"))
    }

    pub fn thumbnail(&self, id: &str) -> PathBuf {
        self.outputs.join(format!("{id}.png"))
    }

    pub fn checkpoint(&self, id: &str) -> PathBuf {
        self.checkpoints.join(format!("{id}.safetensors"))
    }
}

/// Facts about the server for `GET /api/system` and the planner preview.
pub struct Info {
    pub model: String,
    pub device: String,
    pub dtype: candle_core::DType,
    pub limits: Limits,
    /// Memory the planner plans for: `--memory-budget`, else the host's available memory.
    pub memory_budget: Option<u64>,
    pub model_configs: Option<ModelConfigs>,
    pub tokenizer: Option<ClipTokenizer>,
}

pub struct Shared {
    pub store: Store,
    pub events: Events,
    pub dirs: Dirs,
    pub info: Info,
    /// Set on SIGINT/SIGTERM: the worker takes no new job and stops the running one after its
    /// next step (its latents are saved, so the next start resumes it).
    pub shutdown: AtomicBool,
    /// Running jobs a client asked to cancel; the worker stops them between steps.
    pub cancel: Mutex<HashSet<String>>,
    /// The job the worker is running.
    pub running: Mutex<Option<String>>,
    pub model_loaded: AtomicBool,
    wake: (Mutex<u64>, Condvar),
}

impl Shared {
    pub fn new(store: Store, dirs: Dirs, info: Info) -> Shared {
        Shared {
            store,
            events: Events::default(),
            dirs,
            info,
            shutdown: AtomicBool::new(false),
            cancel: Mutex::new(HashSet::new()),
            running: Mutex::new(None),
            model_loaded: AtomicBool::new(false),
            wake: (Mutex::new(0), Condvar::new()),
        }
    }

    /// Tells the worker to look at the queue now.
    pub fn wake_worker(&self) {
        let (lock, cv) = &self.wake;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_all();
    }

    /// Waits for `wake_worker` or the timeout.
    pub fn wait_for_work(&self, timeout: Duration) {
        let (lock, cv) = &self.wake;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let seen = *guard;
        let _ = cv.wait_timeout_while(guard, timeout, |n| *n == seen);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    pub fn cancel_requested(&self, id: &str) -> bool {
        let set = self.cancel.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(id)
    }

    pub fn running_job(&self) -> Option<String> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The planner's memory budget: the flag, else available host memory.
    pub fn memory_budget(&self) -> Option<u64> {
        self.info.memory_budget.or_else(available_memory)
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes (None where there is none).
pub fn available_memory() -> Option<u64> {
    meminfo("MemAvailable:")
}

pub fn total_memory() -> Option<u64> {
    meminfo("MemTotal:")
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
