//! Durations and sizes as operators write them: `250ms`, `2s`, `1m`, `1h`; `512KB`, `10MB`,
//! `1GiB`. Parsing only: what a value may be is [`crate::config`]'s to say.

use std::time::Duration;

/// Parses `250ms`, `2s`, `1m`, `1h` (a bare number means seconds).
pub fn parse_duration(v: &str) -> Result<Duration, &'static str> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    if num.is_empty() {
        return Err("is not a duration like 250ms, 2s or 1m");
    }
    let n: u64 = num.parse().map_err(|_| "is too large")?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err("has an unknown unit (use ms, s, m or h)"),
    };
    ms.map(Duration::from_millis).ok_or("is too large")
}

/// Parses `512KB`, `10MB`, `1GiB`, `100` (bytes). K/M/G are powers of 1024, as nginx reads them.
pub fn parse_size(v: &str) -> Result<u64, &'static str> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    if num.is_empty() {
        return Err("is not a size like 512KB, 10MB or 1GiB");
    }
    let n: u64 = num.parse().map_err(|_| "is too large")?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err("has an unknown unit (use B, KB, MB or GB)"),
    };
    n.checked_mul(mult).ok_or("is too large")
}

pub fn show_duration(d: Duration) -> String {
    if d.as_millis() % 1000 == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("250ms", Some(250)),
            ("2s", Some(2000)),
            ("1m", Some(60_000)),
            ("1h", Some(3_600_000)),
            ("3", Some(3000)),
            (" 5s ", Some(5000)),
            ("0s", Some(0)),
            ("", None),
            ("s", None),
            ("2x", None),
            ("-1s", None),
            ("1.5s", None),
            ("99999999999999999999s", None),
        ];
        for (input, want) in cases {
            let got = parse_duration(input).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, *want, "parse_duration({input:?})");
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("100", Some(100)),
            ("512KB", Some(512 * 1024)),
            ("10MB", Some(10 << 20)),
            ("1GiB", Some(1 << 30)),
            ("1gb", Some(1 << 30)),
            ("7B", Some(7)),
            ("10 MB", Some(10 << 20)),
            ("MB", None),
            ("10TB", None),
            ("-5", None),
            ("99999999999999999999", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).ok(), *want, "parse_size({input:?})");
        }
    }
}
