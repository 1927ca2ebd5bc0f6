//! Routing and request handling: discovery, OpenAPI, CRUD, patches, status, tables and watches.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::Shared;
use super::patch::{apply_patch, json_patch, merge_patch, strategic_merge_patch};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{ApiError, Part};
use super::{table, types};

type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (the real server's limit is 3 MiB per object).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// How often an idle watch sends a bookmark when asked to.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared
            .faults
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let shared = shared.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

fn error(e: ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

/// Query parameters, percent-decoded.
fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Where a request points.
struct Target {
    t: usize,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let types_ = shared.store.lock().expect("store lock").types.clone();
    let not_found = || {
        error(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ))
    };
    let get = req.method() == Method::GET;
    match segs.as_slice() {
        ["version"] if get => return json_response(200, &types::version()),
        ["api"] if get => return json_response(200, &types::api_versions()),
        ["apis"] if get => return json_response(200, &types::api_group_list(&types_)),
        ["apis", g] if get => {
            return types::api_group(&types_, g)
                .map(|v| json_response(200, &v))
                .unwrap_or_else(not_found);
        }
        ["api", v] if get => {
            return types::api_resource_list(&types_, "", v)
                .map(|v| json_response(200, &v))
                .unwrap_or_else(not_found);
        }
        ["apis", g, v] if get => {
            return types::api_resource_list(&types_, g, v)
                .map(|v| json_response(200, &v))
                .unwrap_or_else(not_found);
        }
        ["openapi", "v3"] if get => return json_response(200, &types::openapi_index(&types_)),
        ["openapi", "v3", rest @ ..] if get => {
            return types::openapi_document(&types_, &rest.join("/"))
                .map(|v| json_response(200, &v))
                .unwrap_or_else(not_found);
        }
        ["_roster", "compact"] => {
            shared.compact();
            return json_response(200, &json!({"compacted": true}));
        }
        ["_roster", "pause-watches"] => {
            shared.pause_watches(true);
            return json_response(200, &json!({"paused": true}));
        }
        ["_roster", "resume-watches"] => {
            shared.pause_watches(false);
            return json_response(200, &json!({"paused": false}));
        }
        ["_roster", "close-watches"] => {
            shared.close_watches();
            return json_response(200, &json!({"closed": true}));
        }
        ["_roster", "writes"] => return json_response(200, &json!(shared.writes())),
        ["_roster", "faults"] => return json_response(200, &shared.faults.report()),
        ["_roster", "conflict-every", n] => {
            let Ok(n) = n.parse::<u64>() else {
                return error(ApiError::new(
                    400,
                    "BadRequest",
                    "conflict-every needs a number",
                ));
            };
            shared
                .faults
                .conflict_every
                .store(n, std::sync::atomic::Ordering::SeqCst);
            return json_response(200, &shared.faults.report());
        }
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return not_found(),
    };
    let find = |plural: &str| {
        types_
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)
    };
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let Some(t) = find(plural) else {
                return not_found();
            };
            Target {
                t,
                ns: Some(ns.to_string()),
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
            }
        }
        [plural, tail @ ..] => {
            let Some(t) = find(plural) else {
                return not_found();
            };
            Target {
                t,
                ns: None,
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
            }
        }
        [] => return not_found(),
    };
    let ty = &types_[target.t];
    if ty.namespaced && target.ns.is_none() && target.name.is_some() {
        return not_found();
    }
    if let Some(sub) = &target.sub
        && !(sub == "status" && ty.status_subresource)
    {
        return not_found();
    }
    let q = query(&req);
    let wants_table = req
        .headers()
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|c| c.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let method = req.method().clone();
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        // Only JSON is spoken here; client-go falls back to JSON on 415.
        return error(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type})"
            ),
        ));
    }
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    if method != Method::GET && param(&q, "dryRun").is_some_and(|d| !d.is_empty()) {
        // Refused rather than ignored, so a dry run can never write.
        return error(ApiError::new(
            400,
            "BadRequest",
            "dryRun is not supported by the fake API server",
        ));
    }
    let strict = param(&q, "fieldValidation") == Some("Strict");
    let ns = target.ns.clone().unwrap_or_default();
    if (method == Method::PUT || method == Method::PATCH)
        && target.sub.as_deref() == Some("status")
        && shared.faults.conflict_now()
    {
        // Test hook: as if someone had written the object since the client read it.
        return error(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                ty.qualified(),
                target.name.as_deref().unwrap_or("")
            ),
        ));
    }
    let response = match (&method, &target.name) {
        (&Method::GET, None) => {
            if matches!(param(&q, "watch"), Some("true" | "1")) {
                return watch(shared, target.t, target.ns.clone(), &q);
            }
            list(&shared, target.t, target.ns.as_deref(), &q, wants_table)
        }
        (&Method::GET, Some(name)) => {
            let store = shared.store.lock().expect("store lock");
            store
                .get(target.t, &ns, name)
                .map(|o| {
                    if wants_table {
                        let now = jiff::Timestamp::now().as_second();
                        table::table(
                            &store.types[target.t].columns,
                            &[o],
                            &json!({"resourceVersion": store.rv.to_string()}),
                            now,
                        )
                    } else {
                        o
                    }
                })
                .map(|o| (200, o))
        }
        (&Method::POST, None) => parse_json(&body).and_then(|obj| {
            let mut store = shared.store.lock().expect("store lock");
            store.create(target.t, &ns, obj, strict).map(|o| (201, o))
        }),
        (&Method::PUT, Some(name)) => parse_json(&body).and_then(|obj| {
            let part = if target.sub.is_some() {
                Part::Status
            } else {
                Part::Main
            };
            let mut store = shared.store.lock().expect("store lock");
            store
                .update(target.t, &ns, name, obj, part, strict)
                .map(|o| (200, o))
        }),
        (&Method::PATCH, Some(name)) => {
            patch(&shared, &target, name, &content_type, &body, &q, strict)
        }
        (&Method::DELETE, Some(name)) => {
            let mut store = shared.store.lock().expect("store lock");
            store.delete(target.t, &ns, name).map(|o| (200, o))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        )),
    };
    if method != Method::GET {
        shared.notify();
    }
    match response {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error(e),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    limited.collect().await.map(|c| c.to_bytes()).map_err(|e| {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("cannot read the request body: {e}"),
        )
    })
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "BadRequest",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

fn list(
    shared: &Shared,
    t: usize,
    ns: Option<&str>,
    q: &[(String, String)],
    wants_table: bool,
) -> Result<(u16, Value), ApiError> {
    let labels = LabelSelector::parse(param(q, "labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::new(400, "BadRequest", e))?;
    let fields = FieldSelector::parse(param(q, "fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::new(400, "BadRequest", e))?;
    let limit: usize = param(q, "limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after = param(q, "continue").map(decode_continue);
    let store = shared.store.lock().expect("store lock");
    let ty = &store.types[t];
    let mut items = vec![];
    let mut next = None;
    for ((tt, ons, name), obj) in store.objects.range((t, String::new(), String::new())..) {
        if *tt != t {
            break;
        }
        if ns.is_some_and(|ns| ty.namespaced && ns != ons) {
            continue;
        }
        if let Some(Some((ans, aname))) = &after
            && (ons.as_str(), name.as_str()) <= (ans.as_str(), aname.as_str())
        {
            continue;
        }
        if !labels.matches_value(obj) || !fields.matches_value(obj) {
            continue;
        }
        if items.len() == limit {
            next = items.last().map(|o: &Value| {
                let m = &o["metadata"];
                encode_continue(
                    m["namespace"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or(""),
                )
            });
            break;
        }
        items.push(obj.clone());
    }
    if let Some(None) = after {
        return Err(ApiError::new(400, "BadRequest", "invalid continue token"));
    }
    let mut meta = json!({"resourceVersion": store.rv.to_string()});
    if let Some(c) = next {
        meta["continue"] = json!(c);
    }
    if wants_table {
        let now = jiff::Timestamp::now().as_second();
        return Ok((200, table::table(&ty.columns, &items, &meta, now)));
    }
    Ok((
        200,
        json!({"kind": format!("{}List", ty.kind), "apiVersion": ty.api_version(), "metadata": meta, "items": items}),
    ))
}

fn encode_continue(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `Some((ns, name))`, or `None` for a malformed token.
fn decode_continue(token: &str) -> Option<(String, String)> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
        .collect();
    let s = String::from_utf8(bytes?).ok()?;
    let (ns, name) = s.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

fn patch(
    shared: &Shared,
    target: &Target,
    name: &str,
    content_type: &str,
    body: &[u8],
    q: &[(String, String)],
    strict: bool,
) -> Result<(u16, Value), ApiError> {
    let ns = target.ns.clone().unwrap_or_default();
    let part = if target.sub.is_some() {
        Part::Status
    } else {
        Part::Main
    };
    let mut store = shared.store.lock().expect("store lock");
    let current = store.get(target.t, &ns, name);
    let patched = match content_type {
        "application/merge-patch+json" => merge_patch(&current?, &parse_json(body)?),
        // A real server refuses strategic merge patches for custom resources.
        "application/strategic-merge-patch+json" if store.types[target.t].schema.is_none() => {
            strategic_merge_patch(&current?, &parse_json(body)?)
        }
        "application/json-patch+json" => json_patch(&current?, &parse_json(body)?)
            .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            if param(q, "fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::new(400, "BadRequest", "the apply patch is not UTF-8"))?;
            let doc: Value = serde_saphyr::from_str(text).map_err(|e| {
                ApiError::new(
                    400,
                    "BadRequest",
                    format!("the apply patch is not valid YAML: {e}"),
                )
            })?;
            match current {
                Ok(cur) => apply_patch(Some(&cur), &doc),
                Err(e) if e.code == 404 && part == Part::Main => {
                    let mut obj = apply_patch(None, &doc);
                    obj["metadata"]["name"] = json!(name);
                    return store.create(target.t, &ns, obj, strict).map(|o| (201, o));
                }
                Err(e) => return Err(e),
            }
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other})"
                ),
            ));
        }
    };
    store
        .update(target.t, &ns, name, patched, part, strict)
        .map(|o| (200, o))
}

/// A streaming watch: replays history after `resourceVersion` (or the current objects), then
/// follows changes until the timeout, a close, or a 410 for an expired resourceVersion.
fn watch(
    shared: Arc<Shared>,
    t: usize,
    ns: Option<String>,
    q: &[(String, String)],
) -> Response<Body> {
    let labels = match LabelSelector::parse(param(q, "labelSelector").unwrap_or("")) {
        Ok(l) => l,
        Err(e) => return error(ApiError::new(400, "BadRequest", e)),
    };
    let fields = match FieldSelector::parse(param(q, "fieldSelector").unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return error(ApiError::new(400, "BadRequest", e)),
    };
    // The watch-list protocol (client-go's WatchListClient, used by kubectl): the current
    // objects as ADDED events, then a bookmark marking the end of the initial events.
    let initial_events = param(q, "sendInitialEvents") == Some("true");
    let since: Option<u64> = param(q, "resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0" && !initial_events)
        .and_then(|v| v.parse().ok());
    let bookmarks = param(q, "allowWatchBookmarks") == Some("true");
    let timeout = param(q, "timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let (kind, api_version, namespaced) = {
        let store = shared.store.lock().expect("store lock");
        let ty = &store.types[t];
        (ty.kind.clone(), ty.api_version(), ty.namespaced)
    };
    let matches = move |key_ns: &str, obj: &Value| {
        ns.as_deref().is_none_or(|ns| !namespaced || ns == key_ns)
            && labels.matches_value(obj)
            && fields.matches_value(obj)
    };
    let cursor = {
        let store = shared.store.lock().expect("store lock");
        match since {
            None => {
                for ((tt, ons, _), obj) in store.objects.range((t, String::new(), String::new())..)
                {
                    if *tt != t {
                        break;
                    }
                    if matches(ons, obj) {
                        pending.push_back(line("ADDED", obj));
                    }
                }
                if initial_events {
                    let end = json!({"kind": kind, "apiVersion": api_version, "metadata": {
                        "resourceVersion": store.rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"}}});
                    pending.push_back(line("BOOKMARK", &end));
                }
                store.rv
            }
            Some(rv) => rv,
        }
    };
    let changed = shared.changed.subscribe();
    let close = shared.close.subscribe();
    let paused = shared.paused.subscribe();
    struct W<F> {
        shared: Arc<Shared>,
        t: usize,
        cursor: u64,
        pending: VecDeque<Bytes>,
        done: bool,
        changed: tokio::sync::watch::Receiver<u64>,
        close: tokio::sync::watch::Receiver<u64>,
        paused: tokio::sync::watch::Receiver<bool>,
        matches: F,
        bookmarks: bool,
        deadline: tokio::time::Instant,
        kind: String,
        api_version: String,
    }
    let state = W {
        shared,
        t,
        cursor,
        pending,
        done: false,
        changed,
        close,
        paused,
        matches,
        bookmarks,
        deadline,
        kind,
        api_version,
    };
    let stream = futures::stream::unfold(state, |mut w| async move {
        loop {
            if let Some(b) = w.pending.pop_front() {
                return Some((Ok::<_, Infallible>(Frame::data(b)), w));
            }
            if w.done {
                return None;
            }
            if *w.paused.borrow() {
                tokio::select! {
                    _ = w.paused.changed() => {}
                    _ = w.close.changed() => { w.done = true; }
                }
                continue;
            }
            {
                let store = w.shared.store.lock().expect("store lock");
                if w.cursor < store.compacted {
                    let status = ApiError::new(
                        410,
                        "Expired",
                        format!(
                            "too old resource version: {} ({})",
                            w.cursor,
                            store.compacted + 1
                        ),
                    )
                    .status();
                    w.pending.push_back(line("ERROR", &status));
                    w.shared
                        .faults
                        .gone
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    w.done = true;
                    continue;
                }
                for e in store
                    .events
                    .iter()
                    .filter(|e| e.rv > w.cursor && e.key.0 == w.t)
                {
                    if (w.matches)(&e.key.1, &e.object) {
                        w.pending.push_back(line(e.type_, &e.object));
                    }
                }
                w.cursor = w.cursor.max(store.rv);
            }
            if !w.pending.is_empty() {
                continue;
            }
            tokio::select! {
                _ = w.changed.changed() => {}
                _ = w.close.changed() => { w.done = true; }
                _ = tokio::time::sleep_until(w.deadline) => { w.done = true; }
                _ = tokio::time::sleep(BOOKMARK_EVERY), if w.bookmarks => {
                    let bookmark = json!({"kind": w.kind, "apiVersion": w.api_version, "metadata": {"resourceVersion": w.cursor.to_string()}});
                    w.pending.push_back(line("BOOKMARK", &bookmark));
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("response")
}

fn line(type_: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": type_, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}
