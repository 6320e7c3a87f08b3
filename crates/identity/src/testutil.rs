//! Helpers shared by the crate's tests: real TLS handshakes between the
//! configurations built in [`crate::tls`], over in-memory pipes.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{duplex, DuplexStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::tls::{client_config, server_config, ClientAuth, ExpectedPeer, Svid, TrustBundle};

pub(crate) type ServerStream = tokio_rustls::server::TlsStream<DuplexStream>;
pub(crate) type ClientStream = tokio_rustls::client::TlsStream<DuplexStream>;

/// Runs both ends of a handshake concurrently. Neither side can hang the
/// other: a failing side drops its pipe end, which the other side sees as EOF.
pub(crate) async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> (io::Result<ServerStream>, io::Result<ClientStream>) {
    let (server_io, client_io) = duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let connector = TlsConnector::from(client);
    // Deliberately a name that matches nothing in the certificates: it must
    // play no part in authentication.
    let name = ServerName::try_from("unrelated.example").expect("static server name");
    let run = async {
        tokio::join!(
            acceptor.accept(server_io),
            connector.connect(name, client_io)
        )
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("handshake timed out")
}

/// A mutual-TLS handshake: `server` verifies client certificates against
/// `server_trusts`, `client` expects exactly `server`'s identity and verifies
/// it against `client_trusts`.
pub(crate) async fn mutual(
    server: &Svid,
    server_trusts: &TrustBundle,
    client: &Svid,
    client_trusts: &TrustBundle,
) -> (io::Result<ServerStream>, io::Result<ClientStream>) {
    let server_cfg =
        server_config(server, server_trusts, ClientAuth::Required).expect("server config");
    let client_cfg = client_config(
        Some(client),
        client_trusts,
        ExpectedPeer::OneOf(vec![server.id.clone()]),
    )
    .expect("client config");
    handshake(server_cfg, client_cfg).await
}

/// The rustls error behind a failed handshake.
pub(crate) fn tls_error(result: &io::Result<impl Sized>) -> &rustls::Error {
    let Err(err) = result else {
        panic!("handshake unexpectedly succeeded");
    };
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {err:?}"))
}
