//! Keyset pagination over rows ordered by creation time and id.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where a page of a newest-first list (sagas, a buyer's orders) starts or ends: the row with
/// this creation time and id. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        use base64::Engine;
        let raw = format!("{}|{}", self.created_at.timestamp_micros(), self.id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(s: &str) -> Option<Self> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?;
        let (micros, id) = std::str::from_utf8(&raw).ok()?.split_once('|')?;
        Some(Cursor {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: id.parse().ok()?,
        })
    }
}
