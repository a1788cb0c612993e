//! `RG.PYSTATS`: the embedded Python's memory, as RedisGears 1.2 reported it.

use gears_core::memory::{self, Pool};
use gears_core::ReplyValue;
use redis_module::{Context, RedisResult, RedisString};

use crate::guard::guarded;

/// `["TotalAllocated", n, "PeakAllocated", n, "CurrAllocated", n]`, in bytes: what CPython has
/// allocated since the start, the most it held at once (sampled every 10 ms), and what it holds.
pub(crate) fn py_stats(ctx: &Context, _args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        let stats = memory::sample(Pool::Python);
        let bulk = |s: &str| ReplyValue::Bulk(s.as_bytes().to_vec());
        crate::reply::send(
            ctx,
            &ReplyValue::Array(vec![
                bulk("TotalAllocated"),
                ReplyValue::Integer(stats.total_allocated),
                bulk("PeakAllocated"),
                ReplyValue::Integer(stats.peak),
                bulk("CurrAllocated"),
                ReplyValue::Integer(stats.current),
            ]),
        )
    })
}
