//! `RG.PYEXECUTE`, `RG.LUAEXECUTE`, `RG.RHAIEXECUTE` and `RG.EXPLAIN`: parse on Redis's main
//! thread, block the calling client, and hand the script to a worker (see [`super::job`]).

use gears_core::Language;
use redis_module::{raw, Context, RedisError, RedisResult, RedisString, RedisValue};

use super::job::{Job, JobKind};
use crate::guard::guarded;
use crate::host::{may_block, may_run, BlockedReply, Caller};
use crate::registrations::sessions::SessionOptions;

pub(crate) fn py_execute(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| execute(ctx, args, Language::Python))
}

pub(crate) fn lua_execute(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| execute(ctx, args, Language::Lua))
}

pub(crate) fn rhai_execute(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| execute(ctx, args, Language::Rhai))
}

/// The command that runs scripts of `language`.
pub(crate) fn execute_command(language: Language) -> &'static str {
    match language {
        Language::Python => "RG.PYEXECUTE",
        Language::Lua => "RG.LUAEXECUTE",
        Language::Rhai => "RG.RHAIEXECUTE",
    }
}

/// `RG.EXPLAIN <language> <script>`: the plan the script's `run()` builds, step by step. The
/// script's top level runs read-only (no writes, no side effects through `execute`), and only
/// for a user who may run scripts of that language.
pub(crate) fn explain(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() != 3 {
            return Err(RedisError::WrongArity);
        }
        let language_name = args[1].to_string_lossy();
        let language = Language::parse(&language_name).ok_or_else(|| {
            RedisError::String(format!(
                "unknown language '{language_name}', expected python, lua or rhai"
            ))
        })?;
        check_language_permission(ctx, language, &args[2])?;
        let script = script_text(&args[2])?;
        start(
            ctx,
            language,
            script,
            JobKind::Explain,
            SessionOptions::default(),
        )
    })
}

fn script_text(arg: &RedisString) -> Result<String, RedisError> {
    arg.try_as_str()
        .map(str::to_string)
        .map_err(|_| RedisError::Str("the script must be valid UTF-8"))
}

fn execute(ctx: &Context, args: Vec<RedisString>, language: Language) -> RedisResult {
    if args.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    // Where the command runs is checked first, whatever options follow (RedisGears 1.2 too).
    check_context(ctx)?;
    let mut options = parse_options(&args[2..], language)?;
    let script = script_text(&args[1])?;
    let kind = if options.unblocking {
        JobKind::Unblocking
    } else {
        JobKind::Execute
    };
    let caller = Caller::of(ctx);
    options.session.admin = crate::executions::commands::is_admin(ctx, &caller);
    start(ctx, language, script, kind, options.session)
}

/// The options of `RG.*EXECUTE` Gears acts on.
#[derive(Default)]
struct Options {
    unblocking: bool,
    session: SessionOptions,
}

/// RG.EXPLAIN runs a script's top level: the caller must be allowed to run that language's
/// command (Python runs as the server's OS user).
fn check_language_permission(
    ctx: &Context,
    language: Language,
    script: &RedisString,
) -> Result<(), RedisError> {
    let caller = Caller::of(ctx);
    let command = execute_command(language);
    let allowed = may_run(ctx, &caller.user, &[command.as_bytes(), script.as_slice()]);
    if allowed {
        return Ok(());
    }
    // The words the server uses for the same refusal of a direct call.
    // SAFETY: a plain query of the server's version.
    let version = unsafe { raw::RedisModule_GetServerVersion.unwrap()() };
    Err(RedisError::String(if version >= 0x00_07_02_00 {
        format!(
            "NOPERM User {} has no permissions to run the '{command}' command",
            String::from_utf8_lossy(&caller.user)
        )
    } else {
        format!("NOPERM this user has no permissions to run the '{command}' command")
    }))
}

/// The options after the script, as RedisGears 1.2 spells them.
fn parse_options(options: &[RedisString], language: Language) -> Result<Options, RedisError> {
    let mut parsed = Options::default();
    let mut i = 0;
    while i < options.len() {
        let option = options[i].to_string_lossy();
        let value = options.get(i + 1).map(|v| v.to_string_lossy());
        match option.to_ascii_uppercase().as_str() {
            "ID" => {
                let id = value.ok_or(RedisError::Str("ID is missing"))?;
                if id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(RedisError::Str(
                        "ID must be compose of: ['A'-'Z' | 'a'-'z' | '0' - '9' | '-' | '_']",
                    ));
                }
                parsed.session.id = Some(id);
                i += 2;
            }
            "DESCRIPTION" => {
                parsed.session.description =
                    Some(value.ok_or(RedisError::Str("DESCRIPTION is missing"))?);
                i += 2;
            }
            "REPLACE_WITH" => {
                parsed.session.replace_with =
                    Some(value.ok_or(RedisError::Str("REPLACE_WITH is missing"))?);
                i += 2;
            }
            "UNBLOCKING" => {
                parsed.unblocking = true;
                i += 1;
            }
            "UPGRADE" => {
                parsed.session.upgrade = true;
                i += 1;
            }
            "FORCE_REINSTALL_REQUIREMENTS" if language == Language::Python => {
                parsed.session.force_reinstall = true;
                i += 1;
            }
            // Every argument after it is a requirement (RedisGears 1.2), none is allowed.
            "REQUIREMENTS" if language == Language::Python => {
                parsed.session.requirements = options[i + 1..]
                    .iter()
                    .map(|r| r.to_string_lossy())
                    .collect();
                i = options.len();
            }
            _ => {
                return Err(RedisError::String(format!(
                    "Unknown arguments were given: {option}"
                )))
            }
        }
    }
    Ok(parsed)
}

/// RedisGears 1.2's refusal of a client that may not block.
pub(crate) const CAN_NOT_BLOCK: &str =
    "Can not run gears inside a multi exec, lua, or when blocking is not allowed";

/// Gears blocks its client: not inside MULTI, Lua, or where blocking is not allowed (checked
/// first, whatever the options, also for `UNBLOCKING`).
fn check_context(ctx: &Context) -> Result<(), RedisError> {
    if !may_block(ctx) {
        return Err(RedisError::Str(CAN_NOT_BLOCK));
    }
    Ok(())
}

/// Creates the execution (or, for RG.EXPLAIN, a job) and queues it: the client is blocked until
/// it ends, or (`UNBLOCKING`) gets the execution's id at once.
fn start(
    ctx: &Context,
    language: Language,
    script: String,
    kind: JobKind,
    session: SessionOptions,
) -> RedisResult {
    check_context(ctx)?;
    let gears = crate::loaded()?;
    if language == Language::Python {
        gears.python_available().map_err(RedisError::String)?;
    }
    let caller = Caller::of(ctx);
    let job = match kind {
        JobKind::Explain => {
            crate::executions::admit_explain(gears.max_queued()).map_err(RedisError::String)?;
            // The context was checked above: the client may block.
            let client = BlockedReply::block(ctx, CAN_NOT_BLOCK)?;
            Job::explain(language, script, caller, gears.execution_limits(), client)
        }
        JobKind::Execute | JobKind::Unblocking => {
            let block = (kind == JobKind::Execute).then_some(ctx);
            let execution = gears
                .create_execution(language, caller, block)
                .map_err(RedisError::String)?;
            if kind == JobKind::Unblocking {
                let id = gears_core::ReplyValue::Bulk(execution.id.clone().into_bytes());
                crate::reply::write(ctx.ctx, &id);
            }
            Job::execute(language, script, execution, session)
        }
    };
    // A job that can not be queued is dropped, and dropping it answers its client.
    gears.workers.submit(move || job.run());
    Ok(RedisValue::NoReply)
}
