//! `RG.PYEXPORTREQ` / `RG.PYIMPORTREQ`: a requirement's wheels leave one server and install on
//! another that has no package index, in RedisGears 1.2's format, so `gears-cli
//! export-requirements` / `import-requirements` work unchanged.
//!
//! The blob (8-byte integers in the machine's byte order; a string is its length with a NUL,
//! its bytes and the NUL; a buffer is its length and its bytes): version 2, the name, the OS it
//! was built on, whether it is in the requirements list (1), the number of wheels, then each
//! wheel's file name (string) and contents (buffer). `RG.PYEXPORTREQ` gives it in chunks of at
//! most 10 MB.

use gears_core::ReplyValue;
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use super::{compiled_os, describe, ref_count};
use crate::guard::guarded;
use crate::host::BlockedReply;
use crate::reply::send;

/// The largest chunk of an exported requirement (RedisGears 1.2's).
const CHUNK: usize = 10 * 1024 * 1024;

/// Everything an import needs: the requirement's text and its wheels.
pub(super) struct Exported {
    pub name: String,
    pub wheels: Vec<(String, Vec<u8>)>,
}

fn put_long(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_ne_bytes());
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    put_long(out, text.len() as i64 + 1);
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

fn put_buffer(out: &mut Vec<u8>, bytes: &[u8]) {
    put_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

pub(super) fn encode(name: &str, wheels: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    put_long(&mut out, 2);
    put_string(&mut out, name);
    put_string(&mut out, &compiled_os());
    put_long(&mut out, 1);
    put_long(&mut out, wheels.len() as i64);
    for (file, bytes) in wheels {
        put_string(&mut out, file);
        put_buffer(&mut out, bytes);
    }
    out
}

/// Reads the blob; RedisGears 1.2's error for the part that is missing or wrong.
pub(super) fn decode(bytes: &[u8]) -> Result<Exported, String> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.long("version")?;
    if version != 2 && version != 1 {
        return Err(bad("version"));
    }
    let name = reader.string("name")?;
    let _os = reader.string("os")?;
    if version == 2 {
        reader.long("is in dictionary")?;
    }
    let count = reader.long("wheels amount")?;
    if !(0..=100_000).contains(&count) {
        return Err(bad("wheels amount"));
    }
    let mut wheels = Vec::new();
    for _ in 0..count {
        let file = reader.string("wheel file name")?;
        // A wheel's file name, not a path; never a source archive (pip would build it, running
        // its code).
        if file.contains('/')
            || file.contains('\\')
            || file.starts_with('.')
            || !file.ends_with(".whl")
            || file.len() <= ".whl".len()
        {
            return Err(bad("wheel file name"));
        }
        let data = reader.buffer("wheel file data")?;
        wheels.push((file, data));
    }
    Ok(Exported { name, wheels })
}

fn bad(what: &str) -> String {
    format!("Bad serialization format on reading requirement {what}")
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn long(&mut self, what: &str) -> Result<i64, String> {
        let slice = self
            .bytes
            .get(self.at..self.at + 8)
            .ok_or_else(|| bad(what))?;
        self.at += 8;
        Ok(i64::from_ne_bytes(slice.try_into().map_err(|_| bad(what))?))
    }

    fn buffer(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let len = usize::try_from(self.long(what)?).map_err(|_| bad(what))?;
        let end = self.at.checked_add(len).ok_or_else(|| bad(what))?;
        let slice = self.bytes.get(self.at..end).ok_or_else(|| bad(what))?;
        self.at = end;
        Ok(slice.to_vec())
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let mut bytes = self.buffer(what)?;
        if bytes.pop() != Some(0) {
            return Err(bad(what));
        }
        String::from_utf8(bytes).map_err(|_| bad(what))
    }
}

/// `RG.PYEXPORTREQ <name>`: `[metadata, [chunks]]`.
pub(crate) fn py_export_req(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() != 2 {
            return Err(RedisError::WrongArity);
        }
        let name = args[1].to_string_lossy();
        let Some(requirement) = super::all().into_iter().find(|r| r.name == name) else {
            return Err(RedisError::Str("requirement does not exists"));
        };
        let blob = super::blob_of(&requirement).map_err(RedisError::String)?;
        let chunks = blob
            .chunks(CHUNK)
            .map(|c| ReplyValue::Bulk(c.to_vec()))
            .collect();
        send(
            ctx,
            &ReplyValue::Array(vec![
                describe(&requirement, ref_count(&requirement.name)),
                ReplyValue::Array(chunks),
            ]),
        )
    })
}

/// `RG.PYIMPORTREQ <chunk> ...`: installs an exported requirement from its wheels (no package
/// index), on a worker; `OK`. One already installed here is kept as it is.
pub(crate) fn py_import_req(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() < 2 {
            return Err(RedisError::WrongArity);
        }
        let blob: Vec<u8> = args[1..]
            .iter()
            .flat_map(|a| a.as_slice().to_vec())
            .collect();
        let exported = decode(&blob).map_err(RedisError::String)?;
        let gears = crate::loaded()?;
        let client = BlockedReply::block(ctx, crate::commands::CAN_NOT_BLOCK)?;
        gears.workers.submit(move || {
            let reply = match import(exported) {
                Ok(()) => ReplyValue::Status("OK".into()),
                Err(e) => {
                    crate::host::log_line(gears_core::LogLevel::Warning, &e);
                    ReplyValue::Error(
                        "Failed install requirement on shard, check shard log for more info."
                            .into(),
                    )
                }
            };
            client.reply(&reply);
        });
        Ok(RedisValue::NoReply)
    })
}

/// Writes the wheels into a new folder and installs from them only, with pip.
fn import(exported: Exported) -> Result<(), String> {
    let name = exported.name.clone();
    super::install_exported(exported, |path, _| {
        super::pip_install_from_wheels(&name, path)
    })
}
