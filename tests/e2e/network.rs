//! Container networks end to end: a namespace of its own per container, published ports
//! reached on 127.0.0.1, `--add-host`, `--dns`, and nothing left after `rm`.

use crate::support::{Kiln, sandbox_available, text};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub(crate) fn kiln() -> Option<Kiln> {
    let pasta = std::process::Command::new("pasta")
        .arg("--version")
        .output()
        .is_ok();
    if !pasta && sandbox_available() {
        // kiln's bridge network is pasta (Debian's passt); CI installs it.
        assert!(
            std::env::var_os("KILN_REQUIRE_ALL").is_none(),
            "pasta (Debian's passt) is required (KILN_REQUIRE_ALL)"
        );
        eprintln!("SKIPPED: pasta (Debian's passt) is not installed");
    }
    (sandbox_available() && pasta).then(Kiln::with_busybox)
}

/// A free port on 127.0.0.1 (bound, then released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / from 127.0.0.1:port, retried until the server answers (20 s deadline).
pub(crate) fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        });
        match got {
            Ok(body) if body.contains("200 OK") => return body,
            other => assert!(Instant::now() < deadline, "no answer on {port}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn pasta_processes(root: &str) -> usize {
    let out = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("pasta") && l.contains(root))
        .count()
}

#[test]
fn own_namespace_hostname_and_published_port() {
    let Some(k) = kiln() else { return };
    let out = k.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "hostname; echo $HOSTNAME; ls /sys/class/net",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].len(), 12, "short id as hostname: {out}");
    assert_eq!(lines[0], lines[1], "HOSTNAME is the hostname: {out}");
    assert!(
        lines[2..].contains(&"lo") && lines.len() <= 4,
        "a namespace of its own, not the host's: {out}"
    );
    assert_eq!(
        k.ok(&["run", "--rm", "--hostname", "web1", "busybox", "hostname"]),
        "web1\n"
    );

    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    k.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        "busybox",
        "sh",
        "-c",
        "mkdir /www && echo hello-net > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    assert!(http_get(port).contains("hello-net"));
    let inspect: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "web"])).unwrap();
    assert_eq!(
        inspect[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string()
    );

    // The same port again: docker's message, and no container made.
    let before = k.ok(&["ps", "-a", "-q"]);
    let err = k.fails(&["run", "-d", "-p", &publish, "busybox", "true"]);
    assert!(
        err.contains(&format!(
            "Bind for 127.0.0.1:{port} failed: port is already allocated"
        )),
        "{err}"
    );
    assert_eq!(k.ok(&["ps", "-a", "-q"]), before, "nothing created");

    let root = k.root.path().display().to_string();
    assert_eq!(pasta_processes(&root), 1);
    k.ok(&["rm", "-f", "web"]);
    assert_eq!(pasta_processes(&root), 0, "pasta gone with the container");
    // pasta's listener goes with it (allow it a moment to close).
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "port released");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&format!("{root}/")), "no netns mount left");
}

#[test]
fn bad_network_flags_are_refused() {
    let Some(k) = kiln() else { return };
    let err = k.fails(&["run", "--network", "nosuch", "busybox", "true"]);
    assert!(err.contains("network nosuch not found"), "{err}");
    let err = k.fails(&["run", "-p", "80/sctp", "busybox", "true"]);
    assert!(err.contains("invalid proto: sctp"), "{err}");
    let err = k.fails(&["run", "-p", "x:80", "busybox", "true"]);
    assert!(err.contains("invalid host port"), "{err}");
}

#[test]
fn add_host_and_dns() {
    let Some(k) = kiln() else { return };
    let out = k.ok(&[
        "run",
        "--rm",
        "--add-host",
        "db.local:10.1.2.3",
        "--add-host",
        "host.docker.internal:host-gateway",
        "--dns",
        "10.9.9.9",
        "--dns-search",
        "example.test",
        "busybox",
        "sh",
        "-c",
        "cat /etc/hosts /etc/resolv.conf",
    ]);
    assert!(out.contains("10.1.2.3\tdb.local\n"), "{out}");
    assert!(out.contains("\thost.docker.internal\n"), "{out}");
    assert!(out.contains("nameserver 10.9.9.9\n"), "{out}");
    assert!(out.contains("search example.test\n"), "{out}");
}
