//! `RG.CONFIGGET <name> ...` and `RG.CONFIGSET <name> <value> ...`: one reply element per name,
//! as RedisGears 1.2 replies them (an unknown name is an error element, not an error reply).

use gears_core::ReplyValue;
use redis_module::{Context, RedisResult, RedisString};

use super::{find_exact, SetOutcome, Value};

fn value_reply(value: Value) -> ReplyValue {
    match value {
        Value::Integer(i) => ReplyValue::Integer(i),
        Value::Text(s) => ReplyValue::Bulk(s.into_bytes()),
        Value::List(items) => ReplyValue::Array(
            items
                .into_iter()
                .map(|s| ReplyValue::Bulk(s.into_bytes()))
                .collect(),
        ),
    }
}

pub(crate) fn config_get(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    crate::guard::guarded(|| {
        let gears = crate::loaded()?;
        let items = args[1..]
            .iter()
            .map(|name| {
                let name = name.to_string_lossy();
                match find_exact(&name) {
                    Some(setting) => value_reply(gears.config.get(setting.name)),
                    None => match gears.config.extra(&name) {
                        Some(value) => ReplyValue::Bulk(value.into_bytes()),
                        None => ReplyValue::Error(format!(
                            "(error) Unsupported config parameter: {name}"
                        )),
                    },
                }
            })
            .collect();
        crate::reply::send(ctx, &ReplyValue::Array(items))
    })
}

pub(crate) fn config_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    crate::guard::guarded(|| {
        let gears = crate::loaded()?;
        let mut items = Vec::new();
        let mut rest = args[1..].iter();
        while let Some(name) = rest.next() {
            let name = name.to_string_lossy();
            let value = rest.next().map(RedisString::to_string_lossy);
            items.push(match gears.config.set(&name, value.as_deref(), false) {
                SetOutcome::Set => ReplyValue::Status("OK".into()),
                SetOutcome::SavedAsExtra => {
                    ReplyValue::Status("OK - value was saved in extra config dictionary".into())
                }
                SetOutcome::Failed(e) => ReplyValue::Error(e),
            });
        }
        gears.apply_config();
        crate::reply::send(ctx, &ReplyValue::Array(items))
    })
}
