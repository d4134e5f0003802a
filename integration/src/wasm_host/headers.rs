//! An ordered header multimap with Envoy's semantics: keys are lower-cased,
//! a key may repeat, lookups return the first value.

/// Headers, trailers or gRPC metadata as Envoy holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    pairs: Vec<(String, Vec<u8>)>,
}

impl HeaderMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map from pairs, lower-casing keys like Envoy's codec does.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut map = Self::new();
        for (key, value) in pairs {
            map.add(key.as_ref(), value.as_ref());
        }
        map
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The first value of `key`, as bytes.
    pub fn get_bytes(&self, key: &str) -> Option<&[u8]> {
        let key = key.to_ascii_lowercase();
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `key`, if it is UTF-8.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_bytes(key)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Every value of `key`, in order.
    pub fn get_all(&self, key: &str) -> Vec<&[u8]> {
        let key = key.to_ascii_lowercase();
        self.pairs
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    pub fn add(&mut self, key: &str, value: &[u8]) {
        self.pairs.push((key.to_ascii_lowercase(), value.to_vec()));
    }

    /// Envoy's `setCopy`: drops every value of `key`, then adds one.
    pub fn replace(&mut self, key: &str, value: &[u8]) {
        self.remove(key);
        self.add(key, value);
    }

    pub fn remove(&mut self, key: &str) {
        let key = key.to_ascii_lowercase();
        self.pairs.retain(|(k, _)| *k != key);
    }

    pub fn pairs(&self) -> &[(String, Vec<u8>)] {
        &self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_values_repeat() {
        let mut map = HeaderMap::from_pairs([("X-A", "1"), ("x-a", "2"), ("b", "3")]);
        assert_eq!(map.get("x-A"), Some("1"));
        assert_eq!(map.get_all("X-a").len(), 2);
        map.replace("X-A", b"9");
        assert_eq!(map.get_all("x-a"), vec![b"9".as_slice()]);
        map.remove("B");
        assert_eq!(map.get("b"), None);
        assert_eq!(map.len(), 1);
    }
}
