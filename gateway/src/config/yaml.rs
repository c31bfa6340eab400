//! Reading one file's YAML into raw structs: the shape checks envoy makes (known keys, string
//! keys, lists of mappings, types), with the place of each problem. Meaning (units, limits,
//! duplicates) is `validate`'s.

use serde_norway::{Mapping, Value};

use crate::error::{Problem, Shown};

/// A problem and where it is (see [`crate::ConfigError::Invalid`]).
pub(crate) type Located = (String, Problem);

/// One file: a domain and its descriptors.
#[derive(Debug)]
pub(crate) struct RawFile {
    pub(crate) domain: String,
    pub(crate) descriptors: Vec<RawDescriptor>,
}

/// One descriptor as written.
#[derive(Debug, Default)]
pub(crate) struct RawDescriptor {
    /// Where it is, for messages: its composite path, or `parent.descriptors[i]` when it has no key.
    pub(crate) at: String,
    pub(crate) key: String,
    /// `None` for no value or an empty one (envoy treats both as "no value").
    pub(crate) value: Option<String>,
    pub(crate) rate_limit: Option<RawLimit>,
    /// Sluice's extension: several limits on one descriptor.
    pub(crate) rate_limits: Option<Vec<RawLimit>>,
    pub(crate) descriptors: Vec<RawDescriptor>,
    pub(crate) shadow_mode: bool,
    pub(crate) quota_mode: bool,
    pub(crate) detailed_metric: bool,
    pub(crate) value_to_metric: bool,
    pub(crate) share_threshold: bool,
    pub(crate) metadata: Option<serde_json::Value>,
}

/// One `rate_limit` (or one item of `rate_limits`) as written.
#[derive(Debug, Default)]
pub(crate) struct RawLimit {
    /// `rate_limit` or `rate_limits[i]`, for messages.
    pub(crate) field: String,
    pub(crate) requests_per_unit: Option<u32>,
    pub(crate) unit: Option<String>,
    pub(crate) unlimited: bool,
    pub(crate) name: Option<String>,
    pub(crate) replaces: Vec<Option<String>>,
    pub(crate) algorithm: Option<String>,
    pub(crate) window: Option<String>,
    pub(crate) granularity: Option<String>,
    pub(crate) burst: Option<u64>,
}

const ROOT_KEYS: &[&str] = &["domain", "descriptors"];
const DESCRIPTOR_KEYS: &[&str] = &[
    "key",
    "value",
    "rate_limit",
    "rate_limits",
    "descriptors",
    "shadow_mode",
    "quota_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "metadata",
];
const LIMIT_KEYS: &[&str] = &[
    "unit",
    "requests_per_unit",
    "unlimited",
    "name",
    "replaces",
    "algorithm",
    "window",
    "granularity",
    "burst",
];
const REPLACES_KEYS: &[&str] = &["name"];

/// Parse a file's text. `Err(Ok(message))` is a YAML syntax error (or a top level that is not
/// a mapping); `Err(Err(located))` a shape problem.
pub(crate) fn parse(text: &str) -> Result<RawFile, Result<String, Located>> {
    let mut value: Value = serde_norway::from_str(text).map_err(|e| Ok(e.to_string()))?;
    value.apply_merge().map_err(|e| Ok(e.to_string()))?;
    let root = match value {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        other => {
            return Err(Ok(format!(
                "the top level must be a mapping (domain, descriptors), found {}",
                Shown(&other)
            )));
        }
    };
    read_root(&root).map_err(Err)
}

/// A mapping's entries by string key, refusing non-string and unknown keys.
struct Fields<'a> {
    at: &'a str,
    map: &'a Mapping,
}

impl<'a> Fields<'a> {
    fn new(at: &'a str, map: &'a Mapping, known: &[&str]) -> Result<Self, Located> {
        for key in map.keys() {
            let Value::String(key) = key else {
                return Err((at.to_owned(), Problem::NonStringKey(Shown(key).to_string())));
            };
            if !known.contains(&key.as_str()) {
                return Err((at.to_owned(), Problem::UnknownKey(key.clone())));
            }
        }
        Ok(Self { at, map })
    }

    /// The value under `key`; a YAML null counts as absent (as in envoy).
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &Value) -> Located {
        (
            self.at.to_owned(),
            Problem::WrongType {
                key: key.to_owned(),
                expected,
                found: Shown(found).to_string(),
            },
        )
    }

    /// A scalar read as text: envoy reads `value: 200` or `value: true` as the string.
    fn text(&self, key: &str) -> Result<Option<String>, Located> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, Located> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    fn count<T: TryFrom<u64>>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<T>, Located> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_u64()
                .and_then(|n| T::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(key, expected, v)),
            Some(other) => Err(self.wrong(key, expected, other)),
        }
    }

    fn mapping(&self, key: &str) -> Result<Option<&'a Mapping>, Located> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Mapping(m)) => Ok(Some(m)),
            Some(other) => Err(self.wrong(key, "a mapping", other)),
        }
    }

    /// A list of mappings (envoy refuses a list holding anything else).
    fn list(&self, key: &str) -> Result<Option<Vec<&'a Mapping>>, Located> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Mapping(m) => Ok(m),
                    other => Err((
                        self.at.to_owned(),
                        Problem::ListOfNonMap(Shown(other).to_string()),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(self.wrong(key, "a list", other)),
        }
    }
}

fn read_root(root: &Mapping) -> Result<RawFile, Located> {
    let fields = Fields::new("<top level>", root, ROOT_KEYS)?;
    let domain = fields.text("domain")?.unwrap_or_default();
    if domain.is_empty() {
        return Err(("domain".to_owned(), Problem::EmptyDomain));
    }
    let fields = Fields {
        at: &domain,
        ..fields
    };
    let descriptors = read_descriptors(&fields, &domain)?;
    Ok(RawFile {
        domain,
        descriptors,
    })
}

fn read_descriptors(fields: &Fields<'_>, parent: &str) -> Result<Vec<RawDescriptor>, Located> {
    let items = fields.list("descriptors")?.unwrap_or_default();
    items
        .into_iter()
        .enumerate()
        .map(|(i, map)| read_descriptor(map, parent, i))
        .collect()
}

fn read_descriptor(map: &Mapping, parent: &str, index: usize) -> Result<RawDescriptor, Located> {
    let unnamed = format!("{parent}.descriptors[{index}]");
    let fields = Fields::new(&unnamed, map, DESCRIPTOR_KEYS)?;
    let key = fields.text("key")?.unwrap_or_default();
    let value = fields.text("value")?.filter(|v| !v.is_empty());
    let at = if key.is_empty() {
        unnamed.clone()
    } else {
        composite(parent, &key, value.as_deref())
    };
    let fields = Fields { at: &at, ..fields };
    let rate_limit = fields
        .mapping("rate_limit")?
        .map(|m| read_limit(&at, m, "rate_limit".to_owned()))
        .transpose()?;
    let rate_limits = fields
        .list("rate_limits")?
        .map(|items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, m)| read_limit(&at, m, format!("rate_limits[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let metadata = fields
        .get("metadata")
        .map(|v| {
            serde_json::to_value(v).map_err(|e| (at.clone(), Problem::Metadata(e.to_string())))
        })
        .transpose()?;
    Ok(RawDescriptor {
        key,
        value,
        rate_limit,
        rate_limits,
        shadow_mode: fields.flag("shadow_mode")?,
        quota_mode: fields.flag("quota_mode")?,
        detailed_metric: fields.flag("detailed_metric")?,
        value_to_metric: fields.flag("value_to_metric")?,
        share_threshold: fields.flag("share_threshold")?,
        metadata,
        descriptors: read_descriptors(&fields, &at)?,
        at,
    })
}

fn read_limit(descriptor: &str, map: &Mapping, field: String) -> Result<RawLimit, Located> {
    let at = format!("{descriptor}[{field}]");
    let fields = Fields::new(&at, map, LIMIT_KEYS)?;
    let replaces = fields
        .list("replaces")?
        .unwrap_or_default()
        .into_iter()
        .map(|m| Fields::new(&at, m, REPLACES_KEYS)?.text("name"))
        .collect::<Result<_, _>>()?;
    Ok(RawLimit {
        requests_per_unit: fields
            .count("requests_per_unit", "a whole number from 0 to 4294967295")?,
        unit: fields.text("unit")?,
        unlimited: fields.flag("unlimited")?,
        name: fields.text("name")?.filter(|n| !n.is_empty()),
        replaces,
        algorithm: fields.text("algorithm")?,
        window: fields.text("window")?,
        granularity: fields.text("granularity")?,
        burst: fields.count("burst", "a whole number")?,
        field,
    })
}

/// Envoy's composite key of a descriptor under `parent`: `parent.key_value`, or `parent.key`
/// without a value.
pub(crate) fn composite(parent: &str, key: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{parent}.{key}_{value}"),
        None => format!("{parent}.{key}"),
    }
}
