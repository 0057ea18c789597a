//! The journal's record format, pure: how a record is framed, read back, and what a
//! sequence of records leaves to rewrite. A record is its payload's length (4 bytes, little
//! endian), the first 16 bytes of the payload's BLAKE3 hash, and the payload: a kind byte,
//! then the kind's fields. Reading stops at the first record that is torn or does not hash
//! to its frame: what follows was never acknowledged.

use std::collections::HashMap;
use std::io;

use bytes::Bytes;

/// Per record: the payload's length (4 bytes) and the first 16 bytes of its BLAKE3 hash.
const FRAME: usize = 20;

const PUT: u8 = 1;
const SUPERSEDE: u8 = 2;
const CANCEL: u8 = 3;

/// One journal record, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A new version of the resource at `key`: its carried metadata and its bytes.
    Put { ticket: u64, key: String, meta: Vec<u8>, body: Vec<u8> },
    /// Whatever is at `key` and beneath it was made durable without the journal.
    Supersede { key: String },
    /// The version recorded under `ticket` never became visible.
    Cancel { ticket: u64 },
}

/// A version to rewrite on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    /// The resource's key (`/a/b.txt`).
    pub key: String,
    /// The metadata the file carries.
    pub meta: Vec<u8>,
    /// The bytes.
    pub body: Vec<u8>,
}

/// Checks that a version of `key` with `meta` can be recorded (their lengths fit the frame).
pub fn fits(key: &str, meta: &[u8]) -> io::Result<()> {
    u16::try_from(key.len()).map_err(io::Error::other)?;
    u32::try_from(meta.len()).map_err(io::Error::other)?;
    Ok(())
}

/// Appends a new version of `key` (see [`fits`]) under `ticket` to `buf`.
pub fn put(buf: &mut Vec<u8>, ticket: u64, key: &str, meta: &[u8], body: &[Bytes]) {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(6 + body.len());
    let (ticket, key_len, meta_len) =
        (ticket.to_le_bytes(), (key.len() as u16).to_le_bytes(), (meta.len() as u32).to_le_bytes());
    parts.extend([&[PUT][..], &ticket, &key_len, key.as_bytes(), &meta_len, meta]);
    parts.extend(body.iter().map(|b| &b[..]));
    frame(buf, &parts);
}

/// Appends to `buf` that `key` and everything beneath it were made durable without the
/// journal.
pub fn supersede(buf: &mut Vec<u8>, key: &str) {
    frame(buf, &[&[SUPERSEDE], key.as_bytes()]);
}

/// Appends to `buf` that the version under `ticket` never became visible.
pub fn cancel(buf: &mut Vec<u8>, ticket: u64) {
    frame(buf, &[&[CANCEL], &ticket.to_le_bytes()]);
}

/// Appends one framed record with `payload`'s parts to `buf`.
fn frame(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME]);
    parts.iter().for_each(|part| buf.extend_from_slice(part));
    let payload = &buf[start + FRAME..];
    let len = u32::try_from(payload.len()).expect("records are small").to_le_bytes();
    let hash = blake3::hash(payload);
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + FRAME].copy_from_slice(&hash.as_bytes()[..16]);
}

/// The records in `bytes` (a segment's content after its header), up to the first torn or
/// corrupt one.
pub fn decode(mut bytes: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    while bytes.len() >= FRAME {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let Some(payload) = bytes.get(FRAME..FRAME + len) else { break };
        if blake3::hash(payload).as_bytes()[..16] != bytes[4..FRAME] {
            break;
        }
        match parse(payload) {
            Some(record) => records.push(record),
            None => break,
        }
        bytes = &bytes[FRAME + len..];
    }
    records
}

fn parse(payload: &[u8]) -> Option<Record> {
    let (&kind, rest) = payload.split_first()?;
    let u64_at = |b: &[u8]| Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?));
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    match kind {
        PUT => {
            let ticket = u64_at(rest)?;
            let rest = &rest[8..];
            let key_len = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
            let key = text(rest.get(2..2 + key_len)?)?;
            let rest = &rest[2 + key_len..];
            let meta_len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let meta = rest.get(4..4 + meta_len)?.to_vec();
            let body = rest[4 + meta_len..].to_vec();
            Some(Record::Put { ticket, key, meta, body })
        }
        SUPERSEDE => Some(Record::Supersede { key: text(rest)? }),
        CANCEL => Some(Record::Cancel { ticket: u64_at(rest)? }),
        _ => None,
    }
}

/// What `records` (in order) leave to rewrite: per key, the last version neither superseded
/// nor cancelled, in the order they were recorded.
pub fn survivors(records: Vec<Record>) -> Vec<Survivor> {
    let mut versions: HashMap<String, Vec<(u64, Survivor)>> = HashMap::new();
    for record in records {
        match record {
            Record::Put { ticket, key, meta, body } => {
                let survivor = Survivor { key: key.clone(), meta, body };
                versions.entry(key).or_default().push((ticket, survivor))
            }
            Record::Supersede { key } => {
                let beneath = format!("{}/", key.trim_end_matches('/'));
                versions.retain(|k, _| *k != key && !k.starts_with(&beneath));
            }
            Record::Cancel { ticket } => {
                versions.values_mut().for_each(|v| v.retain(|(t, _)| *t != ticket))
            }
        }
    }
    let mut last: Vec<_> = versions.into_values().filter_map(|mut v| v.pop()).collect();
    last.sort_by_key(|(ticket, _)| *ticket);
    last.into_iter().map(|(_, survivor)| survivor).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(ticket: u64, key: &str, body: &str) -> Record {
        Record::Put { ticket, key: key.into(), meta: b"t\no".to_vec(), body: body.into() }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let mut buf = Vec::new();
        let body = [Bytes::from_static(b"he"), Bytes::from_static(b"llo")];
        super::put(&mut buf, 7, "/a", b"t\no", &body);
        supersede(&mut buf, "/d");
        cancel(&mut buf, 7);
        let whole = vec![
            version(7, "/a", "hello"),
            Record::Supersede { key: "/d".into() },
            Record::Cancel { ticket: 7 },
        ];
        assert_eq!(decode(&buf), whole);
        // Cut anywhere inside the last record: the first two survive.
        for cut in 1..FRAME + 9 {
            assert_eq!(decode(&buf[..buf.len() - cut]), whole[..2], "cut {cut}");
        }
        // A flipped bit stops the reading there.
        let mut bad = buf.clone();
        let at = bad.len() - 3;
        bad[at] ^= 1;
        assert_eq!(decode(&bad), whole[..2]);
    }

    #[test]
    fn superseded_and_cancelled_versions_do_not_survive() {
        let records = vec![
            version(1, "/a", "a1"),
            version(2, "/d/x", "x"),
            version(3, "/dx", "dx"),
            version(4, "/a", "a2"),
            version(5, "/a", "a3"),
            Record::Cancel { ticket: 5 }, // a3 never became visible: a2 stands
            Record::Supersede { key: "/d".into() }, // /d removed: /d/x goes, /dx stays
            version(6, "/b", "b1"),
            Record::Supersede { key: "/b".into() }, // replaced by a large PUT
        ];
        let got: Vec<_> = survivors(records).into_iter().map(|s| (s.key, s.body)).collect();
        assert_eq!(got, vec![("/dx".into(), b"dx".to_vec()), ("/a".into(), b"a2".to_vec())]);
    }

    /// Any record, as written: tickets from a few, so that cancellations meet the versions
    /// they name (over all of `u64` they never would, and the property about them would hold
    /// whatever `survivors` did).
    fn any_record() -> impl Strategy<Value = Record> {
        let key = "/[a-z]{1,3}(/[a-z]{1,3}){0,2}";
        prop_oneof![
            (
                0u64..8,
                key,
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(any::<u8>(), 1..300)
            )
                .prop_map(|(ticket, key, meta, body)| Record::Put {
                    ticket,
                    key,
                    meta,
                    body
                }),
            key.prop_map(|key| Record::Supersede { key }),
            (0u64..8).prop_map(|ticket| Record::Cancel { ticket }),
        ]
    }

    fn encode(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for record in records {
            match record {
                Record::Put { ticket, key, meta, body } => {
                    put(&mut buf, *ticket, key, meta, &[Bytes::copy_from_slice(body)])
                }
                Record::Supersede { key } => supersede(&mut buf, key),
                Record::Cancel { ticket } => cancel(&mut buf, *ticket),
            }
            ends.push(buf.len());
        }
        (buf, ends)
    }

    proptest! {
        /// What is written reads back whole; cut anywhere, exactly the records wholly
        /// before the cut read back.
        #[test]
        fn records_read_back_up_to_any_cut(
            records in prop::collection::vec(any_record(), 0..12),
            cut in any::<prop::sample::Index>(),
        ) {
            let (buf, ends) = encode(&records);
            prop_assert_eq!(decode(&buf), records.clone());
            let at = if buf.is_empty() { 0 } else { cut.index(buf.len() + 1) };
            let whole = ends.iter().filter(|end| **end <= at).count();
            prop_assert_eq!(decode(&buf[..at]), records[..whole].to_vec());
        }

        /// A changed byte never yields a record that was not written: reading stops at the
        /// record it falls in.
        #[test]
        fn a_changed_byte_stops_the_reading_there(
            records in prop::collection::vec(any_record(), 1..8),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let (mut buf, ends) = encode(&records);
            let at = at.index(buf.len());
            buf[at] ^= flip;
            let before = ends.iter().filter(|end| **end <= at).count();
            prop_assert_eq!(decode(&buf), records[..before].to_vec());
        }

        /// Whatever the order, a superseded key and everything beneath it leave no survivor
        /// recorded before the superseding, and a cancelled ticket never survives.
        #[test]
        fn superseded_and_cancelled_never_survive(
            records in prop::collection::vec(any_record(), 0..30),
        ) {
            let left = survivors(records.clone());
            for (i, record) in records.iter().enumerate() {
                if let Record::Cancel { ticket } = record {
                    let cancelled = records.iter().filter_map(|r| match r {
                        Record::Put { ticket: t, key, body, .. } if t == ticket => Some((key, body)),
                        _ => None,
                    });
                    for (key, body) in cancelled {
                        let later = records[i..].iter().any(|r| matches!(r, Record::Put { key: k, .. } if k == key));
                        prop_assert!(later || !left.iter().any(|s| &s.key == key && &s.body == body));
                    }
                }
            }
            for (i, record) in records.iter().enumerate() {
                let Record::Supersede { key: gone } = record else { continue };
                let beneath = format!("{gone}/");
                let put_since = |key: &String| {
                    records[i..].iter().any(|r| matches!(r, Record::Put { key: k, .. } if k == key))
                };
                for survivor in &left {
                    let covered = survivor.key == *gone || survivor.key.starts_with(&beneath);
                    prop_assert!(!covered || put_since(&survivor.key), "{} survived", survivor.key);
                }
            }
            let mut keys: Vec<&String> = left.iter().map(|s| &s.key).collect();
            keys.sort();
            keys.dedup();
            prop_assert_eq!(keys.len(), left.len(), "one survivor per key");
        }
    }
}
