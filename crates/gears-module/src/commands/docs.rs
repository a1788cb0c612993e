//! What each RG command declares to Redis: its documentation (`COMMAND DOCS`: summary, since,
//! arguments) and, where the server supports module ACL categories (Redis 7.4+, Valkey), the
//! `gears` category. Flags are given when the command is created (see `lib.rs`).

use std::ffi::{c_char, c_int, CString};

use redis_module::{raw, Context};

/// One argument of a command, as `COMMAND DOCS` shows it.
#[derive(Clone, Copy)]
pub(crate) struct Arg {
    pub name: &'static str,
    pub kind: raw::RedisModuleCommandArgType,
    /// The literal token before the value (`ID <id>`), or the token itself for pure tokens.
    pub token: Option<&'static str>,
    pub optional: bool,
    pub multiple: bool,
    pub summary: &'static str,
    pub subargs: &'static [Arg],
}

const fn arg(name: &'static str, summary: &'static str) -> Arg {
    Arg {
        name,
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
        token: None,
        optional: false,
        multiple: false,
        summary,
        subargs: &[],
    }
}

const fn flag(token: &'static str, summary: &'static str) -> Arg {
    Arg {
        name: token,
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
        token: Some(token),
        optional: true,
        multiple: false,
        summary,
        subargs: &[],
    }
}

const fn option(name: &'static str, token: &'static str, summary: &'static str) -> Arg {
    Arg {
        name,
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
        token: Some(token),
        optional: true,
        multiple: false,
        summary,
        subargs: &[],
    }
}

/// The documentation of one RG command.
pub(crate) struct CommandDoc {
    pub name: &'static str,
    /// ACL categories, where the server lets modules set them (Redis 7.4+, Valkey).
    pub categories: &'static str,
    pub summary: &'static str,
    pub complexity: &'static str,
    pub arity: i32,
    pub args: &'static [Arg],
}

const SCRIPT: Arg = arg(
    "script",
    "the script: builds a pipeline with GearsBuilder and runs it",
);
const SESSION_OPTIONS: [Arg; 5] = [
    flag(
        "UNBLOCKING",
        "reply the execution id at once instead of waiting",
    ),
    option("id", "ID", "the session id"),
    option("description", "DESCRIPTION", "the session description"),
    flag("UPGRADE", "replace the session of the same id"),
    option(
        "session",
        "REPLACE_WITH",
        "the session id this one replaces",
    ),
];

static PY_ARGS: [Arg; 8] = [
    SCRIPT,
    SESSION_OPTIONS[0],
    SESSION_OPTIONS[1],
    SESSION_OPTIONS[2],
    SESSION_OPTIONS[3],
    SESSION_OPTIONS[4],
    flag(
        "FORCE_REINSTALL_REQUIREMENTS",
        "reinstall the requirements even if present",
    ),
    Arg {
        multiple: true,
        ..option(
            "requirement",
            "REQUIREMENTS",
            "pip requirements the script imports (must be last)",
        )
    },
];

static SCRIPT_ARGS: [Arg; 6] = [
    SCRIPT,
    SESSION_OPTIONS[0],
    SESSION_OPTIONS[1],
    SESSION_OPTIONS[2],
    SESSION_OPTIONS[3],
    SESSION_OPTIONS[4],
];

static EXPLAIN_ARGS: [Arg; 2] = [
    arg("language", "python, lua or rhai"),
    arg("script", "the script; its top level runs read-only"),
];

static CONFIG_GET_ARGS: [Arg; 1] = [Arg {
    multiple: true,
    optional: true,
    ..arg("name", "a setting's name (case-sensitive)")
}];

static NAME_VALUE: [Arg; 2] = [
    arg("name", "a setting's name"),
    arg("value", "its new value"),
];

static CONFIG_SET_ARGS: [Arg; 1] = [Arg {
    name: "setting",
    kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
    token: None,
    optional: true,
    multiple: true,
    summary: "a name and its value",
    subargs: &NAME_VALUE,
}];

static ID_ARG: [Arg; 1] = [arg(
    "id",
    "an execution id, as RG.PYEXECUTE ... UNBLOCKING or RG.DUMPEXECUTIONS gives it",
)];

static GET_EXECUTION_ARGS: [Arg; 2] = [
    arg("id", "an execution id"),
    Arg {
        name: "scope",
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
        token: None,
        optional: true,
        multiple: false,
        summary: "SHARD (this shard) or CLUSTER (every shard)",
        subargs: &SCOPES,
    },
];

static SCOPES: [Arg; 2] = [
    flag("SHARD", "this shard's part of the execution"),
    flag("CLUSTER", "every shard's part (in a cluster)"),
];

/// The documentation of an execution command taking one id.
const fn on_id(name: &'static str, summary: &'static str, categories: &'static str) -> CommandDoc {
    CommandDoc {
        name,
        categories,
        summary,
        complexity: "O(1)",
        arity: 2,
        args: &ID_ARG,
    }
}

static UNREGISTER_ARGS: [Arg; 2] = [
    arg("id", "the registration id"),
    flag(
        "abortpending",
        "drop the events still waiting instead of running them",
    ),
];

static DUMP_SESSIONS_ARGS: [Arg; 3] = [
    flag("VERBOSE", "show each registration in full"),
    flag("DEAD", "also sessions that could not be made again"),
    Arg {
        name: "session",
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
        token: Some("SESSIONS"),
        optional: true,
        multiple: true,
        summary: "only these sessions (last)",
        subargs: &[],
    },
];

static EXPORT_REQ_ARGS: [Arg; 1] = [arg(
    "requirement",
    "the requirement, as RG.PYDUMPREQS names it",
)];

static IMPORT_REQ_ARGS: [Arg; 1] = [Arg {
    multiple: true,
    ..arg("chunk", "the chunks RG.PYEXPORTREQ gave, in order")
}];

static INNER_SESSION_ARGS: [Arg; 2] = [
    arg("action", "SET or DEL"),
    arg("session", "the encoded session, or its id"),
];

static INNER_TIMER_KEY_ARGS: [Arg; 2] = [
    arg("key", "the timer's key"),
    arg(
        "registration",
        "the id of the timer registration it keeps alive",
    ),
];

static TRIGGER_ARGS: [Arg; 2] = [
    arg(
        "trigger",
        "the trigger name a CommandReader registration gave",
    ),
    Arg {
        optional: true,
        multiple: true,
        ..arg("arg", "arguments, the record's next elements")
    },
];

static TRIGGER_ON_KEY_ARGS: [Arg; 3] = [
    arg(
        "trigger",
        "the trigger name a CommandReader registration gave",
    ),
    Arg {
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
        ..arg("key", "a key, for routing to the shard that holds it")
    },
    Arg {
        optional: true,
        multiple: true,
        ..arg("arg", "arguments, the record's next elements")
    },
];

static INNER_HOOK_ARGS: [Arg; 2] = [
    arg("command", "the hooked command"),
    Arg {
        optional: true,
        multiple: true,
        ..arg("arg", "its arguments")
    },
];

pub(crate) static COMMANDS: &[CommandDoc] = &[
    CommandDoc {
        name: "RG.PYEXECUTE",
        categories: "gears admin dangerous slow blocking",
        summary: "Runs a Python script (trusted code: it runs as the server's OS user)",
        complexity: "Depends on the script",
        arity: -2,
        args: &PY_ARGS,
    },
    CommandDoc {
        name: "RG.LUAEXECUTE",
        categories: "gears slow blocking",
        summary: "Runs a sandboxed Lua script that builds and runs a Gears pipeline",
        complexity: "Depends on the script",
        arity: -2,
        args: &SCRIPT_ARGS,
    },
    CommandDoc {
        name: "RG.RHAIEXECUTE",
        categories: "gears slow blocking",
        summary: "Runs a sandboxed Rhai script that builds and runs a Gears pipeline",
        complexity: "Depends on the script",
        arity: -2,
        args: &SCRIPT_ARGS,
    },
    CommandDoc {
        name: "RG.EXPLAIN",
        categories: "gears slow blocking",
        summary: "Lists the plan a script builds, without running it",
        complexity: "Depends on the script's top level",
        arity: 3,
        args: &EXPLAIN_ARGS,
    },
    CommandDoc {
        name: "RG.CONFIGGET",
        categories: "gears slow",
        summary: "Returns the values of Gears settings",
        complexity: "O(N) for N names",
        arity: -1,
        args: &CONFIG_GET_ARGS,
    },
    on_id(
        "RG.GETRESULTS",
        "Returns the results and errors of a finished execution",
        "gears slow",
    ),
    on_id(
        "RG.GETRESULTSBLOCKING",
        "Waits for an execution to finish and returns its results and errors",
        "gears slow blocking",
    ),
    CommandDoc {
        name: "RG.DUMPEXECUTIONS",
        categories: "gears slow",
        summary: "Lists the executions: id, status, whether a registration started it",
        complexity: "O(N) for N executions",
        arity: 1,
        args: &[],
    },
    CommandDoc {
        name: "RG.GETEXECUTION",
        categories: "gears slow",
        summary:
            "Shows an execution: status, results and errors counts, durations, steps, progress",
        complexity: "O(N) for N steps",
        arity: -2,
        args: &GET_EXECUTION_ARGS,
    },
    on_id(
        "RG.DROPEXECUTION",
        "Removes a finished execution and its results",
        "gears slow",
    ),
    on_id(
        "RG.ABORTEXECUTION",
        "Stops a queued or running execution",
        "gears slow",
    ),
    CommandDoc {
        name: "RG.DUMPREGISTRATIONS",
        categories: "gears slow",
        summary: "Lists the registrations with their arguments and statistics",
        complexity: "O(N) for N registrations",
        arity: 1,
        args: &[],
    },
    CommandDoc {
        name: "RG.UNREGISTER",
        categories: "gears slow",
        summary: "Removes a registration",
        complexity: "O(N) for N registrations",
        arity: -2,
        args: &UNREGISTER_ARGS,
    },
    CommandDoc {
        name: "RG.CLEARREGISTRATIONSSTATS",
        categories: "gears slow",
        summary: "Resets the statistics of every registration",
        complexity: "O(N) for N registrations",
        arity: 1,
        args: &[],
    },
    on_id(
        "RG.PAUSEREGISTRATIONS",
        "Pauses a stream registration",
        "gears slow",
    ),
    on_id(
        "RG.UNPAUSEREGISTRATIONS",
        "Resumes a paused stream registration",
        "gears slow",
    ),
    CommandDoc {
        name: "RG.PYDUMPSESSIONS",
        categories: "gears slow",
        summary: "Lists the Python sessions (scripts that registered pipelines)",
        complexity: "O(N) for N sessions",
        arity: -1,
        args: &DUMP_SESSIONS_ARGS,
    },
    CommandDoc {
        name: "RG.PYPROFILE",
        categories: "gears slow",
        summary: "Shows (as pstats text) or resets what cProfile recorded of a Python session",
        complexity: "O(N) for N functions profiled",
        arity: -2,
        args: &super::profile::PROFILE_ARGS,
    },
    CommandDoc {
        name: "RG.PYDUMPREQS",
        categories: "gears slow",
        summary: "Lists the installed Python requirements",
        complexity: "O(N) for N requirements",
        arity: -1,
        args: &[],
    },
    CommandDoc {
        name: "RG.PYEXPORTREQ",
        categories: "gears slow",
        summary: "Exports an installed Python requirement's wheels (for RG.PYIMPORTREQ)",
        complexity: "O(N) for N bytes of wheels",
        arity: 2,
        args: &EXPORT_REQ_ARGS,
    },
    CommandDoc {
        name: "RG.PYIMPORTREQ",
        categories: "gears slow",
        summary: "Installs a Python requirement exported by RG.PYEXPORTREQ, with no package index",
        complexity: "Depends on the requirement's wheels",
        arity: -2,
        args: &IMPORT_REQ_ARGS,
    },
    CommandDoc {
        name: "RG.DUMPSESSIONS",
        categories: "gears slow",
        summary: "Lists the sessions of every language (scripts that registered pipelines)",
        complexity: "O(N) for N sessions",
        arity: -1,
        args: &DUMP_SESSIONS_ARGS,
    },
    CommandDoc {
        name: "RG.INNERSESSION",
        categories: "gears slow",
        summary: "Internal: a Gears session as it reaches replicas and the AOF",
        complexity: "Depends on the session's script",
        arity: 3,
        args: &INNER_SESSION_ARGS,
    },
    CommandDoc {
        name: "RG.INNERTIMERKEY",
        categories: "gears slow",
        summary: "Internal: a timer's key as it reaches replicas and the AOF",
        complexity: "O(1)",
        arity: 3,
        args: &INNER_TIMER_KEY_ARGS,
    },
    CommandDoc {
        name: "RG.PYSTATS",
        categories: "gears slow",
        summary: "Returns the embedded Python's memory: allocated in total, at its peak, and now",
        complexity: "O(1)",
        arity: 1,
        args: &[],
    },
    CommandDoc {
        name: "RG.TRIGGER",
        categories: "gears slow",
        summary: "Runs the CommandReader registration of a trigger with the given arguments",
        complexity: "Depends on the registration",
        arity: -2,
        args: &TRIGGER_ARGS,
    },
    CommandDoc {
        name: "RG.TRIGGERONKEY",
        categories: "gears slow",
        summary: "RG.TRIGGER whose first argument is a key (for cluster routing)",
        complexity: "Depends on the registration",
        arity: -3,
        args: &TRIGGER_ON_KEY_ARGS,
    },
    CommandDoc {
        name: "RG.INNERHOOK",
        categories: "gears slow",
        summary: "Internal: what a hooked command becomes (runs its hooks, then the command)",
        complexity: "Depends on the hooks",
        arity: -2,
        args: &INNER_HOOK_ARGS,
    },
    CommandDoc {
        name: "RG.INFOCLUSTER",
        categories: "gears slow",
        summary: "Shows the cluster as Gears sees it: this node and every shard with its slots",
        complexity: "O(N) for N shards",
        arity: 1,
        args: &[],
    },
    CommandDoc {
        name: "RG.REFRESHCLUSTER",
        categories: "gears slow",
        summary: "Reads the cluster's topology now (Gears also follows it by itself every second)",
        complexity: "O(N) for N shards",
        arity: 1,
        args: &[],
    },
    CommandDoc {
        name: "RG.CONFIGSET",
        categories: "gears admin dangerous slow",
        summary: "Changes Gears settings at runtime",
        complexity: "O(N) for N settings",
        arity: -1,
        args: &CONFIG_SET_ARGS,
    },
];

/// The C strings of one argument tree, kept alive until Redis has copied them.
struct ArgStrings {
    strings: Vec<CString>,
    arrays: Vec<Vec<raw::RedisModuleCommandArg>>,
}

impl ArgStrings {
    fn text(&mut self, s: &str) -> *const c_char {
        let s = CString::new(s).unwrap_or_default();
        let ptr = s.as_ptr();
        self.strings.push(s);
        ptr
    }

    /// A zero-terminated C array of `args` (null when empty).
    fn array(&mut self, args: &[Arg]) -> *mut raw::RedisModuleCommandArg {
        if args.is_empty() {
            return std::ptr::null_mut();
        }
        let mut array: Vec<raw::RedisModuleCommandArg> = Vec::with_capacity(args.len() + 1);
        for a in args {
            let mut flags = 0;
            if a.optional {
                flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
            }
            if a.multiple {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
            }
            let subargs = self.array(a.subargs);
            // SAFETY: an all-zero RedisModuleCommandArg is its "none" value.
            let mut c: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
            c.name = self.text(a.name);
            c.type_ = a.kind;
            // The one key argument (RG.TRIGGERONKEY's) is the command's first key spec.
            c.key_spec_index = if a.kind == raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY
            {
                0
            } else {
                -1
            };
            c.token = a.token.map_or(std::ptr::null(), |t| self.text(t));
            c.summary = self.text(a.summary);
            c.flags = flags as c_int;
            c.subargs = subargs;
            array.push(c);
        }
        // SAFETY: the zeroed terminator Redis looks for.
        array.push(unsafe { std::mem::zeroed() });
        let ptr = array.as_mut_ptr();
        self.arrays.push(array);
        ptr
    }
}

/// Sets each command's documentation and, where supported, its ACL category. Called at load.
pub(crate) fn declare(ctx: &Context) -> Result<(), String> {
    // SAFETY: module API calls during the module's load, with C strings that outlive them.
    unsafe {
        let categories = match (
            raw::RedisModule_AddACLCategory,
            raw::RedisModule_SetCommandACLCategories,
        ) {
            (Some(add), Some(set)) => {
                if add(ctx.ctx, c"gears".as_ptr()) != raw::REDISMODULE_OK as c_int {
                    return Err("could not add the ACL category 'gears'".into());
                }
                Some(set)
            }
            _ => {
                Context::new(ctx.ctx).log_warning(
                    "Gears: this server gives module commands no ACL categories: '-@dangerous' or \
                     '-@admin' do not exclude RG.PYEXECUTE, RG.PYIMPORTREQ or RG.CONFIGSET; \
                     exclude them by name (see docs/security.md)",
                );
                None
            }
        };
        for doc in COMMANDS {
            let name = CString::new(doc.name).unwrap_or_default();
            let command = raw::RedisModule_GetCommand.unwrap()(ctx.ctx, name.as_ptr());
            if command.is_null() {
                return Err(format!("command {} is not registered", doc.name));
            }
            if let Some(set) = categories {
                let names = CString::new(doc.categories).unwrap_or_default();
                if set(command, names.as_ptr()) != raw::REDISMODULE_OK as c_int {
                    return Err(format!("could not set the ACL category of {}", doc.name));
                }
            }
            let mut strings = ArgStrings {
                strings: Vec::new(),
                arrays: Vec::new(),
            };
            let version = raw::RedisModuleCommandInfoVersion {
                version: 1,
                sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
                sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
                sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
            };
            let mut info = raw::RedisModuleCommandInfo {
                version: &version,
                summary: strings.text(doc.summary),
                complexity: strings.text(doc.complexity),
                since: strings.text("1.0.0"),
                history: std::ptr::null_mut(),
                tips: std::ptr::null(),
                arity: doc.arity,
                key_specs: std::ptr::null_mut(),
                args: strings.array(doc.args),
            };
            if raw::RedisModule_SetCommandInfo.unwrap()(command, &mut info)
                != raw::REDISMODULE_OK as c_int
            {
                return Err(format!("could not set the documentation of {}", doc.name));
            }
            drop(strings);
        }
    }
    Ok(())
}
