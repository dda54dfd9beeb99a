//! The HTTP API (JSON; see openapi.json) and the page's assets.

use crate::events::{Broadcast, JobEvent};
use crate::state::{Shared, available_memory, total_memory};
use crate::store::{Job, JobState, now};
use crate::validation::{self, InvalidField, MAX_UPLOAD_BYTES};
use crate::{assets, plan};
use axum::Json;
use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use tower::ServiceExt;

type AppState = Arc<Shared>;

pub fn router(shared: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/api/health", get(health))
        .route("/api/system", get(system))
        .route("/api/openapi.json", get(openapi))
        .route("/api/plan", get(plan_preview))
        .route("/api/tokens", get(tokens))
        .route("/api/jobs", get(list_jobs).post(create_job))
        .route("/api/jobs/{id}", get(get_job).delete(delete_job))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/jobs/{id}/video", get(job_video))
        .route("/api/jobs/{id}/thumbnail", get(job_thumbnail))
        .route("/api/jobs/{id}/image", get(job_image))
        .fallback(not_found)
        // Room for the largest image plus the form around it; more is refused as a 400 naming
        // `image` (see `multipart_error`).
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES + (1 << 20)))
        .with_state(shared)
}

/// An error answer: a status and a JSON body with at least `error`.
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<InvalidField> for ApiError {
    fn from(e: InvalidField) -> Self {
        ApiError(
            StatusCode::BAD_REQUEST,
            serde_json::to_value(e).unwrap_or_default(),
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!("internal error: {e:#}");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("internal error: {e:#}")}),
        )
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn unknown_job(id: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no job `{id}`")}),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no route {} {}", req.method(), req.uri().path())}),
    )
}

fn find(s: &Shared, id: &str) -> ApiResult<Job> {
    s.store.get(id)?.ok_or_else(|| unknown_job(id))
}

/// A job as the API shows it: the stored record plus queue position, live progress and links.
fn job_json(s: &Shared, job: &Job, queue: &[String]) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    let id = &job.id;
    v["image_url"] = json!(format!("/api/jobs/{id}/image"));
    match job.state {
        JobState::Queued => {
            v["queue_position"] = json!(queue.iter().position(|q| q == id));
        }
        JobState::Running => {
            v["progress"] = json!(s.events.live(id).unwrap_or_default());
            v["cancel_requested"] = json!(s.cancel_requested(id));
        }
        JobState::Done => {
            v["video_url"] = json!(format!("/api/jobs/{id}/video"));
            v["thumbnail_url"] = json!(format!("/api/jobs/{id}/thumbnail"));
        }
        _ => {}
    }
    v
}

async fn health(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({
        "status": "ok",
        "model_loaded": s.model_loaded.load(std::sync::atomic::Ordering::SeqCst),
        "queued": s.store.queue()?.len(),
        "running": s.running_job(),
    })))
}

async fn system(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let i = &s.info;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "model": i.model,
        "model_loaded": s.model_loaded.load(std::sync::atomic::Ordering::SeqCst),
        "device": i.device,
        "dtype": format!("{:?}", i.dtype).to_lowercase(),
        "memory": {
            "total_bytes": total_memory(),
            "available_bytes": available_memory(),
            "budget_bytes": s.memory_budget(),
        },
        "limits": {
            "name": i.limits.name,
            "width": i.limits.size, "height": i.limits.size, "size_multiple": 8,
            "frames": i.limits.frames, "steps": i.limits.steps,
            "guidance": i.limits.guidance, "fps": i.limits.fps,
            "seed": [0, validation::MAX_SEED],
            "upload_bytes": MAX_UPLOAD_BYTES,
            "image_side": validation::MAX_IMAGE_SIDE,
            "prompt_tokens": i.tokenizer.as_ref().map_or(77, |t| t.max_length()),
        },
        "queue": { "queued": s.store.queue()?.len(), "running": s.running_job() },
    })))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::SPEC,
    )
        .into_response()
}

/// Parses one optional query number, naming the field when it is not one.
fn query_num<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
    default: T,
) -> Result<T, InvalidField> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| InvalidField::new(key, format!("{v:?} is not a number"), None)),
    }
}

async fn plan_preview(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    const KEYS: [&str; 4] = ["width", "height", "frames", "guidance"];
    if let Some(k) = q.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(InvalidField::new(
            k,
            format!("unknown field (known: {})", KEYS.join(", ")),
            None,
        )
        .into());
    }
    // The same checks as a job's, so the preview refuses what a job would.
    let mut params = serde_json::Map::new();
    params.insert("prompt".into(), json!("preview"));
    for k in ["width", "height", "frames"] {
        params.insert(k.into(), json!(query_num::<u64>(&q, k, 0)?));
    }
    params.insert(
        "guidance".into(),
        json!(query_num::<f64>(&q, "guidance", 9.0)?),
    );
    params.retain(|k, v| q.contains_key(k) || *v != json!(0));
    let p = validation::parse_params(
        &Value::Object(params).to_string(),
        &s.info.limits,
        (1280, 704),
        0,
    )?;
    let choice = plan::plan_for(&s, p.width, p.height, p.frames, p.guidance).ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "no memory budget or model configs to plan with"}),
        )
    })?;
    let mut v = plan::preview_json(&choice, p.frames);
    v["request"] =
        json!({"width": p.width, "height": p.height, "frames": p.frames, "guidance": p.guidance});
    v["device"] = json!(s.info.device);
    Ok(Json(v))
}

async fn tokens(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let text = q.get("text").map(String::as_str).unwrap_or("");
    let tok = s.info.tokenizer.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "no tokenizer"}),
        )
    })?;
    let count = tok
        .count_tokens(text)
        .map_err(|e| InvalidField::new("text", e.to_string(), None))?;
    Ok(Json(json!({"count": count, "max": tok.max_length()})))
}

async fn list_jobs(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let queue = s.store.queue()?;
    let jobs: Vec<Value> = s
        .store
        .list()?
        .iter()
        .map(|j| job_json(&s, j, &queue))
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

async fn get_job(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let job = find(&s, &id)?;
    Ok(Json(job_json(&s, &job, &s.store.queue()?)))
}

fn multipart_error(e: impl std::fmt::Display, status: StatusCode) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return InvalidField::new(
            "image",
            "the upload is over the limit",
            Some(format!("{} MB", MAX_UPLOAD_BYTES >> 20)),
        )
        .into();
    }
    InvalidField::new("body", format!("not a valid multipart form: {e}"), None).into()
}

/// Server-made job ids: 16 hex digits from the OS's randomness.
fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

async fn create_job(
    State(s): State<AppState>,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut form = form.map_err(|e| {
        ApiError::from(InvalidField::new(
            "body",
            format!("expected a multipart/form-data body with `image` and `params`: {e}"),
            None,
        ))
    })?;
    let mut image: Option<Vec<u8>> = None;
    let mut params: Option<String> = None;
    loop {
        let mut field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(&e, e.status())),
        };
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "image" => {
                let mut bytes = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if bytes.len() + chunk.len() > MAX_UPLOAD_BYTES {
                                return Err(multipart_error("", StatusCode::PAYLOAD_TOO_LARGE));
                            }
                            bytes.extend_from_slice(&chunk);
                        }
                        Ok(None) => break,
                        Err(e) => return Err(multipart_error(&e, e.status())),
                    }
                }
                image = Some(bytes);
            }
            "params" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| multipart_error(&e, e.status()))?;
                params = Some(text);
            }
            other => {
                return Err(InvalidField::new(
                    other,
                    "unknown form field (expected `image` and `params`)",
                    None,
                )
                .into());
            }
        }
    }
    let image = image.ok_or_else(|| InvalidField::new("image", "is required", None))?;
    let params = params.ok_or_else(|| InvalidField::new("params", "is required", None))?;
    // Decoding a large image takes a while: off the async threads.
    let (image, checked) = tokio::task::spawn_blocking(move || {
        let checked = validation::check_image(&image);
        (image, checked)
    })
    .await
    .map_err(|e| anyhow::anyhow!("image check: {e}"))?;
    let (size, ext) = checked?;
    let params = validation::parse_params(&params, &s.info.limits, size, rand::random())?;
    let id = new_id();
    let image_file = format!("{id}.{ext}");
    tokio::fs::write(s.dirs.uploads.join(&image_file), &image)
        .await
        .map_err(|e| anyhow::anyhow!("storing the upload: {e}"))?;
    let job = Job {
        id: id.clone(),
        state: JobState::Queued,
        params,
        image_file,
        error: None,
        created_at: now(),
        started_at: None,
        finished_at: None,
        resumed: 0,
        step_downs: Vec::new(),
    };
    s.store.insert(&job)?;
    tracing::info!(job = %id, "queued: {:?}", job.params);
    s.events.queue_moved();
    s.wake_worker();
    let queue = s.store.queue()?;
    let mut v = job_json(&s, &job, &queue);
    v["id"] = json!(id);
    Ok((StatusCode::ACCEPTED, Json(v)))
}

/// Cancels a queued or running job; deletes a finished one with its files.
async fn delete_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let job = find(&s, &id)?;
    if job.state.is_final() {
        if s.store.delete_final(&id)? {
            for f in [
                s.dirs.video(&id),
                s.dirs.thumbnail(&id),
                s.dirs.uploads.join(&job.image_file),
                s.dirs.checkpoint(&id),
            ] {
                let _ = std::fs::remove_file(f);
            }
            tracing::info!(job = %id, "deleted");
            return Ok((StatusCode::OK, Json(json!({"id": id, "deleted": true}))));
        }
    } else if s.store.cancel_queued(&id)? {
        s.events.publish(&id, JobEvent::Cancelled);
        s.events.queue_moved();
        tracing::info!(job = %id, "cancelled while queued");
        let job = find(&s, &id)?;
        return Ok((StatusCode::OK, Json(job_json(&s, &job, &s.store.queue()?))));
    } else {
        // Running (or just claimed): the worker stops it after the current step.
        s.cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        tracing::info!(job = %id, "cancel requested");
    }
    let job = find(&s, &id)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(job_json(&s, &job, &s.store.queue()?)),
    ))
}

/// What a new stream first says: where the job stands now.
fn snapshot(s: &Shared, job: &Job) -> ApiResult<Vec<JobEvent>> {
    Ok(match job.state {
        JobState::Queued => {
            let position = s
                .store
                .queue()?
                .iter()
                .position(|q| *q == job.id)
                .unwrap_or(0);
            vec![JobEvent::Queued { position }]
        }
        JobState::Running => {
            let live = s.events.live(&job.id).unwrap_or_default();
            let mut v = vec![JobEvent::Stage {
                stage: live.stage.unwrap_or_else(|| "starting".into()),
            }];
            if live.total > 0 {
                v.push(JobEvent::Step {
                    step: live.step,
                    total: live.total,
                    seconds_per_step: 0.0,
                    eta_seconds: live.eta_seconds.unwrap_or(0.0),
                });
            }
            v
        }
        JobState::Done => vec![JobEvent::Done],
        JobState::Failed => vec![JobEvent::Failed {
            error: job.error.clone().unwrap_or_default(),
        }],
        JobState::Cancelled => vec![JobEvent::Cancelled],
    })
}

struct StreamState {
    shared: AppState,
    id: String,
    rx: tokio::sync::broadcast::Receiver<Broadcast>,
    pending: VecDeque<JobEvent>,
    position: Option<usize>,
    finished: bool,
}

fn sse(e: &JobEvent) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(e.name())
        .data(serde_json::to_string(e).unwrap_or_default()))
}

async fn job_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>> {
    // Subscribe before the snapshot so nothing between the two is missed.
    let rx = s.events.subscribe();
    let job = find(&s, &id)?;
    let pending: VecDeque<JobEvent> = snapshot(&s, &job)?.into();
    let position = match pending.front() {
        Some(JobEvent::Queued { position }) => Some(*position),
        _ => None,
    };
    let state = StreamState {
        shared: s,
        id,
        rx,
        pending,
        position,
        finished: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        if let Some(e) = st.pending.pop_front() {
            st.finished = e.is_final();
            return Some((sse(&e), st));
        }
        loop {
            match st.rx.recv().await {
                Ok(Broadcast::Job(j, e)) if j == st.id => {
                    st.finished = e.is_final();
                    return Some((sse(&e), st));
                }
                Ok(Broadcast::QueueMoved) if st.position.is_some() => {
                    let queue = st.shared.store.queue().unwrap_or_default();
                    let now = queue.iter().position(|q| *q == st.id);
                    if now.is_some() && now != st.position {
                        st.position = now;
                        let e = JobEvent::Queued {
                            position: now.unwrap_or(0),
                        };
                        return Some((sse(&e), st));
                    }
                    st.position = now;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A server-made file of a job, with range support (tower-http's ServeFile).
async fn job_file(
    s: &Shared,
    id: &str,
    path: std::path::PathBuf,
    what: &str,
    req: Request,
) -> ApiResult<Response> {
    let job = find(s, id)?;
    if !path.is_file() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            json!({"error": format!("job `{id}` has no {what} (state {})", job.state.as_str())}),
        ));
    }
    let res = tower_http::services::ServeFile::new(path)
        .oneshot(req)
        .await
        .map_err(|e| anyhow::anyhow!("serving {what}: {e}"))?;
    Ok(res.into_response())
}

async fn job_video(
    State(s): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let path = s.dirs.video(&id);
    let done = find(&s, &id)?.state == JobState::Done;
    let path = if done { path } else { s.dirs.outputs.join("-") };
    job_file(&s, &id, path, "video", req).await
}

async fn job_thumbnail(
    State(s): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let path = s.dirs.thumbnail(&id);
    job_file(&s, &id, path, "thumbnail", req).await
}

async fn job_image(
    State(s): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let job = find(&s, &id)?;
    let path = s.dirs.uploads.join(&job.image_file);
    job_file(&s, &id, path, "image", req).await
}
