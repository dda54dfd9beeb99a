//! Job progress: the worker publishes, server-sent-event streams and job JSON read. Live
//! progress (stage, step, ETA) is kept in memory only; states live in the store.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// One thing that happened to a job, as sent on `GET /api/jobs/{id}/events` (the SSE event name
/// is `type`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// Waiting: `position` jobs run before it (0: next).
    Queued {
        position: usize,
    },
    /// A stage began: `load model`, `encode text`, `encode image`, `denoise`, `decode`,
    /// `encode video`.
    Stage {
        stage: String,
    },
    /// A denoising step finished.
    Step {
        step: usize,
        total: usize,
        seconds_per_step: f64,
        eta_seconds: f64,
    },
    /// Decoded frames so far.
    Decoded {
        frames: usize,
        total: usize,
    },
    /// Out of memory in `stage`: retried with a lower-memory setting.
    StepDown {
        stage: String,
        from: String,
        to: String,
        reason: String,
    },
    /// The job was resumed from its saved latents after `step` finished steps.
    Resumed {
        step: usize,
    },
    Done,
    Failed {
        error: String,
    },
    Cancelled,
}

impl JobEvent {
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Queued { .. } => "queued",
            JobEvent::Stage { .. } => "stage",
            JobEvent::Step { .. } => "step",
            JobEvent::Decoded { .. } => "decoded",
            JobEvent::StepDown { .. } => "step_down",
            JobEvent::Resumed { .. } => "resumed",
            JobEvent::Done => "done",
            JobEvent::Failed { .. } => "failed",
            JobEvent::Cancelled => "cancelled",
        }
    }

    /// The job will send nothing after this.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobEvent::Done | JobEvent::Failed { .. } | JobEvent::Cancelled
        )
    }
}

/// How job JSON lists a step down: `stage: setting now`, e.g. `decode: model weights staged`.
pub fn step_down_summary(stage: &str, to: &str) -> String {
    format!("{stage}: {to}")
}

/// The running job's latest stage and step, for job JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveProgress {
    pub stage: Option<String>,
    pub step: usize,
    pub total: usize,
    pub eta_seconds: Option<f64>,
    pub step_downs: Vec<String>,
}

/// What streams hear: a job's event, or "the queue moved" (positions changed).
#[derive(Debug, Clone)]
pub enum Broadcast {
    Job(String, JobEvent),
    QueueMoved,
}

pub struct Events {
    tx: broadcast::Sender<Broadcast>,
    live: Mutex<HashMap<String, LiveProgress>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            live: Mutex::new(HashMap::new()),
        }
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<Broadcast> {
        self.tx.subscribe()
    }

    pub fn queue_moved(&self) {
        let _ = self.tx.send(Broadcast::QueueMoved);
    }

    pub fn publish(&self, id: &str, event: JobEvent) {
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            if event.is_final() {
                live.remove(id);
            } else {
                let p = live.entry(id.to_string()).or_default();
                match &event {
                    JobEvent::Stage { stage } => p.stage = Some(stage.clone()),
                    JobEvent::Step {
                        step,
                        total,
                        eta_seconds,
                        ..
                    } => {
                        p.step = *step;
                        p.total = *total;
                        p.eta_seconds = Some(*eta_seconds);
                    }
                    JobEvent::StepDown { stage, to, .. } => {
                        p.step_downs.push(step_down_summary(stage, to))
                    }
                    _ => {}
                }
            }
        }
        let _ = self.tx.send(Broadcast::Job(id.to_string(), event));
    }

    pub fn live(&self, id: &str) -> Option<LiveProgress> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(id).cloned()
    }
}
