//! Measurement helpers shared by the load tests: Redis CPU from `INFO`, this process' CPU,
//! latency histograms, the progress bar, and report printing.

use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sluice_shared::{RedisConfig, Topology};

use crate::Failure;

/// CPU seconds (user + sys) Redis has used, summed over every node of the deployment, read
/// from `INFO cpu` on a direct connection to each node.
#[derive(Debug)]
pub(crate) struct RedisCpu {
    nodes: Vec<redis::Client>,
    /// Each node's address (`host:port`), in the order of `nodes`.
    addrs: Vec<String>,
}

impl RedisCpu {
    /// Every node of `config` (for a cluster, the masters listed by `CLUSTER NODES`).
    pub(crate) async fn connect(config: &RedisConfig) -> Result<Self, Failure> {
        let seeds: Vec<String> = match config.topology() {
            Topology::Standalone { url } => vec![url.clone()],
            Topology::Cluster { urls } => urls.clone(),
            _ => return Err(Failure::new("unsupported topology for CPU sampling")),
        };
        let mut nodes = Vec::new();
        let mut addrs = Vec::new();
        if config.is_cluster() {
            let seed =
                redis::Client::open(seeds[0].as_str()).map_err(|e| Failure::new(e.to_string()))?;
            let mut c = seed
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| Failure::new(e.to_string()))?;
            let listing: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut c)
                .await
                .map_err(|e| Failure::new(e.to_string()))?;
            for line in listing.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() > 2 && fields[2].contains("master") {
                    let addr = fields[1].split('@').next().unwrap_or_default();
                    let url = format!("redis://{addr}");
                    addrs.push(addr.to_owned());
                    nodes.push(
                        redis::Client::open(url.as_str())
                            .map_err(|e| Failure::new(e.to_string()))?,
                    );
                }
            }
        } else {
            for url in seeds {
                addrs.push(
                    url.split("://")
                        .nth(1)
                        .unwrap_or(&url)
                        .trim_end_matches('/')
                        .to_owned(),
                );
                nodes.push(
                    redis::Client::open(url.as_str()).map_err(|e| Failure::new(e.to_string()))?,
                );
            }
        }
        Ok(Self { nodes, addrs })
    }

    /// Each node's address (`host:port`), in the order [`CpuSample::per_node_since`] uses.
    pub(crate) fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Total CPU seconds used so far (user + sys, main thread and children).
    pub(crate) async fn seconds(&self) -> Result<f64, Failure> {
        self.sum_info("cpu", parse_cpu).await
    }

    /// Bytes of memory Redis uses (`used_memory` of `INFO memory`), summed over every node.
    pub(crate) async fn used_memory(&self) -> Result<u64, Failure> {
        let bytes = self
            .sum_info("memory", |info| {
                info.lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| *k == "used_memory")
                    .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            })
            .await?;
        Ok(bytes as u64)
    }

    /// `INFO <section>` of every node, each read with `value`, summed.
    async fn sum_info(&self, section: &str, value: impl Fn(&str) -> f64) -> Result<f64, Failure> {
        let mut total = 0.0;
        for node in &self.nodes {
            total += value(&info(node, section).await?);
        }
        Ok(total)
    }

    /// Every node's run id and CPU seconds, to subtract from a later sample with
    /// [`CpuSample::since`], which notices a restart in between.
    pub(crate) async fn sample(&self) -> Result<CpuSample, Failure> {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let text = info(node, "server").await? + &info(node, "cpu").await?;
            let run_id = text
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| *k == "run_id")
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default();
            nodes.push((run_id, parse_cpu(&text)));
        }
        Ok(CpuSample { nodes })
    }
}

/// Longest wait for one node's `INFO` (a frozen server must not hang the report).
const INFO_TIMEOUT: Duration = Duration::from_secs(2);

/// `INFO <section>` of one node, within [`INFO_TIMEOUT`].
async fn info(node: &redis::Client, section: &str) -> Result<String, Failure> {
    let read = async {
        let mut c = node.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg(section)
            .query_async::<String>(&mut c)
            .await
    };
    match tokio::time::timeout(INFO_TIMEOUT, read).await {
        Ok(reply) => reply.map_err(|e| Failure::new(e.to_string())),
        Err(_) => Err(Failure::new(format!(
            "INFO {section}: no answer within {INFO_TIMEOUT:?}"
        ))),
    }
}

/// Every node's `run_id` and CPU seconds at one moment.
#[derive(Debug, Clone)]
pub(crate) struct CpuSample {
    nodes: Vec<(String, f64)>,
}

impl CpuSample {
    /// CPU seconds the nodes used since `before`, or why that can't be known: a node restarted
    /// in between (new run id, or counters that went backwards: `INFO` starts again from 0),
    /// or the nodes are not the same ones.
    pub(crate) fn since(&self, before: &CpuSample) -> Result<f64, String> {
        if self.nodes.len() != before.nodes.len() {
            return Err("the Redis nodes changed during the run".into());
        }
        let mut total = 0.0;
        for ((id, after), (id_before, at_start)) in self.nodes.iter().zip(&before.nodes) {
            if id != id_before || after < at_start {
                return Err(
                    "Redis restarted during the run (its INFO CPU counters started again from 0)"
                        .into(),
                );
            }
            total += after - at_start;
        }
        Ok(total)
    }
}

impl CpuSample {
    /// CPU seconds each node used since `before` (in [`RedisCpu::addrs`] order), or why that
    /// can't be known (as [`CpuSample::since`]).
    pub(crate) fn per_node_since(&self, before: &CpuSample) -> Result<Vec<f64>, String> {
        self.since(before)?;
        Ok(self
            .nodes
            .iter()
            .zip(&before.nodes)
            .map(|((_, after), (_, at_start))| after - at_start)
            .collect())
    }
}

/// Sum of `used_cpu_sys` and `used_cpu_user` in an `INFO cpu` reply.
pub(crate) fn parse_cpu(info: &str) -> f64 {
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// CPU time this process has used so far (all threads, user + sys).
pub(crate) fn process_cpu() -> Duration {
    cpu_time::ProcessTime::try_now()
        .map(|t| t.as_duration())
        .unwrap_or_default()
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub(crate) fn histogram() -> Result<Histogram<u64>, Failure> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| Failure::new(format!("histogram: {e}")))
}

/// Latency percentiles for reports, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) mean: f64,
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// A progress bar on stderr that draws only when stderr is a terminal (quiet when piped).
pub(crate) fn progress(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// Print a report: pretty JSON-free table for humans, or one JSON object with `--json`.
pub(crate) fn emit<T: Serialize>(
    report: &T,
    json: bool,
    table: &[(String, String)],
) -> Result<(), Failure> {
    if json {
        crate::output::json(report)?;
    } else {
        let width = table.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in table {
            crate::output::line(format_args!("{k:<width$}  {v}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(nodes: &[(&str, f64)]) -> CpuSample {
        CpuSample {
            nodes: nodes.iter().map(|(id, s)| (id.to_string(), *s)).collect(),
        }
    }

    #[test]
    fn cpu_since_notices_a_restart() {
        let before = sample(&[("a", 10.0), ("b", 5.0)]);
        let after = sample(&[("a", 10.5), ("b", 5.25)]);
        assert_eq!(after.since(&before), Ok(0.75));
        // A new run id, or counters that went back: INFO started again from 0.
        let restarted = sample(&[("a", 10.5), ("c", 7.0)]);
        assert!(restarted.since(&before).unwrap_err().contains("restarted"));
        let reset = sample(&[("a", 0.1), ("b", 5.25)]);
        assert!(reset.since(&before).unwrap_err().contains("restarted"));
        let fewer = sample(&[("a", 11.0)]);
        assert!(fewer.since(&before).unwrap_err().contains("nodes changed"));
    }
}
