//! The control plane's HTTP API (port 15014): status, certificates, metrics, golden signals,
//! live taps, and the admin operations behind `trellis ca rotate`, `apply` and `rollback`.
//!
//! * `GET /healthz`, `GET /metrics`: open, for probes and scrapers;
//! * `GET /api/v1/status`: revision, proxies, services and their virtual IPs, alarms;
//! * `GET /api/v1/certs`: the certificate ledger; `GET /api/v1/strict-ready`: plaintext seen
//!   per workload; `GET /api/v1/revisions`; `POST /api/v1/diff`;
//! * `GET /api/v1/stat?namespace=NS&service=SVC&window=30s`: rate, success and latency per
//!   service and per edge ([`crate::golden`]; see [`telemetry`]);
//! * `GET /api/v1/tap?workload=NAME&namespace=NS&path=PREFIX&method=M` (admin token): the
//!   requests a workload's proxies handle, live, one JSON object per line ([`crate::tap`]);
//! * `POST /api/v1/ca/rotate`, `POST /api/v1/apply`, `POST /api/v1/rollback` (admin token).
//!
//! Who may call what is decided in one place, [`access()`], by a middleware that runs before
//! any request body is read. Only `/healthz` and `/metrics` are open: everything else shows
//! the mesh's topology, identities or config (`diff` answers with whole resources, policies
//! included), and in `--netns` meshes every workload can reach this port. Reads need the read
//! token (`DATA/read-token`) or the admin token; operations that change state, and taps (they
//! show request paths), need the admin token (`DATA/admin-token`). Both are created mode 0600
//! in the data directory on first start and sent as `Authorization: Bearer TOKEN`.
//!
//! Cost is bounded for everyone: at most [`MAX_IN_FLIGHT`] requests at once and
//! [`MAX_CHANGES_IN_FLIGHT`] change sets being validated (more are answered 503 at once, not
//! queued), request bodies of [`MAX_BODY_BYTES`] (change sets: [`MAX_CHANGE_BODY_BYTES`]),
//! and change sets are held to the loader's limits ([`trellis_api::load::Limits`]).

mod access;
mod telemetry;

pub use access::{
    access, Access, MAX_BODY_BYTES, MAX_CHANGES_IN_FLIGHT, MAX_CHANGE_BODY_BYTES, MAX_IN_FLIGHT,
};
use access::{bearer_is, unauthorized, Gate};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;
use trellis_api::proto;
use trellis_identity::{RootInfo, RotationState};

use crate::certs::{unix, CertLedger, CertRecord};
use crate::metrics::ControlMetrics;
use crate::registry::{ProxyStatus, RegisteredWorkload, Registry};
use crate::revisions::Source;
use crate::store::{ChangeError, ConfigStore};
use crate::trust::Trust;

/// How long `POST /api/v1/ca/rotate` waits for proxies at each step.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything the API reads.
pub struct ApiState {
    pub trust: Arc<Trust>,
    pub registry: Arc<Registry>,
    pub ledger: Arc<CertLedger>,
    pub store: Arc<ConfigStore>,
    pub snapshots: watch::Receiver<Arc<proto::SnapshotMessage>>,
    pub metrics: Arc<ControlMetrics>,
    pub admin_token: String,
    /// The token of read-only callers (the admin token reads too).
    pub read_token: String,
    /// Warn when a root or issuer expires within this window.
    pub expiry_warning: Duration,
    /// Where mesh-wide policies live, for compiling candidate snapshots.
    pub root_namespace: String,
    /// Plaintext connections the proxies reported.
    pub plaintext: Arc<crate::plaintext::PlaintextLedger>,
    /// Golden signals the proxies reported.
    pub golden: Arc<crate::golden::GoldenWindow>,
    /// Open taps and the proxies serving them.
    pub taps: Arc<crate::tap::TapRegistry>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    let telemetry = telemetry::router(Arc::new(telemetry::TelemetryState {
        golden: state.golden.clone(),
        taps: state.taps.clone(),
        snapshots: state.snapshots.clone(),
        admin_token: state.admin_token.clone(),
    }));
    let gate = Arc::new(Gate::new(&state.admin_token, &state.read_token));
    let change_body = DefaultBodyLimit::max(MAX_CHANGE_BODY_BYTES);
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/certs", get(certs))
        .route("/api/v1/strict-ready", get(strict_ready))
        .route("/api/v1/ca/rotate", post(rotate))
        .route("/api/v1/revisions", get(revisions))
        .route("/api/v1/diff", post(diff).layer(change_body))
        .route("/api/v1/apply", post(apply).layer(change_body))
        .route("/api/v1/rollback", post(rollback))
        .with_state(state)
        .merge(telemetry);
    access::guarded(routes, gate)
}

#[derive(Serialize)]
struct Root {
    fingerprint: String,
    subject: String,
    not_after_unix: u64,
    status: String,
}

impl From<RootInfo> for Root {
    fn from(r: RootInfo) -> Self {
        Root {
            fingerprint: r.fingerprint_sha256_hex,
            subject: r.subject,
            not_after_unix: unix(r.not_after),
            status: format!("{:?}", r.status).to_lowercase(),
        }
    }
}

#[derive(Serialize)]
struct Proxy {
    #[serde(flatten)]
    workload: RegisteredWorkload,
    #[serde(flatten)]
    status: ProxyStatus,
}

/// A service as proxies route to it: the names it answers to and its virtual IPs (for
/// resolvers, e.g. the hosts files `trellis up --netns` writes).
#[derive(Serialize)]
struct ServiceAddresses {
    host: String,
    name: String,
    namespace: String,
    vips: Vec<String>,
}

#[derive(Serialize)]
struct Status {
    revision: u64,
    /// The newest change that was rejected after the served revision, if any.
    rejected: Option<crate::revisions::RevisionMeta>,
    config_hash: String,
    snapshot_version: String,
    signing_root: String,
    rotation: String,
    roots: Vec<Root>,
    proxies: Vec<Proxy>,
    /// The services of the published snapshot.
    services: Vec<ServiceAddresses>,
    alarms: Vec<String>,
}

/// Expiry and renewal problems worth a person's attention, one sentence each.
pub fn alarms(state: &ApiState) -> Vec<String> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    let days = |t: SystemTime| {
        t.duration_since(now)
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or(0)
    };
    for r in state.trust.ca.roots() {
        if r.not_after <= now + state.expiry_warning {
            out.push(format!(
                "root {} ({}) expires in {} days",
                short(&r.fingerprint_sha256_hex),
                r.subject,
                days(r.not_after)
            ));
        }
    }
    // A self-signed CA issues from its root, already checked above.
    let issuer = state.trust.ca.issuer_not_after();
    if !state.trust.ca.is_self_signed() && issuer <= now + state.expiry_warning {
        out.push(format!(
            "the issuing CA certificate expires in {} days",
            days(issuer)
        ));
    }
    for c in state.ledger.list() {
        if c.renewal_overdue(now) {
            out.push(format!(
                "certificate of {} ({}) is overdue for renewal: last result {}",
                c.workload, c.identity, c.last_result
            ));
        }
    }
    for (w, s) in state.registry.statuses() {
        if let Some(e) = s.nack {
            out.push(format!(
                "proxy {} rejected the latest snapshot: {e}",
                w.name
            ));
        }
    }
    out
}

fn short(fp: &str) -> &str {
    fp.get(..16).unwrap_or(fp)
}

async fn status(State(state): State<Arc<ApiState>>) -> Json<Status> {
    let rev = state.store.current();
    let rotation = match state.trust.ca.rotation() {
        RotationState::Idle => "idle".to_string(),
        RotationState::InProgress { old, new } => format!(
            "in progress: {} -> {}",
            short(&old.fingerprint_sha256_hex),
            short(&new.fingerprint_sha256_hex)
        ),
    };
    let rejected = state
        .store
        .history()
        .into_iter()
        .rev()
        .find(|m| m.number > rev.number && m.status == crate::revisions::Status::Rejected);
    let (snapshot_version, services) = {
        let snap = state.snapshots.borrow();
        let services = snap
            .services
            .iter()
            .map(|s| ServiceAddresses {
                host: s.host.clone(),
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                vips: s.vips.clone(),
            })
            .collect();
        (snap.version.clone(), services)
    };
    Json(Status {
        revision: rev.number,
        rejected,
        config_hash: rev.config.hash.clone(),
        snapshot_version,
        signing_root: state.trust.ca.signing_root_fingerprint(),
        rotation,
        roots: state.trust.ca.roots().into_iter().map(Root::from).collect(),
        proxies: state
            .registry
            .statuses()
            .into_iter()
            .map(|(workload, status)| Proxy { workload, status })
            .collect(),
        services,
        alarms: alarms(&state),
    })
}

#[derive(Serialize)]
struct Certs {
    now_unix: u64,
    certs: Vec<CertRecord>,
    roots: Vec<Root>,
    alarms: Vec<String>,
}

async fn certs(State(state): State<Arc<ApiState>>) -> Json<Certs> {
    Json(Certs {
        now_unix: unix(SystemTime::now()),
        certs: state.ledger.list(),
        roots: state.trust.ca.roots().into_iter().map(Root::from).collect(),
        alarms: alarms(&state),
    })
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic text format for
/// everyone else (`promtool check metrics`, curl).
async fn metrics(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    use trellis_api::telemetry::{
        prometheus_text, wants_openmetrics, OPENMETRICS_TEXT, PROMETHEUS_TEXT,
    };
    let encoded = state.metrics.encode(&state);
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], encoded).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            prometheus_text(&encoded),
        )
            .into_response()
    }
}

fn authorized(state: &ApiState, headers: &HeaderMap) -> bool {
    bearer_is(&state.admin_token, headers)
}

async fn rotate(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    match state
        .trust
        .rotate(&state.registry, &state.snapshots, ROTATION_TIMEOUT)
        .await
    {
        Ok(report) => Json(report).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "root rotation failed");
            (
                StatusCode::CONFLICT,
                Json(serde_json::json!({"error": e.to_string()})),
            )
                .into_response()
        }
    }
}

// === config lifecycle ===

async fn revisions(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "current": state.store.current().number,
        "revisions": state.store.history(),
    }))
}

/// A change set sent by `trellis diff` / `apply`: relative file name → content.
#[derive(serde::Deserialize)]
struct ChangeRequest {
    files: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    dry_run: bool,
}

/// What a valid change set does: resource changes and snapshot changes.
fn describe(state: &ApiState, config: &trellis_api::load::ConfigSet) -> serde_json::Value {
    let current = state.store.current();
    let resources = crate::diff::resource_diff(&current.config, config);
    let trust = state.trust.subscribe().borrow().clone();
    let candidate = crate::compile::compile(
        config,
        &state.registry.workloads(),
        &trust,
        &state.root_namespace,
    );
    let snapshot = match candidate {
        Ok(candidate) => crate::diff::snapshot_diff(&state.snapshots.borrow(), &candidate),
        // Not expected: the store refuses config sets whose policies do not compile.
        Err(e) => vec![format!("no snapshot can be compiled: {e}")],
    };
    // Every proxy receives the whole snapshot today, so a snapshot change reaches them all.
    let proxies: Vec<String> = if snapshot.is_empty() {
        vec![]
    } else {
        state
            .registry
            .workloads()
            .into_iter()
            .map(|w| w.name)
            .collect()
    };
    serde_json::json!({
        "from_revision": current.number,
        "resources": resources,
        "snapshot": snapshot,
        "affected_proxies": proxies,
        "warnings": config.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
    })
}

fn invalid(diags: &[trellis_api::load::Diagnostic]) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(serde_json::json!({
            "error": format!("the change set is invalid ({} errors)", diags.len()),
            "errors": diags.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "diagnostics": diags,
        })),
    )
        .into_response()
}

fn change_failed(e: ChangeError) -> Response {
    match e {
        ChangeError::Invalid(diags) => invalid(&diags),
        ChangeError::Store(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn diff(State(state): State<Arc<ApiState>>, Json(req): Json<ChangeRequest>) -> Response {
    // Parsing and compiling is CPU work bounded by the loader's limits: off the async runtime.
    let described = tokio::task::spawn_blocking(move || {
        crate::store::parse_files(&req.files, std::path::Path::new(""))
            .map(|config| describe(&state, &config))
    })
    .await;
    match described {
        Ok(Ok(body)) => Json(body).into_response(),
        Ok(Err(trellis_api::load::LoadError::Invalid(diags))) => {
            let errors: Vec<_> = diags.into_iter().filter(|d| d.is_error()).collect();
            invalid(&errors)
        }
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": format!("validating the change set failed: {e}")})),
        )
            .into_response(),
    }
}

async fn apply(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(req): Json<ChangeRequest>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    // Described against the revision before the change.
    let before = state.store.current();
    match state
        .store
        .change(req.files, Source::Apply, None, req.dry_run)
        .await
    {
        Ok(accepted) => {
            let mut body = describe_from(&state, &before, &accepted.config);
            body["revision"] = serde_json::to_value(&accepted.meta).unwrap_or_default();
            body["dry_run"] = req.dry_run.into();
            Json(body).into_response()
        }
        Err(e) => change_failed(e),
    }
}

/// As [`describe`], against a given earlier revision (the served one may already be new).
fn describe_from(
    state: &ApiState,
    before: &crate::store::Revision,
    config: &trellis_api::load::ConfigSet,
) -> serde_json::Value {
    let resources = crate::diff::resource_diff(&before.config, config);
    serde_json::json!({
        "from_revision": before.number,
        "resources": resources,
        "warnings": config.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        "affected_proxies": state.registry.workloads().into_iter().map(|w| w.name).collect::<Vec<_>>(),
    })
}

#[derive(serde::Deserialize)]
struct RollbackRequest {
    revision: u64,
}

async fn rollback(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(req): Json<RollbackRequest>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let before = state.store.current();
    match state.store.rollback(req.revision).await {
        Ok(accepted) => {
            let mut body = describe_from(&state, &before, &accepted.config);
            body["revision"] = serde_json::to_value(&accepted.meta).unwrap_or_default();
            Json(body).into_response()
        }
        Err(e) => change_failed(e),
    }
}

/// `GET /api/v1/strict-ready` parameters.
#[derive(Debug, serde::Deserialize)]
struct StrictReadyQuery {
    /// Only workloads of this namespace.
    namespace: Option<String>,
    /// How far back to look, in seconds (default 600, at most an hour).
    window_secs: Option<u64>,
}

#[derive(Serialize)]
struct StrictReady {
    window_secs: u64,
    workloads: Vec<WorkloadReadiness>,
}

#[derive(Serialize)]
struct WorkloadReadiness {
    namespace: String,
    workload: String,
    /// Whether its proxy is connected now.
    connected: bool,
    /// No plaintext connection in the window: STRICT would refuse no one seen.
    ready: bool,
    plaintext: Vec<PlaintextFrom>,
}

#[derive(Serialize)]
struct PlaintextFrom {
    source_address: std::net::IpAddr,
    /// `namespace/name` of the meshed workload at that address, when there is one (a
    /// workload whose proxy is bypassed or not yet capturing).
    source_workload: Option<String>,
    connections: u64,
    last_seen_unix: u64,
}

/// Per workload, the plaintext connections its proxy accepted in the window, and whether it
/// is ready for STRICT (none).
async fn strict_ready(
    State(state): State<Arc<ApiState>>,
    axum::extract::Query(q): axum::extract::Query<StrictReadyQuery>,
) -> Json<StrictReady> {
    use crate::plaintext::{WorkloadKey, RETENTION};
    let window = Duration::from_secs(q.window_secs.unwrap_or(600)).min(RETENTION);
    let seen = state.plaintext.window(SystemTime::now(), window);
    let live = state.registry.workloads();
    let by_address: std::collections::HashMap<std::net::IpAddr, String> = live
        .iter()
        .map(|w| (w.address, format!("{}/{}", w.namespace, w.name)))
        .collect();
    let mut keys: std::collections::BTreeSet<WorkloadKey> = live
        .iter()
        .map(|w| WorkloadKey {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        })
        .collect();
    keys.extend(seen.keys().cloned());
    let workloads = keys
        .into_iter()
        .filter(|k| q.namespace.as_ref().is_none_or(|ns| *ns == k.namespace))
        .map(|k| {
            let plaintext: Vec<PlaintextFrom> = seen
                .get(&k)
                .map(|sources| {
                    sources
                        .iter()
                        .map(|s| PlaintextFrom {
                            source_address: s.source_address,
                            source_workload: by_address.get(&s.source_address).cloned(),
                            connections: s.connections,
                            last_seen_unix: s.last_seen_unix,
                        })
                        .collect()
                })
                .unwrap_or_default();
            WorkloadReadiness {
                connected: live
                    .iter()
                    .any(|w| w.namespace == k.namespace && w.name == k.name),
                ready: plaintext.is_empty(),
                namespace: k.namespace,
                workload: k.name,
                plaintext,
            }
        })
        .collect();
    Json(StrictReady {
        window_secs: window.as_secs(),
        workloads,
    })
}
