//! Broadcast over Redis pub/sub: at-most-once, to whoever is connected at the time.

use std::{
    fmt,
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use sluice_shared::{ConfigError, Keyspace, RedisConfig, RedisHandle, Topology};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    backoff::{Backoff, Jitter},
    codec::{Codec, JsonCodec},
    error::DispatchError,
};

/// Publishes typed messages to pub/sub channels. Cheap to clone.
///
/// Delivery is at-most-once: a message reaches the subscribers connected at that moment, and
/// is lost for a subscriber that is disconnected (or reconnecting) then. Use a topic
/// ([`crate::Producer`]) for anything that must arrive.
pub struct Publisher<T, C = JsonCodec> {
    redis: RedisHandle,
    keyspace: Keyspace,
    codec: Arc<C>,
    _messages: PhantomData<fn(&T)>,
}

impl<T, C> Clone for Publisher<T, C> {
    fn clone(&self) -> Self {
        Self {
            redis: self.redis.clone(),
            keyspace: self.keyspace.clone(),
            codec: self.codec.clone(),
            _messages: PhantomData,
        }
    }
}

impl<T, C> fmt::Debug for Publisher<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("prefix", &self.keyspace.prefix())
            .finish()
    }
}

/// The Redis channel name of `channel`: `<prefix>:chan:<channel>` (patterns likewise), so
/// deployments sharing a server don't hear each other.
fn full_channel(keyspace: &Keyspace, channel: &str) -> String {
    format!("{}:chan:{channel}", keyspace.prefix())
}

impl<T: Serialize, C: Codec> Publisher<T, C> {
    pub(crate) fn new(redis: RedisHandle, keyspace: Keyspace, codec: C) -> Self {
        Self {
            redis,
            keyspace,
            codec: Arc::new(codec),
            _messages: PhantomData,
        }
    }

    /// Publish `message` on `channel`. Returns the receiver count Redis reports: on a Cluster,
    /// only the clients of the node that took the `PUBLISH` (the message still reaches every
    /// node's subscribers).
    pub async fn publish(&self, channel: &str, message: &T) -> Result<u64, DispatchError> {
        let payload = self.codec.encode(message).map_err(DispatchError::Encode)?;
        let mut conn = self.redis.clone();
        let receivers: u64 = redis::cmd("PUBLISH")
            .arg(full_channel(&self.keyspace, channel))
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        Ok(receivers)
    }
}

/// One message received by a [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message<T> {
    /// The channel it was published on (without the keyspace prefix).
    pub channel: String,
    /// The pattern that matched, for pattern subscriptions (without the prefix).
    pub pattern: Option<String>,
    /// The decoded message.
    pub payload: T,
}

/// What to subscribe to.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    channels: Vec<String>,
    patterns: Vec<String>,
    buffer: Option<usize>,
}

impl SubscribeOptions {
    /// Nothing yet; add channels and patterns.
    pub fn new() -> Self {
        Self::default()
    }

    /// Listen on `channel`.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channels.push(channel.into());
        self
    }

    /// Listen on every channel matching the glob `pattern` (`orders.*`).
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// Messages buffered between the connection and [`Subscription::recv`]: 1 to 1,000,000
    /// (default 1024). A full buffer stops reading the socket; Redis then buffers, and past its
    /// `client-output-buffer-limit` drops the connection (messages lost, then resubscribed).
    pub fn buffer(mut self, messages: usize) -> Result<Self, ConfigError> {
        if messages == 0 || messages > 1_000_000 {
            return Err(ConfigError::new("buffer", "must be 1 to 1000000"));
        }
        self.buffer = Some(messages);
        Ok(self)
    }
}

#[derive(Debug)]
struct Status {
    /// Bumped on every successful (re)subscribe; 0 before the first.
    subscribed: watch::Sender<u64>,
    connected: std::sync::atomic::AtomicBool,
    reconnects: AtomicU64,
}

/// A live subscription: a background task holds its own pub/sub connection (never the shared
/// one), and after a disconnect reconnects with backoff and subscribes again to everything.
/// Messages published while it was away are lost (at-most-once).
///
/// Dropping the subscription, or cancelling the token given to
/// [`crate::Dispatcher::subscribe`], ends the task.
///
/// It is also a [`Stream`] (the `futures` / `tokio-stream` trait) of the same items as
/// [`Subscription::recv`]: `Err` for a message that did not decode, the end once the
/// subscription is cancelled.
///
/// ```no_run
/// # async fn demo(dispatcher: sluice_dispatcher::Dispatcher) {
/// use futures_util::StreamExt;
/// use sluice_dispatcher::SubscribeOptions;
/// use tokio_util::sync::CancellationToken;
///
/// let subscription = dispatcher
///     .subscribe::<String>(SubscribeOptions::new().channel("news"), CancellationToken::new());
/// let first_ten: Vec<String> = subscription
///     .filter_map(|m| async move { m.ok().map(|m| m.payload) })
///     .take(10)
///     .collect()
///     .await;
/// # let _ = first_ten;
/// # }
/// ```
pub struct Subscription<T> {
    rx: mpsc::Receiver<Result<Message<T>, DispatchError>>,
    status: Arc<Status>,
    stop: CancellationToken,
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("status", &self.status)
            .finish()
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl<T> Subscription<T> {
    /// The next message; `Err` for a message that did not decode (the subscription goes on);
    /// `None` once the subscription has ended (cancelled).
    pub async fn recv(&mut self) -> Option<Result<Message<T>, DispatchError>> {
        self.rx.recv().await
    }

    /// True while subscribed on a live connection.
    pub fn is_connected(&self) -> bool {
        self.status.connected.load(Ordering::Acquire)
    }

    /// How many times the connection was re-established after a loss.
    pub fn reconnects(&self) -> u64 {
        self.status.reconnects.load(Ordering::Relaxed)
    }

    /// How many times the subscriptions were (re)established, 1 after the first subscribe.
    pub fn subscribed_count(&self) -> u64 {
        *self.status.subscribed.borrow()
    }

    /// Wait until the subscriptions have been established at least `count` times (1: the
    /// first subscribe; 2: after one reconnect), or until `timeout`. Returns whether they were.
    pub async fn wait_subscribed(&self, count: u64, timeout: Duration) -> bool {
        let mut rx = self.status.subscribed.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl<T> Stream for Subscription<T> {
    type Item = Result<Message<T>, DispatchError>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        // The receiver is `Unpin`, and so is the subscription.
        self.get_mut().rx.poll_recv(cx)
    }
}

/// Pause before reconnecting after `failures` failed attempts (25 ms doubling up to 2 s).
const RECONNECT_BACKOFF: Backoff = Backoff::new(
    Duration::from_millis(25),
    Duration::from_secs(2),
    Jitter::Equal,
);

/// How often a live subscription pings its server, to notice a dead connection.
const HEALTH_CHECK: Duration = Duration::from_secs(2);

pub(crate) fn subscribe<T, C>(
    config: &RedisConfig,
    keyspace: &Keyspace,
    options: SubscribeOptions,
    codec: C,
    shutdown: CancellationToken,
) -> Subscription<T>
where
    T: DeserializeOwned + Send + 'static,
    C: Codec,
{
    // Classic PUBLISH is broadcast to every node of a Cluster, so one plain connection to any
    // node hears everything; on failure the next seed node is tried.
    let urls = match config.topology() {
        Topology::Cluster { urls } => urls.clone(),
        Topology::Standalone { url } => vec![url.clone()],
        _ => Vec::new(),
    };
    let (tx, rx) = mpsc::channel(options.buffer.unwrap_or(1024));
    let (subscribed, _) = watch::channel(0);
    let status = Arc::new(Status {
        subscribed,
        connected: false.into(),
        reconnects: AtomicU64::new(0),
    });
    let stop = shutdown.child_token();
    let task = SubscriberTask {
        urls,
        connect_timeout: config.connect_timeout(),
        prefix: format!("{}:chan:", keyspace.prefix()),
        channels: options
            .channels
            .iter()
            .map(|c| full_channel(keyspace, c))
            .collect(),
        patterns: options
            .patterns
            .iter()
            .map(|p| full_channel(keyspace, p))
            .collect(),
        codec,
        tx,
        status: status.clone(),
        stop: stop.clone(),
    };
    tokio::spawn(task.run());
    Subscription { rx, status, stop }
}

struct SubscriberTask<T, C> {
    urls: Vec<String>,
    connect_timeout: Duration,
    prefix: String,
    channels: Vec<String>,
    patterns: Vec<String>,
    codec: C,
    tx: mpsc::Sender<Result<Message<T>, DispatchError>>,
    status: Arc<Status>,
    stop: CancellationToken,
}

impl<T: DeserializeOwned + Send + 'static, C: Codec> SubscriberTask<T, C> {
    async fn connect(&self, url: &str) -> Result<redis::aio::PubSub, DispatchError> {
        let client = redis::Client::open(url)?;
        let setup = async {
            let mut pubsub = client.get_async_pubsub().await?;
            if !self.channels.is_empty() {
                pubsub.subscribe(&self.channels).await?;
            }
            if !self.patterns.is_empty() {
                pubsub.psubscribe(&self.patterns).await?;
            }
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(self.connect_timeout * 2, setup).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(sluice_shared::RedisError::Timeout(self.connect_timeout * 2).into()),
        }
    }

    fn strip(&self, name: &str) -> String {
        name.strip_prefix(&self.prefix).unwrap_or(name).to_owned()
    }

    async fn run(self) {
        if self.urls.is_empty() {
            return;
        }
        let mut failures: u32 = 0;
        let mut node = 0usize;
        let mut ever_connected = false;
        loop {
            if self.stop.is_cancelled() || self.tx.is_closed() {
                return;
            }
            let url = &self.urls[node % self.urls.len()];
            match self.connect(url).await {
                Ok(pubsub) => {
                    failures = 0;
                    if ever_connected {
                        self.status.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_connected = true;
                    self.status.connected.store(true, Ordering::Release);
                    self.status.subscribed.send_modify(|n| *n += 1);
                    let finished = self.pump(pubsub).await;
                    self.status.connected.store(false, Ordering::Release);
                    if finished {
                        return;
                    }
                    tracing::warn!(url, "pub/sub connection lost; resubscribing");
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    node = node.wrapping_add(1);
                    tracing::debug!(error = %e, failures, "pub/sub connect failed");
                }
            }
            let pause = RECONNECT_BACKOFF.delay(failures);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Forward messages until the connection dies (false) or the subscription ends (true).
    async fn pump(&self, pubsub: redis::aio::PubSub) -> bool {
        let (mut sink, mut stream) = pubsub.split();
        let mut health = tokio::time::interval(HEALTH_CHECK);
        health.tick().await;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return true,
                _ = self.tx.closed() => return true,
                _ = health.tick() => {
                    let ping = tokio::time::timeout(
                        self.connect_timeout * 2,
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    if !matches!(ping, Ok(Ok(_))) {
                        return false;
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { return false };
                    let pattern = if msg.from_pattern() {
                        msg.get_pattern::<String>().ok().map(|p| self.strip(&p))
                    } else {
                        None
                    };
                    let item = self
                        .codec
                        .decode::<T>(msg.get_payload_bytes())
                        .map(|payload| Message {
                            channel: self.strip(msg.get_channel_name()),
                            pattern,
                            payload,
                        })
                        .map_err(DispatchError::Decode);
                    tokio::select! {
                        _ = self.stop.cancelled() => return true,
                        sent = self.tx.send(item) => if sent.is_err() { return true },
                    }
                }
            }
        }
    }
}
