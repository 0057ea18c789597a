//! Sizes (`100 MiB`) and durations (`30d`) as written in the configuration.

use std::time::Duration;

/// Parses a size: a whole number of bytes, optionally followed by a unit
/// (`B`, `KiB`, `MiB`, `GiB`, `TiB`, `KB`, `MB`, `GB`, `TB`), with or without a space.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("`{text}` is not a size like \"100 MiB\""))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!("`{other}` is not a size unit (B, KiB, MiB, GiB, KB, MB, GB)"));
        }
    };
    number.checked_mul(factor).ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a duration: a whole number followed by `s`, `m`, `h` or `d` (`30d`, `12h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration like \"30d\""))?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => return Err(format!("`{other}` is not a duration unit (s, m, h, d)")),
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100 MiB"), Ok(100 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("5 KB"), Ok(5_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999 TiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("d").is_err());
    }
}
