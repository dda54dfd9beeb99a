//! The cuDNN convolution algorithms chosen by measurement, kept in a JSON file so that a later
//! process skips the search (on an H200 it added 1-7.6 s to a run's first denoising step): the
//! legacy API's, and the graph API's engine configs where `VIVIFY_CONV_GRAPH_SEARCH` times them.
//! Not behind the `cuda` feature so that CPU tests cover it; `nn::cuda::cudnn_conv` and
//! `nn::cuda::cudnn_graph_conv` use it.
//!
//! The file is `VIVIFY_CONV_CACHE` if set (`0` or `off` disables it), else
//! `$XDG_CACHE_HOME/vivify/conv-algorithms.json`, else `~/.cache/vivify/conv-algorithms.json`.
//! It is only a cache: a missing or corrupt file means searching again, never a failed run.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Written into the file; a file with another version is ignored (and replaced on save).
pub const FORMAT_VERSION: u32 = 1;

/// Everything that makes a choice invalid elsewhere: another card, cuDNN release, dtype or
/// layout picks (or supports) other algorithms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConvKey {
    /// The device name, e.g. "NVIDIA H200".
    pub gpu: String,
    /// `cudnnGetVersion()`, e.g. 91300.
    pub cudnn: u64,
    /// "f16", "bf16" or "f32".
    pub dtype: String,
    /// "nchw" or "nhwc"; "nchw graph" or "nhwc graph" for the graph API's configs.
    pub layout: String,
    /// [n, c, h, w, k, kh, kw, stride, padding].
    pub shape: [usize; 9],
}

/// What the search chose: the algorithm and math type as cuDNN's enum values (for the graph
/// API: the engine's global index and its config's rank among the heuristics' results).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub algo: i32,
    pub math_type: i32,
    pub workspace_bytes: u64,
    /// The time the search measured, for the record.
    pub time_ms: f32,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: ConvKey,
    choice: Choice,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    entries: Vec<Entry>,
}

type Entries = BTreeMap<ConvKey, Choice>;

/// The choices of one cache file (none when disabled).
#[derive(Debug)]
pub struct ConvAlgorithmCache {
    path: Option<PathBuf>,
    entries: Entries,
    warned_save: bool,
}

impl ConvAlgorithmCache {
    /// The cache at `path` (`None`: disabled), loaded now.
    pub fn open(path: Option<PathBuf>) -> Self {
        let entries = path.as_deref().map(load).unwrap_or_default();
        Self {
            path,
            entries,
            warned_save: false,
        }
    }

    /// The cache the process environment names (see the module docs).
    pub fn from_env() -> Self {
        Self::open(path_from_vars(|k| std::env::var(k).ok()))
    }

    pub fn get(&self, key: &ConvKey) -> Option<Choice> {
        self.entries.get(key).copied()
    }

    /// Adds a choice and saves the file, merged with what is on disk now (another process may
    /// have added entries since this one loaded). A failed save warns once and is otherwise
    /// ignored.
    pub fn insert(&mut self, key: ConvKey, choice: Choice) {
        let Some(path) = self.path.clone() else {
            return;
        };
        self.entries.insert(key, choice);
        let mut merged = read(&path).unwrap_or_default();
        merged.extend(self.entries.iter().map(|(k, c)| (k.clone(), *c)));
        if let Err(e) = write_atomically(&path, &merged) {
            if !self.warned_save {
                eprintln!(
                    "warning: could not save cuDNN algorithm choices to {}: {e}",
                    path.display()
                );
                self.warned_save = true;
            }
            return;
        }
        self.entries = merged;
    }
}

/// `VIVIFY_CONV_CACHE` (a file; `0` or `off`: none), else `$XDG_CACHE_HOME/vivify/...`, else
/// `~/.cache/vivify/...`, as vivify-hub resolves the Hugging Face cache.
pub fn path_from_vars(get: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    if let Some(p) = get("VIVIFY_CONV_CACHE") {
        return (!matches!(p.as_str(), "0" | "off")).then(|| PathBuf::from(p));
    }
    let cache = get("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| {
        get("HOME")
            .or_else(|| get("USERPROFILE"))
            .map(|h| PathBuf::from(h).join(".cache"))
    })?;
    Some(cache.join("vivify").join("conv-algorithms.json"))
}

/// The process-wide cache, loaded on first use.
fn global() -> &'static Mutex<ConvAlgorithmCache> {
    static CACHE: OnceLock<Mutex<ConvAlgorithmCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(ConvAlgorithmCache::from_env()))
}

/// The choice recorded for `key`, from the process-wide cache.
pub fn lookup(key: &ConvKey) -> Option<Choice> {
    global().lock().ok()?.get(key)
}

/// Records a choice in the process-wide cache and on disk.
pub fn record(key: ConvKey, choice: Choice) {
    if let Ok(mut cache) = global().lock() {
        cache.insert(key, choice);
    }
}

/// The file's entries; a missing file is empty, an unreadable or corrupt one warns and is empty.
fn load(path: &Path) -> Entries {
    read(path).unwrap_or_else(|e| {
        eprintln!(
            "warning: ignoring the cuDNN algorithm cache {}: {e}",
            path.display()
        );
        Entries::new()
    })
}

/// The file's entries, empty when it does not exist.
fn read(path: &Path) -> Result<Entries, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entries::new()),
        Err(e) => return Err(e.to_string()),
    };
    let file: File = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if file.version != FORMAT_VERSION {
        return Err(format!(
            "format version {} (this build reads {FORMAT_VERSION})",
            file.version
        ));
    }
    Ok(file
        .entries
        .into_iter()
        .map(|e| (e.key, e.choice))
        .collect())
}

/// Writes a temporary file next to `path` and renames it over `path`, so that a reader never
/// sees half a file.
fn write_atomically(path: &Path, entries: &Entries) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = File {
        version: FORMAT_VERSION,
        entries: entries
            .iter()
            .map(|(key, choice)| Entry {
                key: key.clone(),
                choice: *choice,
            })
            .collect(),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(gpu: &str, cudnn: u64, dtype: &str, layout: &str) -> ConvKey {
        ConvKey {
            gpu: gpu.into(),
            cudnn,
            dtype: dtype.into(),
            layout: layout.into(),
            shape: [2, 320, 64, 64, 320, 3, 3, 1, 1],
        }
    }

    fn h200() -> ConvKey {
        key("NVIDIA H200", 91300, "f16", "nhwc")
    }

    fn choice(algo: i32) -> Choice {
        Choice {
            algo,
            math_type: 1,
            workspace_bytes: 4096,
            time_ms: 0.25,
        }
    }

    #[test]
    fn a_choice_survives_a_new_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("conv.json");
        let mut cache = ConvAlgorithmCache::open(Some(path.clone()));
        assert_eq!(cache.get(&h200()), None);
        cache.insert(h200(), choice(1));
        let reopened = ConvAlgorithmCache::open(Some(path.clone()));
        assert_eq!(reopened.get(&h200()), Some(choice(1)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
        // No temporary file is left next to it.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn another_gpu_cudnn_dtype_layout_or_shape_misses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conv.json");
        ConvAlgorithmCache::open(Some(path.clone())).insert(h200(), choice(1));
        let cache = ConvAlgorithmCache::open(Some(path));
        let mut other_shape = h200();
        other_shape.shape[8] = 0;
        for k in [
            key("NVIDIA H100 80GB HBM3", 91300, "f16", "nhwc"),
            key("NVIDIA H200", 90100, "f16", "nhwc"),
            key("NVIDIA H200", 91300, "bf16", "nhwc"),
            key("NVIDIA H200", 91300, "f16", "nchw"),
            other_shape,
        ] {
            assert_eq!(cache.get(&k), None, "{k:?}");
        }
        assert_eq!(cache.get(&h200()), Some(choice(1)));
    }

    #[test]
    fn a_corrupt_file_reads_as_empty_and_is_replaced_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conv.json");
        for bad in [
            "{\"version\": 1, \"entr",
            "{\"version\": 99, \"entries\": []}",
        ] {
            std::fs::write(&path, bad).unwrap();
            let mut cache = ConvAlgorithmCache::open(Some(path.clone()));
            assert_eq!(cache.get(&h200()), None);
            cache.insert(h200(), choice(6));
            let reopened = ConvAlgorithmCache::open(Some(path.clone()));
            assert_eq!(reopened.get(&h200()), Some(choice(6)));
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn saving_keeps_what_another_process_added() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conv.json");
        let mut first = ConvAlgorithmCache::open(Some(path.clone()));
        let mut second = ConvAlgorithmCache::open(Some(path.clone()));
        let bf16 = key("NVIDIA H200", 91300, "bf16", "nhwc");
        second.insert(bf16.clone(), choice(0));
        first.insert(h200(), choice(1));
        let reopened = ConvAlgorithmCache::open(Some(path));
        assert_eq!(reopened.get(&h200()), Some(choice(1)));
        assert_eq!(reopened.get(&bf16), Some(choice(0)));
        // The writer that merged now knows the other's entry too.
        assert_eq!(first.get(&bf16), Some(choice(0)));
    }

    #[test]
    fn a_failed_save_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // The cache's folder would sit under a plain file: nothing can be written.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let mut cache = ConvAlgorithmCache::open(Some(blocker.join("conv.json")));
        cache.insert(h200(), choice(1));
        assert!(cache.warned_save);
        // The choice still serves this process.
        assert_eq!(cache.get(&h200()), Some(choice(1)));
    }

    #[test]
    fn where_the_file_lives() {
        let at = |pairs: &[(&str, &str)]| {
            path_from_vars(|k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
        };
        let home = ("HOME", "/home/u");
        let default = Some(PathBuf::from("/home/u/.cache/vivify/conv-algorithms.json"));
        assert_eq!(at(&[home]), default);
        assert_eq!(
            at(&[home, ("XDG_CACHE_HOME", "/xdg")]),
            Some(PathBuf::from("/xdg/vivify/conv-algorithms.json"))
        );
        assert_eq!(
            at(&[home, ("VIVIFY_CONV_CACHE", "/tmp/c.json")]),
            Some(PathBuf::from("/tmp/c.json"))
        );
        assert_eq!(at(&[home, ("VIVIFY_CONV_CACHE", "")]), default);
        assert_eq!(at(&[home, ("VIVIFY_CONV_CACHE", "off")]), None);
        assert_eq!(at(&[home, ("VIVIFY_CONV_CACHE", "0")]), None);
        assert_eq!(at(&[]), None);
    }

    #[test]
    fn a_disabled_cache_neither_reads_nor_writes() {
        let mut cache = ConvAlgorithmCache::open(None);
        cache.insert(h200(), choice(1));
        assert_eq!(cache.get(&h200()), None);
    }
}
