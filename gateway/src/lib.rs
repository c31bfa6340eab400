//! wip
mod config;
mod error;
mod key;
mod limit;
mod matcher;
mod metrics;
mod pattern;
mod request;
mod unit;
pub use config::{Config, DescriptorConfig, Domain};
pub use error::{ConfigError, Problem};
pub use key::KeyId;
pub use limit::{AlgorithmSpec, Limit, Rate};
pub use matcher::{Answer, Applied, DescriptorPlan, LimitSource, Plan};
pub use metrics::{DetailBudget, MetricKey};
pub use request::{Entry, LimitOverride, RequestDescriptor, hits};
pub use unit::Unit;
