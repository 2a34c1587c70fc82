//! Password hashing with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes, 1 lane, as
//! OWASP recommends).
//!
//! Hashing runs on a few dedicated threads (one per core), never on the async runtime. That also
//! bounds its memory: each hash needs 19 MiB, and on the unbounded blocking pool 64 concurrent
//! sign-ins held over 1 GiB (the allocator keeps freed blocks per thread). Requests queue instead.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::AppError;

type Job = Box<dyn FnOnce() + Send>;

fn hashing_threads() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<Job>> {
    static POOL: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().expect("hashing queue").recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawn a hashing thread");
        }
        std::sync::Mutex::new(tx)
    })
}

/// Runs `f` on a hashing thread.
async fn on_hashing_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, AppError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    hashing_threads()
        .lock()
        .expect("hashing queue")
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .map_err(|_| AppError::Internal("hashing threads are gone".into()))?;
    rx.await.map_err(|_| AppError::Internal("hashing thread panicked".into()))
}

pub async fn hash(password: String) -> Result<String, AppError> {
    on_hashing_thread(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AppError::Internal(format!("hashing failed: {e}")))
    })
    .await?
}

/// Constant-time verification (argon2 compares digests in constant time).
pub async fn verify(password: String, hash: String) -> Result<bool, AppError> {
    on_hashing_thread(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| AppError::Internal(format!("stored hash unreadable: {e}")))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await?
}

/// A hash of a random password, verified against when the account does not exist, so a login for
/// an unknown e-mail takes as long as one with a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(b"not-a-real-password", &salt).expect("hash").to_string()
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_are_argon2id() {
        let h = super::hash("correct horse".into()).await.unwrap();
        // argon2id, version 19, 19 MiB, 2 passes, 1 lane (OWASP's minimum for argon2id).
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(super::verify("correct horse".into(), h.clone()).await.unwrap());
        assert!(!super::verify("wrong horse".into(), h).await.unwrap());
    }
}
