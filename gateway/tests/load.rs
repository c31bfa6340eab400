//! PATH as a file or a directory.

use std::fs;

use sluice_gateway::{Config, ConfigError};

const ONE: &str =
    "domain: one\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n";
const TWO: &str =
    "domain: two\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 2}\n";

#[test]
fn a_directory_of_files_one_domain_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("one.yaml"), ONE).expect("write");
    fs::write(dir.path().join("two.yml"), TWO).expect("write");
    // Not config files: other extensions, hidden files, subdirectories.
    fs::write(dir.path().join("README.md"), "not yaml: [").expect("write");
    fs::write(dir.path().join("one.yaml~"), "not yaml: [").expect("write");
    fs::write(dir.path().join(".one.yaml.swp"), "not yaml: [").expect("write");
    fs::write(dir.path().join(".hidden.yaml"), "not yaml: [").expect("write");
    fs::create_dir(dir.path().join("sub.yaml")).expect("mkdir");
    fs::write(
        dir.path().join("sub.yaml").join("three.yaml"),
        "not yaml: [",
    )
    .expect("write");
    let config = Config::load(dir.path()).expect("loads");
    let names: Vec<&str> = config.domains().map(|d| d.name()).collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(
        config.domain("two").map(|d| d.file().to_path_buf()),
        Some(dir.path().join("two.yml"))
    );
    // A single file works too.
    let single = Config::load(dir.path().join("one.yaml")).expect("loads");
    assert_eq!(single.domains().len(), 1);
}

#[test]
fn a_domain_in_two_files_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("a.yaml"), ONE).expect("write");
    fs::write(dir.path().join("b.yaml"), ONE.replace("second", "minute")).expect("write");
    let err = Config::load(dir.path()).expect_err("refused");
    assert!(
        matches!(err, ConfigError::DuplicateDomain { .. }),
        "{err:?}"
    );
    assert_eq!(err.file(), dir.path().join("b.yaml"));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: duplicate domain 'one' in config file (already in {})",
            dir.path().join("b.yaml").display(),
            dir.path().join("a.yaml").display()
        )
    );
}

#[test]
fn the_bad_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("a.yaml"), ONE).expect("write");
    fs::write(
        dir.path().join("b.yaml"),
        "domain: b\ndescriptors:\n  - key: ''\n",
    )
    .expect("write");
    let err = Config::load(dir.path()).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: b.descriptors[0]: descriptor has empty key",
            dir.path().join("b.yaml").display()
        )
    );
}

#[test]
fn missing_paths_and_empty_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let err = Config::load(&missing).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{err}"
    );
    let empty = Config::load(dir.path()).expect("an empty directory is an empty config");
    assert!(empty.is_empty());
}
