//! `sluice-redis-up DIR ENV_FILE`: start a standalone server and a 3-master cluster for the test
//! suite, detached, and write their URLs and PIDs to ENV_FILE. `scripts/redis-down` stops
//! exactly those PIDs.
#![allow(clippy::unwrap_used)]

use std::io::Write;

fn main() {
    let env_file = std::env::args()
        .nth(1)
        .expect("usage: sluice-redis-up ENV_FILE");
    let standalone = sluice_tests::RedisServer::start();
    let cluster = sluice_tests::RedisCluster::start(3);
    let mut pids = vec![standalone.pid().unwrap()];
    let mut dirs = vec![standalone.dir().display().to_string()];
    let urls = cluster.urls();
    let mut cluster = cluster;
    for i in 0..urls.len() {
        pids.push(cluster.node_mut(i).pid().unwrap());
        dirs.push(cluster.node_mut(i).dir().display().to_string());
    }
    let mut f = std::fs::File::create(&env_file).unwrap();
    writeln!(f, "SLUICE_REDIS_URL={}", standalone.url()).unwrap();
    writeln!(f, "SLUICE_CLUSTER_URLS={}", urls.join(",")).unwrap();
    writeln!(
        f,
        "SLUICE_REDIS_PIDS={}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    )
    .unwrap();
    writeln!(f, "SLUICE_REDIS_DIRS={}", dirs.join(" ")).unwrap();
    println!(
        "standalone {}  cluster {}",
        standalone.url(),
        urls.join(",")
    );
    // Detach: the servers outlive this process; redis-down kills them by PID.
    std::mem::forget(standalone);
    std::mem::forget(cluster);
}
