//! `cp`, `diff`, `export`: a container's filesystem.

use crate::cli::{CpArgs, ExportArgs};
use crate::commands::Global;
use anyhow::{Result, bail};
use std::process::ExitCode;

pub fn cp(_g: &Global, _args: &CpArgs) -> Result<ExitCode> {
    bail!("todo")
}
pub fn diff(_g: &Global, _name: &str) -> Result<()> {
    bail!("todo")
}
pub fn export(_g: &Global, _args: &ExportArgs) -> Result<()> {
    bail!("todo")
}
