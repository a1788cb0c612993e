//! The Rhai functions that allocate far more than their input (`pad`, `blob`, `split`, `to_chars`,
//! `replace`, ...), replaced by versions that first
//! check the size they will allocate against what the execution may still use. A request past it
//! is Rhai's own error for data too large (`Size of array too large`), never an allocation
//! failure (which would abort the server).
//!
//! The replacements keep Rhai's semantics (the bodies follow Rhai 1.27's packages); they are
//! registered on the engine, which Rhai searches before its packages.

use gears_core::{control, memory};
use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, ImmutableString, Position, INT};

/// The most a single request may allocate when the execution has no memory limit.
const MAX_REQUEST: u64 = 1 << 40;
/// What an array element costs at least: its `Dynamic` and, for a string, the string's header.
const ELEMENT: u64 = 48;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// A rough size in bytes of a value and everything in it.
fn estimated_size(value: &Dynamic, depth: usize) -> u64 {
    const SLOT: u64 = 16;
    // Deeper than this is not walked (the stack): taken as too large to copy many times.
    if depth > 64 {
        return MAX_REQUEST;
    }
    if let Ok(s) = value.as_immutable_string_ref() {
        return SLOT + s.len() as u64;
    }
    if let Ok(blob) = value.as_blob_ref() {
        return SLOT + blob.len() as u64;
    }
    if let Ok(array) = value.as_array_ref() {
        return array.iter().fold(SLOT, |total, item| {
            total.saturating_add(estimated_size(item, depth + 1))
        });
    }
    if let Ok(map) = value.as_map_ref() {
        return map.iter().fold(SLOT, |total, (key, item)| {
            total
                .saturating_add(SLOT + key.len() as u64)
                .saturating_add(estimated_size(item, depth + 1))
        });
    }
    SLOT
}

/// Refuses a request for `count` more items of `each` bytes when the execution could not hold
/// them (within its own limit, and within what is left of Gears' `MemoryLimit` for all
/// executions), with Rhai's own error for data too large.
fn ensure_room(what: &str, count: u64, each: u64) -> Fallible<()> {
    let bytes = count.saturating_mul(each.max(1));
    let own = match control::current() {
        Some(control) if control.limits().memory > 0 => {
            (control.limits().memory as i64 - control.memory().used()).max(0) as u64
        }
        _ => MAX_REQUEST,
    };
    let global = match memory::global_limit() {
        0 => MAX_REQUEST,
        limit => (limit as i64 - memory::total_used()).max(0) as u64,
    };
    if bytes > own.min(global).min(MAX_REQUEST) {
        return Err(EvalAltResult::ErrorDataTooLarge(what.to_string(), Position::NONE).into());
    }
    Ok(())
}

/// Items appended between two checks of the execution's control in a long fill.
const FILL_CHUNK: u64 = 1 << 20;

/// Bytes made between two checks of the execution's control in a long fill.
const FILL_CHUNK_BYTES: u64 = 4 << 20;

/// Calls `fill(n)` for `count` items in all, in chunks of at most [`FILL_CHUNK`]: an aborted
/// or timed-out execution stops between two (a fill of a billion items would otherwise run
/// for minutes, unobserved).
fn in_chunks(count: u64, fill: impl FnMut(usize)) -> Fallible<()> {
    in_chunks_of(count, FILL_CHUNK, fill)
}

/// [`in_chunks`] with items of about `each` bytes: at most [`FILL_CHUNK_BYTES`] per chunk, so
/// that the execution's memory is checked as often.
fn in_chunks_sized(count: u64, each: u64, fill: impl FnMut(usize)) -> Fallible<()> {
    let per_chunk = (FILL_CHUNK_BYTES / each.max(1)).clamp(1, FILL_CHUNK);
    in_chunks_of(count, per_chunk, fill)
}

fn in_chunks_of(count: u64, per_chunk: u64, mut fill: impl FnMut(usize)) -> Fallible<()> {
    let mut done = 0;
    while done < count {
        let n = per_chunk.min(count - done);
        fill(n as usize);
        done += n;
        if let Err(stopped) = control::check_current_local() {
            return Err(EvalAltResult::ErrorTerminated(
                Dynamic::from(stopped.message().to_string()),
                Position::NONE,
            )
            .into());
        }
    }
    Ok(())
}

/// A length argument: negative means none.
fn length(len: INT) -> u64 {
    u64::try_from(len).unwrap_or(0)
}

/// `string.replace(find, substitute)` (every Rhai overload), after checking the execution can
/// hold what it grows by: each of the `find`s (non-overlapping, as `str::replace` finds them)
/// becomes a `substitute`, which may be far longer (a million `a` replaced by 100 KB each asked
/// for 100 GB in one operation).
fn checked_replace(string: &mut ImmutableString, find: &str, substitute: &str) -> Fallible<()> {
    if string.is_empty() {
        return Ok(());
    }
    if substitute.len() > find.len() {
        let count = string.matches(find).count() as u64;
        ensure_room(
            "Length of string",
            count,
            (substitute.len() - find.len()) as u64,
        )?;
    }
    *string = string.replace(find, substitute).into();
    Ok(())
}

fn register_replace(engine: &mut Engine) {
    engine.register_fn(
        "replace",
        |string: &mut ImmutableString, find: &str, substitute: &str| {
            checked_replace(string, find, substitute)
        },
    );
    engine.register_fn(
        "replace",
        |string: &mut ImmutableString, find: &str, substitute: char| {
            checked_replace(string, find, substitute.encode_utf8(&mut [0u8; 4]))
        },
    );
    engine.register_fn(
        "replace",
        |string: &mut ImmutableString, find: char, substitute: &str| {
            checked_replace(string, find.encode_utf8(&mut [0u8; 4]), substitute)
        },
    );
    engine.register_fn(
        "replace",
        |string: &mut ImmutableString, find: char, substitute: char| {
            checked_replace(
                string,
                find.encode_utf8(&mut [0u8; 4]),
                substitute.encode_utf8(&mut [0u8; 4]),
            )
        },
    );
}

pub(crate) fn register(engine: &mut Engine) {
    register_splits(engine);
    register_replace(engine);
    engine.register_fn(
        "pad",
        |array: &mut Array, len: INT, item: Dynamic| -> Fallible<()> {
            let len = length(len);
            let current = array.len() as u64;
            if len > current {
                let each = estimated_size(&item, 0);
                ensure_room("Size of array", len - current, each)?;
                array.reserve((len - current) as usize);
                in_chunks_sized(len - current, each, |n| {
                    array.extend(std::iter::repeat_n(&item, n).cloned())
                })?;
            }
            Ok(())
        },
    );
    engine.register_fn(
        "pad",
        |blob: &mut Blob, len: INT, value: INT| -> Fallible<()> {
            let len = length(len);
            if len > blob.len() as u64 {
                let more = len - blob.len() as u64;
                ensure_room("Size of BLOB", more, 1)?;
                blob.reserve(more as usize);
                in_chunks(more, |n| {
                    blob.extend(std::iter::repeat_n((value & 0xff) as u8, n))
                })?;
            }
            Ok(())
        },
    );
    let new_blob = |len: INT, value: INT| -> Fallible<Blob> {
        let len = length(len);
        ensure_room("Size of BLOB", len, 1)?;
        let mut blob = Blob::with_capacity(len as usize);
        in_chunks(len, |n| {
            blob.extend(std::iter::repeat_n((value & 0xff) as u8, n))
        })?;
        Ok(blob)
    };
    engine.register_fn("blob", move |len: INT| new_blob(len, 0));
    engine.register_fn("blob", new_blob);
    engine.register_fn(
        "pad",
        |string: &mut ImmutableString, len: INT, character: char| -> Fallible<()> {
            let len = length(len);
            let current = string.chars().count() as u64;
            if len > current {
                ensure_room(
                    "Length of string",
                    len - current,
                    character.len_utf8() as u64,
                )?;
                let s = string.make_mut();
                let mut buffer = [0u8; 4];
                let one: &str = character.encode_utf8(&mut buffer);
                in_chunks(len - current, |n| s.push_str(&one.repeat(n)))?;
            }
            Ok(())
        },
    );
    engine.register_fn(
        "pad",
        |string: &mut ImmutableString, len: INT, padding: &str| -> Fallible<()> {
            let len = length(len);
            let mut current = string.chars().count() as u64;
            let step = padding.chars().count() as u64;
            if len <= current || step == 0 {
                return Ok(());
            }
            ensure_room("Length of string", len - current, 4)?;
            let s = string.make_mut();
            let whole = (len - current) / step;
            in_chunks(whole, |n| s.push_str(&padding.repeat(n)))?;
            current += whole * step;
            s.extend(padding.chars().take((len - current) as usize));
            Ok(())
        },
    );
}

/// The array of `parts` strings split out of `string`, after checking the execution can hold it.
fn checked_parts(string: &str, parts: usize) -> Fallible<()> {
    ensure_room("Size of array", parts as u64, ELEMENT)?;
    ensure_room("Length of string", 1, string.len() as u64)
}

fn strings<'a>(parts: impl Iterator<Item = &'a str>) -> Array {
    parts.map(Into::into).collect()
}

/// `split`, `split_rev` and `to_chars`, with the number of parts counted before they are made.
fn register_splits(engine: &mut Engine) {
    engine.register_fn("to_chars", |string: &str| -> Fallible<Array> {
        checked_parts(string, string.chars().count())?;
        Ok(string.chars().map(Into::into).collect())
    });
    engine.register_fn("split", |string: &mut ImmutableString| -> Fallible<Array> {
        if string.is_empty() {
            return Ok(vec![string.clone().into()]);
        }
        checked_parts(string, string.split_whitespace().count())?;
        Ok(strings(string.split_whitespace()))
    });
    engine.register_fn(
        "split",
        |string: &mut ImmutableString, delimiter: &str| -> Fallible<Array> {
            if string.is_empty() || (!delimiter.is_empty() && !string.contains(delimiter)) {
                return Ok(vec![string.clone().into()]);
            }
            checked_parts(string, string.split(delimiter).count())?;
            Ok(strings(string.split(delimiter)))
        },
    );
    engine.register_fn(
        "split",
        |string: &mut ImmutableString, delimiter: &str, segments: INT| -> Fallible<Array> {
            if segments <= 1
                || string.is_empty()
                || (!delimiter.is_empty() && !string.contains(delimiter))
            {
                return Ok(vec![string.clone().into()]);
            }
            let segments = usize::try_from(segments).unwrap_or(usize::MAX);
            checked_parts(string, string.splitn(segments, delimiter).count())?;
            Ok(strings(string.splitn(segments, delimiter)))
        },
    );
    engine.register_fn(
        "split",
        |string: &mut ImmutableString, delimiter: char| -> Fallible<Array> {
            if string.is_empty() || !string.contains(delimiter) {
                return Ok(vec![string.clone().into()]);
            }
            checked_parts(string, string.split(delimiter).count())?;
            Ok(strings(string.split(delimiter)))
        },
    );
    engine.register_fn(
        "split",
        |string: &mut ImmutableString, delimiter: char, segments: INT| -> Fallible<Array> {
            if segments <= 1 || string.is_empty() || !string.contains(delimiter) {
                return Ok(vec![string.clone().into()]);
            }
            let segments = usize::try_from(segments).unwrap_or(usize::MAX);
            checked_parts(string, string.splitn(segments, delimiter).count())?;
            Ok(strings(string.splitn(segments, delimiter)))
        },
    );
    engine.register_fn(
        "split_rev",
        |string: &mut ImmutableString, delimiter: &str| -> Fallible<Array> {
            if string.is_empty() || (!delimiter.is_empty() && !string.contains(delimiter)) {
                return Ok(vec![string.clone().into()]);
            }
            checked_parts(string, string.rsplit(delimiter).count())?;
            Ok(strings(string.rsplit(delimiter)))
        },
    );
    engine.register_fn(
        "split_rev",
        |string: &mut ImmutableString, delimiter: &str, segments: INT| -> Fallible<Array> {
            if segments <= 1
                || string.is_empty()
                || (!delimiter.is_empty() && !string.contains(delimiter))
            {
                return Ok(vec![string.clone().into()]);
            }
            let segments = usize::try_from(segments).unwrap_or(usize::MAX);
            checked_parts(string, string.rsplitn(segments, delimiter).count())?;
            Ok(strings(string.rsplitn(segments, delimiter)))
        },
    );
    engine.register_fn(
        "split_rev",
        |string: &mut ImmutableString, delimiter: char| -> Fallible<Array> {
            if string.is_empty() || !string.contains(delimiter) {
                return Ok(vec![string.clone().into()]);
            }
            checked_parts(string, string.rsplit(delimiter).count())?;
            Ok(strings(string.rsplit(delimiter)))
        },
    );
    engine.register_fn(
        "split_rev",
        |string: &mut ImmutableString, delimiter: char, segments: INT| -> Fallible<Array> {
            if segments <= 1 || string.is_empty() || !string.contains(delimiter) {
                return Ok(vec![string.clone().into()]);
            }
            let segments = usize::try_from(segments).unwrap_or(usize::MAX);
            checked_parts(string, string.rsplitn(segments, delimiter).count())?;
            Ok(strings(string.rsplitn(segments, delimiter)))
        },
    );
    engine.register_fn("to_array", |blob: &mut Blob| -> Fallible<Array> {
        ensure_room("Size of array", blob.len() as u64, ELEMENT)?;
        Ok(blob
            .iter()
            .map(|&byte| Dynamic::from_int(INT::from(byte)))
            .collect())
    });
}
