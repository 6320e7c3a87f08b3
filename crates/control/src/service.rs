//! The gRPC API proxies use (port 15012): `Sign` issues certificates, `Subscribe` registers a
//! workload (admitted by [`crate::admission`], then held in [`crate::registry`]) and streams
//! its snapshots.
//!
//! On the same stream a proxy sends, besides its ACKs and NACKs, a `Report` every 2 s
//! (plaintext sources for [`crate::plaintext`], golden signals for [`crate::golden`]) and the
//! events of its open taps ([`crate::tap`]); the control plane sends, besides snapshots, the
//! set of taps the proxy must serve whenever it changes (a `SnapshotMessage` with only `tap`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use trellis_api::proto::{self, proxy_message::Kind};
use trellis_identity::{CaError, CertificateAuthority, SpiffeId, TokenStore};

use crate::certs::CertLedger;
use crate::incoming::PeerInfo;
use crate::metrics::ControlMetrics;
use crate::registry::Registry;

/// State the API handlers share.
pub struct ControlService {
    pub ca: Arc<CertificateAuthority>,
    pub tokens: Arc<TokenStore>,
    pub registry: Arc<Registry>,
    pub ledger: Arc<CertLedger>,
    pub metrics: Arc<ControlMetrics>,
    pub snapshots: watch::Receiver<Arc<proto::SnapshotMessage>>,
    /// The config revision serving, which registrations are checked against.
    pub revisions: watch::Receiver<Arc<crate::store::Revision>>,
    pub svid_ttl: Duration,
    pub plaintext: Arc<crate::plaintext::PlaintextLedger>,
    pub golden: Arc<crate::golden::GoldenWindow>,
    pub taps: Arc<crate::tap::TapRegistry>,
}

type SnapshotStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::SnapshotMessage, Status>> + Send>>;

fn peer<T>(req: &Request<T>) -> Option<PeerInfo> {
    req.extensions().get::<PeerInfo>().cloned()
}

#[tonic::async_trait]
impl proto::control_server::Control for ControlService {
    async fn sign(
        &self,
        req: Request<proto::SignRequest>,
    ) -> Result<Response<proto::SignResponse>, Status> {
        let peer = peer(&req);
        let remote = peer
            .as_ref()
            .map(|p| p.remote.to_string())
            .unwrap_or_default();
        let caller = peer.and_then(|p| p.identity);
        let proto::SignRequest {
            token,
            csr_der,
            workload_name,
        } = req.into_inner();
        let (tokens, ca, ttl) = (self.tokens.clone(), self.ca.clone(), self.svid_ttl);
        let authorize = move |id: &SpiffeId| -> Result<(), String> {
            // The CA refuses these itself; checked here too so that neither a token nor a
            // certificate can ever be the reason one is issued on this path.
            if trellis_identity::is_reserved(id) {
                return Err(format!("{id} is reserved for the mesh's own components"));
            }
            if !token.is_empty() {
                return tokens.authorize(&token, id).map_err(|e| e.to_string());
            }
            match &caller {
                Some(c) if c == id => Ok(()),
                Some(c) => Err(format!("a proxy authenticated as {c} cannot renew {id}")),
                None => Err("no join token and no client certificate".to_string()),
            }
        };
        // The token store reads its file and signing is CPU work: both off the async threads.
        let result = tokio::task::spawn_blocking(move || ca.sign_csr(&csr_der, authorize, ttl))
            .await
            .map_err(|e| Status::internal(format!("signing task failed: {e}")))?;
        match result {
            Ok(issued) => {
                tracing::info!(identity = %issued.spiffe_id, workload = %workload_name, serial = %issued.serial_hex, %remote, "certificate issued");
                self.metrics.certificates_issued.inc();
                self.ledger.issued(
                    &issued.spiffe_id.to_string(),
                    &workload_name,
                    &issued.serial_hex,
                    issued.not_after,
                    &issued.issuer_fingerprint,
                );
                let not_after_unix = issued
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                Ok(Response::new(proto::SignResponse {
                    cert_chain_pem: issued.cert_chain_pem,
                    trust_bundle_pem: self.ca.trust_bundle_pem(),
                    not_after_unix,
                    issuer_root_fingerprint: issued.issuer_fingerprint,
                }))
            }
            Err(e) => {
                tracing::warn!(%remote, workload = %workload_name, error = %e, "certificate request refused");
                let requested = match &e {
                    CaError::NotAuthorized { requested, .. }
                    | CaError::ReservedIdentity { requested } => Some(requested.as_str()),
                    _ => None,
                };
                self.metrics.certificate_requests_refused.inc();
                self.ledger
                    .refused(requested, &workload_name, &e.to_string());
                Err(match e {
                    CaError::NotAuthorized { .. } | CaError::ReservedIdentity { .. } => {
                        Status::permission_denied(e.to_string())
                    }
                    _ => Status::invalid_argument(e.to_string()),
                })
            }
        }
    }

    type SubscribeStream = SnapshotStream;

    async fn subscribe(
        &self,
        req: Request<Streaming<proto::ProxyMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let Some(PeerInfo {
            remote,
            identity: Some(id),
        }) = peer(&req)
        else {
            return Err(Status::unauthenticated(
                "the snapshot stream needs the proxy's certificate",
            ));
        };
        let mut inbound = req.into_inner();
        let register = match inbound.message().await? {
            Some(proto::ProxyMessage {
                kind: Some(Kind::Register(r)),
            }) => r,
            _ => return Err(Status::invalid_argument("first message must be Register")),
        };
        let config = self.revisions.borrow().clone();
        let admitted = crate::admission::admit(&id, register, &config.config).and_then(|w| {
            let registration = self.registry.register(w.clone())?;
            Ok((w, registration))
        });
        let (workload, registration) = match admitted {
            Ok(admitted) => admitted,
            Err(e) => {
                tracing::warn!(identity = %id, %remote, error = %e, "registration refused");
                self.metrics.registrations_refused.inc();
                return Err(e.status());
            }
        };
        tracing::info!(workload = %workload.name, identity = %id, %remote, "proxy connected");
        let key = crate::plaintext::WorkloadKey {
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        };
        let (proxy_taps, mut tap_sets) = self.taps.connect(key);
        let reporter = Arc::new(crate::golden::Reporter {
            namespace: workload.namespace.clone(),
            workload: workload.name.clone(),
            address: workload.address,
        });

        let (tx, rx) = mpsc::channel(4);
        let mut snapshots = self.snapshots.clone();
        let plaintext = self.plaintext.clone();
        let golden = self.golden.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            // Dropped when this task ends, however it ends: the workload leaves the registry,
            // and the tap registry.
            let (registration, proxy_taps) = (registration, proxy_taps);
            let mut sent = String::new();
            // When the version in `sent` went out, until its ACK: the push latency.
            let mut sent_at: Option<std::time::Instant> = None;
            // Set when the proxy's set of taps changed (or is not empty as it connects).
            let mut taps_due = tap_sets.has_changed().unwrap_or(false);
            // A proxy with another histogram layout would be logged every 2 s otherwise.
            let mut warned_layout = false;
            loop {
                let snap = snapshots.borrow_and_update().clone();
                if snap.version != sent {
                    sent = snap.version.clone();
                    sent_at = Some(std::time::Instant::now());
                    if tx.send(Ok((*snap).clone())).await.is_err() {
                        break;
                    }
                }
                // After the snapshot, so a new proxy has its first snapshot before its taps.
                if std::mem::take(&mut taps_due) {
                    let set = (**tap_sets.borrow_and_update()).clone();
                    tracing::debug!(workload = %workload.name, taps = set.taps.len(), "tap set sent");
                    let msg = proto::SnapshotMessage {
                        tap: Some(set),
                        ..Default::default()
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                }
                tokio::select! {
                    r = snapshots.changed() => if r.is_err() { break },
                    r = tap_sets.changed() => match r {
                        Ok(()) => taps_due = true,
                        Err(_) => break,
                    },
                    m = inbound.message() => match m {
                        Ok(Some(proto::ProxyMessage { kind: Some(Kind::Ack(a)) })) => {
                            tracing::debug!(workload = %workload.name, version = %a.version, "snapshot ACK");
                            if a.version == sent {
                                if let Some(at) = sent_at.take() {
                                    metrics.push_duration.observe(at.elapsed().as_secs_f64());
                                }
                            }
                            registration.report(|s| {
                                s.acked_version = a.version;
                                s.svid_issuer_root = a.svid_issuer_root_fingerprint;
                                s.nack = None;
                            });
                        }
                        Ok(Some(proto::ProxyMessage { kind: Some(Kind::Nack(n)) })) => {
                            tracing::warn!(workload = %workload.name, version = %n.version, error = %n.error, "snapshot NACK");
                            registration.report(|s| s.nack = Some(n.error));
                        }
                        Ok(Some(proto::ProxyMessage { kind: Some(Kind::Report(r)) })) => {
                            let sources: Vec<(std::net::IpAddr, u64)> = r
                                .plaintext
                                .iter()
                                .filter_map(|s| Some((s.source_address.parse().ok()?, s.connections)))
                                .collect();
                            plaintext.record(
                                crate::plaintext::WorkloadKey {
                                    namespace: workload.namespace.clone(),
                                    name: workload.name.clone(),
                                },
                                std::time::SystemTime::now(),
                                &sources,
                            );
                            let recorded = golden.record(&reporter, std::time::Instant::now(), r.period_millis, r.edges);
                            metrics.reports_received.inc();
                            if recorded.foreign_layout > 0 {
                                metrics.report_edges_foreign_layout.inc_by(recorded.foreign_layout as u64);
                                if !std::mem::replace(&mut warned_layout, true) {
                                    tracing::warn!(workload = %workload.name, %remote, edges = recorded.foreign_layout, "latency histograms with other bucket bounds: counted without latency (logged once per connection)");
                                }
                            }
                            if recorded.dropped > 0 {
                                tracing::debug!(workload = %workload.name, dropped = recorded.dropped, "report edges over the limit dropped");
                            }
                        }
                        Ok(Some(proto::ProxyMessage { kind: Some(Kind::Tap(t)) })) => {
                            let dropped = proxy_taps.deliver(t.events);
                            if dropped > 0 {
                                metrics.tap_events_dropped.inc_by(dropped as u64);
                            }
                        }
                        Ok(Some(_)) => {
                            tracing::warn!(workload = %workload.name, "unexpected message on snapshot stream");
                        }
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            tracing::info!(workload = %workload.name, %remote, "proxy disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
