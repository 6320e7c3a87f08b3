//! The proxy's side of the control protocol: the first certificate (join token + CSR), the
//! snapshot stream (register, then ACK/NACK each snapshot), and renewal at half-life.
//!
//! The control plane being away never stops traffic: every loop here retries with back-off
//! and logs why, while the listeners keep serving on the last good snapshot and certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use trellis_api::proto::{self, control_client::ControlClient as Grpc, proxy_message::Kind};
use trellis_api::snapshot::Snapshot;
use trellis_identity::{csr, tls, Svid, TrustBundle};

use crate::backoff::Backoff;
use crate::state::{Credentials, ProxyState};

/// How often the proxy tells the control plane what it saw (when it saw anything).
const REPORT_INTERVAL: Duration = Duration::from_secs(2);

/// Tap events sent in one message at most.
const TAP_BATCH: usize = 256;

/// How often an idle control connection is pinged, and how long a ping may go unanswered.
const CONTROL_KEEPALIVE: Duration = Duration::from_secs(10);

/// Why talking to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the CA bundle given to the proxy is unusable: {0}")]
    Bundle(String),
    #[error("cannot make a CSR: {0}")]
    Csr(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot connect to the control plane at {addr}: {reason}")]
    Connect {
        addr: std::net::SocketAddr,
        /// The whole cause chain: tonic's own message is only "transport error".
        reason: String,
    },
    #[error("control plane refused: {0}")]
    Refused(String),
    #[error("control plane answered with an unusable certificate: {0}")]
    BadCertificate(String),
    #[error("snapshot stream: {0}")]
    Stream(String),
}

impl ControlError {
    /// Errors that retrying cannot fix: the token or the requested identity was refused.
    fn is_permanent(&self) -> bool {
        matches!(self, ControlError::Refused(_))
    }
}

/// The proxy's client of the control plane.
#[derive(Clone)]
pub struct ControlClient {
    state: Arc<ProxyState>,
}

impl ControlClient {
    pub fn new(state: Arc<ProxyState>) -> Self {
        Self { state }
    }

    /// Gets the first certificate, retrying with back-off until the control plane answers.
    /// A refusal (bad token, identity not allowed) is final and returned.
    pub async fn bootstrap(&self) -> Result<(), ControlError> {
        let bundle = TrustBundle::from_pem_with_domain(
            &self.state.config.ca_bundle_pem,
            &self.state.config.identity.trust_domain,
        )
        .map_err(|e| ControlError::Bundle(e.to_string()))?;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.sign(None, &bundle).await {
                Ok(creds) => {
                    tracing::info!(
                        identity = %creds.svid.id,
                        not_after = ?creds.svid.not_after,
                        "certificate issued"
                    );
                    self.state.metrics.count_renewal(true);
                    self.state.set_creds(creds);
                    return Ok(());
                }
                Err(e) if e.is_permanent() => return Err(e),
                Err(e) => {
                    self.state.metrics.count_renewal(false);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot get a certificate; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Makes a key and CSR and asks the CA to sign it: with the join token the first time,
    /// over mTLS with the current SVID afterwards.
    async fn sign(
        &self,
        current: Option<&Credentials>,
        bundle: &TrustBundle,
    ) -> Result<Credentials, ControlError> {
        let cfg = &self.state.config;
        let (key, csr_der) =
            csr::generate_csr(&cfg.identity).map_err(|e| ControlError::Csr(e.to_string()))?;
        let channel = self.channel(current.map(|c| &c.svid), bundle).await?;
        let token = if current.is_some() {
            String::new()
        } else {
            cfg.token.clone()
        };
        let resp = Grpc::new(channel)
            .sign(proto::SignRequest {
                token,
                csr_der,
                workload_name: cfg.workload_name.clone(),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::InvalidArgument => ControlError::Refused(s.message().to_string()),
                _ => ControlError::Stream(format!("{}: {}", s.code(), s.message())),
            })?
            .into_inner();
        let svid = Svid::from_pem(&resp.cert_chain_pem, key)
            .map_err(|e| ControlError::BadCertificate(e.to_string()))?;
        if svid.id != cfg.identity {
            return Err(ControlError::BadCertificate(format!(
                "asked for {}, got {}",
                cfg.identity, svid.id
            )));
        }
        let bundle =
            TrustBundle::from_pem_with_domain(&resp.trust_bundle_pem, &cfg.identity.trust_domain)
                .map_err(|e| ControlError::BadCertificate(format!("trust bundle: {e}")))?;
        credentials(svid, bundle, resp.issuer_root_fingerprint)
    }

    /// A gRPC channel to the control plane over TLS, verifying its SPIFFE ID.
    async fn channel(
        &self,
        svid: Option<&Svid>,
        bundle: &TrustBundle,
    ) -> Result<Channel, ControlError> {
        let cfg = &self.state.config;
        let tls = tls::client_config(
            svid,
            bundle,
            tls::ExpectedPeer::OneOf(vec![cfg.control_identity.clone()]),
        )
        .map_err(|e| ControlError::Tls(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(tls);
        let addr = cfg.control_addr;
        let mark = self.state.own_mark();
        let connect = tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = crate::capture::connect_marked(addr, mark).await?;
                let _ = tcp.set_nodelay(true);
                let stream = connector
                    .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        // Pings on the otherwise quiet snapshot stream: a connection that died without a FIN
        // or RST (a peer rebooted, a path dropped) is noticed within seconds and redialled,
        // instead of the proxy waiting for a snapshot that can never come.
        Endpoint::from_static("http://trellis-control")
            .connect_timeout(cfg.control_timeout)
            .http2_keep_alive_interval(CONTROL_KEEPALIVE)
            .keep_alive_timeout(CONTROL_KEEPALIVE)
            .keep_alive_while_idle(true)
            .connect_with_connector(connect)
            .await
            .map_err(|e| ControlError::Connect {
                addr,
                reason: error_chain(&e),
            })
    }

    /// Keeps a snapshot stream open until `stop`, reconnecting with back-off.
    pub async fn subscribe_forever(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let result = tokio::select! {
                r = self.subscribe(&mut backoff) => r,
                _ = stop.changed() => return,
            };
            let delay = backoff.next_delay();
            match result {
                Ok(()) => {
                    tracing::warn!(retry_in = ?delay, "control plane closed the snapshot stream; reconnecting")
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "snapshot stream failed; reconnecting")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn subscribe(&self, backoff: &mut Backoff) -> Result<(), ControlError> {
        let creds = self
            .state
            .creds
            .load_full()
            .ok_or_else(|| ControlError::Stream("no certificate".into()))?;
        let channel = self.channel(Some(&creds.svid), &creds.bundle).await?;
        let cfg = &self.state.config;
        let (tx, rx) = mpsc::channel(8);
        let register = proto::Register {
            workload_name: cfg.workload_name.clone(),
            namespace: cfg.identity.namespace.clone(),
            service_account: cfg.identity.service_account.clone(),
            address: cfg.address.to_string(),
            labels: cfg.labels.clone().into_iter().collect(),
            inbound_port: u32::from(cfg.inbound_addr.port()),
            ports: cfg
                .ports
                .iter()
                .map(|(k, v)| (k.clone(), u32::from(*v)))
                .collect(),
        };
        send(&tx, Kind::Register(register)).await?;
        let mut stream = Grpc::new(channel)
            .subscribe(ReceiverStream::new(rx))
            .await
            .map_err(|s| ControlError::Stream(format!("{}: {}", s.code(), s.message())))?
            .into_inner();
        let mut creds_changed = self.state.creds_changed.subscribe();
        let mut version = String::new();
        let mut report_tick = tokio::time::interval(REPORT_INTERVAL);
        report_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Taps belong to a stream: the control plane sends the set again on a new one.
        let telemetry = &self.state.telemetry;
        telemetry.set_taps(&[]);
        let mut tap_events = telemetry.tap_events().lock().await;
        // Events queued while no stream was open are for taps that are gone.
        while tap_events.try_recv().is_ok() {}
        loop {
            let msg = tokio::select! {
                m = stream.message() => m.map_err(|s| ControlError::Stream(format!("{}: {}", s.code(), s.message())))?,
                _ = report_tick.tick() => {
                    let plaintext: Vec<proto::PlaintextSource> = self
                        .state
                        .take_plaintext()
                        .into_iter()
                        .map(|(source, connections)| proto::PlaintextSource {
                            source_address: source.to_string(),
                            connections,
                        })
                        .collect();
                    // Sent every period, even an empty one: the control plane divides by the
                    // time each proxy's reports cover, so a quiet period must be counted.
                    let (edges, period_millis) = telemetry.take_summaries();
                    let report = proto::Report { plaintext, edges, period_millis };
                    send(&tx, Kind::Report(report)).await?;
                    continue;
                }
                Some(first) = tap_events.recv() => {
                    let mut events = vec![first];
                    while events.len() < TAP_BATCH {
                        match tap_events.try_recv() {
                            Ok(e) => events.push(e),
                            Err(_) => break,
                        }
                    }
                    send(&tx, Kind::Tap(proto::TapEvents { events })).await?;
                    continue;
                }
                // A renewed certificate is reported at once: the control plane waits for
                // every proxy to be on the new root before it retires the old one.
                r = creds_changed.changed() => {
                    if r.is_ok() && !version.is_empty() {
                        send(&tx, Kind::Ack(self.ack(&version))).await?;
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            backoff.reset();
            if msg.version.is_empty() {
                if let Some(tap) = &msg.tap {
                    telemetry.set_taps(&tap.taps);
                    continue;
                }
            }
            let msg_version = msg.version.clone();
            let bundle_pem = msg.trust_bundle_pem.clone();
            let wire = self.state.config.state_dir.as_ref().map(|_| msg.clone());
            match Snapshot::try_from(msg) {
                Ok(snap) => {
                    if let (Some(dir), Some(wire)) = (&self.state.config.state_dir, wire) {
                        if let Err(e) = crate::persist::save_snapshot(dir, &wire) {
                            tracing::warn!(error = %e, "could not save the snapshot");
                        }
                    }
                    self.update_bundle(&bundle_pem);
                    tracing::info!(version = %msg_version, services = snap.services.len(), "snapshot applied");
                    let signing_root = snap.signing_root_fingerprint.clone();
                    self.state.set_snapshot(snap);
                    self.state.metrics.count_snapshot(true);
                    self.state.metrics.set_snapshot_version(&msg_version);
                    version = msg_version;
                    creds_changed.mark_unchanged();
                    send(&tx, Kind::Ack(self.ack(&version))).await?;
                    if let Some(creds) = self.state.creds.load_full() {
                        if !signing_root.is_empty() && creds.issuer_root != signing_root {
                            tracing::info!(new_root = %signing_root, "the mesh issues under a new root; renewing now");
                            self.state.renew_now.notify_one();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(version = %msg_version, error = %e, "snapshot rejected; keeping the previous one");
                    self.state.metrics.count_snapshot(false);
                    let error = e.to_string();
                    send(
                        &tx,
                        Kind::Nack(proto::Nack {
                            version: msg_version,
                            error,
                        }),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    fn ack(&self, version: &str) -> proto::Ack {
        proto::Ack {
            version: version.to_string(),
            svid_issuer_root_fingerprint: self
                .state
                .creds
                .load()
                .as_ref()
                .map(|c| c.issuer_root.clone())
                .unwrap_or_default(),
        }
    }

    /// Adopts a new trust bundle from a snapshot (root rotation), keeping the SVID.
    fn update_bundle(&self, pem: &str) {
        let Some(creds) = self.state.creds.load_full() else {
            return;
        };
        if pem.is_empty() || creds.bundle.to_pem() == pem {
            return;
        }
        match TrustBundle::from_pem_with_domain(pem, &self.state.config.identity.trust_domain)
            .and_then(|b| {
                tls::server_config(&creds.svid, &b, tls::ClientAuth::Required).map(|sc| (b, sc))
            }) {
            Ok((bundle, server_config)) => {
                self.state.set_creds(Credentials {
                    svid: creds.svid.clone(),
                    bundle,
                    issuer_root: creds.issuer_root.clone(),
                    server_config,
                });
                tracing::info!(
                    roots = pem.matches("BEGIN CERTIFICATE").count(),
                    "trust bundle updated"
                );
            }
            Err(e) => tracing::warn!(error = %e, "trust bundle in snapshot rejected"),
        }
    }

    /// Renews the SVID at half its lifetime (with jitter), over mTLS with the current one.
    pub async fn renew_forever(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut delay = None;
        loop {
            let Some(creds) = self.state.creds.load_full() else {
                return;
            };
            let wait = delay.take().unwrap_or_else(|| half_life(&creds.svid));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.state.renew_now.notified() => {
                    // Spread the renewals of a whole mesh told at once over half a second.
                    let jitter = Duration::from_millis(rand::random::<u64>() % 500);
                    tokio::time::sleep(jitter).await;
                }
                _ = stop.changed() => return,
            }
            let Some(creds) = self.state.creds.load_full() else {
                return;
            };
            match self.sign(Some(&creds), &creds.bundle).await {
                Ok(new) => {
                    tracing::info!(not_after = ?new.svid.not_after, issuer_root = %new.issuer_root, "certificate renewed");
                    self.state.metrics.count_renewal(true);
                    self.state.set_creds(new);
                    backoff.reset();
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    self.state.metrics.count_renewal(false);
                    tracing::warn!(error = %e, retry_in = ?d, "certificate renewal failed; the current certificate keeps serving");
                    delay = Some(d);
                }
            }
        }
    }
}

pub(crate) fn credentials(
    svid: Svid,
    bundle: TrustBundle,
    issuer_root: String,
) -> Result<Credentials, ControlError> {
    let server_config = tls::server_config(&svid, &bundle, tls::ClientAuth::Required)
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    Ok(Credentials {
        svid,
        bundle,
        issuer_root,
        server_config,
    })
}

/// Time until half the remaining lifetime has passed, with up to 10 % jitter so that proxies
/// started together do not renew together.
fn half_life(svid: &Svid) -> Duration {
    let left = svid
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let half = left / 2;
    half.saturating_sub(half.mul_f64(rand::random::<f64>() * 0.1))
}

/// An error and its causes, joined: `transport error: tcp connect error: Connection refused`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn send(tx: &mpsc::Sender<proto::ProxyMessage>, kind: Kind) -> Result<(), ControlError> {
    tx.send(proto::ProxyMessage { kind: Some(kind) })
        .await
        .map_err(|_| ControlError::Stream("stream closed".into()))
}
