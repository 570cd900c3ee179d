//! Canonical JSON: the one encoding kiln writes for configs, manifests, indexes and records.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// `v` as compact JSON with object keys sorted at every level, whatever map type or serde_json
/// features produced it. Fails only for values JSON cannot hold (a map with non-string keys).
pub fn canonical_json<T: Serialize + ?Sized>(v: &T) -> serde_json::Result<Vec<u8>> {
    let v = serde_json::to_value(v)?;
    let mut out = Vec::new();
    write_canonical(&v, &mut out)?;
    Ok(out)
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push(b'{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                write_canonical(v, out)?;
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": null}});
        assert_eq!(
            String::from_utf8(canonical_json(&v).unwrap()).unwrap(),
            r#"{"a":{"c":null,"z":[{"x":2,"y":1}]},"b":1}"#
        );
        #[derive(Serialize)]
        struct S {
            b: u8,
            a: &'static str,
        }
        assert_eq!(
            canonical_json(&S { b: 1, a: "<&>" }).unwrap(),
            br#"{"a":"<&>","b":1}"#
        );
    }
}
