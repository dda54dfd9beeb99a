//! The MP4 plays in a real browser: headless Chromium, driven through chromedriver's W3C
//! WebDriver HTTP API, loads it in a `<video>` element from a page served on 127.0.0.1.

mod common;

use common::{require, synthetic_clip};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vivify_video::mp4::write_mp4;
use vivify_video::{Frames, Mp4Options};

/// Serves `/` (the page) and `/clipN.mp4` from `dir` until the test ends.
fn serve(dir: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let _ = answer(stream, &dir);
            });
        }
    });
    port
}

fn answer(mut stream: TcpStream, dir: &std::path::Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/");
    let name = path.trim_start_matches('/');
    let (status, kind, body) = if name.is_empty() || name.contains("..") || name.contains('/') {
        (
            "200 OK",
            "text/html",
            b"<!doctype html><title>vivify</title>".to_vec(),
        )
    } else {
        match std::fs::read(dir.join(name)) {
            Ok(b) => ("200 OK", "video/mp4", b),
            Err(_) => ("404 Not Found", "text/plain", b"not found".to_vec()),
        }
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()
}

struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(url: &str, body: Value) -> Value {
    let mut resp = ureq::post(url)
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(90)))
        .build()
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let text = resp.body_mut().read_to_string().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
    assert!(!v["value"]["error"].is_string(), "POST {url} {body}: {v}");
    v["value"].clone()
}

#[test]
fn chromium_plays_the_mp4() {
    let chromium = require("chromium");
    let chromedriver = require("chromedriver");
    let dir = tempfile::tempdir().unwrap();
    // (width, height, frames, fps)
    let cases = [
        (512, 320, 10, 12.5),
        (255, 143, 12, 24.0),
        (256, 256, 8, 8.0),
    ];
    for (i, &(w, h, n, fps)) in cases.iter().enumerate() {
        let clip = synthetic_clip(w, h, n);
        let frames = Frames {
            width: w,
            height: h,
            frames: clip.iter().map(Vec::as_slice).collect(),
            fps,
        };
        write_mp4(
            &dir.path().join(format!("clip{i}.mp4")),
            &frames,
            &Mp4Options::default(),
        )
        .unwrap();
    }
    let port = serve(dir.path().to_path_buf());

    let driver_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let driver = Driver {
        child,
        base: format!("http://127.0.0.1:{driver_port}"),
    };
    let start = Instant::now();
    while ureq::get(&format!("{}/status", driver.base))
        .call()
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = tempfile::tempdir().unwrap();
    let session = post(
        &format!("{}/session", driver.base),
        json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--autoplay-policy=no-user-gesture-required",
                     format!("--user-data-dir={}", profile.path().display())]
        }}}}),
    );
    let sid = session["sessionId"]
        .as_str()
        .expect("session id")
        .to_string();
    let s = format!("{}/session/{sid}", driver.base);
    post(&format!("{s}/timeouts"), json!({"script": 30000}));
    post(
        &format!("{s}/url"),
        json!({"url": format!("http://127.0.0.1:{port}/")}),
    );
    let can_play = post(
        &format!("{s}/execute/sync"),
        json!({"script": "return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42C01E\"')", "args": []}),
    );
    eprintln!("canPlayType(avc1 baseline) = {can_play}");
    let script = r#"
        const [src, done] = arguments;
        const v = document.createElement('video');
        v.muted = true;
        v.preload = 'auto';
        const report = (why) => done({why, duration: v.duration, width: v.videoWidth,
            height: v.videoHeight, readyState: v.readyState,
            mediaError: v.error ? v.error.code + ' ' + v.error.message : null,
            currentTime: v.currentTime});
        v.onerror = () => report('error');
        v.onended = () => report('ended');
        v.onloadeddata = () => { v.play().catch(e => done({why: 'play failed: ' + e})); };
        v.src = src;
        document.body.appendChild(v);
    "#;
    let mut results = Vec::new();
    for (i, &(w, h, n, fps)) in cases.iter().enumerate() {
        let r = post(
            &format!("{s}/execute/async"),
            json!({"script": script, "args": [format!("/clip{i}.mp4")]}),
        );
        eprintln!("clip{i} {w}x{h} {n} frames @ {fps}: {r}");
        results.push(r);
    }
    let _ = ureq::delete(&s).call();
    for (r, &(w, h, n, fps)) in results.iter().zip(&cases) {
        assert_eq!(r["why"], "ended", "{w}x{h}: did not play to the end: {r}");
        let want = n as f64 / fps;
        let got = r["duration"].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1.0 / fps,
            "{w}x{h}: duration {got}, want {want}: {r}"
        );
        let (pw, ph) = (w + w % 2, h + h % 2);
        assert_eq!(r["width"].as_u64(), Some(pw as u64), "{r}");
        assert_eq!(r["height"].as_u64(), Some(ph as u64), "{r}");
    }
}
