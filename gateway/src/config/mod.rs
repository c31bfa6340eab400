//! The validated config: [`Config`] (every domain), [`Domain`] (one file's tree) and
//! [`DescriptorConfig`] (one node of it), and the lookup of a request entry among siblings.
//!
//! - `yaml`: one file's YAML into raw structs, with envoy's shape checks.
//! - `validate`: raw structs into the validated tree (units, limits, extensions, duplicates).
//! - `load`: files and directories into a [`Config`].

pub(crate) mod load;
mod validate;
pub(crate) mod yaml;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use crate::{ConfigError, limit::Limit, pattern::Wildcard};

/// Every domain's rules: what `sluice serve --config PATH` loads. Immutable once built; a
/// reload builds a new one (so a bad file leaves the old one in force).
#[derive(Debug, Clone, Default)]
pub struct Config {
    domains: BTreeMap<String, Domain>,
}

impl Config {
    /// Load PATH: one YAML file, or a directory whose `.yaml` / `.yml` files (not those of its
    /// subdirectories, not hidden ones) each configure one domain; other files are ignored.
    /// Files are read in name order, so errors are reported the same way every time.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        load::load(path.as_ref())
    }

    /// Build from one file's text; `file` names it in errors.
    pub fn from_yaml(file: impl Into<PathBuf>, text: &str) -> Result<Self, ConfigError> {
        Self::from_files([(file.into(), text)])
    }

    /// Build from several files' texts, each configuring one domain. Two files with the same
    /// domain are refused (envoy's default; it has no merging here).
    pub fn from_files<'t>(
        files: impl IntoIterator<Item = (PathBuf, &'t str)>,
    ) -> Result<Self, ConfigError> {
        let mut domains: BTreeMap<String, Domain> = BTreeMap::new();
        for (file, text) in files {
            let domain = validate::domain(file, text)?;
            if let Some(first) = domains.get(&domain.name) {
                return Err(ConfigError::DuplicateDomain {
                    file: domain.file,
                    domain: domain.name,
                    first: first.file.clone(),
                });
            }
            domains.insert(domain.name.clone(), domain);
        }
        Ok(Self { domains })
    }

    /// The domain named `name`; `None` for an unknown domain (whose requests are answered OK).
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.get(name)
    }

    /// Every domain, by name.
    pub fn domains(&self) -> impl ExactSizeIterator<Item = &Domain> {
        self.domains.values()
    }

    /// True when no file configured any domain (e.g. an empty directory).
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

/// One domain: the descriptors of one file.
#[derive(Debug, Clone)]
pub struct Domain {
    name: String,
    file: PathBuf,
    children: Children,
}

impl Domain {
    /// The domain's name (`domain:`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The top-level descriptors, in file order.
    pub fn descriptors(&self) -> &[DescriptorConfig] {
        &self.children.nodes
    }

    pub(crate) fn children(&self) -> &Children {
        &self.children
    }
}

/// How a descriptor's `value` matches a request entry's value.
#[derive(Debug, Clone)]
pub(crate) enum ValueMatch {
    /// No `value`: the "default key", matching any value of the key.
    Any,
    /// A literal value.
    Exact(String),
    /// A value with `*`s.
    Wildcard(Wildcard),
}

/// How a request entry found its descriptor: which of the three lookups succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    Exact,
    Wildcard,
    Default,
}

/// One configured descriptor: a key, an optional value (literal or with `*`), its limits and
/// options, and the descriptors nested under it.
#[derive(Debug, Clone)]
pub struct DescriptorConfig {
    key: String,
    value: ValueMatch,
    path: String,
    limits: Vec<Limit>,
    shadow_mode: bool,
    detailed_metric: bool,
    value_to_metric: bool,
    share_threshold: bool,
    metadata: Option<serde_json::Value>,
    children: Children,
}

impl DescriptorConfig {
    /// `key:`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `value:` as written (`None` for a default key); may hold `*`s.
    pub fn value(&self) -> Option<&str> {
        match &self.value {
            ValueMatch::Any => None,
            ValueMatch::Exact(v) => Some(v),
            ValueMatch::Wildcard(w) => Some(w.as_str()),
        }
    }

    /// Envoy's composite path: `domain.key_value.key`, one segment per level. Bounded by the
    /// config, hence the metrics label for this descriptor's limits.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The limits: none (the node only groups nested descriptors), one (`rate_limit`, possibly
    /// unlimited), or several (`rate_limits`, never unlimited).
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// `shadow_mode: true`: count, report over-limit in metrics, answer OK.
    pub fn shadow_mode(&self) -> bool {
        self.shadow_mode
    }

    /// `detailed_metric: true` (see [`crate::MetricKey`]).
    pub fn detailed_metric(&self) -> bool {
        self.detailed_metric
    }

    /// `value_to_metric: true` (see [`crate::MetricKey`]).
    pub fn value_to_metric(&self) -> bool {
        self.value_to_metric
    }

    /// `share_threshold: true`: every value matching this wildcard shares one counter.
    pub fn share_threshold(&self) -> bool {
        self.share_threshold
    }

    /// `metadata:`, for a response's dynamic metadata, as JSON.
    pub fn metadata(&self) -> Option<&serde_json::Value> {
        self.metadata.as_ref()
    }

    /// The nested descriptors, in file order.
    pub fn descriptors(&self) -> &[DescriptorConfig] {
        &self.children.nodes
    }

    pub(crate) fn children(&self) -> &Children {
        &self.children
    }

    pub(crate) fn wildcard(&self) -> Option<&Wildcard> {
        match &self.value {
            ValueMatch::Wildcard(w) => Some(w),
            _ => None,
        }
    }
}

/// Sibling descriptors, indexed for lookup by key, then value.
#[derive(Debug, Clone, Default)]
pub(crate) struct Children {
    nodes: Vec<DescriptorConfig>,
    by_key: HashMap<String, KeyGroup>,
}

/// The siblings sharing one key.
#[derive(Debug, Clone, Default)]
struct KeyGroup {
    exact: HashMap<String, usize>,
    /// In file order: the first that matches wins, as in envoy.
    wildcards: Vec<usize>,
    default: Option<usize>,
}

impl Children {
    /// The descriptor an entry matches, as envoy looks it up: a literal value first, then the
    /// wildcards in file order, then the key without a value.
    pub(crate) fn find(&self, key: &str, value: &str) -> Option<(&DescriptorConfig, How)> {
        let group = self.by_key.get(key)?;
        let index = match group.exact.get(value) {
            Some(&i) => Some((i, How::Exact)),
            None => group
                .wildcards
                .iter()
                .copied()
                .find(|&i| self.nodes[i].wildcard().is_some_and(|w| w.matches(value)))
                .map(|i| (i, How::Wildcard))
                .or(group.default.map(|i| (i, How::Default))),
        };
        index.map(|(i, how)| (&self.nodes[i], how))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Add a node (its composite key was checked unique by the caller).
    fn push(&mut self, node: DescriptorConfig) {
        let index = self.nodes.len();
        let group = self.by_key.entry(node.key.clone()).or_default();
        match &node.value {
            ValueMatch::Any => group.default = Some(index),
            ValueMatch::Exact(v) => {
                group.exact.insert(v.clone(), index);
            }
            ValueMatch::Wildcard(w) => {
                // Envoy finds a wildcard node by its own text in the literal lookup too.
                group.exact.insert(w.as_str().to_owned(), index);
                group.wildcards.push(index);
            }
        }
        self.nodes.push(node);
    }
}
