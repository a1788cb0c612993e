//! `native(...)` in Rhai: a Rust extension's step on the builder, and a native extractor where
//! a key function goes.

use gears_core::{KeySource, PlanBuilder, Record};
use rhai::{Dynamic, Engine, ImmutableString};

use crate::builder::{callback, raise, script_error, Fallible, GearsBuilder};
use crate::convert::to_core;
use crate::state::SharedState;

/// `native(name, ...)`: a native extractor (a Rust extension's), given where a key function goes
/// (`GB().groupby(native("hash_field", "city"), |k, a, r| ...)`).
#[derive(Clone, Debug)]
pub struct NativeExtractor {
    name: String,
    args: Vec<Record>,
}

/// The key of a group-by step: a `native(...)` extractor, or a function.
pub(crate) fn key(state: &SharedState, op: &str, value: Dynamic) -> Fallible<KeySource> {
    let value = value.flatten();
    if let Some(native) = value.clone().try_cast::<NativeExtractor>() {
        return PlanBuilder::native_key(
            &gears_core::extension::installed(),
            &native.name,
            native.args,
        )
        .map_err(raise);
    }
    callback(state, op, value).map(KeySource::Callback)
}

/// A native call's name and its arguments as core records.
fn native_call(name: &Dynamic, args: &[Dynamic]) -> Fallible<(String, Vec<Record>)> {
    let Ok(name) = name.as_immutable_string_ref() else {
        return script_error("native: the native operator's name must be a string");
    };
    if let Some(at) = args.iter().position(|a| a.is::<rhai::FnPtr>()) {
        return script_error(format!(
            "native: argument {} is a function; a native operator's arguments are data (strings, numbers, booleans, lists, maps, nil)" ,
            at + 1
        ));
    }
    Ok((name.to_string(), args.iter().map(to_core).collect()))
}

/// `native(name, a, b, ...)` (up to 4 arguments after the name), as a builder step and as a
/// free function that makes a native extractor.
pub(crate) fn register_native(engine: &mut Engine) {
    engine.register_type_with_name::<NativeExtractor>("NativeExtractor");
    fn step(b: &mut GearsBuilder, name: &Dynamic, args: &[Dynamic]) -> Fallible<GearsBuilder> {
        let (name, args) = native_call(name, args)?;
        b.plan
            .native(&gears_core::extension::installed(), &name, args)
            .map_err(raise)?;
        Ok(b.clone())
    }
    fn extractor(name: ImmutableString, args: &[Dynamic]) -> Fallible<NativeExtractor> {
        let (name, args) = native_call(&Dynamic::from(name), args)?;
        Ok(NativeExtractor { name, args })
    }
    engine.register_fn("native", |b: &mut GearsBuilder, n: Dynamic| {
        step(b, &n, &[])
    });
    engine.register_fn("native", |b: &mut GearsBuilder, n: Dynamic, a: Dynamic| {
        step(b, &n, &[a])
    });
    engine.register_fn(
        "native",
        |b: &mut GearsBuilder, n: Dynamic, a: Dynamic, c: Dynamic| step(b, &n, &[a, c]),
    );
    engine.register_fn(
        "native",
        |b: &mut GearsBuilder, n: Dynamic, a: Dynamic, c: Dynamic, d: Dynamic| {
            step(b, &n, &[a, c, d])
        },
    );
    engine.register_fn(
        "native",
        |b: &mut GearsBuilder, n: Dynamic, a: Dynamic, c: Dynamic, d: Dynamic, e: Dynamic| {
            step(b, &n, &[a, c, d, e])
        },
    );
    engine.register_fn("native", |n: ImmutableString| extractor(n, &[]));
    engine.register_fn("native", |n: ImmutableString, a: Dynamic| {
        extractor(n, &[a])
    });
    engine.register_fn("native", |n: ImmutableString, a: Dynamic, c: Dynamic| {
        extractor(n, &[a, c])
    });
    engine.register_fn(
        "native",
        |n: ImmutableString, a: Dynamic, c: Dynamic, d: Dynamic| extractor(n, &[a, c, d]),
    );
    engine.register_fn(
        "native",
        |n: ImmutableString, a: Dynamic, c: Dynamic, d: Dynamic, e: Dynamic| {
            extractor(n, &[a, c, d, e])
        },
    );
}
