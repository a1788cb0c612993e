//! The ACL user an execution acts as.
//!
//! Redis hands a module a `RedisModuleUser` that points at the live ACL user, which `ACL
//! DELUSER` may free at any time; so Gears keeps only the user's name and looks the user up
//! each time it holds the Redis lock (a dictionary lookup), using it only under that lock.

use std::os::raw::c_int;

use redis_module::{raw, Context};

/// The name of the ACL user an execution acts as.
pub(crate) struct AclUser {
    name: *mut raw::RedisModuleString,
    text: String,
}

// SAFETY: the module string is only read (by Redis) under the Redis lock, and freed once.
unsafe impl Send for AclUser {}
unsafe impl Sync for AclUser {}

impl AclUser {
    pub fn new(name: &[u8]) -> Self {
        // SAFETY: a module string with no context, owned by this value (freed in Drop).
        let string = unsafe {
            raw::RedisModule_CreateString.unwrap()(
                std::ptr::null_mut(),
                name.as_ptr().cast(),
                name.len(),
            )
        };
        AclUser {
            name: string,
            text: String::from_utf8_lossy(name).into_owned(),
        }
    }

    /// The live ACL user, while the caller holds the Redis lock; `None` once the user was
    /// deleted.
    pub fn lookup(&self, _locked: &Context) -> Option<UserRef> {
        // SAFETY: called under the Redis lock (the `Context` proves the caller holds it).
        let user = unsafe { raw::RedisModule_GetModuleUserFromUserName.unwrap()(self.name) };
        (!user.is_null()).then(|| UserRef(user))
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.text
    }

    /// The error of an execution whose user was deleted while it ran.
    pub fn gone_error(&self) -> String {
        format!(
            "NOPERM the ACL user '{}' this execution runs as no longer exists",
            self.text
        )
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        // SAFETY: created in `new` with no context.
        unsafe { raw::RedisModule_FreeString.unwrap()(std::ptr::null_mut(), self.name) };
    }
}

/// True if the ACL user `user` exists and may run the command `argv` (on Redis's main thread,
/// in a command: `ctx` is the command's context).
pub(crate) fn may_run(ctx: &Context, user: &[u8], argv: &[&[u8]]) -> bool {
    // SAFETY: the user is looked up, checked and freed here, under the Redis lock; the module
    // strings are freed before returning.
    unsafe {
        let create = raw::RedisModule_CreateString.unwrap();
        let free = raw::RedisModule_FreeString.unwrap();
        let name = create(ctx.ctx, user.as_ptr().cast(), user.len());
        let user = raw::RedisModule_GetModuleUserFromUserName.unwrap()(name);
        free(ctx.ctx, name);
        if user.is_null() {
            return false;
        }
        let mut args: Vec<_> = argv
            .iter()
            .map(|word| create(ctx.ctx, word.as_ptr().cast(), word.len()))
            .collect();
        let status = raw::RedisModule_ACLCheckCommandPermissions.unwrap()(
            user,
            args.as_mut_ptr(),
            args.len() as c_int,
        );
        for arg in args {
            free(ctx.ctx, arg);
        }
        raw::RedisModule_FreeModuleUser.unwrap()(user);
        status == raw::REDISMODULE_OK as c_int
    }
}

/// A looked-up ACL user, valid while the Redis lock is held; freed (the handle, not the user)
/// when dropped.
pub(crate) struct UserRef(*mut raw::RedisModuleUser);

impl UserRef {
    pub fn as_ptr(&self) -> *mut raw::RedisModuleUser {
        self.0
    }
}

impl Drop for UserRef {
    fn drop(&mut self) {
        // SAFETY: a handle from GetModuleUserFromUserName; freeing it does not free the user.
        unsafe { raw::RedisModule_FreeModuleUser.unwrap()(self.0) };
    }
}

/// Whether a user may read keys, as a reader asks it: a key is readable when the user may run
/// the command that reads a value of its type on it (`GET`, `HGETALL`, `LRANGE k 0 -1`,
/// `SMEMBERS`, `ZRANGE k 0 -1`, `XRANGE k - +`; `TYPE` for other types, `EXISTS` for a missing
/// key). Checking the command, not only the key pattern, respects selectors and command rules
/// (a user allowed `EXISTS` on `secret:*` and nothing else may not read those keys).
///
/// Valid while the Redis lock is held; the argument strings are made once per lock hold.
pub(crate) struct ReadCheck {
    user: UserRef,
    ctx: *mut raw::RedisModuleCtx,
    /// Per type: the command and its arguments after the key.
    commands: Vec<Vec<*mut raw::RedisModuleString>>,
}

const STRING: usize = 0;
const HASH: usize = 1;
const LIST: usize = 2;
const SET: usize = 3;
const ZSET: usize = 4;
const STREAM: usize = 5;
const OTHER: usize = 6;
const MISSING: usize = 7;

/// Per type (the indexes above): the command that reads it, and its arguments after the key.
const READ_COMMANDS: [&[&str]; 8] = [
    &["GET"],
    &["HGETALL"],
    &["LRANGE", "0", "-1"],
    &["SMEMBERS"],
    &["ZRANGE", "0", "-1"],
    &["XRANGE", "-", "+"],
    &["TYPE"],
    &["EXISTS"],
];

/// The index in [`READ_COMMANDS`] of an open key's type (null: missing).
fn read_command(key: *mut raw::RedisModuleKey) -> usize {
    let kind = if key.is_null() {
        raw::REDISMODULE_KEYTYPE_EMPTY
    } else {
        // SAFETY: an open key.
        unsafe { raw::RedisModule_KeyType.unwrap()(key) as isize }
    };
    match kind {
        raw::REDISMODULE_KEYTYPE_STRING => STRING,
        raw::REDISMODULE_KEYTYPE_HASH => HASH,
        raw::REDISMODULE_KEYTYPE_LIST => LIST,
        raw::REDISMODULE_KEYTYPE_SET => SET,
        raw::REDISMODULE_KEYTYPE_ZSET => ZSET,
        raw::REDISMODULE_KEYTYPE_STREAM => STREAM,
        raw::REDISMODULE_KEYTYPE_EMPTY => MISSING,
        _ => OTHER,
    }
}

/// [`ReadCheck::allows_bytes`] for one key, making only the strings its check needs (an event's
/// key, checked once).
pub(crate) fn may_read_key(
    ctx: &Context,
    user: &UserRef,
    name: &[u8],
    key: *mut raw::RedisModuleKey,
) -> bool {
    let words = READ_COMMANDS[read_command(key)];
    let create = |bytes: &[u8]| {
        // SAFETY: a string of this context, freed below.
        unsafe {
            raw::RedisModule_CreateString.unwrap()(ctx.ctx, bytes.as_ptr().cast(), bytes.len())
        }
    };
    let mut argv = Vec::with_capacity(words.len() + 1);
    argv.push(create(words[0].as_bytes()));
    argv.push(create(name));
    argv.extend(words[1..].iter().map(|w| create(w.as_bytes())));
    // SAFETY: a live user (under the lock) and valid module strings, freed after the check.
    unsafe {
        let allowed = raw::RedisModule_ACLCheckCommandPermissions.unwrap()(
            user.as_ptr(),
            argv.as_mut_ptr(),
            argv.len() as c_int,
        ) == raw::REDISMODULE_OK as c_int;
        for string in argv {
            raw::RedisModule_FreeString.unwrap()(ctx.ctx, string);
        }
        allowed
    }
}

impl ReadCheck {
    pub fn new(ctx: &Context, user: UserRef) -> Self {
        let commands = READ_COMMANDS
            .iter()
            .map(|words| {
                words
                    .iter()
                    // SAFETY: strings of this context, freed in Drop.
                    .map(|w| unsafe {
                        raw::RedisModule_CreateString.unwrap()(ctx.ctx, w.as_ptr().cast(), w.len())
                    })
                    .collect()
            })
            .collect();
        ReadCheck {
            user,
            ctx: ctx.ctx,
            commands,
        }
    }

    /// True if the user may read the key `name` of the open key `key` (null: not open or
    /// missing).
    pub fn allows(&self, name: *mut raw::RedisModuleString, key: *mut raw::RedisModuleKey) -> bool {
        let words = &self.commands[read_command(key)];
        let mut argv = Vec::with_capacity(words.len() + 1);
        argv.push(words[0]);
        argv.push(name);
        argv.extend_from_slice(&words[1..]);
        // SAFETY: a live user (under the lock) and valid module strings.
        unsafe {
            raw::RedisModule_ACLCheckCommandPermissions.unwrap()(
                self.user.as_ptr(),
                argv.as_mut_ptr(),
                argv.len() as c_int,
            ) == raw::REDISMODULE_OK as c_int
        }
    }

    /// [`ReadCheck::allows`] for a key given by its name.
    pub fn allows_bytes(&self, name: &[u8], key: *mut raw::RedisModuleKey) -> bool {
        // SAFETY: a temporary module string freed right after the check.
        unsafe {
            let string =
                raw::RedisModule_CreateString.unwrap()(self.ctx, name.as_ptr().cast(), name.len());
            let allowed = self.allows(string, key);
            raw::RedisModule_FreeString.unwrap()(self.ctx, string);
            allowed
        }
    }
}

impl Drop for ReadCheck {
    fn drop(&mut self) {
        for words in &self.commands {
            for w in words {
                // SAFETY: created in `new` with this context.
                unsafe { raw::RedisModule_FreeString.unwrap()(self.ctx, *w) };
            }
        }
    }
}
