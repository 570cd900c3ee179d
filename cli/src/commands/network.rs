//! The network flags of `kiln run`: `--network`, `-p`, `-P`, `--add-host`, `--dns`,
//! `--dns-search`.

use crate::cli::RunArgs;
use anyhow::{Result, bail};
use kiln_solver::containers::network::{
    self, PortMapping, assign_host_ports, parse_exposed, parse_publish,
};
use kiln_solver::containers::{Network, ProcessPlan};
use kiln_solver::graph::ImageConfig;
use std::net::{IpAddr, Ipv4Addr};

/// Sets the plan's network from `args`; checks (and chooses) host ports, so that a taken port
/// fails before anything is created.
pub fn apply(plan: &mut ProcessPlan, config: &ImageConfig, args: &RunArgs) -> Result<()> {
    plan.network = match args.network.as_str() {
        "bridge" | "default" => Network::Bridge,
        "host" => Network::Host,
        "none" => Network::None,
        // docker's message for a network it does not know.
        other => bail!("network {other} not found"),
    };
    let mut ports: Vec<PortMapping> = Vec::new();
    for spec in &args.publish {
        ports.push(parse_publish(spec)?);
    }
    if args.publish_all {
        for key in config.config.exposed_ports.keys() {
            let (port, proto) = parse_exposed(key)?;
            if !ports
                .iter()
                .any(|p| p.container_port == port && p.proto == proto)
            {
                ports.push(PortMapping {
                    host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    host_port: 0,
                    container_port: port,
                    proto,
                });
            }
        }
    }
    if !ports.is_empty() {
        if plan.network != Network::Bridge {
            // docker ignores them with a warning on host and none.
            eprintln!(
                "WARNING: Published ports are discarded when using {} network mode",
                args.network
            );
            ports.clear();
        }
        assign_host_ports(&mut ports)?;
    }
    plan.ports = ports;
    for entry in &args.add_host {
        let Some((name, ip)) = entry.split_once(':').or_else(|| entry.split_once('=')) else {
            bail!(
                "invalid argument {entry:?} for \"--add-host\" flag: bad format for add-host: {entry:?}"
            );
        };
        let ip = if ip == "host-gateway" {
            let gw = match plan.network {
                Network::Bridge => network::host_gateway(),
                _ => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            };
            match gw {
                Some(gw) => gw.to_string(),
                None => {
                    bail!("--add-host {entry}: no host gateway (the host has no default route)")
                }
            }
        } else {
            match ip.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => bail!(
                    "invalid argument {entry:?} for \"--add-host\" flag: invalid IP address in add-host: {ip:?}"
                ),
            }
        };
        plan.extra_hosts.push((name.to_owned(), ip));
    }
    for d in &args.dns {
        if d.parse::<IpAddr>().is_err() {
            bail!("invalid argument {d:?} for \"--dns\" flag: {d} is not an ip address");
        }
    }
    plan.dns = args.dns.clone();
    plan.dns_search = args.dns_search.clone();
    Ok(())
}
