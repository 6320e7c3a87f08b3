//! `trellis tap`: the requests a workload's proxies handle, live, one line each, from the
//! control plane's `GET /api/v1/tap` (which tells the workload's proxies what to report and
//! streams their events back). Needs the admin token: request paths are not for everyone.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::api_client;

#[derive(Args)]
pub struct TapArgs {
    /// The workload whose proxies to tap (its WorkloadEntry name).
    pub workload: String,
    /// The workload's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Only requests whose path starts with this.
    #[arg(long)]
    pub path: Option<String>,
    /// Only requests with this method.
    #[arg(long)]
    pub method: Option<String>,
    /// Exit after this many events.
    #[arg(long)]
    pub max: Option<u64>,
    /// One line per request for people, or the API's JSON lines.
    #[arg(short = 'o', long, value_parser = ["line", "json"], default_value = "line")]
    pub output: String,
    #[command(flatten)]
    pub mesh: crate::local_mesh::MeshTarget,
}

pub async fn run(a: TapArgs) -> anyhow::Result<()> {
    if a.max == Some(0) {
        return Ok(());
    }
    let token = a.mesh.admin_token()?;
    let path = format!(
        "/api/v1/tap{}",
        api_client::query_string(&[
            ("workload", &a.workload),
            ("namespace", &a.namespace),
            ("path", a.path.as_deref().unwrap_or("")),
            ("method", a.method.as_deref().unwrap_or("")),
        ])
    );
    let mut seen = 0;
    api_client::stream_lines(
        a.mesh.api(),
        &path,
        Some(&token),
        Duration::from_secs(10),
        |raw| {
            if a.output == "json" {
                println!("{raw}");
            } else {
                let v: Value = serde_json::from_str(raw)
                    .with_context(|| format!("unexpected line from the tap: {raw}"))?;
                println!("{}", line(&v));
            }
            seen += 1;
            Ok(a.max.is_none_or(|m| seen < m))
        },
    )
    .await?;
    if a.max.is_none_or(|m| seen < m) {
        anyhow::bail!("the control plane closed the tap");
    }
    Ok(())
}

/// `12:34:56.789 destination default/productpage-v1 -> reviews-v1 GET reviews:9080/ 200
/// 3.2ms trace=…`
fn line(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("");
    let or = |a: &'static str, b: &'static str, fallback: &'static str| {
        [s(a), s(b)]
            .into_iter()
            .find(|x| !x.is_empty())
            .unwrap_or(fallback)
            .to_string()
    };
    let micros = v["start_unix_micros"].as_i64().unwrap_or(0);
    let time = crate::certs::utc(micros.div_euclid(1_000_000));
    let time = format!(
        "{}.{:03}",
        time.get(11..).unwrap_or(&time),
        micros.rem_euclid(1_000_000) / 1000
    );
    let target = match format!("{}{}", s("authority"), s("path")) {
        t if t.is_empty() => "-".to_string(),
        t => t,
    };
    let mut out = format!(
        "{time} {:<11} {} -> {} {} {target}",
        s("reporter"),
        or("source_workload", "source_principal", "unmeshed"),
        or("destination_workload", "destination_service", "-"),
        match s("method") {
            "" => "-",
            m => m,
        },
    );
    match v["status"].as_u64() {
        Some(0) | None => out.push_str(" -"),
        Some(c) => out.push_str(&format!(" {c}")),
    }
    if !s("grpc_status").is_empty() {
        out.push_str(&format!(" grpc={}", s("grpc_status")));
    }
    let latency = v["duration_micros"].as_u64().unwrap_or(0) as f64 / 1000.0;
    out.push_str(&format!(" {}", crate::stat::ms(latency)));
    if !s("response_flags").is_empty() {
        out.push_str(&format!(" flags={}", s("response_flags")));
    }
    if !s("trace_id").is_empty() {
        out.push_str(&format!(" trace={}", s("trace_id")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_event() {
        let v = serde_json::json!({
            "tap_id": "t", "start_unix_micros": 1_700_000_000_123_456i64, "reporter": "destination",
            "method": "GET", "authority": "reviews:9080", "path": "/reviews/1", "status": 200,
            "grpc_status": "", "duration_micros": 3250, "source_principal": "spiffe://cluster.local/ns/default/sa/pp",
            "source_workload": "productpage-v1", "destination_workload": "reviews-v1",
            "destination_service": "reviews.default.svc.cluster.local", "response_flags": "",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"
        });
        assert_eq!(
            line(&v),
            "22:13:20.123 destination productpage-v1 -> reviews-v1 GET reviews:9080/reviews/1 200 3.2ms trace=4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let tcp = serde_json::json!({
            "start_unix_micros": 0, "reporter": "source", "status": 0, "duration_micros": 1_500_000,
            "destination_service": "db.default.svc.cluster.local", "response_flags": "UF"
        });
        assert_eq!(
            line(&tcp),
            "00:00:00.000 source      unmeshed -> db.default.svc.cluster.local - - - 1.50s flags=UF"
        );
    }
}
