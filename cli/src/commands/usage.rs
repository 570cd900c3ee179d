//! `top`, `stats`.

use crate::cli::{StatsArgs, TopArgs};
use crate::commands::Global;
use anyhow::{Result, bail};

pub fn top(_g: &Global, _args: &TopArgs) -> Result<()> {
    bail!("todo")
}
pub fn stats(_g: &Global, _args: &StatsArgs) -> Result<()> {
    bail!("todo")
}
