//! Sluice's extensions: algorithms, windows, several limits on one descriptor.

use std::time::Duration;

use sluice_gateway::{AlgorithmSpec, Answer, Config, RequestDescriptor, Unit};

const API: &str = r#"
domain: api
descriptors:
  - key: user
    rate_limits:
      - unit: second
        requests_per_unit: 10
        algorithm: sliding-counter
        granularity: 100ms
        name: user-burst
      - unit: day
        requests_per_unit: 10000
        name: user-daily
  - key: upload
    rate_limit:
      window: 90s
      requests_per_unit: 3
      algorithm: sliding-log
  - key: search
    rate_limit:
      unit: minute
      requests_per_unit: 600
      algorithm: gcra
      burst: 20
  - key: legacy
    rate_limit: {unit: MONTH, requests_per_unit: 0}
  - key: exact
    rate_limit: {window: 1500ms, requests_per_unit: 7}
"#;

fn config() -> Config {
    Config::from_yaml("api.yaml", API).expect("valid")
}

#[test]
fn several_limits_on_one_descriptor() {
    let c = config();
    let entries: &[(&str, &str)] = &[("user", "42")];
    let plan = c.plan("api", &[RequestDescriptor::new(entries)], 0);
    let d = &plan.descriptors()[0];
    assert_eq!(d.answer(), Answer::Check);
    let limits: Vec<_> = d.limits().iter().map(|l| l.current_limit()).collect();
    assert_eq!(
        limits,
        [
            (10, Some(Unit::Second), "user-burst"),
            (10_000, Some(Unit::Day), "user-daily")
        ]
    );
    let burst = d.limits()[0].rate();
    assert_eq!(
        burst.algorithm(),
        AlgorithmSpec::SlidingCounter {
            granularity: Duration::from_millis(100)
        }
    );
    let rule = burst.rule().expect("the limiter has the sliding counter");
    assert_eq!(rule.name(), "1s");
    assert_eq!(
        (rule.limit(), rule.granularity()),
        (10, Some(Duration::from_millis(100)))
    );
    let daily = d.limits()[1].rate();
    assert_eq!(daily.algorithm(), AlgorithmSpec::FixedWindow);
    let daily_rule = daily.rule().expect("the limiter has the fixed window");
    assert_eq!(
        (daily_rule.algorithm(), daily_rule.limit()),
        (sluice_limiter::Algorithm::FixedWindow, 10_000)
    );
    assert_eq!(daily.rule_name(), "86400s");
    assert_eq!(daily.to_string(), "10000 per day (fixed-window)");
    assert_eq!(plan.checks().count(), 2);
}

#[test]
fn windows_algorithms_and_their_rules() {
    let c = config();
    let rate = |key: &str| {
        let d = c
            .domain("api")
            .and_then(|d| d.find(&[(key, "x")]))
            .expect("matches");
        d.limits()[0].rate().cloned().expect("counted")
    };
    let upload = rate("upload");
    assert_eq!(upload.window(), Duration::from_secs(90));
    assert_eq!(upload.unit(), None, "no envoy unit is 90s long");
    assert_eq!(upload.rule().map(|r| r.name()), Some("90s"));
    assert_eq!(upload.to_string(), "3 per 1m 30s (sliding-log)");
    let search = rate("search");
    assert_eq!(search.algorithm(), AlgorithmSpec::Gcra { burst: 20 });
    assert_eq!(search.rule().and_then(|r| r.burst()), Some(20));
    let legacy = rate("legacy");
    assert_eq!(
        (legacy.unit(), legacy.requests_per_unit()),
        (Some(Unit::Month), 0)
    );
    assert!(legacy.denies_all());
    let exact = rate("exact");
    assert_eq!(
        (exact.rule_name(), exact.unit()),
        ("1500ms".to_owned(), None)
    );
}

#[test]
fn defaults_are_envoys() {
    let c = Config::from_yaml(
        "plain.yaml",
        "domain: p\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 5}\n  \
         - key: g\n    rate_limit: {unit: minute, requests_per_unit: 5, algorithm: gcra}\n",
    )
    .expect("valid");
    let d = c.domain("p").expect("domain");
    let k = d.descriptors()[0].limits()[0].rate().expect("counted");
    assert_eq!(k.algorithm(), AlgorithmSpec::FixedWindow);
    assert_eq!(k.window(), Duration::from_secs(3600));
    // GCRA's burst defaults to the limit.
    let g = d.descriptors()[1].limits()[0].rate().expect("counted");
    assert_eq!(g.algorithm(), AlgorithmSpec::Gcra { burst: 5 });
}
