//! A packet capture of proxy-to-proxy traffic (tcpdump on the loopback interface) shows TLS
//! 1.3 handshakes and never the plaintext of the requests carried.
//!
//! Needs root and tcpdump (`.ci/run` installs it); it fails, not skips, without them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trellis_testkit::{workspace_root, HttpClient, Mesh};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_to_proxy_traffic_is_tls13_and_never_plaintext() {
    let which = Command::new("tcpdump").arg("--version").output();
    assert!(
        matches!(&which, Ok(o) if o.status.success()),
        "tcpdump is required for this test (apt-get install tcpdump): {which:?}"
    );
    let mesh = Mesh::up(
        BIN.as_ref(),
        &workspace_root().join("examples/quickstart"),
        15,
    )
    .expect("mesh starts");
    let pcap = mesh.tmp_path().join("mtls.pcap");
    let mut tcpdump = Command::new("tcpdump")
        .args(["-i", "lo", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .args(["tcp port 15008 and net 127.0.15.0/24"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump starts");
    // tcpdump writes the file header once it is capturing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0) == 0 {
        if let Some(status) = tcpdump.try_wait().unwrap() {
            let out = tcpdump.wait_with_output().unwrap();
            panic!(
                "tcpdump exited ({status}); root is required: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "tcpdump did not start capturing");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give tcpdump's filter a moment to be attached before traffic starts.
    std::thread::sleep(Duration::from_millis(500));

    let marker = format!("PLAINTEXT-MARKER-{}", std::process::id());
    let client = HttpClient::new();
    // New connections too: the pooled ones were opened before the capture began, so a
    // proxy that had never handshaken is needed to see a handshake. Talking to ratings
    // directly through productpage's proxy opens productpage → ratings for the first time.
    let productpage_proxy = mesh.addr(1, 15001);
    for _ in 0..5 {
        let resp = client
            .get(
                productpage_proxy,
                "ratings:9080",
                &format!("/{marker}"),
                &[("x-marker", marker.as_str())],
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        let body = resp.json().unwrap();
        // The marker really was sent, and arrived at the app.
        assert_eq!(body["headers"]["x-marker"], marker.as_str());
        assert_eq!(body["path"], format!("/{marker}").as_str());
    }
    for _ in 0..20 {
        let resp = client
            .get(
                mesh.front,
                "productpage",
                &format!("/{marker}"),
                &[("x-marker", marker.as_str())],
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(tcpdump.id() as i32, libc::SIGTERM);
    }
    let _ = tcpdump.wait();

    let bytes = std::fs::read(&pcap).unwrap();
    assert!(
        bytes.len() > 4096,
        "capture too small ({} bytes)",
        bytes.len()
    );
    // A TLS handshake record carrying a ClientHello ...
    assert!(
        contains(&bytes, &[0x16, 0x03, 0x01]),
        "no ClientHello record"
    );
    // ... and a ServerHello whose supported_versions extension selects TLS 1.3 (0x0304).
    assert!(
        contains(&bytes, &[0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]),
        "no TLS 1.3 ServerHello"
    );
    assert!(
        !contains(&bytes, marker.as_bytes()),
        "plaintext marker seen on the wire between proxies"
    );
    // Sanity: the marker is findable when present (the same search on a plain buffer).
    assert!(contains(
        format!("x{marker}x").as_bytes(),
        marker.as_bytes()
    ));
}
