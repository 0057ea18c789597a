//! Byte ranges (RFC 9110 §14): the Range field resolved against a representation's length.
//! An invalid field is ignored (the whole representation is sent); a valid one with nothing
//! satisfiable is 416. Overlapping and adjacent ranges are coalesced (§14.2 allows it), and
//! a field that would cost more than the whole (its ranges add up to more bytes than the
//! representation, or more than [`MAX_PARTS`] remain) gets the whole: `bytes=0-,0-,…` is a
//! way to multiply a small request into a large answer, not a way to read a file.

/// The most parts a multipart/byteranges answer has; more get the whole representation.
pub const MAX_PARTS: usize = 16;

/// What to send for a Range field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// Send the whole representation (no field, unknown unit, invalid syntax, empty resource).
    Whole,
    /// Send these inclusive `(first, last)` ranges: ascending, none overlapping or adjacent.
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
    let mut satisfiable: Vec<(u64, u64)> = parsed.into_iter().flatten().collect();
    if satisfiable.is_empty() {
        return Ranges::Unsatisfiable;
    }
    let asked =
        satisfiable.iter().fold(0u64, |sum, (first, last)| sum.saturating_add(last - first + 1));
    if asked > len {
        return Ranges::Whole;
    }
    satisfiable.sort_unstable();
    let mut parts: Vec<(u64, u64)> = Vec::with_capacity(satisfiable.len());
    for (first, last) in satisfiable {
        match parts.last_mut() {
            Some(previous) if first <= previous.1.saturating_add(1) => {
                previous.1 = previous.1.max(last);
            }
            _ => parts.push((first, last)),
        }
    }
    if parts.len() > MAX_PARTS {
        return Ranges::Whole;
    }
    Ranges::Parts(parts)
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
            // Coalesced: overlapping, adjacent, out of order.
            ("bytes=50-59,0-9,5-14,15-19", 100, Parts(vec![(0, 19), (50, 59)])),
            ("bytes=-10,90-95", 100, Parts(vec![(90, 99)])),
            // More than the whole: the whole.
            ("bytes=0-,0-", 100, Whole),
            ("bytes=0-60,40-99", 100, Whole),
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
        // The same small range many times coalesces to one; many distinct ones are the whole.
        let same = format!("bytes={}", vec!["0-0"; 50].join(","));
        assert_eq!(resolve(&same, 100), Parts(vec![(0, 0)]));
        let spread: Vec<String> = (0..=MAX_PARTS).map(|i| format!("{}-{}", i * 2, i * 2)).collect();
        assert_eq!(resolve(&format!("bytes={}", spread.join(",")), 100), Whole);
        let sixteen = &spread[..MAX_PARTS];
        assert!(
            matches!(resolve(&format!("bytes={}", sixteen.join(",")), 100), Parts(p) if p.len() == MAX_PARTS)
        );
    }
}
