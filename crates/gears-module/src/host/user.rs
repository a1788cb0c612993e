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

/// A looked-up ACL user, valid while the Redis lock is held; freed (the handle, not the user)
/// when dropped.
pub(crate) struct UserRef(*mut raw::RedisModuleUser);

impl UserRef {
    pub fn as_ptr(&self) -> *mut raw::RedisModuleUser {
        self.0
    }

    /// True if the user may read the key `name` (ACL key permissions, `%R~` or `~`).
    pub fn may_read(&self, name: *mut raw::RedisModuleString) -> bool {
        // SAFETY: a live user (under the lock) and a valid module string.
        unsafe {
            raw::RedisModule_ACLCheckKeyPermissions.unwrap()(
                self.0,
                name,
                raw::REDISMODULE_CMD_KEY_ACCESS as c_int,
            ) == raw::REDISMODULE_OK as c_int
        }
    }

    /// True if the user may read the key `name` given as bytes.
    pub fn may_read_bytes(&self, ctx: &Context, name: &[u8]) -> bool {
        // SAFETY: a temporary module string freed right after the check.
        unsafe {
            let string =
                raw::RedisModule_CreateString.unwrap()(ctx.ctx, name.as_ptr().cast(), name.len());
            let allowed = self.may_read(string);
            raw::RedisModule_FreeString.unwrap()(ctx.ctx, string);
            allowed
        }
    }
}

impl Drop for UserRef {
    fn drop(&mut self) {
        // SAFETY: a handle from GetModuleUserFromUserName; freeing it does not free the user.
        unsafe { raw::RedisModule_FreeModuleUser.unwrap()(self.0) };
    }
}
