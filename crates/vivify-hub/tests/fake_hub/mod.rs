//! A tiny fake of the hub's routes on 127.0.0.1, for the tests: the model-info API, `resolve`
//! (with ETag / X-Linked-Etag / X-Repo-Commit, one file redirected with 302 to `/cdn/{etag}`),
//! Range requests, one-shot truncated responses, optional token check, and a request log.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub const REPO: &str = "test-org/tiny-model";
pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
pub const BIG: &str = "unet/diffusion_pytorch_model.fp16.safetensors";
pub const TOKEN: &str = "hf_secret";

#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

pub struct File {
    pub data: Vec<u8>,
    pub etag: String,
    pub lfs: bool,
}

pub struct State {
    pub files: BTreeMap<String, File>,
    pub requests: Mutex<Vec<Req>>,
    /// (repo path, bytes to send) of the next GET body to cut short.
    pub cut_once: Mutex<Option<(String, usize)>>,
    pub ignore_range: AtomicBool,
    pub require_token: AtomicBool,
}

pub struct FakeHub {
    pub endpoint: String,
    pub state: Arc<State>,
}

fn pseudo_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn fake_hash(s: &str, len: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::new();
    let mut i = 0u64;
    while out.len() < len {
        for b in s.bytes().chain(i.to_le_bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
        i += 1;
    }
    out.truncate(len);
    out
}

pub fn repo_files() -> BTreeMap<String, File> {
    let text = |s: &str| s.as_bytes().to_vec();
    let mut f = BTreeMap::new();
    let mut add = |path: &str, data: Vec<u8>, lfs: bool| {
        let etag = fake_hash(path, if lfs { 64 } else { 40 });
        f.insert(path.to_string(), File { data, etag, lfs });
    };
    add(
        "model_index.json",
        text(
            r#"{"_class_name": "I2VGenXLPipeline", "unet": ["diffusers", "I2VGenXLUNet"], "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"], "feature_extractor": ["transformers", "CLIPImageProcessor"]}"#,
        ),
        false,
    );
    add("README.md", text("# tiny"), false);
    add("unet/config.json", text(r#"{"in_channels": 4}"#), false);
    add(
        "unet/diffusion_pytorch_model.safetensors",
        pseudo_bytes(1, 20_000),
        true,
    );
    add(BIG, pseudo_bytes(2, 300_000), true);
    add(
        "unet/diffusion_pytorch_model.bin",
        pseudo_bytes(3, 1000),
        true,
    );
    add("text_encoder/config.json", text("{}"), false);
    add(
        "text_encoder/model.safetensors.index.json",
        text(
            r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}}"#,
        ),
        false,
    );
    add(
        "text_encoder/model-00001-of-00002.safetensors",
        pseudo_bytes(4, 5000),
        true,
    );
    add(
        "text_encoder/model-00002-of-00002.safetensors",
        pseudo_bytes(5, 6000),
        true,
    );
    add("scheduler/scheduler_config.json", text("{}"), false);
    add("tokenizer/vocab.json", text(r#"{"a": 0}"#), false);
    add("tokenizer/merges.txt", text("#version: 0.2\n"), false);
    add("tokenizer/tokenizer_config.json", text("{}"), false);
    add(
        "feature_extractor/preprocessor_config.json",
        text("{}"),
        false,
    );
    f
}

impl FakeHub {
    pub fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            files: repo_files(),
            requests: Mutex::new(Vec::new()),
            cut_once: Mutex::new(None),
            ignore_range: AtomicBool::new(false),
            require_token: AtomicBool::new(false),
        });
        let st = state.clone();
        let ep = endpoint.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let st = st.clone();
                let ep = ep.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &st, &ep);
                });
            }
        });
        FakeHub { endpoint, state }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    pub fn file(&self, path: &str) -> &File {
        &self.state.files[path]
    }
}

fn handle(stream: TcpStream, st: &State, endpoint: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Req {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
    };
    st.requests.lock().unwrap().push(req);
    let mut out = stream;
    let authorized = !st.require_token.load(Ordering::SeqCst)
        || headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"));

    let api_prefix = "/api/models/";
    if let Some(rest) = path.strip_prefix(api_prefix) {
        let Some((repo, rev)) = rest.split_once("/revision/") else {
            return respond(&mut out, 400, &[], b"", true);
        };
        if repo != REPO {
            return respond(
                &mut out,
                404,
                &[("X-Error-Code", "RepoNotFound".into())],
                b"{\"error\":\"Repository not found\"}",
                true,
            );
        }
        if !authorized {
            return respond(&mut out, 401, &[], b"{\"error\":\"gated\"}", true);
        }
        if rev != "main" && rev != SHA {
            return respond(
                &mut out,
                404,
                &[("X-Error-Code", "RevisionNotFound".into())],
                b"{}",
                true,
            );
        }
        let siblings: Vec<String> = st
            .files
            .keys()
            .map(|k| format!("{{\"rfilename\": \"{k}\"}}"))
            .collect();
        let body = format!(
            "{{\"id\": \"{REPO}\", \"sha\": \"{SHA}\", \"siblings\": [{}]}}",
            siblings.join(", ")
        );
        return respond(&mut out, 200, &[], body.as_bytes(), true);
    }
    let resolve_prefix = format!("/{REPO}/resolve/");
    if let Some(rest) = path.strip_prefix(&resolve_prefix) {
        if !authorized {
            return respond(&mut out, 401, &[], b"", method == "GET");
        }
        let Some((_rev, file_path)) = rest.split_once('/') else {
            return respond(&mut out, 400, &[], b"", true);
        };
        let Some(file) = st.files.get(file_path) else {
            return respond(
                &mut out,
                404,
                &[("X-Error-Code", "EntryNotFound".into())],
                b"",
                method == "GET",
            );
        };
        let common = vec![("X-Repo-Commit", SHA.to_string())];
        if file_path == BIG {
            let mut h = common;
            h.push(("X-Linked-Etag", format!("\"{}\"", file.etag)));
            h.push(("X-Linked-Size", file.data.len().to_string()));
            h.push(("Location", format!("{endpoint}/cdn/{}", file.etag)));
            return respond(&mut out, 302, &h, b"", true);
        }
        let mut h = common;
        if file.lfs {
            h.push(("X-Linked-Etag", format!("\"{}\"", file.etag)));
            h.push(("X-Linked-Size", file.data.len().to_string()));
        }
        h.push(("ETag", format!("\"{}\"", file.etag)));
        return serve(&mut out, st, &method, &headers, file_path, file, h);
    }
    if let Some(etag) = path.strip_prefix("/cdn/") {
        let Some((p, file)) = st.files.iter().find(|(_, f)| f.etag == etag) else {
            return respond(&mut out, 404, &[], b"", true);
        };
        // A CDN has its own ETag.
        let h = vec![("ETag", "\"cdn-etag\"".to_string())];
        return serve(&mut out, st, &method, &headers, p, file, h);
    }
    respond(&mut out, 404, &[], b"", true)
}

fn serve(
    out: &mut TcpStream,
    st: &State,
    method: &str,
    headers: &HashMap<String, String>,
    path: &str,
    file: &File,
    mut h: Vec<(&str, String)>,
) -> std::io::Result<()> {
    let len = file.data.len();
    let mut start = 0;
    let mut status = 200;
    if let Some(r) = headers.get("range")
        && !st.ignore_range.load(Ordering::SeqCst)
    {
        let from: usize = r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        if from >= len {
            h.push(("Content-Range", format!("bytes */{len}")));
            return respond(out, 416, &h, b"", true);
        }
        start = from;
        status = 206;
        h.push(("Content-Range", format!("bytes {from}-{}/{len}", len - 1)));
    }
    let body = &file.data[start..];
    if method == "HEAD" {
        h.push(("Content-Length", body.len().to_string()));
        return respond(out, status, &h, b"", false);
    }
    let cut = {
        let mut c = st.cut_once.lock().unwrap();
        match c.as_ref() {
            Some((p, n)) if p == path => {
                let n = *n;
                *c = None;
                Some(n)
            }
            _ => None,
        }
    };
    if let Some(n) = cut {
        // Promise the whole body, send only n bytes, hang up.
        write_head(out, status, &h, body.len())?;
        out.write_all(&body[..n.min(body.len())])?;
        out.flush()?;
        return out.shutdown(std::net::Shutdown::Both);
    }
    respond(out, status, &h, body, true)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    }
}

fn write_head(
    out: &mut TcpStream,
    status: u16,
    h: &[(&str, String)],
    content_length: usize,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nConnection: close\r\n",
        reason(status)
    );
    for (k, v) in h {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !h
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {content_length}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    h: &[(&str, String)],
    body: &[u8],
    send_body: bool,
) -> std::io::Result<()> {
    write_head(out, status, h, body.len())?;
    if send_body {
        out.write_all(body)?;
    }
    out.flush()
}
