//! `kiln network create|ls|inspect|rm|connect|disconnect|prune` and `kiln port`, with docker's
//! output and messages.

use crate::cli::NetworkCommand;
use crate::commands::Global;
use crate::commands::container::each;
use crate::commands::system::{confirm, print_list};
use crate::format::align;
use anyhow::{Result, bail};
use kiln_solver::containers::networks::{CreateOptions, PREDEFINED, Subnet, UserNetwork};
use kiln_solver::containers::{Network, Status};
use std::net::Ipv4Addr;

/// A stable id for a predefined network (docker's are random per daemon).
fn predefined_id(name: &str) -> String {
    let mut out = String::new();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    while out.len() < 64 {
        for b in name.bytes().chain(out.clone().into_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(64);
    out
}

fn driver_of(name: &str) -> &'static str {
    match name {
        "host" => "host",
        "none" => "null",
        _ => "bridge",
    }
}

/// `kiln network ...`.
pub fn network(g: &Global, cmd: NetworkCommand) -> Result<()> {
    let host = g.host()?;
    let nets = host.networks()?;
    match cmd {
        NetworkCommand::Create {
            subnet,
            gateway,
            internal,
            driver,
            name,
        } => {
            if driver != "bridge" {
                bail!("plugin \"{driver}\" not found");
            }
            let subnet = subnet.as_deref().map(Subnet::parse).transpose()?;
            let gateway = match gateway {
                Some(g) => Some(g.parse::<Ipv4Addr>().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid argument {g:?} for \"--gateway\" flag: invalid IP address"
                    )
                })?),
                None => None,
            };
            let net = nets.create(
                &name,
                &CreateOptions {
                    subnet,
                    gateway,
                    internal,
                },
            )?;
            println!("{}", net.record().id);
        }
        NetworkCommand::Ls { quiet, no_trunc } => {
            let mut rows: Vec<(String, String, String)> = PREDEFINED
                .iter()
                .map(|n| (predefined_id(n), (*n).to_owned(), driver_of(n).to_owned()))
                .collect();
            for n in nets.list()? {
                let r = n.record();
                rows.push((r.id.clone(), r.name.clone(), r.driver.clone()));
            }
            rows.sort_by(|a, b| a.1.cmp(&b.1));
            let id = |i: &str| {
                if no_trunc {
                    i.to_owned()
                } else {
                    i[..12].to_owned()
                }
            };
            if quiet {
                for (i, _, _) in &rows {
                    println!("{}", id(i));
                }
                return Ok(());
            }
            let mut lines = vec!["NETWORK ID\tNAME\tDRIVER\tSCOPE".to_owned()];
            for (i, name, driver) in &rows {
                lines.push(format!("{}\t{name}\t{driver}\tlocal", id(i)));
            }
            println!("{}", align(&lines));
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for n in &names {
                if PREDEFINED.contains(&n.as_str()) {
                    out.push(serde_json::json!({
                        "Name": n,
                        "Id": predefined_id(n),
                        "Scope": "local",
                        "Driver": driver_of(n),
                        "EnableIPv6": false,
                        "IPAM": {"Driver": "default", "Options": null, "Config": []},
                        "Internal": false,
                        "Attachable": false,
                        "Ingress": false,
                        "Containers": {},
                        "Options": {},
                        "Labels": {},
                    }));
                    continue;
                }
                match nets.get(n) {
                    Ok(net) => out.push(inspect(&net)),
                    Err(e) => missing.push(e),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            if let Some(e) = missing.into_iter().next() {
                bail!(e);
            }
        }
        NetworkCommand::Rm { names } => each(&names, |n| {
            if PREDEFINED.contains(&n) {
                bail!("{n} is a pre-defined network and cannot be removed");
            }
            Ok(nets.get(n)?.remove()?)
        })?,
        NetworkCommand::Connect {
            alias,
            ip,
            network,
            container,
        } => {
            if PREDEFINED.contains(&network.as_str()) {
                bail!(
                    "kiln connects containers to user networks only: {network} is chosen with \
                     kiln run --network"
                );
            }
            let net = nets.get(&network)?;
            let mut c = host.containers()?.get(&container)?;
            let plan = &c.config().plan;
            match plan.network {
                Network::Host => bail!(
                    "container cannot be disconnected from host network or connected to host network"
                ),
                Network::None => bail!(
                    "container cannot be connected to multiple networks with one of the networks in private (none) mode"
                ),
                Network::Container => bail!(
                    "conflicting options: container type network can't be used with multiple networks"
                ),
                Network::Bridge => {}
            }
            if plan.networks.iter().any(|n| n.id == net.record().id) {
                bail!(
                    "endpoint with name {} already exists in network {}",
                    c.name(),
                    net.record().name
                );
            }
            let ip = crate::commands::network::requested_ip(&net, ip.as_deref())?;
            let mut att = net.attachment(alias, ip);
            att.container_name = c.name().to_owned();
            let mut list = plan.networks.clone();
            list.push(att.clone());
            let running = c.state()?.status == Status::Running;
            if running {
                let hostname = c.inspect()?["Config"]["Hostname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                kiln_solver::containers::networks::attach(&c.bundle_dir(), &att, &hostname)?;
            }
            if let Err(e) = c.set_networks(list) {
                if running {
                    kiln_solver::containers::networks::detach(&c.bundle_dir(), net.dir());
                }
                return Err(e.into());
            }
        }
        NetworkCommand::Disconnect {
            force: _,
            network,
            container,
        } => {
            let mut c = host.containers()?.get(&container)?;
            if PREDEFINED.contains(&network.as_str()) {
                bail!(
                    "container {} is not connected to network {network}: kiln disconnects \
                     user networks only",
                    c.id()
                );
            }
            let net = nets.get(&network)?;
            let plan = &c.config().plan;
            if !plan.networks.iter().any(|n| n.id == net.record().id) {
                bail!(
                    "container {} is not connected to network {}",
                    c.id(),
                    net.record().name
                );
            }
            let list = plan
                .networks
                .iter()
                .filter(|n| n.id != net.record().id)
                .cloned()
                .collect();
            if c.state()?.status == Status::Running {
                kiln_solver::containers::networks::detach(&c.bundle_dir(), net.dir());
            }
            c.set_networks(list)?;
        }
        NetworkCommand::Prune { force } => {
            if !confirm(
                "WARNING! This will remove all custom networks not used by at least one container.",
                force,
            )? {
                return Ok(());
            }
            print_list("Deleted Networks:", &prune(&host)?);
        }
    }
    Ok(())
}

/// Removes the user networks no running container is attached to; their names.
pub(crate) fn prune(host: &kiln_solver::Host) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for n in host.networks()?.list()? {
        // A network a container joins meanwhile is refused by `remove` and kept.
        if n.endpoints().is_empty() && n.remove().is_ok() {
            deleted.push(n.record().name.clone());
        }
    }
    Ok(deleted)
}

/// docker's `network inspect` document of a user network.
fn inspect(net: &UserNetwork) -> serde_json::Value {
    let r = net.record();
    let mut containers = serde_json::Map::new();
    for e in net.endpoints() {
        containers.insert(
            e.container_id.clone(),
            serde_json::json!({
                "Name": e.container_name,
                "EndpointID": format!("{}{}", &r.id[..32], &e.container_id[..32]),
                "MacAddress": e.mac,
                "IPv4Address": format!("{}/{}", e.ip, r.subnet.prefix),
                "IPv6Address": "",
            }),
        );
    }
    // Stopped containers keep the network in their config but have no endpoint, as in docker.
    serde_json::json!({
        "Name": r.name,
        "Id": r.id,
        "Created": r.created,
        "Scope": "local",
        "Driver": r.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": r.subnet.to_string(), "Gateway": r.gateway.to_string()}],
        },
        "Internal": r.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {},
        "Labels": {},
    })
}

/// `kiln port CONTAINER [PORT[/PROTO]]`: `80/tcp -> 0.0.0.0:8080` per published port, or
/// the host addresses of one.
pub fn port(g: &Global, name: &str, filter: Option<&str>) -> Result<()> {
    let c = g.host()?.containers()?.get(name)?;
    // docker shows the bindings of a running container only.
    let running = c.state()?.status == Status::Running;
    let mut ports: Vec<_> = if running {
        c.ports().to_vec()
    } else {
        Vec::new()
    };
    ports.sort_by_key(|p| (p.container_port, p.proto, p.host_port));
    match filter {
        None => {
            for p in &ports {
                println!(
                    "{} -> {}",
                    p.container_key(),
                    std::net::SocketAddr::new(p.host_ip, p.host_port)
                );
            }
        }
        Some(f) => {
            let (num, proto) = f.split_once('/').unwrap_or((f, "tcp"));
            let Ok(num) = num.parse::<u16>() else {
                bail!("invalid port ({f}): expected PORT[/PROTO]");
            };
            let key = format!("{num}/{proto}");
            let mine: Vec<_> = ports.iter().filter(|p| p.container_key() == key).collect();
            if mine.is_empty() {
                bail!("No public port '{key}' published for {name}");
            }
            for p in mine {
                println!("{}", std::net::SocketAddr::new(p.host_ip, p.host_port));
            }
        }
    }
    Ok(())
}
