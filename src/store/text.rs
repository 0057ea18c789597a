//! Whether an upload's bytes are UTF-8, checked as they stream past (chunks may split a
//! character), so that a text type is recorded with `charset=utf-8` only when it is true.

use std::sync::Mutex;

/// The check of one upload whose type is `media` (a text type without a charset).
#[derive(Debug)]
pub struct Utf8Check {
    /// The type to record, `; charset=utf-8` added, if the bytes are UTF-8.
    pub media: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    invalid: bool,
    /// The start of a character the last chunk ended inside.
    carry: Vec<u8>,
}

/// The length of the character that `lead` begins, if it can begin one.
fn char_len(lead: u8) -> Option<usize> {
    match lead {
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

impl Utf8Check {
    /// A check for an upload of type `media`.
    pub fn new(media: String) -> Utf8Check {
        Utf8Check { media, state: Mutex::new(State::default()) }
    }

    /// Takes the next chunk.
    pub fn feed(&self, mut chunk: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.invalid {
            return;
        }
        if let Some(&lead) = state.carry.first() {
            let Some(len) = char_len(lead) else {
                state.invalid = true;
                return;
            };
            let take = (len - state.carry.len()).min(chunk.len());
            state.carry.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if state.carry.len() < len {
                return;
            }
            if std::str::from_utf8(&state.carry).is_err() {
                state.invalid = true;
                return;
            }
            state.carry.clear();
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => {}
            Err(e) if e.error_len().is_none() => state.carry = chunk[e.valid_up_to()..].to_vec(),
            Err(_) => state.invalid = true,
        }
    }

    /// True if every byte fed so far makes UTF-8 text, with no character left open.
    pub fn is_utf8(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        !state.invalid && state.carry.is_empty()
    }
}

/// Whether a type (its essence, lowercase) is text that a charset applies to.
pub fn is_textual(essence: &str) -> bool {
    essence.starts_with("text/")
        || matches!(essence, "application/json" | "application/javascript" | "application/xml")
        || essence.ends_with("+xml")
        || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(chunks: &[&[u8]]) -> bool {
        let check = Utf8Check::new("text/plain".into());
        for chunk in chunks {
            check.feed(chunk);
        }
        check.is_utf8()
    }

    #[test]
    fn characters_split_across_chunks() {
        let text = "Grüße, 日本, 𐍈".as_bytes();
        for split in 0..text.len() {
            assert!(fed(&[&text[..split], &text[split..]]), "split at {split}");
        }
        for split in 0..text.len() {
            for second in split..text.len() {
                assert!(fed(&[&text[..split], &text[split..second], &text[second..]]));
            }
        }
        assert!(fed(&[]));
        assert!(!fed(&[b"ab\xff"]));
        assert!(!fed(&[&"ü".as_bytes()[..1]]), "a character left open");
        assert!(!fed(&[b"\xe6\x97", b"x"]), "a broken character across chunks");
        assert!(!fed(&[b"\xc0\xaf"]), "an overlong form");
        assert!(is_textual("text/csv") && is_textual("image/svg+xml") && !is_textual("image/png"));
    }
}
