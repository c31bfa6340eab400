//! `sluice loadtest limit` (being written: see the issue).

use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct LimitArgs {}

pub(crate) async fn run(_args: LimitArgs) -> Result<i32, Failure> {
    Err(Failure::usage("sluice loadtest limit is not built yet"))
}
