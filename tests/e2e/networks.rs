//! User networks end to end: containers reach each other by name, alias and IP, the names
//! follow containers joining and leaving, `network rm` is refused while one is attached, and
//! nothing is left behind; `--network container:NAME`, `kiln port` with `-P`, and the build's
//! `--network` and `--add-host`.

use crate::network::{free_port, http_get, kiln, pasta_processes};
use crate::support::{Context, Kiln, build, text};

/// A busybox web server (`httpd`) answering `name` on port 80.
fn serve(k: &Kiln, name: &str, extra: &[&str]) {
    let script =
        format!("mkdir /www && echo hello-{name} > /www/index.html && exec httpd -f -p 80 -h /www");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    k.ok(&args);
}

/// `wget -qO- http://TARGET/` run in container `from` (exec), its output or error text.
fn fetch_from(k: &Kiln, from: &str, target: &str) -> (bool, String) {
    let url = format!("http://{target}/");
    // httpd may not listen yet: a few tries, inside the container.
    let script =
        format!("for i in $(seq 50); do wget -qO- {url} && exit 0; sleep 0.1; done; exit 1");
    let out = k.run(&["exec", from, "sh", "-c", &script]);
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// The names in `container`'s /etc/hosts, one line each.
fn hosts(k: &Kiln, container: &str) -> String {
    k.ok(&["exec", container, "cat", "/etc/hosts"])
}

fn no_mounts_left(k: &Kiln) {
    let root = k.root.path().display().to_string();
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!("{root}/")),
        "no mount left under the store:\n{mounts}"
    );
    assert_eq!(pasta_processes(&root), 0, "no pasta left");
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name_alias_and_ip() {
    let Some(k) = kiln() else { return };
    let id = k.ok(&["network", "create", "appnet"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    serve(
        &k,
        "web",
        &["--network", "appnet", "--network-alias", "www"],
    );
    k.ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "appnet",
        "busybox",
        "sleep",
        "1000",
    ]);

    let (ok, out) = fetch_from(&k, "client", "web");
    assert!(ok && out.contains("hello-web"), "by name: {out}");
    let (ok, out) = fetch_from(&k, "client", "www");
    assert!(ok && out.contains("hello-web"), "by alias: {out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["network", "inspect", "appnet"])).unwrap();
    let net = &inspect[0];
    assert_eq!(net["Name"], "appnet");
    assert_eq!(net["Id"], id.trim());
    assert_eq!(net["Driver"], "bridge");
    let subnet = net["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(net["IPAM"]["Config"][0]["Gateway"].is_string(), "{net}");
    let members = net["Containers"].as_object().unwrap();
    assert_eq!(members.len(), 2, "{net}");
    let web = members.values().find(|m| m["Name"] == "web").unwrap();
    let web_ip = web["IPv4Address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        web["MacAddress"].as_str().unwrap().starts_with("02:42:"),
        "{web}"
    );
    assert!(subnet.ends_with("/16"), "{subnet}");
    let (ok, out) = fetch_from(&k, "client", &web_ip);
    assert!(ok && out.contains("hello-web"), "by IP {web_ip}: {out}");
    let c: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "web"])).unwrap();
    assert_eq!(c[0]["HostConfig"]["NetworkMode"], "appnet");
    assert_eq!(
        c[0]["NetworkSettings"]["Networks"]["appnet"]["IPAddress"],
        web_ip
    );

    // A running container joins: web's table has it at once, and it reaches web.
    k.ok(&["run", "-d", "--name", "late", "busybox", "sleep", "1000"]);
    k.ok(&[
        "network",
        "connect",
        "--alias",
        "latecomer",
        "appnet",
        "late",
    ]);
    assert!(
        hosts(&k, "web").contains("\tlate latecomer "),
        "{}",
        hosts(&k, "web")
    );
    let (ok, out) = fetch_from(&k, "late", "www");
    assert!(ok, "connected: {out}");
    // ... and leaves: its name is gone from the others, theirs from it.
    k.ok(&["network", "disconnect", "appnet", "late"]);
    assert!(!hosts(&k, "web").contains("late"), "{}", hosts(&k, "web"));
    let out = k.run(&["exec", "late", "wget", "-qO-", "http://web/"]);
    assert!(
        !out.status.success(),
        "disconnected: web no longer resolves"
    );
    let err = k.fails(&["network", "disconnect", "appnet", "late"]);
    assert!(err.contains("is not connected to network appnet"), "{err}");

    // A container that is removed leaves the table of the others.
    k.ok(&["rm", "-f", "web"]);
    assert!(
        !hosts(&k, "client").contains("web"),
        "{}",
        hosts(&k, "client")
    );
    let out = k.run(&["exec", "client", "wget", "-qO-", "http://www/"]);
    assert!(!out.status.success(), "removed: www no longer resolves");

    // A container that exits leaves it too.
    k.ok(&[
        "run",
        "--rm",
        "--name",
        "brief",
        "--network",
        "appnet",
        "busybox",
        "true",
    ]);
    assert!(!hosts(&k, "client").contains("brief"));
    k.ok(&["rm", "-f", "client", "late"]);
    k.ok(&["network", "rm", "appnet"]);
    no_mounts_left(&k);
}

#[test]
fn network_rm_is_refused_while_a_container_is_attached_and_nothing_is_left() {
    let Some(k) = kiln() else { return };
    k.ok(&[
        "network",
        "create",
        "--subnet",
        "10.89.0.0/24",
        "--gateway",
        "10.89.0.254",
        "n1",
    ]);
    let ls = k.ok(&["network", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert!(lines[0].starts_with("NETWORK ID     NAME"), "{ls}");
    assert!(
        lines[0].contains("DRIVER") && lines[0].ends_with("SCOPE"),
        "{ls}"
    );
    for (name, driver) in [
        ("bridge", "bridge"),
        ("host", "host"),
        ("n1", "bridge"),
        ("none", "null"),
    ] {
        assert!(
            lines.iter().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 4
                    && f[0].len() == 12
                    && f[1] == name
                    && f[2] == driver
                    && f[3] == "local"
            }),
            "{name}: {ls}"
        );
    }
    k.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "n1",
        "--ip",
        "10.89.0.7",
        "busybox",
        "sleep",
        "1000",
    ]);
    let out = k.ok(&["exec", "a", "ip", "-o", "-4", "addr"]);
    assert!(out.contains("10.89.0.7/24"), "{out}");
    // The address is taken; --ip outside the subnet is docker's error; neither makes anything.
    let before = k.ok(&["ps", "-a", "-q"]);
    let err = k.fails(&[
        "run",
        "-d",
        "--network",
        "n1",
        "--ip",
        "10.89.0.7",
        "busybox",
        "true",
    ]);
    assert!(err.contains("Address already in use"), "{err}");
    let out = k.run(&[
        "run",
        "--network",
        "n1",
        "--ip",
        "10.1.1.1",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr)
            .contains("no configured subnet or ip-range contain the IP address 10.1.1.1")
    );
    assert_eq!(k.ok(&["ps", "-a", "-q"]), before, "nothing created");

    let out = k.run(&["network", "rm", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error while removing network: network n1 id ")
            && text(&out.stderr).contains("has active endpoints"),
        "{}",
        text(&out.stderr)
    );
    assert!(k.ok(&["network", "ls"]).contains(" n1 "), "still there");
    k.ok(&["rm", "-f", "a"]);
    assert_eq!(k.ok(&["network", "rm", "n1"]), "n1\n");
    assert!(!k.ok(&["network", "ls"]).contains(" n1 "));
    let left: Vec<_> = fs_err::read_dir(k.root.path().join("networks"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(left.is_empty(), "no network state left: {left:?}");
    no_mounts_left(&k);

    // prune removes the networks nobody uses, and only those.
    k.ok(&["network", "create", "idle"]);
    k.ok(&["network", "create", "busy"]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "busy",
        "busybox",
        "sleep",
        "1000",
    ]);
    let out = k.ok(&["network", "prune", "-f"]);
    assert_eq!(out, "Deleted Networks:\nidle\n\n");
    k.ok(&["rm", "-f", "b"]);
    // ... as docker's system prune does.
    let out = k.ok(&["system", "prune", "-f"]);
    assert!(out.contains("Deleted Networks:\nbusy\n"), "{out}");
    assert!(!k.ok(&["network", "ls"]).contains(" busy "));
    no_mounts_left(&k);
}

#[test]
fn bad_network_requests_get_dockers_messages_and_change_nothing() {
    let Some(k) = kiln() else { return };
    k.ok(&["network", "create", "n"]);
    for (args, msg) in [
        (
            &["network", "create", "n"][..],
            "network with name n already exists",
        ),
        (
            &["network", "create", "bridge"],
            "network with name bridge already exists",
        ),
        (
            &["network", "create", "--subnet", "10.0.0.1/8", "x"],
            "invalid subnet 10.0.0.1/8",
        ),
        (
            &["network", "create", "--subnet", "bogus", "x"],
            "invalid CIDR address: bogus",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.7.0.0/16",
                "--gateway",
                "10.8.0.1",
                "x",
            ],
            "no matching subnet for gateway 10.8.0.1",
        ),
        (
            &["network", "create", "-d", "overlay", "x"],
            "plugin \"overlay\" not found",
        ),
        (
            &["network", "rm", "bridge"],
            "bridge is a pre-defined network and cannot be removed",
        ),
        (&["network", "rm", "nosuch"], "network nosuch not found"),
        (
            &["network", "inspect", "nosuch"],
            "network nosuch not found",
        ),
    ] {
        let err = k.fails(args);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    let nets: Vec<_> = fs_err::read_dir(k.root.path().join("networks"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(nets.len(), 1, "only n was made");
    for (args, msg) in [
        (
            &["run", "--network", "nosuch", "busybox", "true"][..],
            "network nosuch not found",
        ),
        (
            &["run", "--network-alias", "a", "busybox", "true"],
            "network-scoped alias is supported only for containers in user defined networks",
        ),
        (
            &["run", "--ip", "172.18.0.9", "busybox", "true"],
            "user specified IP address is supported on user defined networks only",
        ),
        (
            &[
                "run",
                "--network",
                "n",
                "--ip",
                "172.18.0.9",
                "busybox",
                "true",
            ],
            "user specified IP address is supported only when connecting to networks with user configured subnets",
        ),
        (
            &["run", "--network", "container:nosuch", "busybox", "true"],
            "nosuch",
        ),
    ] {
        let out = k.run(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            text(&out.stderr).contains(msg),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(k.ok(&["ps", "-a", "-q"]), "", "no container made");
    k.ok(&["network", "rm", "n"]);
}

#[test]
fn container_network_mode_shares_the_other_containers_localhost() {
    let Some(k) = kiln() else { return };
    k.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "busybox",
        "sh",
        "-c",
        "mkdir /www && echo hello-lo > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
    ]);
    let srv_host = k.ok(&["exec", "srv", "hostname"]);
    let out = k.ok(&[
        "run", "--rm", "--network", "container:srv", "busybox", "sh", "-c",
        "hostname; for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1",
    ]);
    assert!(out.contains("hello-lo"), "{out}");
    assert!(
        out.starts_with(&srv_host),
        "the other's hostname: {out} vs {srv_host}"
    );
    for (args, msg) in [
        (
            &[
                "run",
                "--network",
                "container:srv",
                "-p",
                "80:80",
                "busybox",
                "true",
            ][..],
            "conflicting options: port publishing and the container type network mode",
        ),
        (
            &[
                "run",
                "--network",
                "container:srv",
                "--hostname",
                "h",
                "busybox",
                "true",
            ],
            "conflicting options: hostname and the network mode",
        ),
        (
            &[
                "run",
                "--network",
                "container:srv",
                "--add-host",
                "a:1.2.3.4",
                "busybox",
                "true",
            ],
            "conflicting options: custom host-to-IP mapping and the network mode",
        ),
    ] {
        let out = k.run(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            text(&out.stderr).contains(msg),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    k.ok(&["stop", "-t", "1", "srv"]);
    let out = k.run(&["run", "--network", "container:srv", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("cannot join network of a non running container"));
    k.ok(&["rm", "-f", "srv"]);
    no_mounts_left(&k);
}

#[test]
fn kiln_port_lists_published_and_exposed_ports() {
    let Some(k) = kiln() else { return };
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nEXPOSE 80\nRUN mkdir /www && echo hello-port > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n",
    );
    build(&k, &ctx, &["-t", "exposed"]);
    k.ok(&["run", "-d", "--name", "p", "-P", "exposed"]);
    let all = k.ok(&["port", "p"]);
    let line = all.lines().next().unwrap_or_default().to_owned();
    assert!(line.starts_with("80/tcp -> 0.0.0.0:"), "{all}");
    let port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(k.ok(&["port", "p", "80"]), format!("0.0.0.0:{port}\n"));
    assert_eq!(k.ok(&["port", "p", "80/tcp"]), format!("0.0.0.0:{port}\n"));
    assert!(
        http_get(port).contains("hello-port"),
        "-P forwards EXPOSE 80"
    );
    let err = k.fails(&["port", "p", "81"]);
    assert!(
        err.contains("No public port '81/tcp' published for p"),
        "{err}"
    );

    let fixed = free_port();
    let publish = format!("127.0.0.1:{fixed}:90/udp");
    k.ok(&[
        "run", "-d", "--name", "q", "-p", &publish, "busybox", "sleep", "1000",
    ]);
    assert_eq!(
        k.ok(&["port", "q"]),
        format!("90/udp -> 127.0.0.1:{fixed}\n")
    );
    k.ok(&["rm", "-f", "p", "q"]);
    no_mounts_left(&k);
}

#[test]
fn build_network_modes_and_add_host_reach_run_steps_without_changing_keys() {
    let Some(k) = kiln() else { return };
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\n\
         RUN ls /sys/class/net > /ifaces; readlink /proc/self/ns/net > /netns; cat /etc/hosts > /hosts\n\
         RUN --network=host readlink /proc/self/ns/net > /hostns\n",
    );
    let host_ns = fs_err::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();
    let show =
        |tag: &str, file: &str| k.ok(&["run", "--rm", "--network", "none", tag, "cat", file]);

    build(
        &k,
        &ctx,
        &[
            "-t",
            "none",
            "--network",
            "none",
            "--add-host",
            "db.build:10.1.2.3",
        ],
    );
    assert_eq!(
        show("none", "/ifaces"),
        "lo\n",
        "--network=none: only loopback"
    );
    assert!(
        show("none", "/hosts").contains("10.1.2.3\tdb.build\n"),
        "{}",
        show("none", "/hosts")
    );
    assert_ne!(show("none", "/netns").trim(), host_ns);
    assert_eq!(
        show("none", "/hostns").trim(),
        host_ns,
        "RUN --network=host wins"
    );

    build(&k, &ctx, &["-t", "host", "--network", "host", "--no-cache"]);
    assert_eq!(show("host", "/netns").trim(), host_ns, "--network=host");

    build(&k, &ctx, &["-t", "default", "--no-cache"]);
    assert_ne!(
        show("default", "/netns").trim(),
        host_ns,
        "default: a namespace of its own"
    );
    let ifaces = show("default", "/ifaces");
    assert!(
        ifaces.lines().count() >= 2,
        "default: an interface with outbound access: {ifaces}"
    );

    // The network mode is in no cache key: a rebuild in another mode is fully cached.
    let out = k
        .command()
        .args([
            "build",
            "--progress",
            "plain",
            "--network",
            "none",
            "-t",
            "again",
            ctx.arg(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).matches("CACHED").count() >= 2,
        "{}",
        text(&out.stderr)
    );

    let err = k.fails(&["build", "--network", "bridge0", ctx.arg()]);
    assert!(
        err.contains("network mode \"bridge0\" not supported by buildkit"),
        "{err}"
    );
    no_mounts_left(&k);
}

#[test]
fn published_ports_internal_networks_and_a_sigkilled_kiln() {
    let Some(k) = kiln() else { return };
    k.ok(&["network", "create", "pub"]);
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    serve(&k, "site", &["--network", "pub", "-p", &publish]);
    assert!(
        http_get(port).contains("hello-site"),
        "-p works on a user network"
    );

    // --internal: the network's interface only (no pasta), peers still reachable.
    k.ok(&["network", "create", "--internal", "quiet"]);
    serve(&k, "inner", &["--network", "quiet"]);
    let out = k.ok(&[
        "run", "--rm", "--network", "quiet", "busybox", "sh", "-c",
        "ls /sys/class/net; for i in $(seq 50); do wget -qO- http://inner/ && exit 0; sleep 0.1; done; exit 1",
    ]);
    let ifaces: Vec<&str> = out
        .lines()
        .take_while(|l| !l.starts_with("hello"))
        .collect();
    assert_eq!(ifaces, ["eth0", "lo"], "{out}");
    assert!(out.contains("hello-inner"), "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&k.ok(&["network", "inspect", "quiet"])).unwrap();
    assert_eq!(inspect[0]["Internal"], true);

    // A foreground kiln run killed with SIGKILL: the next command takes its name off the
    // network, and nothing of it stays.
    let mut fg = k
        .command()
        .args([
            "run",
            "--name",
            "doomed",
            "--network",
            "pub",
            "busybox",
            "sleep",
            "1000",
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !hosts(&k, "site").contains("doomed") {
        assert!(std::time::Instant::now() < deadline, "doomed never joined");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fg.kill().unwrap();
    fg.wait().unwrap();
    k.ok(&["ps", "-a"]);
    assert!(
        !hosts(&k, "site").contains("doomed"),
        "{}",
        hosts(&k, "site")
    );
    k.ok(&["rm", "-f", "doomed", "site", "inner"]);
    k.ok(&["network", "rm", "pub", "quiet"]);
    no_mounts_left(&k);
}

#[test]
fn run_steps_borrow_pooled_namespaces_and_a_sigkilled_build_leaves_none() {
    let Some(k) = kiln() else { return };
    // Sequential steps borrow the same ready namespace (its pasta started once).
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\n\
         RUN readlink /proc/self/ns/net > /a\n\
         RUN readlink /proc/self/ns/net > /b\n\
         RUN cat /a /b > /both\n",
    );
    build(&k, &ctx, &["-t", "pooled", "--jobs", "1"]);
    let both = k.ok(&["run", "--rm", "--network", "none", "pooled", "cat", "/both"]);
    let lines: Vec<&str> = both.lines().collect();
    assert_eq!(lines.len(), 2, "{both}");
    assert_eq!(lines[0], lines[1], "one pooled namespace: {both}");
    no_mounts_left(&k);

    // A build killed in a step: the next command removes its pool, pasta and all.
    let ctx = Context::new().file("Dockerfile", "FROM busybox\nRUN sleep 1000\n");
    let mut b = k
        .command()
        .args(["build", "-q", ctx.arg()])
        .spawn()
        .unwrap();
    let root = k.root.path().display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pasta_processes(&root) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    b.kill().unwrap();
    b.wait().unwrap();
    k.ok(&["ps"]);
    no_mounts_left(&k);
}
