//! `kiln debug ast|graph`: the frontend's view of a Dockerfile.

use crate::Reported;
use anyhow::{Context, Result};
use kiln_frontend::diagnostic::render;
use kiln_frontend::parser;
use std::io::Read;
use std::path::Path;

/// Reads a Dockerfile from a path, or stdin for `-`.
pub fn read_dockerfile(path: &Path) -> Result<(String, String)> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the Dockerfile from stdin")?;
        let text = text_or_report("Dockerfile", bytes)?;
        return Ok(("Dockerfile".to_string(), text));
    }
    let bytes = fs_err::read(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_string());
    let text = text_or_report(&name, bytes)?;
    Ok((name, text))
}

/// The Dockerfile as text; bytes that are not UTF-8 are reported at their line and column.
fn text_or_report(name: &str, bytes: Vec<u8>) -> Result<String> {
    if let Err(err) = parser::decode(&bytes) {
        eprint!("{}", render(&err, name, &String::from_utf8_lossy(&bytes)));
        return Err(Reported(1).into());
    }
    Ok(String::from_utf8(bytes)?)
}

/// Parses (and validates flags), printing a located error on failure.
pub fn parse_or_report(name: &str, text: &str) -> Result<kiln_frontend::ast::Ast> {
    match parser::parse_and_validate(text) {
        Ok(ast) => {
            for w in &ast.warnings {
                eprintln!("warning: {name}:{}: {}", w.span.line, w.message);
            }
            Ok(ast)
        }
        Err(err) => {
            eprint!("{}", render(&err, name, text));
            Err(Reported(1).into())
        }
    }
}

/// `kiln debug ast`.
pub fn ast(file: &Path) -> Result<()> {
    let (name, text) = read_dockerfile(file)?;
    // The dump shows flags as written, even ones validation rejects (as BuildKit's does).
    let ast = match parser::parse(&text) {
        Ok(ast) => ast,
        Err(err) => {
            eprint!("{}", render(&err, &name, &text));
            return Err(Reported(1).into());
        }
    };
    print!("{}", parser::dump(&ast));
    Ok(())
}

/// `kiln debug graph`.
pub fn graph(
    file: &Path,
    target: Option<String>,
    build_args: &[String],
    format: crate::cli::GraphFormat,
) -> Result<()> {
    use kiln_frontend::lower::{LowerOptions, lower};
    let (name, text) = read_dockerfile(file)?;
    let ast = parse_or_report(&name, &text)?;
    let mut args = std::collections::BTreeMap::new();
    for a in build_args {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("--build-arg {a:?}: expected KEY=VALUE"))?;
        args.insert(k.to_string(), v.to_string());
    }
    let host = kiln_oci::Platform::host();
    let opts = LowerOptions {
        target,
        build_args: args,
        target_platform: host.clone(),
        build_platform: host,
        dockerignore: Vec::new(),
        labels: Default::default(),
        no_cache: false,
        no_cache_filter: Vec::new(),
        file_name: name.clone(),
        all_stages: false,
    };
    let host = kiln_solver::Host::open(kiln_solver::HostOptions::default()).ok();
    let resolver = kiln_solver::session::LenientResolver(host.as_ref());
    let lowered = match lower(&ast, &opts, &resolver) {
        Ok(l) => l,
        Err(err) => {
            eprint!("{}", render(&err, &name, &text));
            return Err(Reported(1).into());
        }
    };
    for w in &lowered.warnings {
        eprintln!("warning: {}", w.message);
    }
    let def = &lowered.definition;
    match format {
        crate::cli::GraphFormat::Json => {
            let vertices: Vec<serde_json::Value> = def
                .topo_order()
                .iter()
                .map(|d| {
                    let v = &def.vertices[d];
                    serde_json::json!({
                        "digest": d.to_string(),
                        "op": v.op,
                        "inputs": v.inputs,
                        "description": v.meta.description,
                        "stage": v.meta.stage,
                        "line": v.meta.line,
                    })
                })
                .collect();
            let out = serde_json::json!({
                "root": def.root,
                "vertices": vertices,
                "image": def.image,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        crate::cli::GraphFormat::Dot => print!("{}", to_dot(def)),
    }
    Ok(())
}

/// Graphviz: one node per vertex (short digest and description), edges from input to user.
fn to_dot(def: &kiln_solver::graph::Definition) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from(
        "digraph kiln {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for d in def.topo_order() {
        let v = &def.vertices[&d];
        let label = if v.meta.description.is_empty() {
            d.short()
        } else {
            format!("{}\\n{}", d.short(), esc(&v.meta.description))
        };
        out.push_str(&format!("  \"{}\" [label=\"{label}\"];\n", d.short()));
        for i in &v.inputs {
            out.push_str(&format!("  \"{}\" -> \"{}\";\n", i.short(), d.short()));
        }
    }
    out.push_str("}\n");
    out
}
