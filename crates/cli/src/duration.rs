//! Durations on the command line: `250ms`, `90s`, `10m`, `24h`, `7d`, `1.5s`.

use std::time::Duration;

/// Parses a number followed by a unit (`ms`, `s`, `m`, `h`, `d`).
pub fn parse(s: &str) -> Result<Duration, String> {
    let err = || format!("expected a duration like 250ms, 90s, 10m, 24h or 7d, got {s:?}");
    let split = s.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(err()),
    };
    // Ten years is far beyond any setting that makes sense, and keeps the float exact.
    if !(0.0..=10.0 * 365.0 * 86_400.0).contains(&secs) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Whole seconds in the largest unit that divides them: `10m`, `90s`, `2h`.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_the_largest_whole_unit() {
        assert_eq!(format(Duration::from_secs(600)), "10m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn parses_units_and_rejects_the_rest() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "10", "m", "-1s", "5y", "1e400s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
