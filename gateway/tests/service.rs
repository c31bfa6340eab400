//! `sluice serve`'s service through its front ends: a tonic client built from the same protos
//! (envoy-types) and a plain HTTP client, against a server started in-process on
//! 127.0.0.1:0, on standalone Redis and on Cluster.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_gateway::envoy_types::pb::{
    envoy::{
        extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride,
        service::ratelimit::v3::{RateLimitResponse, rate_limit_response::DescriptorStatus},
    },
    google::protobuf::UInt64Value,
};
use sluice_gateway::grpc::{ASK_DECIDED_AT, DECIDED_AT};
use support::*;

const OK: i32 = 1;
const OVER: i32 = 2;
const HOUR: i32 = 3;
const DAY: i32 = 4;

const SHOP: &str = r#"
domain: shop
descriptors:
  - key: client_ip
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: client_ip
    value: 10.0.0.1
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: route
    value: /api/*/orders
    rate_limit: {unit: hour, requests_per_unit: 2, name: orders}
  - key: route
    value: /health
    rate_limit: {unlimited: true}
  - key: premium
    rate_limit: {unit: hour, requests_per_unit: 50, replaces: [{name: orders}]}
  - key: tenant
    value: acme
    descriptors:
      - key: user
        rate_limit: {unit: day, requests_per_unit: 5}
  - key: zero
    rate_limit: {unit: hour, requests_per_unit: 0}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: exact
    rate_limit: {unit: second, requests_per_unit: 10, algorithm: sliding-log}
  - key: mixed
    rate_limits:
      - {unit: minute, requests_per_unit: 100}
      - {unit: day, requests_per_unit: 2, algorithm: sliding-log}
"#;

fn limit(status: &DescriptorStatus) -> Option<(u32, i32, &str)> {
    status
        .current_limit
        .as_ref()
        .map(|l| (l.requests_per_unit, l.unit, l.name.as_str()))
}

fn no_limit(status: &DescriptorStatus) {
    assert_eq!(status.code, OK, "{status:?}");
    assert_eq!(status.current_limit, None, "{status:?}");
    assert_eq!(status.duration_until_reset, None, "{status:?}");
}

fn reset_secs(status: &DescriptorStatus) -> f64 {
    let d = status.duration_until_reset.expect("duration_until_reset");
    d.seconds as f64 + f64::from(d.nanos) / 1e9
}

fn to_window_end(window: u64) -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    window as f64 - (now.as_secs_f64() % window as f64)
}

async fn one(client: &mut Client, domain: &str, entries: &[(&str, &str)]) -> RateLimitResponse {
    call(client, request(domain, vec![desc(entries)])).await
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn matching_nested_overrides_wildcards_unlimited_replaces(topology, spec) {
        let server = start(spec, SHOP, options("match")).await;
        let mut c = server.client().await;

        let r = one(&mut c, "shop", &[("client_ip", "1.2.3.4")]).await;
        assert_eq!(limit(&r.statuses[0]), Some((3, HOUR, "")), "{topology}");
        assert_eq!(r.statuses[0].limit_remaining, 2, "{topology}");
        // A value beats the key without one.
        let r = one(&mut c, "shop", &[("client_ip", "10.0.0.1")]).await;
        assert_eq!(limit(&r.statuses[0]), Some((100, HOUR, "")));
        assert_eq!(r.statuses[0].limit_remaining, 99);
        // Wildcards.
        let r = one(&mut c, "shop", &[("route", "/api/v1/orders")]).await;
        assert_eq!(limit(&r.statuses[0]), Some((2, HOUR, "orders")));
        assert_eq!(r.statuses[0].limit_remaining, 1);
        // Unlimited.
        let r = one(&mut c, "shop", &[("route", "/health")]).await;
        assert_eq!((r.overall_code, r.statuses[0].code), (OK, OK));
        assert_eq!(r.statuses[0].limit_remaining, u32::MAX);
        assert_eq!(r.statuses[0].current_limit, None);
        // Replaces: premium's limit drops 'orders' from the same request.
        let r = call(
            &mut c,
            request("shop", vec![desc(&[("route", "/api/v2/orders")]), desc(&[("premium", "yes")])]),
        )
        .await;
        no_limit(&r.statuses[0]);
        assert_eq!(limit(&r.statuses[1]), Some((50, HOUR, "")));
        // Nested.
        let r = one(&mut c, "shop", &[("tenant", "acme"), ("user", "bob")]).await;
        assert_eq!(limit(&r.statuses[0]), Some((5, DAY, "")));
        assert_eq!(r.statuses[0].limit_remaining, 4);
        no_limit(&one(&mut c, "shop", &[("tenant", "acme")]).await.statuses[0]);
        no_limit(&one(&mut c, "shop", &[("tenant", "other"), ("user", "bob")]).await.statuses[0]);
        no_limit(&one(&mut c, "shop", &[("nothing", "here")]).await.statuses[0]);
        // An unknown domain answers OK.
        let r = one(&mut c, "nowhere", &[("client_ip", "1.2.3.4")]).await;
        assert_eq!(r.overall_code, OK);
        no_limit(&r.statuses[0]);
        assert!(r.response_headers_to_add.is_empty(), "{r:?}");
        server.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remaining_and_reset_count_down_then_over_limit(topology, spec) {
        let server = start(spec, SHOP, options("count")).await;
        let mut c = server.client().await;
        for expected in [2u32, 1, 0] {
            let r = one(&mut c, "shop", &[("client_ip", "5.6.7.8")]).await;
            assert_eq!(r.overall_code, OK, "{topology}: {r:?}");
            assert_eq!(r.statuses.len(), 1);
            let s = &r.statuses[0];
            assert_eq!(s.code, OK);
            assert_eq!(limit(s), Some((3, HOUR, "")));
            assert_eq!(s.limit_remaining, expected);
            let reset = reset_secs(s);
            assert!((reset - to_window_end(3600)).abs() < 2.0, "{reset}");
            assert_eq!(header(&r, "RateLimit-Policy"), Some(r#""shop.client_ip";q=3;w=3600"#));
            let t = reset.ceil() as u64;
            let ratelimit = header(&r, "RateLimit").unwrap();
            assert!(
                ratelimit == format!(r#""shop.client_ip";r={expected};t={t}"#)
                    || ratelimit == format!(r#""shop.client_ip";r={expected};t={}"#, t + 1),
                "{ratelimit}"
            );
            assert_eq!(header(&r, "Retry-After"), None);
            assert_eq!(r.response_headers_to_add.len(), 2);
        }
        let r = one(&mut c, "shop", &[("client_ip", "5.6.7.8")]).await;
        assert_eq!(r.overall_code, OVER, "{topology}");
        let s = &r.statuses[0];
        assert_eq!((s.code, limit(s), s.limit_remaining), (OVER, Some((3, HOUR, "")), 0));
        let retry: u64 = header(&r, "Retry-After").unwrap().parse().unwrap();
        assert!((retry as f64 - to_window_end(3600)).abs() < 2.0, "{retry}");
        assert!(header(&r, "RateLimit").unwrap().starts_with(r#""shop.client_ip";r=0;t="#));
        // Another value of the key counts apart.
        let r = one(&mut c, "shop", &[("client_ip", "5.6.7.9")]).await;
        assert_eq!(r.statuses[0].limit_remaining, 2);
        server.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_descriptors_all_or_nothing(topology, spec) {
        let server = start(spec, SHOP, options("atomic")).await;
        let mut c = server.client().await;
        let both = || request("shop", vec![desc(&[("client_ip", "9.9.9.9")]), desc(&[("route", "/api/x/orders")])]);
        for (ip_left, orders_left) in [(2, 1), (1, 0)] {
            let r = call(&mut c, both()).await;
            assert_eq!(r.overall_code, OK, "{topology}");
            assert_eq!(r.statuses[0].limit_remaining, ip_left);
            assert_eq!(r.statuses[1].limit_remaining, orders_left);
            let policy = header(&r, "RateLimit-Policy").unwrap();
            assert_eq!(policy, r#""shop.client_ip";q=3;w=3600, "orders";q=2;w=3600"#);
        }
        // 'orders' is spent: the request is refused and client_ip is not charged.
        let r = call(&mut c, both()).await;
        assert_eq!(r.overall_code, OVER, "{topology}");
        assert_eq!((r.statuses[0].code, r.statuses[0].limit_remaining), (OK, 1));
        assert_eq!((r.statuses[1].code, r.statuses[1].limit_remaining), (OVER, 0));
        assert!(header(&r, "Retry-After").is_some());
        let r = one(&mut c, "shop", &[("client_ip", "9.9.9.9")]).await;
        assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OK, 0), "{topology}");
        server.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hits_addend_per_request_and_per_descriptor(topology, spec) {
        let server = start(spec, SHOP, options("hits")).await;
        let mut c = server.client().await;
        let user = [("tenant", "acme"), ("user", "h")];
        let with_hits = |request_hits: u32, descriptor_hits: Option<u64>| {
            let mut d = desc(&user);
            d.hits_addend = descriptor_hits.map(|value| UInt64Value { value });
            let mut r = request("shop", vec![d]);
            r.hits_addend = request_hits;
            r
        };
        let r = call(&mut c, with_hits(3, None)).await;
        assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OK, 2), "{topology}");
        // A descriptor's own addend beats the request's; 0 checks without counting.
        let r = call(&mut c, with_hits(3, Some(0))).await;
        assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OK, 2), "{topology}");
        // 3 don't fit in 2: refused, nothing charged.
        let r = call(&mut c, with_hits(0, Some(3))).await;
        assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OVER, 2), "{topology}");
        let r = call(&mut c, with_hits(2, None)).await;
        assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OK, 0), "{topology}");
        // A peek at a spent limit is over it.
        let r = call(&mut c, with_hits(1, Some(0))).await;
        assert_eq!((r.overall_code, r.statuses[0].code), (OVER, OVER), "{topology}");
        // More than the limit can ever admit: refused without asking Redis.
        let r = call(&mut c, with_hits(10, None)).await;
        assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OVER, 0), "{topology}");
        server.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shadow_mode_counts_reports_and_answers_ok(topology, spec) {
        let server = start(spec, SHOP, options("shadow")).await;
        let mut c = server.client().await;
        let r = one(&mut c, "shop", &[("shadow", "s")]).await;
        assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OK, 0), "{topology}");
        assert!(r.response_headers_to_add.is_empty(), "shadow limits are not in force: {r:?}");
        let r = one(&mut c, "shop", &[("shadow", "s")]).await;
        assert_eq!((r.overall_code, r.statuses[0].code), (OK, OK), "{topology}");
        // Over in shadow mode, the request's other limits are still charged.
        for left in [2, 1] {
            let r = call(&mut c, request("shop", vec![desc(&[("shadow", "s")]), desc(&[("client_ip", "7.7.7.7")])])).await;
            assert_eq!(r.overall_code, OK, "{topology}");
            assert_eq!(r.statuses[1].limit_remaining, left, "{topology}");
        }
        let metrics = http_get(server.http, "/metrics").await.body;
        let shadow = sample(
            &metrics,
            r#"sluice_gateway_decisions_total{domain="shop",result="shadow_over_limit",rule="shop.shadow"}"#,
        );
        assert_eq!(shadow, Some(3.0), "{metrics}");
        server.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zero_limits_overrides_and_bad_requests(topology, spec) {
        let server = start(spec, SHOP, options("edge")).await;
        let mut c = server.client().await;
        let r = one(&mut c, "shop", &[("zero", "z")]).await;
        assert_eq!(r.overall_code, OVER, "{topology}");
        assert_eq!((limit(&r.statuses[0]), r.statuses[0].limit_remaining), (Some((0, HOUR, "")), 0));
        // A limit override replaces what the config says.
        let overridden = || {
            let mut d = desc(&[("client_ip", "8.8.8.8")]);
            d.limit = Some(RateLimitOverride { requests_per_unit: 1, unit: HOUR });
            request("shop", vec![d])
        };
        let r = call(&mut c, overridden()).await;
        assert_eq!((r.overall_code, limit(&r.statuses[0]), r.statuses[0].limit_remaining), (OK, Some((1, HOUR, "")), 0));
        let r = call(&mut c, overridden()).await;
        assert_eq!(r.overall_code, OVER, "{topology}");
        // Bad requests.
        let mut bad = overridden();
        bad.descriptors[0].limit = Some(RateLimitOverride { requests_per_unit: 1, unit: 0 });
        let status = c.should_rate_limit(bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let status = c.should_rate_limit(request("", vec![desc(&[("k", "v")])])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("domain"), "{status:?}");
        let status = c.should_rate_limit(request("shop", vec![])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        server.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_check_status_headers_retry_after_deny_status(topology, spec) {
        let server = start(spec, SHOP, options("http")).await;
        let path = "/v1/check?domain=shop&descriptor=client_ip:h1";
        for left in [2, 1, 0] {
            let r = http_get(server.http, path).await;
            assert_eq!(r.status, 200, "{topology}: {r:?}");
            assert_eq!(r.header("ratelimit-policy"), Some(r#""shop.client_ip";q=3;w=3600"#));
            assert!(r.header("ratelimit").unwrap().starts_with(&format!(r#""shop.client_ip";r={left};t="#)));
            assert_eq!(r.header("retry-after"), None);
            let body = r.json();
            assert_eq!(body["overall_code"], "OK");
            assert_eq!(body["statuses"][0]["limit_remaining"], left);
            assert_eq!(body["statuses"][0]["current_limit"]["unit"], "HOUR");
        }
        let r = http_get(server.http, path).await;
        assert_eq!(r.status, 429, "{topology}: {r:?}");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
        assert_eq!(r.json()["overall_code"], "OVER_LIMIT");
        assert_eq!(r.json()["statuses"][0]["code"], "OVER_LIMIT");
        let r = http_get(server.http, &format!("{path}&deny_status=403")).await;
        assert_eq!(r.status, 403);
        assert!(r.header("retry-after").is_some());
        // Percent-encoded ':' ',' '%' in a value; the wildcard still matches.
        let r = http_get(server.http, "/v1/check?domain=shop&descriptor=route:%2Fapi%2Fa%3Ab%2Cc%25%2Forders").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["statuses"][0]["current_limit"]["name"], "orders");
        // Two descriptors and hits.
        let r = http_get(server.http, "/v1/check?domain=shop&descriptor=tenant:acme,user:z&descriptor=route:%2Fhealth&hits=4").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["statuses"][0]["limit_remaining"], 1);
        assert_eq!(r.json()["statuses"][1]["limit_remaining"], u64::from(u32::MAX));
        // Bad queries: 400 with the reason.
        let r = http_get(server.http, "/v1/check?domain=shop&descriptor=nocolon").await;
        assert_eq!(r.status, 400);
        assert!(r.json()["error"].as_str().unwrap().contains("key:value"), "{r:?}");
        server.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_and_healthz(topology, spec) {
        let server = start(spec, SHOP, options("metrics")).await;
        let mut c = server.client().await;
        for _ in 0..3 {
            one(&mut c, "shop", &[("route", "/api/m/orders")]).await;
        }
        one(&mut c, "elsewhere", &[("k", "v")]).await;
        let _ = http_get(server.http, "/v1/check?domain=shop").await;
        let r = http_get(server.http, "/metrics").await;
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        let m = &r.body;
        let rule = r#"domain="shop",result="{}",rule="shop.route_/api/*/orders"}"#;
        let series = |result: &str| format!("sluice_gateway_decisions_total{{{}", rule.replace("{}", result));
        assert_eq!(sample(m, &series("ok")), Some(1.0), "{topology}: {m}");
        assert_eq!(sample(m, &series("near_limit")), Some(1.0), "{m}");
        assert_eq!(sample(m, &series("over_limit")), Some(1.0), "{m}");
        assert_eq!(sample(m, r#"sluice_gateway_errors_total{kind="bad_request"}"#), Some(1.0), "{m}");
        assert_eq!(sample(m, r#"sluice_gateway_config_domains{state="loaded"}"#), Some(1.0), "{m}");
        assert_eq!(sample(m, "sluice_gateway_check_seconds_count"), Some(4.0), "{m}");
        // No label carries a request value.
        assert!(!m.contains("/api/m/orders") && !m.contains("elsewhere"), "{m}");
        // The shared servers never evict: the gauge says 0 once the limiter has read the
        // policy (in the background, at start).
        let mut eviction = None;
        for _ in 0..50 {
            let r = http_get(server.http, "/metrics").await;
            eviction = sample(&r.body, "sluice_redis_eviction_possible");
            if eviction == Some(0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(eviction, Some(0.0), "{topology}");
        let h = http_get(server.http, "/healthz").await;
        assert_eq!(h.status, 200, "{h:?}");
        let body = h.json();
        assert_eq!(body["ok"], true);
        assert_eq!(body["domains"], 1);
        assert!(body["eviction"].as_str().unwrap().contains("maxmemory-policy"), "{body}");
        server.stop().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reload_and_bad_reload(topology, spec) {
        let server = start(spec, SHOP, options("reload")).await;
        let mut c = server.client().await;
        let rpu = |r: &RateLimitResponse| r.statuses[0].current_limit.as_ref().map(|l| l.requests_per_unit);
        assert_eq!(rpu(&one(&mut c, "shop", &[("client_ip", "r")]).await), Some(3));
        let seven = SHOP.replace("requests_per_unit: 3}", "requests_per_unit: 7}");
        std::fs::write(&server.config_path, &seven).unwrap();
        let reloaded = eventually(Duration::from_secs(10), || {
            let mut c = c.clone();
            async move { rpu(&one(&mut c, "shop", &[("client_ip", "r")]).await) == Some(7) }
        })
        .await;
        assert!(reloaded, "{topology}: the new config was not put in force");
        // A bad config is refused; the old one stays in force.
        std::fs::write(&server.config_path, seven.replace("unit: hour, requests_per_unit: 7", "unit: fortnight, requests_per_unit: 7")).unwrap();
        let refused = eventually(Duration::from_secs(10), || async {
            let m = http_get(server.http, "/metrics").await.body;
            sample(&m, r#"sluice_gateway_config_reloads_total{result="failed"}"#) == Some(1.0)
        })
        .await;
        assert!(refused, "{topology}: the bad config was not refused");
        assert_eq!(rpu(&one(&mut c, "shop", &[("client_ip", "r")]).await), Some(7));
        let h = http_get(server.http, "/healthz").await.json();
        let why = h["last_reload_error"].as_str().unwrap();
        assert!(why.contains("config.yaml") && why.contains("invalid rate limit unit 'fortnight'"), "{why}");
        std::fs::write(&server.config_path, SHOP).unwrap();
        let fixed = eventually(Duration::from_secs(10), || {
            let mut c = c.clone();
            async move { rpu(&one(&mut c, "shop", &[("client_ip", "r")]).await) == Some(3) }
        })
        .await;
        assert!(fixed, "{topology}");
        assert_eq!(http_get(server.http, "/healthz").await.json()["last_reload_error"], serde_json::Value::Null);
        server.stop().await.unwrap();
    }

    /// Many concurrent clients on one descriptor with an exact algorithm (sliding log, 10 per
    /// second): from the decisions' server timestamps, no window of one second ever admits
    /// more than 10.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrency_oracle_sliding_log(topology, spec) {
        const CLIENTS: usize = 16;
        const LIMIT: usize = 10;
        const WINDOW_US: u64 = 1_000_000;
        let server = start(spec, SHOP, options("oracle")).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let mut c = server.client().await;
            tasks.push(tokio::spawn(async move {
                let mut admitted = Vec::new();
                let mut denied = 0usize;
                for _ in 0..400 {
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    let mut ask = tonic::Request::new(request("shop", vec![desc(&[("exact", "one")])]));
                    ask.metadata_mut().insert(ASK_DECIDED_AT, tonic::metadata::MetadataValue::from_static("1"));
                    let reply = c.should_rate_limit(ask).await.unwrap();
                    let at: u64 = reply.metadata().get(DECIDED_AT).unwrap().to_str().unwrap().parse().unwrap();
                    if reply.into_inner().overall_code == OK {
                        admitted.push(at);
                    } else {
                        denied += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (admitted, denied)
            }));
        }
        let mut admitted = Vec::new();
        let mut denied = 0;
        for t in tasks {
            let (a, d) = t.await.unwrap();
            admitted.extend(a);
            denied += d;
        }
        admitted.sort_unstable();
        for (i, &start) in admitted.iter().enumerate() {
            let in_window = admitted[i..].iter().take_while(|&&t| t < start + WINDOW_US).count();
            assert!(in_window <= LIMIT, "{topology}: {in_window} admitted in the second from {start}");
        }
        assert!(admitted.len() >= 2 * LIMIT, "{topology}: only {} admitted", admitted.len());
        assert!(denied > 0, "{topology}: the limit was never reached");
        server.stop().await.unwrap();
    }

    /// Several limits of different algorithms on one descriptor, checked in one call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mixed_algorithms_all_or_nothing(topology, spec) {
        let server = start(spec, SHOP, options("mixed")).await;
        let mut c = server.client().await;
        for left in [1, 0] {
            let r = one(&mut c, "shop", &[("mixed", "m")]).await;
            assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (OK, left), "{topology}");
            assert_eq!(header(&r, "RateLimit-Policy"), Some(r#""shop.mixed#60s";q=100;w=60, "shop.mixed#86400s";q=2;w=86400"#));
        }
        let r = one(&mut c, "shop", &[("mixed", "m")]).await;
        assert_eq!(r.overall_code, OVER, "{topology}");
        assert_eq!(limit(&r.statuses[0]), Some((2, DAY, "")));
        // The per-minute limit was charged twice, not three times.
        let r = call(&mut c, request("shop", vec![desc(&[("mixed", "m")]), desc(&[("client_ip", "mixed")])])).await;
        assert_eq!(r.overall_code, OVER);
        let ratelimit = header(&r, "RateLimit").unwrap();
        assert!(ratelimit.contains(r#""shop.mixed#60s";r=98;"#), "{ratelimit}");
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_drains_and_closes_the_listeners() {
    let server = start(&sluice_tests::standalone_url(), SHOP, options("stop")).await;
    let (grpc, http) = (server.grpc, server.http);
    let mut c = server.client().await;
    assert_eq!(
        one(&mut c, "shop", &[("client_ip", "s")])
            .await
            .overall_code,
        OK
    );
    server.stop().await.unwrap();
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
}
