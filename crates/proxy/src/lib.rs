//! Trellis data plane: the `trellis proxy` that runs beside each workload.
//!
//! A proxy gets its identity from the control plane (it makes its own key and sends a CSR),
//! receives versioned snapshots over the control stream, and carries the workload's traffic:
//!
//! * [`outbound`]: the app's requests (explicit HTTP proxy mode), routed by authority,
//!   balanced across the chosen destination's endpoints and sent over the [`pool`] of mTLS
//!   HTTP/2 connections to the destination's proxy;
//! * [`inbound`]: the mTLS listener other proxies connect to; it learns the caller's identity
//!   from the TLS session and forwards to the local app over HTTP/1.1;
//! * [`balance`]: load balancing (round robin, least request, random, consistent hash and
//!   the default peak-EWMA power of two choices);
//! * [`route`]: the route table's rule for each request: redirects, direct answers,
//!   faults, header changes, rewrites, timeouts and retries;
//! * [`chain`]: the caller's deadline and the retry mark, passed down a call chain;
//! * [`resilience`]: outlier detection, retry budgets and connection-pool limits;
//! * [`destination`]: DestinationRule traffic policy per destination: the balancer, the
//!   endpoints outlier detection admits, the limits;
//! * [`authz`]: PeerAuthentication and AuthorizationPolicy on inbound traffic (15008 and, in
//!   transparent mode, plaintext on 15006), chosen per snapshot, checked per request;
//! * [`upgrade`]: HTTP/1.1 `Upgrade` (WebSocket) carried between proxies as extended
//!   `CONNECT`;
//! * [`control_client`]: certificate requests and the snapshot stream, with back-off;
//! * [`telemetry`]: Istio's request and TCP metrics, access logs, edge summaries for the
//!   control plane and live taps, recorded as each request's response ends;
//! * [`trace`]: distributed tracing: W3C `traceparent` and B3 propagation, a span for each
//!   hop, export to an OpenTelemetry collector (OTLP/gRPC);
//! * [`admin`]: health endpoints and metrics;
//! * [`listener`]: how every listener accepts: a connection cap, back-off on accept errors,
//!   idle and header-read timeouts;
//! * [`app_stream`]: plaintext and tunnelled streams headed for the app, served as HTTP when
//!   they are HTTP so that the app's `x-forwarded-client-cert` is always the proxy's.
//!
//! Shared state lives in [`ProxyState`]: the current snapshot and credentials, each swapped
//! atomically so requests in flight keep the version they started with.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app_stream;
pub mod authz;
pub mod backoff;
pub mod balance;
pub mod body;
pub mod capture;
pub mod chain;
pub mod config;
pub mod control_client;
pub mod destination;
pub mod detect;
pub mod drain;
pub mod headers;
pub mod inbound;
pub mod listener;
pub mod metrics;
pub mod outbound;
pub mod persist;
pub mod pool;
pub mod resilience;
pub mod route;
pub mod state;
pub mod telemetry;
pub mod trace;
pub mod transparent;
pub mod tunnel;
pub mod upgrade;

use std::sync::Arc;

pub use config::ProxyConfig;
pub use state::ProxyState;

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] control_client::ControlError),
    #[error(transparent)]
    AccessLog(#[from] telemetry::AccessLogError),
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    #[error("traffic capture: {0}")]
    Capture(#[from] capture::CaptureError),
}

/// Runs the proxy until `shutdown` resolves.
///
/// Start-up order matters: the SVID comes first (without it the inbound listener cannot
/// serve and no outbound connection can be made), then the listeners, then the snapshot
/// stream. The outbound listener answers 503 until the first snapshot arrives, and the
/// readiness endpoint says so.
pub async fn run(
    mut config: ProxyConfig,
    log_control: Option<state::LogControl>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ProxyError> {
    // Bind everything first: a port given as 0 gets its real number before the workload is
    // registered, and peers' connections queue in the backlog until the certificate is in.
    let limits = config.limits;
    let listener = |l, name| listener::Listener::new(l, name, limits);
    let admin = listener(bind(&mut config.admin_addr).await?, "admin");
    let admin_local = listener(bind(&mut config.admin_local_addr).await?, "admin-local");
    let outbound = listener(bind(&mut config.outbound_addr).await?, "outbound");
    let inbound = listener(bind(&mut config.inbound_addr).await?, "inbound");
    let inbound_plain = match config.mode {
        config::Mode::Transparent => Some(listener(
            bind(&mut config.inbound_plain_addr).await?,
            "inbound-plain",
        )),
        config::Mode::Explicit => None,
    };
    let access_log = match &config.telemetry.access_log {
        Some(target) => Some(telemetry::AccessLog::open(
            target,
            config.telemetry.access_log_sampling,
        )?),
        None => None,
    };
    let tracer = trace::Tracer::new(
        config.telemetry.otlp_endpoint.clone(),
        config.telemetry.trace_sampling,
        trace::Resource {
            // The `app` label names the service in most meshes' traces (Istio's canonical
            // service); the workload name stands in without one.
            service_name: config
                .labels
                .get("app")
                .cloned()
                .unwrap_or_else(|| config.workload_name.clone()),
            namespace: config.namespace().to_owned(),
            workload: config.workload_name.clone(),
            instance_id: format!("{}@{}", config.workload_name, config.address),
        },
    )?;
    let state = Arc::new(ProxyState::with_telemetry(
        config,
        log_control,
        access_log,
        tracer,
    ));
    let client = control_client::ControlClient::new(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The admin port keeps answering through a drain (readiness says "no" meanwhile); it
    // ends with the process.
    let (_admin_forever, admin_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(admin::serve(admin, state.clone(), admin_rx.clone()));
    tokio::spawn(admin::serve_local(admin_local, state.clone(), admin_rx));

    if !restore(&state) {
        client.bootstrap().await?;
    }

    let pool = Arc::new(pool::Pool::new(state.clone()));
    tokio::spawn(pool.clone().reap_forever(state.config.pool_idle_timeout));
    let mut servers = Vec::new();
    match state.config.mode {
        config::Mode::Explicit => {
            servers.push(tokio::spawn(outbound::serve(
                outbound,
                state.clone(),
                pool,
                stop_rx.clone(),
            )));
        }
        config::Mode::Transparent => {
            tokio::spawn(transparent::serve_outbound(
                outbound,
                state.clone(),
                pool,
                stop_rx.clone(),
            ));
        }
    }
    if let Some(listener) = inbound_plain {
        tokio::spawn(transparent::serve_inbound_plain(
            listener,
            state.clone(),
            stop_rx.clone(),
        ));
    }
    servers.push(tokio::spawn(inbound::serve(
        inbound,
        state.clone(),
        stop_rx.clone(),
    )));
    tokio::spawn(client.clone().subscribe_forever(stop_rx.clone()));
    tokio::spawn(client.renew_forever(stop_rx));
    // Capture last: the workload's traffic is sent to listeners that are serving, with a
    // certificate, so nothing the app sends in between is lost or refused.
    let capture = if state.config.capture {
        let c = install_capture(&state.config)?;
        state.set_capturing();
        Some(c)
    } else {
        None
    };
    tracing::info!(
        identity = %state.config.identity,
        mode = ?state.config.mode,
        outbound = %state.config.outbound_addr,
        inbound = %state.config.inbound_addr,
        admin = %state.config.admin_addr,
        "proxy started"
    );

    shutdown.await;
    tracing::info!(deadline = ?state.config.drain_timeout, "proxy draining");
    // Not ready from now on, so whatever routes to this proxy stops choosing it.
    state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(c) = capture {
        match c.remove() {
            Ok(()) => tracing::info!("capture rules removed"),
            Err(e) => tracing::error!(error = %e, "capture rules could not be removed"),
        }
    }
    let _ = stop_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// The capture rules for this proxy: its own ports, and its own address excluded (the proxy
/// reaches its app there; an app talking to itself is not mesh traffic).
fn install_capture(config: &ProxyConfig) -> Result<capture::Capture, ProxyError> {
    let own = capture::Cidr::new(
        config.address,
        if config.address.is_ipv4() { 32 } else { 128 },
    )?;
    let cfg = capture::CaptureConfig {
        outbound_port: config.outbound_addr.port(),
        inbound_port: config.inbound_plain_addr.port(),
        proxy_ports: vec![
            config.inbound_addr.port(),
            config.admin_addr.port(),
            config.outbound_addr.port(),
            config.inbound_plain_addr.port(),
            15000,
        ],
        exclude_outbound_cidrs: std::iter::once(own)
            .chain(config.capture_exclusions.outbound_cidrs.iter().cloned())
            .collect(),
        exclude_outbound_ports: config.capture_exclusions.outbound_ports.clone(),
        exclude_inbound_ports: config.capture_exclusions.inbound_ports.clone(),
        mark: config.mark,
        ..capture::CaptureConfig::default()
    };
    let c = capture::Capture::install(&cfg)?;
    tracing::info!(
        outbound = cfg.outbound_port,
        inbound = cfg.inbound_port,
        "capture rules installed"
    );
    Ok(c)
}

/// Restores the last good certificate and snapshot from the state directory, if there are
/// any; true when the proxy can serve without waiting for the control plane.
fn restore(state: &ProxyState) -> bool {
    let Some(dir) = &state.config.state_dir else {
        return false;
    };
    let td = &state.config.identity.trust_domain;
    let creds = match persist::load_creds(dir, td) {
        Ok(Some((svid, bundle, root))) if svid.id == state.config.identity => {
            match control_client::credentials(svid, bundle, root) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "saved certificate unusable");
                    return false;
                }
            }
        }
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "saved certificate unreadable");
            return false;
        }
    };
    let snapshot = match persist::load_snapshot(dir)
        .map(|m| m.map(trellis_api::snapshot::Snapshot::try_from))
    {
        Ok(Some(Ok(s))) => s,
        Ok(Some(Err(e))) => {
            tracing::warn!(error = %e, "saved snapshot rejected");
            return false;
        }
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "saved snapshot unreadable");
            return false;
        }
    };
    tracing::info!(version = %snapshot.version, not_after = ?creds.svid.not_after, "serving from the saved certificate and snapshot");
    state.set_creds(creds);
    state.set_snapshot(snapshot);
    true
}

/// Binds `addr` and replaces it with the bound address (the real port when it was 0).
async fn bind(addr: &mut std::net::SocketAddr) -> Result<tokio::net::TcpListener, ProxyError> {
    let l = listener::bind(*addr).map_err(|source| ProxyError::Bind {
        addr: *addr,
        source,
    })?;
    *addr = l.local_addr().map_err(|source| ProxyError::Bind {
        addr: *addr,
        source,
    })?;
    Ok(l)
}
