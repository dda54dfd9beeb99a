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
    /// Each step down the memory ladder the job took (out of memory, retried with a
    /// lower-memory setting), as `stage: setting`, kept after the job ends.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub step_downs: Vec<String>,
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub struct Store {
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "id, state, params, image_file, error, created_at, started_at, finished_at, \
    resumed, step_downs";

/// Column `i` of `row`, JSON text.
fn json_column<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn row_to_job(row: &rusqlite::Row) -> rusqlite::Result<Job> {
    let params = json_column(row, 2)?;
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
        step_downs: json_column(row, 9)?,
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
                resumed INTEGER NOT NULL DEFAULT 0,
                step_downs TEXT NOT NULL DEFAULT '[]'
            );
            CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);",
        )?;
        // A data directory from before step-downs were kept.
        let has_step_downs: bool = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'step_downs'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !has_step_downs {
            conn.execute(
                "ALTER TABLE jobs ADD COLUMN step_downs TEXT NOT NULL DEFAULT '[]'",
                [],
            )?;
        }
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

    /// Adds a step down to the job's record.
    pub fn record_step_down(&self, id: &str, step_down: &str) -> Result<()> {
        let conn = self.conn();
        let recorded: String =
            conn.query_row("SELECT step_downs FROM jobs WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
        let mut list: Vec<String> = serde_json::from_str(&recorded)?;
        list.push(step_down.to_string());
        conn.execute(
            "UPDATE jobs SET step_downs = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(&list)?],
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory written before step-downs were kept opens, its jobs read with none, and
    /// step-downs recorded from then on are kept in order.
    #[test]
    fn an_older_data_directory_gains_the_step_downs_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        let params = r#"{"prompt":"a","negative_prompt":"","width":64,"height":64,"frames":4,"steps":2,"guidance":7.5,"fps":8,"seed":1}"#;
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE jobs (
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
                );",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO jobs (id, state, params, image_file, created_at) \
                 VALUES ('old', 'done', ?1, 'old.png', 1.0)",
                [params],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let old = store.get("old").unwrap().unwrap();
        assert!(old.step_downs.is_empty());
        assert!(
            serde_json::to_value(&old)
                .unwrap()
                .get("step_downs")
                .is_none()
        );
        store
            .record_step_down("old", "denoise: sequential guidance on")
            .unwrap();
        store
            .record_step_down("old", "decode: model weights staged")
            .unwrap();
        drop(store);
        // and again, now that the column exists
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.get("old").unwrap().unwrap().step_downs,
            [
                "denoise: sequential guidance on",
                "decode: model weights staged"
            ]
        );
    }
}
