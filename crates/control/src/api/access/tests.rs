use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::Request;
use axum::routing::{get, post};
use tower::ServiceExt;

use super::*;

const ADMIN: &str = "admin-s3cret";
const READ: &str = "read-s3cret";

/// The guard in front of stand-ins for each kind of endpoint; `entered` says whether a
/// handler ran.
fn app(entered: Arc<AtomicBool>) -> Router {
    let mark = move || {
        let entered = entered.clone();
        move |body: axum::body::Bytes| async move {
            entered.store(true, Ordering::SeqCst);
            format!("{} bytes", body.len())
        }
    };
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "metrics" }))
        .route("/api/v1/status", get(mark()))
        .route("/api/v1/diff", post(mark()))
        .route("/api/v1/apply", post(mark()));
    guarded(routes, Arc::new(Gate::new(ADMIN, READ)))
}

fn request(method: &str, uri: &str, token: Option<&str>, body: Body) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(body).unwrap()
}

async fn status(app: &Router, method: &str, uri: &str, token: Option<&str>) -> StatusCode {
    app.clone()
        .oneshot(request(method, uri, token, Body::empty()))
        .await
        .unwrap()
        .status()
}

#[test]
fn only_health_and_metrics_are_open() {
    assert_eq!(access("/healthz"), Access::Open);
    assert_eq!(access("/metrics"), Access::Open);
    for read in [
        "/api/v1/status",
        "/api/v1/certs",
        "/api/v1/strict-ready",
        "/api/v1/revisions",
        "/api/v1/diff",
        "/api/v1/stat",
        "/api/v1/unknown",
        "/",
    ] {
        assert_eq!(access(read), Access::Read, "{read}");
    }
    for admin in [
        "/api/v1/ca/rotate",
        "/api/v1/apply",
        "/api/v1/rollback",
        "/api/v1/tap",
    ] {
        assert_eq!(access(admin), Access::Admin, "{admin}");
    }
}

#[tokio::test]
async fn each_endpoint_needs_its_token() {
    let entered = Arc::new(AtomicBool::new(false));
    let app = app(entered.clone());
    assert_eq!(status(&app, "GET", "/healthz", None).await, StatusCode::OK);
    assert_eq!(status(&app, "GET", "/metrics", None).await, StatusCode::OK);
    for (method, uri) in [("GET", "/api/v1/status"), ("POST", "/api/v1/diff")] {
        entered.store(false, Ordering::SeqCst);
        for bad in [None, Some("wrong"), Some("")] {
            assert_eq!(
                status(&app, method, uri, bad).await,
                StatusCode::UNAUTHORIZED,
                "{uri} {bad:?}"
            );
        }
        assert!(!entered.load(Ordering::SeqCst));
        assert_eq!(status(&app, method, uri, Some(READ)).await, StatusCode::OK);
        assert_eq!(status(&app, method, uri, Some(ADMIN)).await, StatusCode::OK);
    }
    assert_eq!(
        status(&app, "POST", "/api/v1/apply", Some(READ)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&app, "POST", "/api/v1/apply", Some(ADMIN)).await,
        StatusCode::OK
    );
    // An unknown path is not a way around the tokens.
    assert_eq!(
        status(&app, "GET", "/api/v1/nothing", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&app, "GET", "/api/v1/nothing", Some(READ)).await,
        StatusCode::NOT_FOUND
    );
}

/// An unauthenticated request is answered before its body is read: a body that fails when
/// read costs nothing, however large it claims to be.
#[tokio::test]
async fn unauthenticated_bodies_are_never_read() {
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    let body = Body::from_stream(futures_util::stream::once(async move {
        flag.store(true, Ordering::SeqCst);
        Err::<axum::body::Bytes, _>(std::io::Error::other("the body was read"))
    }));
    let entered = Arc::new(AtomicBool::new(false));
    let resp = app(entered.clone())
        .oneshot(request("POST", "/api/v1/diff", None, body))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers().get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer"
    );
    assert!(!polled.load(Ordering::SeqCst));
    assert!(!entered.load(Ordering::SeqCst));
}

#[tokio::test]
async fn bodies_are_limited() {
    let app = app(Arc::new(AtomicBool::new(false)));
    let big = Body::from(vec![b'x'; MAX_BODY_BYTES + 1]);
    let resp = app
        .clone()
        .oneshot(request("POST", "/api/v1/diff", Some(READ), big))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let fits = Body::from(vec![b'x'; MAX_BODY_BYTES]);
    let resp = app
        .oneshot(request("POST", "/api/v1/diff", Some(READ), fits))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Past the limit of change sets validated at once, the next is answered 503 at once
/// rather than queued; other reads still pass, and health always answers.
#[tokio::test]
async fn busy_change_sets_are_shed_not_queued() {
    let release = Arc::new(tokio::sync::Notify::new());
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let wait = release.clone();
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/status", get(|| async { "status" }))
        .route(
            "/api/v1/diff",
            post(move || {
                let wait = wait.clone();
                let started_tx = started_tx.clone();
                async move {
                    // Created before saying so: it then receives the wake-up below even if
                    // that comes before it is polled.
                    let released = wait.notified();
                    let _ = started_tx.send(());
                    released.await;
                    "diff"
                }
            }),
        );
    let app = guarded(routes, Arc::new(Gate::new(ADMIN, READ)));
    let mut held = Vec::new();
    for _ in 0..MAX_CHANGES_IN_FLIGHT {
        let app = app.clone();
        held.push(tokio::spawn(async move {
            status(&app, "POST", "/api/v1/diff", Some(READ)).await
        }));
        started.recv().await.unwrap();
    }
    let resp = app
        .clone()
        .oneshot(request("POST", "/api/v1/diff", Some(READ), Body::empty()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get(header::RETRY_AFTER).unwrap(), "1");
    assert_eq!(
        status(&app, "GET", "/api/v1/status", Some(READ)).await,
        StatusCode::OK
    );
    assert_eq!(status(&app, "GET", "/healthz", None).await, StatusCode::OK);
    release.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
    // Capacity is given back.
    let app2 = app.clone();
    let again =
        tokio::spawn(async move { status(&app2, "POST", "/api/v1/diff", Some(READ)).await });
    started.recv().await.unwrap();
    release.notify_waiters();
    assert_eq!(again.await.unwrap(), StatusCode::OK);
}
