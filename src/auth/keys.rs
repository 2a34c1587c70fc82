//! Signing keys and access tokens.
//!
//! Ed25519 (JWS `EdDSA`): small keys, fast, and no algorithm parameters to get wrong. Keys are rows
//! in `signing_keys`; the newest key without `retire_after` signs, and every key whose
//! `retire_after` has not passed verifies and is published in the JWKS. Rotation sets
//! `retire_after` on the old key to now + token lifetime + a margin, so tokens it signed stay valid
//! until they expire, then the key leaves the JWKS.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ecommerce_platform::config::AuthConfig;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters,
    OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use tokio::sync::RwLock;
use uuid::Uuid;

use super::Role;

/// Clock skew tolerated on `exp`/`nbf`.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: Uuid,
    pub email: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: Uuid,
    /// The session the token belongs to; logging out (or refresh-token reuse) revokes it.
    pub sid: Uuid,
    /// Roles held when the token was issued (`operator`); absent for none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token has no key id")]
    MissingKid,
    #[error("token was signed by an unknown key")]
    UnknownKey,
    #[error("token has expired")]
    Expired,
    #[error("session has ended")]
    Revoked,
    #[error("token is invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("signing failed: {0}")]
    Signing(String),
}

struct Key {
    kid: String,
    seed: Vec<u8>,
    x: String,
    signs: bool,
}

struct Loaded {
    keys: Vec<Key>,
    at: Instant,
}

pub struct KeyRing {
    pool: PgPool,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// How stale the in-memory key set may get before it is re-read.
    refresh_after: Duration,
    loaded: RwLock<Loaded>,
}

fn public_x(seed: &[u8; 32]) -> String {
    let signing = ed25519_dalek::SigningKey::from_bytes(seed);
    URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes())
}

/// The private key as jsonwebtoken takes it: PKCS#8 DER, written by ed25519-dalek.
fn encoding_key(seed: &[u8]) -> Result<EncodingKey, KeyError> {
    let seed: &[u8; 32] =
        seed.try_into().map_err(|_| KeyError::Signing("a signing key is not 32 bytes".into()))?;
    let der = ed25519_dalek::SigningKey::from_bytes(seed)
        .to_pkcs8_der()
        .map_err(|e| KeyError::Signing(e.to_string()))?;
    Ok(EncodingKey::from_ed_der(der.as_bytes()))
}

/// A verifying key as a JWK (RFC 8037: `OKP`, `Ed25519`).
fn jwk(kid: &str, x: &str) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            key_id: Some(kid.to_string()),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: x.to_string(),
        }),
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Adds a new signing key; older signing keys stop signing and retire once their tokens expire.
pub async fn rotate(pool: &PgPool, token_ttl: Duration) -> Result<String, sqlx::Error> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let kid = format!("k{}", Uuid::now_v7().simple());
    let retire_in_ms = (token_ttl + Duration::from_secs(LEEWAY_SECS * 2)).as_millis() as i64;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE signing_keys SET retire_after = now() + $1::bigint * interval '1 millisecond' WHERE retire_after IS NULL",
    )
    .bind(retire_in_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO signing_keys (kid, private_seed, public_x) VALUES ($1, $2, $3)")
        .bind(&kid)
        .bind(seed.as_slice())
        .bind(public_x(&seed))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(kid)
}

/// How often a token under a `kid` this instance does not know may make it read the keys again.
const UNKNOWN_KID_REREAD: Duration = Duration::from_secs(1);

/// Whether `kid` could be one [`rotate`] made (`k` and a simple UUID): no other is ever looked up.
fn is_our_kid(kid: &str) -> bool {
    kid.len() == 33 && kid.starts_with('k') && kid[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl KeyRing {
    /// Loads the key set, creating the first key if the database has none.
    pub async fn load(pool: PgPool, config: &AuthConfig) -> Result<Self, KeyError> {
        let ttl = config.access_token_ttl;
        // Serialize first-key creation across instances starting together.
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7243001)").execute(&mut *tx).await?;
        let any: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retire_after IS NULL)")
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        if !any {
            rotate(&pool, ttl).await?;
        }
        let keys = Self::read(&pool).await?;
        Ok(Self {
            pool,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            ttl,
            refresh_after: config.signing_keys_refresh,
            loaded: RwLock::new(Loaded { keys, at: Instant::now() }),
        })
    }

    async fn read(pool: &PgPool) -> Result<Vec<Key>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kid, private_seed, public_x, retire_after IS NULL AS signs FROM signing_keys
             WHERE retire_after IS NULL OR retire_after > now() ORDER BY created_at DESC",
        )
        .fetch_all(pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Key {
                kid: r.get("kid"),
                seed: r.get("private_seed"),
                x: r.get("public_x"),
                signs: r.get("signs"),
            })
            .collect())
    }

    async fn refresh_if_stale(&self, force: bool) -> Result<(), sqlx::Error> {
        let stale = self.loaded.read().await.at.elapsed() > self.refresh_after;
        if stale || force {
            let keys = Self::read(&self.pool).await?;
            *self.loaded.write().await = Loaded { keys, at: Instant::now() };
        }
        Ok(())
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues an access token for `user`; returns it with its expiry (unix seconds).
    pub async fn issue(
        &self,
        user_id: Uuid,
        email: &str,
        roles: &[Role],
        sid: Uuid,
    ) -> Result<(String, u64), KeyError> {
        self.refresh_if_stale(false).await?;
        let loaded = self.loaded.read().await;
        let key =
            loaded.keys.iter().find(|k| k.signs).ok_or_else(|| KeyError::Signing("no signing key".into()))?;
        let iat = now();
        let claims = Claims {
            sub: user_id,
            email: email.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            nbf: iat,
            exp: iat + self.ttl.as_secs(),
            jti: Uuid::new_v4(),
            sid,
            roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &encoding_key(&key.seed)?)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        Ok((token, claims.exp))
    }

    /// Checks signature (by `kid`), algorithm, `exp`, `nbf`, `iss` and `aud`.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid("unexpected algorithm".into()));
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let mut x = self.public_key(&kid).await;
        if x.is_none() && is_our_kid(&kid) {
            // A key created by another instance since our last read. Read again, but at most
            // once per `UNKNOWN_KID_REREAD`: tokens with made-up kids must not cost a query each.
            if self.loaded.read().await.at.elapsed() >= UNKNOWN_KID_REREAD {
                let _ = self.refresh_if_stale(true).await;
            }
            x = self.public_key(&kid).await;
        }
        let x = x.ok_or(TokenError::UnknownKey)?;
        let key = DecodingKey::from_ed_components(&x).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // `decode` also refuses HS*/RS* tokens here: the key is an Ed25519 key and only EdDSA is allowed.
        jsonwebtoken::decode::<Claims>(token, &key, &validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                other => TokenError::Invalid(format!("{other:?}")),
            }
        })
    }

    async fn public_key(&self, kid: &str) -> Option<String> {
        let _ = self.refresh_if_stale(false).await;
        self.loaded.read().await.keys.iter().find(|k| k.kid == kid).map(|k| k.x.clone())
    }

    /// The public keys that currently verify, as a JWK Set (RFC 7517).
    pub async fn jwks(&self) -> Result<JwkSet, sqlx::Error> {
        self.refresh_if_stale(false).await?;
        let loaded = self.loaded.read().await;
        Ok(JwkSet { keys: loaded.keys.iter().map(|k| jwk(&k.kid, &k.x)).collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dalek_keys_sign_what_the_published_jwk_verifies() {
        let seed = [7u8; 32];
        let claims = serde_json::json!({ "sub": "x", "exp": now() + 60 });
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("t".into());
        let token = jsonwebtoken::encode(&header, &claims, &encoding_key(&seed).unwrap()).unwrap();
        let published = jwk("t", &public_x(&seed));
        assert_eq!(
            serde_json::to_value(&published).unwrap(),
            serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": public_x(&seed), "kid": "t", "alg": "EdDSA", "use": "sig" })
        );
        let key = DecodingKey::from_jwk(&published).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.required_spec_claims.clear();
        v.validate_aud = false;
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).is_ok());
        let other = DecodingKey::from_jwk(&jwk("o", &public_x(&[8u8; 32]))).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &other, &v).is_err());
        assert!(encoding_key(&[1u8; 31]).is_err(), "a seed of the wrong length is refused");
    }
}
