//! Fuzz the Dockerfile parser: parse, dump, flag validation, the typed layer and error
//! rendering must never panic on any UTF-8 input.
#![no_main]

use kiln_frontend::diagnostic::render;
use kiln_frontend::instructions::Instruction;
use kiln_frontend::parser::{dump, dump_with_heredocs, parse, validate_flags};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|src: &str| {
    match parse(src) {
        Ok(ast) => {
            let _ = dump(&ast);
            let _ = dump_with_heredocs(&ast);
            for node in &ast.nodes {
                if let Err(e) = validate_flags(node) {
                    let _ = render(&e, "Dockerfile", src);
                }
                if let Err(e) = Instruction::from_node(node) {
                    let _ = render(&e, "Dockerfile", src);
                }
            }
        }
        Err(e) => {
            let _ = render(&e, "Dockerfile", src);
        }
    }
});
