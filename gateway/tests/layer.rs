//! The tower layer in real axum apps, served on 127.0.0.1, driven by a real HTTP client
//! (reqwest), on standalone Redis and a Cluster: per-route limits, all or nothing, the cost
//! function, 429 problem documents, headers, key extractors (trusted proxies, headers,
//! extensions), and a killed Redis (fail open or 503, within the limiter's timeout); and a
//! tonic server behind the layer, called by a tonic client (gRPC statuses and metadata).
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{Router, extract::Request, routing::get};
use http::HeaderName;
use sluice_gateway::layer::{
    ClientIp, KeyExtractor, LayerError, MissingKey, OnLimiterError, ProxyHeader, RateLimitLayer,
    RateLimitLayerBuilder, TrustedProxies,
};
use sluice_limiter::{Limiter, OutagePolicy, Rule};
use sluice_shared::{RedisConfig, RedisHandle};
use sluice_tests::{RedisServer, topology_test, unique_prefix};

const MINUTE: Duration = Duration::from_secs(60);

fn log(name: &str, limit: u64, window: Duration) -> Rule {
    Rule::sliding_log(name, limit, window).unwrap()
}

async fn limiter(spec: &str, test: &str) -> Limiter {
    let redis = RedisHandle::connect(&RedisConfig::parse(spec).unwrap())
        .await
        .unwrap();
    Limiter::builder(redis)
        .prefix(&unique_prefix(test))
        .unwrap()
        .timeout(Duration::from_millis(500))
        .unwrap()
        .build()
}

async fn builder(spec: &str, test: &str) -> RateLimitLayerBuilder<RedisHandle> {
    RateLimitLayer::builder(limiter(spec, test).await)
}

/// Serve `app` on 127.0.0.1 (a free port) with the peer address as `ConnectInfo`; the base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// What the tests look at in a response.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn problem(&self) -> serde_json::Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Got {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    Got {
        status,
        headers,
        body,
    }
}

async fn get_with(base: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = client().get(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await
}

async fn statuses(base: &str, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_with(base, path, headers).await.status);
    }
    out
}

fn ok_app() -> Router {
    Router::new()
        .route("/a", get(|| async { "a" }))
        .route("/b/{id}", get(|| async { "b" }))
        .route("/free", get(|| async { "free" }))
        .route("/c", get(|| async { "c" }))
}

topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_route_limits_headers_and_429(topology, spec) {
        let layer = builder(spec, "layer-routes")
            .await
            // Each IP on each route (the default rules count routes apart).
            .key(KeyExtractor::route().and(KeyExtractor::peer_ip()))
            .route("/a", [log("a-minute", 2, MINUTE)])
            .route("/b/{id}", [log("b-burst", 3, MINUTE), log("b-hour", 10, 60 * MINUTE)])
            .default_rules([log("default", 1, MINUTE)])
            .build()
            .unwrap();
        let base = serve(ok_app().route_layer(layer)).await;

        let first = get_with(&base, "/a", &[]).await;
        assert_eq!(first.status, 200, "{topology}: {first:?}");
        assert_eq!(first.body, "a");
        assert_eq!(first.header("ratelimit-policy"), Some(r#""a-minute";q=2;w=60"#));
        assert_eq!(first.header("ratelimit"), Some(r#""a-minute";r=1;t=60"#));
        assert_eq!(first.header("x-ratelimit-remaining"), None, "legacy only when asked for");
        assert_eq!(get_with(&base, "/a", &[]).await.status, 200);

        let denied = get_with(&base, "/a", &[]).await;
        assert_eq!(denied.status, 429, "{topology}: {denied:?}");
        let retry: u64 = denied.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(denied.header("ratelimit"), Some(format!(r#""a-minute";r=0;t={retry}"#).as_str()));
        let problem = denied.problem();
        assert_eq!(problem["type"], "about:blank");
        assert_eq!(problem["title"], "Too Many Requests");
        assert_eq!(problem["status"], 429);
        assert_eq!(problem["retry_after"], retry);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("'a-minute'") && detail.contains("/a"), "{detail}");

        // /b/{id}: one route template, whatever the id; two rules, all or nothing.
        assert_eq!(get_with(&base, "/b/1", &[]).await.status, 200);
        assert_eq!(get_with(&base, "/b/2", &[]).await.status, 200);
        let third = get_with(&base, "/b/3", &[]).await;
        assert_eq!(third.status, 200);
        assert_eq!(
            third.header("ratelimit-policy"),
            Some(r#""b-burst";q=3;w=60, "b-hour";q=10;w=3600"#)
        );
        assert_eq!(third.header("ratelimit"), Some(r#""b-burst";r=0;t=60, "b-hour";r=7;t=3600"#));
        for _ in 0..2 {
            let denied = get_with(&base, "/b/4", &[]).await;
            assert_eq!(denied.status, 429);
            // The denied requests charged neither rule.
            let ratelimit = denied.header("ratelimit").unwrap();
            assert!(ratelimit.contains(r#""b-hour";r=7;"#), "{ratelimit}");
        }

        // The default rules: each other route apart (the key holds the route).
        assert_eq!(statuses(&base, "/free", &[], 2).await, [200, 429], "{topology}");
        assert_eq!(statuses(&base, "/c", &[], 2).await, [200, 429], "{topology}");
        // Not a route: route_layer leaves axum's 404 alone.
        assert_eq!(statuses(&base, "/nowhere", &[], 2).await, [404, 404]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cost_function_and_legacy_headers(topology, spec) {
        let layer = builder(spec, "layer-cost")
            .await
            .route("/a", [log("five", 5, MINUTE)])
            .cost(|req| {
                req.headers
                    .get("x-cost")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1)
            })
            .legacy_headers(true)
            .build()
            .unwrap();
        let base = serve(ok_app().layer(layer)).await;
        let cost = |n: &'static str| [("x-cost", n)];

        let r = get_with(&base, "/a", &cost("3")).await;
        assert_eq!(r.status, 200, "{topology}: {r:?}");
        assert_eq!(r.header("ratelimit"), Some(r#""five";r=2;t=60"#));
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
        assert_eq!(r.header("x-ratelimit-reset"), Some("60"));
        // 3 more don't fit (and are not charged); 2 do.
        let denied = get_with(&base, "/a", &cost("3")).await;
        assert_eq!(denied.status, 429);
        assert!(denied.header("retry-after").is_some());
        assert_eq!(denied.header("x-ratelimit-remaining"), Some("2"));
        let r = get_with(&base, "/a", &cost("2")).await;
        assert_eq!((r.status, r.header("x-ratelimit-remaining")), (200, Some("0")));
        // Cost 0 is not counted; a cost over the capacity can never pass.
        let free = get_with(&base, "/a", &cost("0")).await;
        assert_eq!((free.status, free.header("ratelimit")), (200, None));
        let never = get_with(&base, "/a", &cost("6")).await;
        assert_eq!(never.status, 429);
        assert_eq!(never.header("retry-after"), None);
        let problem = never.problem();
        assert!(problem["detail"].as_str().unwrap().contains("never"), "{problem}");
        assert!(problem.get("retry_after").is_none());
        // Not configured, no default: not limited, no headers.
        let free = get_with(&base, "/free", &[]).await;
        assert_eq!((free.status, free.header("ratelimit-policy")), (200, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn x_forwarded_for_only_from_trusted_proxies(topology, spec) {
        let xff = |v: &'static str| [("x-forwarded-for", v)];
        // The test client (127.0.0.1) plays a trusted load balancer.
        let trusted = TrustedProxies::new(["127.0.0.1/32", "192.0.2.0/24"]).unwrap();
        let layer = builder(spec, "layer-xff")
            .await
            .key(KeyExtractor::client_ip(ClientIp::behind(trusted, ProxyHeader::XForwardedFor)))
            .route("/a", [log("one", 1, MINUTE)])
            .build()
            .unwrap();
        let base = serve(ok_app().layer(layer)).await;
        assert_eq!(statuses(&base, "/a", &xff("203.0.113.7"), 2).await, [200, 429], "{topology}");
        // Another client behind the proxy has its own count.
        assert_eq!(get_with(&base, "/a", &xff("203.0.113.8")).await.status, 200);
        // A client's own X-Forwarded-For entries (left of what the proxies appended) are ignored,
        // and so are trusted proxies' (192.0.2.0/24) to the right.
        for spoof in ["198.51.100.1, 203.0.113.7", "198.51.100.2, 203.0.113.7, 192.0.2.9"] {
            assert_eq!(get_with(&base, "/a", &xff(spoof)).await.status, 429, "{spoof}");
        }
        // A trusted peer that names no client: the key is missing, 400 by default.
        let missing = get_with(&base, "/a", &[]).await;
        assert_eq!(missing.status, 400);
        let problem = missing.problem();
        assert_eq!(problem["status"], 400);
        assert!(problem["detail"].as_str().unwrap().contains("client IP"), "{problem}");

        // Here 127.0.0.1 is not trusted: its X-Forwarded-For is a spoof attempt, never read.
        let untrusted = TrustedProxies::new(["192.0.2.0/24"]).unwrap();
        let layer = builder(spec, "layer-xff-untrusted")
            .await
            .key(KeyExtractor::client_ip(ClientIp::behind(untrusted, ProxyHeader::XForwardedFor)))
            .route("/a", [log("one", 1, MINUTE)])
            .build()
            .unwrap();
        let base = serve(ok_app().layer(layer)).await;
        assert_eq!(get_with(&base, "/a", &xff("203.0.113.7")).await.status, 200);
        for spoof in ["203.0.113.9", "198.51.100.1", "192.0.2.1"] {
            assert_eq!(get_with(&base, "/a", &xff(spoof)).await.status, 429, "{spoof}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwarded_header_from_trusted_proxies(topology, spec) {
        let fwd = |v: &'static str| [("forwarded", v)];
        let trusted = TrustedProxies::new(["127.0.0.1"]).unwrap();
        let layer = builder(spec, "layer-forwarded")
            .await
            .key(KeyExtractor::client_ip(ClientIp::behind(trusted, ProxyHeader::Forwarded)))
            .route("/a", [log("one", 1, MINUTE)])
            .build()
            .unwrap();
        let base = serve(ok_app().layer(layer)).await;
        let v6 = r#"for="[2001:db8::1]:4711";proto=https"#;
        assert_eq!(statuses(&base, "/a", &fwd(v6), 2).await, [200, 429], "{topology}");
        let spoofed = r#"for=198.51.100.1, for="[2001:db8::1]:80";by=127.0.0.1"#;
        assert_eq!(get_with(&base, "/a", &fwd(spoofed)).await.status, 429);
        assert_eq!(get_with(&base, "/a", &fwd("for=203.0.113.7")).await.status, 200);
        // X-Forwarded-For is not this layer's header; `unknown` names no client.
        assert_eq!(get_with(&base, "/a", &[("x-forwarded-for", "203.0.113.50")]).await.status, 400);
        assert_eq!(get_with(&base, "/a", &fwd("for=unknown")).await.status, 400);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn header_and_extension_keys(topology, spec) {
        let layer = builder(spec, "layer-header")
            .await
            .key(KeyExtractor::header(HeaderName::from_static("x-api-key")))
            .route("/a", [log("per-key", 1, MINUTE)])
            .build()
            .unwrap();
        let base = serve(ok_app().layer(layer)).await;
        let key = |v: &'static str| [("x-api-key", v)];
        assert_eq!(statuses(&base, "/a", &key("k1"), 2).await, [200, 429], "{topology}");
        assert_eq!(get_with(&base, "/a", &key("k2")).await.status, 200);
        let missing = get_with(&base, "/a", &[]).await;
        assert_eq!(missing.status, 400);
        assert!(missing.problem()["detail"].as_str().unwrap().contains("x-api-key"));

        // A user an auth middleware put in the extensions; requests without one pass.
        #[derive(Clone)]
        struct User(String);
        let layer = builder(spec, "layer-extension")
            .await
            .key(KeyExtractor::extension::<User, _>("the user", |u| Some(u.0.clone())))
            .route("/a", [log("per-user", 1, MINUTE)])
            .on_missing_key(MissingKey::Skip)
            .build()
            .unwrap();
        let auth = axum::middleware::map_request(|mut req: Request| async move {
            let user = req.headers().get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
            if let Some(user) = user {
                req.extensions_mut().insert(User(user));
            }
            req
        });
        // Layers run outside in: `auth` (added last) before the rate limit.
        let base = serve(ok_app().layer(layer).layer(auth)).await;
        let user = |v: &'static str| [("x-user", v)];
        assert_eq!(statuses(&base, "/a", &user("u1"), 2).await, [200, 429], "{topology}");
        assert_eq!(get_with(&base, "/a", &user("u2")).await.status, 200);
        let anonymous = get_with(&base, "/a", &[]).await;
        assert_eq!((anonymous.status, anonymous.header("ratelimit")), (200, None));
    }
}

/// A tonic server behind the layer: the inner service is the gateway's own gRPC
/// `ShouldRateLimit` (asked for a domain it doesn't have, so it answers OK without Redis);
/// the layer limits the method per peer address (tonic's `TcpConnectInfo`).
async fn serve_tonic(layer: RateLimitLayer<RedisHandle>, spec: &str) -> String {
    use sluice_gateway::{Config, RateLimitService, ServiceOptions, grpc::GrpcService};
    let redis = RedisHandle::connect(&RedisConfig::parse(spec).unwrap())
        .await
        .unwrap();
    let config = Config::from_yaml(
        "inner.yaml",
        "domain: inner\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n",
    )
    .unwrap();
    let service = RateLimitService::new(
        redis,
        config,
        ServiceOptions::default(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(GrpcService::server(std::sync::Arc::new(service)))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tonic_server_answers_grpc_statuses_with_metadata(topology, spec) {
        use sluice_gateway::envoy_types::pb::envoy::service::ratelimit::v3::{
            RateLimitRequest, rate_limit_service_client::RateLimitServiceClient,
        };
        const METHOD: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
        let layer = builder(spec, "layer-tonic")
            .await
            .key(KeyExtractor::peer_ip())
            .route(METHOD, [log("calls", 2, MINUTE)])
            .build()
            .unwrap();
        let url = serve_tonic(layer, spec).await;
        let mut client = RateLimitServiceClient::connect(url).await.unwrap();
        let request = || RateLimitRequest {
            domain: "elsewhere".to_owned(),
            descriptors: vec![Default::default()],
            hits_addend: 0,
        };
        for left in [1, 0] {
            let ok = client.should_rate_limit(request()).await.unwrap();
            let meta = ok.metadata();
            assert_eq!(
                meta.get("ratelimit").unwrap().to_str().unwrap(),
                format!(r#""calls";r={left};t=60"#),
                "{topology}"
            );
            assert_eq!(
                meta.get("ratelimit-policy").unwrap().to_str().unwrap(),
                r#""calls";q=2;w=60"#
            );
            assert_eq!(ok.into_inner().overall_code, 1, "the inner service answered");
        }
        let denied = client.should_rate_limit(request()).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::ResourceExhausted, "{topology}: {denied:?}");
        assert!(
            denied.message().contains("rate limit 'calls' exceeded for route /envoy.service"),
            "{denied:?}"
        );
        let meta = denied.metadata();
        let retry: u64 = meta.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(
            meta.get("ratelimit").unwrap().to_str().unwrap(),
            format!(r#""calls";r=0;t={retry}"#)
        );
        // The channel is still usable: the denial was a status, not a broken stream.
        let again = client.should_rate_limit(request()).await.unwrap_err();
        assert_eq!(again.code(), tonic::Code::ResourceExhausted);
    }
}

#[tokio::test]
async fn bad_configs_are_refused_naming_the_field() {
    let limiter = limiter(&sluice_tests::standalone_url(), "layer-config").await;
    let err = |b: RateLimitLayerBuilder<RedisHandle>| b.build().unwrap_err();
    let b = || RateLimitLayer::builder(limiter.clone());
    assert_eq!(err(b()), LayerError::NoRules);
    // Mixed algorithms on one route are fine: one all-or-nothing call.
    assert!(
        b().route(
            "/a",
            [log("a", 1, MINUTE), Rule::gcra("g", 1, MINUTE, 1).unwrap()],
        )
        .build()
        .is_ok()
    );
    let twice = err(b().route("/a", [log("a", 1, MINUTE), log("a", 2, MINUTE)]));
    assert!(
        twice
            .to_string()
            .starts_with(r#"routes["/a"][1]: rule name 'a'"#),
        "{twice}"
    );
    let empty = err(b().default_rules([]));
    assert!(empty.to_string().starts_with("default_rules: "), "{empty}");
    let cidr = TrustedProxies::new(["127.0.0.1", "not-an-ip"]).unwrap_err();
    assert!(
        cidr.to_string().starts_with("trusted_proxies[1]: "),
        "{cidr}"
    );
}

/// Redis killed under the layer: with the limiter's `Error` policy, fail open (the default)
/// or 503, within the limiter's timeout; `FailClosed` gives 429s; after a restart, limits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_fail_open_or_503_within_the_timeout() {
    let mut redis = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let handle = RedisHandle::connect(&RedisConfig::parse(&redis.url()).unwrap())
        .await
        .unwrap();
    let app = |policy: OutagePolicy, on_error: OnLimiterError, name: &str| {
        let limiter = Limiter::builder(handle.clone())
            .prefix(&unique_prefix(name))
            .unwrap()
            .timeout(timeout)
            .unwrap()
            .retry_interval(Duration::from_millis(200))
            .unwrap()
            .on_outage(policy)
            .build();
        let layer = RateLimitLayer::builder(limiter)
            .route("/a", [log("ten", 10, MINUTE)])
            .on_limiter_error(on_error)
            .build()
            .unwrap();
        serve(ok_app().layer(layer))
    };
    let open = app(OutagePolicy::Error, OnLimiterError::FailOpen, "layer-open").await;
    let unavailable = app(
        OutagePolicy::Error,
        OnLimiterError::Unavailable,
        "layer-503",
    )
    .await;
    let closed = app(
        OutagePolicy::FailClosed,
        OnLimiterError::FailOpen,
        "layer-closed",
    )
    .await;
    for base in [&open, &unavailable, &closed] {
        let r = get_with(base, "/a", &[]).await;
        assert_eq!(
            (r.status, r.header("ratelimit")),
            (200, Some(r#""ten";r=9;t=60"#))
        );
    }

    redis.kill();
    let bound = timeout + Duration::from_millis(900);
    for round in 0..3 {
        let started = Instant::now();
        let r = get_with(&open, "/a", &[]).await;
        assert_eq!(
            (r.status, r.header("ratelimit")),
            (200, None),
            "round {round}: {r:?}"
        );
        assert!(
            started.elapsed() < bound,
            "fail open took {:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let r = get_with(&unavailable, "/a", &[]).await;
        assert_eq!(r.status, 503, "round {round}: {r:?}");
        assert_eq!(r.problem()["status"], 503);
        assert!(
            started.elapsed() < bound,
            "503 took {:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let r = get_with(&closed, "/a", &[]).await;
        assert_eq!(r.status, 429, "round {round}: {r:?}");
        assert!(r.header("retry-after").is_some());
        assert!(
            started.elapsed() < bound,
            "fail closed took {:?}",
            started.elapsed()
        );
    }

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        let r = get_with(&unavailable, "/a", &[]).await;
        if r.status == 200 {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = last.expect("Redis answers again after the restart");
    assert!(r.header("ratelimit").is_some(), "{r:?}");
}
