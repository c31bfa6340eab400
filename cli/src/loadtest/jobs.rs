//! `sluice loadtest jobs` (being written: see the issue).

use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct JobsArgs {}

pub(crate) async fn run(_args: JobsArgs) -> Result<i32, Failure> {
    Err(Failure::usage("sluice loadtest jobs is not built yet"))
}
