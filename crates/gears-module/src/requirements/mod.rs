//! Python requirements (`RG.PYEXECUTE ... REQUIREMENTS r1 r2 ...`): pip requirement specifiers
//! installed into folders Gears manages, shared by every session that names them, and
//! importable once installed.
//!
//! Each requirement (its exact text: `redis` and `redis==4.6.0` are two, as in RedisGears 1.2)
//! gets its own folder under the installation directory (`PythonInstallationDir`, by default
//! `<PythonVenv>/gears-requirements`): `<name>_<10 hex>/wheels` (what `pip wheel` downloaded or
//! built, with its dependencies) and `site` (`pip install --no-index --target`, from those
//! wheels only), then a `REQUIREMENT` file naming it, written last. `site` goes on `sys.path`
//! ahead of the site-packages. A folder stays on disk: after a restart (and for a session made again from the
//! RDB, the AOF or replication, on Redis's main thread, where pip never runs) the newest
//! complete folder of a requirement is used with no package index. `FORCE_REINSTALL_REQUIREMENTS`
//! makes a new folder; the modules loaded from the old one are forgotten, so the next `import`
//! loads the new version.
//!
//! pip runs on the execution's worker thread, never on Redis's main thread: other clients are
//! served meanwhile. Two scripts that need the same requirement wait for one installation.

mod pip;
mod transfer;

pub(crate) use transfer::{py_export_req, py_import_req};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::{
    PYTHON_INSTALLATION_DIR, PYTHON_INSTALL_REQ_MAX_IDLE_TIME, PYTHON_VENV, PYTHON_WHEELS_DIR,
};
use gears_core::ReplyValue;
use redis_module::{Context, RedisResult, RedisString};

use crate::guard::guarded;
use crate::reply::send;

/// RedisGears 1.2's reply to a requirement that could not be installed.
pub(crate) const NOT_SATISFIED: &str =
    "Could not satisfy requirements, look at the log file for more information.";

/// The file that marks a complete installation (it holds the requirement's text).
const MARKER: &str = "REQUIREMENT";

/// An installed requirement.
#[derive(Clone, Debug)]
pub(crate) struct Requirement {
    pub name: String,
    /// Its folder (`wheels` and `site` inside).
    pub path: PathBuf,
    /// The wheel files pip downloaded or built for it (dependencies included).
    pub wheels: Vec<String>,
}

/// Installed requirements, in the order they were first installed or found.
static INSTALLED: Mutex<Vec<Requirement>> = Mutex::new(Vec::new());

/// One lock per requirement text: its installations happen one at a time.
static INSTALLING: Mutex<Option<HashMap<String, Arc<Mutex<()>>>>> = Mutex::new(None);

fn installing(name: &str) -> Arc<Mutex<()>> {
    INSTALLING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// Every installed requirement.
pub(crate) fn all() -> Vec<Requirement> {
    INSTALLED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The directory requirements are installed under.
fn installation_dir() -> Result<PathBuf, String> {
    let gears = crate::loaded().map_err(|e| e.to_string())?;
    let dir = gears.config.text(PYTHON_INSTALLATION_DIR);
    if !dir.is_empty() {
        return Ok(PathBuf::from(dir));
    }
    let venv = gears.config.text(PYTHON_VENV);
    if venv.is_empty() {
        return Err("requirements need PythonInstallationDir or PythonVenv".into());
    }
    Ok(Path::new(&venv).join("gears-requirements"))
}

/// The Python that runs pip: the venv's, else `python3` on the PATH.
fn python() -> PathBuf {
    let venv = crate::gears()
        .map(|g| g.config.text(PYTHON_VENV))
        .unwrap_or_default();
    if venv.is_empty() {
        PathBuf::from("python3")
    } else {
        Path::new(&venv).join("bin").join("python")
    }
}

/// A folder name for a requirement: its letters, digits, `.`, `-` and `_`, then 10 random hex
/// digits.
fn folder_name(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let safe: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .take(64)
        .collect();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(name.as_bytes());
    format!("{safe}_{:010x}", hasher.finish() & 0xff_ffff_ffff)
}

/// Makes `names` installed and importable (on a worker thread: pip may run): each one already
/// installed here or on disk is used as it is, unless `force`; the others are installed.
pub(crate) fn ensure(names: &[String], force: bool) -> Result<(), String> {
    for name in names {
        let lock = installing(name);
        let _one_at_a_time = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if !force {
            if let Some(found) = find(name) {
                activate(found)?;
                continue;
            }
        }
        let installed = install(name)?;
        activate(installed)?;
    }
    Ok(())
}

/// Makes `names` importable from their installed folders, with no pip (a session made again on
/// Redis's main thread): RedisGears 1.2's `session missing requirement (<name>)` for one that is
/// not installed here.
pub(crate) fn use_installed(names: &[String]) -> Result<(), String> {
    for name in names {
        let found = find(name).ok_or_else(|| format!("session missing requirement ({name})"))?;
        activate(found)?;
    }
    Ok(())
}

/// The installed requirement `name`: known here, else the newest complete folder on disk.
fn find(name: &str) -> Option<Requirement> {
    if let Some(known) = all().into_iter().find(|r| r.name == name) {
        if known.path.join(MARKER).is_file() {
            return Some(known);
        }
    }
    find_on_disk(name)
}

/// The newest complete folder of the requirement `name` under the installation directory.
fn find_on_disk(name: &str) -> Option<Requirement> {
    let dir = installation_dir().ok()?;
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| std::fs::read_to_string(path.join(MARKER)).is_ok_and(|text| text == name))
        .filter_map(|path| {
            let modified = path.join(MARKER).metadata().ok()?.modified().ok()?;
            Some((modified, path))
        })
        .collect();
    found.sort();
    let (_, path) = found.pop()?;
    Some(Requirement {
        name: name.to_string(),
        wheels: wheels_in(&path.join("wheels")),
        path,
    })
}

fn wheels_in(dir: &Path) -> Vec<String> {
    let mut wheels: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    wheels.sort();
    wheels
}

fn idle() -> Duration {
    Duration::from_millis(
        crate::gears()
            .map(|g| g.config.integer(PYTHON_INSTALL_REQ_MAX_IDLE_TIME))
            .unwrap_or(30_000)
            .max(1) as u64,
    )
}

/// Downloads (or builds) the requirement's wheels and installs them into a new folder.
fn install(name: &str) -> Result<Requirement, String> {
    let gears = crate::loaded().map_err(|e| e.to_string())?;
    let wheels_dir = gears.config.text(PYTHON_WHEELS_DIR);
    let path = installation_dir()?.join(folder_name(name));
    let wheels = path.join("wheels");
    let result = std::fs::create_dir_all(&wheels)
        .map_err(|e| format!("could not make {}: {e}", wheels.display()))
        .and_then(|()| {
            let wheels_text = wheels.to_string_lossy().into_owned();
            let mut download = vec!["wheel", "--wheel-dir", &wheels_text];
            if !wheels_dir.is_empty() {
                // Offline: only the wheels in this directory.
                download.extend(["--no-index", "--find-links", &wheels_dir]);
            }
            download.extend(["--", name]);
            pip::pip(&python(), name, &download, idle())
        })
        .and_then(|()| install_from_wheels(name, &path));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&path);
    }
    result
}

/// Installs a requirement from the wheels in `<path>/wheels` only, into `<path>/site`, and
/// marks the folder complete.
fn install_from_wheels(name: &str, path: &Path) -> Result<Requirement, String> {
    let wheels = path.join("wheels");
    let wheels_text = wheels.to_string_lossy().into_owned();
    let site_text = path.join("site").to_string_lossy().into_owned();
    pip::pip(
        &python(),
        name,
        &[
            "install",
            "--no-index",
            // Wheels only: nothing is built (a source archive's build would run its code).
            "--only-binary=:all:",
            "--find-links",
            &wheels_text,
            "--target",
            &site_text,
            "--no-warn-script-location",
            "--",
            name,
        ],
        idle(),
    )?;
    std::fs::write(path.join(MARKER), name).map_err(|e| e.to_string())?;
    Ok(Requirement {
        name: name.to_string(),
        wheels: wheels_in(&wheels),
        path: path.to_path_buf(),
    })
}

/// `pip install` of a requirement from the wheels in `<path>/wheels` only (for
/// `RG.PYIMPORTREQ`, on a worker).
fn pip_install_from_wheels(name: &str, path: &Path) -> Result<(), String> {
    install_from_wheels(name, path).map(|_| ())
}

/// Puts a requirement's `site` on `sys.path` (ahead of the site-packages) (taking off the folder of the version it
/// replaces) and lists it.
fn activate(requirement: Requirement) -> Result<(), String> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    let old = installed
        .iter()
        .position(|r| r.name == requirement.name)
        .map(|i| installed.remove(i));
    let replaced: Vec<PathBuf> = old
        .iter()
        .filter(|o| o.path != requirement.path)
        .map(|o| o.path.join("site"))
        .collect();
    let replaced: Vec<&Path> = replaced.iter().map(PathBuf::as_path).collect();
    gears_python::use_requirement_folder(&requirement.path.join("site"), &replaced)?;
    installed.push(requirement);
    Ok(())
}

/// A requirement's wheels in RedisGears 1.2's export format (see [`transfer`]).
fn blob_of(requirement: &Requirement) -> Result<Vec<u8>, String> {
    let dir = requirement.path.join("wheels");
    let mut wheels = Vec::new();
    for file in &requirement.wheels {
        let bytes = std::fs::read(dir.join(file))
            .map_err(|e| format!("could not read the wheel {file}: {e}"))?;
        wheels.push((file.clone(), bytes));
    }
    Ok(transfer::encode(&requirement.name, &wheels))
}

/// The wheels of the installed requirements `names`, each in the export format, to travel with
/// a session (RDB, replication, other shards). One that is not installed here is left out (it
/// is logged).
pub(crate) fn blobs(names: &[String]) -> Vec<Vec<u8>> {
    names
        .iter()
        .filter_map(|name| {
            let found = find(name)?;
            match blob_of(&found) {
                Ok(blob) => Some(blob),
                Err(e) => {
                    crate::host::log_line(gears_core::LogLevel::Warning, &e);
                    None
                }
            }
        })
        .collect()
}

/// [`blobs`] from the installed folders only, taking no lock Gears' threads hold: for an RDB
/// save, which may run in a forked child.
pub(crate) fn blobs_on_disk(names: &[String]) -> Vec<Vec<u8>> {
    names
        .iter()
        .filter_map(|name| blob_of(&find_on_disk(name)?).ok())
        .collect()
}

/// Makes a requirement that came with a session (its wheels, in the export format) installed
/// and importable here without pip: one already installed is used as it is; otherwise its
/// wheels are written to a new folder and unpacked into `site`. Runs on the thread that makes
/// the session (Redis's main thread too).
pub(crate) fn install_blob(blob: &[u8]) -> Result<(), String> {
    install_exported(transfer::decode(blob)?, |path, files| {
        gears_python::unpack_wheels(files, &path.join("site"))
    })
}

/// Installs an exported requirement into a new folder from its wheels only, with `install`
/// (given the folder and the wheel files written there); then marks the folder complete and
/// makes it importable. One already installed here is used as it is.
fn install_exported(
    exported: transfer::Exported,
    install: impl FnOnce(&Path, &[PathBuf]) -> Result<(), String>,
) -> Result<(), String> {
    let lock = installing(&exported.name);
    let _one_at_a_time = lock.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = find(&exported.name) {
        return activate(found);
    }
    let path = installation_dir()?.join(folder_name(&exported.name));
    let wheels = path.join("wheels");
    let result = (|| {
        std::fs::create_dir_all(&wheels).map_err(|e| e.to_string())?;
        let mut files = Vec::new();
        for (file, bytes) in &exported.wheels {
            std::fs::write(wheels.join(file), bytes).map_err(|e| e.to_string())?;
            files.push(wheels.join(file));
        }
        install(&path, &files)?;
        std::fs::write(path.join(MARKER), &exported.name).map_err(|e| e.to_string())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&path);
        return Err(format!("requirement {}: {e}", exported.name));
    }
    activate(Requirement {
        name: exported.name,
        wheels: wheels_in(&wheels),
        path,
    })
}

/// The operating system and machine requirements were built on (`CompiledOs`).
fn compiled_os() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// A requirement as `RG.PYDUMPREQS` shows it (RedisGears 1.2's 18 fields, version 2).
pub(crate) fn describe(requirement: &Requirement, ref_count: usize) -> ReplyValue {
    let bulk = |s: &str| ReplyValue::Bulk(s.as_bytes().to_vec());
    ReplyValue::Array(vec![
        bulk("GearReqVersion"),
        ReplyValue::Integer(2),
        bulk("Name"),
        bulk(&requirement.name),
        bulk("IsDownloaded"),
        bulk("yes"),
        bulk("IsInstalled"),
        bulk("yes"),
        bulk("CompiledOs"),
        bulk(&compiled_os()),
        bulk("Wheels"),
        ReplyValue::Array(requirement.wheels.iter().map(|w| bulk(w)).collect()),
        bulk("Path"),
        bulk(&requirement.path.to_string_lossy()),
        bulk("RefCount"),
        ReplyValue::Integer(ref_count as i64),
        bulk("IsInReqDictionary"),
        bulk("yes"),
    ])
}

/// How many hold a requirement: Gears' list, and each session that names it.
pub(crate) fn ref_count(name: &str) -> usize {
    1 + crate::registrations::sessions::all()
        .iter()
        .filter(|s| s.requirements.iter().any(|r| r == name))
        .count()
}

/// `RG.PYDUMPREQS`: every installed requirement (arguments are ignored, as in RedisGears 1.2).
pub(crate) fn py_dump_reqs(ctx: &Context, _args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        let reply = all()
            .iter()
            .map(|r| describe(r, ref_count(&r.name)))
            .collect();
        send(ctx, &ReplyValue::Array(reply))
    })
}
