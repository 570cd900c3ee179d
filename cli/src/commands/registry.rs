//! pull, push, login, logout: images and credentials of OCI registries.

use crate::commands::Global;
use crate::commands::image::find;
use anyhow::{Context, Result, bail};
use kiln_oci::Platform;
use kiln_solver::registry::{self, Reference};
use std::io::Read;

/// Parses a reference with docker's rules and error message.
pub fn reference(s: &str) -> Result<Reference> {
    s.parse::<Reference>()
        .map_err(|e| anyhow::anyhow!("invalid reference {s:?}: {e}"))
}

/// `kiln pull`.
pub fn pull(g: &Global, r: &str, platform: Option<&str>, quiet: bool) -> Result<()> {
    let host = g.host()?;
    let reference = reference(r)?;
    let platform = match platform {
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| anyhow::anyhow!("--platform {p:?}: {e}"))?,
        None => Platform::host(),
    };
    let rec = host.images().pull(&reference, &platform)?;
    if !quiet {
        println!("Digest: {}", rec.manifest_digest);
        println!("Status: image is up to date for {}", reference.familiar());
    }
    println!("{reference}");
    Ok(())
}

/// `kiln push`.
pub fn push(g: &Global, r: &str, quiet: bool) -> Result<()> {
    let host = g.host()?;
    let rec = find(&host, r)?;
    let target = reference(r)?;
    let report = host.images().push(&rec, &target)?;
    if !quiet {
        let made = match report.made {
            0 => String::new(),
            n => format!(" ({n} compressed while uploading)"),
        };
        eprintln!(
            "pushed {}: {} blobs uploaded{made}, {} already there, {} mounted",
            target.familiar(),
            report.uploaded,
            report.skipped,
            report.mounted
        );
    }
    println!("{}: digest: {}", target.familiar(), report.digest);
    Ok(())
}

/// `kiln login`.
pub fn login(
    g: &Global,
    username: Option<String>,
    password: Option<String>,
    password_stdin: bool,
    server: Option<String>,
) -> Result<()> {
    let server = server.unwrap_or_else(|| registry::DOCKER_HUB.to_string());
    let username = username.context("kiln login needs -u USERNAME")?;
    let password = match (password, password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("kiln login needs --password-stdin (or -p)"),
    };
    let stored = registry::login(&g.host()?, &server, &username, &password)?;
    if let registry::Stored::ConfigFile(p) = stored {
        eprintln!(
            "WARNING! Your password will be stored unencrypted in {}.",
            p.display()
        );
    }
    println!("Login Succeeded");
    Ok(())
}

/// `kiln logout`.
pub fn logout(server: Option<String>) -> Result<()> {
    let server = server.unwrap_or_else(|| registry::DOCKER_HUB.to_string());
    if registry::logout(&server)? {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(())
}
