//! `trellis stat`: the golden signals of the mesh (requests per second, success rate, latency
//! percentiles) per service and per edge, over a recent window, from the control plane's
//! `GET /api/v1/stat`. The tables are also what `trellis top` redraws.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::Value;

use crate::api_client;

/// The longest window the control plane keeps reports for.
const MAX_WINDOW: Duration = Duration::from_secs(600);

#[derive(Args)]
pub struct StatArgs {
    /// Only this service: its name, NAME.NAMESPACE, or its host.
    pub service: Option<String>,
    /// Only traffic to this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// How far back to look (at least 1s, at most 10m).
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse)]
    pub window: Duration,
    /// Print the API's JSON instead of tables.
    #[arg(short = 'o', long, value_parser = ["table", "json"], default_value = "table")]
    pub output: String,
    #[command(flatten)]
    pub mesh: crate::local_mesh::MeshTarget,
}

/// What to ask the control plane.
pub struct StatQuery<'a> {
    pub namespace: Option<&'a str>,
    pub service: Option<&'a str>,
    pub window: Duration,
}

pub async fn run(a: StatArgs) -> anyhow::Result<()> {
    let q = StatQuery {
        namespace: a.namespace.as_deref(),
        service: a.service.as_deref(),
        window: a.window,
    };
    let token = a.mesh.read_token()?;
    let v = fetch(a.mesh.api(), &token, &q).await?;
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", render(&v, &q, Order::ByName));
    Ok(())
}

/// Asks `GET /api/v1/stat`, with a read `token`.
pub async fn fetch(api: SocketAddr, token: &str, q: &StatQuery<'_>) -> anyhow::Result<Value> {
    if q.window < Duration::from_secs(1) {
        bail!("--window: at least 1s");
    }
    if q.window > MAX_WINDOW {
        bail!("--window: the control plane keeps 10m of reports at most");
    }
    let window = format!("{}s", q.window.as_secs());
    let path = format!(
        "/api/v1/stat{}",
        api_client::query_string(&[
            ("namespace", q.namespace.unwrap_or("")),
            ("service", q.service.unwrap_or("")),
            ("window", &window),
        ])
    );
    api_client::get(api, &path, token).await
}

/// How rows are sorted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// As the API lists them: by namespace and name.
    ByName,
    /// Busiest first (`trellis top`).
    ByRps,
}

/// The services table, then the edges table; or a sentence saying there is nothing.
pub fn render(v: &Value, q: &StatQuery<'_>, order: Order) -> String {
    let window = crate::duration::format(q.window);
    let mut services: Vec<&Value> = v["services"].as_array().into_iter().flatten().collect();
    let mut edges: Vec<&Value> = v["edges"].as_array().into_iter().flatten().collect();
    if order == Order::ByRps {
        let rps = |x: &Value| x["rps"].as_f64().unwrap_or(0.0);
        services.sort_by(|a, b| rps(b).total_cmp(&rps(a)));
        edges.sort_by(|a, b| rps(b).total_cmp(&rps(a)));
    }
    let mut out = String::new();
    if services.is_empty() && edges.is_empty() {
        let mut scope = String::new();
        if let Some(s) = q.service {
            scope.push_str(&format!(" to service {s}"));
        }
        if let Some(n) = q.namespace {
            scope.push_str(&format!(" in namespace {n}"));
        }
        out.push_str(&format!(
            "no traffic reported{scope} in the last {window} (and no such service in the snapshot)\n"
        ));
        return out;
    }
    let mut rows = vec![header(&["SERVICE", "NAMESPACE"])];
    for s in &services {
        let name = match s["name"].as_str() {
            Some("") | None => "-",
            Some(n) => n,
        };
        rows.push(row(&[name, text(&s["namespace"])], s));
    }
    out.push_str(&table(&rows));
    if edges.is_empty() {
        out.push_str(&format!(
            "\nno requests reported{} in the last {window} (proxies report every 2s)\n",
            q.service
                .map(|s| format!(" to service {s}"))
                .unwrap_or_default()
        ));
        return out;
    }
    let mut rows = vec![header(&["FROM", "TO", "SERVICE"])];
    for e in &edges {
        let to = match (
            text(&e["destination_namespace"]),
            text(&e["destination_workload"]),
        ) {
            (_, "") => "-".to_string(),
            ("", w) => w.to_string(),
            (ns, w) => format!("{ns}/{w}"),
        };
        let service = match text(&e["destination_name"]) {
            "" => "-",
            s => s,
        };
        rows.push(row(&[text(&e["source"]), &to, service], e));
    }
    out.push('\n');
    out.push_str(&table(&rows));
    out
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn header(first: &[&str]) -> Vec<String> {
    first
        .iter()
        .chain(&["RPS", "SUCCESS", "P50", "P95", "P99"])
        .map(|s| s.to_string())
        .collect()
}

fn row(first: &[&str], signals: &Value) -> Vec<String> {
    let mut r: Vec<String> = first.iter().map(|s| s.to_string()).collect();
    r.push(rps(signals["rps"].as_f64().unwrap_or(0.0)));
    r.push(match signals["success_rate"].as_f64() {
        Some(s) => format!("{:.2}%", s * 100.0),
        None => "-".into(),
    });
    for p in ["p50_ms", "p95_ms", "p99_ms"] {
        r.push(signals[p].as_f64().map(ms).unwrap_or_else(|| "-".into()));
    }
    r
}

/// Requests per second with the precision that matters at that size.
fn rps(r: f64) -> String {
    if r == 0.0 {
        "0".into()
    } else if r < 1.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.1}")
    }
}

/// Milliseconds for people: `0.45ms`, `3.2ms`, `120ms`, `1.50s`.
pub fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.2}ms")
    } else if v < 10.0 {
        format!("{v:.1}ms")
    } else if v < 1000.0 {
        format!("{v:.0}ms")
    } else {
        format!("{:.2}s", v / 1000.0)
    }
}

/// Left-aligned columns, two spaces apart, each as wide as its widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> StatQuery<'static> {
        StatQuery {
            namespace: None,
            service: None,
            window: Duration::from_secs(30),
        }
    }

    fn sample() -> Value {
        serde_json::json!({
            "window_secs": 30,
            "services": [
                {"service": "details.default.svc.cluster.local", "name": "details", "namespace": "default",
                 "rps": 0.0, "success_rate": null, "requests": 0, "failures": 0,
                 "p50_ms": null, "p95_ms": null, "p99_ms": null},
                {"service": "reviews.default.svc.cluster.local", "name": "reviews", "namespace": "default",
                 "rps": 12.5, "success_rate": 0.995, "requests": 375, "failures": 2,
                 "p50_ms": 3.25, "p95_ms": 48.0, "p99_ms": 1250.0}
            ],
            "edges": [
                {"source": "default/productpage-v1", "destination_name": "reviews",
                 "destination_namespace": "default", "destination_workload": "reviews-v1",
                 "rps": 12.5, "success_rate": 0.995, "p50_ms": 3.25, "p95_ms": 48.0, "p99_ms": 1250.0}
            ]
        })
    }

    #[test]
    fn tables_show_services_then_edges() {
        let out = render(&sample(), &q(), Order::ByName);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "SERVICE  NAMESPACE  RPS   SUCCESS  P50    P95   P99"
        );
        assert_eq!(
            lines[1],
            "details  default    0     -        -      -     -"
        );
        assert_eq!(
            lines[2],
            "reviews  default    12.5  99.50%   3.2ms  48ms  1.25s"
        );
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("FROM                    TO                  SERVICE  RPS"));
        assert!(lines[5].starts_with("default/productpage-v1  default/reviews-v1  reviews  12.5"));
    }

    #[test]
    fn busiest_first_for_top() {
        let out = render(&sample(), &q(), Order::ByRps);
        assert!(out.lines().nth(1).unwrap().starts_with("reviews"), "{out}");
    }

    #[test]
    fn says_so_when_there_is_no_data() {
        let empty = serde_json::json!({"window_secs": 30, "services": [], "edges": []});
        let q = StatQuery {
            service: Some("ratings"),
            namespace: Some("default"),
            window: Duration::from_secs(60),
        };
        assert_eq!(
            render(&empty, &q, Order::ByName),
            "no traffic reported to service ratings in namespace default in the last 1m (and no such service in the snapshot)\n"
        );
        let mut quiet = sample();
        quiet["edges"] = serde_json::json!([]);
        let out = render(
            &quiet,
            &StatQuery {
                window: Duration::from_secs(30),
                ..q
            },
            Order::ByName,
        );
        assert!(out.ends_with("no requests reported to service ratings in the last 30s (proxies report every 2s)\n"), "{out}");
    }

    #[test]
    fn latencies_read_naturally() {
        assert_eq!(ms(0.456), "0.46ms");
        assert_eq!(ms(3.25), "3.2ms");
        assert_eq!(ms(48.4), "48ms");
        assert_eq!(ms(1500.0), "1.50s");
        assert_eq!(rps(0.033), "0.03");
    }
}
