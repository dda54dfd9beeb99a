use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fs4::fs_std::FileExt;
use serde::Deserialize;
use ureq::http::{HeaderMap, Response};

use crate::config::HubConfig;
use crate::error::{HubError, Result};
use crate::progress::DownloadEvent;
use crate::select::{FileSelection, Weights, is_non_weight_needed};

/// `models--{org}--{name}`, the cache folder of a model repo.
pub fn repo_folder_name(repo_id: &str) -> String {
    format!("models--{}", repo_id.replace('/', "--"))
}

/// Fetches the files of `repo_id` at `revision` (a branch, tag or commit sha; `"main"` usually)
/// that `files` selects into the cache and returns the snapshot directory
/// `{cache}/models--{org}--{name}/snapshots/{commit_sha}/`.
///
/// Files already in the snapshot are not fetched again; an interrupted download resumes from
/// `blobs/{etag}.incomplete`. With `config.offline` no request is made: the revision is
/// resolved through `refs/{revision}` (or is a full commit sha) and the needed files must be
/// there. Online, when the hub cannot be reached at all, a complete cached snapshot of the
/// revision is used instead.
pub fn snapshot(
    config: &HubConfig,
    repo_id: &str,
    revision: &str,
    files: &FileSelection,
    progress: &dyn Fn(DownloadEvent),
) -> Result<PathBuf> {
    validate_repo_id(repo_id)?;
    let revision = if revision.is_empty() {
        "main"
    } else {
        revision
    };
    if !is_safe_repo_path(revision) {
        return Err(HubError::InvalidRevision(revision.to_string()));
    }
    let repo_dir = config.cache_dir.join(repo_folder_name(repo_id));
    if config.offline {
        return resolve_offline(config, &repo_dir, repo_id, revision, files);
    }
    let client = Client::new(config);
    let info = match client.model_info(repo_id, revision) {
        Ok(info) => info,
        Err(e @ HubError::Network { .. }) => {
            return resolve_offline(config, &repo_dir, repo_id, revision, files).map_err(|_| e);
        }
        Err(e) => return Err(e),
    };
    let sha = info.sha;
    if !is_commit_sha(&sha) {
        return Err(HubError::BadResponse {
            url: client.api_url(repo_id, revision),
            detail: format!("'sha' is not a commit hash: {sha:?}"),
        });
    }
    if revision != sha {
        write_ref(&repo_dir, revision, &sha)?;
    }
    let snap = repo_dir.join("snapshots").join(&sha);
    let siblings: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let mut queue = files.select(siblings.iter().copied());
    let available: BTreeSet<&str> = siblings.iter().copied().collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut i = 0;
    while i < queue.len() {
        let path = queue[i].clone();
        i += 1;
        if !done.insert(path.clone()) {
            continue;
        }
        let job = FileJob {
            client: &client,
            repo_dir: &repo_dir,
            locks_dir: &config
                .cache_dir
                .join(".locks")
                .join(repo_folder_name(repo_id)),
            snap: &snap,
            repo_id,
            sha: &sha,
            path: &path,
        };
        job.fetch(progress)?;
        if is_index(&path) {
            for shard in index_shards(&snap, &path)? {
                if !available.contains(shard.as_str()) {
                    return Err(HubError::EntryNotFound {
                        repo_id: repo_id.to_string(),
                        commit: sha.clone(),
                        path: shard,
                    });
                }
                queue.push(shard);
            }
        }
    }
    Ok(snap)
}

fn validate_repo_id(repo_id: &str) -> Result<()> {
    // `org/name`, or a legacy name without an organisation (`gpt2`).
    let ok = (1..=2).contains(&repo_id.split('/').count())
        && repo_id.split('/').all(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(HubError::InvalidRepoId(repo_id.to_string()))
    }
}

fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A relative path that stays inside its folder: no empty, `.` or `..` component, no `\\`.
pub(crate) fn is_safe_repo_path(p: &str) -> bool {
    !p.contains('\\') && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn is_index(path: &str) -> bool {
    path.ends_with(".json") && path.contains(".safetensors.") && path.contains("index")
}

/// The shard paths an index file (already in the snapshot) names, relative to the repo root.
fn index_shards(snap: &Path, index: &str) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let p = snap.join(index);
    let text = fs::read_to_string(&p).map_err(HubError::io("read", &p))?;
    let idx: Index = serde_json::from_str(&text).map_err(|e| HubError::CacheCorrupt {
        path: p.clone(),
        detail: format!("not a safetensors index: {e}"),
    })?;
    let dir = index.rsplit_once('/').map(|(d, _)| d);
    let shards: BTreeSet<String> = idx
        .weight_map
        .into_values()
        .map(|s| match dir {
            Some(d) => format!("{d}/{s}"),
            None => s,
        })
        .collect();
    if let Some(bad) = shards.iter().find(|s| !is_safe_repo_path(s)) {
        return Err(HubError::CacheCorrupt {
            path: p,
            detail: format!("shard path {bad:?} leaves the repository"),
        });
    }
    Ok(shards.into_iter().collect())
}

fn write_ref(repo_dir: &Path, revision: &str, sha: &str) -> Result<()> {
    let path = repo_dir.join("refs").join(revision);
    if fs::read_to_string(&path).is_ok_and(|s| s.trim() == sha) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(repo_dir);
    fs::create_dir_all(parent).map_err(HubError::io("create directory", parent))?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = parent.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("ref"),
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    fs::write(&tmp, sha).map_err(HubError::io("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(HubError::io("write", &path))
}

// ---------------------------------------------------------------------------------------------
// Offline resolution

fn resolve_offline(
    config: &HubConfig,
    repo_dir: &Path,
    repo_id: &str,
    revision: &str,
    files: &FileSelection,
) -> Result<PathBuf> {
    let offline_err = |missing: Vec<String>| HubError::Offline {
        repo_id: repo_id.to_string(),
        revision: revision.to_string(),
        cache: config.cache_dir.clone(),
        missing,
    };
    let sha = if is_commit_sha(revision) && repo_dir.join("snapshots").join(revision).is_dir() {
        revision.to_string()
    } else {
        let ref_path = repo_dir.join("refs").join(revision);
        match fs::read_to_string(&ref_path) {
            Ok(s) => s.trim().to_string(),
            Err(_) => return Err(offline_err(vec![format!("refs/{revision}")])),
        }
    };
    let snap = repo_dir.join("snapshots").join(&sha);
    if !snap.is_dir() {
        return Err(offline_err(vec![format!("snapshots/{sha}")]));
    }
    let missing = missing_offline(&snap, files)?;
    if missing.is_empty() {
        Ok(snap)
    } else {
        Err(offline_err(missing))
    }
}

/// What a diffusers pipeline needs from `snap` that is not there (dangling links count as
/// missing): `model_index.json`; per component named in it, its config; per component with a
/// `config.json`, weights in the form `files` would choose from what is present, with every
/// shard of an index.
fn missing_offline(snap: &Path, files: &FileSelection) -> Result<Vec<String>> {
    let mut present = Vec::new();
    list_files(snap, "", &mut present);
    let present_set: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    let mut missing = Vec::new();
    if !present_set.contains("model_index.json") {
        return Ok(vec!["model_index.json".to_string()]);
    }
    let index_path = snap.join("model_index.json");
    let text = fs::read_to_string(&index_path).map_err(HubError::io("read", &index_path))?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| HubError::CacheCorrupt {
            path: index_path.clone(),
            detail: format!("invalid JSON: {e}"),
        })?;
    let components: Vec<String> = index
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| {
                    !k.starts_with('_')
                        && v.as_array()
                            .is_some_and(|a| a.len() == 2 && a.iter().all(|x| x.is_string()))
                })
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    for comp in &components {
        let has_any = present_set.iter().any(|f| {
            f.strip_prefix(comp.as_str())
                .is_some_and(|r| r.starts_with('/'))
                && is_non_weight_needed(f)
        });
        if !has_any {
            missing.push(format!("{comp}/ (config or tokenizer files)"));
        }
    }
    let weights = files.weights_by_component(&present_set);
    let dirs_with_config: BTreeSet<&str> = present_set
        .iter()
        .filter_map(|f| f.strip_suffix("/config.json"))
        .filter(|d| !d.contains('/'))
        .collect();
    for dir in dirs_with_config {
        match weights.get(dir) {
            None => missing.push(format!("{dir}/ weights (*.safetensors)")),
            Some(Weights::Single(_)) => {}
            Some(Weights::Index(idx)) => {
                for i in idx {
                    for shard in index_shards(snap, i)? {
                        if !present_set.contains(shard.as_str()) {
                            missing.push(shard);
                        }
                    }
                }
            }
        }
    }
    for e in &files.extra {
        if !present_set.contains(e.as_str()) {
            missing.push(e.clone());
        }
    }
    Ok(missing)
}

/// Files under `dir` whose link target exists, as repo paths.
fn list_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match fs::metadata(entry.path()) {
            Ok(m) if m.is_dir() => list_files(&entry.path(), &rel, out),
            Ok(_) => out.push(rel),
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[derive(Deserialize)]
struct ModelInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

struct Client<'a> {
    config: &'a HubConfig,
    agent: ureq::Agent,
}

const MAX_REDIRECTS: usize = 10;

impl<'a> Client<'a> {
    fn new(config: &'a HubConfig) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("vivify-hub/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { config, agent }
    }

    fn api_url(&self, repo_id: &str, revision: &str) -> String {
        format!(
            "{}/api/models/{}/revision/{}",
            self.config.endpoint,
            repo_id,
            encode(revision, false)
        )
    }

    /// One request, no redirect followed; the token only goes to the endpoint's host.
    fn request(&self, method: &str, url: &str, range_from: u64) -> Result<Response<ureq::Body>> {
        // identity: the stored bytes and Content-Length must be the file's, not a gzip of it.
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("Accept-Encoding", "identity");
        if let Some(t) = &self.config.token
            && same_origin(url, &self.config.endpoint)
        {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if range_from > 0 {
            req = req.header("Range", format!("bytes={range_from}-"));
        }
        let req = req.body(()).map_err(|e| HubError::Network {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        self.agent.run(req).map_err(|e| HubError::Network {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// Follows redirects by hand (so `Authorization` is kept for the endpoint's host only).
    fn follow(
        &self,
        method: &str,
        url: &str,
        range_from: u64,
    ) -> Result<(String, Response<ureq::Body>)> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.request(method, &url, range_from)?;
            if resp.status().is_redirection()
                && let Some(loc) = header(resp.headers(), "location")
            {
                url = join_url(&url, &loc);
                continue;
            }
            return Ok((url, resp));
        }
        Err(HubError::Network {
            url,
            message: "too many redirects".into(),
        })
    }

    fn model_info(&self, repo_id: &str, revision: &str) -> Result<ModelInfo> {
        let url = self.api_url(repo_id, revision);
        let (url, mut resp) = self.follow("GET", &url, 0)?;
        self.check_status(&resp, &url, repo_id, revision, None)?;
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| HubError::Network {
                url: url.clone(),
                message: e.to_string(),
            })?;
        serde_json::from_str(&text).map_err(|e| HubError::BadResponse {
            url,
            detail: e.to_string(),
        })
    }

    fn check_status(
        &self,
        resp: &Response<ureq::Body>,
        url: &str,
        repo_id: &str,
        revision: &str,
        path: Option<&str>,
    ) -> Result<()> {
        let status = resp.status().as_u16();
        if (200..400).contains(&status) {
            return Ok(());
        }
        let code = header(resp.headers(), "x-error-code").unwrap_or_default();
        let token_sent = self.config.token.is_some();
        Err(match (code.as_str(), status) {
            ("RevisionNotFound", _) => HubError::RevisionNotFound {
                repo_id: repo_id.into(),
                revision: revision.into(),
            },
            ("EntryNotFound", _) => HubError::EntryNotFound {
                repo_id: repo_id.into(),
                commit: revision.into(),
                path: path.unwrap_or_default().into(),
            },
            ("GatedRepo", _) | ("", 401 | 403) | (_, 403) => HubError::Unauthorized {
                repo_id: repo_id.into(),
                status,
                token_sent,
            },
            // The hub answers 401 RepoNotFound for private repos without a token.
            ("RepoNotFound", 401) if !token_sent => HubError::Unauthorized {
                repo_id: repo_id.into(),
                status,
                token_sent,
            },
            ("RepoNotFound", _) | ("", 404) if path.is_none() || code == "RepoNotFound" => {
                HubError::RepoNotFound {
                    repo_id: repo_id.into(),
                    endpoint: self.config.endpoint.clone(),
                }
            }
            (_, 404) => HubError::EntryNotFound {
                repo_id: repo_id.into(),
                commit: revision.into(),
                path: path.unwrap_or_default().into(),
            },
            _ => HubError::Http {
                url: url.into(),
                status,
            },
        })
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// `scheme://host:port` of a URL (lowercased), for the same-origin check.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    Some(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    ))
}

fn same_origin(a: &str, b: &str) -> bool {
    origin(a).is_some() && origin(a) == origin(b)
}

fn join_url(base: &str, loc: &str) -> String {
    if loc.contains("://") {
        loc.to_string()
    } else if let Some(rest) = loc.strip_prefix("//") {
        let scheme = base.split_once("://").map_or("https", |(s, _)| s);
        format!("{scheme}://{rest}")
    } else if loc.starts_with('/') {
        format!("{}{}", origin(base).unwrap_or_default(), loc)
    } else {
        let dir = base.rsplit_once('/').map_or(base, |(d, _)| d);
        format!("{dir}/{loc}")
    }
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One file

struct FileJob<'a> {
    client: &'a Client<'a>,
    repo_dir: &'a Path,
    locks_dir: &'a Path,
    snap: &'a Path,
    repo_id: &'a str,
    sha: &'a str,
    path: &'a str,
}

struct Meta {
    etag: String,
    size: Option<u64>,
    download_url: String,
}

impl FileJob<'_> {
    fn fetch(&self, progress: &dyn Fn(DownloadEvent)) -> Result<()> {
        let dst = self.snap.join(self.path);
        if fs::metadata(&dst).is_ok() {
            progress(DownloadEvent::Cached {
                path: self.path.to_string(),
            });
            return Ok(());
        }
        let meta = self.head()?;
        let blobs = self.repo_dir.join("blobs");
        fs::create_dir_all(&blobs).map_err(HubError::io("create directory", &blobs))?;
        let blob = blobs.join(&meta.etag);
        if blob.is_file() {
            self.check_size(&blob, meta.size)?;
            progress(DownloadEvent::Cached {
                path: self.path.to_string(),
            });
        } else {
            fs::create_dir_all(self.locks_dir)
                .map_err(HubError::io("create directory", self.locks_dir))?;
            let lock_path = self.locks_dir.join(format!("{}.lock", meta.etag));
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(HubError::io("open lock file", &lock_path))?;
            lock.lock_exclusive()
                .map_err(HubError::io("lock", &lock_path))?;
            // Another process may have finished it while we waited.
            if !blob.is_file() {
                self.download(&meta, &blob, progress)?;
            }
            drop(lock);
            progress(DownloadEvent::Finished {
                path: self.path.to_string(),
            });
        }
        self.link(&meta.etag, &dst)
    }

    fn check_size(&self, blob: &Path, size: Option<u64>) -> Result<()> {
        let len = fs::metadata(blob)
            .map_err(HubError::io("stat", blob))?
            .len();
        match size {
            Some(s) if s != len => Err(HubError::CacheCorrupt {
                path: blob.to_path_buf(),
                detail: format!("{len} bytes, the hub says {s}; delete the blob to fetch it again"),
            }),
            _ => Ok(()),
        }
    }

    fn resolve_url(&self) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.client.config.endpoint,
            self.repo_id,
            self.sha,
            encode(self.path, true)
        )
    }

    /// HEAD without following the CDN redirect: the hub's own answer carries the ETag.
    fn head(&self) -> Result<Meta> {
        let mut url = self.resolve_url();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.client.request("HEAD", &url, 0)?;
            self.client
                .check_status(&resp, &url, self.repo_id, self.sha, Some(self.path))?;
            let h = resp.headers();
            let etag = header(h, "x-linked-etag").or_else(|| header(h, "etag"));
            let location = header(h, "location").map(|l| join_url(&url, &l));
            if resp.status().is_redirection() && etag.is_none() {
                // A relative redirect (renamed repo) without file metadata: follow it.
                match location {
                    Some(l) => {
                        url = l;
                        continue;
                    }
                    None => break,
                }
            }
            let Some(etag) = etag else { break };
            let etag = etag.trim_start_matches("W/").trim_matches('"').to_string();
            if etag.is_empty() || etag.contains(['/', '\\']) || etag.starts_with('.') {
                return Err(HubError::BadResponse {
                    url,
                    detail: format!("unusable ETag {etag:?}"),
                });
            }
            let size = header(h, "x-linked-size")
                .or_else(|| header(h, "content-length"))
                .and_then(|s| s.parse().ok());
            let download_url = if resp.status().is_redirection() {
                location.unwrap_or_else(|| url.clone())
            } else {
                url.clone()
            };
            return Ok(Meta {
                etag,
                size,
                download_url,
            });
        }
        Err(HubError::BadResponse {
            url,
            detail: "no ETag in the response (is HF_ENDPOINT a hub?)".into(),
        })
    }

    fn download(&self, meta: &Meta, blob: &Path, progress: &dyn Fn(DownloadEvent)) -> Result<()> {
        let part = blob.with_file_name(format!("{}.incomplete", meta.etag));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(HubError::io("open", &part))?;
        let mut have = file.metadata().map_err(HubError::io("stat", &part))?.len();
        if meta.size.is_some_and(|s| have > s) {
            truncate(&file, &part)?;
            have = 0;
        }
        if meta.size != Some(have) || have == 0 {
            let (url, resp) = self.client.follow("GET", &meta.download_url, have)?;
            let status = resp.status().as_u16();
            let resp = if status == 416 && have > 0 {
                // Our partial file does not fit the remote one: start over.
                truncate(&file, &part)?;
                have = 0;
                self.client.follow("GET", &meta.download_url, 0)?.1
            } else {
                resp
            };
            self.client
                .check_status(&resp, &url, self.repo_id, self.sha, Some(self.path))?;
            match resp.status().as_u16() {
                206 => {}
                200 => {
                    if have > 0 {
                        // The server ignored the range: the body is the whole file.
                        truncate(&file, &part)?;
                        have = 0;
                    }
                }
                s => return Err(HubError::Http { url, status: s }),
            }
            let content_length: Option<u64> =
                header(resp.headers(), "content-length").and_then(|s| s.parse().ok());
            if let (Some(total), Some(cl)) = (meta.size, content_length)
                && have + cl != total
            {
                return Err(HubError::BadResponse {
                    url,
                    detail: format!(
                        "Content-Length {cl} from byte {have} does not add up to the file size {total}"
                    ),
                });
            }
            progress(DownloadEvent::Started {
                path: self.path.to_string(),
                total: meta.size.or(content_length.map(|c| c + have)),
                resumed_from: have,
            });
            let mut reader = resp.into_body().into_reader();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = file.flush();
                        return Err(HubError::Network {
                            url,
                            message: format!(
                                "{e} (the partial download is kept and resumes on the next try)"
                            ),
                        });
                    }
                };
                file.write_all(&buf[..n])
                    .map_err(HubError::io("write", &part))?;
                have += n as u64;
                progress(DownloadEvent::Advanced {
                    path: self.path.to_string(),
                    bytes: n as u64,
                });
            }
            file.flush().map_err(HubError::io("write", &part))?;
            if let Some(total) = meta.size
                && have != total
            {
                if have > total {
                    drop(file);
                    let _ = fs::remove_file(&part);
                    return Err(HubError::CacheCorrupt {
                        path: part,
                        detail: format!("received {have} bytes, expected {total}; removed"),
                    });
                }
                return Err(HubError::Network {
                    url,
                    message: format!(
                        "connection closed after {have} of {total} bytes (the partial download is kept and resumes on the next try)"
                    ),
                });
            }
        }
        file.sync_all().map_err(HubError::io("write", &part))?;
        drop(file);
        fs::rename(&part, blob).map_err(HubError::io("rename", &part))
    }

    fn link(&self, etag: &str, dst: &Path) -> Result<()> {
        let parent = dst.parent().unwrap_or(self.snap);
        fs::create_dir_all(parent).map_err(HubError::io("create directory", parent))?;
        if fs::metadata(dst).is_ok() {
            // Linked by another process meanwhile.
            return Ok(());
        }
        if fs::symlink_metadata(dst).is_ok() {
            // A dangling link (its blob was deleted): replace it.
            fs::remove_file(dst).map_err(HubError::io("remove", dst))?;
        }
        let depth = self.path.matches('/').count() + 2;
        let target = format!("{}blobs/{etag}", "../".repeat(depth));
        #[cfg(unix)]
        {
            match std::os::unix::fs::symlink(&target, dst) {
                // Another process linked it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dst.exists() => Ok(()),
                r => r.map_err(HubError::io("symlink", dst)),
            }
        }
        #[cfg(not(unix))]
        {
            // No reliable symlinks: copy the blob, as huggingface_hub does there.
            let src = self.repo_dir.join("blobs").join(etag);
            let _ = target;
            fs::copy(&src, dst)
                .map(|_| ())
                .map_err(HubError::io("copy", dst))
        }
    }
}

fn truncate(file: &File, path: &Path) -> Result<()> {
    file.set_len(0).map_err(HubError::io("truncate", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            join_url("https://huggingface.co/a/resolve/x/f", "/api/x"),
            "https://huggingface.co/api/x"
        );
        assert_eq!(
            join_url("https://huggingface.co/a/b", "https://cdn.example/x"),
            "https://cdn.example/x"
        );
        assert!(same_origin(
            "https://huggingface.co/x",
            "https://huggingface.co"
        ));
        assert!(!same_origin(
            "https://cdn-lfs.hf.co/x",
            "https://huggingface.co"
        ));
        assert!(!same_origin(
            "http://huggingface.co/x",
            "https://huggingface.co"
        ));
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("unet/a b.json", true), "unet/a%20b.json");
        assert_eq!(
            repo_folder_name("ali-vilab/i2vgen-xl"),
            "models--ali-vilab--i2vgen-xl"
        );
    }

    #[test]
    fn repo_ids() {
        assert!(validate_repo_id("ali-vilab/i2vgen-xl").is_ok());
        assert!(validate_repo_id("gpt2").is_ok());
        assert!(validate_repo_id("").is_err());
        assert!(validate_repo_id("a/").is_err());
        assert!(validate_repo_id("../x").is_err());
        assert!(validate_repo_id("a/b/c").is_err());
        assert!(is_safe_repo_path("unet/config.json"));
        assert!(is_safe_repo_path("refs/pr/1"));
        assert!(!is_safe_repo_path("../x"));
        assert!(!is_safe_repo_path("a/../../x"));
        assert!(!is_safe_repo_path("/etc/passwd"));
        assert!(!is_safe_repo_path("a\\b"));
    }
}
