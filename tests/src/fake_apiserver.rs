//! An in-process fake Kubernetes API server for the kube provider's tests (tier 4): plain
//! HTTP on 127.0.0.1, real list and watch JSON (one resourceVersion counter, newline-delimited
//! ADDED/MODIFIED/DELETED/BOOKMARK/ERROR watch events, 410 Gone after compaction, which forces
//! a relist), create/replace (with resourceVersion conflicts)/merge-patch (incl. `/status`)/
//! delete, and a record of every request for assertions.
pub mod store;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{body::Frame, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use store::{ResourceType, Selectors, Store, merge_patch};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One request the fake answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// API group ("" for core), resource (with `/status` for the subresource), RBAC verb.
    pub group: String,
    pub resource: String,
    pub verb: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub query: String,
    pub body: Value,
}

/// What open watches are told besides object changes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Signals {
    /// Bumped by [`FakeApiServer::bookmark`].
    bookmarks: u64,
    /// Bumped by [`FakeApiServer::expire_watches`]: open watches get 410 and end.
    expiries: u64,
    /// Bumped by every change.
    changes: u64,
}

struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Vec<Recorded>>,
    signals: watch::Sender<Signals>,
}

/// The running fake; stops when dropped.
pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Listens on 127.0.0.1 on a free port. Call from inside a tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            requests: Mutex::new(Vec::new()),
            signals: watch::channel(Signals::default()).0,
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(s.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`, for `kube::Config::new`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.shared.store)
    }

    /// Creates or replaces an object (as another client would), by its apiVersion and kind.
    pub fn apply(&self, obj: Value) -> Value {
        let rt = store::by_kind(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )
        .unwrap_or_else(|| panic!("the fake does not serve {obj}"));
        let out = self.store().put(rt, obj);
        self.signal(|s| s.changes += 1);
        out
    }

    /// Deletes an object; `true` when it existed.
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> bool {
        let rt = store::by_kind(api_version, kind).expect("kind the fake serves");
        let gone = self.store().delete(rt, ns, name).is_some();
        self.signal(|s| s.changes += 1);
        gone
    }

    /// The stored object, by resource plural (`ingresses`), namespace ("" for cluster) and name.
    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.store().get(plural, ns, name).cloned()
    }

    /// Sends a BOOKMARK with the current resourceVersion to every open watch that asked.
    pub fn bookmark(&self) {
        self.signal(|s| s.bookmarks += 1);
    }

    /// Compacts history: open watches get an ERROR event with code 410 and end, and watches
    /// resumed from an older resourceVersion get the same, so every client must relist.
    pub fn expire_watches(&self) {
        self.store().compact();
        self.signal(|s| s.expiries += 1);
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    fn signal(&self, f: impl FnOnce(&mut Signals)) {
        self.shared.signals.send_modify(f);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/api/v1/[namespaces/NS/]PLURAL[/NAME[/SUB]]` or the same under `/apis/GROUP/VERSION/`.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    Some(Target {
        rt: store::by_plural(group, plural)?,
        namespace,
        name,
        sub,
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => out.push(v),
                    Err(_) => out.extend_from_slice(&b[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
        .unwrap_or_default()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(sc, &status(code, reason, message))
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let Some(t) = parse_path(&path) else {
        return Ok(error(
            404,
            "NotFound",
            &format!("the fake does not serve {path}"),
        ));
    };
    let watching = matches!(query_param(&query, "watch").as_deref(), Some("true" | "1"));
    let verb = match (&method, t.name.is_some()) {
        (&Method::GET, false) if watching => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "unknown",
    };
    lock(&shared.requests).push(Recorded {
        method: method.to_string(),
        group: t.rt.group.to_string(),
        resource: match &t.sub {
            Some(sub) => format!("{}/{sub}", t.rt.plural),
            None => t.rt.plural.to_string(),
        },
        verb: verb.to_string(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    let sel = Selectors::parse(
        query_param(&query, "labelSelector").as_deref(),
        query_param(&query, "fieldSelector").as_deref(),
    );
    let ns = t.namespace.clone().unwrap_or_default();
    let response = match verb {
        "watch" => watch_response(shared, t, sel, &query),
        "list" => {
            let store = lock(&shared.store);
            let items = store.list(t.rt.plural, t.namespace.as_deref(), &sel);
            json_response(
                StatusCode::OK,
                &json!({"apiVersion": t.rt.api_version(), "kind": format!("{}List", t.rt.kind),
                    "metadata": {"resourceVersion": store.rv.to_string()}, "items": items}),
            )
        }
        _ => write(&shared, verb, &t, &ns, body),
    };
    Ok(response)
}

/// get, create, update, patch, delete of one object.
fn write(shared: &Shared, verb: &str, t: &Target, ns: &str, body: Value) -> Response<Body> {
    let name = t.name.clone().unwrap_or_default();
    let mut store = lock(&shared.store);
    let existing = store.get(t.rt.plural, ns, &name).cloned();
    let (code, out) = match (verb, existing) {
        ("get", Some(obj)) => (200, obj),
        ("create", Some(_)) => return error(409, "AlreadyExists", "already exists"),
        ("create", None) => {
            let mut obj = body;
            obj["metadata"]["namespace"] = json!(ns);
            if obj["metadata"]["name"].is_null() {
                let prefix = obj["metadata"]["generateName"].as_str().unwrap_or("x-");
                obj["metadata"]["name"] = json!(format!("{prefix}{}", store.rv + 1));
            }
            (201, store.put(t.rt, obj))
        }
        ("update", Some(old)) => {
            let sent = &body["metadata"]["resourceVersion"];
            if !sent.is_null() && *sent != old["metadata"]["resourceVersion"] {
                return error(409, "Conflict", "the object has been modified");
            }
            let mut obj = body;
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            (200, store.put(t.rt, obj))
        }
        ("patch", Some(mut obj)) => {
            // On /status only the status stanza changes, as on a real server.
            let patch = match t.sub.as_deref() {
                Some("status") => json!({"status": body["status"].clone()}),
                _ => body,
            };
            merge_patch(&mut obj, &patch);
            (200, store.put(t.rt, obj))
        }
        ("delete", Some(_)) => (200, store.delete(t.rt, ns, &name).unwrap_or_default()),
        (_, None) => {
            return error(
                404,
                "NotFound",
                &format!("{} {name} not found", t.rt.plural),
            );
        }
        _ => return error(405, "MethodNotAllowed", "not supported by the fake"),
    };
    drop(store);
    shared.signals.send_modify(|s| s.changes += 1);
    json_response(StatusCode::from_u16(code).unwrap_or(StatusCode::OK), &out)
}

/// A watch: events after `resourceVersion` (410 if compacted away), then live ones, until
/// `timeoutSeconds`, an expiry, or the client goes away.
fn watch_response(shared: Arc<Shared>, t: Target, sel: Selectors, query: &str) -> Response<Body> {
    let from: u64 = query_param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query_param(query, "allowWatchBookmarks").as_deref() == Some("true");
    let timeout = query_param(query, "timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut signals = shared.signals.subscribe();
    tokio::spawn(async move {
        let started = *signals.borrow_and_update();
        let mut current = started;
        let mut bookmarks_sent = started.bookmarks;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut cursor = from;
        loop {
            let (lines, end) = {
                let store = lock(&shared.store);
                if cursor < store.compacted || current.expiries != started.expiries {
                    let expired = status(410, "Expired", "too old resource version");
                    (vec![json!({"type": "ERROR", "object": expired})], true)
                } else {
                    let mut lines: Vec<Value> = store
                        .log
                        .iter()
                        .filter(|c| c.plural == t.rt.plural && c.rv > cursor)
                        .filter(|c| {
                            let ns = store::key_of(&c.object).0;
                            t.namespace.as_deref().is_none_or(|want| ns == want)
                                && sel.matches(&c.object)
                        })
                        .map(|c| json!({"type": c.kind, "object": c.object}))
                        .collect();
                    cursor = cursor.max(store.rv);
                    if bookmarks && current.bookmarks != bookmarks_sent {
                        bookmarks_sent = current.bookmarks;
                        lines.push(json!({"type": "BOOKMARK", "object": {
                            "kind": t.rt.kind, "apiVersion": t.rt.api_version(),
                            "metadata": {"resourceVersion": store.rv.to_string()}}}));
                    }
                    (lines, false)
                }
            };
            for l in lines {
                if tx.send(Bytes::from(format!("{l}\n"))).await.is_err() {
                    return;
                }
            }
            if end {
                return;
            }
            tokio::select! {
                r = signals.changed() => if r.is_err() { return },
                _ = &mut deadline => return,
                _ = tx.closed() => return,
            }
            current = *signals.borrow_and_update();
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(StreamBody::new(stream.boxed()).boxed_unsync())
        .unwrap_or_default()
}
