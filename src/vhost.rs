//! Vhost interning: names become small ids on the parsing side and names again in events.
//!
//! The map from name to id is consulted once per log line, so each parsing thread keeps its own
//! [`VhostCache`] (no lock); only a name never seen before takes the shared registry's lock.

use std::sync::{Arc, Mutex, PoisonError};

use ahash::AHashMap;

use crate::hit::{VhostId, NO_VHOST};

/// Distinct vhost names remembered; later new names are treated as unknown. A big Plesk server
/// has thousands of domains, not hundreds of thousands.
pub const MAX_VHOSTS: usize = 200_000;

/// The process-wide registry of vhost names; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Vhosts {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    names: Vec<Arc<str>>,
    ids: AHashMap<Arc<str>, VhostId>,
}

impl Vhosts {
    pub fn new() -> Vhosts {
        Vhosts::default()
    }

    /// The id for `name` (lossily decoded from log bytes, lowercased: hostnames are case-insensitive).
    pub fn intern(&self, name: &[u8]) -> VhostId {
        if name.is_empty() || name == b"-" {
            return NO_VHOST;
        }
        let text: Arc<str> = String::from_utf8_lossy(name).to_ascii_lowercase().into();
        let mut reg = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = reg.ids.get(&text) {
            return id;
        }
        if reg.names.len() >= MAX_VHOSTS {
            // `$host` is sent by the client: a flood of made-up names must not grow this forever.
            return NO_VHOST;
        }
        let id = reg.names.len() as VhostId;
        reg.names.push(text.clone());
        reg.ids.insert(text, id);
        id
    }

    /// The name of an interned id; `None` for [`NO_VHOST`].
    pub fn name(&self, id: VhostId) -> Option<Arc<str>> {
        if id == NO_VHOST {
            return None;
        }
        let reg = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        reg.names.get(id as usize).cloned()
    }
}

/// A parsing thread's lock-free view of [`Vhosts`].
pub struct VhostCache {
    shared: Vhosts,
    local: AHashMap<Box<[u8]>, VhostId>,
}

impl VhostCache {
    pub fn new(shared: Vhosts) -> VhostCache {
        VhostCache {
            shared,
            local: AHashMap::new(),
        }
    }

    #[inline]
    pub fn id(&mut self, name: &[u8]) -> VhostId {
        if let Some(&id) = self.local.get(name) {
            return id;
        }
        let id = self.shared.intern(name);
        // A flood of distinct garbage host names must not grow this cache without bound.
        if self.local.len() < 65_536 {
            self.local.insert(name.into(), id);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_id_across_caches() {
        let v = Vhosts::new();
        let mut a = VhostCache::new(v.clone());
        let mut b = VhostCache::new(v.clone());
        let x = a.id(b"Example.com");
        assert_eq!(b.id(b"example.com"), x);
        assert_ne!(a.id(b"other.org"), x);
        assert_eq!(v.name(x).as_deref(), Some("example.com"));
        assert_eq!(a.id(b"-"), NO_VHOST);
        assert_eq!(v.name(NO_VHOST), None);
    }

    #[test]
    fn made_up_names_stop_at_the_cap() {
        let v = Vhosts::new();
        for i in 0..MAX_VHOSTS {
            assert_ne!(v.intern(format!("h{i}").as_bytes()), NO_VHOST);
        }
        assert_eq!(v.intern(b"one-too-many"), NO_VHOST);
        assert_eq!(v.intern(b"h7"), 7);
    }
}
