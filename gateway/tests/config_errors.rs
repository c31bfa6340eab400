//! Every config envoyproxy/ratelimit refuses, Sluice refuses, naming the file and the place;
//! and the keys and extension misuses Sluice refuses on its own.

use sluice_gateway::{Config, ConfigError, Problem};

/// The error message for `text` loaded as `bad.yaml`.
fn refused(text: &str) -> String {
    match Config::from_yaml("bad.yaml", text) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn problem(text: &str) -> Problem {
    let err = Config::from_yaml("bad.yaml", text).expect_err("refused");
    assert_eq!(err.file().to_str(), Some("bad.yaml"));
    err.problem()
        .cloned()
        .unwrap_or_else(|| panic!("not Invalid: {err}"))
}

/// One descriptor `k: v` under domain `d` with this `rate_limit` body.
fn with_limit(body: &str) -> String {
    format!("domain: d\ndescriptors:\n  - key: k\n    value: v\n    rate_limit:\n{body}")
}

#[test]
fn envoys_refusals_in_envoys_words() {
    let cases: &[(&str, &str)] = &[
        (
            "descriptors: []\n",
            "bad.yaml: domain: config file cannot have empty domain",
        ),
        (
            "domain: ''\n",
            "bad.yaml: domain: config file cannot have empty domain",
        ),
        ("", "bad.yaml: domain: config file cannot have empty domain"),
        (
            "domain: d\ndescriptors:\n  - value: v\n",
            "bad.yaml: d.descriptors[0]: descriptor has empty key",
        ),
        (
            "domain: d\ndescriptors:\n  - key: a\n    value: 1\n  - key: a\n    value: '1'\n",
            "bad.yaml: d.a_1: duplicate descriptor composite key 'd.a_1'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n      - key: b\n",
            "bad.yaml: d.a.b: duplicate descriptor composite key 'd.a.b'",
        ),
        (
            // Envoy compares `key_value` strings: key `a_b` collides with key `a`, value `b`.
            "domain: d\ndescriptors:\n  - key: a_b\n  - key: a\n    value: b\n",
            "bad.yaml: d.a_b: duplicate descriptor composite key 'd.a_b'",
        ),
        (
            &with_limit("      unit: foo\n      requests_per_unit: 5\n"),
            "bad.yaml: d.k_v[rate_limit]: invalid rate limit unit 'foo'",
        ),
        (
            &with_limit("      unknown: x\n"),
            "bad.yaml: d.k_v[rate_limit]: config error, unknown key 'unknown'",
        ),
        (
            &with_limit("      requests_per_unit: 5\n"),
            "bad.yaml: d.k_v[rate_limit]: invalid rate limit unit ''",
        ),
        (
            &with_limit("      unit: UNKNOWN\n      requests_per_unit: 5\n"),
            "bad.yaml: d.k_v[rate_limit]: invalid rate limit unit 'UNKNOWN'",
        ),
        (
            &with_limit("      unlimited: true\n      unit: day\n"),
            "bad.yaml: d.k_v[rate_limit]: should not specify rate limit unit when unlimited",
        ),
        (
            &with_limit("      unit: day\n      name: n\n      replaces: [{name: n}]\n"),
            "bad.yaml: d.k_v[rate_limit]: replaces should not contain name of same descriptor",
        ),
        (
            &with_limit("      unit: day\n      name: n\n      replaces: [{name: ''}]\n"),
            "bad.yaml: d.k_v[rate_limit]: should not have an empty replaces entry",
        ),
        (
            &with_limit("      unit: day\n      replaces: [{}]\n"),
            "bad.yaml: d.k_v[rate_limit]: should not have an empty replaces entry",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    ratelimit:\n      unit: day\n",
            "bad.yaml: d.descriptors[0]: config error, unknown key 'ratelimit'",
        ),
        (
            &with_limit("      unit: day\n      requestsperunit: 5\n"),
            "bad.yaml: d.k_v[rate_limit]: config error, unknown key 'requestsperunit'",
        ),
        (
            "0.25: d\ndescriptors: []\n",
            "bad.yaml: <top level>: config error, key is not of type string: 0.25",
        ),
        (
            "domain: d\ndescriptors:\n  - a\n  - b\n",
            "bad.yaml: d: config error, yaml file contains list of type other than map: a",
        ),
        (
            "domain: d\nunit: day\n",
            "bad.yaml: <top level>: config error, unknown key 'unit'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n",
            "bad.yaml: d.k_v: share_threshold can only be used with wildcard values (containing '*'), but found key 'k_v'",
        ),
        (
            &with_limit("      unit: day\n      requests_per_unit: -1\n"),
            "bad.yaml: d.k_v[rate_limit]: 'requests_per_unit' must be a whole number from 0 to 4294967295, found -1",
        ),
        (
            &with_limit("      unit: day\n      requests_per_unit: 4294967296\n"),
            "bad.yaml: d.k_v[rate_limit]: 'requests_per_unit' must be a whole number from 0 to 4294967295, found 4294967296",
        ),
        (
            &with_limit("      unit: day\n      requests_per_unit: ten\n"),
            "bad.yaml: d.k_v[rate_limit]: 'requests_per_unit' must be a whole number from 0 to 4294967295, found ten",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: yes please\n",
            "bad.yaml: d.k: 'shadow_mode' must be true or false, found yes please",
        ),
        (
            "domain: d\ndescriptors:\n  - key: [a]\n",
            "bad.yaml: d.descriptors[0]: 'key' must be a string, found a list",
        ),
        (
            "domain: d\ndescriptors: {key: k}\n",
            "bad.yaml: d: 'descriptors' must be a list, found a mapping",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(refused(text), *expected, "for:\n{text}");
    }
}

#[test]
fn yaml_syntax_errors_name_the_file() {
    let msg = refused("domain: d\ndescriptors:\n  - key: k\n   value: [\n");
    assert!(
        msg.starts_with("bad.yaml: error loading config file: "),
        "{msg}"
    );
    let msg = refused("- a\n- b\n");
    assert_eq!(
        msg,
        "bad.yaml: error loading config file: the top level must be a mapping (domain, descriptors), found a list"
    );
    let msg = refused("domain: d\ndomain: e\n");
    assert!(
        msg.starts_with("bad.yaml: error loading config file: "),
        "{msg}"
    );
}

#[test]
fn newer_envoy_keys() {
    // quota_mode is refused, with the reason.
    let p = problem("domain: d\ndescriptors:\n  - key: k\n    quota_mode: true\n");
    assert!(
        matches!(
            p,
            Problem::Unsupported {
                key: "quota_mode",
                ..
            }
        ),
        "{p}"
    );
    assert!(p.to_string().contains("all or nothing"), "{p}");
    // quota_mode: false is harmless.
    assert!(
        Config::from_yaml(
            "ok.yaml",
            "domain: d\ndescriptors:\n  - key: k\n    quota_mode: false\n"
        )
        .is_ok()
    );
    // share_threshold, value_to_metric, detailed_metric and metadata are read.
    let ok = "domain: d\ndescriptors:\n  - key: k\n    value: 'files/*'\n    share_threshold: true\n    \
              value_to_metric: true\n    detailed_metric: true\n    metadata: {team: a, tier: [1, 2]}\n    \
              rate_limit: {unit: minute, requests_per_unit: 5}\n";
    let config = Config::from_yaml("ok.yaml", ok).expect("valid");
    let d = &config.domain("d").expect("domain").descriptors()[0];
    assert!(d.share_threshold() && d.value_to_metric() && d.detailed_metric());
    assert_eq!(
        d.metadata(),
        Some(&serde_json::json!({"team": "a", "tier": [1, 2]}))
    );
    let bad_metadata = problem("domain: d\ndescriptors:\n  - key: k\n    metadata: {[1]: x}\n");
    assert!(
        matches!(bad_metadata, Problem::Metadata(_)),
        "{bad_metadata}"
    );
}

#[test]
fn extension_misuse_is_refused() {
    let cases: &[(&str, &str)] = &[
        (
            "      unit: second\n      window: 1s\n      requests_per_unit: 1\n",
            "give unit or window, not both",
        ),
        (
            "      window: soon\n      requests_per_unit: 1\n",
            "window: 'soon' is not a duration such as 90s, 1500ms or 1h 30m",
        ),
        (
            "      unit: second\n      requests_per_unit: 1\n      algorithm: leaky\n",
            "algorithm 'leaky' is not one of fixed-window, sliding-log, sliding-counter, gcra",
        ),
        (
            "      unit: second\n      requests_per_unit: 1\n      granularity: 100ms\n",
            "granularity applies to the sliding-counter algorithm only",
        ),
        (
            "      unit: second\n      requests_per_unit: 1\n      algorithm: sliding-log\n      burst: 3\n",
            "burst applies to the gcra algorithm only",
        ),
        (
            "      unit: second\n      requests_per_unit: 10\n      algorithm: sliding-counter\n      granularity: 300ms\n",
            "granularity: must divide the window (1s is not a multiple of 300ms)",
        ),
        (
            "      unit: second\n      requests_per_unit: 0\n      algorithm: gcra\n",
            "requests_per_unit: must be at least 1",
        ),
        (
            "      unit: second\n      requests_per_unit: 10\n      algorithm: gcra\n      burst: 0\n",
            "burst: must be at least 1",
        ),
        (
            "      window: 500us\n      requests_per_unit: 10\n",
            "window: must be at least 1ms",
        ),
        (
            "      window: 400days\n      requests_per_unit: 10\n",
            "window: must be at most 366 days",
        ),
        (
            "      unlimited: true\n      window: 1s\n",
            "window does not apply to an unlimited limit",
        ),
        (
            "      unlimited: true\n      algorithm: gcra\n",
            "algorithm does not apply to an unlimited limit",
        ),
    ];
    for (body, expected) in cases {
        let text = with_limit(body);
        let msg = refused(&text);
        assert!(
            msg.starts_with("bad.yaml: d.k_v[rate_limit]: ") && msg.contains(expected),
            "{msg}\nexpected: {expected}\nfor:\n{text}"
        );
    }
}

#[test]
fn several_limits_misuse_is_refused() {
    let base = "domain: d\ndescriptors:\n  - key: k\n";
    let cases: &[(&str, &str)] = &[
        (
            "    rate_limit: {unit: second, requests_per_unit: 1}\n    rate_limits: [{unit: day, requests_per_unit: 9}]\n",
            "bad.yaml: d.k: give rate_limit or rate_limits, not both",
        ),
        (
            "    rate_limits: []\n",
            "bad.yaml: d.k[rate_limits]: rate_limits must list at least one limit",
        ),
        (
            "    rate_limits: [{unlimited: true}]\n",
            "bad.yaml: d.k[rate_limits[0]]: an unlimited limit stands alone: write it as rate_limit",
        ),
        (
            "    rate_limits:\n      - {unit: minute, requests_per_unit: 1}\n      - {window: 60s, requests_per_unit: 2}\n",
            "bad.yaml: d.k[rate_limits[1]]: counts the same window the same way as rate_limits[0]; merge them",
        ),
        (
            "    rate_limits: [{unit: minute, requests_per_unit: 1}, 3]\n",
            "bad.yaml: d.k: config error, yaml file contains list of type other than map: 3",
        ),
        (
            "    rate_limits:\n      - {unit: fortnight, requests_per_unit: 1}\n",
            "bad.yaml: d.k[rate_limits[0]]: invalid rate limit unit 'fortnight'",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(refused(&format!("{base}{body}")), *expected, "for:\n{body}");
    }
}

#[test]
fn errors_are_typed() {
    let err = Config::from_yaml(
        "x.yaml",
        "domain: d\ndescriptors:\n  - key: a\n  - key: a\n",
    )
    .expect_err("duplicate");
    match &err {
        ConfigError::Invalid { file, at, problem } => {
            assert_eq!(file.to_str(), Some("x.yaml"));
            assert_eq!(at, "d.a");
            assert_eq!(problem, &Problem::DuplicateCompositeKey("d.a".to_owned()));
        }
        other => panic!("{other:?}"),
    }
}
