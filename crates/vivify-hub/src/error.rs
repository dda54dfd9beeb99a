use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, HubError>;

/// Everything that can go wrong fetching or resolving a model.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid revision '{0}'")]
    InvalidRevision(String),
    #[error("invalid repo id '{0}': expected 'org/name' (letters, digits, '-', '_', '.')")]
    InvalidRepoId(String),
    #[error(
        "repository '{repo_id}' not found on {endpoint} (HTTP 404); check the repo id (if it is private, set HF_TOKEN)"
    )]
    RepoNotFound { repo_id: String, endpoint: String },
    #[error("revision '{revision}' not found in repository '{repo_id}'")]
    RevisionNotFound { repo_id: String, revision: String },
    #[error("file '{path}' not found in repository '{repo_id}' at commit {commit}")]
    EntryNotFound {
        repo_id: String,
        commit: String,
        path: String,
    },
    #[error(
        "access to repository '{repo_id}' denied (HTTP {status}): it is gated or private; {}",
        if *.token_sent { "the token in HF_TOKEN (or the HF_HOME token file) was refused or has not been granted access — accept the model's terms on the hub" } else { "set HF_TOKEN to an access token with read access (and accept the model's terms on the hub)" }
    )]
    Unauthorized {
        repo_id: String,
        status: u16,
        token_sent: bool,
    },
    #[error("network error for {url}: {message}")]
    Network { url: String, message: String },
    #[error("unexpected HTTP {status} from {url}")]
    Http { url: String, status: u16 },
    #[error("invalid response from {url}: {detail}")]
    BadResponse { url: String, detail: String },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache corruption at {}: {detail}", path.display())]
    CacheCorrupt { path: PathBuf, detail: String },
    #[error(
        "offline mode is on (HF_HUB_OFFLINE) and '{repo_id}' at revision '{revision}' is not in the cache {}{}",
        cache.display(),
        if missing.is_empty() { String::new() } else { format!(": missing {}", missing.join(", ")) }
    )]
    Offline {
        repo_id: String,
        revision: String,
        cache: PathBuf,
        missing: Vec<String>,
    },
}

impl HubError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| HubError::Io { op, path, source }
    }
}
