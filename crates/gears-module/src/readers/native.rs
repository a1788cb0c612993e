//! Native readers (a Rust extension's): built by name from the server's registry, reading Redis
//! through [`ModuleReaderHost`], which gives them the rules of the built-in readers.

use std::sync::Arc;

use gears_core::extension::{NativeCall, NativeRecordReader, ReaderHost, RedisReads};
use gears_core::{GearsError, Record, RecordReader, Result};
use redis_module::Context;

use crate::host::call::{call_as, Called};
use crate::host::{Access, RedisHost};

/// The reader of `call`, or why this server can not build it.
pub(crate) fn build(call: &NativeCall, host: Arc<RedisHost>) -> Result<Box<dyn RecordReader>> {
    let registry = gears_core::extension::installed();
    let reader = registry.resolve_reader(call)?.build(call)?;
    Ok(Box::new(NativeRecordReader::new(
        reader,
        Arc::new(ModuleReaderHost { host }),
    )))
}

/// Redis as a native reader sees it: read-only commands as the execution's ACL user, in the
/// caller's database, the Redis lock taken once per batch (and the main thread given its turn
/// after each), nothing once the execution is stopped.
struct ModuleReaderHost {
    host: Arc<RedisHost>,
}

struct Reads<'a> {
    ctx: &'a Context,
    host: &'a RedisHost,
}

impl RedisReads for Reads<'_> {
    fn call(&mut self, args: &[&[u8]]) -> Result<Record> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        match call_as(self.ctx, Some(self.host.user()), Access::ReadOnly, &args) {
            Called::Reply(reply) => reply,
            // Read-only: never refused for a pause.
            Called::Paused => Err(GearsError::Redis(
                "ERR a native reader may only read".into(),
            )),
        }
    }
}

impl ReaderHost for ModuleReaderHost {
    fn read(&self, f: &mut dyn FnMut(&mut dyn RedisReads) -> Result<()>) -> Result<()> {
        self.host.control().check()?;
        self.host.with_batch_lock(|ctx| {
            // The user may have been deleted since the script was sent.
            let user = self.host.user();
            if user.lookup(ctx).is_none() {
                return Err(GearsError::Redis(user.gone_error()));
            }
            f(&mut Reads {
                ctx,
                host: &self.host,
            })
        })
    }

    fn owns_key(&self, key: &[u8]) -> bool {
        crate::cluster::owns_key(key)
    }

    fn check(&self) -> Result<()> {
        self.host.control().check()
    }
}
