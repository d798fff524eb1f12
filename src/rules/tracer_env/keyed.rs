//! Finding an entry by key in a list kept in document order, in linear time overall.
//!
//! Rules keep maps as ordered lists (the order a user wrote is the order written back).
//! A linear search per key is fastest for the handful of entries real objects have, but
//! quadratic for a hostile annotation with 100,000 keys; past [`INDEX_FROM`] entries a
//! hash index takes over.

use std::collections::HashMap;

/// Lists shorter than this are searched linearly.
const INDEX_FROM: usize = 32;

/// The index of an ordered, keyed list; empty (no allocation) while the list is short.
#[derive(Debug, Default)]
pub struct KeyIndex {
    positions: HashMap<String, usize>,
}

impl KeyIndex {
    /// The position of `key` in `items`, whose keys `key_of` reads.
    pub fn find<T>(
        &mut self,
        items: &[T],
        key: &str,
        key_of: impl Fn(&T) -> &str,
    ) -> Option<usize> {
        if items.len() < INDEX_FROM {
            return items.iter().position(|item| key_of(item) == key);
        }
        if self.positions.is_empty() {
            // The first of duplicate keys, like the linear search.
            for (i, item) in items.iter().enumerate().rev() {
                self.positions.insert(key_of(item).to_owned(), i);
            }
        }
        self.positions.get(key).copied()
    }

    /// Records that `key` was pushed at position `at`.
    pub fn pushed(&mut self, key: &str, at: usize) {
        if !self.positions.is_empty() {
            self.positions.insert(key.to_owned(), at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_same_as_a_linear_search_below_and_above_the_threshold() {
        let mut items: Vec<String> = Vec::new();
        let mut index = KeyIndex::default();
        for i in 0..200 {
            let key = format!("k{}", i % 150);
            let want = items.iter().position(|k| *k == key);
            assert_eq!(index.find(&items, &key, String::as_str), want, "{key}");
            if want.is_none() {
                items.push(key.clone());
                index.pushed(&key, items.len() - 1);
            }
        }
        assert_eq!(items.len(), 150);
        assert_eq!(index.find(&items, "k149", String::as_str), Some(149));
        assert_eq!(index.find(&items, "absent", String::as_str), None);
    }
}
