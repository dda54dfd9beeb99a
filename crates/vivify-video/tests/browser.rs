//! The MP4 plays in a real browser: headless Chromium, driven through chromedriver's W3C
//! WebDriver HTTP API, loads it in a `<video>` element from a page served on 127.0.0.1.

mod common;
mod webdriver;

use common::{require, synthetic_clip};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;
use vivify_video::mp4::write_mp4;
use vivify_video::{Frames, Mp4Options};
use webdriver::Browser;

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

    let browser = Browser::start(
        &chromium,
        &chromedriver,
        &["--autoplay-policy=no-user-gesture-required"],
        Duration::from_secs(30),
    );
    browser.call(
        "POST",
        "/url",
        Some(json!({"url": format!("http://127.0.0.1:{port}/")})),
    );
    let can_play = browser.call(
        "POST",
        "/execute/sync",
        Some(json!({"script": "return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42C01E\"')", "args": []})),
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
        let r = browser.script(script, json!([format!("/clip{i}.mp4")]));
        eprintln!("clip{i} {w}x{h} {n} frames @ {fps}: {r}");
        results.push(r);
    }
    drop(browser);
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
