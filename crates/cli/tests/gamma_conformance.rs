//! The Gateway API mesh (GAMMA) conformance tests, end to end: all 23 upstream mesh tests
//! against a real mesh, with the upstream manifests and the upstream expectations (the
//! conformance README next to the manifests describes each). Routes are checked in memory
//! by `crates/api/tests/routing/gamma.rs`; here they meet the data plane.
//!
//! * [`manifests`]: the base environment, `mesh/manifests.yaml`, as `trellis up --netns`
//!   runs it: the file unchanged, plus a WorkloadEntry per pod whose demo app is an echo
//!   server (HTTP on 8080, gRPC on 7070) named like a pod.
//! * [`mesh`]: `trellis up --netns` on that directory; each test's YAML is copied in
//!   unmodified, waited for until every proxy has it, and deleted again after the test.
//! * [`client`]: requests sent from inside a workload's network namespace, captured by its
//!   proxy as the app's own are: HTTP/1.1 with an overridable `Host`, no redirects followed,
//!   keep-alive within a batch; gRPC over one HTTP/2 connection.
//! * [`expect`]: the upstream comparator, retry loop (3 passes in a row, 100 ms after a
//!   failure, 30 s) and weight helper (500-request rounds, ±0.05, 10 rounds).
//! * [`suite`]: the 23 tests in the README's order.
//!
//! The mesh starts once; the tests run one after another on it, since no two tests' routes
//! may be applied at once. Each result is printed as it comes, then `passed N/23` with every
//! failure's reason, and the test fails unless all 23 passed.
//!
//! Needs root, `ip` and `nft` (`.ci/run` installs them), and the conformance data in
//! `tests/conformance` (copied into the repository); fails without. Subnet 198.18.50.0/24 is
//! this file's own. `GAMMA_MESH_LOG=1` shows the mesh's output as it runs.

#[path = "gamma_conformance/client.rs"]
mod client;
#[path = "gamma_conformance/expect.rs"]
mod expect;
#[path = "gamma_conformance/manifests.rs"]
mod manifests;
#[path = "gamma_conformance/mesh.rs"]
mod mesh;
#[path = "gamma_conformance/suite.rs"]
mod suite;

use std::path::PathBuf;
use std::time::Instant;

use trellis_testkit::workspace_root;

/// The subnet of the workloads: `198.18.50.0/24`.
const SUBNET: [u8; 3] = [198, 18, 50];

/// Fails the test, loudly, unless it can run: root and the tools it and `up --netns` use.
fn require_root_and_tools() {
    trellis_testkit::lan_mesh::require_root_and(&["ip", "nft"]);
}

/// The conformance manifests, copied unchanged into the repository.
fn conformance_dir() -> PathBuf {
    let dir = workspace_root().join("tests/conformance/gateway-api/mesh");
    assert!(
        dir.join("manifests.yaml").is_file(),
        "the conformance data is missing: {} (it ships in the repository under \
         tests/conformance)",
        dir.display()
    );
    dir
}

/// Applies a test's YAML, runs its cases, deletes the YAML again; the error says which
/// step failed and why.
fn run_test(up: &mesh::Up, ctx: &suite::Ctx, test: &suite::Test) -> Result<(), String> {
    let yaml = test.yaml.map(|y| conformance_dir().join(y));
    if let Some(y) = &yaml {
        up.apply(y).map_err(|e| format!("{e:#}"))?;
    }
    let result = (test.run)(ctx);
    if let Some(y) = &yaml {
        if let Err(e) = up.delete(y) {
            let e = format!("{e:#}");
            return Err(match result {
                Ok(()) => e,
                Err(r) => format!("{r}; then {e}"),
            });
        }
    }
    result
}

#[test]
fn gateway_api_mesh_conformance() {
    require_root_and_tools();
    let dir = conformance_dir();
    let manifests_text =
        std::fs::read_to_string(dir.join("manifests.yaml")).expect("manifests.yaml readable");
    let workloads = manifests::workloads(&manifests_text, SUBNET).expect("manifests translated");
    let files = [
        ("manifests.yaml", manifests_text),
        ("workloads.yaml", manifests::workload_entries(&workloads)),
    ];
    let started = Instant::now();
    let up = mesh::Up::start(&files, SUBNET, workloads.len()).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("mesh up in {:.1} s", started.elapsed().as_secs_f64());
    let ctx = suite::Ctx::new(&workloads, |w| up.client(w)).unwrap_or_else(|e| panic!("{e}"));

    let mut failures = Vec::new();
    for test in &suite::TESTS {
        let t = Instant::now();
        let result = run_test(&up, &ctx, test);
        let secs = t.elapsed().as_secs_f64();
        match &result {
            Ok(()) => eprintln!("PASS {} ({secs:.1} s)", test.name),
            Err(e) => {
                eprintln!("FAIL {} ({secs:.1} s): {e}", test.name);
                failures.push((test.name, e.clone()));
            }
        }
    }
    let total = suite::TESTS.len();
    eprintln!(
        "passed {}/{total} in {:.1} s",
        total - failures.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .map(|(name, e)| format!("{name}: {e}"))
            .collect();
        panic!(
            "passed {}/{total}; failed:\n{}\n\nmesh output:\n{}",
            total - failures.len(),
            list.join("\n"),
            up.output()
        );
    }
}
