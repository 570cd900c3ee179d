//! The variables a word is expanded against.

use std::collections::{BTreeMap, HashMap};

/// Anything variables can be looked up in.
///
/// Names compare exactly (BuildKit compares case-insensitively only on Windows).
pub trait EnvLookup {
    /// The value of `name`, `None` when it is unset. `Some("")` is set but empty.
    fn lookup(&self, name: &str) -> Option<&str>;
}

/// Ordered `KEY=VALUE` pairs with unique keys, as a build stage's environment is.
///
/// Setting a key that exists replaces its value in place (BuildKit's `BuildEnvs` lets the last
/// definition win), so [`Env::iter`] yields keys in the order they were first defined.
///
/// Lookups and [`Env::set`] take constant time (a key → position index sits beside the pairs),
/// so a stage of 100,000 `ENV` lines lowers in linear time.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: Vec<(String, String)>,
    /// invariant: `index[k] == i` exactly when `vars[i].0 == k`.
    index: HashMap<String, usize>,
    /// Sum of the lengths of every key and value, in bytes.
    bytes: usize,
}

impl PartialEq for Env {
    fn eq(&self, other: &Self) -> bool {
        self.vars == other.vars
    }
}

impl Eq for Env {}

impl Env {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an environment from pairs; for a key given twice the last value wins.
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Builds an environment from `KEY=VALUE` strings (split at the first `=`); an entry
    /// without `=` sets the key to the empty string, as BuildKit does. The last value wins.
    pub fn from_kv_strings<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        entries
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref();
                let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect()
    }

    /// Sets `key` to `value`, replacing an existing value in place.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => {
                let old = std::mem::replace(&mut self.vars[i].1, value);
                self.bytes = self.bytes - old.len() + self.vars[i].1.len();
            }
            None => {
                self.bytes += key.len() + value.len();
                self.index.insert(key.clone(), self.vars.len());
                self.vars.push((key, value));
            }
        }
    }

    /// Removes `key`, returning its value if it was set (linear in the number of variables).
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let position = self.index.remove(key)?;
        let (k, v) = self.vars.remove(position);
        self.bytes -= k.len() + v.len();
        for i in self.index.values_mut() {
            if *i > position {
                *i -= 1;
            }
        }
        Some(v)
    }

    /// The value of `key`, `None` when unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.vars[i].1.as_str())
    }

    /// Total length in bytes of every key and value (what a copy of the environment costs).
    pub fn byte_len(&self) -> usize {
        self.bytes
    }

    /// The pairs in order of first definition.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The pairs as `KEY=VALUE` strings, in order of first definition.
    pub fn to_kv_strings(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut env = Self::new();
        env.extend(iter);
        env
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for Env {
    fn extend<T: IntoIterator<Item = (K, V)>>(&mut self, iter: T) {
        for (k, v) in iter {
            self.set(k, v);
        }
    }
}

impl EnvLookup for Env {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// A slice of pairs: the last pair with the name wins.
impl EnvLookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl EnvLookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<S: std::hash::BuildHasher> EnvLookup for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl EnvLookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<T: EnvLookup + ?Sized> EnvLookup for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_definition_wins_and_keeps_first_position() {
        let env = Env::from_pairs(&[
            ("A".into(), "1".into()),
            ("B".into(), "2".into()),
            ("A".into(), "3".into()),
        ]);
        assert_eq!(env.get("A"), Some("3"));
        assert_eq!(env.iter().collect::<Vec<_>>(), [("A", "3"), ("B", "2")]);
        assert_eq!(env.to_kv_strings(), ["A=3", "B=2"]);
    }

    #[test]
    fn kv_strings_split_at_first_equals_and_bare_key_is_empty() {
        let env = Env::from_kv_strings(["A=b=c", "NULL=", "BARE"]);
        assert_eq!(env.get("A"), Some("b=c"));
        assert_eq!(env.get("NULL"), Some(""));
        assert_eq!(env.get("BARE"), Some(""));
        assert_eq!(env.get("a"), None, "names are case-sensitive");
    }

    #[test]
    fn set_remove_len() {
        let mut env = Env::new();
        assert!(env.is_empty());
        env.set("X", "1");
        env.set("X", "2");
        assert_eq!(env.len(), 1);
        assert_eq!(env.remove("X"), Some("2".to_owned()));
        assert_eq!(env.remove("X"), None);
        assert!(env.is_empty());
        assert_eq!(env.byte_len(), 0);
    }

    #[test]
    fn index_follows_removal_and_replacement() {
        let mut env = Env::from_kv_strings(["A=1", "B=22", "C=333"]);
        assert_eq!(env.byte_len(), 2 + 3 + 4);
        assert_eq!(env.remove("A"), Some("1".to_owned()));
        assert_eq!(env.get("B"), Some("22"));
        assert_eq!(env.get("C"), Some("333"));
        env.set("B", "");
        env.set("D", "4");
        assert_eq!(env.byte_len(), 1 + 4 + 2);
        assert_eq!(env.to_kv_strings(), ["B=", "C=333", "D=4"]);
        assert_eq!(env, Env::from_kv_strings(["B=", "C=333", "D=4"]));
        assert_ne!(env, Env::from_kv_strings(["C=333", "B=", "D=4"]));
    }

    #[test]
    fn slice_lookup_is_last_wins() {
        let pairs = vec![
            ("A".to_owned(), "1".to_owned()),
            ("A".to_owned(), "2".to_owned()),
        ];
        assert_eq!(pairs.lookup("A"), Some("2"));
        assert_eq!(pairs.as_slice().lookup("B"), None);
        let map: HashMap<String, String> = pairs.into_iter().collect();
        assert_eq!(map.lookup("A"), Some("2"));
    }
}
