//! Where BuildKit's conformance tables are: `KILN_CONFORMANCE_DIR` when set, else
//! `shared/conformance` beside the repository (`../shared/conformance` from its root).
//!
//! A clone without them still passes: each test that reads them says loudly that it skipped and
//! returns. Under `KILN_REQUIRE_ALL=1` (CI) a missing directory fails the test instead.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The conformance directory (holding `buildkit/`), or `None` once a skip has been announced.
pub fn dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("KILN_CONFORMANCE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let message = format!(
        "SKIPPED: BuildKit conformance tables not found at {} (set KILN_CONFORMANCE_DIR or put \
         shared/ beside the repo): {test}",
        dir.display()
    );
    if std::env::var_os("KILN_REQUIRE_ALL").is_some() {
        panic!("{message}");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing tests,
    // and a skip must not pass silently.
    let _ = writeln!(std::io::stderr(), "{message}");
    None
}
