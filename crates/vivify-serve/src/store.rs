//! The durable job store: one SQLite table in WAL mode, so a crash loses at most the write in
//! flight and readers (the routes) never wait on the worker's writes.

use crate::validation::JobParams;
use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> JobState {
        match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Failed,
        }
    }

    /// Done, failed or cancelled: nothing more will happen to the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    pub state: JobState,
    pub params: JobParams,
    /// The stored upload's file name (server-made) in the uploads directory.
    #[serde(skip)]
    pub image_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    /// How many times the job was picked up again after the server stopped mid-run.
    pub resumed: u32,
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub struct Store {
    conn: Mutex<Connection>,
}

const COLUMNS: &str =
    "id, state, params, image_file, error, created_at, started_at, finished_at, resumed";

fn row_to_job(row: &rusqlite::Row) -> rusqlite::Result<Job> {
    let params: String = row.get(2)?;
    let params = serde_json::from_str(&params).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Job {
        id: row.get(0)?,
        state: JobState::parse(&row.get::<_, String>(1)?),
        params,
        image_file: row.get(3)?,
        error: row.get(4)?,
        created_at: row.get(5)?,
        started_at: row.get(6)?,
        finished_at: row.get(7)?,
        resumed: row.get(8)?,
    })
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // `seq` gives the FIFO order; `id` is what clients see.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                state TEXT NOT NULL,
                params TEXT NOT NULL,
                image_file TEXT NOT NULL,
                error TEXT,
                created_at REAL NOT NULL,
                started_at REAL,
                finished_at REAL,
                resumed INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);",
        )?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic elsewhere while holding the lock leaves the connection usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, job: &Job) -> Result<()> {
        self.conn().execute(
            "INSERT INTO jobs (id, state, params, image_file, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                job.id,
                job.state.as_str(),
                serde_json::to_string(&job.params)?,
                job.image_file,
                job.created_at
            ],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<Job>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                row_to_job,
            )
            .optional()?)
    }

    /// Every job, newest first.
    pub fn list(&self) -> Result<Vec<Job>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM jobs ORDER BY seq DESC"))?;
        let jobs = stmt.query_map([], row_to_job)?.collect::<Result<_, _>>()?;
        Ok(jobs)
    }

    /// Queued job ids in the order they will run.
    pub fn queue(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq")?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// The oldest queued job, marked running.
    pub fn claim_next(&self) -> Result<Option<Job>> {
        let conn = self.conn();
        let job = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1"),
                [],
                row_to_job,
            )
            .optional()?;
        let Some(mut job) = job else { return Ok(None) };
        let started = job.started_at.unwrap_or_else(now);
        conn.execute(
            "UPDATE jobs SET state = 'running', started_at = ?2 WHERE id = ?1",
            params![job.id, started],
        )?;
        job.state = JobState::Running;
        job.started_at = Some(started);
        Ok(Some(job))
    }

    pub fn finish(&self, id: &str, state: JobState, error: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![id, state.as_str(), error, now()],
        )?;
        Ok(())
    }

    /// Start-up: jobs left running by a process that died go back to the front of the queue
    /// (their `seq` is older than anything queued after them). Returns their ids.
    pub fn requeue_interrupted(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM jobs WHERE state = 'running'")?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        conn.execute(
            "UPDATE jobs SET state = 'queued', resumed = resumed + 1 WHERE state = 'running'",
            [],
        )?;
        Ok(ids)
    }

    /// Cancels a queued job; returns whether it was queued.
    pub fn cancel_queued(&self, id: &str) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?2 WHERE id = ?1 AND state = 'queued'",
            params![id, now()],
        )?;
        Ok(n == 1)
    }

    /// Deletes a finished job's row; returns whether it was finished (and so deleted).
    pub fn delete_final(&self, id: &str) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM jobs WHERE id = ?1 AND state IN ('done', 'failed', 'cancelled')",
            [id],
        )?;
        Ok(n == 1)
    }
}
