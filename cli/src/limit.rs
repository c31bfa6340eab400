//! `sluice limit ...`: one-off checks from the shell.

use std::time::Duration;

use clap::{
    Args, Subcommand,
    builder::{PossibleValuesParser, TypedValueParser},
};
use sluice_limiter::{Algorithm, Eviction, Limiter, Rule, RuleConfig};
use sluice_shared::RedisHandle;

use crate::{
    Failure,
    args::{ConnArgs, DEFAULT_PREFIX},
    output, parse_duration,
};

#[derive(Debug, Subcommand)]
pub(crate) enum LimitCommand {
    /// Charge COST units to KEY; print the decision as one JSON line.
    /// Exit status: 0 allowed, 1 denied, 2 error.
    Check(CheckArgs),
    /// Like check, without charging anything.
    Peek(CheckArgs),
    /// Forget KEY's state under the rule.
    Reset(CheckArgs),
    /// Print the Lua source (or with --sha its SHA1) of an algorithm's script, for tooling
    /// such as scripts/bench-peers (SCRIPT LOAD + redis-benchmark EVALSHA).
    #[command(hide = true)]
    Script(ScriptArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ScriptArgs {
    /// Which algorithm's script.
    #[arg(long, value_parser = algorithm_parser())]
    algorithm: Algorithm,
    /// Print the SHA1 EVALSHA sends instead of the source.
    #[arg(long)]
    sha: bool,
}

fn print_script(args: &ScriptArgs) -> Result<i32, Failure> {
    if args.sha {
        output::line(sluice_limiter::script_sha(args.algorithm))?;
    } else {
        output::text(sluice_limiter::script_source(args.algorithm))?;
    }
    Ok(0)
}

/// `--algorithm`: the limiter's own names (`FromStr`), listed in `--help` and in errors.
fn algorithm_parser() -> impl TypedValueParser<Value = Algorithm> {
    PossibleValuesParser::new(Algorithm::ALL.iter().map(|a| a.as_str()))
        .try_map(|name| name.parse::<Algorithm>())
}

/// A rule as given on the command line.
#[derive(Debug, Clone, Args)]
pub(crate) struct RuleArgs {
    /// Counting algorithm.
    #[arg(long, value_parser = algorithm_parser())]
    pub(crate) algorithm: Algorithm,
    /// Units admitted per window.
    #[arg(long)]
    pub(crate) limit: u64,
    /// Window length, e.g. 1s, 250ms, 1m.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) window: Duration,
    /// Sub-bucket width for sliding-counter (must divide the window); default: the window.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) granularity: Option<Duration>,
    /// Burst for gcra; default: the limit.
    #[arg(long)]
    pub(crate) burst: Option<u64>,
    /// Rule name (part of the Redis key).
    #[arg(long, default_value = "cli")]
    pub(crate) rule: String,
}

impl RuleArgs {
    /// The rule, validated by the limiter; an error names the flag that carried the value.
    pub(crate) fn build(&self) -> Result<Rule, Failure> {
        Rule::try_from(RuleConfig {
            name: self.rule.clone(),
            algorithm: self.algorithm,
            limit: self.limit,
            window: self.window,
            granularity: self.granularity,
            burst: self.burst,
        })
        .map_err(|e| {
            // Every field is the flag of the same name, but the rule's name is `--rule`.
            let flag = match e.field() {
                "name" => "rule",
                field => field,
            };
            Failure::flag(flag, e.reason())
        })
    }
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    rule: RuleArgs,
    /// Units to charge.
    #[arg(long, default_value_t = 1)]
    cost: u64,
    /// Give up on Redis after this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    /// The key to limit, as UTF-8 text (braces allowed). For a key that is not UTF-8, give its
    /// bytes with --key-hex instead.
    #[arg(required_unless_present = "key_hex")]
    key: Option<String>,
    /// The key as hexadecimal bytes (e.g. 00ff7b7d for the bytes 0x00 0xff { }): any bytes.
    #[arg(long, value_name = "HEX", conflicts_with = "key", value_parser = parse_hex)]
    key_hex: Option<HexKey>,
}

/// A key given as hex (a newtype: clap reads a bare `Vec<u8>` as a list of numbers).
#[derive(Debug, Clone)]
struct HexKey(Vec<u8>);

impl CheckArgs {
    /// The key's bytes, from KEY or --key-hex (clap makes sure exactly one is given).
    fn key(&self) -> Vec<u8> {
        match (&self.key_hex, &self.key) {
            (Some(HexKey(bytes)), _) => bytes.clone(),
            (None, Some(key)) => key.as_bytes().to_vec(),
            (None, None) => Vec::new(),
        }
    }

    /// The key as the JSON output shows it: the text given, or the hex given.
    fn key_shown(&self) -> serde_json::Value {
        match (&self.key_hex, &self.key) {
            (Some(HexKey(bytes)), _) => serde_json::json!({ "hex": hex(bytes) }),
            (None, key) => serde_json::json!(key),
        }
    }
}

/// `--key-hex`: pairs of hex digits, case-insensitive.
fn parse_hex(s: &str) -> Result<HexKey, String> {
    if s.len() % 2 != 0 {
        return Err("an even number of hex digits (two per byte)".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{:?} is not a hex byte", s.get(i..i + 2).unwrap_or(s)))
        })
        .collect::<Result<_, _>>()
        .map(HexKey)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) async fn run(cmd: LimitCommand) -> Result<i32, Failure> {
    let (args, mode) = match cmd {
        LimitCommand::Script(a) => return print_script(&a),
        LimitCommand::Check(a) => (a, Mode::Check),
        LimitCommand::Peek(a) => (a, Mode::Peek),
        LimitCommand::Reset(a) => (a, Mode::Reset),
    };
    let rule = args.rule.build()?;
    let config = args
        .conn
        .config()?
        .set_response_timeout(args.timeout)
        .map_err(|e| Failure::flag("timeout", e.reason()))?;
    let handle = RedisHandle::connect(&config)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    let limiter = Limiter::builder(handle)
        .prefix(args.conn.prefix(DEFAULT_PREFIX))
        .map_err(|e| Failure::config(&e))?
        .timeout(args.timeout)
        .map_err(|e| Failure::config(&e))?
        .build();
    let key = args.key();
    let decision = match mode {
        Mode::Check => limiter.check(&rule, &key, args.cost).await,
        Mode::Peek => limiter.peek(&rule, &key).await,
        Mode::Reset => {
            limiter
                .reset(&rule, &key)
                .await
                .map_err(|e| Failure::new(e.to_string()))?;
            warn_on_eviction(&limiter).await;
            output::json(&serde_json::json!({ "reset": true, "key": args.key_shown() }))?;
            return Ok(0);
        }
    }
    .map_err(|e| Failure::new(e.to_string()))?;
    warn_on_eviction(&limiter).await;
    output::json(&decision)?;
    Ok(if decision.allowed { 0 } else { 1 })
}

/// Say on stderr when the server may evict limiter keys (or won't tell): the limiter's own
/// warning goes to the log, which the CLI hides by default. The check ran in the background
/// since the limiter was built; it is waited for briefly, never failing the command.
pub(crate) async fn warn_on_eviction(limiter: &Limiter) {
    let eviction = limiter
        .server_eviction_within(Duration::from_millis(500))
        .await;
    if let Some(e @ (Eviction::Possible { .. } | Eviction::Unknown { .. })) = eviction {
        output::warn(format_args!(
            "warning: {}; an evicted limiter key forgets what it admitted (the limiter \
             under-counts)",
            e.describe()
        ));
    }
}

enum Mode {
    Check,
    Peek,
    Reset,
}
