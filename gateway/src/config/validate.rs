//! From raw structs to the validated tree: units, limits and Sluice's extensions checked,
//! duplicate composite keys refused, wildcards compiled.

use std::{collections::HashSet, path::PathBuf, time::Duration};

use sluice_limiter::{MAX_WINDOW, Rule};

use super::{
    Children, DescriptorConfig, Domain, ValueMatch,
    yaml::{self, Located, RawDescriptor, RawLimit},
};
use crate::{
    ConfigError,
    error::Problem,
    limit::{AlgorithmSpec, Limit, Rate, rule_name},
    pattern::Wildcard,
    unit::Unit,
};

/// One file's text into its domain.
pub(super) fn domain(file: PathBuf, text: &str) -> Result<Domain, ConfigError> {
    let raw = match yaml::parse(text) {
        Ok(raw) => raw,
        Err(Ok(message)) => return Err(ConfigError::Yaml { file, message }),
        Err(Err((at, problem))) => return Err(ConfigError::Invalid { file, at, problem }),
    };
    match children(&raw.domain, raw.descriptors) {
        Ok(children) => Ok(Domain {
            name: raw.domain,
            file,
            children,
        }),
        Err((at, problem)) => Err(ConfigError::Invalid { file, at, problem }),
    }
}

fn children(parent: &str, raw: Vec<RawDescriptor>) -> Result<Children, Located> {
    let mut children = Children::default();
    let mut seen = HashSet::new();
    for descriptor in raw {
        let node = descriptor_config(parent, descriptor)?;
        // Envoy's composite key: sibling keys and values are compared as `key_value` strings.
        if !seen.insert(node.path.clone()) {
            return Err((node.path.clone(), Problem::DuplicateCompositeKey(node.path)));
        }
        children.push(node);
    }
    Ok(children)
}

fn descriptor_config(parent: &str, raw: RawDescriptor) -> Result<DescriptorConfig, Located> {
    let at = raw.at;
    let fail = |problem| Err((at.clone(), problem));
    if raw.key.is_empty() {
        return fail(Problem::EmptyKey);
    }
    if raw.quota_mode {
        return fail(Problem::Unsupported {
            key: "quota_mode",
            reason: "Sluice charges a request's descriptors all or nothing, so a quota \
                     descriptor can't be over its limit while the request passes; remove it, \
                     or use shadow_mode to observe a limit without enforcing it",
        });
    }
    let value = match raw.value {
        None => ValueMatch::Any,
        Some(value) => match Wildcard::new(&value) {
            Some(wildcard) => ValueMatch::Wildcard(wildcard),
            None => ValueMatch::Exact(value),
        },
    };
    if raw.share_threshold && !matches!(value, ValueMatch::Wildcard(_)) {
        let final_key = match &value {
            ValueMatch::Exact(v) => format!("{}_{v}", raw.key),
            _ => raw.key.clone(),
        };
        return fail(Problem::ShareThresholdWithoutWildcard(final_key));
    }
    let limits = match (raw.rate_limit, raw.rate_limits) {
        (None, None) => Vec::new(),
        (Some(one), None) => vec![limit(&at, one, true)?],
        (Some(_), Some(_)) => {
            return fail(Problem::Extension(
                "give rate_limit or rate_limits, not both".to_owned(),
            ));
        }
        (None, Some(list)) => several(&at, list)?,
    };
    let path = yaml::composite(
        parent,
        &raw.key,
        match &value {
            ValueMatch::Any => None,
            ValueMatch::Exact(v) => Some(v.as_str()),
            ValueMatch::Wildcard(w) => Some(w.as_str()),
        },
    );
    Ok(DescriptorConfig {
        children: children(&path, raw.descriptors)?,
        key: raw.key,
        value,
        path,
        limits,
        shadow_mode: raw.shadow_mode,
        detailed_metric: raw.detailed_metric,
        value_to_metric: raw.value_to_metric,
        share_threshold: raw.share_threshold,
        metadata: raw.metadata,
    })
}

/// `rate_limits:`: at least one, none unlimited, no two counting the same window the same way.
fn several(at: &str, list: Vec<RawLimit>) -> Result<Vec<Limit>, Located> {
    if list.is_empty() {
        return Err((
            format!("{at}[rate_limits]"),
            Problem::Extension("rate_limits must list at least one limit".to_owned()),
        ));
    }
    let mut limits: Vec<Limit> = Vec::with_capacity(list.len());
    let mut fields: Vec<String> = Vec::with_capacity(list.len());
    for raw in list {
        let field = raw.field.clone();
        let limit = limit(at, raw, false)?;
        let rate = limit.rate();
        if let Some(i) = limits.iter().position(|other| {
            let (a, b) = (other.rate(), rate);
            a.zip(b).is_some_and(|(a, b)| {
                a.window() == b.window() && a.algorithm().as_str() == b.algorithm().as_str()
            })
        }) {
            return Err((
                format!("{at}[{field}]"),
                Problem::Extension(format!(
                    "counts the same window the same way as {}; merge them",
                    fields[i]
                )),
            ));
        }
        limits.push(limit);
        fields.push(field);
    }
    Ok(limits)
}

fn limit(descriptor: &str, raw: RawLimit, unlimited_allowed: bool) -> Result<Limit, Located> {
    let at = format!("{descriptor}[{}]", raw.field);
    let fail = |problem| Err((at.clone(), problem));
    let locate = |problem| (at.clone(), problem);
    if let Some(name) = &raw.name {
        for replaced in &raw.replaces {
            match replaced.as_deref() {
                None | Some("") => return fail(Problem::EmptyReplaces),
                Some(r) if r == name => return fail(Problem::ReplacesSelf),
                Some(_) => {}
            }
        }
    } else if raw
        .replaces
        .iter()
        .any(|r| r.as_deref().unwrap_or("").is_empty())
    {
        return fail(Problem::EmptyReplaces);
    }
    let replaces: Vec<String> = raw.replaces.iter().flatten().cloned().collect();
    let unit = raw.unit.as_deref().filter(|u| !u.is_empty());
    if raw.unlimited {
        if let Some(unit) = unit {
            return fail(match Unit::parse(unit) {
                Some(_) => Problem::UnitWhenUnlimited,
                None => Problem::InvalidUnit(unit.to_owned()),
            });
        }
        if !unlimited_allowed {
            return fail(Problem::Extension(
                "an unlimited limit stands alone: write it as rate_limit".to_owned(),
            ));
        }
        let extensions = [
            ("window", raw.window.is_some()),
            ("algorithm", raw.algorithm.is_some()),
            ("granularity", raw.granularity.is_some()),
            ("burst", raw.burst.is_some()),
        ];
        if let Some((key, _)) = extensions.iter().find(|(_, given)| *given) {
            return fail(Problem::Extension(format!(
                "{key} does not apply to an unlimited limit"
            )));
        }
        return Ok(Limit::new(raw.name, replaces, None));
    }
    let window = match (unit, raw.window.as_deref()) {
        (Some(_), Some(_)) => {
            return fail(Problem::Extension(
                "give unit or window, not both".to_owned(),
            ));
        }
        (Some(unit), None) => match Unit::parse(unit) {
            Some(unit) => unit.duration(),
            None => return fail(Problem::InvalidUnit(unit.to_owned())),
        },
        (None, Some(window)) => duration("window", window).map_err(locate)?,
        (None, None) => return fail(Problem::InvalidUnit(String::new())),
    };
    let requests = raw.requests_per_unit.unwrap_or(0);
    let rate = rate(requests, window, &raw).map_err(locate)?;
    Ok(Limit::new(raw.name, replaces, Some(rate)))
}

/// The rate of a counted limit: the algorithm and its parameters, checked by building the
/// limiter's rule (its checks, its words) for every algorithm it has.
fn rate(requests: u32, window: Duration, raw: &RawLimit) -> Result<Rate, Problem> {
    let name = raw.algorithm.as_deref().unwrap_or("fixed-window");
    let granularity = raw
        .granularity
        .as_deref()
        .map(|g| duration("granularity", g))
        .transpose()?;
    let only = |key: &str, owner: &str| {
        Problem::Extension(format!("{key} applies to the {owner} algorithm only"))
    };
    if granularity.is_some() && name != "sliding-counter" {
        return Err(only("granularity", "sliding-counter"));
    }
    if raw.burst.is_some() && name != "gcra" {
        return Err(only("burst", "gcra"));
    }
    let rule_name = rule_name(window);
    let limit = u64::from(requests);
    let (algorithm, rule) = match name {
        "fixed-window" => {
            check_window(window)?;
            // envoy accepts requests_per_unit 0 (every request over the limit): no rule then,
            // the service denies without asking Redis.
            let rule = (limit > 0).then(|| Rule::fixed_window(rule_name, limit, window));
            (AlgorithmSpec::FixedWindow, rule)
        }
        "sliding-log" => (
            AlgorithmSpec::SlidingLog,
            Some(Rule::sliding_log(rule_name, limit, window)),
        ),
        "sliding-counter" => {
            let granularity = granularity.unwrap_or(window);
            (
                AlgorithmSpec::SlidingCounter { granularity },
                Some(Rule::sliding_counter(rule_name, limit, window, granularity)),
            )
        }
        "gcra" => {
            let burst = raw.burst.unwrap_or(limit);
            (
                AlgorithmSpec::Gcra { burst },
                Some(Rule::gcra(rule_name, limit, window, burst)),
            )
        }
        other => {
            return Err(Problem::Extension(format!(
                "algorithm '{other}' is not one of {}",
                AlgorithmSpec::NAMES.join(", ")
            )));
        }
    };
    let rule = rule.transpose().map_err(|e| Problem::Limit {
        field: match e.field() {
            "limit" => "requests_per_unit".to_owned(),
            field => field.to_owned(),
        },
        reason: e.reason().to_owned(),
    })?;
    Ok(Rate::new(requests, window, algorithm, rule))
}

/// The fixed window's bounds (the limiter checks the others'): 1 ms to 366 days, in whole
/// microseconds.
fn check_window(window: Duration) -> Result<(), Problem> {
    let bad = |reason: &str| Problem::Limit {
        field: "window".to_owned(),
        reason: reason.to_owned(),
    };
    if window < Duration::from_millis(1) {
        return Err(bad("must be at least 1ms"));
    }
    if window > MAX_WINDOW {
        return Err(bad("must be at most 366 days"));
    }
    if window.subsec_nanos() % 1000 != 0 {
        return Err(bad("must be a whole number of microseconds"));
    }
    Ok(())
}

fn duration(key: &str, text: &str) -> Result<Duration, Problem> {
    humantime::parse_duration(text).map_err(|e| {
        Problem::Extension(format!(
            "{key}: '{text}' is not a duration such as 90s, 1500ms or 1h 30m ({e})"
        ))
    })
}
