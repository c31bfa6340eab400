//! The connection layer against real servers: typed errors, timeouts on both topologies,
//! config files whose errors name the field.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sluice_shared::{Eviction, Keyspace, RedisConfig, RedisError, RedisHandle, slot};
use sluice_tests::{RedisCluster, RedisServer};

sluice_tests::topology_test! {
    #[tokio::test]
    async fn commands_run_and_errors_are_typed(name, spec) {
        let mut conn = RedisHandle::connect(&RedisConfig::parse(spec).unwrap())
            .await
            .unwrap();
        assert_eq!(conn.is_cluster(), name == "cluster");
        let key = Keyspace::new(sluice_tests::unique_prefix("conn"))
            .unwrap()
            .key(b"k", &["s"]);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .query_async(&mut conn)
            .await
            .unwrap();
        let err: RedisError = redis::cmd("LPUSH")
            .arg(&key)
            .arg("x")
            .query_async::<i64>(&mut conn)
            .await
            .unwrap_err()
            .into();
        assert!(matches!(err, RedisError::Command(_)), "{name}: {err:?}");
        assert!(!err.is_unavailable());
    }
}

#[tokio::test]
async fn an_unreachable_server_is_reported_as_unavailable() {
    let port = sluice_tests::free_port();
    let config = RedisConfig::parse(&format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .set_connect_timeout(Duration::from_millis(200))
        .unwrap();
    let err = RedisHandle::connect(&config).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

async fn frozen_for(conn: &mut RedisHandle, key: &[u8], pid: u32, limit: Duration) {
    let pid = pid.to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let result = redis::cmd("GET")
        .arg(key)
        .query_async::<Option<String>>(conn)
        .await;
    let elapsed = start.elapsed();
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    let err: RedisError = result.unwrap_err().into();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        elapsed < limit,
        "the response timeout did not apply: {elapsed:?}"
    );
}

#[tokio::test]
async fn the_response_timeout_applies_standalone() {
    let server = RedisServer::start();
    let config = RedisConfig::parse(&server.url())
        .unwrap()
        .set_response_timeout(Duration::from_millis(200))
        .unwrap();
    let mut conn = RedisHandle::connect(&config).await.unwrap();
    frozen_for(
        &mut conn,
        b"k",
        server.pid().unwrap(),
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test]
async fn the_response_timeout_applies_cluster() {
    let mut cluster = RedisCluster::start(3);
    let config = RedisConfig::parse(&cluster.spec())
        .unwrap()
        .set_response_timeout(Duration::from_millis(200))
        .unwrap();
    let mut conn = RedisHandle::connect(&config).await.unwrap();
    let key = b"frozen-key";
    let node = cluster.node_for_slot(slot(key));
    let _: Option<String> = redis::cmd("GET")
        .arg(&key[..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let pid = cluster.node_mut(node).pid().unwrap();
    // Cluster retries a timed-out request a couple of times; it must still give up promptly.
    frozen_for(&mut conn, key, pid, Duration::from_secs(5)).await;
}

#[test]
fn config_files_are_validated_and_errors_name_the_field() {
    let ok: RedisConfig =
        serde_json::from_str(r#"{"urls":["redis://127.0.0.1:7000"],"response_timeout":"250ms"}"#)
            .unwrap();
    assert!(ok.is_cluster());
    assert_eq!(ok.response_timeout(), Duration::from_millis(250));
    let err = serde_json::from_str::<RedisConfig>(r#"{"url":"http://x"}"#).unwrap_err();
    assert!(err.to_string().contains("invalid url"), "{err}");
    let err = serde_json::from_str::<RedisConfig>(
        r#"{"url":"redis://127.0.0.1:1","connect_timeout":"0s"}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("invalid connect_timeout"), "{err}");
    let err =
        serde_json::from_str::<RedisConfig>(r#"{"url":"redis://127.0.0.1:1","timeout":"1s"}"#)
            .unwrap_err();
    assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
}

#[test]
fn a_malformed_address_says_what_is_wrong_and_shows_the_accepted_forms() {
    let cases = [
        ("redis://:99999", "empty host"),
        ("redis://127.0.0.1:99999", "invalid port number"),
        ("http://x", "unsupported scheme 'http'"),
        (
            "127.0.0.1:6379",
            "has no scheme: write redis://127.0.0.1:6379",
        ),
        ("", "empty address"),
        ("redis://:s3cret@127.0.0.1:0", "port 0"),
    ];
    for (spec, expected) in cases {
        let err = RedisConfig::parse(spec).unwrap_err().to_string();
        assert!(err.contains(expected), "{spec}: {err}");
        assert!(err.contains("redis+cluster://host:port"), "{spec}: {err}");
        assert!(
            !err.contains("s3cret"),
            "{spec}: the password leaked: {err}"
        );
        assert!(!err.contains("InvalidClientConfig"), "{spec}: {err}");
    }
}

#[tokio::test]
async fn the_cluster_form_pointed_at_a_standalone_server_says_so() {
    let url = sluice_tests::standalone_url();
    let addr = url.trim_start_matches("redis://");
    let config = RedisConfig::parse(&format!("redis+cluster://{addr}"))
        .unwrap()
        .set_connect_timeout(Duration::from_millis(500))
        .unwrap();
    let err = RedisHandle::connect(&config).await.unwrap_err();
    assert!(matches!(err, RedisError::Topology(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("standalone server"), "{text}");
    assert!(
        text.contains(&format!("connect with redis://{addr}")),
        "{text}"
    );
}

#[tokio::test]
async fn the_standalone_form_pointed_at_a_cluster_node_says_so() {
    let url = sluice_tests::cluster_urls()[0].clone();
    let addr = url.trim_start_matches("redis://").to_owned();
    let err = RedisHandle::connect(&RedisConfig::parse(&url).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, RedisError::Topology(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("connect with redis+cluster://{addr}")),
        "{text}"
    );
}

#[tokio::test]
async fn the_eviction_policy_is_read_standalone() {
    let server = RedisServer::start();
    let mut conn = RedisHandle::connect(&RedisConfig::parse(&server.url()).unwrap())
        .await
        .unwrap();
    assert_eq!(conn.eviction().await.unwrap(), Eviction::Never);
    sluice_tests::config_set(&server.url(), "maxmemory-policy", "volatile-lru");
    assert_eq!(
        conn.eviction().await.unwrap(),
        Eviction::Possible {
            policy: "volatile-lru".into()
        }
    );
    // A user whose ACL refuses CONFIG: the policy is unknown, not an error.
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">s3cret", "~*", "+@all", "-config"])
        .query(&mut admin)
        .unwrap();
    let url = format!("redis://app:s3cret@127.0.0.1:{}", server.port());
    let mut app = RedisHandle::connect(&RedisConfig::parse(&url).unwrap())
        .await
        .unwrap();
    let Eviction::Unknown { reason } = app.eviction().await.unwrap() else {
        panic!("an ACL refusal must read as unknown");
    };
    assert!(reason.contains("NOPERM"), "{reason}");
}

#[tokio::test]
async fn the_eviction_policy_is_read_on_every_master_cluster() {
    let cluster = RedisCluster::start(3);
    let mut conn = RedisHandle::connect(&RedisConfig::parse(&cluster.spec()).unwrap())
        .await
        .unwrap();
    assert_eq!(conn.eviction().await.unwrap(), Eviction::Never);
    // One master of three may evict: that is enough to lose keys.
    sluice_tests::config_set(&cluster.urls()[2], "maxmemory-policy", "allkeys-lru");
    assert_eq!(
        conn.eviction().await.unwrap(),
        Eviction::Possible {
            policy: "allkeys-lru".into()
        }
    );
}
