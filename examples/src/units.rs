//! Sizes, durations and prices as people write them on a command line: `16KiB`, `1MiB`, `30s`,
//! `5m`, `1gwei/MiB`, through `bytesize`, `humantime` and alloy's unit parser.
//!
//! A bare number keeps its old meaning (bytes, seconds, wei per byte), so scripts written for
//! earlier versions still work.
//!
//! ```
//! use paid_torrent_examples::units::{parse_duration, parse_price, parse_size};
//! assert_eq!(parse_size("16KiB").unwrap(), 16 * 1024);
//! assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
//! assert_eq!(parse_price("1gwei/KiB").unwrap(), 976_562); // rounded down to whole wei per byte
//! ```

use std::time::Duration;

use alloy_primitives::utils::parse_units;

/// `16KiB`, `1MiB`, `1.5 GiB`, `1048576` (bytes) → bytes. Decimal units (`kB`, `MB`) are powers
/// of 1000, binary ones (`KiB`, `MiB`) powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|s| s.as_u64())
        .map_err(|e| format!("`{text}` is not a size like 16KiB or 1MiB: {e}"))
}

/// `30s`, `5m`, `1h 30m`, `600` (seconds) → a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{text}` is not a duration like 30s or 5m: {e}"))
}

/// A price per byte in wei (for an ERC-20 asset: in its smallest unit) from `AMOUNT[UNIT][/PER]`:
/// `UNIT` is `wei` (default), `gwei` or `ether`; `PER` is a size (`B`, `byte`, `KiB`, `MiB`,
/// `1MB`, …; default one byte). A price per block of bytes is divided down to whole wei per byte,
/// rounding down: `1gwei/MiB` is 953 wei per byte.
pub fn parse_price(text: &str) -> Result<u128, String> {
    let bad = |why: String| {
        format!("`{text}` is not a price like 1wei, 2gwei/MiB or 0.001ether/MiB: {why}")
    };
    let t = text.trim();
    let (amount, per) = match t.split_once('/') {
        Some((a, p)) => (a.trim(), Some(p.trim())),
        None => (t, None),
    };
    let split = amount
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(amount.len());
    let (number, unit) = amount.split_at(split);
    if number.is_empty() || number == "." {
        return Err(bad("no amount".into()));
    }
    let unit = match unit.trim() {
        "" => "wei",
        u => u,
    };
    let unit = unit.to_ascii_lowercase();
    if !matches!(unit.as_str(), "wei" | "gwei" | "ether" | "eth") {
        return Err(bad(format!("unknown unit `{unit}` (wei, gwei or ether)")));
    }
    let unit = if unit == "eth" {
        "ether"
    } else {
        unit.as_str()
    };
    let decimals = match unit {
        "wei" => 0,
        "gwei" => 9,
        _ => 18,
    };
    if let Some((_, frac)) = number.split_once('.')
        && frac.trim_end_matches('0').len() > decimals
    {
        return Err(bad(format!("more decimals than a {unit} has")));
    }
    let wei = parse_units(number, unit)
        .map_err(|e| bad(e.to_string()))?
        .get_absolute();
    let wei = u128::try_from(wei).map_err(|_| bad("too large".into()))?;
    let per_bytes = match per {
        None => 1,
        Some(p) => {
            let p = match p.to_ascii_lowercase().as_str() {
                "b" | "byte" => "1B".to_owned(),
                _ if p.starts_with(|c: char| c.is_ascii_digit()) => p.to_owned(),
                _ => format!("1{p}"),
            };
            parse_size(&p).map_err(bad)?
        }
    };
    if per_bytes == 0 {
        return Err(bad("per zero bytes".into()));
    }
    Ok(wei / u128::from(per_bytes))
}

/// `bytes` for people, in binary units: `1.0 MiB`.
pub fn format_size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16KiB").unwrap(), 16384);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1 MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("1kB").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1").is_err());
        assert_eq!(format_size(1 << 20), "1.0 MiB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("600").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn prices() {
        assert_eq!(parse_price("1").unwrap(), 1);
        assert_eq!(parse_price("7wei").unwrap(), 7);
        assert_eq!(parse_price("1gwei").unwrap(), 1_000_000_000);
        assert_eq!(parse_price("1 gwei/B").unwrap(), 1_000_000_000);
        assert_eq!(parse_price("1gwei/byte").unwrap(), 1_000_000_000);
        assert_eq!(parse_price("1gwei/MiB").unwrap(), 953);
        assert_eq!(parse_price("1048576wei/MiB").unwrap(), 1);
        assert_eq!(parse_price("0.001ether/MiB").unwrap(), 953_674_316);
        assert_eq!(parse_price("2ETH/1MB").unwrap(), 2_000_000_000_000);
        assert!(parse_price("1.5wei").is_err(), "wei has no fraction");
        assert!(parse_price("1dollar").is_err());
        assert!(parse_price("1wei/0B").is_err());
        assert!(parse_price("1wei/parsec").is_err());
        assert!(parse_price("").is_err());
    }
}
