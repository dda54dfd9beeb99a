//! `vivify serve` as a process: every route and bad input against the binary, the data-dir
//! lock, SIGTERM checkpointing, and `kill -9` mid-job followed by a restart that finishes it.

#[path = "../../vivify-serve/tests/common/mod.rs"]
mod common;
#[path = "serve_process/mod.rs"]
mod serve_process;

use common::{
    check_bad_input, check_delete, check_info_routes, check_job_lifecycle, png, tiny_params,
};
use serve_process::{Serve, require};
use std::process::Command;
use std::time::Instant;

#[test]
fn binary_serves_every_route_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--step-delay-ms", "150"]);
    check_info_routes(&serve.http);
    check_bad_input(&serve.http);
    let id = check_job_lifecycle(&serve.http);
    check_delete(&serve.http, &id);

    // A second server on the same data directory says why and exits.
    let out = Command::new(env!("CARGO_BIN_EXE_vivify"))
        .args(["serve", "--model", "tiny", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("already using the data directory"), "{text}");
    assert_eq!(
        serve.http.get("/api/health").status,
        200,
        "the first server was disturbed"
    );

    // SIGTERM: the running job is checkpointed, the process exits cleanly, the next start
    // resumes the job.
    let id = serve.http.queue(&png(64, 64), &tiny_params(6));
    serve
        .http
        .wait_job(&id, "a step", |j| j["progress"]["step"].as_u64() >= Some(1));
    let status = serve.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        dir.path()
            .join(format!("checkpoints/{id}.safetensors"))
            .exists()
    );
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .collect();
    assert!(!logs.is_empty(), "no log file");
    let serve = Serve::start(dir.path(), &[]);
    let job = serve.http.wait_state(&id, "done");
    assert_eq!(job["resumed"], 1, "{job}");
}

#[test]
fn kill_9_mid_job_then_restart_finishes_it_with_a_valid_video() {
    let ffprobe = require("ffprobe");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--step-delay-ms", "400"]);
    let id = serve.http.queue(&png(96, 64), &tiny_params(6));
    serve.http.wait_job(&id, "two steps", |j| {
        j["progress"]["step"].as_u64() >= Some(2)
    });
    serve.kill_9();

    let start = Instant::now();
    let serve = Serve::start(dir.path(), &[]);
    let job = serve.http.wait_state(&id, "done");
    assert_eq!(job["resumed"], 1, "{job}");
    eprintln!(
        "resumed job finished {:.1}s after the restart",
        start.elapsed().as_secs_f64()
    );
    let video = serve.http.get(&format!("/api/jobs/{id}/video"));
    assert_eq!(video.status, 200);
    let path = dir.path().join("downloaded.mp4");
    std::fs::write(&path, &video.body).unwrap();
    let out = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
        ])
        .args([
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &probe["streams"][0];
    assert_eq!(s["codec_name"], "h264", "{probe}");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(64), Some(64)),
        "{probe}"
    );
    assert_eq!(s["nb_read_frames"], "4", "{probe}");
}
