//! Key layouts of the embedded store's tables (docs/data-model.md maps each onto ScyllaDB).
//!
//! Timestamps are stored inverted (`u64::MAX - created`) big-endian, so ascending key order is
//! newest first and a `before` bound is a start key. Owner, CID and lowercase name are
//! NUL-terminated; the domain's typed values reject NUL in any of them on every entry path. The
//! CID index uses the canonical CID (`PinRecord::canonical_cid`), whatever the client spelled.

use pinhive_domain::{PinRecord, PinStatus};

pub const STATUS: u8 = b's';
pub const CID: u8 = b'c';
pub const NAME: u8 = b'n';

pub fn inverted(created_ns: i64) -> [u8; 8] {
    (u64::MAX - created_ns.max(0) as u64).to_be_bytes()
}

pub fn status_prefix(owner: &str, status: PinStatus) -> Vec<u8> {
    let mut key = vec![STATUS];
    key.extend_from_slice(owner.as_bytes());
    key.push(0);
    key.push(status.code());
    key
}

pub fn cid_prefix(owner: &str, cid: &str) -> Vec<u8> {
    let mut key = vec![CID];
    key.extend_from_slice(owner.as_bytes());
    key.push(0);
    key.extend_from_slice(cid.as_bytes());
    key.push(0);
    key
}

pub fn name_prefix(owner: &str, name: &str) -> Vec<u8> {
    let mut key = vec![NAME];
    key.extend_from_slice(owner.as_bytes());
    key.push(0);
    key.extend_from_slice(name.to_lowercase().as_bytes());
    key.push(0);
    key
}

fn full(mut prefix: Vec<u8>, pin: &PinRecord) -> Vec<u8> {
    prefix.extend_from_slice(&inverted(pin.created_ns));
    prefix.extend_from_slice(pin.requestid.as_bytes());
    prefix
}

/// Every index key of `pin`.
pub fn index_keys(pin: &PinRecord) -> Vec<Vec<u8>> {
    let mut keys = vec![
        full(status_prefix(&pin.owner, pin.status), pin),
        full(cid_prefix(&pin.owner, &pin.canonical_cid()), pin),
    ];
    if let Some(name) = &pin.name {
        keys.push(full(name_prefix(&pin.owner, name), pin));
    }
    keys
}

/// Splits an index key (known prefix length) into (inverted time, requestid).
pub fn split(key: &[u8], prefix_len: usize) -> Option<(u64, String)> {
    let time = key.get(prefix_len..prefix_len + 8)?;
    let requestid = key.get(prefix_len + 8..)?;
    Some((
        u64::from_be_bytes(time.try_into().ok()?),
        String::from_utf8(requestid.to_vec()).ok()?,
    ))
}

/// Commit table: a partition's commit row and counters share the partition's prefix (one
/// ScyllaDB partition: commit as the static row, counters clustered by owner and status).
pub fn commit_key(partition: u32) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.push(0);
    key
}

pub fn counter_key(owner: &str, status: PinStatus, partition: u32) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.push(1);
    key.extend_from_slice(owner.as_bytes());
    key.push(0);
    key.push(status.code());
    key
}

/// A CID's pin list: `cid NUL bucket(8, big-endian) requestid`.
pub fn cid_pin_prefix(cid: &str) -> Vec<u8> {
    let mut key = cid.as_bytes().to_vec();
    key.push(0);
    key
}

pub fn cid_pin_key(cid: &str, bucket: u64, requestid: &str) -> Vec<u8> {
    let mut key = cid_pin_prefix(cid);
    key.extend_from_slice(&bucket.to_be_bytes());
    key.extend_from_slice(requestid.as_bytes());
    key
}

pub fn journal_prefix(cid: &str) -> Vec<u8> {
    let mut key = cid.as_bytes().to_vec();
    key.push(0);
    key
}

pub fn journal_key(cid: &str, offset: u64) -> Vec<u8> {
    let mut key = journal_prefix(cid);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

pub fn pending_key(partition: u32, cid: &str) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.extend_from_slice(cid.as_bytes());
    key
}

pub fn checkpoint_key(consumer: &str, partition: u32) -> Vec<u8> {
    let mut key = consumer.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

pub fn dead_letter_key(partition: u32, offset: u64) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// Time order of the journal, for retention: `partition, timestamp, offset` → CID.
pub fn journal_time_key(partition: u32, timestamp_ns: i64, offset: u64) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.extend_from_slice(&(timestamp_ns.max(0) as u64).to_be_bytes());
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// The node index: `node NUL partition(4, big-endian) cid` (no value). Node ids hold no NUL
/// (validated where nodes are registered), so the NUL ends the node id unambiguously: node
/// `a` and node `a\x01…` have disjoint prefixes.
pub fn node_cid_prefix(node: &str, partition: u32) -> Vec<u8> {
    let mut key = node.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

pub fn node_cid_key(node: &str, partition: u32, cid: &str) -> Vec<u8> {
    let mut key = node_cid_prefix(node, partition);
    key.extend_from_slice(cid.as_bytes());
    key
}

/// The expiry index: `partition(4, big-endian) due(8, big-endian, sign bit flipped so that the
/// bytes sort like the numbers) cid NUL requestid` (no value): a partition's entries in due
/// order, so the entries due in a window are one range read. CIDs and request ids hold no NUL.
pub fn expiry_time_prefix(partition: u32, due_ns: i64) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.extend_from_slice(&((due_ns as u64) ^ (1 << 63)).to_be_bytes());
    key
}

pub fn expiry_key(partition: u32, due_ns: i64, cid: &str, requestid: &str) -> Vec<u8> {
    let mut key = expiry_time_prefix(partition, due_ns);
    key.extend_from_slice(cid.as_bytes());
    key.push(0);
    key.extend_from_slice(requestid.as_bytes());
    key
}

/// The (due, cid, requestid) of an expiry-index key; `None` if it is not one.
pub fn parse_expiry_key(key: &[u8]) -> Option<(i64, String, String)> {
    let due = u64::from_be_bytes(key.get(4..12)?.try_into().ok()?) ^ (1 << 63);
    let rest = key.get(12..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let cid = String::from_utf8(rest[..nul].to_vec()).ok()?;
    let requestid = String::from_utf8(rest[nul + 1..].to_vec()).ok()?;
    Some((due as i64, cid, requestid))
}

/// The first key after every key that starts with `prefix` (`None`: no such key, the prefix
/// is all 0xff bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_index_keys_of_different_nodes_and_partitions_do_not_overlap() {
        let a = node_cid_prefix("a", 1);
        assert!(node_cid_key("a", 1, "cid").starts_with(&a));
        assert!(!node_cid_key("a\u{1}", 1, "cid").starts_with(&a));
        assert!(!node_cid_key("a", 2, "cid").starts_with(&a));
        assert!(!node_cid_key("ab", 1, "cid").starts_with(&a));
        let end = prefix_end(&a).unwrap();
        assert!(node_cid_key("a", 1, "\u{7f}\u{7f}") < end);
        assert!(node_cid_key("a", 2, "") >= end);
    }

    #[test]
    fn expiry_keys_sort_by_partition_then_time_and_parse_back() {
        let key = expiry_key(3, 1_700_000_000_000_000_000, "bafkcid", "r-1");
        assert_eq!(
            parse_expiry_key(&key),
            Some((1_700_000_000_000_000_000, "bafkcid".into(), "r-1".into()))
        );
        assert!(expiry_key(3, -1, "z", "z") < expiry_key(3, 0, "a", "a"));
        assert!(expiry_key(3, 5, "z", "z") < expiry_key(3, 6, "a", "a"));
        assert!(expiry_key(3, i64::MAX, "z", "z") < expiry_key(4, i64::MIN, "a", "a"));
        assert!(expiry_key(3, 5, "a", "b") < expiry_time_prefix(3, 6));
        assert_eq!(parse_expiry_key(&[0, 0, 0]), None);
    }

    #[test]
    fn prefix_end_carries_over_0xff() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
