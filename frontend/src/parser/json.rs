//! Exec-form detection: a JSON array of strings, read with the rules of Go's `encoding/json`
//! (which is what decides exec vs shell form in BuildKit).

/// What a `[...]` argument turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExecForm {
    /// A valid JSON array of strings: each element and its byte offset in the input.
    Strings(Vec<(String, usize)>),
    /// Valid JSON, but not an array of strings only (an error in BuildKit).
    NotStrings,
    /// Not valid JSON (or not an array): the caller falls back to shell form.
    Invalid,
}

/// Go's decoder refuses nesting deeper than this; so do we (and it bounds our recursion).
const MAX_DEPTH: usize = 512;

/// Classify `src` (already left-trimmed) as exec form or not.
pub(crate) fn parse_exec_form(src: &str) -> ExecForm {
    if !src.starts_with('[') {
        return ExecForm::Invalid;
    }
    let mut p = Parser {
        s: src.as_bytes(),
        src,
        pos: 0,
    };
    let Some(value) = p.value(0) else {
        return ExecForm::Invalid;
    };
    p.ws();
    if p.pos != p.s.len() {
        return ExecForm::Invalid;
    }
    match value {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Str(s, at) => out.push((s, at)),
                    _ => return ExecForm::NotStrings,
                }
            }
            ExecForm::Strings(out)
        }
        _ => ExecForm::Invalid,
    }
}

enum Value {
    Str(String, usize),
    Array(Vec<Value>),
    Other,
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.s.get(self.pos)? {
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b']') {
                    return Some(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b']') {
                        return Some(Value::Array(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'{' => {
                self.pos += 1;
                self.ws();
                if self.eat(b'}') {
                    return Some(Value::Other);
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    if !self.eat(b':') {
                        return None;
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    if self.eat(b'}') {
                        return Some(Value::Other);
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'"' => {
                let at = self.pos;
                let s = self.string()?;
                Some(Value::Str(s, at))
            }
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str) -> Option<Value> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Some(Value::Other)
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<Value> {
        self.eat(b'-');
        if self.eat(b'0') {
            // a leading zero stands alone
        } else if self.digits() == 0 {
            return None;
        }
        if self.eat(b'.') && self.digits() == 0 {
            return None;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(Value::Other)
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.src.get(self.pos..self.pos + 4)?;
        let v = u32::from_str_radix(h, 16).ok()?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        Some(v)
    }

    /// A JSON string at `pos` (which is a `"`); Go's rules: lone surrogates become U+FFFD.
    fn string(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = String::new();
        loop {
            let rest = self.src.get(self.pos..)?;
            let ch = rest.chars().next()?;
            match ch {
                '"' => {
                    self.pos += 1;
                    return Some(out);
                }
                '\\' => {
                    self.pos += 1;
                    let esc = *self.s.get(self.pos)?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi) {
                                // A high surrogate: combine with a following low one if present.
                                let save = self.pos;
                                if self.s[self.pos..].starts_with(b"\\u") {
                                    self.pos += 2;
                                    if let Some(lo) = self.hex4()
                                        && (0xDC00..0xE000).contains(&lo)
                                    {
                                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                        out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                                        continue;
                                    }
                                }
                                self.pos = save;
                                out.push('\u{fffd}');
                            } else {
                                out.push(char::from_u32(hi).unwrap_or('\u{fffd}'));
                            }
                        }
                        _ => return None,
                    }
                }
                c if (c as u32) < 0x20 => return None,
                c => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &str) -> Vec<String> {
        match parse_exec_form(s) {
            ExecForm::Strings(v) => v.into_iter().map(|(s, _)| s).collect(),
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    #[test]
    fn go_json_rules() {
        assert_eq!(strings("[]"), Vec::<String>::new());
        assert_eq!(strings("[ \"a\" ,\t\"b\" ] "), ["a", "b"]);
        assert_eq!(
            strings(r#"["\u00e9\ud83d\ude00\ud800x"]"#),
            ["é😀\u{fffd}x"]
        );
        assert_eq!(
            strings(r#"["\" \\ \/ \b \f \n \r \t \u0000"]"#),
            ["\" \\ / \u{8} \u{c} \n \r \t \0"]
        );
        assert_eq!(parse_exec_form(r#"["a", 1]"#), ExecForm::NotStrings);
        assert_eq!(
            parse_exec_form(r#"["a", {"k": [1, -0.5e+3, true, null]}]"#),
            ExecForm::NotStrings
        );
        for bad in [
            "['a']",
            "[\"a\"",
            "[\"a]",
            "[\"a\",]",
            "[01]",
            "[\"a\"] x",
            "[\"\\x\"]",
            "[\"\t\"]",
            "[1.]",
            "[\"\\u12\"]",
            "[\"\\u+123\"]",
        ] {
            assert_eq!(parse_exec_form(bad), ExecForm::Invalid, "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_invalid_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert_eq!(parse_exec_form(&deep), ExecForm::Invalid);
    }

    #[test]
    fn offsets_point_at_quotes() {
        let ExecForm::Strings(v) = parse_exec_form(r#"[ "a",  "bc"]"#) else {
            panic!("not strings")
        };
        assert_eq!(v, [("a".to_owned(), 2), ("bc".to_owned(), 8)]);
    }
}
