//! The network flags of `kiln run`: `--network`, `--network-alias`, `--ip`, `-p`, `-P`,
//! `--add-host`, `--dns`, `--dns-search`.

use crate::cli::RunArgs;
use anyhow::{Result, bail};
use kiln_solver::Host;
use kiln_solver::containers::network::{
    self, PortMapping, assign_host_ports, parse_exposed, parse_publish,
};
use kiln_solver::containers::networks::UserNetwork;
use kiln_solver::containers::{Network, ProcessPlan, Status};
use kiln_solver::graph::ImageConfig;
use std::net::{IpAddr, Ipv4Addr};

/// `--network container:NAME`: the other container's namespace, with docker's refusals of
/// the flags that would configure a namespace this container does not own.
fn join_container(host: &Host, plan: &mut ProcessPlan, args: &RunArgs, name: &str) -> Result<()> {
    if args.hostname.is_some() {
        bail!("conflicting options: hostname and the network mode");
    }
    if !args.add_host.is_empty() {
        bail!("conflicting options: custom host-to-IP mapping and the network mode");
    }
    if !args.dns.is_empty() || !args.dns_search.is_empty() {
        bail!("conflicting options: dns and the network mode");
    }
    if !args.publish.is_empty() || args.publish_all {
        bail!("conflicting options: port publishing and the container type network mode");
    }
    let target = host.containers()?.get(name)?;
    let state = target.state()?;
    let Some(pid) = state.pid.filter(|_| state.status == Status::Running) else {
        bail!(
            "cannot join network of a non running container: {}",
            target.id()
        );
    };
    let tplan = &target.config().plan;
    let path = match tplan.network {
        Network::Host => {
            plan.network = Network::Host;
            return Ok(());
        }
        Network::Bridge => target.bundle_dir().join(network::NETNS_FILE),
        Network::Container => match &tplan.join_netns {
            Some((p, _)) => p.clone(),
            None => format!("/proc/{pid}/ns/net").into(),
        },
        Network::None => format!("/proc/{pid}/ns/net").into(),
    };
    plan.network = Network::Container;
    plan.join_netns = Some((path, target.id().to_owned()));
    // docker gives it the other container's hostname.
    plan.hostname = target.inspect()?["Config"]["Hostname"]
        .as_str()
        .map(str::to_owned);
    Ok(())
}

/// Sets the plan's network from `args`; checks (and chooses) host ports, so that a taken port
/// fails before anything is created.
pub fn apply(
    host: &Host,
    plan: &mut ProcessPlan,
    config: &ImageConfig,
    args: &RunArgs,
) -> Result<()> {
    let user_network = !matches!(
        args.network.as_str(),
        "bridge" | "default" | "host" | "none"
    ) && !args.network.starts_with("container:");
    if !user_network {
        if !args.network_alias.is_empty() {
            bail!("network-scoped alias is supported only for containers in user defined networks");
        }
        if args.ip.is_some() {
            bail!("user specified IP address is supported on user defined networks only");
        }
    }
    plan.network = match args.network.as_str() {
        "bridge" | "default" => Network::Bridge,
        "host" => Network::Host,
        "none" => Network::None,
        other if other.starts_with("container:") => {
            let name = &other["container:".len()..];
            return join_container(host, plan, args, name);
        }
        name => {
            // docker's message for a network it does not know.
            let net = host.networks()?.get(name)?;
            let ip = requested_ip(&net, args.ip.as_deref())?;
            plan.networks = vec![net.attachment(args.network_alias.clone(), ip)];
            Network::Bridge
        }
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
        if plan.network != Network::Bridge
            || plan.networks.iter().all(|n| n.internal) && !plan.networks.is_empty()
        {
            // docker ignores them with a warning on host and none (and kiln on an internal
            // network, which has no pasta to listen).
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
        let (name, ip) = parse_add_host(entry)?;
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
            ip
        };
        plan.extra_hosts.push((name, ip));
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

/// `--ip`: an address of `net`'s subnet, checked (docker's messages).
pub fn requested_ip(net: &UserNetwork, ip: Option<&str>) -> Result<Option<Ipv4Addr>> {
    let Some(ip) = ip else { return Ok(None) };
    let ip: Ipv4Addr = ip.parse().map_err(|_| {
        anyhow::anyhow!("invalid argument {ip:?} for \"--ip\" flag: invalid IP address")
    })?;
    net.check_ip(ip)?;
    Ok(Some(ip))
}

/// Parses docker's `--add-host NAME:IP` (or `NAME=IP`); the IP is normalized, or
/// `host-gateway`.
pub fn parse_add_host(entry: &str) -> Result<(String, String)> {
    let Some((name, ip)) = entry.split_once(':').or_else(|| entry.split_once('=')) else {
        bail!(
            "invalid argument {entry:?} for \"--add-host\" flag: bad format for add-host: {entry:?}"
        );
    };
    if ip == "host-gateway" {
        return Ok((name.to_owned(), ip.to_owned()));
    }
    match ip.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => Ok((name.to_owned(), ip.to_string())),
        Err(_) => bail!(
            "invalid argument {entry:?} for \"--add-host\" flag: invalid IP address in add-host: {ip:?}"
        ),
    }
}
