//! `pinhive bench`: placeholder replaced below.
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {}

pub fn run(_: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
