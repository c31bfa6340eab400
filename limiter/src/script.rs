//! The Lua scripts (`lua/`): each algorithm's file followed by the shared driver, and the
//! static `redis::Script` (source + SHA1) that serves each algorithm.

use std::sync::LazyLock;

use redis::Script;

use crate::algorithm::Algorithm;

const SLIDING_LOG_SOURCE: &str = concat!(
    include_str!("../lua/sliding_log.lua"),
    include_str!("../lua/driver.lua")
);
const SLIDING_COUNTER_SOURCE: &str = concat!(
    include_str!("../lua/sliding_counter.lua"),
    include_str!("../lua/driver.lua")
);
const GCRA_SOURCE: &str = concat!(
    include_str!("../lua/gcra.lua"),
    include_str!("../lua/driver.lua")
);

static SLIDING_LOG: LazyLock<Script> = LazyLock::new(|| Script::new(SLIDING_LOG_SOURCE));
static SLIDING_COUNTER: LazyLock<Script> = LazyLock::new(|| Script::new(SLIDING_COUNTER_SOURCE));
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_SOURCE));

/// The script that serves `algorithm`.
pub(crate) fn script_for(algorithm: Algorithm) -> &'static Script {
    match algorithm {
        Algorithm::SlidingLog => &SLIDING_LOG,
        Algorithm::SlidingCounter => &SLIDING_COUNTER,
        Algorithm::Gcra => &GCRA,
    }
}

/// The SHA1 of the script that serves `algorithm` (what `EVALSHA` sends), for tooling such as
/// `redis-benchmark` runs of the bare script.
pub fn script_sha(algorithm: Algorithm) -> &'static str {
    script_for(algorithm).get_hash()
}

/// The full Lua source that serves `algorithm`.
pub fn script_source(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::SlidingLog => SLIDING_LOG_SOURCE,
        Algorithm::SlidingCounter => SLIDING_COUNTER_SOURCE,
        Algorithm::Gcra => GCRA_SOURCE,
    }
}
