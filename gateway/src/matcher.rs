//! Which limits apply to a request: each descriptor matched against its domain's tree, then
//! `replaces` applied across the request's descriptors, as envoyproxy/ratelimit does.
//!
//! A descriptor's entries walk the tree one level per entry. At each level an entry finds its
//! descriptor by key, then by value: a literal value first, then the wildcards in file order,
//! then the key without a value (the "default key"). A limit applies only when the request's
//! last entry lands on a descriptor that has one: a request shallower or deeper than the
//! config matches nothing. A descriptor with a limit override takes the override, whatever the
//! config says (when the domain is known).

use std::borrow::Cow;

use crate::{
    config::{Children, Config, DescriptorConfig, Domain, How},
    key::KeyId,
    limit::{Limit, Rate},
    metrics::MetricKey,
    request::{Entry, RequestDescriptor, hits},
    unit::Unit,
};

/// What to do for a request: one [`DescriptorPlan`] per request descriptor, in order.
#[derive(Debug, Clone)]
pub struct Plan<'c> {
    domain: Option<&'c Domain>,
    descriptors: Vec<DescriptorPlan<'c>>,
}

impl<'c> Plan<'c> {
    /// The domain; `None` when unknown (every descriptor is then answered OK, nothing counted).
    pub fn domain(&self) -> Option<&'c Domain> {
        self.domain
    }

    /// One plan per request descriptor, in request order.
    pub fn descriptors(&self) -> &[DescriptorPlan<'c>] {
        &self.descriptors
    }

    /// Every limit to check, with the index of its descriptor: what one all-or-nothing script
    /// call charges. All their [`KeyId`]s share one hash tag.
    pub fn checks(&self) -> impl Iterator<Item = (usize, &DescriptorPlan<'c>, &Applied<'c>)> {
        self.descriptors
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.limits.iter().map(move |l| (i, d, l)))
    }
}

/// How a descriptor is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// OK, without `current_limit`: nothing matched, the domain is unknown, or every matched
    /// limit was replaced.
    NoLimit,
    /// OK with remaining 4294967295 (`unlimited: true`); nothing counted.
    Unlimited,
    /// Check [`DescriptorPlan::limits`].
    Check,
}

/// What applies to one request descriptor.
#[derive(Debug, Clone)]
pub struct DescriptorPlan<'c> {
    matched: Option<&'c DescriptorConfig>,
    unlimited: bool,
    limits: Vec<Applied<'c>>,
    replaced: Vec<Applied<'c>>,
    key_id: Option<KeyId>,
    metric: Option<MetricKey<'c>>,
    hits: u64,
}

impl<'c> DescriptorPlan<'c> {
    fn none(hits: u64) -> Self {
        Self {
            matched: None,
            unlimited: false,
            limits: Vec::new(),
            replaced: Vec::new(),
            key_id: None,
            metric: None,
            hits,
        }
    }

    /// How to answer.
    pub fn answer(&self) -> Answer {
        if self.unlimited {
            Answer::Unlimited
        } else if self.limits.is_empty() {
            Answer::NoLimit
        } else {
            Answer::Check
        }
    }

    /// The config descriptor that matched (`None` for no match, and for a limit override).
    pub fn matched(&self) -> Option<&'c DescriptorConfig> {
        self.matched
    }

    /// The limits to check (empty unless [`Answer::Check`]).
    pub fn limits(&self) -> &[Applied<'c>] {
        &self.limits
    }

    /// Matched limits dropped because another matched limit of the request `replaces` them
    /// (for metrics and debugging; they are not checked).
    pub fn replaced(&self) -> &[Applied<'c>] {
        &self.replaced
    }

    /// Shadow mode: count, report over-limit in metrics, answer OK. From the matched
    /// descriptor; never for an override.
    pub fn shadow_mode(&self) -> bool {
        self.matched.is_some_and(DescriptorConfig::shadow_mode)
    }

    /// The id the limits count under (`Some` when anything matched or was overridden; the
    /// limits of one descriptor share it, their rule names tell them apart).
    pub fn key_id(&self) -> Option<&KeyId> {
        self.key_id.as_ref()
    }

    /// The metric keys (`Some` when anything matched or was overridden).
    pub fn metric(&self) -> Option<&MetricKey<'c>> {
        self.metric.as_ref()
    }

    /// Units to charge: the descriptor's addend, else the request's (0 means 1); 0 checks
    /// without counting.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

/// Where an applied limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitSource {
    /// The config.
    Config,
    /// The request's per-descriptor override.
    Override,
}

/// One limit to check for a descriptor.
#[derive(Debug, Clone)]
pub struct Applied<'c> {
    rate: Cow<'c, Rate>,
    name: Option<&'c str>,
    source: LimitSource,
}

impl<'c> Applied<'c> {
    fn from_config(limit: &'c Limit) -> Option<Self> {
        Some(Self {
            rate: Cow::Borrowed(limit.rate()?),
            name: limit.name(),
            source: LimitSource::Config,
        })
    }

    /// The rate to count.
    pub fn rate(&self) -> &Rate {
        &self.rate
    }

    /// The limit's `name` (for `current_limit.name`); `None` for unnamed ones and overrides.
    pub fn name(&self) -> Option<&'c str> {
        self.name
    }

    /// Config or override.
    pub fn source(&self) -> LimitSource {
        self.source
    }

    /// What a response's `current_limit` says: requests per unit, the unit (`None`, i.e.
    /// UNKNOWN, for a window such as `90s`), and the name (empty when unnamed).
    pub fn current_limit(&self) -> (u32, Option<Unit>, &'c str) {
        (
            self.rate.requests_per_unit(),
            self.rate.unit(),
            self.name.unwrap_or(""),
        )
    }
}

impl Config {
    /// Plan a request: match each descriptor of `domain`, apply `replaces` across them.
    /// `hits_addend` is the request's (0, i.e. unset, means 1).
    pub fn plan<E: Entry>(
        &self,
        domain: &str,
        descriptors: &[RequestDescriptor<'_, E>],
        hits_addend: u64,
    ) -> Plan<'_> {
        match self.domain(domain) {
            Some(d) => d.plan(descriptors, hits_addend),
            None => Plan {
                domain: None,
                descriptors: descriptors
                    .iter()
                    .map(|d| DescriptorPlan::none(hits(hits_addend, d.hits_addend)))
                    .collect(),
            },
        }
    }
}

/// One step of a walk: the descriptor an entry landed on, and how.
struct Step<'c> {
    node: &'c DescriptorConfig,
    how: How,
}

impl Domain {
    /// The config descriptor whose limits apply to `entries` (ignoring overrides and
    /// `replaces`): `None` when nothing matches or the matched descriptor has no limit.
    pub fn find<E: Entry>(&self, entries: &[E]) -> Option<&DescriptorConfig> {
        walk(self.children(), entries).and_then(|steps| steps.last().map(|s| s.node))
    }

    /// Plan a request of this domain (see [`Config::plan`]).
    pub fn plan<E: Entry>(
        &self,
        descriptors: &[RequestDescriptor<'_, E>],
        hits_addend: u64,
    ) -> Plan<'_> {
        let mut plans: Vec<DescriptorPlan<'_>> = descriptors
            .iter()
            .map(|d| self.plan_descriptor(d, hits(hits_addend, d.hits_addend)))
            .collect();
        apply_replaces(&mut plans);
        Plan {
            domain: Some(self),
            descriptors: plans,
        }
    }

    fn plan_descriptor<E: Entry>(
        &self,
        descriptor: &RequestDescriptor<'_, E>,
        hits: u64,
    ) -> DescriptorPlan<'_> {
        let entries = descriptor.entries;
        if let Some(o) = descriptor.limit_override {
            return DescriptorPlan {
                limits: vec![Applied {
                    rate: Cow::Owned(Rate::fixed(o.requests_per_unit, o.unit)),
                    name: None,
                    source: LimitSource::Override,
                }],
                key_id: Some(KeyId::new(
                    self.name(),
                    entries.iter().map(|e| (e.key(), e.value(), false)),
                )),
                metric: Some(MetricKey {
                    rule: self.name(),
                    detailed: None,
                }),
                ..DescriptorPlan::none(hits)
            };
        }
        let Some(steps) = walk(self.children(), entries) else {
            return DescriptorPlan::none(hits);
        };
        let Some(node) = steps.last().map(|s| s.node) else {
            return DescriptorPlan::none(hits);
        };
        let unlimited = node.limits().iter().any(Limit::is_unlimited);
        fn shared<'c>(step: &Step<'c>) -> Option<&'c str> {
            (step.how == How::Wildcard && step.node.share_threshold())
                .then(|| step.node.value())
                .flatten()
        }
        let key_id = KeyId::new(
            self.name(),
            entries.iter().zip(&steps).map(|(e, s)| match shared(s) {
                Some(pattern) => (e.key(), pattern, true),
                None => (e.key(), e.value(), false),
            }),
        );
        DescriptorPlan {
            matched: Some(node),
            unlimited,
            limits: node
                .limits()
                .iter()
                .filter_map(Applied::from_config)
                .collect(),
            replaced: Vec::new(),
            key_id: Some(key_id),
            metric: Some(metric_key(self.name(), node, entries, &steps)),
            hits,
        }
    }
}

/// Walk the tree: `Some` with one step per entry when the last entry lands on a descriptor
/// with limits.
fn walk<'c, E: Entry>(mut level: &'c Children, entries: &[E]) -> Option<Vec<Step<'c>>> {
    let mut steps = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let (node, how) = level.find(entry.key(), entry.value())?;
        steps.push(Step { node, how });
        if i + 1 == entries.len() {
            return (!node.limits().is_empty()).then_some(steps);
        }
        if node.children().is_empty() {
            // The request is deeper than the config.
            return None;
        }
        level = node.children();
    }
    None
}

/// Envoy's `replaces`: every name that any matched config limit of the request replaces
/// (unlimited ones included) drops the named limits of every descriptor. An unlimited
/// descriptor stays unlimited.
fn apply_replaces(plans: &mut [DescriptorPlan<'_>]) {
    let replacing: Vec<&str> = plans
        .iter()
        .filter_map(|p| p.matched)
        .flat_map(|node| node.limits())
        .flat_map(|limit| limit.replaces())
        .map(String::as_str)
        .collect();
    if replacing.is_empty() {
        return;
    }
    for plan in plans {
        let (dropped, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.limits)
            .into_iter()
            .partition(|a| a.name.is_some_and(|n| replacing.contains(&n)));
        plan.limits = kept;
        plan.replaced = dropped;
    }
}

/// The metric keys of a match (see [`crate::MetricKey`]).
fn metric_key<'c, E: Entry>(
    domain: &str,
    node: &'c DescriptorConfig,
    entries: &[E],
    steps: &[Step<'_>],
) -> MetricKey<'c> {
    let segment = |out: &mut String, key: &str, value: &str| {
        out.push('.');
        out.push_str(key);
        if !value.is_empty() {
            out.push('_');
            out.push_str(value);
        }
    };
    let shared = |s: &Step<'_>| s.how == How::Wildcard && s.node.share_threshold();
    let mut detailed = domain.to_owned();
    if node.detailed_metric() {
        for (entry, step) in entries.iter().zip(steps) {
            let value = match shared(step) {
                true => step.node.value().unwrap_or(""),
                false => entry.value(),
            };
            segment(&mut detailed, entry.key(), value);
        }
    } else if steps
        .iter()
        .any(|s| s.node.value_to_metric() && s.how != How::Exact)
    {
        for (entry, step) in entries.iter().zip(steps) {
            let configured = step.node.value().unwrap_or("");
            let value = match step.how {
                How::Exact => entry.value(),
                How::Wildcard if shared(step) => configured,
                _ if step.node.value_to_metric() => entry.value(),
                _ => configured,
            };
            segment(&mut detailed, entry.key(), value);
        }
    }
    let detailed = (detailed != domain && detailed != node.path()).then_some(detailed);
    MetricKey {
        rule: node.path(),
        detailed,
    }
}
