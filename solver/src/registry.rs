//! Registries for the CLI: references as docker writes them, and `login` / `logout`.

use crate::error::{Error, Result};
use crate::host::{Host, tokio_runtime};

pub use kiln_registry_client::{DOCKER_HUB, PushReport, Reference, Stored};

/// `login`: checks the credentials against `server` and stores them (in a credential helper
/// when docker's config names one, else in its config file).
pub fn login(host: &Host, server: &str, username: &str, password: &str) -> Result<Stored> {
    tokio_runtime()?
        .block_on(kiln_registry_client::login(
            server,
            username,
            password,
            host.client_options(),
        ))
        .map_err(|e| Error::other(format!("login to {server}"), e))
}

/// `logout`: forgets the credentials of `server`; `false` when there were none.
pub fn logout(server: &str) -> Result<bool> {
    kiln_registry_client::logout(server, None)
        .map_err(|e| Error::other(format!("logout from {server}"), e))
}
