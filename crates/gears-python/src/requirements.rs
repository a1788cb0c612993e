//! Installed requirements become importable: their folder goes on `sys.path` ahead of the other
//! requirements and the site-packages (never ahead of the standard library), and the
//! modules of the same names loaded from elsewhere (another version of the requirement, another
//! requirement that brought the same package) are forgotten, so the next `import` loads this
//! folder's. Scripts share one interpreter: the requirement made importable last wins, as when
//! pip installs into one environment.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// The requirement folders Gears put on `sys.path`.
static FOLDERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn lock_folders() -> std::sync::MutexGuard<'static, Vec<String>> {
    FOLDERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// True for a path in an installation's packages (not the standard library).
fn is_site_packages(path: &str) -> bool {
    path.contains("site-packages") || path.contains("dist-packages")
}

/// The top-level modules a `pip install --target` folder holds: its packages and `.py` files.
fn top_level_names(folder: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') || name == "__pycache__" || name == "bin" {
                return None;
            }
            if path.is_dir() {
                (!name.ends_with(".dist-info") && !name.ends_with(".data")).then_some(name)
            } else {
                // `six.py`, or an extension module `name.cpython-311-x86_64-linux-gnu.so`.
                let stem = name.split('.').next()?.to_string();
                (name.ends_with(".py") || name.ends_with(".so")).then_some(stem)
            }
        })
        .collect()
}

/// Puts `add` on `sys.path` after the standard library and before the other requirements and
/// the site-packages, takes `remove` off it, and forgets the modules loaded from `remove`, and
/// the installed ones named as one of `add`'s but loaded from elsewhere.
pub fn use_requirement_folder(add: &Path, remove: &[&Path]) -> Result<(), String> {
    if !crate::interpreter::is_started() {
        return Err("Python is not available".into());
    }
    let names = top_level_names(add);
    let new = add.to_string_lossy().into_owned();
    let removed: Vec<String> = remove
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    Python::attach(|py| -> PyResult<()> {
        let sys = py.import("sys")?;
        let path = sys.getattr("path")?.cast_into::<PyList>()?;
        for folder in removed.iter().chain(std::iter::once(&new)) {
            while path.contains(folder)? {
                path.call_method1("remove", (folder,))?;
            }
        }
        // After the standard library (which a requirement may not replace), before the other
        // requirements and the site-packages (whose versions the newest requirement replaces).
        let ours = lock_folders();
        let at = path
            .iter()
            .position(|entry| {
                entry
                    .extract::<String>()
                    .is_ok_and(|p| is_site_packages(&p) || ours.contains(&p))
            })
            .unwrap_or(path.len());
        drop(ours);
        path.insert(at, &new)?;
        {
            let mut ours = lock_folders();
            ours.retain(|p| !removed.contains(p));
            if !ours.contains(&new) {
                ours.push(new.clone());
            }
        }
        let folders = lock_folders().clone();
        let modules = sys.getattr("modules")?.cast_into::<PyDict>()?;
        let mut stale = Vec::new();
        for (name, module) in modules.iter() {
            let Ok(name_text) = name.extract::<String>() else {
                continue;
            };
            let top = name_text.split('.').next().unwrap_or_default();
            let file = module
                .getattr("__file__")
                .ok()
                .and_then(|f| f.extract::<String>().ok());
            let from_removed = file
                .as_deref()
                .is_some_and(|f| removed.iter().any(|r| f.starts_with(r.as_str())));
            // Only installed packages are replaced, never the standard library's modules.
            let replaceable = file.as_deref().is_some_and(|f| {
                is_site_packages(f) || folders.iter().any(|p| f.starts_with(p.as_str()))
            });
            let shadowed = names.iter().any(|n| n == top)
                && replaceable
                && !file.as_deref().is_some_and(|f| f.starts_with(new.as_str()));
            if from_removed || shadowed {
                stale.push(name);
            }
        }
        for name in stale {
            modules.del_item(name)?;
        }
        py.import("importlib")?.call_method0("invalidate_caches")?;
        Ok(())
    })
    .map_err(|e| e.to_string())
}

/// Unpacks wheels into `site` as an installer would (a wheel's root and its `.data/purelib` and
/// `.data/platlib` go to `site`; scripts and headers are left out): a requirement whose wheels
/// came with a session (RDB, replication, another shard) becomes importable without pip, on the
/// thread that makes the session.
pub fn unpack_wheels(wheels: &[std::path::PathBuf], site: &Path) -> Result<(), String> {
    if !crate::interpreter::is_started() {
        return Err("Python is not available".into());
    }
    const UNPACK: &std::ffi::CStr = cr#"
def unpack(wheels, site):
    import os, shutil, zipfile
    os.makedirs(site, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                parts = member.filename.split('/')
                if any(p in ('', '.', '..') for p in parts[:-1]) or member.filename.startswith('/'):
                    raise ValueError('unsafe path in wheel: %r' % member.filename)
                if parts[0].endswith('.data'):
                    if len(parts) < 3 or parts[1] not in ('purelib', 'platlib'):
                        continue
                    parts = parts[2:]
                if member.is_dir() or not parts[-1]:
                    continue
                target = os.path.join(site, *parts)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with archive.open(member) as source, open(target, 'wb') as out:
                    shutil.copyfileobj(source, out)
"#;
    let site = site.to_string_lossy().into_owned();
    let wheels: Vec<String> = wheels
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    Python::attach(|py| -> PyResult<()> {
        let namespace = PyDict::new(py);
        py.run(UNPACK, Some(&namespace), Some(&namespace))?;
        let unpack = namespace
            .get_item("unpack")?
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("no unpack"))?;
        unpack.call1((wheels, site))?;
        Ok(())
    })
    .map_err(|e| e.to_string())
}
