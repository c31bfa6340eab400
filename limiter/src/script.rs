//! The Lua scripts (`lua/`): each algorithm's file followed by the shared driver, the static
//! `redis::Script` (source + SHA1) that serves each algorithm, and the mixed script that serves
//! an all-or-nothing check whose rules use different algorithms.

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
const FIXED_WINDOW_SOURCE: &str = concat!(
    include_str!("../lua/fixed_window.lua"),
    include_str!("../lua/driver.lua")
);

/// `ALG['<code>'] = (function() <file> return {...} end)()`: one algorithm file, its local
/// functions kept apart from the other files' in a table keyed by its [`Algorithm::code`].
macro_rules! wrapped {
    ($code:literal, $file:literal) => {
        concat!(
            "ALG['",
            $code,
            "'] = (function()\n",
            include_str!($file),
            "return { evaluate = evaluate, commit = commit, report = report, flush = flush }\nend)()\n"
        )
    };
}

/// Every algorithm file wrapped, then `mixed.lua` (per-rule dispatch), then the driver.
const MIXED_SOURCE: &str = concat!(
    "local ALG = {}\n",
    wrapped!("log", "../lua/sliding_log.lua"),
    wrapped!("ctr", "../lua/sliding_counter.lua"),
    wrapped!("gcra", "../lua/gcra.lua"),
    wrapped!("fw", "../lua/fixed_window.lua"),
    include_str!("../lua/mixed.lua"),
    include_str!("../lua/driver.lua")
);

static SLIDING_LOG: LazyLock<Script> = LazyLock::new(|| Script::new(SLIDING_LOG_SOURCE));
static SLIDING_COUNTER: LazyLock<Script> = LazyLock::new(|| Script::new(SLIDING_COUNTER_SOURCE));
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_SOURCE));
static FIXED_WINDOW: LazyLock<Script> = LazyLock::new(|| Script::new(FIXED_WINDOW_SOURCE));
static MIXED: LazyLock<Script> = LazyLock::new(|| Script::new(MIXED_SOURCE));

/// The script that serves `algorithm`.
pub(crate) fn script_for(algorithm: Algorithm) -> &'static Script {
    match algorithm {
        Algorithm::SlidingLog => &SLIDING_LOG,
        Algorithm::SlidingCounter => &SLIDING_COUNTER,
        Algorithm::Gcra => &GCRA,
        Algorithm::FixedWindow => &FIXED_WINDOW,
    }
}

/// The script that serves a check mixing algorithms.
pub(crate) fn mixed_script() -> &'static Script {
    &MIXED
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
        Algorithm::FixedWindow => FIXED_WINDOW_SOURCE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mixed_script_holds_every_algorithm_under_its_code() {
        for &a in Algorithm::ALL {
            let entry = format!("ALG['{}'] = (function()\n", a.code());
            let at = MIXED_SOURCE
                .find(&entry)
                .unwrap_or_else(|| panic!("{a} missing"));
            // ...wrapping that algorithm's own file.
            let file = script_source(a).trim_end_matches(include_str!("../lua/driver.lua"));
            assert!(MIXED_SOURCE[at + entry.len()..].starts_with(file), "{a}");
        }
        assert_ne!(mixed_script().get_hash(), script_sha(Algorithm::Gcra));
    }
}
