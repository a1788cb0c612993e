//! Messages between shards, over the Redis cluster bus (`RedisModule_SendClusterMessage`):
//! the connections, authentication and failure detection Redis Cluster already has. Each
//! message is one bincode-encoded [`Message`]; record sets are sent in chunks of at most
//! [`CHUNK_BYTES`], so that one large exchange never holds the bus (and the gossip behind it)
//! for long.

use std::os::raw::{c_char, c_uchar};

use gears_core::Language;
use redis_module::{raw, Context};
use serde::{Deserialize, Serialize};

/// The module message type Gears uses on the cluster bus.
const GEARS_MESSAGE: u8 = 71;

/// The most bytes of records one message carries.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

/// A distributed execution is named by its initiator and its id there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ExecutionKey {
    pub initiator: String,
    pub id: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Message {
    /// Run your part of an execution.
    Run {
        key: ExecutionKey,
        language: Language,
        script: String,
        user: Vec<u8>,
        db: i32,
        /// The initiator's top-level commands and replies (`gears_core::wire` pairs).
        calls: Vec<u8>,
        /// The shards taking part, in order.
        shards: Vec<String>,
        /// Slot ranges and their owners, as the initiator saw them.
        slots: Vec<(u16, u16, String)>,
        /// The Python requirements the script names, with their wheels (export format).
        requirements: Vec<Vec<u8>>,
        /// A digest of the plan the initiator built ([`super::plan_digest`]): a shard whose
        /// script builds another plan (a setting read with `gearsConfigGet` that differs, a
        /// random number) refuses to run its part.
        plan_digest: u64,
    },
    /// Run your part of an event's execution of a registration (every shard has it) whose plan
    /// moves records: no records of your own, the ones that reach you at its exchange steps.
    RunRegistration {
        key: ExecutionKey,
        registration: String,
        user: Vec<u8>,
        db: i32,
        shards: Vec<String>,
        slots: Vec<(u16, u16, String)>,
        /// The digest of the registration's plan on the initiator (see `Run`).
        plan_digest: u64,
    },
    /// Records of an exchange step (`gears_core::wire`).
    Records {
        key: ExecutionKey,
        step: u32,
        from: String,
        records: Vec<u8>,
    },
    /// The sender has sent all its records of an exchange step.
    StepDone {
        key: ExecutionKey,
        step: u32,
        from: String,
    },
    /// The sender's part is over, with its errors.
    Finished {
        key: ExecutionKey,
        from: String,
        errors: Vec<String>,
    },
    /// The execution is aborted (by the initiator, or a shard that failed).
    Abort { key: ExecutionKey, reason: String },
    /// Make (or replace) this session (`SessionSpec`, bincode): the sessions a node that joins
    /// asked for.
    Session {
        spec: Vec<u8>,
        /// Its Python requirements, with their wheels (export format).
        requirements: Vec<Vec<u8>>,
    },
    /// Prepare this session change (`SessionSpec`, bincode; and the id of the session it
    /// replaces): answer with `Finished` to `reply_to` (its errors: why it could not).
    SessionPrepare {
        reply_to: ExecutionKey,
        spec: Vec<u8>,
        replaces: Option<String>,
        /// The session's Python requirements, with their wheels (export format).
        requirements: Vec<Vec<u8>>,
    },
    /// Make the prepared change `key` live; answer with `Finished` to `reply_to`.
    SessionCommit {
        key: ExecutionKey,
        reply_to: ExecutionKey,
    },
    /// Discard the prepared change.
    SessionAbort { key: ExecutionKey },
    /// Remove this registration (`RG.UNREGISTER` on another shard).
    Unregister { id: String, abort_pending: bool },
    /// `RG.PAUSEREGISTRATIONS` / `RG.UNPAUSEREGISTRATIONS` on another shard; answered with
    /// `Finished` to `reply_to`.
    Pause {
        reply_to: ExecutionKey,
        id: String,
        pause: bool,
    },
    /// `RG.CLEARREGISTRATIONSSTATS` on another shard, for this user (every user's: admin);
    /// answered with `Finished` to `reply_to`.
    ClearStats {
        reply_to: ExecutionKey,
        user: Vec<u8>,
        admin: bool,
    },
    /// A node that joined (or restarted) asks a shard for the sessions.
    SessionsWanted { from: String },
    /// After the sessions it sent: the ids of all of them (others are gone).
    SessionsSent { ids: Vec<String> },
    /// `RG.DROPEXECUTION`: drop this execution's part here (if it has finished).
    Drop { id: String },
    /// `RG.GETEXECUTION <id> CLUSTER`: this shard's part, answered with `Part` to `reply_to`.
    GetPart {
        reply_to: ExecutionKey,
        id: String,
        /// The ACL user who asks, and whether they may see anyone's executions.
        user: Vec<u8>,
        admin: bool,
    },
    /// A shard's part of an execution (RESP2 bytes of its `execution_plan`), or none.
    Part {
        key: ExecutionKey,
        from: String,
        plan: Option<Vec<u8>>,
    },
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Message> {
        let config = bincode::config::standard().with_limit::<{ 64 << 20 }>();
        bincode::serde::decode_from_slice(bytes, config)
            .ok()
            .map(|(message, _)| message)
    }
}

/// Sends `message` to the node `target`, holding the Redis lock (`_locked` proves it). False if
/// the bus refused it (an unknown node, or no cluster).
pub(crate) fn send(_locked: &Context, target: &str, message: &Message) -> bool {
    send_bytes(target, &message.encode())
}

/// Messages and bytes Gears sent over the cluster bus (`INFO gears`).
pub(crate) static MESSAGES_SENT: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);
pub(crate) static BYTES_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sends an encoded message (holding the Redis lock).
pub(crate) fn send_bytes(target: &str, bytes: &[u8]) -> bool {
    use std::sync::atomic::Ordering;
    MESSAGES_SENT.fetch_add(1, Ordering::Relaxed);
    BYTES_SENT.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let Ok(target) = std::ffi::CString::new(target) else {
        return false;
    };
    // The bus names the sending module from the context: the module's own detached context
    // (an execution's thread-safe context has no module).
    let Some(ctx) = crate::gears().map(|g| g.log_context.0) else {
        return false;
    };
    // SAFETY: called holding the Redis lock; the buffers live across the call (the bus copies
    // them).
    unsafe {
        raw::RedisModule_SendClusterMessage.unwrap()(
            ctx,
            target.as_ptr(),
            GEARS_MESSAGE,
            bytes.as_ptr().cast::<c_char>(),
            bytes.len() as u32,
        ) == raw::REDISMODULE_OK as i32
    }
}

/// Registers the receiver of Gears' messages (at load).
pub(crate) fn subscribe(ctx: &Context) {
    // SAFETY: a module API call during load with a callback that lives as long as the module.
    unsafe {
        raw::RedisModule_RegisterClusterMessageReceiver.unwrap()(
            ctx.ctx,
            GEARS_MESSAGE,
            Some(on_message),
        );
    }
}

unsafe extern "C" fn on_message(
    ctx: *mut raw::RedisModuleCtx,
    sender: *const c_char,
    _kind: u8,
    payload: *const c_uchar,
    len: u32,
) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the bus passes the message's payload and the sender's node id (40 bytes)
        // for the call.
        let (bytes, sender) = unsafe {
            let sender = (!sender.is_null()).then(|| {
                let id = std::slice::from_raw_parts(
                    sender.cast::<u8>(),
                    raw::REDISMODULE_NODE_ID_LEN as usize,
                );
                String::from_utf8_lossy(id).into_owned()
            });
            (std::slice::from_raw_parts(payload, len as usize), sender)
        };
        let Some(message) = Message::decode(bytes) else {
            return;
        };
        // A message speaks for the node that sent it only.
        if sender.is_none()
            || message
                .claimed_sender()
                .is_some_and(|c| Some(c) != sender.as_deref())
        {
            return;
        }
        super::receive(&Context::new(ctx), message);
    });
}

impl Message {
    /// The node a message says it comes from, where it says.
    fn claimed_sender(&self) -> Option<&str> {
        match self {
            Message::Records { from, .. }
            | Message::StepDone { from, .. }
            | Message::Finished { from, .. }
            | Message::Part { from, .. }
            | Message::SessionsWanted { from } => Some(from),
            Message::Run { key, .. }
            | Message::RunRegistration { key, .. }
            | Message::SessionPrepare { reply_to: key, .. }
            | Message::SessionCommit { key, .. }
            | Message::SessionAbort { key }
            | Message::Pause { reply_to: key, .. }
            | Message::ClearStats { reply_to: key, .. } => Some(&key.initiator),
            _ => None,
        }
    }
}
