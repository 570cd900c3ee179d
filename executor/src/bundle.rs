//! Bundle directories: `config.json` plus the generated `/etc` files, and who owns them.

use crate::plan::{Network, ProcessPlan};
use crate::spec::spec_json;
use crate::{Error, Result};
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

/// Name of the file in a bundle recording the kiln process that owns it.
const OWNER_FILE: &str = "owner";

/// `/etc/hosts` for a container with its own network namespace.
fn default_hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n\
         127.0.1.1\t{hostname}\n"
    )
}

/// The host's resolver configuration, skipping systemd-resolved's stub (Docker does the same).
fn host_resolv_conf() -> String {
    let stub = fs_err::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if stub.contains("127.0.0.53")
        && let Ok(real) = fs_err::read_to_string("/run/systemd/resolve/resolv.conf")
    {
        return real;
    }
    if stub.trim().is_empty() {
        // Docker's fallback when the host has no resolver configured.
        return "nameserver 8.8.8.8\nnameserver 8.8.4.4\n".to_owned();
    }
    stub
}

/// The container's `resolv.conf`: the host's, with `--dns` replacing its nameservers and
/// `--dns-search` its search domains, as docker does.
fn resolv_conf(plan: &ProcessPlan) -> String {
    let host = host_resolv_conf();
    if plan.dns.is_empty() && plan.dns_search.is_empty() {
        return host;
    }
    let mut out = String::new();
    for line in host.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        let replaced = (key == "nameserver" && !plan.dns.is_empty())
            || ((key == "search" || key == "domain") && !plan.dns_search.is_empty());
        if !replaced {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !plan.dns_search.is_empty() {
        out.push_str(&format!("search {}\n", plan.dns_search.join(" ")));
    }
    for ns in &plan.dns {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    out
}

/// Writes the owner file, then `config.json`, `hosts`, `hostname` and `resolv.conf` into
/// `bundle`.
pub fn write_bundle(bundle: &Path, spec: &Spec, plan: &ProcessPlan) -> Result<()> {
    fs_err::create_dir_all(bundle)?;
    // First: a bundle without an owner is a candidate for a concurrent kiln's reaper.
    write_owner(bundle)?;
    let hostname = spec.hostname().clone().unwrap_or_default();
    let hosts = match plan.network {
        Network::Host => match fs_err::read_to_string("/etc/hosts") {
            Ok(mut hosts) => {
                // A hostname of our own must resolve too (BuildKit maps its sandbox name).
                let known = hosts
                    .lines()
                    .any(|l| l.split_whitespace().skip(1).any(|n| n == hostname));
                if !known && !hostname.is_empty() {
                    if !hosts.ends_with('\n') && !hosts.is_empty() {
                        hosts.push('\n');
                    }
                    hosts.push_str(&format!("127.0.0.1\t{hostname}\n"));
                }
                hosts
            }
            Err(_) => default_hosts(&hostname),
        },
        Network::None | Network::Bridge => default_hosts(&hostname),
        // The joined container's own files, when it has a bundle (`container:NAME`).
        Network::Container => {
            etc_of_joined(plan, "hosts").unwrap_or_else(|| default_hosts(&hostname))
        }
    };
    let mut hosts = hosts;
    for (name, ip) in &plan.extra_hosts {
        // docker appends --add-host entries as `IP\tNAME`.
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    if plan.network == Network::Bridge {
        // User networks rewrite `hosts` from it (`networks`).
        fs_err::write(bundle.join(crate::networks::HOSTS_BASE), &hosts)?;
    }
    fs_err::write(bundle.join("hosts"), hosts)?;
    fs_err::write(bundle.join("hostname"), format!("{hostname}\n"))?;
    let resolv = match plan.network {
        Network::Container => {
            etc_of_joined(plan, "resolv.conf").unwrap_or_else(|| resolv_conf(plan))
        }
        _ => resolv_conf(plan),
    };
    fs_err::write(bundle.join("resolv.conf"), resolv)?;
    write_atomic(&bundle.join("config.json"), &spec_json(spec)?)
}

/// The joined container's generated `/etc` file `name` (`--network container:NAME`), when its
/// namespace is the one in its bundle.
fn etc_of_joined(plan: &ProcessPlan, name: &str) -> Option<String> {
    let (netns, _) = plan.join_netns.as_ref()?;
    fs_err::read_to_string(netns.parent()?.join(name)).ok()
}

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs_err::write(&tmp, data)?;
    fs_err::rename(&tmp, path)?;
    Ok(())
}

/// Identity of a live process: pid plus its start time (pids are reused).
fn process_identity(pid: i32) -> Option<String> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime), counted after the parenthesised command name.
    let after = stat.rsplit_once(')')?.1;
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

pub(crate) fn write_owner(bundle: &Path) -> Result<()> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let identity = process_identity(me).unwrap_or_else(|| format!("{me} 0"));
    // Atomically: a reaper that read a half-written (empty) owner would take it for dead.
    write_atomic(&bundle.join(OWNER_FILE), identity.as_bytes())
}

/// How long a bundle without an owner file is taken for one being created right now.
const UNOWNED_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the kiln process that wrote `bundle` is gone, or never recorded itself (a bundle
/// without an owner file counts as another process's in the making for a minute).
pub fn owner_is_dead(bundle: &Path) -> bool {
    let Ok(owner) = fs_err::read_to_string(bundle.join(OWNER_FILE)) else {
        let young = fs_err::metadata(bundle)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < UNOWNED_GRACE);
        return !young;
    };
    let Some(pid) = owner.split_whitespace().next().and_then(|p| p.parse().ok()) else {
        return true;
    };
    process_identity(pid).as_deref() != Some(owner.trim())
}

/// Refuses ids runc would refuse (and anything that could escape a directory).
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId { id: id.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("abc-1.2_3").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owner_liveness() {
        let dir = tempfile::tempdir().unwrap();
        write_owner(dir.path()).unwrap();
        assert!(!owner_is_dead(dir.path()));
        fs_err::write(dir.path().join(OWNER_FILE), "1 1").unwrap();
        assert!(owner_is_dead(dir.path()), "pid 1 with another start time");
        fs_err::remove_file(dir.path().join(OWNER_FILE)).unwrap();
        assert!(
            !owner_is_dead(dir.path()),
            "a fresh bundle without an owner may be in the making"
        );
        let old = std::time::SystemTime::now() - 2 * UNOWNED_GRACE;
        fs_err::File::open(dir.path())
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(owner_is_dead(dir.path()), "an old one without an owner");
    }
}
