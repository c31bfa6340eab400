//! Matching request descriptors against a config, through the public API.

use sluice_gateway::{Answer, Config, LimitSource, Plan, RequestDescriptor, Unit};

const SHOP: &str = r#"
domain: shop
descriptors:
  # A key without a value: one counter per client address.
  - key: client_ip
    rate_limit: {unit: minute, requests_per_unit: 60}
  # A value beats the key without one.
  - key: client_ip
    value: 10.0.0.1
    rate_limit: {unit: minute, requests_per_unit: 600}
  - key: route
    value: /static/*
    rate_limit: {unit: second, requests_per_unit: 1000}
  - key: route
    value: "*.png"
    rate_limit: {unit: second, requests_per_unit: 50}
  - key: route
    value: /api/*/orders
    rate_limit: {unit: hour, requests_per_unit: 100, name: orders}
  - key: route
    value: /health
    rate_limit: {unlimited: true}
  - key: tenant
    value: acme
    descriptors:
      - key: user
        rate_limit: {unit: day, requests_per_unit: 5}
  - key: plan
    value: free
    rate_limit: {unit: second, requests_per_unit: 1}
    descriptors:
      - key: user
        rate_limit: {unit: day, requests_per_unit: 100}
  - key: premium
    rate_limit:
      unit: second
      requests_per_unit: 100
      name: premium
      replaces: [{name: orders}]
  - key: dark
    shadow_mode: true
    rate_limit: {unit: second, requests_per_unit: 1}
"#;

fn config() -> Config {
    Config::from_yaml("shop.yaml", SHOP).expect("the fixture is valid")
}

/// Plan one request of several descriptors, each a list of `key=value`.
fn plan<'c>(config: &'c Config, domain: &str, descriptors: &[&[(&str, &str)]]) -> Plan<'c> {
    let requests: Vec<RequestDescriptor<'_, (&str, &str)>> = descriptors
        .iter()
        .map(|d| RequestDescriptor::new(d))
        .collect();
    config.plan(domain, &requests, 0)
}

/// The single limit of a one-descriptor request: (requests per unit, unit, name), or the answer.
fn limit_of(
    config: &Config,
    entries: &[(&str, &str)],
) -> Result<(u32, Option<Unit>, String), Answer> {
    let plan = plan(config, "shop", &[entries]);
    let d = &plan.descriptors()[0];
    match d.answer() {
        Answer::Check => {
            assert_eq!(d.limits().len(), 1);
            let (rpu, unit, name) = d.limits()[0].current_limit();
            Ok((rpu, unit, name.to_owned()))
        }
        other => Err(other),
    }
}

fn per(rpu: u32, unit: Unit) -> Result<(u32, Option<Unit>, String), Answer> {
    Ok((rpu, Some(unit), String::new()))
}

#[test]
fn default_key_and_value_overrides() {
    let c = config();
    assert_eq!(
        limit_of(&c, &[("client_ip", "1.2.3.4")]),
        per(60, Unit::Minute)
    );
    assert_eq!(
        limit_of(&c, &[("client_ip", "10.0.0.1")]),
        per(600, Unit::Minute)
    );
    assert_eq!(limit_of(&c, &[("client_ip", "")]), per(60, Unit::Minute));
    // The default key counts each value apart.
    let a = plan(&c, "shop", &[&[("client_ip", "1.2.3.4")]]);
    let b = plan(&c, "shop", &[&[("client_ip", "1.2.3.5")]]);
    assert_ne!(a.descriptors()[0].key_id(), b.descriptors()[0].key_id());
    assert_eq!(
        a.descriptors()[0].metric().map(|m| m.rule),
        Some("shop.client_ip")
    );
    assert_eq!(
        a.descriptors()[0].matched().map(|m| m.path()),
        Some("shop.client_ip")
    );
}

#[test]
fn wildcards_at_the_start_middle_and_end() {
    let c = config();
    assert_eq!(
        limit_of(&c, &[("route", "/static/app.css")]),
        per(1000, Unit::Second)
    );
    assert_eq!(
        limit_of(&c, &[("route", "/static/")]),
        per(1000, Unit::Second)
    );
    assert_eq!(
        limit_of(&c, &[("route", "/img/logo.png")]),
        per(50, Unit::Second)
    );
    assert_eq!(
        limit_of(&c, &[("route", "/api/v2/orders")]),
        Ok((100, Some(Unit::Hour), "orders".to_owned()))
    );
    assert_eq!(
        limit_of(&c, &[("route", "/api//orders")]),
        Ok((100, Some(Unit::Hour), "orders".to_owned()))
    );
    assert_eq!(
        limit_of(&c, &[("route", "/api/v2/users")]),
        Err(Answer::NoLimit)
    );
    // Two wildcards match: the first in the file wins.
    assert_eq!(
        limit_of(&c, &[("route", "/static/logo.png")]),
        per(1000, Unit::Second)
    );
    // Each matching value has its own counter.
    let a = plan(&c, "shop", &[&[("route", "/static/a")]]);
    let b = plan(&c, "shop", &[&[("route", "/static/b")]]);
    assert_ne!(a.descriptors()[0].key_id(), b.descriptors()[0].key_id());
    // The metric label is the pattern, not the value.
    assert_eq!(
        a.descriptors()[0].metric().map(|m| m.rule),
        Some("shop.route_/static/*")
    );
    assert_eq!(
        a.descriptors()[0].metric().and_then(|m| m.detailed.clone()),
        None
    );
}

#[test]
fn unlimited_and_unmatched() {
    let c = config();
    assert_eq!(
        limit_of(&c, &[("route", "/health")]),
        Err(Answer::Unlimited)
    );
    assert_eq!(limit_of(&c, &[("nothing", "x")]), Err(Answer::NoLimit));
    assert_eq!(limit_of(&c, &[]), Err(Answer::NoLimit));
    let p = plan(&c, "shop", &[&[("route", "/health")]]);
    assert!(p.descriptors()[0].limits().is_empty());
    assert_eq!(p.checks().count(), 0);
}

#[test]
fn nested_descriptors_and_depth() {
    let c = config();
    assert_eq!(
        limit_of(&c, &[("tenant", "acme"), ("user", "bob")]),
        per(5, Unit::Day)
    );
    // The tenant level has no limit of its own.
    assert_eq!(limit_of(&c, &[("tenant", "acme")]), Err(Answer::NoLimit));
    assert_eq!(
        limit_of(&c, &[("tenant", "other"), ("user", "bob")]),
        Err(Answer::NoLimit)
    );
    // A limit on an inner level applies when the request stops there...
    assert_eq!(limit_of(&c, &[("plan", "free")]), per(1, Unit::Second));
    assert_eq!(
        limit_of(&c, &[("plan", "free"), ("user", "u")]),
        per(100, Unit::Day)
    );
    // ...but not to a request deeper than the config.
    assert_eq!(
        limit_of(&c, &[("client_ip", "1.2.3.4"), ("user", "x")]),
        Err(Answer::NoLimit)
    );
    assert_eq!(
        limit_of(&c, &[("plan", "free"), ("user", "u"), ("extra", "1")]),
        Err(Answer::NoLimit)
    );
    // Order matters: entries are levels.
    assert_eq!(
        limit_of(&c, &[("user", "bob"), ("tenant", "acme")]),
        Err(Answer::NoLimit)
    );
    let d = c
        .domain("shop")
        .and_then(|d| d.find(&[("tenant", "acme"), ("user", "bob")]));
    assert_eq!(d.map(|d| d.path()), Some("shop.tenant_acme.user"));
}

#[test]
fn replaces_drop_named_limits_across_descriptors() {
    let c = config();
    let orders: &[(&str, &str)] = &[("route", "/api/v1/orders")];
    let premium: &[(&str, &str)] = &[("premium", "yes")];
    let alone = plan(&c, "shop", &[orders]);
    assert_eq!(alone.descriptors()[0].answer(), Answer::Check);
    let both = plan(&c, "shop", &[orders, premium]);
    let d = &both.descriptors()[0];
    assert_eq!(d.answer(), Answer::NoLimit);
    assert!(d.limits().is_empty());
    assert_eq!(d.replaced().len(), 1);
    assert_eq!(d.replaced()[0].name(), Some("orders"));
    assert_eq!(both.descriptors()[1].answer(), Answer::Check);
    // Order in the request does not matter.
    let reversed = plan(&c, "shop", &[premium, orders]);
    assert_eq!(reversed.descriptors()[1].answer(), Answer::NoLimit);
    assert_eq!(reversed.checks().count(), 1);
}

#[test]
fn shadow_mode_comes_from_the_descriptor() {
    let c = config();
    let p = plan(&c, "shop", &[&[("dark", "x")], &[("client_ip", "1.1.1.1")]]);
    assert!(p.descriptors()[0].shadow_mode());
    assert!(!p.descriptors()[1].shadow_mode());
    assert_eq!(p.descriptors()[0].answer(), Answer::Check);
}

#[test]
fn unknown_domain_limits_nothing() {
    let c = config();
    let entries: &[(&str, &str)] = &[("client_ip", "1.2.3.4")];
    let requests = [RequestDescriptor::new(entries).with_override(1, Unit::Second)];
    let p = c.plan("elsewhere", &requests, 0);
    assert!(p.domain().is_none());
    assert_eq!(p.descriptors().len(), 1);
    assert_eq!(p.descriptors()[0].answer(), Answer::NoLimit);
}

#[test]
fn a_limit_override_beats_the_config() {
    let c = config();
    let health: &[(&str, &str)] = &[("route", "/health")];
    let unmatched: &[(&str, &str)] = &[("nothing", "x")];
    let requests = [
        RequestDescriptor::new(health).with_override(5, Unit::Minute),
        RequestDescriptor::new(unmatched).with_override(7, Unit::Week),
    ];
    let p = c.plan("shop", &requests, 0);
    for (d, (rpu, unit)) in p
        .descriptors()
        .iter()
        .zip([(5, Unit::Minute), (7, Unit::Week)])
    {
        assert_eq!(d.answer(), Answer::Check);
        assert!(d.matched().is_none());
        assert!(!d.shadow_mode());
        let limit = &d.limits()[0];
        assert_eq!(limit.source(), LimitSource::Override);
        assert_eq!(limit.current_limit(), (rpu, Some(unit), ""));
        assert_eq!(limit.rate().algorithm().as_str(), "fixed-window");
        assert_eq!(d.metric().map(|m| m.rule), Some("shop"));
    }
    // The overridden limit's key is the config's key for the same descriptor and window.
    let configured = plan(&c, "shop", &[&[("client_ip", "9.9.9.9")]]);
    let overridden = c.plan(
        "shop",
        &[RequestDescriptor::new(&[("client_ip", "9.9.9.9")][..]).with_override(1, Unit::Minute)],
        0,
    );
    assert_eq!(
        configured.descriptors()[0].key_id(),
        overridden.descriptors()[0].key_id()
    );
    assert_eq!(
        configured.descriptors()[0].limits()[0].rate().rule_name(),
        overridden.descriptors()[0].limits()[0].rate().rule_name()
    );
}

#[test]
fn hits_per_descriptor() {
    let c = config();
    let e: &[(&str, &str)] = &[("client_ip", "1.2.3.4")];
    let requests = [
        RequestDescriptor::new(e),
        RequestDescriptor::new(e).with_hits_addend(0),
        RequestDescriptor::new(e).with_hits_addend(9),
    ];
    let hits: Vec<u64> = c
        .plan("shop", &requests, 0)
        .descriptors()
        .iter()
        .map(|d| d.hits())
        .collect();
    assert_eq!(hits, [1, 0, 9]);
    let hits: Vec<u64> = c
        .plan("shop", &requests, 4)
        .descriptors()
        .iter()
        .map(|d| d.hits())
        .collect();
    assert_eq!(hits, [4, 0, 9]);
}

#[test]
fn one_request_one_slot() {
    let c = config();
    let p = plan(
        &c,
        "shop",
        &[
            &[("client_ip", "1.2.3.4")],
            &[("route", "/static/{x}")],
            &[("tenant", "acme"), ("user", "}{")],
        ],
    );
    let keyspace = sluice_shared::Keyspace::default();
    let slots: Vec<u16> = p
        .checks()
        .map(|(_, d, a)| {
            let id = d.key_id().expect("a checked descriptor has an id");
            assert_eq!(sluice_shared::hash_tag(id.as_bytes()), Some(&b"shop"[..]));
            sluice_shared::slot(&keyspace.key(id.as_bytes(), &[&a.rate().rule_name(), "fw"]))
        })
        .collect();
    assert_eq!(slots.len(), 3);
    assert!(slots.iter().all(|&s| s == slots[0]), "{slots:?}");
}

#[test]
fn owned_entries_work_too() {
    let c = config();
    let owned = vec![("client_ip".to_owned(), "10.0.0.1".to_owned())];
    let p = c.plan("shop", &[RequestDescriptor::new(&owned)], 0);
    assert_eq!(
        p.descriptors()[0].limits()[0].current_limit(),
        (600, Some(Unit::Minute), "")
    );
}

const FILES: &str = r#"
domain: files
descriptors:
  - key: path
    value: shared/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: path
    value: own/*
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: path
    value: detailed/*
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: user
    value_to_metric: true
    descriptors:
      - key: action
        value: read*
        value_to_metric: true
        rate_limit: {unit: minute, requests_per_unit: 10}
      - key: action
        value: write
        rate_limit: {unit: minute, requests_per_unit: 10}
"#;

#[test]
fn share_threshold_shares_one_counter() {
    let c = Config::from_yaml("files.yaml", FILES).expect("valid");
    let id = |path: &str| {
        let p = plan(&c, "files", &[&[("path", path)]]);
        p.descriptors()[0].key_id().cloned().expect("matched")
    };
    assert_eq!(id("shared/a"), id("shared/b"));
    assert_eq!(id("shared/a").as_bytes(), b"{files}files:path~shared/*");
    assert_ne!(id("own/a"), id("own/b"));
    // A request whose value is the pattern itself is a literal, not the shared counter.
    assert_ne!(id("shared/*"), id("shared/a"));
}

#[test]
fn detailed_and_value_to_metric_keys() {
    let c = Config::from_yaml("files.yaml", FILES).expect("valid");
    let metric = |entries: &[(&str, &str)]| {
        let p = plan(&c, "files", &[entries]);
        let m = p.descriptors()[0].metric().cloned().expect("matched");
        (m.rule.to_owned(), m.detailed)
    };
    assert_eq!(
        metric(&[("path", "detailed/x")]),
        (
            "files.path_detailed/*".to_owned(),
            Some("files.path_detailed/x".to_owned())
        )
    );
    assert_eq!(
        metric(&[("path", "own/x")]),
        ("files.path_own/*".to_owned(), None)
    );
    assert_eq!(
        metric(&[("user", "alice"), ("action", "readfile")]),
        (
            "files.user.action_read*".to_owned(),
            Some("files.user_alice.action_readfile".to_owned())
        )
    );
    // value_to_metric on the user level still puts the user's value in; `write` was exact.
    assert_eq!(
        metric(&[("user", "bob"), ("action", "write")]),
        (
            "files.user.action_write".to_owned(),
            Some("files.user_bob.action_write".to_owned())
        )
    );
}
