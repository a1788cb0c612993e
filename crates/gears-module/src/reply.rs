//! Writing a [`ReplyValue`] with the raw reply API, which allows errors and statuses inside
//! arrays (RedisGears replies `-...` / `+...` results that way).

use std::ffi::CString;

use gears_core::ReplyValue;
use redis_module::{raw, Context, RedisResult, RedisValue};

/// Text safe for an error or status line: no CR/LF, no NUL.
fn one_line(text: &str) -> CString {
    let cleaned: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .filter(|c| *c != '\0')
        .collect();
    CString::new(cleaned).unwrap_or_default()
}

/// Writes `value` as the reply on `ctx`.
pub(crate) fn write(ctx: *mut raw::RedisModuleCtx, value: &ReplyValue) {
    match value {
        ReplyValue::Bulk(bytes) => {
            raw::reply_with_string_buffer(ctx, bytes.as_ptr().cast(), bytes.len());
        }
        ReplyValue::Status(s) => {
            let s = one_line(s);
            raw::reply_with_simple_string(ctx, s.as_ptr());
        }
        ReplyValue::Error(e) => {
            let e = one_line(e);
            raw::reply_with_error(ctx, e.as_ptr());
        }
        ReplyValue::Integer(i) => {
            raw::reply_with_long_long(ctx, *i);
        }
        ReplyValue::Null => {
            raw::reply_with_null(ctx);
        }
        ReplyValue::Array(items) => {
            raw::reply_with_array(ctx, items.len() as std::os::raw::c_long);
            for item in items {
                write(ctx, item);
            }
        }
    }
}

/// Replies `value` to the command of `ctx` (errors and statuses may be nested in arrays).
pub(crate) fn send(ctx: &Context, value: &ReplyValue) -> RedisResult {
    write(ctx.ctx, value);
    Ok(RedisValue::NoReply)
}

/// About how many bytes `value` takes on the wire (RESP2).
pub(crate) fn size(value: &ReplyValue) -> u64 {
    match value {
        ReplyValue::Bulk(bytes) => bytes.len() as u64 + 16,
        ReplyValue::Status(s) | ReplyValue::Error(s) => s.len() as u64 + 3,
        ReplyValue::Integer(_) => 24,
        ReplyValue::Null => 5,
        ReplyValue::Array(items) => 16 + items.iter().map(size).sum::<u64>(),
    }
}
