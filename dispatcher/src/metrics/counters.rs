//! [`JobMetrics`]: what producers and workers count as it happens.

use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Buckets of `sluice_jobs_handler_duration_seconds`: 100 us to 5 min.
const HANDLER_BUCKETS: &[f64] = &[
    0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 300.0,
];

/// The dispatcher's event metrics, registered once into the caller's `Registry`; hand the
/// same value (it is a cheap clone) to every producer and worker that should count into it,
/// or let a [`crate::Dispatcher`] built with [`crate::Dispatcher::with_metrics`] do it.
///
/// | metric | type | labels | what |
/// |---|---|---|---|
/// | `sluice_jobs_enqueued_total` | counter | `topic` | jobs written (queued or delayed; duplicates refused by dedup are not) |
/// | `sluice_jobs_completed_total` | counter | `topic`, `group` | jobs whose handler succeeded and whose `XACK` landed |
/// | `sluice_jobs_failed_total` | counter | `topic`, `group` | handler runs that failed (error or panic), whatever came next |
/// | `sluice_jobs_retried_total` | counter | `topic`, `group` | failed attempts scheduled for a retry |
/// | `sluice_jobs_dead_lettered_total` | counter | `topic`, `group` | jobs moved to the dead letters (exhausted, fatal, decode, poison) |
/// | `sluice_jobs_reclaimed_total` | counter | `topic`, `group` | entries taken over from stalled consumers (`XAUTOCLAIM`) |
/// | `sluice_jobs_handler_duration_seconds` | histogram | `topic`, `group` | handler run time, successful or not |
/// | `sluice_jobs_in_flight` | gauge | `topic`, `group` | handlers running now |
///
/// ```
/// use prometheus::Registry;
/// use sluice_dispatcher::JobMetrics;
///
/// let registry = Registry::new();
/// let metrics = JobMetrics::register(&registry)?;
/// // Registering twice into one registry is refused.
/// assert!(JobMetrics::register(&registry).is_err());
/// # let _ = metrics;
/// # Ok::<(), prometheus::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct JobMetrics {
    enqueued: IntCounterVec,
    completed: IntCounterVec,
    failed: IntCounterVec,
    retried: IntCounterVec,
    dead_lettered: IntCounterVec,
    reclaimed: IntCounterVec,
    handler: HistogramVec,
    in_flight: IntGaugeVec,
}

impl JobMetrics {
    /// Create the metrics and register them into `registry` (never the global one). Fails if
    /// `registry` already holds metrics of these names.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let tg = &["topic", "group"];
        let enqueued = counter(
            "sluice_jobs_enqueued_total",
            "Jobs written to a topic (queued or delayed; dedup duplicates excluded).",
            &["topic"],
        )?;
        let completed = counter(
            "sluice_jobs_completed_total",
            "Jobs whose handler succeeded and whose acknowledgement landed.",
            tg,
        )?;
        let failed = counter(
            "sluice_jobs_failed_total",
            "Handler runs that failed (returned an error or panicked).",
            tg,
        )?;
        let retried = counter(
            "sluice_jobs_retried_total",
            "Failed attempts scheduled for a retry.",
            tg,
        )?;
        let dead_lettered = counter(
            "sluice_jobs_dead_lettered_total",
            "Jobs moved to the dead-letter stream (exhausted, fatal, decode, poison).",
            tg,
        )?;
        let reclaimed = counter(
            "sluice_jobs_reclaimed_total",
            "Entries taken over from stalled or dead consumers (XAUTOCLAIM).",
            tg,
        )?;
        let handler = HistogramVec::new(
            HistogramOpts::new(
                "sluice_jobs_handler_duration_seconds",
                "Time a handler ran, successful or not.",
            )
            .buckets(HANDLER_BUCKETS.to_vec()),
            tg,
        )?;
        registry.register(Box::new(handler.clone()))?;
        let in_flight = IntGaugeVec::new(
            Opts::new("sluice_jobs_in_flight", "Handlers running now."),
            tg,
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(Self {
            enqueued,
            completed,
            failed,
            retried,
            dead_lettered,
            reclaimed,
            handler,
            in_flight,
        })
    }

    /// The series of one producer (resolved once, so counting costs one atomic add).
    pub(crate) fn producer(&self, topic: &str) -> ProducerMetrics {
        ProducerMetrics(Some(self.enqueued.with_label_values(&[topic])))
    }

    /// The series of one worker.
    pub(crate) fn worker(&self, topic: &str, group: &str) -> WorkerMetrics {
        let l = &[topic, group];
        WorkerMetrics(Some(WorkerSeries {
            completed: self.completed.with_label_values(l),
            failed: self.failed.with_label_values(l),
            retried: self.retried.with_label_values(l),
            dead_lettered: self.dead_lettered.with_label_values(l),
            reclaimed: self.reclaimed.with_label_values(l),
            handler: self.handler.with_label_values(l),
            in_flight: self.in_flight.with_label_values(l),
        }))
    }
}

/// A producer's counter; counts nothing when the producer has no metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProducerMetrics(Option<IntCounter>);

impl ProducerMetrics {
    /// `n` jobs written.
    pub(crate) fn enqueued(&self, n: u64) {
        if let Some(c) = &self.0 {
            c.inc_by(n);
        }
    }
}

#[derive(Debug)]
struct WorkerSeries {
    completed: IntCounter,
    failed: IntCounter,
    retried: IntCounter,
    dead_lettered: IntCounter,
    reclaimed: IntCounter,
    handler: Histogram,
    in_flight: IntGauge,
}

/// A worker's series; counts nothing when the worker has no metrics.
#[derive(Debug, Default)]
pub(crate) struct WorkerMetrics(Option<WorkerSeries>);

impl WorkerMetrics {
    /// `n` jobs acknowledged after success.
    pub(crate) fn completed(&self, n: u64) {
        if let Some(s) = &self.0 {
            s.completed.inc_by(n);
        }
    }

    /// One handler run failed.
    pub(crate) fn failed(&self) {
        if let Some(s) = &self.0 {
            s.failed.inc();
        }
    }

    /// One retry scheduled.
    pub(crate) fn retried(&self) {
        if let Some(s) = &self.0 {
            s.retried.inc();
        }
    }

    /// One job dead-lettered.
    pub(crate) fn dead_lettered(&self) {
        if let Some(s) = &self.0 {
            s.dead_lettered.inc();
        }
    }

    /// One entry reclaimed.
    pub(crate) fn reclaimed(&self) {
        if let Some(s) = &self.0 {
            s.reclaimed.inc();
        }
    }

    /// A handler starts: in flight until the timer is dropped; its run time is recorded by
    /// [`HandlerTimer::finished`] (not when the run is abandoned at shutdown).
    pub(crate) fn handler_started(&self) -> HandlerTimer<'_> {
        if let Some(s) = &self.0 {
            s.in_flight.inc();
        }
        HandlerTimer {
            series: self.0.as_ref(),
            started: Instant::now(),
        }
    }
}

/// One running handler (see [`WorkerMetrics::handler_started`]).
#[derive(Debug)]
pub(crate) struct HandlerTimer<'a> {
    series: Option<&'a WorkerSeries>,
    started: Instant,
}

impl HandlerTimer<'_> {
    /// The handler returned (or panicked): record its run time.
    pub(crate) fn finished(self) {
        if let Some(s) = self.series {
            s.handler.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for HandlerTimer<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.series {
            s.in_flight.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn series_count_into_the_callers_registry_only() {
        let registry = Registry::new();
        let m = JobMetrics::register(&registry).unwrap();
        let w = m.worker("t", "g");
        w.completed(3);
        {
            let timer = w.handler_started();
            assert_eq!(m.in_flight.with_label_values(&["t", "g"]).get(), 1);
            timer.finished();
        }
        assert_eq!(m.in_flight.with_label_values(&["t", "g"]).get(), 0);
        m.producer("t").enqueued(2);
        assert_eq!(m.completed.with_label_values(&["t", "g"]).get(), 3);
        assert_eq!(m.enqueued.with_label_values(&["t"]).get(), 2);
        assert_eq!(
            m.handler.with_label_values(&["t", "g"]).get_sample_count(),
            1
        );
        assert!(
            !prometheus::gather()
                .iter()
                .any(|f| f.name().starts_with("sluice_jobs"))
        );
        // No metrics: nothing counted, nothing panics.
        WorkerMetrics::default().completed(1);
        ProducerMetrics::default().enqueued(1);
    }
}
