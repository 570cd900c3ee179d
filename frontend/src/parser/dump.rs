//! BuildKit's AST dump (the `result` format of its parser tests), with Go `strconv.Quote` quoting.

use std::fmt::Write as _;

use crate::ast::{Ast, Node};

/// Dump the tree exactly as BuildKit's `Node.Dump()` does, one instruction per line, with a
/// trailing newline. Heredoc bodies are not shown (BuildKit does not show them either).
pub fn dump(ast: &Ast) -> String {
    let mut out = String::new();
    for node in &ast.nodes {
        out.push('(');
        dump_node(node, false, &mut out);
        out.push_str(")\n");
    }
    out
}

/// Like [`dump`], plus each heredoc as a nested `(heredoc [FLAGS] "NAME" "BODY")` form after
/// the arguments; FLAGS lists only non-defaults (`"expand=false"`, `"chomp=true"`, `"fd=N"`).
/// Identical to [`dump`] for files without heredocs.
pub fn dump_with_heredocs(ast: &Ast) -> String {
    let mut out = String::new();
    for node in &ast.nodes {
        out.push('(');
        dump_node(node, true, &mut out);
        out.push_str(")\n");
    }
    out
}

fn quote_list(items: &[String], out: &mut String) {
    out.push_str(" [");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        go_quote_into(item, out);
    }
    out.push(']');
}

fn dump_node(node: &Node, heredocs: bool, out: &mut String) {
    out.push_str(&node.name.to_ascii_lowercase());
    if !node.flags.is_empty() {
        out.push_str(" [");
        for (i, flag) in node.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            go_quote_into(&flag.raw, out);
        }
        out.push(']');
    }
    for arg in &node.args {
        out.push(' ');
        go_quote_into(&arg.value, out);
    }
    if let Some(trigger) = &node.trigger {
        out.push_str(" (");
        dump_node(trigger, heredocs, out);
        out.push(')');
    }
    if heredocs {
        for h in &node.heredocs {
            out.push_str(" (heredoc");
            let mut flags = Vec::new();
            if !h.expand {
                flags.push("expand=false".to_owned());
            }
            if h.chomp {
                flags.push("chomp=true".to_owned());
            }
            if let Some(fd) = h.fd {
                flags.push(format!("fd={fd}"));
            }
            if !flags.is_empty() {
                quote_list(&flags, out);
            }
            let _ = write!(out, " {} {})", go_quote(&h.name), go_quote(&h.content));
        }
    }
}

/// Quote a string as Go's `strconv.Quote` does: `\"`, `\\`, the short escapes (`\a \b \f \n \r
/// \t \v`), `\xNN` for other ASCII control bytes and DEL, `\uNNNN`/`\UNNNNNNNN` for other
/// non-printable characters; printable UTF-8 is kept as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    go_quote_into(s, &mut out);
    out
}

/// [`go_quote`] appending to `out`.
fn go_quote_into(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c.is_ascii() && c >= ' ' && c != '"' && c != '\\' && c != '\u{7f}' {
            out.push(c);
            continue;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !is_go_printable(c) => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An approximation of Go's `unicode.IsPrint` without Unicode tables: everything except
/// controls, separators other than the ASCII space, format characters, private use and
/// non-characters. (Unassigned code points are treated as printable.)
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let format = matches!(
        u,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    );
    let private = matches!(u, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    let nonchar = (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE;
    !(format || private || nonchar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            go_quote("\u{7}\u{8}\u{c}\n\r\t\u{b}"),
            r#""\a\b\f\n\r\t\v""#
        );
        assert_eq!(go_quote("\0\u{1b}\u{7f}"), r#""\x00\x1b\x7f""#);
        assert_eq!(go_quote("♥☃ é 한국어"), "\"♥☃ é 한국어\"");
        assert_eq!(
            go_quote("\u{a0}\u{200b}\u{feff}\u{85}"),
            r#""\u00a0\u200b\ufeff\u0085""#
        );
        assert_eq!(go_quote("\u{e000}\u{10fffd}"), r#""\ue000\U0010fffd""#);
        assert_eq!(go_quote("😀"), "\"😀\"");
    }
}
