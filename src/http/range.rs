//! Byte ranges (RFC 9110 §14): the Range field resolved against a representation's length.
//! An invalid field is ignored (the whole representation is sent); a valid one with nothing
//! satisfiable, or an abusive one, is refused with 416.

/// The most ranges one request may ask for.
pub const MAX_RANGES: usize = 32;

/// What to send for a Range field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// Send the whole representation (no field, unknown unit, invalid syntax, empty resource).
    Whole,
    /// Send these inclusive `(first, last)` ranges, in request order.
    Parts(Vec<(u64, u64)>),
    /// Answer 416.
    Unsatisfiable,
}

/// Resolves `field` (e.g. `bytes=0-99,-10`) against a representation of `len` bytes.
pub fn resolve(field: &str, len: u64) -> Ranges {
    let Some((unit, specs)) = field.split_once('=') else {
        return Ranges::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || len == 0 {
        return Ranges::Whole;
    }
    let mut parsed = Vec::new();
    for spec in specs.split(',') {
        let spec = spec.trim_matches([' ', '\t']);
        if spec.is_empty() {
            continue;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Whole;
        };
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // An overflowing number is still a valid, very large position.
            Some(s.parse().unwrap_or(u64::MAX))
        };
        let range = match (first.is_empty(), last.is_empty()) {
            (true, true) => return Ranges::Whole,
            (true, false) => {
                let Some(suffix) = number(last) else {
                    return Ranges::Whole;
                };
                (suffix > 0).then(|| (len.saturating_sub(suffix), len - 1))
            }
            (false, open) => {
                let Some(start) = number(first) else {
                    return Ranges::Whole;
                };
                let end = if open {
                    u64::MAX
                } else {
                    match number(last) {
                        Some(end) if end >= start => end,
                        _ => return Ranges::Whole,
                    }
                };
                (start < len).then(|| (start, end.min(len - 1)))
            }
        };
        parsed.push(range);
    }
    if parsed.is_empty() {
        return Ranges::Whole;
    }
    if parsed.len() > MAX_RANGES {
        return Ranges::Unsatisfiable;
    }
    let satisfiable: Vec<(u64, u64)> = parsed.into_iter().flatten().collect();
    if satisfiable.is_empty() { Ranges::Unsatisfiable } else { Ranges::Parts(satisfiable) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ranges::*;

    #[test]
    fn cases() {
        let table: &[(&str, u64, Ranges)] = &[
            ("bytes=0-9", 100, Parts(vec![(0, 9)])),
            ("bytes=90-", 100, Parts(vec![(90, 99)])),
            ("bytes=-10", 100, Parts(vec![(90, 99)])),
            ("bytes=-1000", 100, Parts(vec![(0, 99)])),
            ("bytes=95-200", 100, Parts(vec![(95, 99)])),
            ("BYTES=0-0, 5-5", 100, Parts(vec![(0, 0), (5, 5)])),
            ("bytes=0-1,200-300", 100, Parts(vec![(0, 1)])),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=99999999999999999999999-", 100, Unsatisfiable),
            ("bytes=5-1", 100, Whole),
            ("bytes=x-1", 100, Whole),
            ("bytes=-", 100, Whole),
            ("items=0-1", 100, Whole),
            ("bytes0-1", 100, Whole),
            ("bytes=0-1", 0, Whole),
        ];
        for (field, len, want) in table {
            assert_eq!(&resolve(field, *len), want, "{field} of {len}");
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(resolve(&many, 100), Unsatisfiable);
    }
}
