//! PATH into a [`Config`]: one file, or a directory of `.yaml` / `.yml` files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::Config;
use crate::ConfigError;

pub(super) fn load(path: &Path) -> Result<Config, ConfigError> {
    let read_error = |file: &Path| {
        let file = file.to_path_buf();
        move |source| ConfigError::Read { file, source }
    };
    let files = files(path)?;
    let mut texts = Vec::with_capacity(files.len());
    for file in files {
        let text = fs::read_to_string(&file).map_err(read_error(&file))?;
        texts.push((file, text));
    }
    Config::from_files(
        texts
            .iter()
            .map(|(file, text)| (file.clone(), text.as_str())),
    )
}

/// The files PATH stands for: itself, or the config files of the directory it names.
pub(crate) fn files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let meta = fs::metadata(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        config_files(path)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// The directory's config files, in name order: regular files (or links to them) named
/// `*.yaml` / `*.yml`, not hidden (editors' swap and backup files are skipped).
fn config_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_error = |source| ConfigError::Read {
        file: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
