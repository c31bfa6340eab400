//! TLS (`rediss://`) against real redis-servers listening for TLS, with certificates made by
//! `openssl` ([`sluice_tests::tls::TlsFiles`]): a private CA, mutual TLS, and the certificates
//! a client must refuse (another CA, another name, expired), each failing at once with an
//! error naming the check; bad settings name the field and the file.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sluice_limiter::{Check, Limiter, Rule};
use sluice_shared::{RedisConfig, RedisError, RedisHandle, Tls};
use sluice_tests::{RedisServer, tls::TlsFiles};

fn config(url: &str, tls: Tls) -> RedisConfig {
    RedisConfig::parse(url).unwrap().set_tls(tls).unwrap()
}

async fn set_get(redis: &mut RedisHandle, key: &str) -> String {
    let () = redis::cmd("SET")
        .arg(key)
        .arg("over tls")
        .query_async(redis)
        .await
        .unwrap();
    redis::cmd("GET").arg(key).query_async(redis).await.unwrap()
}

#[tokio::test]
async fn private_ca_shared_and_dedicated_connections_and_the_limiter() {
    let files = TlsFiles::generate();
    let server = RedisServer::start_tls(&files.server(), &files.ca(), false);
    let url = server.tls_url().unwrap();
    let config = config(&url, Tls::new().ca(files.ca()).unwrap());
    let mut shared = RedisHandle::connect(&config).await.unwrap();
    assert_eq!(set_get(&mut shared, "tls:shared").await, "over tls");
    let mut dedicated = RedisHandle::dedicated(&config, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(set_get(&mut dedicated, "tls:dedicated").await, "over tls");

    let limiter = Limiter::builder(shared).prefix("tls").unwrap().build();
    let rule = Rule::sliding_log("tls", 2, Duration::from_secs(60)).unwrap();
    let mut allowed = Vec::new();
    for _ in 0..3 {
        let d = limiter.check_all(&[Check::new(&rule, b"k")]).await.unwrap();
        allowed.push(d.allowed);
    }
    assert_eq!(allowed, [true, true, false]);
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let files = TlsFiles::generate();
    let server = RedisServer::start_tls(&files.server(), &files.ca(), true);
    let url = server.tls_url().unwrap();
    let client = files.client();
    let with_cert = config(
        &url,
        Tls::new()
            .ca(files.ca())
            .unwrap()
            .client_cert(&client.cert, &client.key)
            .unwrap(),
    );
    let mut redis = RedisHandle::connect(&with_cert).await.unwrap();
    assert_eq!(set_get(&mut redis, "tls:mutual").await, "over tls");

    let started = Instant::now();
    let without = config(&url, Tls::new().ca(files.ca()).unwrap());
    let err = RedisHandle::connect(&without).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{err}");
    assert!(
        !matches!(err, RedisError::Timeout(_)),
        "refused at once, not timed out: {err}"
    );
}

#[tokio::test]
async fn bad_server_certificates_fail_fast_naming_the_check() {
    let files = TlsFiles::generate();
    // `expired` is valid for 0 days: make sure its end has passed.
    std::thread::sleep(Duration::from_millis(1100));
    for (pair, check) in [
        (files.foreign(), "unknownissuer"),
        (files.wrong_name(), "not valid for name"),
        (files.expired(), "expired"),
    ] {
        let server = RedisServer::start_tls(&pair, &files.ca(), false);
        let config = config(
            &server.tls_url().unwrap(),
            Tls::new().ca(files.ca()).unwrap(),
        );
        let started = Instant::now();
        let err = RedisHandle::connect(&config).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{check}: {err}");
        assert!(matches!(err, RedisError::Tls(_)), "{check}: {err:?}");
        let text = err.to_string();
        assert!(text.to_lowercase().contains(check), "{check}: {text}");
        assert!(text.contains("127.0.0.1"), "names the address: {text}");
    }
}

#[test]
fn bad_tls_settings_name_the_field_and_the_file() {
    let files = TlsFiles::generate();
    // TLS files with a plain address would silently not be used.
    let err = RedisConfig::parse("redis://127.0.0.1:6379")
        .unwrap()
        .set_tls(Tls::new())
        .unwrap_err();
    assert_eq!(err.field(), "tls");
    assert!(err.to_string().contains("rediss://"), "{err}");

    let missing = files.dir().join("nope.crt");
    let err = Tls::new().ca(&missing).unwrap_err();
    assert_eq!(err.field(), "tls.ca");
    assert!(err.to_string().contains("nope.crt"), "{err}");

    // A key where a certificate belongs.
    let client = files.client();
    let err = Tls::new().ca(&client.key).unwrap_err();
    assert_eq!(err.field(), "tls.ca");
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    let err = Tls::new()
        .client_cert(&client.cert, &client.cert)
        .unwrap_err();
    assert_eq!(err.field(), "tls.key");

    // The settings-file form: a certificate without its key.
    let json = serde_json::json!({
        "url": "rediss://127.0.0.1:6380",
        "tls": {"ca": files.ca(), "cert": client.cert},
    });
    let err = serde_json::from_value::<RedisConfig>(json).unwrap_err();
    assert!(err.to_string().contains("tls.key"), "{err}");

    // Mixed schemes in one cluster.
    let err = RedisConfig::parse("rediss://127.0.0.1:7000,redis://127.0.0.1:7001").unwrap_err();
    assert_eq!(err.field(), "urls");
    assert!(
        RedisConfig::parse("rediss+cluster://127.0.0.1:7000,127.0.0.1:7001")
            .unwrap()
            .uses_tls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_serves_the_limiter_and_a_worker() {
    use sluice_dispatcher::{Dispatcher, Job, TopicConfig, WorkerConfig};
    use sluice_shared::Keyspace;
    use sluice_tests::RedisCluster;
    use tokio_util::sync::CancellationToken;

    let files = TlsFiles::generate();
    let cluster = RedisCluster::start_tls(3, &files.server(), &files.ca());
    let seeds = cluster.tls_urls();
    assert_eq!(seeds.len(), 3);
    let config = RedisConfig::cluster(seeds.clone())
        .unwrap()
        .set_tls(Tls::new().ca(files.ca()).unwrap())
        .unwrap();
    assert!(config.uses_tls());
    let shared = RedisHandle::connect(&config).await.unwrap();
    assert!(shared.is_cluster());
    // The slot map a TLS client gets names only TLS ports: every node is reached over TLS.
    let mut probe = shared.clone();
    let slots: redis::Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut probe)
        .await
        .unwrap();
    let text = format!("{slots:?}");
    for seed in &seeds {
        let port = seed.rsplit(':').next().unwrap();
        assert!(text.contains(port), "{port} not in {text}");
    }
    for plain in cluster.urls() {
        let port = plain.rsplit(':').next().unwrap().to_owned();
        assert!(
            !text.contains(&format!("int({port})")),
            "plain port {port} in {text}"
        );
    }

    // The limiter on keys of every master.
    let limiter = Limiter::builder(shared).prefix("tlsc").unwrap().build();
    let rule = Rule::fixed_window("tls", 2, Duration::from_secs(60)).unwrap();
    for k in 0..12 {
        let key = format!("user-{k}");
        let mut allowed = Vec::new();
        for _ in 0..3 {
            allowed.push(limiter.check(&rule, &key, 1).await.unwrap().allowed);
        }
        assert_eq!(allowed, [true, true, false], "{key}");
    }

    // Jobs on topics of several masters: a worker's blocking reads run over TLS too.
    let dispatcher = Dispatcher::connect(config, Keyspace::new("tlsc").unwrap())
        .await
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let topic = TopicConfig::new(name).unwrap();
        let counter = done.clone();
        let worker = dispatcher.worker(
            &topic,
            WorkerConfig::new("g").unwrap(),
            move |_job: Job<u32>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                }
            },
        );
        worker.ensure_group().await.unwrap();
        running.push(tokio::spawn(worker.run(shutdown.clone())));
        let producer = dispatcher.producer::<u32>(&topic);
        for n in 0..5 {
            producer.enqueue(&n).await.unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(std::sync::atomic::Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "{done:?} of 20 jobs done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    for r in running {
        r.await.unwrap().unwrap();
    }
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 20);
}
