//! Automatic persisted queries (Apollo's protocol): a client sends a document's SHA-256 instead of
//! the document once the API has seen it with that hash.
//!
//! Why not async-graphql's `ApolloPersistedQueries`: it keeps a document before any limit has
//! looked at it, and counts only entries, so anonymous clients could fill every instance's memory
//! with documents the limits then refuse (2,000 × 64 KiB bodies). Here
//! [`super::limits::DocumentLimitsExtension`] speaks the protocol: a document is parsed and
//! checked first and kept only once it passed, and the cache is bounded in bytes as well as in
//! entries, the least recently used going first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;

/// Bytes of document text the cache holds at most (each entry counts the text it was parsed
/// from). A frontend's few hundred operations take well under a megabyte.
pub const MAX_BYTES: usize = 4 << 20;

/// Documents the cache holds at most.
pub const MAX_ENTRIES: usize = 2000;

/// The documents an API instance remembers, by hash. Each instance keeps its own: on another one,
/// the client is told `PersistedQueryNotFound` and sends the document again, as the protocol
/// provides.
#[derive(Clone)]
pub struct PersistedQueries(Arc<Mutex<Cache>>);

struct Cache {
    max_bytes: usize,
    max_entries: usize,
    bytes: usize,
    /// Stamps recency; the smallest stamp is the least recently used.
    clock: u64,
    entries: HashMap<String, Entry>,
    by_use: BTreeMap<u64, String>,
}

struct Entry {
    document: ExecutableDocument,
    bytes: usize,
    used: u64,
}

impl PersistedQueries {
    pub fn new(max_bytes: usize, max_entries: usize) -> Self {
        Self(Arc::new(Mutex::new(Cache {
            max_bytes,
            max_entries: max_entries.max(1),
            bytes: 0,
            clock: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The document kept under `hash`, now the most recently used.
    pub fn get(&self, hash: &str) -> Option<ExecutableDocument> {
        let mut cache = self.lock();
        cache.clock += 1;
        let now = cache.clock;
        let entry = cache.entries.get_mut(hash)?;
        let before = std::mem::replace(&mut entry.used, now);
        let document = entry.document.clone();
        cache.by_use.remove(&before);
        cache.by_use.insert(now, hash.to_string());
        Some(document)
    }

    /// Keeps `document`, parsed from `bytes` bytes of text, under `hash`; the least recently used
    /// go until it fits. A document larger than the whole cache is not kept.
    pub fn put(&self, hash: String, document: ExecutableDocument, bytes: usize) {
        let mut cache = self.lock();
        if bytes > cache.max_bytes {
            return;
        }
        cache.remove(&hash);
        while cache.bytes + bytes > cache.max_bytes || cache.entries.len() >= cache.max_entries {
            let Some((_, oldest)) = cache.by_use.pop_first() else { break };
            cache.remove(&oldest);
        }
        cache.clock += 1;
        let used = cache.clock;
        cache.bytes += bytes;
        cache.by_use.insert(used, hash.clone());
        cache.entries.insert(hash, Entry { document, bytes, used });
    }

    /// Bytes and entries held now.
    pub fn size(&self) -> (usize, usize) {
        let cache = self.lock();
        (cache.bytes, cache.entries.len())
    }
}

impl Cache {
    fn remove(&mut self, hash: &str) {
        if let Some(entry) = self.entries.remove(hash) {
            self.bytes -= entry.bytes;
            self.by_use.remove(&entry.used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> ExecutableDocument {
        async_graphql::parser::parse_query("{ __typename }").unwrap()
    }

    #[test]
    fn holds_at_most_its_bytes_and_entries_dropping_the_least_recently_used() {
        let cache = PersistedQueries::new(100, 3);
        cache.put("a".into(), doc(), 40);
        cache.put("b".into(), doc(), 40);
        assert!(cache.get("a").is_some(), "a is now the most recently used");
        cache.put("c".into(), doc(), 40);
        assert_eq!(cache.size(), (80, 2));
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());

        cache.put("d".into(), doc(), 10);
        cache.put("e".into(), doc(), 10);
        assert_eq!(cache.size(), (60, 3), "at most three entries");
        assert!(cache.get("a").is_none());

        cache.put("huge".into(), doc(), 101);
        assert!(cache.get("huge").is_none(), "larger than the cache: not kept");
        assert_eq!(cache.size(), (60, 3), "and nothing dropped for it");

        cache.put("c".into(), doc(), 30);
        assert_eq!(cache.size(), (50, 3), "the same hash again replaces its entry");
    }
}
