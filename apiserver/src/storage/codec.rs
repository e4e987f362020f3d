//! The stored records of the embedded and TiKV stores (a key's value with its revisions, and a
//! change batch of the log): little-endian integers, length-prefixed byte strings, and a
//! leading format version so a later format can be told apart.

use bytes::Bytes;

use crate::storage::{Change, ChangeBatch, ChangeKind, KeyValue, Revision};

const RECORD_V1: u8 = 1;
const BATCH_V1: u8 = 1;
const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;
const HAS_PREV: u8 = 1;

/// A key's record: `[version u8][create u64][mod u64][value...]`.
pub(crate) fn encode_record(out: &mut Vec<u8>, create: Revision, modified: Revision, v: &[u8]) {
    out.reserve(17 + v.len());
    out.push(RECORD_V1);
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(v);
}

pub(crate) fn decode_record(key: Bytes, raw: &[u8]) -> Result<KeyValue, String> {
    let mut r = Reader::new(raw);
    r.version(RECORD_V1)?;
    let create_revision = r.u64()?;
    let mod_revision = r.u64()?;
    Ok(KeyValue {
        key,
        value: Bytes::copy_from_slice(r.rest()),
        create_revision,
        mod_revision,
    })
}

/// A change batch: `[version u8][count u32]`, then per change `[kind u8][flags u8]`, the key
/// value (`[key len u32][key][value len u32][value][create u64][mod u64]`) and, when `flags`
/// says so, the previous one without its key (the same key).
pub(crate) fn encode_batch(batch: &ChangeBatch) -> Vec<u8> {
    let size: usize = batch
        .changes
        .iter()
        .map(|c| {
            30 + c.kv.key.len()
                + c.kv.value.len()
                + c.prev.as_ref().map_or(0, |p| 20 + p.value.len())
        })
        .sum();
    let mut out = Vec::with_capacity(5 + size);
    out.push(BATCH_V1);
    put_len(&mut out, batch.changes.len());
    for change in &batch.changes {
        out.push(match change.kind {
            ChangeKind::Put => KIND_PUT,
            ChangeKind::Delete => KIND_DELETE,
        });
        out.push(if change.prev.is_some() { HAS_PREV } else { 0 });
        put_bytes(&mut out, &change.kv.key);
        put_value(&mut out, &change.kv);
        if let Some(prev) = &change.prev {
            put_value(&mut out, prev);
        }
    }
    out
}

pub(crate) fn decode_batch(revision: Revision, raw: &[u8]) -> Result<ChangeBatch, String> {
    // One copy of the record; keys and values are slices of it.
    let buf = Bytes::copy_from_slice(raw);
    let mut r = Reader::new(&buf);
    r.version(BATCH_V1)?;
    let count = r.u32()? as usize;
    // Each change takes at least 26 bytes: a count beyond that is corruption, not a reason
    // to allocate.
    if count > raw.len() / 26 {
        return Err(format!("change count {count} exceeds the record size"));
    }
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = match r.u8()? {
            KIND_PUT => ChangeKind::Put,
            KIND_DELETE => ChangeKind::Delete,
            other => return Err(format!("unknown change kind {other}")),
        };
        let flags = r.u8()?;
        if flags & !HAS_PREV != 0 {
            return Err(format!("unknown change flags {flags:#x}"));
        }
        let key = r.bytes(&buf)?;
        let kv = r.value(&buf, key.clone())?;
        let prev = if flags & HAS_PREV != 0 {
            Some(r.value(&buf, key)?)
        } else {
            None
        };
        changes.push(Change { kind, kv, prev });
    }
    if !r.rest().is_empty() {
        return Err(format!("{} trailing bytes", r.rest().len()));
    }
    Ok(ChangeBatch { revision, changes })
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Callers keep transactions under MAX_TXN_BYTES, far below u32::MAX.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_value(out: &mut Vec<u8>, kv: &KeyValue) {
    put_bytes(out, &kv.value);
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
}

/// A bounds-checked cursor: running out of bytes is an error, never a panic.
struct Reader<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Self { raw, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.raw.len())
            .ok_or_else(|| {
                format!(
                    "truncated record: need {n} bytes at offset {}, have {}",
                    self.pos,
                    self.raw.len() - self.pos
                )
            })?;
        let slice = &self.raw[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn version(&mut self, expected: u8) -> Result<(), String> {
        match self.u8()? {
            v if v == expected => Ok(()),
            v => Err(format!("unknown record version {v} (expected {expected})")),
        }
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A length-prefixed byte string, as a slice of `buf` (the buffer this reader reads).
    fn bytes(&mut self, buf: &Bytes) -> Result<Bytes, String> {
        let len = self.u32()? as usize;
        let start = self.pos;
        self.take(len)?;
        Ok(buf.slice(start..start + len))
    }

    fn value(&mut self, buf: &Bytes, key: Bytes) -> Result<KeyValue, String> {
        let value = self.bytes(buf)?;
        Ok(KeyValue {
            key,
            value,
            create_revision: self.u64()?,
            mod_revision: self.u64()?,
        })
    }

    fn rest(&self) -> &'a [u8] {
        &self.raw[self.pos..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &'static str, value: &'static str, create: u64, modified: u64) -> KeyValue {
        KeyValue {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
            create_revision: create,
            mod_revision: modified,
        }
    }

    #[test]
    fn record_round_trips() {
        let mut raw = Vec::new();
        encode_record(&mut raw, 3, 9, b"hello");
        let back = decode_record(Bytes::from_static(b"k"), &raw);
        assert_eq!(back, Ok(kv("k", "hello", 3, 9)));
    }

    #[test]
    fn batch_round_trips() {
        let batch = ChangeBatch {
            revision: 7,
            changes: vec![
                Change {
                    kind: ChangeKind::Put,
                    kv: kv("a", "1", 7, 7),
                    prev: None,
                },
                Change {
                    kind: ChangeKind::Put,
                    kv: kv("b", "2", 2, 7),
                    prev: Some(kv("b", "old", 2, 5)),
                },
                Change {
                    kind: ChangeKind::Delete,
                    kv: kv("c", "", 1, 7),
                    prev: Some(kv("c", "", 1, 1)),
                },
            ],
        };
        assert_eq!(decode_batch(7, &encode_batch(&batch)), Ok(batch));
    }

    #[test]
    fn truncated_or_garbled_records_are_errors() {
        let mut raw = Vec::new();
        encode_record(&mut raw, 1, 2, b"v");
        assert!(decode_record(Bytes::new(), &raw[..10]).is_err());
        assert!(decode_record(Bytes::new(), &[9, 0, 0]).is_err());

        let batch = ChangeBatch {
            revision: 1,
            changes: vec![Change {
                kind: ChangeKind::Put,
                kv: kv("key", "value", 1, 1),
                prev: None,
            }],
        };
        let raw = encode_batch(&batch);
        for cut in 0..raw.len() {
            assert!(decode_batch(1, &raw[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_kind = raw.clone();
        bad_kind[5] = 42;
        assert!(decode_batch(1, &bad_kind).is_err());
        let mut huge_count = raw.clone();
        huge_count[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_batch(1, &huge_count).is_err());
        let mut trailing = raw;
        trailing.push(0);
        assert!(decode_batch(1, &trailing).is_err());
    }
}
