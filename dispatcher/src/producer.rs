//! Publishing typed jobs to a topic.

use std::{fmt, marker::PhantomData, sync::Arc};

use redis::{Pipeline, Value};
use serde::Serialize;
use sluice_shared::{RedisError, RedisHandle};

use crate::{
    codec::{Codec, JsonCodec},
    error::DispatchError,
    job::{EnqueueOptions, Enqueued, Meta, When, new_job_id, unix_ms},
    metrics::{JobMetrics, ProducerMetrics},
    scripts,
    topic::{TopicConfig, TopicKeys},
};

/// Publishes jobs of type `T` to one topic. Cheap to clone; share it.
///
/// Every enqueue is one atomic script run (`lua/enqueue.lua`): the dedup check, then either the
/// `XADD` to the topic stream or the park in the delayed set. A batch is one pipelined round
/// trip.
pub struct Producer<T, C = JsonCodec> {
    redis: RedisHandle,
    topic: Arc<TopicConfig>,
    keys: Arc<TopicKeys>,
    codec: Arc<C>,
    metrics: ProducerMetrics,
    _jobs: PhantomData<fn(&T)>,
}

impl<T, C> Clone for Producer<T, C> {
    fn clone(&self) -> Self {
        Self {
            redis: self.redis.clone(),
            topic: self.topic.clone(),
            keys: self.keys.clone(),
            codec: self.codec.clone(),
            metrics: self.metrics.clone(),
            _jobs: PhantomData,
        }
    }
}

impl<T, C> fmt::Debug for Producer<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.topic.name())
            .finish()
    }
}

impl<T: Serialize, C: Codec> Producer<T, C> {
    pub(crate) fn new(redis: RedisHandle, topic: TopicConfig, keys: TopicKeys, codec: C) -> Self {
        Self {
            redis,
            topic: Arc::new(topic),
            keys: Arc::new(keys),
            codec: Arc::new(codec),
            metrics: ProducerMetrics::default(),
            _jobs: PhantomData,
        }
    }

    /// Count the jobs this producer writes in `metrics` (`sluice_jobs_enqueued_total`).
    /// Producers from a dispatcher built with [`crate::Dispatcher::with_metrics`] already do.
    pub fn with_metrics(mut self, metrics: &JobMetrics) -> Self {
        self.metrics = metrics.producer(self.topic.name());
        self
    }

    /// The topic this producer writes to.
    pub fn topic(&self) -> &TopicConfig {
        &self.topic
    }

    /// Enqueue one job to run now.
    pub async fn enqueue(&self, job: &T) -> Result<Enqueued, DispatchError> {
        self.enqueue_with(job, EnqueueOptions::default()).await
    }

    /// Enqueue one job with options (delay, dedup, retry override).
    pub async fn enqueue_with(
        &self,
        job: &T,
        options: EnqueueOptions,
    ) -> Result<Enqueued, DispatchError> {
        let prepared = self.prepare(job, &options)?;
        let mut conn = self.redis.clone();
        let reply: Value = match prepared.cmd.query_async(&mut conn).await {
            Ok(reply) => reply,
            // Nothing ran: load the script and send it once more.
            Err(e) if prepared.scripted && scripts::is_noscript(&e) => {
                scripts::load(&mut conn, &scripts::ENQUEUE).await?;
                prepared.cmd.query_async(&mut conn).await?
            }
            Err(e) => return Err(e.into()),
        };
        let enqueued = parse_reply(reply, prepared.job_id)?;
        self.metrics
            .enqueued(u64::from(enqueued.job_id().is_some()));
        Ok(enqueued)
    }

    /// Enqueue many jobs to run now, in one pipelined round trip (not atomic as a whole: on an
    /// error, some jobs may have been written; each job is still written whole or not at all).
    pub async fn enqueue_batch<'a, I>(&self, jobs: I) -> Result<Vec<Enqueued>, DispatchError>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        self.enqueue_batch_with(jobs.into_iter().map(|j| (j, EnqueueOptions::default())))
            .await
    }

    /// Enqueue many jobs, each with its own options, in one pipelined round trip.
    pub async fn enqueue_batch_with<'a, I>(&self, jobs: I) -> Result<Vec<Enqueued>, DispatchError>
    where
        I: IntoIterator<Item = (&'a T, EnqueueOptions)>,
        T: 'a,
    {
        let jobs = jobs.into_iter();
        let mut prepared = Vec::with_capacity(jobs.size_hint().0);
        for (job, options) in jobs {
            prepared.push(self.prepare(job, &options)?);
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let scripted = prepared.iter().any(|p| p.scripted);
        if scripted {
            // One script run per job, so that a NOSCRIPT (flushed or restarted server) means
            // that none of the batch ran and sending it again cannot duplicate jobs.
            for p in &mut prepared {
                if !p.scripted {
                    let options = EnqueueOptions::default();
                    p.cmd = self.script_cmd(&p.meta, &p.payload, &options, &p.job_id);
                    p.scripted = true;
                }
            }
        }
        let mut pipe = Pipeline::with_capacity(prepared.len());
        for p in &mut prepared {
            pipe.add_command(std::mem::replace(&mut p.cmd, redis::Cmd::new()));
        }
        let mut conn = self.redis.clone();
        let replies: Vec<Value> = if scripted {
            // EVALSHA in a pipeline does not reload the script by itself. Every command of the
            // batch is the same script on the topic's one node, so a NOSCRIPT means none of the
            // batch ran: load the script and send the batch once more.
            match pipe.query_async(&mut conn).await {
                Ok(replies) => replies,
                Err(e) if scripts::is_noscript(&e) => {
                    scripts::load(&mut conn, &scripts::ENQUEUE).await?;
                    pipe.query_async(&mut conn).await?
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            pipe.query_async(&mut conn).await?
        };
        if replies.len() != prepared.len() {
            return Err(RedisError::Protocol(format!(
                "{} replies to {} enqueues",
                replies.len(),
                prepared.len()
            ))
            .into());
        }
        let enqueued: Vec<Enqueued> = replies
            .into_iter()
            .zip(prepared)
            .map(|(reply, p)| parse_reply(reply, p.job_id))
            .collect::<Result<_, _>>()?;
        let written = enqueued.iter().filter(|e| e.job_id().is_some()).count();
        self.metrics.enqueued(written as u64);
        Ok(enqueued)
    }

    /// Encode a job and build the command that writes it: a plain `XADD` for a job due now
    /// without a dedup key (atomic by itself, no script needed), `lua/enqueue.lua` otherwise.
    pub(crate) fn prepare(
        &self,
        job: &T,
        options: &EnqueueOptions,
    ) -> Result<Prepared, DispatchError> {
        options.check()?;
        let payload = self.codec.encode(job).map_err(DispatchError::Encode)?;
        if payload.len() > self.topic.max_payload_bytes() {
            return Err(DispatchError::PayloadTooLarge {
                size: payload.len(),
                limit: self.topic.max_payload_bytes(),
            });
        }
        let job_id = new_job_id();
        let meta = Meta {
            id: job_id.clone(),
            attempts: 0,
            enqueued_at_ms: unix_ms(std::time::SystemTime::now()),
            retry: options.retry.clone(),
        }
        .to_json();
        let plain = matches!(options.when, When::Now) && options.dedup.is_none();
        let cmd = if plain {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(self.keys.stream.as_slice())
                .arg("*")
                .arg("meta")
                .arg(meta.as_bytes())
                .arg("payload")
                .arg(payload.as_slice());
            cmd
        } else {
            self.script_cmd(&meta, &payload, options, &job_id)
        };
        Ok(Prepared {
            cmd,
            scripted: !plain,
            meta,
            payload,
            job_id,
        })
    }

    /// `EVALSHA` of `lua/enqueue.lua` for one job.
    fn script_cmd(
        &self,
        meta: &str,
        payload: &[u8],
        options: &EnqueueOptions,
        job_id: &str,
    ) -> redis::Cmd {
        let (mode, ms) = match options.when {
            When::Now => ("now", 0),
            When::At(at) => ("at", unix_ms(at)),
            When::In(delay) => ("in", u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
        };
        let dedup = options.dedup.as_ref().map(|(key, ttl)| {
            (
                self.keys.dedup(key),
                // At least 1 ms and at most `MAX_DELAY`: `EnqueueOptions::check` ran.
                u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            )
        });
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(scripts::ENQUEUE.get_hash())
            .arg(if dedup.is_some() { 3 } else { 2 })
            .arg(self.keys.stream.as_slice())
            .arg(self.keys.delayed.as_slice());
        if let Some((key, _)) = &dedup {
            cmd.arg(key.as_slice());
        }
        cmd.arg(meta.as_bytes())
            .arg(payload)
            .arg(mode)
            .arg(ms)
            .arg(dedup.map_or(0, |(_, ttl)| ttl))
            .arg(job_id);
        cmd
    }
}

/// One job ready to send.
pub(crate) struct Prepared {
    pub(crate) cmd: redis::Cmd,
    /// Whether `cmd` runs `lua/enqueue.lua` (and so may meet `NOSCRIPT`).
    scripted: bool,
    meta: String,
    payload: Vec<u8>,
    job_id: String,
}

fn parse_reply(reply: Value, job_id: String) -> Result<Enqueued, DispatchError> {
    // A plain XADD answers with the entry id.
    if let Value::BulkString(id) = &reply {
        return match std::str::from_utf8(id) {
            Ok(id) => Ok(Enqueued::Queued {
                job_id,
                entry_id: id.to_owned(),
            }),
            Err(_) => Err(RedisError::Protocol("XADD reply is not an entry id".to_owned()).into()),
        };
    }
    let (kind, value): (String, String) = redis::from_redis_value(reply)
        .map_err(|e| RedisError::Protocol(format!("enqueue reply: {e}")))?;
    match kind.as_str() {
        "queued" => Ok(Enqueued::Queued {
            job_id,
            entry_id: value,
        }),
        "delayed" => match value.parse() {
            Ok(due_ms) => Ok(Enqueued::Delayed { job_id, due_ms }),
            Err(_) => Err(RedisError::Protocol(format!(
                "enqueue reply: due time {value:?} is not unix milliseconds"
            ))
            .into()),
        },
        "duplicate" => Ok(Enqueued::Duplicate {
            existing_job_id: value,
        }),
        other => Err(RedisError::Protocol(format!("enqueue reply kind {other:?}")).into()),
    }
}
