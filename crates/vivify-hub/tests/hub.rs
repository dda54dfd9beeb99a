mod fake_hub;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use fake_hub::{BIG, FakeHub, REPO, SHA, TOKEN};
use vivify_hub::{
    DownloadEvent, FileSelection, HubConfig, HubError, cache_dir_from_vars, hf_home_from_vars,
    snapshot,
};

fn config(hub: &FakeHub, cache: &Path) -> HubConfig {
    HubConfig::new(hub.endpoint.clone(), cache)
}

fn fetch(cfg: &HubConfig, prefer_fp16: bool) -> Result<PathBuf, HubError> {
    snapshot(
        cfg,
        REPO,
        "main",
        &FileSelection::diffusers(prefer_fp16),
        &|_| {},
    )
}

fn file_requests(hub: &FakeHub) -> Vec<fake_hub::Req> {
    hub.requests()
        .into_iter()
        .filter(|r| !r.path.starts_with("/api/"))
        .collect()
}

const FP16_SET: &[&str] = &[
    "feature_extractor/preprocessor_config.json",
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "text_encoder/model.safetensors.index.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    BIG,
];

fn snapshot_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if e.file_type().unwrap().is_dir() {
            snapshot_files(&e.path(), &rel, out);
        } else {
            out.push(rel);
        }
    }
}

#[test]
fn first_download_makes_the_huggingface_hub_layout() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&hub, tmp.path());
    let events = Mutex::new(Vec::new());
    let snap = snapshot(&cfg, REPO, "main", &FileSelection::diffusers(true), &|e| {
        events.lock().unwrap().push(e)
    })
    .unwrap();
    let repo_dir = tmp.path().join("models--test-org--tiny-model");
    assert_eq!(snap, repo_dir.join("snapshots").join(SHA));
    assert_eq!(fs::read_to_string(repo_dir.join("refs/main")).unwrap(), SHA);

    let mut got = Vec::new();
    snapshot_files(&snap, "", &mut got);
    got.sort();
    assert_eq!(got, FP16_SET);

    for path in FP16_SET {
        let link = snap.join(path);
        let meta = fs::symlink_metadata(&link).unwrap();
        assert!(meta.file_type().is_symlink(), "{path} is not a symlink");
        let file = hub.file(path);
        let depth = path.matches('/').count() + 2;
        let want = format!("{}blobs/{}", "../".repeat(depth), file.etag);
        assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from(want), "{path}");
        assert_eq!(fs::read(&link).unwrap(), file.data, "{path}");
        assert_eq!(
            fs::read(repo_dir.join("blobs").join(&file.etag)).unwrap(),
            file.data
        );
    }
    // No partial files left, lock files under .locks as huggingface_hub keeps them.
    for e in fs::read_dir(repo_dir.join("blobs")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".incomplete"), "{name}");
    }
    assert!(
        tmp.path()
            .join(".locks/models--test-org--tiny-model")
            .is_dir()
    );

    let reqs = hub.requests();
    assert!(reqs.iter().all(|r| !r.path.ends_with(".bin")));
    assert!(
        reqs.iter()
            .all(|r| r.headers.get("accept-encoding").map(String::as_str) == Some("identity"))
    );
    assert!(
        reqs.iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
    assert!(
        reqs.iter()
            .any(|r| r.method == "GET" && r.path.starts_with("/cdn/")),
        "the redirected file was fetched from its Location"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.path.contains("diffusion_pytorch_model.safetensors")),
        "the plain unet weights must not be fetched when fp16 is preferred"
    );

    let events = events.into_inner().unwrap();
    let big_total = hub.file(BIG).data.len() as u64;
    assert!(events.contains(&DownloadEvent::Started {
        path: BIG.into(),
        total: Some(big_total),
        resumed_from: 0
    }));
    let advanced: u64 = events
        .iter()
        .filter_map(|e| match e {
            DownloadEvent::Advanced { path, bytes } if path == BIG => Some(*bytes),
            _ => None,
        })
        .sum();
    assert_eq!(advanced, big_total);
    assert!(events.contains(&DownloadEvent::Finished { path: BIG.into() }));
}

#[test]
fn plain_weights_when_fp16_not_preferred() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let snap = fetch(&config(&hub, tmp.path()), false).unwrap();
    let plain = "unet/diffusion_pytorch_model.safetensors";
    assert_eq!(fs::read(snap.join(plain)).unwrap(), hub.file(plain).data);
    assert!(fs::symlink_metadata(snap.join(BIG)).is_err());
    assert!(!hub.requests().iter().any(|r| r.path.contains(".fp16.")));
}

#[test]
fn second_call_downloads_nothing() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&hub, tmp.path());
    let first = fetch(&cfg, true).unwrap();
    hub.clear();
    let events = Mutex::new(Vec::new());
    let second = snapshot(&cfg, REPO, "main", &FileSelection::diffusers(true), &|e| {
        events.lock().unwrap().push(e)
    })
    .unwrap();
    assert_eq!(first, second);
    assert_eq!(file_requests(&hub).len(), 0, "{:?}", hub.requests());
    assert_eq!(hub.requests().len(), 1, "only the file list");
    assert!(
        events
            .into_inner()
            .unwrap()
            .iter()
            .all(|e| matches!(e, DownloadEvent::Cached { .. }))
    );
}

#[test]
fn missing_snapshot_link_is_relinked_from_existing_blob() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&hub, tmp.path());
    let snap = fetch(&cfg, true).unwrap();
    fs::remove_file(snap.join(BIG)).unwrap();
    hub.clear();
    fetch(&cfg, true).unwrap();
    assert_eq!(fs::read(snap.join(BIG)).unwrap(), hub.file(BIG).data);
    assert!(
        file_requests(&hub).iter().all(|r| r.method == "HEAD"),
        "blob reused, no GET: {:?}",
        hub.requests()
    );
}

fn interrupted_download_resumes(ignore_range: bool) {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&hub, tmp.path());
    let cut = 100_000;
    *hub.state.cut_once.lock().unwrap() = Some((BIG.to_string(), cut));
    let err = fetch(&cfg, true).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
    assert!(err.to_string().contains("/cdn/"), "names the URL: {err}");

    let etag = &hub.file(BIG).etag;
    let blobs = tmp.path().join("models--test-org--tiny-model/blobs");
    let partial = blobs.join(format!("{etag}.incomplete"));
    assert_eq!(fs::metadata(&partial).unwrap().len(), cut as u64);

    hub.state.ignore_range.store(ignore_range, Ordering::SeqCst);
    hub.clear();
    let events = Mutex::new(Vec::new());
    let snap = snapshot(&cfg, REPO, "main", &FileSelection::diffusers(true), &|e| {
        events.lock().unwrap().push(e)
    })
    .unwrap();
    assert_eq!(fs::read(snap.join(BIG)).unwrap(), hub.file(BIG).data);
    assert!(!partial.exists());
    let range = hub
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path.starts_with("/cdn/"))
        .and_then(|r| r.headers.get("range").cloned());
    assert_eq!(range.as_deref(), Some(format!("bytes={cut}-").as_str()));
    let resumed_from = if ignore_range { 0 } else { cut as u64 };
    assert!(
        events
            .into_inner()
            .unwrap()
            .contains(&DownloadEvent::Started {
                path: BIG.into(),
                total: Some(hub.file(BIG).data.len() as u64),
                resumed_from
            })
    );
}

#[test]
fn interrupted_download_resumes_with_range() {
    interrupted_download_resumes(false);
}

#[test]
fn interrupted_download_restarts_when_server_ignores_range() {
    interrupted_download_resumes(true);
}

#[test]
fn offline_resolves_without_requests() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&hub, tmp.path());
    let online = fetch(&cfg, true).unwrap();
    hub.clear();
    cfg.offline = true;
    assert_eq!(fetch(&cfg, true).unwrap(), online);
    // By full commit sha too, and preferring plain weights accepts the fp16 that is there.
    let by_sha = snapshot(&cfg, REPO, SHA, &FileSelection::diffusers(false), &|_| {}).unwrap();
    assert_eq!(by_sha, online);
    assert!(hub.requests().is_empty());

    // A missing file is named.
    fs::remove_file(online.join(BIG)).unwrap();
    let err = fetch(&cfg, true).unwrap_err().to_string();
    assert!(err.contains("offline mode is on"), "{err}");
    assert!(err.contains("unet/ weights"), "{err}");
    // So is a missing shard of an index.
    fs::remove_file(online.join("text_encoder/model-00002-of-00002.safetensors")).unwrap();
    let err = fetch(&cfg, true).unwrap_err().to_string();
    assert!(
        err.contains("text_encoder/model-00002-of-00002.safetensors"),
        "{err}"
    );
    assert!(hub.requests().is_empty());
}

#[test]
fn offline_with_empty_cache_errors_clearly() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&hub, tmp.path());
    cfg.offline = true;
    let err = fetch(&cfg, true).unwrap_err();
    assert!(matches!(err, HubError::Offline { .. }));
    let msg = err.to_string();
    assert!(msg.contains("HF_HUB_OFFLINE") && msg.contains(REPO) && msg.contains("refs/main"));
    assert!(hub.requests().is_empty());
}

#[test]
fn unreachable_hub_falls_back_to_complete_cache() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let snap = fetch(&config(&hub, tmp.path()), true).unwrap();
    // A port nobody listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead_endpoint = format!("http://127.0.0.1:{port}");
    let dead = HubConfig::new(dead_endpoint.clone(), tmp.path());
    assert_eq!(fetch(&dead, true).unwrap(), snap);
    let empty = tempfile::tempdir().unwrap();
    let err = fetch(&HubConfig::new(dead_endpoint.clone(), empty.path()), true).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("{dead_endpoint}/api/models/")),
        "{err}"
    );
}

#[test]
fn unknown_repo_is_named() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let err = snapshot(
        &config(&hub, tmp.path()),
        "test-org/nope",
        "main",
        &FileSelection::default(),
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("'test-org/nope' not found"),
        "{err}"
    );

    let err = snapshot(
        &config(&hub, tmp.path()),
        REPO,
        "v9",
        &FileSelection::default(),
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err}");
}

#[test]
fn gated_repo_needs_a_token() {
    let hub = FakeHub::start();
    hub.state.require_token.store(true, Ordering::SeqCst);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&hub, tmp.path());
    let err = fetch(&cfg, true).unwrap_err();
    assert!(
        matches!(err, HubError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    assert!(err.to_string().contains(REPO), "{err}");

    cfg.token = Some("wrong".into());
    let err = fetch(&cfg, true).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");

    cfg.token = Some(TOKEN.into());
    hub.clear();
    let snap = fetch(&cfg, true).unwrap();
    assert_eq!(fs::read(snap.join(BIG)).unwrap(), hub.file(BIG).data);
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        hub.requests()
            .iter()
            .all(|r| r.headers.get("authorization") == Some(&bearer)),
        "same host: the token goes everywhere"
    );
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

#[test]
fn cache_dir_precedence() {
    let home = ("HOME", "/home/u");
    assert_eq!(
        cache_dir_from_vars(&vars(&[home])),
        PathBuf::from("/home/u/.cache/huggingface/hub")
    );
    assert_eq!(
        cache_dir_from_vars(&vars(&[home, ("XDG_CACHE_HOME", "/xdg")])),
        PathBuf::from("/xdg/huggingface/hub")
    );
    assert_eq!(
        cache_dir_from_vars(&vars(&[
            home,
            ("XDG_CACHE_HOME", "/xdg"),
            ("HF_HOME", "/hf")
        ])),
        PathBuf::from("/hf/hub")
    );
    assert_eq!(
        cache_dir_from_vars(&vars(&[home, ("HF_HOME", "~/hf")])),
        PathBuf::from("/home/u/hf/hub")
    );
    assert_eq!(
        cache_dir_from_vars(&vars(&[home, ("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")])),
        PathBuf::from("/c")
    );
    assert_eq!(
        cache_dir_from_vars(&vars(&[
            home,
            ("HF_HOME", "/hf"),
            ("HUGGINGFACE_HUB_CACHE", "/legacy")
        ])),
        PathBuf::from("/legacy")
    );
    assert_eq!(
        cache_dir_from_vars(&vars(&[
            ("HF_HUB_CACHE", "/c"),
            ("HUGGINGFACE_HUB_CACHE", "/legacy")
        ])),
        PathBuf::from("/c")
    );
    assert_eq!(
        hf_home_from_vars(&vars(&[home, ("HF_HOME", "/hf")])),
        PathBuf::from("/hf")
    );
}

#[test]
fn config_from_vars() {
    let tmp = tempfile::tempdir().unwrap();
    let hf_home = tmp.path().to_str().unwrap();
    fs::write(tmp.path().join("token"), "hf_from_file\n").unwrap();

    let cfg = HubConfig::from_vars(vars(&[("HOME", "/home/u"), ("HF_HOME", hf_home)]));
    assert_eq!(cfg.endpoint, "https://huggingface.co");
    assert_eq!(cfg.cache_dir, tmp.path().join("hub"));
    assert!(!cfg.offline);
    assert_eq!(cfg.token.as_deref(), Some("hf_from_file"));

    let cfg = HubConfig::from_vars(vars(&[
        ("HF_HOME", hf_home),
        ("HF_TOKEN", "hf_env"),
        ("HF_ENDPOINT", "http://127.0.0.1:1234/"),
        ("HF_HUB_OFFLINE", "1"),
    ]));
    assert_eq!(cfg.token.as_deref(), Some("hf_env"));
    assert_eq!(cfg.endpoint, "http://127.0.0.1:1234");
    assert!(cfg.offline);
    for (v, want) in [("true", true), ("YES", true), ("0", false), ("no", false)] {
        let cfg = HubConfig::from_vars(vars(&[("HF_HOME", hf_home), ("HF_HUB_OFFLINE", v)]));
        assert_eq!(cfg.offline, want, "{v}");
    }
}

#[test]
fn concurrent_downloads_share_the_cache() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&hub, tmp.path());
    let snaps: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| fetch(&cfg, true))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(snaps.iter().all(|p| *p == snaps[0]));
    for path in FP16_SET {
        assert_eq!(
            fs::read(snaps[0].join(path)).unwrap(),
            hub.file(path).data,
            "{path}"
        );
    }
}

#[test]
fn revision_cannot_escape_the_cache() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let err = snapshot(
        &config(&hub, tmp.path()),
        REPO,
        "../../x",
        &FileSelection::default(),
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, HubError::InvalidRevision(_)), "{err}");
    assert!(hub.requests().is_empty());
}

#[test]
fn blob_of_wrong_size_is_reported_as_corruption() {
    let hub = FakeHub::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&hub, tmp.path());
    let snap = fetch(&cfg, true).unwrap();
    let blob = tmp
        .path()
        .join("models--test-org--tiny-model/blobs")
        .join(&hub.file(BIG).etag);
    fs::write(&blob, b"short").unwrap();
    fs::remove_file(snap.join(BIG)).unwrap();
    let err = fetch(&cfg, true).unwrap_err();
    assert!(matches!(err, HubError::CacheCorrupt { .. }), "{err}");
    assert!(err.to_string().contains(&hub.file(BIG).etag), "{err}");
}
