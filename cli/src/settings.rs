//! One settings schema for every command: a TOML or YAML file (`--settings FILE`, or
//! `SLUICE_SETTINGS`) and `SLUICE_*` environment variables, read with the `config` crate;
//! flags override both.
//!
//! ```toml
//! prefix = "myapp"
//! [redis]
//! url = "redis://:secret@127.0.0.1:6379"   # or urls = [...] for a cluster's seeds
//! response_timeout = "250ms"
//! ```
//!
//! Environment: a variable per field, sections joined by a double underscore:
//! `SLUICE_REDIS__URL`, `SLUICE_REDIS__RESPONSE_TIMEOUT`, `SLUICE_PREFIX`. (`SLUICE_REDIS_URL`,
//! single underscore, is the `--redis` flag's own variable and beats the settings.)
//! Unknown fields are refused, and every error names the file (or the variable) and the field.

use std::{path::Path, sync::OnceLock};

use serde::Deserialize;
use sluice_shared::RedisConfig;

use crate::Failure;

/// Everything a settings file may say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Where Redis is and how long to wait for it (`url` or `urls`, timeouts).
    pub(crate) redis: Option<RedisConfig>,
    /// Key prefix of every command but the load tests (they keep theirs, `sluice-loadtest`,
    /// so their keys never mix with a service's).
    pub(crate) prefix: Option<String>,
}

/// The variables the environment source reads: the ones naming a settings field. Others under
/// `SLUICE_` (`SLUICE_REDIS_URL`, `SLUICE_SETTINGS`) belong to flags, not to this schema.
const ENV_FIELDS: &[&str] = &["SLUICE_PREFIX"];
const ENV_SECTIONS: &[&str] = &["SLUICE_REDIS__"];

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Read the settings once, at start-up: `file` if given, then the environment over it.
pub(crate) fn load(file: Option<&Path>) -> Result<(), Failure> {
    let settings = read(file, std::env::vars())?;
    // Called once from main; a second call keeps the first reading.
    let _ = SETTINGS.set(settings);
    Ok(())
}

/// The settings read at start-up (empty when none were given).
pub(crate) fn get() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

fn read(
    file: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
) -> Result<Settings, Failure> {
    let mut builder = config::Config::builder();
    let origin = match file {
        Some(path) => {
            builder = builder.add_source(config::File::from(path).required(true));
            format!("{} (or the SLUICE_* environment)", path.display())
        }
        None => "the SLUICE_* environment".to_owned(),
    };
    let vars: config::Map<String, String> = env
        .filter(|(k, _)| {
            ENV_FIELDS.contains(&k.as_str()) || ENV_SECTIONS.iter().any(|s| k.starts_with(s))
        })
        .collect();
    let environment = config::Environment::with_prefix("SLUICE")
        .prefix_separator("_")
        .separator("__")
        .source(Some(vars));
    builder
        .add_source(environment)
        .build()
        .and_then(config::Config::try_deserialize::<Settings>)
        .map_err(|e| Failure::new(format!("settings from {origin}: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn file(text: &str, ext: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn a_toml_file_and_the_environment_over_it() {
        let f = file(
            "prefix = \"app\"\n[redis]\nurl = \"redis://127.0.0.1:6379\"\n",
            ".toml",
        );
        let s = read(Some(f.path()), env(&[])).unwrap();
        assert_eq!(s.prefix.as_deref(), Some("app"));
        assert!(!s.redis.unwrap().is_cluster());
        let s = read(
            Some(f.path()),
            env(&[
                ("SLUICE_PREFIX", "other"),
                (
                    "SLUICE_REDIS__URL",
                    "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
                ),
                // The flag's own variable and the fixture's are not settings fields.
                ("SLUICE_REDIS_URL", "redis://ignored:1"),
                ("SLUICE_REDIS_ENV", "/tmp/x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.prefix.as_deref(), Some("other"));
        assert!(s.redis.unwrap().is_cluster());
    }

    #[test]
    fn yaml_works_too() {
        let f = file("redis:\n  urls: [\"redis://127.0.0.1:7000\"]\n", ".yaml");
        assert!(
            read(Some(f.path()), env(&[]))
                .unwrap()
                .redis
                .unwrap()
                .is_cluster()
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let f = file("[redis]\nurl = \"http://x\"\n", ".toml");
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("unsupported scheme 'http'"), "{err}");
        let f = file("prefx = \"typo\"\n", ".toml");
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("prefx"), "{err}");
        let f = file(
            "[redis]\nurl = \"redis://127.0.0.1:1\"\nresponse_timeout = \"0s\"\n",
            ".toml",
        );
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("response_timeout"), "{err}");
        let err = read(Some(Path::new("/nonexistent/sluice.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/sluice.toml"), "{err}");
    }

    #[test]
    fn a_password_in_a_bad_url_is_not_shown() {
        let f = file(
            "[redis]\nurl = \"redis://:hunter2@127.0.0.1:99999\"\n",
            ".toml",
        );
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
