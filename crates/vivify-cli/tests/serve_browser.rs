//! The web page in a real browser: headless Chromium (driven through chromedriver's W3C
//! WebDriver API) uploads an image, generates with the tiny model, plays the result and finds
//! the job in the history. A screenshot of the page is saved as a test artifact:
//! `<target>/tmp/serve-page.png` (docs/serve-page.png is a copy).

#[path = "../../vivify-serve/tests/common/mod.rs"]
mod common;
#[path = "serve_process/mod.rs"]
mod serve_process;
#[path = "../../vivify-video/tests/webdriver/mod.rs"]
mod webdriver;

use base64::Engine;
use serde_json::{Value, json};
use serve_process::{Serve, require};
use std::time::Duration;
use webdriver::Browser;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

#[test]
fn chromium_generates_a_video_from_the_page() {
    let chromium = require("chromium");
    let chromedriver = require("chromedriver");
    let dir = tempfile::tempdir().unwrap();
    // Each job runs out of memory once (a simulated budget) and steps down one rung, which the
    // history shows.
    let serve = Serve::start(dir.path(), &["--simulate-denoise-oom", "1"]);
    let image = dir.path().join("upload.png");
    std::fs::write(&image, common::png(160, 120)).unwrap();

    let browser = Browser::start(
        &chromium,
        &chromedriver,
        &["--hide-scrollbars", "--window-size=1200,1400"],
        Duration::from_secs(90),
    );
    browser.call(
        "POST",
        "/url",
        Some(json!({"url": format!("{}/", serve.http.base)})),
    );
    let script = |code: &str, args: Value| browser.script(code, args);
    let find = |css: &str| -> String {
        let e = browser.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        e[ELEMENT].as_str().unwrap().to_string()
    };
    // The page has read the server's limits (the dev ranges reach 2 frames).
    let ready = script(
        "const done = arguments[arguments.length - 1];
         const t = setInterval(() => { if (document.getElementById('frames').min === '2') {
             clearInterval(t); done(true); } }, 50);",
        json!([]),
    );
    assert_eq!(ready, true);
    // Upload through the file input, as a click on the drop zone does.
    let input = find("#image-input");
    browser.call(
        "POST",
        &format!("/element/{input}/value"),
        Some(json!({"text": image.display().to_string()})),
    );
    // The preview shows and the 256p preset follows the image's 4:3 aspect.
    let preset = script(
        "const done = arguments[arguments.length - 1];
         const $ = (id) => document.getElementById(id);
         const t = setInterval(() => { if (!$('preview').hidden && $('preview').naturalWidth) {
             clearInterval(t);
             document.querySelector('#presets [data-p=\"256\"]').click();
             done([$('width').value, $('height').value]); } }, 50);",
        json!([]),
    );
    assert_eq!(preset, json!(["344", "256"]), "256p at 4:3");
    // A tiny job: custom 64x64, 4 frames, 3 steps, fixed seed.
    script(
        "const done = arguments[arguments.length - 1];
         const $ = (id) => document.getElementById(id);
         const set = (id, v) => { $(id).value = v; $(id).dispatchEvent(new Event('input')); };
         document.querySelector('#presets [data-p=\"custom\"]').click();
         set('prompt', 'a red balloon drifting over a field');
         set('width', 64); set('height', 64);
         set('frames', 4); set('steps', 3); set('fps', 8); set('guidance', 7.5);
         $('seed-random').click(); set('seed', 7);
         done(true);",
        json!([]),
    );
    let generate = find("#generate");
    browser.call(
        "POST",
        &format!("/element/{generate}/click"),
        Some(json!({})),
    );
    // The result loads in the player; the job shows in the history.
    let result = script(
        "const done = arguments[arguments.length - 1];
         const v = document.getElementById('player');
         const t = setInterval(() => {
           const card = document.querySelector('#history .card');
           const err = document.getElementById('form-error');
           if (!err.hidden) { clearInterval(t); done({error: err.textContent}); }
           if (v.src && v.readyState >= 1 && v.duration > 0 && card) {
             clearInterval(t);
             done({duration: v.duration, width: v.videoWidth, height: v.videoHeight,
                   job: v.dataset.job, card: card.dataset.id, history: card.textContent,
                   download: document.getElementById('download').getAttribute('href')});
           } }, 100);",
        json!([]),
    );
    eprintln!("page result: {result}");
    assert!(result["error"].is_null(), "{result}");
    assert_eq!(result["width"], 64, "{result}");
    assert_eq!(result["height"], 64, "{result}");
    let duration = result["duration"].as_f64().unwrap();
    assert!(
        (duration - 0.5).abs() <= 0.125,
        "4 frames at 8 fps: {duration}"
    );
    assert_eq!(result["card"], result["job"], "{result}");
    assert!(
        result["history"]
            .as_str()
            .unwrap()
            .contains("a red balloon"),
        "{result}"
    );
    assert!(
        result["history"]
            .as_str()
            .unwrap()
            .contains("64×64, 4 frames, 3 steps"),
        "{result}"
    );
    assert!(
        result["history"]
            .as_str()
            .unwrap()
            .contains("low memory, retried with: denoise: sequential guidance on"),
        "{result}"
    );
    assert!(
        result["download"].as_str().unwrap().ends_with("/video"),
        "{result}"
    );
    let job = serve.http.job(result["job"].as_str().unwrap());
    assert_eq!(job["state"], "done");
    assert_eq!(job["params"]["seed"], 7);

    // "Use these settings again" puts the job's settings back into the form.
    script(
        "const done = arguments[arguments.length - 1];
         document.getElementById('prompt').value = '';
         [...document.querySelectorAll('#history .card button')]
           .find((b) => b.textContent.startsWith('Use these')).click();
         setTimeout(() => done(true), 300);",
        json!([]),
    );
    let form = script(
        "const done = arguments[arguments.length - 1];
         const $ = (id) => document.getElementById(id);
         done([$('prompt').value, $('frames').value, $('seed').value, $('width').value]);",
        json!([]),
    );
    assert_eq!(
        form,
        json!(["a red balloon drifting over a field", "4", "7", "64"])
    );

    let shot = browser.call("GET", "/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    std::fs::write(&artifact, &png).unwrap();
    eprintln!("screenshot: {}", artifact.display());

    // Phone width: nothing sticks out sideways.
    browser.call(
        "POST",
        "/window/rect",
        Some(json!({"width": 390, "height": 844})),
    );
    let widths = script(
        "const done = arguments[arguments.length - 1];
         setTimeout(() => done([document.documentElement.scrollWidth, window.innerWidth]), 300);",
        json!([]),
    );
    let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "the page is {scroll} px wide in a {inner} px window"
    );
    drop(browser);
}
