//! What `XINFO GROUPS` says of a stream's consumer groups: where each one is.

use gears_core::{Record, RedisAccess, Result};

use crate::host::RedisHost;

/// What `XINFO GROUPS` says of one group.
pub(super) struct GroupInfo {
    pub name: String,
    pub pending: i64,
    pub last_delivered: String,
    /// `None` when the server can not tell (entries deleted past the group's position).
    pub lag: Option<i64>,
}

/// The stream's groups (`XINFO GROUPS`, RESP2 lists or RESP3 maps).
pub(super) fn groups(host: &RedisHost, key: &[u8]) -> Option<Vec<GroupInfo>> {
    read_groups(host, key).ok()
}

/// The stream's groups, or why `XINFO GROUPS` failed (`ERR no such key`: no stream).
pub(super) fn read_groups(host: &RedisHost, key: &[u8]) -> Result<Vec<GroupInfo>> {
    let args = [b"XINFO".to_vec(), b"GROUPS".to_vec(), key.to_vec()];
    Ok(parse_groups(host.execute(&args)?))
}

/// The groups of an `XINFO GROUPS` reply.
pub(super) fn parse_groups(reply: Record) -> Vec<GroupInfo> {
    let Record::List(groups) = reply else {
        return Vec::new();
    };
    let mut infos = Vec::with_capacity(groups.len());
    for info in groups {
        let fields = match info {
            Record::List(items) => items,
            Record::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => continue,
        };
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|pair| text(&pair[0]).as_deref() == Some(name))
                .map(|pair| pair[1].clone())
        };
        let (Some(name), Some(Record::Integer(pending)), Some(last_delivered)) = (
            field("name").and_then(|n| text(&n)),
            field("pending"),
            field("last-delivered-id").and_then(|d| text(&d)),
        ) else {
            continue;
        };
        let lag = match field("lag") {
            Some(Record::Integer(lag)) => Some(lag),
            _ => None,
        };
        infos.push(GroupInfo {
            name,
            pending,
            last_delivered,
            lag,
        });
    }
    infos
}

pub(super) fn text(record: &Record) -> Option<String> {
    match record {
        Record::String(s) => Some(s.clone()),
        Record::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}
