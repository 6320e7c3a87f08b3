//! What routing costs per request, and how it grows with the mesh: the work the proxy does
//! to route an HTTP request (find the addressed service's table, its port's rules, select
//! the rule, pick a weighted destination), measured with a config of one service with one
//! route and with a config of 100 services with 10 routes each (1,000 routes), and, as a
//! worst case, one service carrying all 1,000 routes on one port.
//!
//! `cargo run --release -p trellis-bench --bin routing [ITERATIONS]`
//!
//! Each route matches a path prefix and a header, so a request that takes the last rule has
//! tested every rule before it; the requests measured take each table's last rule (the
//! slowest). The config goes through the same loader and compiler the control plane uses.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use trellis_api::routing::{self, RequestView, RouteTable, Selection, Source};

/// YAML for `services` Services with `routes` VirtualService rules each.
fn config(services: usize, routes: usize) -> String {
    let mut out = String::new();
    for s in 0..services {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: default\n\
             spec:\n  selector:\n    app: svc-{s}\n  ports:\n  - name: http\n    port: 9080\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: svc-{s}\n\
             spec:\n  host: svc-{s}\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n\
             \x20 - name: v2\n    labels:\n      version: v2\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc-{s}\n\
             spec:\n  hosts:\n  - svc-{s}\n  http:\n"
        ));
        for r in 0..routes {
            out.push_str(&format!(
                "  - match:\n    - uri:\n        prefix: /api/r{r}/\n      headers:\n        \
                 x-tenant:\n          exact: tenant-{r}\n    route:\n    - destination:\n        \
                 host: svc-{s}\n        subset: v1\n      weight: 90\n    - destination:\n        \
                 host: svc-{s}\n        subset: v2\n      weight: 10\n"
            ));
        }
        out.push_str("---\n");
    }
    out
}

struct Case {
    name: &'static str,
    tables: BTreeMap<String, RouteTable>,
    host: String,
    path: String,
    tenant: String,
    routes: usize,
}

fn case(name: &'static str, services: usize, routes: usize) -> anyhow::Result<Case> {
    let (resources, diagnostics) =
        trellis_api::load::parse_str(Path::new("bench.yaml"), &config(services, routes));
    if let Some(e) = diagnostics
        .iter()
        .find(|d| d.severity == trellis_api::load::Severity::Error)
    {
        anyhow::bail!("config: {e}");
    }
    let compiled = routing::compile(&resources);
    let last = routes - 1;
    Ok(Case {
        name,
        tables: compiled.tables,
        host: format!("svc-{}.default.svc.cluster.local", services - 1),
        path: format!("/api/r{last}/items/42?page=2"),
        tenant: format!("tenant-{last}"),
        routes: services * routes,
    })
}

/// Nanoseconds per routed request, median of `rounds` runs of `n`.
fn measure(c: &Case, n: u64, rounds: usize) -> anyhow::Result<f64> {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", c.tenant.parse()?);
    headers.insert("user-agent", "bench/1".parse()?);
    let labels = BTreeMap::new();
    let view = RequestView {
        method: "GET",
        scheme: "http",
        authority: "svc:9080",
        path_and_query: &c.path,
        headers: &headers,
        source: Source {
            namespace: "default",
            labels: &labels,
        },
    };
    let mut per = Vec::new();
    let mut picked = 0u64;
    for round in 0..rounds {
        let start = Instant::now();
        for i in 0..n {
            let table = c
                .tables
                .get(std::hint::black_box(c.host.as_str()))
                .and_then(|t| t.port(9080))
                .ok_or_else(|| anyhow::anyhow!("no table for {}", c.host))?;
            match routing::select(table, std::hint::black_box(&view)) {
                Selection::Matched(s) => {
                    if let routing::Action::Forward(d) = &s.rule.action {
                        if routing::pick_weighted(d, i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                            .is_some()
                        {
                            picked += 1;
                        }
                    }
                }
                other => anyhow::bail!("{}: the request was not routed: {other:?}", c.name),
            }
        }
        if round > 0 {
            per.push(start.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    if picked == 0 {
        anyhow::bail!("nothing was picked");
    }
    per.sort_by(f64::total_cmp);
    Ok(per[per.len() / 2])
}

fn main() -> anyhow::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let cases = [
        case("1 service, 1 route", 1, 1)?,
        case("100 services x 10 routes", 100, 10)?,
        case("1 service, 1000 routes on one port (worst case)", 1, 1000)?,
    ];
    let base = measure(&cases[0], n, 6)?;
    println!("| config | routes | ns per request (median of 5 × {n}) | added over 1 route |");
    println!("|---|--:|--:|--:|");
    for c in &cases {
        let ns = if c.routes == 1 {
            base
        } else {
            measure(c, n / 10, 6)?
        };
        println!(
            "| {} | {} | {:.0} | {:+.0} ns |",
            c.name,
            c.routes,
            ns,
            ns - base
        );
    }
    Ok(())
}
