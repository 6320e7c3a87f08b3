//! `trellis certs`: every workload certificate the CA issued, with its serial, expiry, time
//! left, issuing root and last renewal result; the roots; and any alarms.

use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct CertsArgs {
    #[command(flatten)]
    pub mesh: crate::local_mesh::MeshTarget,
    /// Print the API's JSON instead of a table.
    #[arg(short = 'o', long, value_parser = ["table", "json"], default_value = "table")]
    pub output: String,
}

/// "3d 4h", "17m 3s": a duration for people.
pub fn human(secs: i64) -> String {
    if secs <= 0 {
        return "expired".into();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn short(v: &Value) -> String {
    v.as_str().unwrap_or("").chars().take(16).collect()
}

pub async fn run(a: CertsArgs) -> anyhow::Result<()> {
    let token = a.mesh.read_token()?;
    let v = crate::api_client::get(a.mesh.api(), "/api/v1/certs", &token).await?;
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let now = v["now_unix"].as_i64().unwrap_or(0);
    println!(
        "{:<56} {:<16} {:<34} {:<21} {:<10} {:<17} LAST RENEWAL",
        "IDENTITY", "WORKLOAD", "SERIAL", "NOT AFTER (UTC)", "TIME LEFT", "ROOT"
    );
    for c in v["certs"].as_array().into_iter().flatten() {
        let not_after = c["not_after_unix"].as_i64().unwrap_or(0);
        println!(
            "{:<56} {:<16} {:<34} {:<21} {:<10} {:<17} {}",
            c["identity"].as_str().unwrap_or(""),
            c["workload"].as_str().unwrap_or(""),
            c["serial"].as_str().unwrap_or(""),
            utc(not_after),
            human(not_after - now),
            short(&c["issuer_root"]),
            c["last_result"].as_str().unwrap_or(""),
        );
    }
    println!();
    println!("ROOTS");
    for r in v["roots"].as_array().into_iter().flatten() {
        let not_after = r["not_after_unix"].as_i64().unwrap_or(0);
        println!(
            "  {:<17} {:<9} {}  expires {} ({} left)",
            short(&r["fingerprint"]),
            r["status"].as_str().unwrap_or(""),
            r["subject"].as_str().unwrap_or(""),
            utc(not_after),
            human(not_after - now)
        );
    }
    let alarms = v["alarms"].as_array().cloned().unwrap_or_default();
    if !alarms.is_empty() {
        println!();
        println!("ALARMS");
        for a in alarms {
            println!("  {}", a.as_str().unwrap_or(""));
        }
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS`.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), valid for any date after 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_795_651_200), "2026-11-26 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(human(59), "59s");
        assert_eq!(human(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(human(0), "expired");
    }
}
