//! `vivify serve`: the HTTP API, the durable job queue and the web page.
//!
//! One process owns a data directory (a lock file says so): the SQLite job store, uploads,
//! outputs, per-job latents checkpoints and logs. Routes only record jobs; one worker thread
//! runs them in order on the device.

pub mod assets;
pub mod events;
pub mod logging;
pub mod openapi;
pub mod plan;
pub mod routes;
pub mod state;
pub mod store;
pub mod validation;
pub mod worker;

use anyhow::{Context, Result, bail};
use fs4::fs_std::FileExt;
use state::{Dirs, Info, Shared};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use store::Store;
use tracing::info;
pub use validation::Limits;
pub use worker::{ModelLoader, WorkerConfig};

pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub info: Info,
    pub worker: WorkerConfig,
}

/// The platform data directory's `vivify` folder (e.g. ~/.local/share/vivify).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("vivify")
}

/// Holds the data directory's lock for the server's lifetime: a second server on the same
/// directory fails at start instead of running the same jobs twice.
fn lock_data_dir(dirs: &Dirs) -> Result<std::fs::File> {
    let path = dirs.lock_file();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if !file
        .try_lock_exclusive()
        .with_context(|| format!("locking {}", path.display()))?
    {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another `vivify serve` is already using the data directory {} ({}); stop it or \
             pass another --data-dir",
            dirs.root.display(),
            holder.trim()
        );
    }
    use std::io::Write;
    let _ = file.set_len(0);
    let _ = writeln!(&file, "pid {}", std::process::id());
    Ok(file)
}

/// A started server: listening, its worker running.
pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
    http: tokio::task::JoinHandle<()>,
    _lock: std::fs::File,
}

impl Server {
    /// Locks the data directory, opens the store, puts jobs a dead process left running back
    /// at the front of the queue, starts the worker and listens. Call inside a tokio runtime.
    pub async fn start(config: ServeConfig) -> Result<Server> {
        let dirs = Dirs::new(&config.data_dir);
        dirs.create()
            .with_context(|| format!("creating {}", dirs.root.display()))?;
        let lock = lock_data_dir(&dirs)?;
        let store = Store::open(&dirs.database())?;
        let interrupted = store.requeue_interrupted()?;
        for id in &interrupted {
            info!(job = %id, "was running when the last server stopped: queued to resume");
        }
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
            .await
            .with_context(|| format!("listening on {}:{}", config.host, config.port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(store, dirs, config.info));
        let worker = worker::spawn(Arc::clone(&shared), config.worker);
        let app = routes::router(Arc::clone(&shared));
        let http = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("http server: {e}");
            }
        });
        info!("listening on http://{addr}");
        Ok(Server {
            addr,
            shared,
            worker: Some(worker),
            http,
            _lock: lock,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.dirs.root
    }

    /// Stops taking jobs, lets the running one save its latents and stop after its current
    /// step (it stays `running` in the store, so the next start resumes it), then stops
    /// listening.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.wake_worker();
        if let Some(worker) = self.worker.take() {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
        self.http.abort();
        info!("stopped");
    }
}

/// Runs until SIGINT or SIGTERM, then shuts down cleanly.
pub async fn run_until_signal(config: ServeConfig) -> Result<()> {
    // Handlers first, so a signal that comes just after start-up is not the default (death).
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ctrl_c = tokio::signal::ctrl_c();
    let server = Server::start(config).await?;
    eprintln!("vivify serve: open http://{}/", server.addr);
    #[cfg(unix)]
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("signal received: stopping (the running job is checkpointed)");
    server.shutdown().await;
    Ok(())
}
