//! HTTP helpers and the route and bad-input checks shared by the in-process tests (here) and the
//! tests against the `vivify serve` binary (crates/vivify-cli/tests/serve.rs).
#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
pub struct Http {
    pub base: String,
    agent: ureq::Agent,
}

impl Http {
    pub fn new(base: String) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Http { base, agent }
    }

    fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Reply {
        let mut r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = r
            .body_mut()
            .with_config()
            .limit(100 << 20)
            .read_to_vec()
            .unwrap_or_default();
        Reply {
            status: r.status().as_u16(),
            content_type,
            headers,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        Self::reply(self.agent.get(format!("{}{path}", self.base)).call(), path)
    }

    pub fn get_range(&self, path: &str, range: &str) -> Reply {
        Self::reply(
            self.agent
                .get(format!("{}{path}", self.base))
                .header("Range", range)
                .call(),
            path,
        )
    }

    pub fn delete(&self, path: &str) -> Reply {
        Self::reply(
            self.agent.delete(format!("{}{path}", self.base)).call(),
            path,
        )
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        Self::reply(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Content-Type", content_type)
                .send(&body[..]),
            path,
        )
    }

    /// `POST /api/jobs` with the given form parts (name, file name, bytes).
    pub fn post_form(&self, parts: &[(&str, Option<&str>, &[u8])]) -> Reply {
        let boundary = "vivify-test-boundary-7d1f";
        let mut body = Vec::new();
        for (name, file, bytes) in parts {
            body.extend(format!("--{boundary}\r\n").bytes());
            match file {
                Some(f) => body.extend(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .bytes(),
                ),
                None => body.extend(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").bytes(),
                ),
            }
            body.extend_from_slice(bytes);
            body.extend(b"\r\n");
        }
        body.extend(format!("--{boundary}--\r\n").bytes());
        self.post_raw(
            "/api/jobs",
            &format!("multipart/form-data; boundary={boundary}"),
            body,
        )
    }

    pub fn post_job(&self, image: &[u8], params: &Value) -> Reply {
        self.post_form(&[
            ("image", Some("in.png"), image),
            ("params", None, params.to_string().as_bytes()),
        ])
    }

    /// Queues a job and returns its id (panics unless 202).
    pub fn queue(&self, image: &[u8], params: &Value) -> String {
        let r = self.post_job(image, params);
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().unwrap().to_string()
    }

    pub fn job(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/jobs/{id}"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// Polls until `until` holds for the job's JSON.
    pub fn wait_job(&self, id: &str, what: &str, until: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let j = self.job(id);
            if until(&j) {
                return j;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "job {id}: timed out waiting for {what}: {j}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_state(&self, id: &str, state: &str) -> Value {
        self.wait_job(id, state, |j| j["state"] == state)
    }

    /// Reads `GET /api/jobs/{id}/events` until its final event: (event name, data).
    pub fn events(&self, id: &str) -> Vec<(String, Value)> {
        let mut r = self
            .agent
            .get(format!("{}/api/jobs/{id}/events", self.base))
            .call()
            .expect("events");
        assert_eq!(r.status().as_u16(), 200);
        let ct = r.headers().get("content-type").unwrap().to_str().unwrap();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        let reader = BufReader::new(r.body_mut().as_reader());
        let mut out = Vec::new();
        let mut name = String::new();
        for line in reader.lines() {
            let line = line.expect("reading events");
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d).unwrap();
                assert_eq!(v["type"], name.as_str(), "{d}");
                out.push((name.clone(), v));
                if matches!(name.as_str(), "done" | "failed" | "cancelled") {
                    break;
                }
            }
        }
        out
    }
}

/// A small PNG of a gradient.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            128,
        ])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A decompression bomb: a valid PNG header claiming `side` x `side` pixels, and a few bytes of
/// zlib data that would inflate to gigabytes.
pub fn bomb_png(side: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend(crc32(&c).to_be_bytes());
    };
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend(side.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    // zlib header + a stored-nothing deflate stream start: enough to be "compressed data".
    chunk(b"IDAT", &[0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00]);
    chunk(b"IEND", &[]);
    out
}

/// Parameters of a job the tiny model finishes in about a second.
pub fn tiny_params(steps: usize) -> Value {
    json!({"prompt": "a red balloon drifting", "negative_prompt": "blurry", "width": 64,
           "height": 64, "frames": 4, "steps": steps, "guidance": 7.5, "fps": 8, "seed": 42})
}

fn assert_bad(r: &Reply, field: &str, limit: Option<&str>, what: &str) {
    assert_eq!(
        r.status,
        400,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    assert_eq!(v["field"], field, "{what}: {v}");
    assert!(v["error"].as_str().unwrap().contains(field), "{what}: {v}");
    if let Some(limit) = limit {
        assert_eq!(v["limit"], limit, "{what}: {v}");
    }
}

/// Every kind of bad input gets a 400 naming the field (and limit), and none leaves a job.
pub fn check_bad_input(http: &Http) {
    let before = http.get("/api/jobs").json()["jobs"]
        .as_array()
        .unwrap()
        .len();
    let good = png(64, 48);
    let params = tiny_params(2);
    let with = |key: &str, value: Value| {
        let mut p = params.clone();
        p[key] = value;
        p
    };
    // The upload.
    assert_bad(
        &http.post_job(b"GIF89a not really", &params),
        "image",
        None,
        "non-image",
    );
    assert_bad(
        &http.post_job(b"hello world", &params),
        "image",
        None,
        "text file",
    );
    let mut corrupt = good.clone();
    corrupt.truncate(good.len() / 2);
    assert_bad(
        &http.post_job(&corrupt, &params),
        "image",
        None,
        "truncated PNG",
    );
    let mut garbled = good.clone();
    for b in garbled.iter_mut().skip(60) {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    assert_bad(
        &http.post_job(&garbled, &params),
        "image",
        None,
        "corrupt PNG data",
    );
    let mut big = good.clone();
    big.resize(20 * 1024 * 1024 + 1000, 0);
    assert_bad(
        &http.post_job(&big, &params),
        "image",
        Some("20 MB"),
        "over 20 MB",
    );
    assert_bad(
        &http.post_job(&png(8200, 8), &params),
        "image",
        Some("8192 px a side"),
        "over 8192 px",
    );
    assert_bad(
        &http.post_job(&bomb_png(60_000), &params),
        "image",
        Some("8192 px a side"),
        "decompression bomb",
    );
    // The parameters.
    let cases = [
        ("frames", json!(33), Some("2 to 32")),
        ("frames", json!(1), Some("2 to 32")),
        ("steps", json!(0), Some("1 to 100")),
        ("steps", json!(101), Some("1 to 100")),
        ("guidance", json!(0.5), Some("1 to 20")),
        ("guidance", json!(21), Some("1 to 20")),
        ("fps", json!(3), Some("4 to 24")),
        ("fps", json!(25), Some("4 to 24")),
        ("width", json!(60), Some("multiple of 8, 16 to 2048")),
        ("height", json!(4096), Some("multiple of 8, 16 to 2048")),
        ("seed", json!(-5), None),
        ("steps", json!("many"), None),
        ("prompt", json!(""), None),
        ("prompt", json!(7), None),
    ];
    for (key, value, limit) in cases {
        let what = format!("{key} = {value}");
        assert_bad(&http.post_job(&good, &with(key, value)), key, limit, &what);
    }
    let mut unknown = params.clone();
    unknown["colour"] = json!("red");
    assert_bad(
        &http.post_job(&good, &unknown),
        "colour",
        None,
        "unknown field",
    );
    let mut no_prompt = params.clone();
    no_prompt.as_object_mut().unwrap().remove("prompt");
    assert_bad(
        &http.post_job(&good, &no_prompt),
        "prompt",
        None,
        "no prompt",
    );
    assert_bad(
        &http.post_form(&[
            ("image", Some("a.png"), &good),
            ("params", None, b"{not json"),
        ]),
        "params",
        None,
        "params not JSON",
    );
    assert_bad(
        &http.post_form(&[("params", None, params.to_string().as_bytes())]),
        "image",
        None,
        "no image",
    );
    assert_bad(
        &http.post_form(&[("image", Some("a.png"), &good)]),
        "params",
        None,
        "no params",
    );
    assert_bad(
        &http.post_form(&[
            ("image", Some("a.png"), &good),
            ("params", None, params.to_string().as_bytes()),
            ("path", None, b"../../etc/passwd"),
        ]),
        "path",
        None,
        "unknown form field",
    );
    assert_bad(
        &http.post_raw(
            "/api/jobs",
            "application/json",
            params.to_string().into_bytes(),
        ),
        "body",
        None,
        "not multipart",
    );
    // The planner preview checks its query the same way.
    assert_bad(
        &http.get("/api/plan?frames=99"),
        "frames",
        Some("2 to 32"),
        "plan frames",
    );
    assert_bad(
        &http.get("/api/plan?width=abc"),
        "width",
        None,
        "plan width",
    );
    assert_bad(
        &http.get("/api/plan?depth=3"),
        "depth",
        None,
        "plan unknown",
    );
    // Unknown jobs and routes.
    for path in [
        "/api/jobs/0123456789abcdef",
        "/api/jobs/nope/events",
        "/api/jobs/nope/video",
        "/api/jobs/nope/thumbnail",
        "/api/jobs/nope/image",
        "/api/jobs/..%2F..%2Fetc%2Fpasswd/video",
        "/api/nothing",
    ] {
        let r = http.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].is_string(), "{path}");
    }
    assert_eq!(http.delete("/api/jobs/nope").status, 404);
    // Nothing was queued by any of it, and the server is still well.
    let after = http.get("/api/jobs").json()["jobs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "a bad request made a job");
    assert_eq!(http.get("/api/health").json()["status"], "ok");
}

/// The read-only routes: page, assets, health, system, OpenAPI (naming every route), tokens
/// and the planner preview.
pub fn check_info_routes(http: &Http) {
    let page = http.get("/");
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("<title>vivify</title>") && html.contains("/app.js"));
    for asset in ["/app.js", "/style.css"] {
        let r = http.get(asset);
        assert_eq!(r.status, 200, "{asset}");
        assert!(!r.body.is_empty());
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page fetches nothing from elsewhere"
    );
    let health = http.get("/api/health").json();
    assert_eq!(health["status"], "ok");
    let system = http.get("/api/system").json();
    assert_eq!(system["model"], "tiny");
    assert_eq!(system["device"], "cpu");
    assert_eq!(system["limits"]["frames"], json!([2, 32]));
    assert!(system["memory"]["total_bytes"].as_u64().unwrap() > 0);
    let spec = http.get("/api/openapi.json");
    assert!(spec.content_type.starts_with("application/json"));
    let spec = spec.json();
    assert_eq!(spec["openapi"], "3.1.0");
    for route in [
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/events",
        "/api/jobs/{id}/video",
        "/api/jobs/{id}/thumbnail",
        "/api/jobs/{id}/image",
        "/api/plan",
        "/api/tokens",
        "/api/health",
        "/api/system",
        "/api/openapi.json",
    ] {
        assert!(spec["paths"][route].is_object(), "openapi lacks {route}");
    }
    let tokens = http.get("/api/tokens?text=a%20red%20balloon").json();
    assert_eq!(tokens["max"], 77);
    assert!(tokens["count"].as_u64().unwrap() >= 4, "{tokens}");
    let plan = http.get("/api/plan?width=64&height=64&frames=4&guidance=7.5");
    assert_eq!(plan.status, 200, "{}", String::from_utf8_lossy(&plan.body));
    let plan = plan.json();
    assert_eq!(plan["fits"], true, "{plan}");
    assert!(plan["predicted_peak_bytes"].as_u64().unwrap() > 0);
    assert!(plan["changes"].is_array());
}

/// A job from upload to video: 202, events in order, `done`, the video with ranges, the
/// thumbnail and upload, the listing, then delete.
pub fn check_job_lifecycle(http: &Http) -> String {
    let image = png(80, 64);
    // A job ahead of it, so its event stream opens while it waits and hears every event.
    let ahead = http.queue(&png(32, 32), &tiny_params(2));
    let id = http.queue(&image, &tiny_params(3));
    let events = http.events(&id);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"done"), "{events:?}");
    assert_eq!(names.first(), Some(&"queued"), "{events:?}");
    for stage in [
        "encode text",
        "encode image",
        "denoise",
        "decode",
        "encode video",
    ] {
        assert!(
            events
                .iter()
                .any(|(n, v)| n == "stage" && v["stage"] == stage),
            "no stage {stage}: {events:?}"
        );
    }
    let steps: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "step")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(steps.len(), 3, "{events:?}");
    assert_eq!(steps[2]["step"], 3);
    assert_eq!(steps[2]["total"], 3);
    assert_eq!(steps[2]["eta_seconds"], 0.0);
    assert!(steps[0]["eta_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(http.job(&ahead)["state"], "done");
    let job = http.job(&id);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["params"]["frames"], 4);
    assert_eq!(job["params"]["seed"], 42);
    assert!(job.get("error").is_none());
    let video = http.get(job["video_url"].as_str().unwrap());
    assert_eq!(video.status, 200);
    assert_eq!(video.content_type, "video/mp4");
    assert_eq!(&video.body[4..8], b"ftyp");
    assert_eq!(video.header("accept-ranges"), Some("bytes"));
    let part = http.get_range(&format!("/api/jobs/{id}/video"), "bytes=0-99");
    assert_eq!(part.status, 206);
    assert_eq!(part.body, video.body[..100]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 0-99/{}", video.body.len()).as_str())
    );
    let tail = http.get_range(&format!("/api/jobs/{id}/video"), "bytes=-10");
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, video.body[video.body.len() - 10..]);
    let thumb = http.get(&format!("/api/jobs/{id}/thumbnail"));
    assert_eq!(thumb.status, 200);
    let thumb = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (64, 64));
    assert_eq!(http.get(&format!("/api/jobs/{id}/image")).body, image);
    let list = http.get("/api/jobs").json();
    assert!(
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );
    id
}

/// Deleting a finished job removes it and its files.
pub fn check_delete(http: &Http, id: &str) {
    let r = http.delete(&format!("/api/jobs/{id}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["deleted"], true);
    assert_eq!(http.get(&format!("/api/jobs/{id}")).status, 404);
    assert_eq!(http.get(&format!("/api/jobs/{id}/video")).status, 404);
}
