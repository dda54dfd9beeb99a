use std::path::PathBuf;

/// Where and how to reach the hub, and where the cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Hub base URL without a trailing slash (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// The hub cache directory (the folder holding `models--*`).
    pub cache_dir: PathBuf,
    /// Never touch the network (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Access token, sent as `Authorization: Bearer` to the endpoint's host only.
    pub token: Option<String>,
}

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl HubConfig {
    /// Reads the process environment like `huggingface_hub` does:
    /// `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME` / `XDG_CACHE_HOME`, `HF_HUB_OFFLINE`,
    /// `HF_TOKEN` (else the token file `HF_TOKEN_PATH`, default `$HF_HOME/token`).
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`HubConfig::from_env`] with an explicit variable lookup (for tests and embedding).
    /// The token file, if consulted, is read from disk.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let offline = get("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v));
        let token = get("HF_TOKEN")
            .map(|t| t.trim().to_string())
            .or_else(|| {
                let path = get("HF_TOKEN_PATH")
                    .map(|p| expand_home(&p, &get))
                    .unwrap_or_else(|| hf_home_from_vars(&get).join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
            })
            .filter(|t| !t.is_empty());
        Self {
            endpoint,
            cache_dir: cache_dir_from_vars(&get),
            offline,
            token,
        }
    }

    /// A config for `endpoint` and `cache_dir`, online, without a token.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            cache_dir: cache_dir.into(),
            offline: false,
            token: None,
        }
    }
}

fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

fn home(get: &impl Fn(&str) -> Option<String>) -> PathBuf {
    get("HOME")
        .or_else(|| get("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn expand_home(p: &str, get: &impl Fn(&str) -> Option<String>) -> PathBuf {
    if p == "~" {
        home(get)
    } else if let Some(rest) = p.strip_prefix("~/") {
        home(get).join(rest)
    } else {
        PathBuf::from(p)
    }
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn hf_home_from_vars(get: &impl Fn(&str) -> Option<String>) -> PathBuf {
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    if let Some(h) = get("HF_HOME") {
        return expand_home(&h, &get);
    }
    let xdg = get("XDG_CACHE_HOME")
        .map(|x| expand_home(&x, &get))
        .unwrap_or_else(|| home(&get).join(".cache"));
    xdg.join("huggingface")
}

/// The hub cache, with `huggingface_hub`'s precedence: `HF_HUB_CACHE`, then the legacy
/// `HUGGINGFACE_HUB_CACHE`, then `$HF_HOME/hub` (see [`hf_home_from_vars`]).
pub fn cache_dir_from_vars(get: &impl Fn(&str) -> Option<String>) -> PathBuf {
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    if let Some(c) = get("HF_HUB_CACHE").or_else(|| get("HUGGINGFACE_HUB_CACHE")) {
        return expand_home(&c, &get);
    }
    hf_home_from_vars(&get).join("hub")
}
